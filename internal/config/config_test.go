package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultsValidate(t *testing.T) {
	cfg, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Chain.Coin != "btc" || cfg.Chain.Network != "regtest" {
		t.Fatalf("defaults: %+v", cfg.Chain)
	}
	if cfg.Database.DSN != filepath.Join("coffer-data", "coffer.db") {
		t.Fatalf("default dsn %q", cfg.Database.DSN)
	}
}

func TestFileAndEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coffer.yaml")
	os.WriteFile(path, []byte("chain:\n  coin: ltc\nfollow:\n  poll_interval: 250ms\n  start_height: 7\n"), 0o600)
	cfg, err := Load(path, []string{"COFFER_FOLLOW_START_HEIGHT=9", "COFFER_NODE_URL=http://10.0.0.1:9332", "PATH=/bin",
		"COFFER_WALLETS_FULL_BLOCKS=true", "COFFER_CUSTODY_CONFIRMATIONS=3"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Chain.Coin != "ltc" || cfg.Follow.PollInterval.D() != 250*time.Millisecond {
		t.Fatalf("file not applied: %+v", cfg)
	}
	if cfg.Follow.StartHeight != 9 || cfg.Node.URL != "http://10.0.0.1:9332" || !cfg.Wallets.FullBlocks || cfg.Custody.Confirmations != 3 {
		t.Fatalf("env not applied: %+v", cfg)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		file, env, want string
	}{
		{"chain:\n  coin: eth\n", "", "chain.coin"},
		{"chain:\n  coin: ltc\n  network: signet\n", "", "chain.network"},
		{"follow:\n  max_reorg_depth: 0\n", "", "follow.max_reorg_depth"},
		{"follow:\n  poll_interval: soon\n", "", "soon"},
		{"folow:\n  start_height: 1\n", "", "folow"},
		{"", "COFFER_FOLLOW_PREFETCH=lots", "follow.prefetch"},
		{"", "COFFER_NODE_URL=127.0.0.1:1", "node.url"},
		{"", "COFFER_API_LISTEN=8080", "api.listen"},
		{"", "COFFER_LOG_LEVEL=loud", "log.level"},
		{"", "COFFER_NOPE=1", "COFFER_NOPE"},
		{"", "COFFER_WALLETS_FULL_BLOCKS=maybe", "wallets.full_blocks"},
		{"", "COFFER_CUSTODY_CONFIRMATIONS=0", "custody.confirmations"},
		{"custody:\n  master_key_file: a\n  master_key_env: B\n", "", "custody.master_key_file"},
	}
	for i, c := range cases {
		path := filepath.Join(dir, "c.yaml")
		os.WriteFile(path, []byte(c.file), 0o600)
		var env []string
		if c.env != "" {
			env = []string{c.env}
		}
		_, err := Load(path, env)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("case %d: error %v does not name %q", i, err, c.want)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), nil); err == nil {
		t.Error("missing file accepted")
	}
}

func TestEnvNames(t *testing.T) {
	if got := EnvName("database.dsn"); got != "COFFER_DATABASE_DSN" {
		t.Fatal(got)
	}
}

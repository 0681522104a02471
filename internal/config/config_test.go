package config

import (
	"os"
	"path/filepath"
	"reflect"
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
		{"", "COFFER_FOLLOW_CONFIRMATIONS_MAX=0", "follow.confirmations_max"},
		{"follow:\n  confirmations_max: 1001\n", "", "follow.confirmations_max"},
		{"", "COFFER_NODE_URL=127.0.0.1:1", "node.url"},
		{"", "COFFER_API_LISTEN=8080", "api.listen"},
		{"", "COFFER_LOG_LEVEL=loud", "log.level"},
		{"", "COFFER_NOPE=1", "COFFER_NOPE"},
		{"", "COFFER_WALLETS_FULL_BLOCKS=maybe", "wallets.full_blocks"},
		{"", "COFFER_CUSTODY_CONFIRMATIONS=0", "custody.confirmations"},
		{"custody:\n  master_key_file: a\n  master_key_env: B\n", "", "custody.master_key_file"},
		{"hooks:\n  timeout: 0s\n", "", "hooks.timeout"},
		{"", "COFFER_HOOKS_TIMEOUT=2h", "hooks.timeout"},
		{"", "COFFER_HOOKS_EVENT_TYPES=deposit.*,Tx", "hooks.event_types"},
		{"hooks:\n  event_types: [\"a b\"]\n", "", "hooks.event_types"},
		{"", "COFFER_HOOKS_COMMAND=hook.sh", "hooks.command"},
		{"", "COFFER_HOOKS_COMMAND=" + filepath.Join(dir, "missing"), "hooks.command"},
		{"", "COFFER_HOOKS_COMMAND=" + dir, "hooks.command"},
		{"webhooks:\n  timeout: 0s\n", "", "webhooks.timeout"},
		{"", "COFFER_WEBHOOKS_TIMEOUT=11m", "webhooks.timeout"},
		{"", "COFFER_WEBHOOKS_TIMEOUT=soon", "webhooks.timeout"},
		{"webhooks:\n  disable_after: -1h\n", "", "webhooks.disable_after"},
		{"", "COFFER_WEBHOOKS_SECRET_OVERLAP=-1s", "webhooks.secret_overlap"},
		{"", "COFFER_WEBHOOKS_SECRET_OVERLAP=721h", "webhooks.secret_overlap"},
		{"", "COFFER_WEBHOOKS_MAX_CONCURRENCY=0", "webhooks.max_concurrency"},
		{"webhooks:\n  max_concurrency: 1001\n", "", "webhooks.max_concurrency"},
		{"webhooks:\n  schedule: [0s, -5s]\n", "", "webhooks.schedule"},
		{"webhooks:\n  schedule: [0s, 169h]\n", "", "webhooks.schedule"},
		{"webhooks:\n  schedule: [0s, soon]\n", "", "soon"},
		{"webhooks:\n  schedule: 5s,x\n", "", "5s,x"},
		{"webhooks:\n  schedule: {a: 1s}\n", "", "line 2"},
		{"", "COFFER_WEBHOOKS_SCHEDULE=0s,,5s", "webhooks.schedule"},
		{"", "COFFER_WEBHOOKS_SCHEDULE=0s,5", "webhooks.schedule"},
		{"", "COFFER_WEBHOOKS_SCHEDULE=" + strings.Repeat("1s,", 100) + "1s", "webhooks.schedule"},
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

func TestWebhooks(t *testing.T) {
	cfg, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Webhooks{Timeout: Duration(15 * time.Second), DisableAfter: Duration(120 * time.Hour),
		SecretOverlap: Duration(24 * time.Hour), MaxConcurrency: 32}
	if !reflect.DeepEqual(cfg.Webhooks, want) {
		t.Fatalf("defaults %+v, want %+v", cfg.Webhooks, want)
	}

	path := filepath.Join(t.TempDir(), "coffer.yaml")
	os.WriteFile(path, []byte("webhooks:\n  timeout: 2s\n  disable_after: 0s\n  secret_overlap: 1h\n  max_concurrency: 4\n"+
		"  schedule: [0s, 250ms, 1m]\n"), 0o600)
	cfg, err = Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	want = Webhooks{Timeout: Duration(2 * time.Second), SecretOverlap: Duration(time.Hour), MaxConcurrency: 4,
		Schedule: Durations{0, Duration(250 * time.Millisecond), Duration(time.Minute)}}
	if !reflect.DeepEqual(cfg.Webhooks, want) {
		t.Fatalf("file: %+v, want %+v", cfg.Webhooks, want)
	}

	// The environment replaces the file's list; an empty value means the
	// built-in schedule.
	cfg, err = Load(path, []string{"COFFER_WEBHOOKS_SCHEDULE=0s, 5s ,2h", "COFFER_WEBHOOKS_TIMEOUT=500ms"})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Webhooks.Schedule; !reflect.DeepEqual(got, Durations{0, Duration(5 * time.Second), Duration(2 * time.Hour)}) ||
		cfg.Webhooks.Timeout.D() != 500*time.Millisecond {
		t.Fatalf("env: %+v", cfg.Webhooks)
	}
	os.WriteFile(path, []byte("webhooks:\n  schedule: 0s, 1s\n"), 0o600) // the string form
	cfg, err = Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Webhooks.Schedule; !reflect.DeepEqual(got, Durations{0, Duration(time.Second)}) {
		t.Fatalf("schedule as a string: %v", got)
	}
	cfg, err = Load(path, []string{"COFFER_WEBHOOKS_SCHEDULE="})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Webhooks.Schedule != nil {
		t.Fatalf("empty COFFER_WEBHOOKS_SCHEDULE: schedule %v, want none (the default)", cfg.Webhooks.Schedule)
	}
}

func TestEnvNames(t *testing.T) {
	if got := EnvName("database.dsn"); got != "COFFER_DATABASE_DSN" {
		t.Fatal(got)
	}
}

func TestConfirmationsMax(t *testing.T) {
	cfg, err := Load("", nil)
	if err != nil || cfg.Follow.ConfirmationsMax != 6 {
		t.Fatalf("default follow.confirmations_max %d, %v", cfg.Follow.ConfirmationsMax, err)
	}
	cfg, err = Load("", []string{"COFFER_FOLLOW_CONFIRMATIONS_MAX=1000"})
	if err != nil || cfg.Follow.ConfirmationsMax != 1000 {
		t.Fatalf("env follow.confirmations_max %d, %v", cfg.Follow.ConfirmationsMax, err)
	}
}

func TestHooks(t *testing.T) {
	cfg, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Hooks{Timeout: Duration(30 * time.Second)}); !reflect.DeepEqual(cfg.Hooks, want) {
		t.Fatalf("defaults %+v, want %+v", cfg.Hooks, want)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "hook.sh")
	os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755)
	plain := filepath.Join(dir, "plain.sh")
	os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644)
	path := filepath.Join(dir, "c.yaml")
	os.WriteFile(path, []byte("hooks:\n  command: "+script+"\n  event_types: [deposit.*, tx.confirmed]\n  timeout: 5s\n"), 0o600)
	cfg, err = Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Hooks{Command: script, EventTypes: Strings{"deposit.*", "tx.confirmed"}, Timeout: Duration(5 * time.Second)}
	if !reflect.DeepEqual(cfg.Hooks, want) {
		t.Fatalf("file: %+v, want %+v", cfg.Hooks, want)
	}
	cfg, err = Load(path, []string{"COFFER_HOOKS_EVENT_TYPES= alert , withdrawal.* ,"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Hooks.EventTypes, Strings{"alert", "withdrawal.*"}) {
		t.Fatalf("env: %+v", cfg.Hooks)
	}
	_, err = Load(path, []string{"COFFER_HOOKS_COMMAND=" + plain})
	if err == nil || !strings.Contains(err.Error(), "hooks.command") || !strings.Contains(err.Error(), "not executable") {
		t.Fatalf("non-executable command: %v", err)
	}
}

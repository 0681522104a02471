package regtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseGoMod(t *testing.T) {
	p := filepath.Join(t.TempDir(), "go.mod")
	mod := `module example.com/x

go 1.26

require github.com/btcsuite/btcd v0.24.2 // indirect

require (
	github.com/btcsuite/btcd/btcutil v1.1.6
)

tool (
	example.com/other
	github.com/btcsuite/btcd
)
`
	if err := os.WriteFile(p, []byte(mod), 0o644); err != nil {
		t.Fatal(err)
	}
	if v, tool := parseGoMod(p); v != "v0.24.2" || !tool {
		t.Fatalf("parseGoMod = %q, %v; want v0.24.2, true", v, tool)
	}
	if err := os.WriteFile(p, []byte("module x\nrequire (\n\tgithub.com/btcsuite/btcd v0.23.0\n)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if v, tool := parseGoMod(p); v != "v0.23.0" || tool {
		t.Fatalf("parseGoMod = %q, %v; want v0.23.0, false", v, tool)
	}
}

func TestBuildBtcdCached(t *testing.T) {
	if os.Getenv("COFFER_BTCD") != "" {
		t.Skip("COFFER_BTCD set")
	}
	bin, err := BuildBtcd(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cache, _ := os.UserCacheDir()
	if !strings.HasPrefix(bin, filepath.Join(cache, "coffer", "btcd-v")) {
		t.Fatalf("btcd at %s, want under %s", bin, cache)
	}
	t.Setenv("COFFER_BTCD", bin)
	if got, err := BuildBtcd(context.Background()); err != nil || got != bin {
		t.Fatalf("with COFFER_BTCD: %s, %v", got, err)
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/store/storetest"
)

// apikeyRun runs `coffer apikey args…` in-process.
func apikeyRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = cmdAPIKey(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// apikeyConfig writes a configuration file naming dsn and returns its path.
func apikeyConfig(t *testing.T, dsn string) string {
	t.Helper()
	t.Setenv("COFFER_CONFIG", "")
	path := filepath.Join(t.TempDir(), "coffer.yaml")
	// A Go-quoted string is a valid YAML double-quoted scalar.
	if err := os.WriteFile(path, fmt.Appendf(nil, "database:\n  dsn: %q\n", dsn), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestApikeyCreateListRevoke(t *testing.T) {
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			dsn := storetest.NewDSN(t, engine)
			cfg := apikeyConfig(t, dsn)

			code, out, errs := apikeyRun(t, "create", "--scope", "write", "--label", "ci deploy", "-config", cfg)
			if code != 0 {
				t.Fatalf("create exited %d: %s", code, errs)
			}
			key := strings.TrimSpace(out)
			if strings.Count(out, "\n") != 1 || !strings.HasPrefix(key, "coffer_") {
				t.Fatalf("create printed %q, want the key on one line", out)
			}
			if !strings.Contains(errs, "will not be shown again") || strings.Contains(errs, key) {
				t.Errorf("create's stderr = %q", errs)
			}

			db := storetest.Open(t, dsn)
			ctx := context.Background()
			p, err := auth.AuthenticateAPIKey(ctx, db, key)
			if err != nil {
				t.Fatalf("the printed key does not authenticate: %v", err)
			}
			if p.Scope != auth.ScopeWrite || p.KeyID == "" {
				t.Fatalf("principal = %+v", p)
			}

			code, out, errs = apikeyRun(t, "list", "-config", cfg)
			if code != 0 {
				t.Fatalf("list exited %d: %s", code, errs)
			}
			secret := key[len("coffer_")+13:]
			if !strings.Contains(out, p.KeyID) || !strings.Contains(out, "ci deploy") || !strings.Contains(out, "write") ||
				!strings.Contains(out, "LAST USED") || strings.Contains(out, secret) {
				t.Errorf("list printed:\n%s", out)
			}

			// Flags may follow the positional argument.
			code, out, errs = apikeyRun(t, "revoke", p.KeyID, "--config", cfg)
			if code != 0 || !strings.Contains(out, p.KeyID) {
				t.Fatalf("revoke exited %d: %s%s", code, out, errs)
			}
			if _, err := auth.AuthenticateAPIKey(ctx, db, key); !errors.Is(err, auth.ErrRevoked) {
				t.Errorf("revoked key: %v", err)
			}
			_, out, _ = apikeyRun(t, "list", "-config", cfg)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 2 || strings.HasSuffix(lines[1], " -") {
				t.Errorf("list after revoke does not show the revocation:\n%s", out)
			}

			code, _, errs = apikeyRun(t, "revoke", "-config", cfg, "ffffffffffff")
			if code != 1 || !strings.Contains(errs, "ffffffffffff") {
				t.Errorf("revoke of an unknown id exited %d: %s", code, errs)
			}
		})
	}
}

// TestApikeyEnvConfig: the database can come from COFFER_DATABASE_DSN.
func TestApikeyEnvConfig(t *testing.T) {
	dsn := storetest.NewSQLiteDSN(t)
	t.Setenv("COFFER_CONFIG", "")
	t.Setenv("COFFER_DATABASE_DSN", dsn)
	code, out, errs := apikeyRun(t, "create", "-scope", "admin")
	if code != 0 {
		t.Fatalf("create exited %d: %s", code, errs)
	}
	db := storetest.Open(t, dsn)
	p, err := auth.AuthenticateAPIKey(context.Background(), db, strings.TrimSpace(out))
	if err != nil || !p.AllowAdmin() {
		t.Fatalf("AuthenticateAPIKey = %+v, %v", p, err)
	}
}

// TestApikeyUsageErrors: mistakes exit 2 with a message naming them, and
// touch no database.
func TestApikeyUsageErrors(t *testing.T) {
	dsn := storetest.NewSQLiteDSN(t)
	cfg := apikeyConfig(t, dsn)
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"create", "--scope", "root", "-config", cfg}, []string{`unknown scope "root"`, "read, write or admin"}},
		{[]string{"create", "-config", cfg}, []string{"-scope is required"}},
		{[]string{"create", "--scope", "read", "--label", "a\tb", "-config", cfg}, []string{"control character"}},
		{[]string{"create", "--scope", "read", "extra", "-config", cfg}, []string{`unexpected argument "extra"`}},
		{[]string{"create", "--scoop", "read", "-config", cfg}, []string{"scoop"}},
		{[]string{"revoke", "-config", cfg}, []string{"exactly one key ID"}},
		{[]string{"revoke", "a", "b", "-config", cfg}, []string{"exactly one key ID"}},
		{[]string{"list", "x", "-config", cfg}, []string{`unexpected argument "x"`}},
		{[]string{"rotate"}, []string{`unknown subcommand "rotate"`}},
		{nil, []string{"coffer apikey create"}},
	} {
		code, out, errs := apikeyRun(t, c.args...)
		if code != 2 {
			t.Errorf("apikey %q exited %d, want 2 (stderr %q)", c.args, code, errs)
		}
		if out != "" {
			t.Errorf("apikey %q printed %q on stdout", c.args, out)
		}
		for _, w := range c.want {
			if !strings.Contains(errs, w) {
				t.Errorf("apikey %q: stderr %q does not say %q", c.args, errs, w)
			}
		}
	}
	if _, err := os.Stat(dsn); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed command created the database: %v", err)
	}
	if code, _, errs := apikeyRun(t, "help"); code != 0 || errs != "" {
		t.Errorf("apikey help exited %d: %s", code, errs)
	}
	if code, _, _ := apikeyRun(t, "list", "-h"); code != 0 {
		t.Errorf("apikey list -h exited %d", code)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/coffer/coffer/internal/keys"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// keysRun runs `coffer keys args…` in-process.
func keysRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runKeys(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// keysConfig writes a configuration file naming dsn and returns its path.
func keysConfig(t *testing.T, dsn string) string {
	t.Helper()
	t.Setenv("COFFER_CONFIG", "")
	path := filepath.Join(t.TempDir(), "coffer.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, "database:\n  dsn: %q\n", dsn), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func masterFromLine(t *testing.T, line string) keys.MasterKey {
	t.Helper()
	var k [32]byte
	if _, err := hex.Decode(k[:], []byte(line)); err != nil {
		t.Fatal(err)
	}
	return keys.NewMasterKey(k)
}

func TestKeysGenerateMaster(t *testing.T) {
	code, out, errs := keysRun(t, "generate-master")
	if code != 0 {
		t.Fatalf("exited %d: %s", code, errs)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).MatchString(out) {
		t.Fatalf("printed %q, want one line of 64 hex characters", out)
	}
	if !strings.Contains(errs, "chmod 600") || strings.Contains(errs, strings.TrimSpace(out)) {
		t.Errorf("stderr = %q", errs)
	}
	// The line is what FileProvider reads.
	path := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := keys.FileProvider(path).Keys(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, out2, _ := keysRun(t, "generate-master")
	if out2 == out {
		t.Error("two runs printed the same key")
	}
}

func TestKeysUsageErrors(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "master.key")
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{nil, 2, "Usage:"},
		{[]string{"rotate"}, 2, `unknown subcommand "rotate"`},
		{[]string{"generate-master", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"generate-master", "-bogus"}, 2, "flag provided but not defined"},
		{[]string{"rotate-master"}, 2, "-master-key-file or -master-key-env is required"},
		{[]string{"rotate-master", "-master-key-file", keyFile, "-master-key-env", "X"}, 2, "not both"},
		{[]string{"rotate-master", "-master-key-file", keyFile}, 1, "no such file"},
		{[]string{"rotate-master", "-master-key-env", "COFFER_TEST_UNSET_KEYS"}, 1, "COFFER_TEST_UNSET_KEYS is not set"},
	} {
		code, _, errs := keysRun(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) {
			t.Errorf("coffer keys %q: exit %d, stderr %q; want %d saying %q", c.args, code, errs, c.code, c.msg)
		}
	}
	if code, out, _ := keysRun(t, "help"); code != 0 || !strings.Contains(out, "FIRST line") {
		t.Errorf("help: exit %d, %q", code, out)
	}
}

// TestKeysRotateMaster runs the documented rotation end to end.
func TestKeysRotateMaster(t *testing.T) {
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			dsn := storetest.NewDSN(t, engine)
			cfg := keysConfig(t, dsn)
			db := storetest.Open(t, dsn)
			ctx := context.Background()

			_, lineA, _ := keysRun(t, "generate-master")
			_, lineB, _ := keysRun(t, "generate-master")
			lineA, lineB = strings.TrimSpace(lineA), strings.TrimSpace(lineB)
			a, b := masterFromLine(t, lineA), masterFromLine(t, lineB)
			keyFile := filepath.Join(t.TempDir(), "master.key")
			write := func(mode os.FileMode, lines ...string) {
				if err := os.WriteFile(keyFile, []byte(strings.Join(lines, "\n")+"\n"), mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(keyFile, mode); err != nil {
					t.Fatal(err)
				}
			}
			write(0o600, lineA)

			mnemonic, err := keys.NewMnemonic(12)
			if err != nil {
				t.Fatal(err)
			}
			s := keys.New(db, keys.FileProvider(keyFile))
			for _, owner := range []string{"w1", "w2", "w3"} {
				if err := db.InTx(ctx, func(tx *store.Tx) error {
					return s.Put(ctx, tx, owner, keys.KindMnemonic, []byte(mnemonic))
				}); err != nil {
					t.Fatal(err)
				}
			}

			// A key file others can read is refused before anything changes.
			write(0o644, lineB, lineA)
			code, _, errs := keysRun(t, "rotate-master", "-config", cfg, "-master-key-file", keyFile)
			if code != 1 || !strings.Contains(errs, "chmod 600") {
				t.Fatalf("lax key file: exit %d, %s", code, errs)
			}

			write(0o600, lineB, lineA)
			code, out, errs := keysRun(t, "rotate-master", "-config", cfg, "-master-key-file", keyFile)
			if code != 0 {
				t.Fatalf("rotate-master exited %d: %s%s", code, out, errs)
			}
			for _, want := range []string{
				"re-wrapped 3 secret(s) under master key " + b.ID,
				"master key " + b.ID + ": 3 secret(s) (current)",
				"every secret is under master key " + b.ID,
			} {
				if !strings.Contains(out, want) {
					t.Errorf("stdout lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out+errs, lineA) || strings.Contains(out+errs, lineB) {
				t.Error("rotate-master printed a master key")
			}

			// The old line removed, the secrets still open.
			write(0o600, lineB)
			for _, owner := range []string{"w1", "w2", "w3"} {
				if _, secret, err := s.Get(ctx, owner); err != nil || string(secret) != mnemonic {
					t.Fatalf("Get %s after rotation: %v", owner, err)
				}
			}

			// Again, with the keys in an environment variable: nothing to do.
			t.Setenv("COFFER_TEST_ROTATE_KEYS", lineB+","+lineA)
			code, out, errs = keysRun(t, "rotate-master", "-config", cfg, "-master-key-env", "COFFER_TEST_ROTATE_KEYS")
			if code != 0 || !strings.Contains(out, "re-wrapped 0 secret(s)") {
				t.Fatalf("second rotate-master: exit %d: %s%s", code, out, errs)
			}

			// A row under a key nobody lists any more fails the check.
			if err := db.InTx(ctx, func(tx *store.Tx) error {
				return keys.New(db, keys.StaticProvider(a)).Put(ctx, tx, "w4", keys.KindMnemonic, []byte(mnemonic))
			}); err != nil {
				t.Fatal(err)
			}
			code, out, errs = keysRun(t, "rotate-master", "-config", cfg, "-master-key-file", keyFile)
			if code != 1 || !strings.Contains(errs, "not list") || !strings.Contains(errs, a.ID) {
				t.Fatalf("rotate-master with a missing key: exit %d: %s%s", code, out, errs)
			}
		})
	}
}

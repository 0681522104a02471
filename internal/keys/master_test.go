package keys_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/keys"
)

// newMaster returns a fresh random master key and its hex line.
func newMaster(t testing.TB) (keys.MasterKey, string) {
	t.Helper()
	line, err := keys.GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	var k [32]byte
	if _, err := hex.Decode(k[:], []byte(line)); err != nil {
		t.Fatalf("GenerateMasterKey gave %d characters that are not hex: %v", len(line), err)
	}
	return keys.NewMasterKey(k), line
}

// writeKeyFile writes lines to path with mode 0600 (replacing any file) and
// moves its modification time on, so that a provider sees a new version
// even when the size is the same.
func writeKeyFile(t testing.TB, path string, lines ...string) {
	t.Helper()
	writeFileMode(t, path, strings.Join(lines, "\n")+"\n", 0o600)
}

var mtimeTick = time.Now().Add(-time.Hour)

func writeFileMode(t testing.TB, path, text string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // WriteFile keeps an existing file's mode
		t.Fatal(err)
	}
	mtimeTick = mtimeTick.Add(time.Second)
	if err := os.Chtimes(path, mtimeTick, mtimeTick); err != nil {
		t.Fatal(err)
	}
}

func providerKeys(t testing.TB, p keys.Provider) (keys.MasterKey, []keys.MasterKey) {
	t.Helper()
	cur, all, err := p.Keys(context.Background())
	if err != nil {
		t.Fatalf("Keys: %v", err)
	}
	if len(all) == 0 || all[0] != cur {
		t.Fatalf("Keys: all does not start with current")
	}
	return cur, all
}

func ids(ks []keys.MasterKey) []string {
	var out []string
	for _, k := range ks {
		out = append(out, k.ID)
	}
	return out
}

func TestGenerateMasterKey(t *testing.T) {
	a, lineA := newMaster(t)
	b, _ := newMaster(t)
	if len(lineA) != 64 || strings.ToLower(lineA) != lineA {
		t.Errorf("key line %d characters, want 64 lowercase hex", len(lineA))
	}
	if a.Key == b.Key || a.ID == b.ID {
		t.Error("two generated keys are equal")
	}
	if len(a.ID) != 16 {
		t.Errorf("id %q, want 16 hex characters", a.ID)
	}
}

// TestMasterKeyFormatHidesKey: printing a MasterKey with any verb shows the
// id, never the key.
func TestMasterKeyFormatHidesKey(t *testing.T) {
	k, line := newMaster(t)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%d", "%q"} {
		got := fmt.Sprintf(verb, k)
		if strings.Contains(strings.ToLower(got), line) || strings.Contains(got, string(k.Key[:])) || !strings.Contains(got, k.ID) {
			t.Errorf("Sprintf(%s) = %q", verb, got)
		}
		got = fmt.Sprintf(verb, []keys.MasterKey{k})
		if strings.Contains(strings.ToLower(got), line) {
			t.Errorf("Sprintf(%s) of a slice shows the key", verb)
		}
	}
}

func TestFileProvider(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	a, lineA := newMaster(t)
	b, lineB := newMaster(t)
	writeKeyFile(t, path, "# Coffer master keys: the first is current", "", "  "+lineA+"  ")
	p := keys.FileProvider(path)
	cur, all := providerKeys(t, p)
	if cur != a || len(all) != 1 {
		t.Fatalf("got %v, want only key A %s", ids(all), a.ID)
	}

	// Rotation: B is prepended; the running provider sees it.
	writeKeyFile(t, path, lineB, "# old", strings.ToUpper(lineA))
	cur, all = providerKeys(t, p)
	if cur != b || len(all) != 2 || all[1] != a {
		t.Fatalf("after prepending B: %v, want [%s %s]", ids(all), b.ID, a.ID)
	}
	// A file renamed into place is read again.
	tmp := filepath.Join(dir, "new.key")
	writeKeyFile(t, tmp, lineA, lineB)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	cur, all = providerKeys(t, p)
	if cur != a || len(all) != 2 {
		t.Fatalf("after rename: %v, want [%s %s]", ids(all), a.ID, b.ID)
	}
	// A duplicate line counts once.
	writeKeyFile(t, path, lineA, lineA, lineB)
	if _, all = providerKeys(t, p); len(all) != 2 {
		t.Fatalf("duplicate key listed %d keys", len(all))
	}
	// A broken file is an error, not a fallback to the keys read before.
	writeKeyFile(t, path, lineA[:63])
	if _, _, err := p.Keys(context.Background()); !errors.Is(err, keys.ErrBadMasterKey) {
		t.Fatalf("truncated key: err = %v", err)
	}
	writeKeyFile(t, path, lineB)
	if cur, _ = providerKeys(t, p); cur != b {
		t.Fatal("provider did not recover after the file was fixed")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Keys(context.Background()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: err = %v", err)
	}
}

func TestFileProviderErrors(t *testing.T) {
	_, line := newMaster(t)
	cases := []struct {
		name, text string
		mode       os.FileMode
		want       error
		msg        string
	}{
		{"bad hex", strings.Replace(line, line[10:12], "zz", 1) + "\n", 0o600, keys.ErrBadMasterKey, "line 1 is not hexadecimal"},
		{"short", line[:62] + "\n", 0o600, keys.ErrBadMasterKey, "line 1 is 62 characters long"},
		{"long", line + "00\n", 0o600, keys.ErrBadMasterKey, "line 1 is 66 characters long"},
		{"bad second line", line + "\n\nnot-a-key\n", 0o600, keys.ErrBadMasterKey, "line 3 is 9 characters"},
		{"empty", "", 0o600, keys.ErrNoMasterKey, "holds no key"},
		{"only comments", "# nothing yet\n\n", 0o600, keys.ErrNoMasterKey, "generate-master"},
		{"group readable", line + "\n", 0o640, keys.ErrKeyFileMode, "mode 0640"},
		{"world readable", line + "\n", 0o604, keys.ErrKeyFileMode, "chmod 600"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "master.key")
			writeFileMode(t, path, c.text, c.mode)
			_, _, err := keys.FileProvider(path).Keys(context.Background())
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want %v saying %q and naming the file", err, c.want, c.msg)
			}
			if strings.Contains(err.Error(), line[:16]) {
				t.Fatalf("error quotes key material: %v", err)
			}
		})
	}
	t.Run("read-only owner", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "master.key")
		writeFileMode(t, path, line+"\n", 0o400)
		if _, _, err := keys.FileProvider(path).Keys(context.Background()); err != nil {
			t.Fatalf("mode 0400: %v", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		os.Chmod(dir, 0o700)
		if _, _, err := keys.FileProvider(dir).Keys(context.Background()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("permissions tightened later", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "master.key")
		writeFileMode(t, path, line+"\n", 0o600)
		p := keys.FileProvider(path)
		providerKeys(t, p)
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.Keys(context.Background()); !errors.Is(err, keys.ErrKeyFileMode) {
			t.Fatalf("after chmod 644: err = %v", err)
		}
	})
}

func TestEnvProvider(t *testing.T) {
	a, lineA := newMaster(t)
	b, lineB := newMaster(t)
	t.Setenv("COFFER_TEST_MASTER_KEYS", " "+lineB+" , "+lineA+",")
	p := keys.EnvProvider("COFFER_TEST_MASTER_KEYS")
	// Read once: a later change of the variable is not seen.
	t.Setenv("COFFER_TEST_MASTER_KEYS", lineA)
	cur, all := providerKeys(t, p)
	if cur != b || len(all) != 2 || all[1] != a {
		t.Fatalf("got %v, want [%s %s]", ids(all), b.ID, a.ID)
	}

	for _, c := range []struct {
		name, value string
		set         bool
		want        error
		msg         string
	}{
		{"unset", "", false, keys.ErrNoMasterKey, "is not set"},
		{"empty", "", true, keys.ErrNoMasterKey, "holds no key"},
		{"bad hex", "x" + lineA[1:], true, keys.ErrBadMasterKey, "entry 1 is not hexadecimal"},
		{"bad length", lineA + "," + lineB[:10], true, keys.ErrBadMasterKey, "entry 2 is 10 characters long"},
	} {
		t.Run(c.name, func(t *testing.T) {
			const name = "COFFER_TEST_MASTER_KEYS_2"
			t.Setenv(name, c.value)
			if !c.set {
				os.Unsetenv(name)
			}
			_, _, err := keys.EnvProvider(name).Keys(context.Background())
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), name) {
				t.Fatalf("err = %v, want %v saying %q", err, c.want, c.msg)
			}
		})
	}
}

func TestStaticProvider(t *testing.T) {
	a, _ := newMaster(t)
	b, _ := newMaster(t)
	cur, all := providerKeys(t, keys.StaticProvider(b, a))
	if cur != b || len(all) != 2 || all[1] != a {
		t.Fatalf("got %v", ids(all))
	}
}

// TestFileProviderRacyRewrite: a file rewritten in place with the same size
// and a modification time that did not move (coarse timestamps) is still
// read again, because a stat taken right after a change is not trusted.
func TestFileProviderRacyRewrite(t *testing.T) {
	_, lineA := newMaster(t)
	b, lineB := newMaster(t)
	path := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(path, []byte(lineA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	p := keys.FileProvider(path)
	providerKeys(t, p)
	if err := os.WriteFile(path, []byte(lineB+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if cur, _ := providerKeys(t, p); cur != b {
		t.Fatal("same-size rewrite with an unchanged mtime was not picked up")
	}
}

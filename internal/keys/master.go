package keys

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"
)

// MasterKeySize is the length of a master key in bytes (AES-256).
const MasterKeySize = 32

// MasterKey is a key that wraps data keys. Formatting it with fmt (any verb)
// shows only its id, so it cannot end up in a log by accident.
type MasterKey struct {
	ID  string // first 8 bytes of SHA-256(Key), lowercase hex
	Key [MasterKeySize]byte
}

// NewMasterKey returns key with its id filled in.
func NewMasterKey(key [MasterKeySize]byte) MasterKey {
	sum := sha256.Sum256(key[:])
	return MasterKey{ID: hex.EncodeToString(sum[:8]), Key: key}
}

// Format prints "master key <id>" whatever the verb.
func (k MasterKey) Format(f fmt.State, _ rune) { fmt.Fprintf(f, "master key %s", k.ID) }

// Provider hands out the master keys. current wraps new data keys; all lists
// every key that may unwrap existing ones, current first. Implementations
// must be safe for concurrent use and cheap to call: the Store asks on every
// operation, so a provider that re-reads its source can pick up a rotation.
// Callers must not modify the returned slice.
// See the package comment for how a KMS or Vault provider fits in.
type Provider interface {
	Keys(ctx context.Context) (current MasterKey, all []MasterKey, err error)
}

// Errors returned by providers; the messages they come with name the source
// (file or variable) and the line, never key material.
var (
	// ErrNoMasterKey means the source holds no key at all.
	ErrNoMasterKey = errors.New("keys: no master key configured")
	// ErrBadMasterKey means a key is not 64 hex characters.
	ErrBadMasterKey = errors.New("keys: malformed master key")
	// ErrKeyFileMode means the key file is readable or writable by group or
	// others.
	ErrKeyFileMode = errors.New("keys: master key file permissions are too open")
)

// GenerateMasterKey returns a new random master key as the 64-character hex
// line that FileProvider and EnvProvider read.
func GenerateMasterKey() (string, error) {
	var k [MasterKeySize]byte
	if _, err := rand.Read(k[:]); err != nil {
		return "", fmt.Errorf("keys: generating master key: %w", err)
	}
	s := hex.EncodeToString(k[:])
	clear(k[:])
	return s, nil
}

// parseKeyList parses keys from items, in order; where names the source for
// error messages (e.g. "master key file /etc/coffer/master.key"), and
// unit the item ("line" or "entry"). Blank items and # comments are skipped,
// and a key listed twice counts once.
func parseKeyList(items [][]byte, where, unit string) ([]MasterKey, error) {
	var out []MasterKey
	seen := map[string]bool{}
	for i, item := range items {
		item = bytes.TrimSpace(item)
		if len(item) == 0 || item[0] == '#' {
			continue
		}
		if len(item) != 2*MasterKeySize {
			return nil, fmt.Errorf("%w: %s %s %d is %d characters long; a master key is %d hex characters (generate one with `coffer keys generate-master`)",
				ErrBadMasterKey, where, unit, i+1, len(item), 2*MasterKeySize)
		}
		var k [MasterKeySize]byte
		if _, err := hex.Decode(k[:], item); err != nil {
			return nil, fmt.Errorf("%w: %s %s %d is not hexadecimal", ErrBadMasterKey, where, unit, i+1)
		}
		mk := NewMasterKey(k)
		clear(k[:])
		if !seen[mk.ID] {
			seen[mk.ID] = true
			out = append(out, mk)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s holds no key; generate one with `coffer keys generate-master`", ErrNoMasterKey, where)
	}
	return out, nil
}

// staticProvider always returns the same keys.
type staticProvider struct{ keys []MasterKey }

// StaticProvider returns a provider of fixed keys: current, then the older
// ones that may still unwrap rows. It is meant for tests and for programs
// that obtain keys some other way.
func StaticProvider(current MasterKey, older ...MasterKey) Provider {
	return &staticProvider{keys: append([]MasterKey{current}, older...)}
}

func (p *staticProvider) Keys(context.Context) (MasterKey, []MasterKey, error) {
	return p.keys[0], p.keys, nil
}

// envProvider holds the keys read once from an environment variable.
type envProvider struct {
	keys []MasterKey
	err  error
}

// EnvProvider returns a provider reading the environment variable name now,
// once: master keys as 64 hex characters each, separated by commas, the
// current key first. An unset or malformed variable makes every Keys call
// fail with the reason.
func EnvProvider(name string) Provider {
	where := "environment variable " + name
	v, ok := os.LookupEnv(name)
	if !ok {
		return &envProvider{err: fmt.Errorf("%w: %s is not set", ErrNoMasterKey, where)}
	}
	keys, err := parseKeyList(bytes.Split([]byte(v), []byte(",")), where, "entry")
	return &envProvider{keys: keys, err: err}
}

func (p *envProvider) Keys(context.Context) (MasterKey, []MasterKey, error) {
	if p.err != nil {
		return MasterKey{}, nil, p.err
	}
	return p.keys[0], p.keys, nil
}

// maxKeyFile bounds what FileProvider reads: a key file holds a few lines.
const maxKeyFile = 64 << 10

// fileProvider re-reads its file when the file changes.
type fileProvider struct {
	path string

	mu   sync.Mutex
	info os.FileInfo // of the file keys was read from; nil before the first read
	keys []MasterKey
}

// FileProvider returns a provider reading master keys from the file at path,
// one per line as 64 hex characters, the first being the current key; blank
// lines and lines starting with # are ignored. Every Keys call stats the
// file and reads it again when its size, modification time, mode or
// identity (a file renamed into place) changed, so a rotation needs no
// restart. The file must be a regular file not readable or writable by group
// or others (mode 0600 or 0400); on a failed read the error is returned and
// the keys read before are not used.
func FileProvider(path string) Provider { return &fileProvider{path: path} }

func (p *fileProvider) Keys(context.Context) (MasterKey, []MasterKey, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	where := "master key file " + p.path
	fi, err := os.Stat(p.path)
	if err != nil {
		p.info, p.keys = nil, nil
		return MasterKey{}, nil, fmt.Errorf("keys: %s: %w", where, err)
	}
	if err := checkKeyFileInfo(fi, where, p.path); err != nil {
		p.info, p.keys = nil, nil
		return MasterKey{}, nil, err
	}
	if p.info != nil && sameVersion(p.info, fi) {
		return p.keys[0], p.keys, nil
	}
	keys, fi, err := readKeyFile(p.path, where)
	if err != nil {
		p.info, p.keys = nil, nil
		return MasterKey{}, nil, err
	}
	p.info, p.keys = fi, keys
	return keys[0], keys, nil
}

// sameVersion reports whether b describes the same file contents as a, as far
// as a stat can tell.
func sameVersion(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && a.Mode() == b.Mode()
}

func checkKeyFileInfo(fi os.FileInfo, where, path string) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("keys: %s is not a regular file", where)
	}
	// Windows has no Unix permission bits to check.
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return fmt.Errorf("%w: %s has mode %04o, so other users can read it; run chmod 600 %s", ErrKeyFileMode, where, perm, path)
	}
	if fi.Size() > maxKeyFile {
		return fmt.Errorf("%w: %s is %d bytes; a key file holds a few 64-character lines", ErrBadMasterKey, where, fi.Size())
	}
	return nil
}

// readKeyFile reads and parses the file, returning the stat of the file it
// actually read so that a replacement racing the read is noticed next time.
func readKeyFile(path, where string) ([]MasterKey, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("keys: %s: %w", where, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("keys: %s: %w", where, err)
	}
	if err := checkKeyFileInfo(fi, where, path); err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, nil, fmt.Errorf("keys: %s: %w", where, err)
	}
	defer clear(data)
	if len(data) > maxKeyFile {
		return nil, nil, fmt.Errorf("%w: %s is over %d bytes; a key file holds a few 64-character lines", ErrBadMasterKey, where, maxKeyFile)
	}
	var lines [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 1024), maxKeyFile+1)
	for sc.Scan() {
		lines = append(lines, sc.Bytes())
	}
	keys, err := parseKeyList(lines, where, "line")
	if err != nil {
		return nil, nil, err
	}
	// A file written in the same clock tick as the stat could change again
	// without its modification time moving; forget such a stat so that the
	// next call reads once more.
	if time.Since(fi.ModTime()) < 2*time.Second {
		fi = recentFileInfo{fi}
	}
	return keys, fi, nil
}

// recentFileInfo marks a stat taken too close to the file's last change to
// trust (the "racy git" problem): sameVersion never matches it, since
// os.SameFile only recognises the os package's own stats.
type recentFileInfo struct{ os.FileInfo }

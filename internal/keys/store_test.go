package keys_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/keys"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func regtest(t testing.TB) *chain.Params {
	t.Helper()
	p, err := chain.Lookup(chain.BTC, chain.Regtest)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// put stores a secret in its own transaction.
func put(t *testing.T, s *keys.Store, db *store.DB, owner, kind string, secret []byte) {
	t.Helper()
	ctx := testContext(t)
	if err := db.InTx(ctx, func(tx *store.Tx) error { return s.Put(ctx, tx, owner, kind, secret) }); err != nil {
		t.Fatalf("Put %s: %v", owner, err)
	}
}

func mustGet(t *testing.T, s *keys.Store, owner, wantKind string, want []byte) {
	t.Helper()
	kind, got, err := s.Get(testContext(t), owner)
	if err != nil {
		t.Fatalf("Get %s: %v", owner, err)
	}
	if kind != wantKind || !bytes.Equal(got, want) {
		t.Fatalf("Get %s = kind %q and a different secret (%d bytes, want %d)", owner, kind, len(got), len(want))
	}
}

// newSecrets returns a fresh mnemonic and an account xprv derived from it.
func newSecrets(t testing.TB) (mnemonic, xprv string) {
	t.Helper()
	m, err := keys.NewMnemonic(24)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := keys.SeedFromMnemonic(m, "")
	if err != nil {
		t.Fatal(err)
	}
	acct, _, err := keys.AccountKey(seed, regtest(t))
	if err != nil {
		t.Fatal(err)
	}
	return m, acct.String()
}

type row struct {
	kind, masterID   string
	wrapped, sealed  []byte
	created, rotated sql.NullInt64
}

func readRow(t *testing.T, db *store.DB, owner string) row {
	t.Helper()
	var r row
	err := db.QueryRowContext(testContext(t), `SELECT kind, master_key_id, wrapped_dek, secret_ct, created_at, rotated_at
		FROM custody_secrets WHERE owner_id = $1`, owner).Scan(&r.kind, &r.masterID, &r.wrapped, &r.sealed, &r.created, &r.rotated)
	if err != nil {
		t.Fatalf("reading row of %s: %v", owner, err)
	}
	return r
}

func exec(t *testing.T, db *store.DB, q string, args ...any) {
	t.Helper()
	ctx := testContext(t)
	if err := db.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, q, args...)
		return err
	}); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestRoundTrip(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		a, _ := newMaster(t)
		s := keys.New(db, keys.StaticProvider(a))
		mnemonic, xprv := newSecrets(t)
		before := time.Now().Unix()
		put(t, s, db, "wallet-1", keys.KindMnemonic, []byte(mnemonic))
		put(t, s, db, "wallet-2", keys.KindXprv, []byte(xprv))
		mustGet(t, s, "wallet-1", keys.KindMnemonic, []byte(mnemonic))
		mustGet(t, s, "wallet-2", keys.KindXprv, []byte(xprv))

		r := readRow(t, db, "wallet-1")
		if r.masterID != a.ID || r.kind != keys.KindMnemonic || r.created.Int64 < before || r.rotated.Valid {
			t.Errorf("row: master %s kind %s created %v rotated %v", r.masterID, r.kind, r.created, r.rotated)
		}
		// Nonces are random: the same secret seals differently.
		put(t, s, db, "wallet-3", keys.KindMnemonic, []byte(mnemonic))
		if r3 := readRow(t, db, "wallet-3"); bytes.Equal(r3.sealed, r.sealed) || bytes.Equal(r3.wrapped, r.wrapped) {
			t.Error("two rows with the same secret have equal ciphertexts")
		}

		ctx := testContext(t)
		if _, _, err := s.Get(ctx, "nobody"); !errors.Is(err, keys.ErrNotFound) {
			t.Errorf("Get of a missing owner: %v", err)
		}
		err := db.InTx(ctx, func(tx *store.Tx) error { return s.Put(ctx, tx, "wallet-1", keys.KindXprv, []byte(xprv)) })
		if !errors.Is(err, keys.ErrExists) {
			t.Errorf("second Put for an owner: %v", err)
		}
		mustGet(t, s, "wallet-1", keys.KindMnemonic, []byte(mnemonic))

		// Put joins the caller's transaction: a rollback leaves nothing.
		boom := errors.New("boom")
		err = db.InTx(ctx, func(tx *store.Tx) error {
			if err := s.Put(ctx, tx, "wallet-4", keys.KindMnemonic, []byte(mnemonic)); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		if _, _, err := s.Get(ctx, "wallet-4"); !errors.Is(err, keys.ErrNotFound) {
			t.Errorf("rolled-back Put left a row: %v", err)
		}

		var deleted bool
		if err := db.InTx(ctx, func(tx *store.Tx) (err error) {
			deleted, err = s.Delete(ctx, tx, "wallet-3")
			return err
		}); err != nil || !deleted {
			t.Fatalf("Delete: %v, %v", deleted, err)
		}
		if _, _, err := s.Get(ctx, "wallet-3"); !errors.Is(err, keys.ErrNotFound) {
			t.Errorf("Get after Delete: %v", err)
		}
	})
}

func TestPutValidates(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		a, _ := newMaster(t)
		s := keys.New(db, keys.StaticProvider(a))
		mnemonic, xprv := newSecrets(t)
		xpub := func() string {
			k, err := keys.ParseXprv(xprv, regtest(t))
			if err != nil {
				t.Fatal(err)
			}
			pub, err := k.Neuter()
			if err != nil {
				t.Fatal(err)
			}
			return pub.String()
		}()
		ctx := testContext(t)
		for _, c := range []struct {
			name, owner, kind, secret, msg string
		}{
			{"unknown kind", "w", "wif", mnemonic, "unknown kind"},
			{"empty owner", "", keys.KindMnemonic, mnemonic, "owner id"},
			{"empty secret", "w", keys.KindMnemonic, "", "1 to"},
			{"bad mnemonic", "w", keys.KindMnemonic, strings.Replace(mnemonic, " ", "  ", 1), "NormalizeMnemonic"},
			{"mnemonic checksum", "w", keys.KindMnemonic, "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon", "checksum"},
			{"xpub as xprv", "w", keys.KindXprv, xpub, "not an extended private key"},
			{"mnemonic as xprv", "w", keys.KindXprv, mnemonic, "not an extended private key"},
		} {
			err := db.InTx(ctx, func(tx *store.Tx) error { return s.Put(ctx, tx, c.owner, c.kind, []byte(c.secret)) })
			if !errors.Is(err, keys.ErrInvalid) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("%s: err = %v, want ErrInvalid saying %q", c.name, err, c.msg)
			}
			if c.secret != "" && err != nil && strings.Contains(err.Error(), c.secret) {
				t.Errorf("%s: error quotes the secret", c.name)
			}
		}
	})
}

// TestWrongMasterKey: a store given other master keys fails cleanly, with an
// error saying which key the row needs.
func TestWrongMasterKey(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		a, _ := newMaster(t)
		b, _ := newMaster(t)
		mnemonic, _ := newSecrets(t)
		put(t, keys.New(db, keys.StaticProvider(a)), db, "w", keys.KindMnemonic, []byte(mnemonic))
		ctx := testContext(t)

		_, secret, err := keys.New(db, keys.StaticProvider(b)).Get(ctx, "w")
		if !errors.Is(err, keys.ErrUnknownMasterKey) || !strings.Contains(err.Error(), a.ID) || secret != nil {
			t.Fatalf("Get under key B: %v", err)
		}
		// A key claiming A's id but holding other bytes does not open it.
		forged := keys.MasterKey{ID: a.ID, Key: b.Key}
		_, secret, err = keys.New(db, keys.StaticProvider(forged)).Get(ctx, "w")
		if !errors.Is(err, keys.ErrDecrypt) || secret != nil {
			t.Fatalf("Get under a forged key: %v", err)
		}
		// A failing provider's error comes through.
		path := filepath.Join(t.TempDir(), "missing.key")
		if _, _, err := keys.New(db, keys.FileProvider(path)).Get(ctx, "w"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("Get with a missing key file: %v", err)
		}
	})
}

// TestTamperedRows: any change to a row's ciphertexts, or moving them
// between rows, makes Get fail with ErrDecrypt.
func TestTamperedRows(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		a, _ := newMaster(t)
		s := keys.New(db, keys.StaticProvider(a))
		m1, x1 := newSecrets(t)
		m2, _ := newSecrets(t)
		ctx := testContext(t)
		flip := func(b []byte, i int) []byte {
			c := bytes.Clone(b)
			c[i%len(c)] ^= 0x01
			return c
		}
		for i, tamper := range []struct {
			name string
			do   func(owner string, r row)
		}{
			{"secret ciphertext", func(o string, r row) {
				exec(t, db, `UPDATE custody_secrets SET secret_ct = $1 WHERE owner_id = $2`, flip(r.sealed, 20), o)
			}},
			{"secret nonce", func(o string, r row) {
				exec(t, db, `UPDATE custody_secrets SET secret_ct = $1 WHERE owner_id = $2`, flip(r.sealed, 3), o)
			}},
			{"secret tag", func(o string, r row) {
				exec(t, db, `UPDATE custody_secrets SET secret_ct = $1 WHERE owner_id = $2`, flip(r.sealed, len(r.sealed)-1), o)
			}},
			{"truncated secret", func(o string, r row) {
				exec(t, db, `UPDATE custody_secrets SET secret_ct = $1 WHERE owner_id = $2`, r.sealed[:10], o)
			}},
			{"wrapped key", func(o string, r row) {
				exec(t, db, `UPDATE custody_secrets SET wrapped_dek = $1 WHERE owner_id = $2`, flip(r.wrapped, 30), o)
			}},
			{"format byte", func(o string, r row) {
				exec(t, db, `UPDATE custody_secrets SET wrapped_dek = $1 WHERE owner_id = $2`, flip(r.wrapped, 0), o)
			}},
			{"kind", func(o string, r row) {
				exec(t, db, `UPDATE custody_secrets SET kind = 'xprv' WHERE owner_id = $1`, o)
			}},
			{"secret from another row", func(o string, r row) {
				other := readRow(t, db, "other")
				exec(t, db, `UPDATE custody_secrets SET secret_ct = $1 WHERE owner_id = $2`, other.sealed, o)
			}},
			{"whole envelope from another row", func(o string, r row) {
				other := readRow(t, db, "other")
				exec(t, db, `UPDATE custody_secrets SET secret_ct = $1, wrapped_dek = $2 WHERE owner_id = $3`, other.sealed, other.wrapped, o)
			}},
		} {
			owner := fmt.Sprintf("victim-%d", i)
			if i == 0 {
				put(t, s, db, "other", keys.KindMnemonic, []byte(m2))
				put(t, s, db, "xprv-owner", keys.KindXprv, []byte(x1))
			}
			put(t, s, db, owner, keys.KindMnemonic, []byte(m1))
			tamper.do(owner, readRow(t, db, owner))
			kind, secret, err := s.Get(ctx, owner)
			if !errors.Is(err, keys.ErrDecrypt) || secret != nil || kind != "" {
				t.Errorf("%s tampered: Get = %q, %d bytes, %v; want ErrDecrypt", tamper.name, kind, len(secret), err)
			}
			if err != nil && strings.Contains(err.Error(), m1) {
				t.Errorf("%s: error quotes the secret", tamper.name)
			}
		}
		// The untouched rows still open.
		mustGet(t, s, "other", keys.KindMnemonic, []byte(m2))
		mustGet(t, s, "xprv-owner", keys.KindXprv, []byte(x1))
	})
}

// TestRotateMaster follows the documented procedure with a key file: A
// alone, then B prepended, rotate, then A removed.
func TestRotateMaster(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		a, lineA := newMaster(t)
		b, lineB := newMaster(t)
		path := filepath.Join(t.TempDir(), "master.key")
		writeKeyFile(t, path, lineA)
		s := keys.New(db, keys.FileProvider(path))
		ctx := testContext(t)

		const n = 12
		secrets := map[string]string{}
		for i := range n {
			owner := fmt.Sprintf("wallet-%02d", i)
			m, x := newSecrets(t)
			kind, secret := keys.KindMnemonic, m
			if i%3 == 0 {
				kind, secret = keys.KindXprv, x
			}
			put(t, s, db, owner, kind, []byte(secret))
			secrets[owner] = kind + ":" + secret
		}
		before := map[string]row{}
		for owner := range secrets {
			before[owner] = readRow(t, db, owner)
		}
		check := func() {
			t.Helper()
			for owner, ks := range secrets {
				kind, secret, _ := strings.Cut(ks, ":")
				mustGet(t, s, owner, kind, []byte(secret))
			}
		}

		// Nothing to do while A is the only key.
		if got, err := s.RotateMaster(ctx); err != nil || got != 0 {
			t.Fatalf("RotateMaster with one key: %d, %v", got, err)
		}

		writeKeyFile(t, path, "# current", lineB, "# previous, remove after rotate-master", lineA)
		check() // old rows open under A, listed second
		put(t, s, db, "wallet-new", keys.KindMnemonic, []byte(strings.Split(secrets["wallet-01"], ":")[1]))
		secrets["wallet-new"] = secrets["wallet-01"]
		if r := readRow(t, db, "wallet-new"); r.masterID != b.ID {
			t.Fatalf("a new row after the rotation is under %s, want B %s", r.masterID, b.ID)
		}

		// Readers keep working while the rotation runs.
		var (
			stop    atomic.Bool
			wg      sync.WaitGroup
			readErr atomic.Value
		)
		wg.Go(func() {
			for !stop.Load() {
				for owner := range secrets {
					if _, _, err := s.Get(ctx, owner); err != nil {
						readErr.Store(err)
						return
					}
				}
			}
		})
		got, err := s.RotateMaster(ctx)
		stop.Store(true)
		wg.Wait()
		if err != nil || got != n {
			t.Fatalf("RotateMaster = %d, %v; want %d", got, err, n)
		}
		if err, _ := readErr.Load().(error); err != nil {
			t.Fatalf("Get during the rotation: %v", err)
		}
		usage, err := s.MasterKeyUsage(ctx)
		if err != nil || len(usage) != 1 || usage[b.ID] != n+1 {
			t.Fatalf("MasterKeyUsage = %v, %v; want all %d under B", usage, err, n+1)
		}
		for owner, old := range before {
			r := readRow(t, db, owner)
			if r.masterID != b.ID || !r.rotated.Valid || bytes.Equal(r.wrapped, old.wrapped) {
				t.Errorf("%s: master %s, rotated %v, wrapped DEK changed %v", owner, r.masterID, r.rotated, !bytes.Equal(r.wrapped, old.wrapped))
			}
			if !bytes.Equal(r.sealed, old.sealed) {
				t.Errorf("%s: rotation changed the sealed secret; it should only re-wrap the DEK", owner)
			}
		}
		if got, err := s.RotateMaster(ctx); err != nil || got != 0 {
			t.Fatalf("second RotateMaster = %d, %v; want 0", got, err)
		}

		writeKeyFile(t, path, lineB)
		check()
		_ = a
	})
}

// TestRotateMasterMissingKey: removing the old key before rotating leaves
// rows that neither Get nor RotateMaster can open, and both say why.
func TestRotateMasterMissingKey(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		a, _ := newMaster(t)
		b, _ := newMaster(t)
		m, _ := newSecrets(t)
		put(t, keys.New(db, keys.StaticProvider(a)), db, "w", keys.KindMnemonic, []byte(m))
		s := keys.New(db, keys.StaticProvider(b))
		n, err := s.RotateMaster(testContext(t))
		if !errors.Is(err, keys.ErrUnknownMasterKey) || n != 0 || !strings.Contains(err.Error(), a.ID) {
			t.Fatalf("RotateMaster = %d, %v", n, err)
		}
		// Putting A back (second) lets the rotation finish.
		s = keys.New(db, keys.StaticProvider(b, a))
		if n, err = s.RotateMaster(testContext(t)); err != nil || n != 1 {
			t.Fatalf("RotateMaster = %d, %v", n, err)
		}
		mustGet(t, keys.New(db, keys.StaticProvider(b)), "w", keys.KindMnemonic, []byte(m))
	})
}

// TestRotateMasterBatches: more rows than one listing query returns.
func TestRotateMasterBatches(t *testing.T) {
	defer keys.SetRotateBatch(7)()
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		a, _ := newMaster(t)
		b, _ := newMaster(t)
		s := keys.New(db, keys.StaticProvider(a))
		ctx := testContext(t)
		m, _ := newSecrets(t)
		// Some rows are under the new key already: they must not stall the
		// paging.
		underB := keys.New(db, keys.StaticProvider(b))
		const total = 7*4 + 2
		n := 0
		if err := db.InTx(ctx, func(tx *store.Tx) error {
			n = 0
			for i := range total {
				ks := s
				if i%3 == 0 {
					ks = underB
				} else {
					n++
				}
				if err := ks.Put(ctx, tx, fmt.Sprintf("w%05d", i), keys.KindMnemonic, []byte(m)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		rotating := keys.New(db, keys.StaticProvider(b, a))
		got, err := rotating.RotateMaster(ctx)
		if err != nil || got != n {
			t.Fatalf("RotateMaster = %d, %v; want %d", got, err, n)
		}
		if usage, err := rotating.MasterKeyUsage(ctx); err != nil || len(usage) != 1 || usage[b.ID] != total {
			t.Fatalf("MasterKeyUsage = %v, %v", usage, err)
		}
	})
}

// TestDump: after storing a mnemonic and an xprv, no cell of any table, and
// no byte of the SQLite files, holds the mnemonic, the seed, the xprv, a
// private key or the master key, raw or in hex.
func TestDump(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		master, masterHex := newMaster(t)
		s := keys.New(db, keys.StaticProvider(master))
		net := regtest(t)

		mnemonic, err := keys.NewMnemonic(12)
		if err != nil {
			t.Fatal(err)
		}
		seed, err := keys.SeedFromMnemonic(mnemonic, "")
		if err != nil {
			t.Fatal(err)
		}
		acct, _, err := keys.AccountKey(seed, net)
		if err != nil {
			t.Fatal(err)
		}
		acctPriv, err := acct.ECPrivKey()
		if err != nil {
			t.Fatal(err)
		}
		// The xprv stored is another wallet's, imported.
		otherMnemonic, xprv := newSecrets(t)
		imported, err := keys.ParseXprv(xprv, net)
		if err != nil {
			t.Fatal(err)
		}
		importedPriv, err := imported.ECPrivKey()
		if err != nil {
			t.Fatal(err)
		}
		child, err := acct.Derive(0)
		if err != nil {
			t.Fatal(err)
		}
		child, err = child.Derive(0)
		if err != nil {
			t.Fatal(err)
		}
		childPriv, err := child.ECPrivKey()
		if err != nil {
			t.Fatal(err)
		}

		put(t, s, db, "custodial-1", keys.KindMnemonic, []byte(mnemonic))
		put(t, s, db, "custodial-2", keys.KindXprv, []byte(xprv))
		mustGet(t, s, "custodial-1", keys.KindMnemonic, []byte(mnemonic))

		needles := map[string][]byte{
			"mnemonic":          []byte(mnemonic),
			"mnemonic words":    []byte(strings.Join(strings.Fields(mnemonic)[:4], " ")),
			"other mnemonic":    []byte(otherMnemonic),
			"xprv":              []byte(xprv),
			"xprv body":         []byte(xprv[20:60]),
			"account xprv":      []byte(acct.String()),
			"master key":        master.Key[:],
			"master key hex":    []byte(masterHex),
			"master key HEX":    []byte(strings.ToUpper(masterHex)),
			"account key":       acctPriv.Serialize(),
			"imported key":      importedPriv.Serialize(),
			"address key":       childPriv.Serialize(),
			"imported key hex":  []byte(hex.EncodeToString(importedPriv.Serialize())),
			"account key hex":   []byte(hex.EncodeToString(acctPriv.Serialize())),
			"seed":              seed,
			"seed hex":          []byte(hex.EncodeToString(seed)),
			"seed prefix":       seed[:16],
			"master key prefix": master.Key[:12],
		}
		for name, needle := range needles {
			if len(bytes.Trim(needle, "\x00")) == 0 {
				t.Fatalf("the %s is all zeros: a key was wiped while still in use", name)
			}
		}
		search := func(where string, data []byte) {
			for name, needle := range needles {
				if bytes.Contains(data, needle) {
					t.Errorf("%s holds the %s", where, name)
				}
			}
		}

		places, cells := storetest.Dump(t, db)
		for _, p := range places {
			search(p.Where, p.Data)
		}
		if cells["custody_secrets"] < 14 {
			t.Fatalf("the dump read %v: it missed the custody rows", cells)
		}
	})
}

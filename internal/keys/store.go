package keys

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/btcutil/hdkeychain"

	"github.com/coffer/coffer/internal/store"
)

// Kinds of secret.
const (
	KindMnemonic = "mnemonic" // a BIP39 mnemonic, English words separated by single spaces
	KindXprv     = "xprv"     // a BIP32 extended private key, base58
)

// Store errors.
var (
	// ErrNotFound means the owner has no stored secret.
	ErrNotFound = errors.New("keys: no secret stored for this owner")
	// ErrExists means the owner already has a secret; secrets are never
	// replaced, since losing a seed loses the funds it holds.
	ErrExists = errors.New("keys: a secret is already stored for this owner")
	// ErrUnknownMasterKey means a row was wrapped by a master key that the
	// provider no longer lists.
	ErrUnknownMasterKey = errors.New("keys: secret is wrapped by a master key the key provider does not list")
	// ErrInvalid means a Put argument was refused.
	ErrInvalid = errors.New("keys: invalid secret")
)

// maxOwnerLen and maxSecretLen bound what Put accepts.
const (
	maxOwnerLen  = 200
	maxSecretLen = 4096
)

// Store keeps custodial secrets in the custody_secrets table.
type Store struct {
	db       *store.DB
	provider Provider
	now      func() time.Time
}

// New returns a Store using db and the master keys of p.
func New(db *store.DB, p Provider) *Store {
	return &Store{db: db, provider: p, now: time.Now}
}

// Put stores secret for owner inside the caller's transaction tx (so the
// secret lands together with, say, the wallet that uses it). kind is
// KindMnemonic or KindXprv; a mnemonic must be valid BIP39 (see
// NormalizeMnemonic) and an xprv a valid extended private key. Put does not
// keep or modify secret; the caller clears it. An owner already holding a
// secret gets ErrExists.
func (s *Store) Put(ctx context.Context, tx *store.Tx, owner, kind string, secret []byte) error {
	if err := checkSecret(owner, kind, secret); err != nil {
		return err
	}
	master, _, err := s.provider.Keys(ctx)
	if err != nil {
		return err
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM custody_secrets WHERE owner_id = $1`, owner).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return ErrExists
	}
	dek := make([]byte, dekSize)
	defer clear(dek)
	if _, err := rand.Read(dek); err != nil {
		return fmt.Errorf("keys: generating data key: %w", err)
	}
	ct, err := seal(dek, secret, secretAD(owner, kind))
	if err != nil {
		return err
	}
	wrapped, err := wrapDEK(&master, owner, dek)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO custody_secrets
		(owner_id, kind, master_key_id, wrapped_dek, secret_ct, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)`,
		owner, kind, master.ID, wrapped, ct, s.now().Unix())
	if store.IsUniqueViolation(err) {
		return ErrExists
	}
	return err
}

// checkSecret validates Put's arguments without quoting the secret.
func checkSecret(owner, kind string, secret []byte) error {
	if owner == "" || len(owner) > maxOwnerLen {
		return fmt.Errorf("%w: owner id must be 1 to %d bytes", ErrInvalid, maxOwnerLen)
	}
	if len(secret) == 0 || len(secret) > maxSecretLen {
		return fmt.Errorf("%w: secret must be 1 to %d bytes", ErrInvalid, maxSecretLen)
	}
	switch kind {
	case KindMnemonic:
		if err := ValidateMnemonic(string(secret)); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if NormalizeMnemonic(string(secret)) != string(secret) {
			return fmt.Errorf("%w: store the mnemonic as NormalizeMnemonic returns it (lowercase words, single spaces)", ErrInvalid)
		}
	case KindXprv:
		k, err := hdkeychain.NewKeyFromString(string(secret))
		if err != nil || !k.IsPrivate() {
			return fmt.Errorf("%w: secret of kind xprv is not an extended private key", ErrInvalid)
		}
		k.Zero()
	default:
		return fmt.Errorf("%w: unknown kind %q (want %s or %s)", ErrInvalid, kind, KindMnemonic, KindXprv)
	}
	return nil
}

// Get returns owner's secret and its kind, or ErrNotFound. The caller
// should clear secret once done with it.
func (s *Store) Get(ctx context.Context, owner string) (kind string, secret []byte, err error) {
	var (
		masterID        string
		wrapped, sealed []byte
	)
	err = s.db.QueryRowContext(ctx, `SELECT kind, master_key_id, wrapped_dek, secret_ct
		FROM custody_secrets WHERE owner_id = $1`, owner).Scan(&kind, &masterID, &wrapped, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, ErrNotFound
	}
	if err != nil {
		return "", nil, err
	}
	_, all, err := s.provider.Keys(ctx)
	if err != nil {
		return "", nil, err
	}
	master, err := findMaster(all, masterID, owner)
	if err != nil {
		return "", nil, err
	}
	dek, err := unwrapDEK(master, owner, wrapped)
	if err != nil {
		return "", nil, fmt.Errorf("keys: secret of owner %q: %w", owner, err)
	}
	defer clear(dek)
	secret, err = open(dek, sealed, secretAD(owner, kind))
	if err != nil {
		return "", nil, fmt.Errorf("keys: secret of owner %q: %w", owner, err)
	}
	return kind, secret, nil
}

func findMaster(all []MasterKey, id, owner string) (*MasterKey, error) {
	for i := range all {
		if all[i].ID == id {
			return &all[i], nil
		}
	}
	return nil, fmt.Errorf("%w: owner %q needs master key %s (was its line removed from the key file before `coffer keys rotate-master` finished?)",
		ErrUnknownMasterKey, owner, id)
}

// Delete removes owner's secret inside tx; it reports whether there was one.
func (s *Store) Delete(ctx context.Context, tx *store.Tx, owner string) (bool, error) {
	res, err := tx.ExecContext(ctx, `DELETE FROM custody_secrets WHERE owner_id = $1`, owner)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// rotateBatch is how many owner ids RotateMaster reads per query; a
// variable for tests.
var rotateBatch = 500

// RotateMaster re-wraps every data key that is not under the provider's
// current master key and returns how many it re-wrapped. Each row is
// re-wrapped in its own short transaction, so servers keep reading and
// writing secrets throughout; the sealed secrets themselves do not change.
// On an error it stops and returns the rows done so far; running it again
// carries on. Rows written under an older key while it runs (by a server
// still reading an old key file) may be missed: check with MasterKeyUsage.
func (s *Store) RotateMaster(ctx context.Context) (n int, err error) {
	current, all, err := s.provider.Keys(ctx)
	if err != nil {
		return 0, err
	}
	after := ""
	for {
		owners, err := s.ownersNotUnder(ctx, current.ID, after)
		if err != nil {
			return n, err
		}
		for _, owner := range owners {
			done, err := s.rewrap(ctx, owner, &current, all)
			if err != nil {
				return n, err
			}
			if done {
				n++
			}
		}
		if len(owners) < rotateBatch {
			return n, nil
		}
		after = owners[len(owners)-1]
	}
}

// ownersNotUnder lists, in order, up to rotateBatch owners after the given
// one whose data key is not wrapped by master key id.
func (s *Store) ownersNotUnder(ctx context.Context, id, after string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT owner_id FROM custody_secrets
		WHERE master_key_id <> $1 AND owner_id > $2 ORDER BY owner_id LIMIT $3`, id, after, rotateBatch)
	return store.Collect(rows, err, func(r interface{ Scan(...any) error }) (string, error) {
		var o string
		err := r.Scan(&o)
		return o, err
	})
}

// rewrap moves one owner's data key under current; it reports false when the
// row had gone or was already under current.
func (s *Store) rewrap(ctx context.Context, owner string, current *MasterKey, all []MasterKey) (bool, error) {
	var done bool
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		done = false
		var (
			masterID string
			wrapped  []byte
		)
		err := tx.QueryRowContext(ctx, `SELECT master_key_id, wrapped_dek FROM custody_secrets WHERE owner_id = $1`, owner).
			Scan(&masterID, &wrapped)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && masterID == current.ID) {
			return nil
		}
		if err != nil {
			return err
		}
		old, err := findMaster(all, masterID, owner)
		if err != nil {
			return err
		}
		dek, err := unwrapDEK(old, owner, wrapped)
		if err != nil {
			return fmt.Errorf("keys: secret of owner %q: %w", owner, err)
		}
		defer clear(dek)
		rewrapped, err := wrapDEK(current, owner, dek)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE custody_secrets SET master_key_id = $1, wrapped_dek = $2, rotated_at = $3
			WHERE owner_id = $4`, current.ID, rewrapped, s.now().Unix(), owner); err != nil {
			return err
		}
		done = true
		return nil
	})
	return done, err
}

// MasterKeyUsage returns how many stored secrets each master key id wraps.
// After a rotation every secret should be under the current key before an
// old key is removed from the provider.
func (s *Store) MasterKeyUsage(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT master_key_id, COUNT(*) FROM custody_secrets GROUP BY master_key_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var (
			id string
			n  int
		)
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[id] = n
	}
	return out, rows.Err()
}

package auth

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/btcsuite/btcd/btcutil/base58"

	"github.com/coffer/coffer/internal/store"
)

// API key format: coffer_<id>_<secret>, where id is 12 lowercase hex chars
// (6 random bytes, public, the row's primary key) and secret is 32 random
// bytes in base58 (Bitcoin alphabet: no characters a terminal or a shell
// treats specially, so the key is selectable with a double click).
const (
	apiKeyPrefix  = "coffer_"
	keyIDBytes    = 6
	keyIDLen      = 2 * keyIDBytes
	secretBytes   = 32
	maxSecretText = 50 // base58 of 32 bytes is at most 44 characters
	// MaxLabelLen bounds an API key label, in characters.
	MaxLabelLen = 100
)

// LastUsedInterval is how stale an API key's last_used_at must be before
// authenticating with the key refreshes it: at most one write per key per
// interval, not one per request.
const LastUsedInterval = time.Minute

// APIKey describes an operator API key; the secret is never kept.
type APIKey struct {
	ID         string
	Label      string
	Scope      Scope
	CreatedAt  time.Time
	LastUsedAt time.Time // zero: never used
	RevokedAt  time.Time // zero: not revoked
}

// Revoked reports whether the key has been revoked.
func (k APIKey) Revoked() bool { return !k.RevokedAt.IsZero() }

// CreateAPIKey creates a key with scope and label and returns its plaintext
// form, coffer_<id>_<secret>. The plaintext is not stored and cannot be
// recovered: show it to the operator once.
func CreateAPIKey(ctx context.Context, db *store.DB, scope Scope, label string) (plaintext string, key APIKey, err error) {
	if !scope.Valid() {
		return "", APIKey{}, wrap(ErrInvalid, "unknown scope %q (want read, write or admin)", string(scope))
	}
	if err := CheckLabel(label); err != nil {
		return "", APIKey{}, err
	}
	created := now().Unix()
	// Ids are 48 random bits: a collision is unlikely but possible once there
	// are many keys, so a clash just draws another id.
	for range 5 {
		idb, err := randomBytes(keyIDBytes)
		if err != nil {
			return "", APIKey{}, err
		}
		secret, err := randomBytes(secretBytes)
		if err != nil {
			return "", APIKey{}, err
		}
		id := hex.EncodeToString(idb)
		err = db.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO api_keys (id, label, scope, secret_hash, created_at)
				VALUES ($1, $2, $3, $4, $5)`, id, label, string(scope), digestHex(secret), created)
			return err
		})
		if store.IsUniqueViolation(err) {
			continue
		}
		if err != nil {
			return "", APIKey{}, fmt.Errorf("auth: creating API key: %w", err)
		}
		key = APIKey{ID: id, Label: label, Scope: scope, CreatedAt: time.Unix(created, 0)}
		return apiKeyPrefix + id + "_" + base58.Encode(secret), key, nil
	}
	return "", APIKey{}, errors.New("auth: creating API key: could not draw an unused key id")
}

// CheckLabel accepts an API key label: up to MaxLabelLen characters of UTF-8
// text without control characters (labels are printed on terminals).
func CheckLabel(label string) error {
	if !utf8.ValidString(label) {
		return wrap(ErrInvalid, "label is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(label); n > MaxLabelLen {
		return wrap(ErrInvalid, "label has %d characters, at most %d allowed", n, MaxLabelLen)
	}
	for _, r := range label {
		if unicode.IsControl(r) {
			return wrap(ErrInvalid, "label contains a control character")
		}
	}
	return nil
}

// ListAPIKeys returns every key, revoked ones included, oldest first.
func ListAPIKeys(ctx context.Context, db *store.DB) ([]APIKey, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, label, scope, created_at, last_used_at, revoked_at
		FROM api_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("auth: listing API keys: %w", err)
	}
	defer rows.Close()
	var out []APIKey
	for rows.Next() {
		var k APIKey
		var scope string
		var created int64
		var used, revoked sql.NullInt64
		if err := rows.Scan(&k.ID, &k.Label, &scope, &created, &used, &revoked); err != nil {
			return nil, fmt.Errorf("auth: listing API keys: %w", err)
		}
		k.Scope = Scope(scope)
		k.CreatedAt = time.Unix(created, 0)
		k.LastUsedAt = unixOrZero(used)
		k.RevokedAt = unixOrZero(revoked)
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("auth: listing API keys: %w", err)
	}
	return out, nil
}

func unixOrZero(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.Unix(v.Int64, 0)
}

// RevokeAPIKey revokes the key with id; it stops authenticating at once.
// Revoking a revoked key changes nothing; an unknown id is ErrNotFound.
func RevokeAPIKey(ctx context.Context, db *store.DB, id string) error {
	err := db.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL`,
			now().Unix(), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n > 0 {
			return err
		}
		var exists int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_keys WHERE id = $1`, id).Scan(&exists); err != nil {
			return err
		}
		if exists == 0 {
			return wrap(ErrNotFound, "id %q", id)
		}
		return nil
	})
	if err != nil && Code(err) == "internal" {
		return fmt.Errorf("auth: revoking API key: %w", err)
	}
	return err
}

// parseAPIKey splits coffer_<id>_<secret>. It never echoes the input.
func parseAPIKey(s string) (id string, secret []byte, ok bool) {
	rest, found := strings.CutPrefix(s, apiKeyPrefix)
	if !found || len(rest) < keyIDLen+2 || len(rest) > keyIDLen+1+maxSecretText || rest[keyIDLen] != '_' {
		return "", nil, false
	}
	id, text := rest[:keyIDLen], rest[keyIDLen+1:]
	if !isLowerHex(id) {
		return "", nil, false
	}
	secret = base58.Decode(text) // empty on a character outside the alphabet
	if len(secret) != secretBytes || base58.Encode(secret) != text {
		return "", nil, false
	}
	return id, secret, true
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// AuthenticateAPIKey checks a plaintext API key. The row is found by the
// key's id and the secret's digest compared in constant time. A malformed
// key, an unknown id or a wrong secret is ErrUnauthenticated; a revoked key
// (with the right secret) is ErrRevoked. It refreshes the key's
// last_used_at when that is older than LastUsedInterval.
func AuthenticateAPIKey(ctx context.Context, db *store.DB, plaintext string) (*Principal, error) {
	id, secret, ok := parseAPIKey(plaintext)
	if !ok {
		return nil, wrap(ErrUnauthenticated, "malformed API key")
	}
	var scope, storedHash string
	var used, revoked sql.NullInt64
	err := db.QueryRowContext(ctx, `SELECT scope, secret_hash, last_used_at, revoked_at FROM api_keys WHERE id = $1`, id).
		Scan(&scope, &storedHash, &used, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, wrap(ErrUnauthenticated, "unknown API key")
	}
	if err != nil {
		return nil, fmt.Errorf("auth: looking up API key: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(digestHex(secret)), []byte(storedHash)) != 1 {
		return nil, wrap(ErrUnauthenticated, "unknown API key")
	}
	if revoked.Valid {
		return nil, wrap(ErrRevoked, "API key %s was revoked", id)
	}
	sc := Scope(scope)
	if !sc.Valid() { // the CHECK constraint makes this unreachable
		return nil, fmt.Errorf("auth: API key %s has unknown scope %q", id, scope)
	}
	t := now().Unix()
	if stale := t - int64(LastUsedInterval/time.Second); !used.Valid || used.Int64 <= stale {
		// The condition repeats the check in SQL so concurrent requests on
		// several instances refresh the row once. Bookkeeping only: a failure
		// here does not refuse a valid key.
		_ = db.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.ExecContext(ctx, `UPDATE api_keys SET last_used_at = $1
				WHERE id = $2 AND (last_used_at IS NULL OR last_used_at <= $3)`, t, id, stale)
			return err
		})
	}
	return &Principal{Kind: KindAPIKey, KeyID: id, Scope: sc}, nil
}

// Package auth authenticates Coffer's callers. There are two kinds of
// credential:
//
//   - Operator API keys (coffer_<id>_<secret>), created with `coffer apikey`,
//     each with a scope: read < write < admin. They reach every wallet.
//   - Wallet tokens (cwt_<secret>), which a watch-only wallet app obtains by
//     signing a challenge (see Challenge) with one of the wallet's keys in
//     the Bitcoin signed-message format. A token reaches one wallet only,
//     for a short time, in full or read-only mode.
//
// Only SHA-256 digests of secrets are stored. Authenticate turns an HTTP
// request into a Principal; the HTTP layer asks the Principal what it may do.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coffer/coffer/internal/store"
)

// Error is an authentication failure with a stable code for API responses.
// The package's sentinel errors are *Error values; match them with errors.Is.
type Error struct {
	code string
	msg  string
}

func (e *Error) Error() string { return "auth: " + e.msg }

// Code returns the stable machine-readable code, e.g. "token_expired".
func (e *Error) Code() string { return e.code }

// Sentinel errors. Returned errors may wrap them with detail.
var (
	// ErrUnauthenticated: no credential, a malformed one, or one that is not
	// known (including an API key whose secret does not match).
	ErrUnauthenticated = &Error{"unauthenticated", "missing or unknown credential"}
	// ErrExpired: a wallet token past its expiry.
	ErrExpired = &Error{"token_expired", "token expired"}
	// ErrStaleChallenge: the challenge timestamp is more than MaxClockSkew
	// away from the server's clock.
	ErrStaleChallenge = &Error{"stale_challenge", "challenge timestamp too far from server time"}
	// ErrBadSignature: the challenge signature is malformed, does not verify,
	// or was made by a key that may not sign for the wallet.
	ErrBadSignature = &Error{"bad_signature", "bad challenge signature"}
	// ErrReplayed: this signed challenge has already been exchanged for a token.
	ErrReplayed = &Error{"challenge_reused", "challenge already used"}
	// ErrRevoked: an API key that has been revoked.
	ErrRevoked = &Error{"key_revoked", "API key revoked"}
	// ErrNotFound: RevokeAPIKey was given an id that names no key.
	ErrNotFound = &Error{"not_found", "no such API key"}
	// ErrInvalid: a malformed argument (scope, label, wallet id, TTL, …).
	ErrInvalid = &Error{"invalid_argument", "invalid argument"}
)

// Code returns the stable code of the auth error err wraps: "" for nil and
// "internal" for an error that is not an auth error (such as a database
// failure).
func Code(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.code
	}
	return "internal"
}

// HTTPStatus suggests the HTTP status for err: 401 for credential failures,
// 400 for ErrInvalid, 404 for ErrNotFound, 500 otherwise (and 200 for nil).
func HTTPStatus(err error) int {
	switch Code(err) {
	case "":
		return http.StatusOK
	case "invalid_argument":
		return http.StatusBadRequest
	case "not_found":
		return http.StatusNotFound
	case "internal":
		return http.StatusInternalServerError
	default:
		return http.StatusUnauthorized
	}
}

// wrap returns sentinel with detail appended, still matching errors.Is.
func wrap(sentinel *Error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}

// Scope is an API key's permission level. Scopes are ordered:
// ScopeRead < ScopeWrite < ScopeAdmin; a key allows its scope and those below.
type Scope string

// The scopes.
const (
	ScopeRead  Scope = "read"
	ScopeWrite Scope = "write"
	ScopeAdmin Scope = "admin"
)

// rank orders the scopes; 0 means not a scope.
func (s Scope) rank() int {
	switch s {
	case ScopeRead:
		return 1
	case ScopeWrite:
		return 2
	case ScopeAdmin:
		return 3
	}
	return 0
}

// Valid reports whether s is one of the three scopes.
func (s Scope) Valid() bool { return s.rank() > 0 }

// ParseScope parses "read", "write" or "admin".
func ParseScope(s string) (Scope, error) {
	sc := Scope(s)
	if !sc.Valid() {
		return "", wrap(ErrInvalid, "unknown scope %q (want read, write or admin)", s)
	}
	return sc, nil
}

// Principal kinds.
const (
	KindAPIKey      = "api_key"
	KindWalletToken = "wallet_token"
)

// Principal is an authenticated caller. Its methods are safe on a nil
// Principal, which is allowed nothing.
type Principal struct {
	Kind     string // KindAPIKey or KindWalletToken
	KeyID    string // API keys: the key id
	Scope    Scope  // API keys: the key's scope
	WalletID string // wallet tokens: the only wallet the token may touch
	ReadOnly bool   // wallet tokens: issued in read mode
}

// Allows reports whether p has at least the scope need. An API key allows
// its scope and the ones below it. A wallet token allows read, write unless
// it is read-only, and never admin; AllowWallet still limits it to its wallet.
func (p *Principal) Allows(need Scope) bool {
	if p == nil || !need.Valid() {
		return false
	}
	switch p.Kind {
	case KindAPIKey:
		return p.Scope.rank() >= need.rank()
	case KindWalletToken:
		switch need {
		case ScopeRead:
			return p.WalletID != ""
		case ScopeWrite:
			return p.WalletID != "" && !p.ReadOnly
		}
	}
	return false
}

// AllowWallet reports whether p may touch the wallet walletID: an API key
// may touch every wallet, a wallet token only its own.
func (p *Principal) AllowWallet(walletID string) bool {
	if p == nil {
		return false
	}
	switch p.Kind {
	case KindAPIKey:
		return p.Scope.Valid()
	case KindWalletToken:
		return p.WalletID != "" && p.WalletID == walletID
	}
	return false
}

// AllowWrite reports whether p may change things: an API key of scope write
// or admin, or a wallet token not in read mode (on its own wallet).
func (p *Principal) AllowWrite() bool { return p.Allows(ScopeWrite) }

// AllowAdmin reports whether p is an admin API key.
func (p *Principal) AllowAdmin() bool { return p.Allows(ScopeAdmin) }

// Authenticate reads the credential of r and returns its principal. The
// credential is "Authorization: Bearer <API key or wallet token>", or an
// API key in the X-API-Key header. A request carrying no credential, a
// malformed one, or both headers gets ErrUnauthenticated; otherwise the
// errors are those of AuthenticateAPIKey and AuthenticateWalletToken.
func Authenticate(ctx context.Context, db *store.DB, r *http.Request) (*Principal, error) {
	authz := strings.TrimSpace(r.Header.Get("Authorization"))
	apiKey := strings.TrimSpace(r.Header.Get("X-API-Key"))
	switch {
	case authz != "" && apiKey != "":
		return nil, wrap(ErrUnauthenticated, "send either Authorization or X-API-Key, not both")
	case apiKey != "":
		if !strings.HasPrefix(apiKey, apiKeyPrefix) {
			return nil, wrap(ErrUnauthenticated, "X-API-Key does not hold an API key")
		}
		return AuthenticateAPIKey(ctx, db, apiKey)
	case authz == "":
		return nil, wrap(ErrUnauthenticated, "no credentials")
	}
	scheme, cred, ok := strings.Cut(authz, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, wrap(ErrUnauthenticated, "Authorization must be \"Bearer <credential>\"")
	}
	cred = strings.TrimSpace(cred)
	switch {
	case strings.HasPrefix(cred, apiKeyPrefix):
		return AuthenticateAPIKey(ctx, db, cred)
	case strings.HasPrefix(cred, tokenPrefix):
		return AuthenticateWalletToken(ctx, db, cred)
	}
	return nil, wrap(ErrUnauthenticated, "unrecognised credential")
}

// now is the clock; tests replace it.
var now = time.Now

// randomBytes returns n bytes from the system's secure generator.
func randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("auth: reading random bytes: %w", err)
	}
	return b, nil
}

// digestHex is the stored form of a secret: lowercase hex SHA-256. Every
// secret hashed here is 32 bytes from crypto/rand, so a single fast hash is
// the right choice: there is nothing for a slow password hash to protect
// against, as the secrets cannot be guessed.
func digestHex(secret []byte) string {
	sum := sha256.Sum256(secret)
	return hex.EncodeToString(sum[:])
}

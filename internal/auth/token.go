package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil/base58"
	"github.com/btcsuite/btcd/wire"

	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/store"
)

// Wallet tokens are cwt_<secret>, the secret 32 random bytes in base58.
const tokenPrefix = "cwt_"

const (
	// DefaultTokenTTL is a wallet token's lifetime when TokenRequest.TTL is 0.
	DefaultTokenTTL = 15 * time.Minute
	// MaxTokenTTL is the longest lifetime a wallet token may be given.
	MaxTokenTTL = 24 * time.Hour
	// MaxClockSkew is how far a challenge's timestamp may be from the
	// server's clock, either way.
	MaxClockSkew = 30 * time.Second
	// challengeMargin keeps used challenges past the end of their window, in
	// case the instances sharing the database disagree a little on the time.
	challengeMargin = time.Minute
	// MaxWalletIDLen bounds a wallet id in a challenge, in bytes.
	MaxWalletIDLen = 128
)

// Challenge returns the text a wallet app signs, in the signed-message
// format of the wallet's coin (see SignMessage), to get a token for walletID:
//
//	Coffer wallet token
//	wallet: <walletID>
//	timestamp: <ts in unix seconds, decimal>
//
// The lines are separated by a single "\n" with none at the end. ts is the
// client's current time; the server accepts it within MaxClockSkew of its own
// clock. Wallet ids are printable ASCII without spaces (IssueWalletToken
// refuses others), so the text cannot be read two ways.
func Challenge(walletID string, ts time.Time) string {
	return "Coffer wallet token\nwallet: " + walletID + "\ntimestamp: " + strconv.FormatInt(ts.Unix(), 10)
}

// TokenRequest asks IssueWalletToken for a wallet token.
type TokenRequest struct {
	WalletID  string
	Timestamp int64  // unix seconds, as written in the signed Challenge
	Signature string // base64 signed-message signature over the Challenge
	ReadOnly  bool   // issue a read-mode token

	// AcceptKeys are the public keys that may sign for the wallet, supplied
	// by the caller: 33-byte compressed keys, which must match exactly, or
	// 32-byte x-only (taproot) keys, which match a signer with that x
	// coordinate whatever its Y parity. 65-byte uncompressed keys are also
	// understood. Entries of other lengths match nothing.
	AcceptKeys [][]byte

	Params *chain.Params // the coin, which selects the message format
	Now    time.Time     // the server's time; zero means the clock
	TTL    time.Duration // the token's lifetime; zero means DefaultTokenTTL
}

// IssueWalletToken checks a signed challenge and issues a token for the
// wallet. It returns ErrStaleChallenge when the timestamp is more than
// MaxClockSkew from Now, ErrBadSignature when the signature is malformed,
// does not cover Challenge(WalletID, Timestamp) or comes from a key not in
// AcceptKeys, ErrReplayed when the same signed challenge was already used,
// and ErrInvalid for a malformed wallet id or TTL. Only the token's digest is
// stored.
func IssueWalletToken(ctx context.Context, db *store.DB, req TokenRequest) (token string, expiresAt time.Time, err error) {
	if err := checkWalletID(req.WalletID); err != nil {
		return "", time.Time{}, err
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < time.Second || ttl > MaxTokenTTL {
		return "", time.Time{}, wrap(ErrInvalid, "token lifetime %v is outside 1s–%v", ttl, MaxTokenTTL)
	}
	t := req.Now
	if t.IsZero() {
		t = now()
	}
	nowUnix := t.Unix()
	skew := int64(MaxClockSkew / time.Second)
	if req.Timestamp < nowUnix-skew || req.Timestamp > nowUnix+skew {
		return "", time.Time{}, wrap(ErrStaleChallenge, "timestamp %d is more than %v from server time %d",
			req.Timestamp, MaxClockSkew, nowUnix)
	}
	msg := Challenge(req.WalletID, time.Unix(req.Timestamp, 0))
	pub, err := VerifySignedMessage(req.Params, msg, req.Signature)
	if err != nil {
		return "", time.Time{}, err
	}
	if !keyAccepted(pub, req.AcceptKeys) {
		return "", time.Time{}, wrap(ErrBadSignature, "signed by a key that may not sign for wallet %s", req.WalletID)
	}

	// A challenge is used once. It is identified by its text and the
	// signer's x coordinate rather than by the signature bytes: the same
	// signature under another header byte, or with S negated, verifies too
	// and must not buy a second token.
	compressed := pub.SerializeCompressed()
	var buf bytes.Buffer
	_ = wire.WriteVarString(&buf, 0, msg) // cannot fail on a bytes.Buffer
	buf.Write(compressed[1:])
	sum := sha256.Sum256(buf.Bytes())
	challengeHash := hex.EncodeToString(sum[:])
	keepUntil := req.Timestamp + skew + int64(challengeMargin/time.Second)

	secret, err := randomBytes(secretBytes)
	if err != nil {
		return "", time.Time{}, err
	}
	token = tokenPrefix + base58.Encode(secret)
	expires := t.Add(ttl).Unix()
	mode := "full"
	if req.ReadOnly {
		mode = "read"
	}
	err = db.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO used_challenges (challenge_hash, wallet_id, used_at, expires_at)
			VALUES ($1, $2, $3, $4)`, challengeHash, req.WalletID, nowUnix, keepUntil)
		if store.IsUniqueViolation(err) {
			return wrap(ErrReplayed, "this signed challenge was already exchanged for a token")
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO wallet_tokens (token_hash, wallet_id, mode, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5)`, digestHex(secret), req.WalletID, mode, nowUnix, expires)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrReplayed) {
			return "", time.Time{}, err
		}
		return "", time.Time{}, fmt.Errorf("auth: storing wallet token: %w", err)
	}
	return token, time.Unix(expires, 0), nil
}

// checkWalletID accepts 1–MaxWalletIDLen bytes of printable ASCII other than
// space, so that a Challenge cannot be ambiguous.
func checkWalletID(id string) error {
	if id == "" || len(id) > MaxWalletIDLen {
		return wrap(ErrInvalid, "wallet id must have 1 to %d characters", MaxWalletIDLen)
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return wrap(ErrInvalid, "wallet id must be printable ASCII without spaces")
		}
	}
	return nil
}

// keyAccepted reports whether pub is one of keys (see TokenRequest.AcceptKeys).
func keyAccepted(pub *btcec.PublicKey, keys [][]byte) bool {
	compressed := pub.SerializeCompressed()
	for _, k := range keys {
		switch len(k) {
		case 32:
			if bytes.Equal(k, compressed[1:]) {
				return true
			}
		case 33:
			if bytes.Equal(k, compressed) {
				return true
			}
		case 65:
			if other, err := btcec.ParsePubKey(k); err == nil && other.IsEqual(pub) {
				return true
			}
		}
	}
	return false
}

// parseToken returns the secret bytes of cwt_<secret>.
func parseToken(s string) ([]byte, bool) {
	text, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok || text == "" || len(text) > maxSecretText {
		return nil, false
	}
	secret := base58.Decode(text)
	if len(secret) != secretBytes || base58.Encode(secret) != text {
		return nil, false
	}
	return secret, true
}

// AuthenticateWalletToken checks a wallet token. A malformed or unknown
// token is ErrUnauthenticated; one past its expiry is ErrExpired (until
// PruneExpired deletes it, after which it is unknown).
func AuthenticateWalletToken(ctx context.Context, db *store.DB, token string) (*Principal, error) {
	secret, ok := parseToken(token)
	if !ok {
		return nil, wrap(ErrUnauthenticated, "malformed wallet token")
	}
	var walletID, mode string
	var expires int64
	err := db.QueryRowContext(ctx, `SELECT wallet_id, mode, expires_at FROM wallet_tokens WHERE token_hash = $1`,
		digestHex(secret)).Scan(&walletID, &mode, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, wrap(ErrUnauthenticated, "unknown wallet token")
	}
	if err != nil {
		return nil, fmt.Errorf("auth: looking up wallet token: %w", err)
	}
	if expires <= now().Unix() {
		return nil, wrap(ErrExpired, "wallet token expired at %s", time.Unix(expires, 0).UTC().Format(time.RFC3339))
	}
	return &Principal{Kind: KindWalletToken, WalletID: walletID, ReadOnly: mode != "full"}, nil
}

// RevokeWalletToken deletes a wallet token (a logout). An unknown or
// malformed token is not an error.
func RevokeWalletToken(ctx context.Context, db *store.DB, token string) error {
	secret, ok := parseToken(token)
	if !ok {
		return nil
	}
	return db.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM wallet_tokens WHERE token_hash = $1`, digestHex(secret))
		return err
	})
}

// RevokeWalletTokens deletes every token of walletID, for example when the
// wallet is deleted or its keys change, and returns how many there were.
func RevokeWalletTokens(ctx context.Context, db *store.DB, walletID string) (int64, error) {
	var n int64
	err := db.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM wallet_tokens WHERE wallet_id = $1`, walletID)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// PruneExpired deletes wallet tokens expired at t and used challenges whose
// timestamps can no longer be accepted, and returns how many rows it deleted.
// Run it now and then; authentication works without it.
func PruneExpired(ctx context.Context, db *store.DB, t time.Time) (int64, error) {
	var n int64
	err := db.InTx(ctx, func(tx *store.Tx) error {
		n = 0
		for _, q := range []string{
			`DELETE FROM wallet_tokens WHERE expires_at <= $1`,
			`DELETE FROM used_challenges WHERE expires_at < $1`,
		} {
			res, err := tx.ExecContext(ctx, q, t.Unix())
			if err != nil {
				return err
			}
			m, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += m
		}
		return nil
	})
	return n, err
}

package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil/base58"

	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

var keyFormat = regexp.MustCompile(`^coffer_[0-9a-f]{12}_[1-9A-HJ-NP-Za-km-z]{40,44}$`)

// setClock makes the package clock return *t for the rest of the test.
func setClock(t *testing.T, at *time.Time) {
	t.Helper()
	old := now
	now = func() time.Time { return *at }
	t.Cleanup(func() { now = old })
}

func wantErr(t *testing.T, err, sentinel error) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("error = %v, want %v", err, sentinel)
	}
}

func TestApikeyLifecycle(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		plain, key, err := CreateAPIKey(ctx, db, ScopeWrite, "ci deploy")
		if err != nil {
			t.Fatal(err)
		}
		if !keyFormat.MatchString(plain) {
			t.Fatalf("key %q does not have the documented form", plain)
		}
		if key.ID != plain[7:19] || key.Scope != ScopeWrite || key.Label != "ci deploy" || key.Revoked() {
			t.Fatalf("key = %+v for %q", key, plain)
		}

		p, err := AuthenticateAPIKey(ctx, db, plain)
		if err != nil {
			t.Fatal(err)
		}
		want := Principal{Kind: KindAPIKey, KeyID: key.ID, Scope: ScopeWrite}
		if *p != want {
			t.Fatalf("principal = %+v, want %+v", *p, want)
		}
		if !p.Allows(ScopeRead) || !p.Allows(ScopeWrite) || p.Allows(ScopeAdmin) ||
			!p.AllowWrite() || p.AllowAdmin() || !p.AllowWallet("any-wallet") {
			t.Errorf("write key permissions wrong: %+v", p)
		}

		// The right id with another secret, and assorted malformed keys.
		other, _, err := CreateAPIKey(ctx, db, ScopeAdmin, "")
		if err != nil {
			t.Fatal(err)
		}
		bad := []string{
			plain[:20] + other[20:],            // right id, wrong secret
			other[:20] + plain[20:],            // right secret, wrong id
			"coffer_000000000000" + plain[19:], // unknown id
			plain[:len(plain)-1],               // truncated secret
			plain + "1",                        // extended secret
			strings.ToUpper(plain[:19]) + plain[19:],
			strings.Replace(plain, "_", "-", 2),
			"coffer_" + key.ID + "_0OIl" + plain[24:], // outside the base58 alphabet
			"coffer_" + key.ID,
			"coffer_",
			"",
			"coffer_" + key.ID + "_" + strings.Repeat("z", 10000),
		}
		for _, b := range bad {
			if _, err := AuthenticateAPIKey(ctx, db, b); !errors.Is(err, ErrUnauthenticated) || Code(err) != "unauthenticated" {
				t.Errorf("AuthenticateAPIKey(%.40q) = %v, want unauthenticated", b, err)
			}
		}

		keys, err := ListAPIKeys(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 2 || keys[0].ID != key.ID && keys[1].ID != key.ID {
			t.Fatalf("ListAPIKeys = %+v", keys)
		}

		if err := RevokeAPIKey(ctx, db, key.ID); err != nil {
			t.Fatal(err)
		}
		_, err = AuthenticateAPIKey(ctx, db, plain)
		wantErr(t, err, ErrRevoked)
		if Code(err) != "key_revoked" {
			t.Errorf("Code = %q", Code(err))
		}
		// A wrong secret for a revoked key says nothing about revocation.
		_, err = AuthenticateAPIKey(ctx, db, plain[:20]+other[20:])
		wantErr(t, err, ErrUnauthenticated)
		if err := RevokeAPIKey(ctx, db, key.ID); err != nil {
			t.Errorf("second revoke: %v", err)
		}
		wantErr(t, RevokeAPIKey(ctx, db, "ffffffffffff"), ErrNotFound)
		if _, err := AuthenticateAPIKey(ctx, db, other); err != nil {
			t.Errorf("revoking one key affected another: %v", err)
		}
		keys, err = ListAPIKeys(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if (k.ID == key.ID) != k.Revoked() {
				t.Errorf("key %s: revoked = %v", k.ID, k.Revoked())
			}
		}
	})
}

// TestAPIKeyNoPlaintextStored: no column of the row holds the secret, in
// any encoding; secret_hash is the SHA-256 of the secret bytes.
func TestApikeyNoPlaintextStored(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		plain, key, err := CreateAPIKey(ctx, db, ScopeRead, "x")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := AuthenticateAPIKey(ctx, db, plain); err != nil {
			t.Fatal(err)
		}
		secretText := plain[20:]
		secret := base58.Decode(secretText)
		rows, err := db.QueryContext(ctx, `SELECT * FROM api_keys`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		cols, err := rows.Columns()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			n++
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for i, v := range vals {
				s := fmt.Sprint(v)
				if b, ok := v.([]byte); ok {
					s = string(b)
				}
				for _, secretForm := range []string{secretText, hex.EncodeToString(secret), string(secret), plain} {
					if strings.Contains(s, secretForm) {
						t.Errorf("column %s holds the secret", cols[i])
					}
				}
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("%d rows", n)
		}
		var stored string
		if err := db.QueryRowContext(ctx, `SELECT secret_hash FROM api_keys WHERE id = $1`, key.ID).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(secret)
		if stored != hex.EncodeToString(sum[:]) {
			t.Errorf("secret_hash = %s, want SHA-256 of the secret", stored)
		}
	})
}

// TestAPIKeyLastUsed: last_used_at is written on first use and then at most
// once per LastUsedInterval.
func TestApikeyLastUsed(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		clock := time.Unix(1_700_000_000, 0)
		setClock(t, &clock)
		plain, key, err := CreateAPIKey(ctx, db, ScopeRead, "")
		if err != nil {
			t.Fatal(err)
		}
		lastUsed := func() time.Time {
			t.Helper()
			keys, err := ListAPIKeys(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 1 || keys[0].ID != key.ID {
				t.Fatalf("keys = %+v", keys)
			}
			return keys[0].LastUsedAt
		}
		if !lastUsed().IsZero() {
			t.Fatal("new key has a last use")
		}
		start := clock
		for _, step := range []struct {
			advance time.Duration
			want    time.Time
		}{
			{0, start},
			{30 * time.Second, start},
			{59 * time.Second, start},
			{60 * time.Second, start.Add(60 * time.Second)},
			{90 * time.Second, start.Add(60 * time.Second)},
			{200 * time.Second, start.Add(200 * time.Second)},
		} {
			clock = start.Add(step.advance)
			if _, err := AuthenticateAPIKey(ctx, db, plain); err != nil {
				t.Fatal(err)
			}
			if got := lastUsed(); !got.Equal(step.want) {
				t.Errorf("after use at +%v: last_used_at = +%v, want +%v", step.advance, got.Sub(start), step.want.Sub(start))
			}
		}
	})
}

func TestApikeyCreateInvalid(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		for _, c := range []struct {
			scope Scope
			label string
		}{
			{"root", ""},
			{"", ""},
			{"READ", ""},
			{ScopeRead, strings.Repeat("x", MaxLabelLen+1)},
			{ScopeRead, "a\nb"},
			{ScopeRead, "\x1b[31m"},
			{ScopeRead, "\xff"},
		} {
			_, _, err := CreateAPIKey(ctx, db, c.scope, c.label)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("CreateAPIKey(%q, %q) = %v, want ErrInvalid", c.scope, c.label, err)
			}
		}
		if _, _, err := CreateAPIKey(ctx, db, ScopeRead, strings.Repeat("é", MaxLabelLen)); err != nil {
			t.Errorf("label of %d characters: %v", MaxLabelLen, err)
		}
	})
}

func TestScopes(t *testing.T) {
	order := []Scope{ScopeRead, ScopeWrite, ScopeAdmin}
	for i, have := range order {
		p := &Principal{Kind: KindAPIKey, KeyID: "k", Scope: have}
		for j, need := range order {
			if got := p.Allows(need); got != (i >= j) {
				t.Errorf("%s key Allows(%s) = %v", have, need, got)
			}
		}
		if p.Allows("root") || p.Allows("") {
			t.Errorf("%s key allows an unknown scope", have)
		}
		if p.AllowWrite() != (i >= 1) || p.AllowAdmin() != (i == 2) || !p.AllowWallet("w") {
			t.Errorf("%s key helpers wrong", have)
		}
	}
	for _, s := range []string{"read", "write", "admin"} {
		if sc, err := ParseScope(s); err != nil || string(sc) != s {
			t.Errorf("ParseScope(%q) = %q, %v", s, sc, err)
		}
	}
	for _, s := range []string{"root", "", "Admin", " read"} {
		if _, err := ParseScope(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseScope(%q) = %v", s, err)
		}
	}

	var nilP *Principal
	if nilP.Allows(ScopeRead) || nilP.AllowWallet("w") || nilP.AllowWrite() || nilP.AllowAdmin() {
		t.Error("nil principal allowed something")
	}
	bogus := &Principal{Kind: "other", Scope: ScopeAdmin, WalletID: "w"}
	if bogus.Allows(ScopeRead) || bogus.AllowWallet("w") {
		t.Error("principal of unknown kind allowed something")
	}
	tok := &Principal{Kind: KindWalletToken, WalletID: "w1"}
	if !tok.Allows(ScopeRead) || !tok.AllowWrite() || tok.AllowAdmin() || !tok.AllowWallet("w1") || tok.AllowWallet("w2") || tok.AllowWallet("") {
		t.Errorf("full wallet token permissions wrong")
	}
	ro := &Principal{Kind: KindWalletToken, WalletID: "w1", ReadOnly: true}
	if !ro.Allows(ScopeRead) || ro.AllowWrite() || ro.AllowAdmin() || !ro.AllowWallet("w1") {
		t.Errorf("read-only wallet token permissions wrong")
	}
}

func TestCodes(t *testing.T) {
	for _, c := range []struct {
		err    error
		code   string
		status int
	}{
		{nil, "", 200},
		{ErrUnauthenticated, "unauthenticated", 401},
		{fmt.Errorf("ctx: %w", ErrExpired), "token_expired", 401},
		{ErrStaleChallenge, "stale_challenge", 401},
		{ErrBadSignature, "bad_signature", 401},
		{ErrReplayed, "challenge_reused", 401},
		{ErrRevoked, "key_revoked", 401},
		{ErrInvalid, "invalid_argument", 400},
		{ErrNotFound, "not_found", 404},
		{errors.New("disk on fire"), "internal", 500},
	} {
		if got := Code(c.err); got != c.code {
			t.Errorf("Code(%v) = %q, want %q", c.err, got, c.code)
		}
		if got := HTTPStatus(c.err); got != c.status {
			t.Errorf("HTTPStatus(%v) = %d, want %d", c.err, got, c.status)
		}
	}
	if ErrExpired.Code() != "token_expired" {
		t.Error("Error.Code")
	}
	if errors.Is(ErrExpired, ErrUnauthenticated) {
		t.Error("sentinels match each other")
	}
}

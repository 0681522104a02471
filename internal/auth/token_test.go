package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

var tokenFormat = regexp.MustCompile(`^cwt_[1-9A-HJ-NP-Za-km-z]{40,44}$`)

func testKey(b byte) *btcec.PrivateKey {
	seed := make([]byte, 32)
	seed[31] = b
	seed[0] = 0x42
	priv, _ := btcec.PrivKeyFromBytes(seed)
	return priv
}

func TestChallengeText(t *testing.T) {
	got := Challenge("w1", time.Unix(1700000000, 999))
	want := "Coffer wallet token\nwallet: w1\ntimestamp: 1700000000"
	if got != want {
		t.Errorf("Challenge = %q, want %q", got, want)
	}
}

// tokenFixture is a wallet with one auth key and a helper to sign requests.
type tokenFixture struct {
	params *chain.Params
	key    *btcec.PrivateKey
	now    time.Time
}

func newTokenFixture(t *testing.T) *tokenFixture {
	return &tokenFixture{params: mustParams(t, chain.BTC, chain.Regtest), key: testKey(1), now: time.Unix(1_700_000_000, 0)}
}

// request signs the challenge for wallet at ts with priv.
func (f *tokenFixture) request(wallet string, ts int64, priv *btcec.PrivateKey) TokenRequest {
	return TokenRequest{
		WalletID:   wallet,
		Timestamp:  ts,
		Signature:  SignMessage(f.params, priv, Challenge(wallet, time.Unix(ts, 0))),
		AcceptKeys: [][]byte{testKey(9).PubKey().SerializeCompressed(), f.key.PubKey().SerializeCompressed()},
		Params:     f.params,
		Now:        f.now,
	}
}

func TestWalletToken(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		f := newTokenFixture(t)
		clock := f.now
		setClock(t, &clock)
		ts := f.now.Unix()

		req := f.request("wallet-a", ts, f.key)
		tok, exp, err := IssueWalletToken(ctx, db, req)
		if err != nil {
			t.Fatal(err)
		}
		if !tokenFormat.MatchString(tok) {
			t.Errorf("token %q does not have the documented form", tok)
		}
		if want := f.now.Add(DefaultTokenTTL); !exp.Equal(want) {
			t.Errorf("expires %v, want %v", exp, want)
		}
		p, err := AuthenticateWalletToken(ctx, db, tok)
		if err != nil {
			t.Fatal(err)
		}
		if want := (Principal{Kind: KindWalletToken, WalletID: "wallet-a"}); *p != want {
			t.Fatalf("principal = %+v, want %+v", *p, want)
		}
		if !p.AllowWallet("wallet-a") || p.AllowWallet("wallet-b") || !p.AllowWrite() || p.AllowAdmin() {
			t.Errorf("token permissions wrong: %+v", p)
		}

		// Replays: the same signature, under another header byte, and with
		// S negated (the other valid signature for the same key).
		_, _, err = IssueWalletToken(ctx, db, req)
		wantErr(t, err, ErrReplayed)
		if Code(err) != "challenge_reused" {
			t.Errorf("Code = %q", Code(err))
		}
		raw, _ := base64.StdEncoding.DecodeString(req.Signature)
		variant := req
		variant.Signature = withHeader(t, req.Signature, raw[0]+8) // P2WPKH header
		_, _, err = IssueWalletToken(ctx, db, variant)
		wantErr(t, err, ErrReplayed)
		variant.Signature = negateS(t, req.Signature)
		if pub, err := VerifySignedMessage(f.params, Challenge("wallet-a", time.Unix(ts, 0)), variant.Signature); err != nil || !pub.IsEqual(f.key.PubKey()) {
			t.Fatalf("negated-S signature does not recover the key: %v", err)
		}
		_, _, err = IssueWalletToken(ctx, db, variant)
		wantErr(t, err, ErrReplayed)
		// A read-only request is a new challenge only with a new timestamp.
		ro := f.request("wallet-a", ts+1, f.key)
		ro.ReadOnly = true
		roTok, _, err := IssueWalletToken(ctx, db, ro)
		if err != nil {
			t.Fatal(err)
		}
		p, err = AuthenticateWalletToken(ctx, db, roTok)
		if err != nil {
			t.Fatal(err)
		}
		if !p.ReadOnly || p.AllowWrite() || !p.Allows(ScopeRead) || !p.AllowWallet("wallet-a") || p.AllowWallet("wallet-b") {
			t.Errorf("read-only token permissions wrong: %+v", p)
		}

		// Timestamps: 30 s either way is fine, 31 s is stale.
		for _, off := range []int64{-30, 30} {
			if _, _, err := IssueWalletToken(ctx, db, f.request("wallet-a", ts+off, f.key)); err != nil {
				t.Errorf("timestamp %+d s: %v", off, err)
			}
		}
		for _, off := range []int64{-31, 31, -1 << 62, 1 << 62} {
			_, _, err := IssueWalletToken(ctx, db, f.request("wallet-a", ts+off, f.key))
			wantErr(t, err, ErrStaleChallenge)
		}
		wrongTS := f.request("wallet-a", ts+2, f.key)
		wrongTS.Timestamp = ts + 3 // signed another timestamp
		_, _, err = IssueWalletToken(ctx, db, wrongTS)
		wantErr(t, err, ErrBadSignature)

		// Signed by a key the wallet does not accept.
		_, _, err = IssueWalletToken(ctx, db, f.request("wallet-a", ts+4, testKey(2)))
		wantErr(t, err, ErrBadSignature)
		if Code(err) != "bad_signature" {
			t.Errorf("Code = %q", Code(err))
		}
		// Signed the challenge of another wallet.
		other := f.request("wallet-b", ts+5, f.key)
		other.WalletID = "wallet-a"
		_, _, err = IssueWalletToken(ctx, db, other)
		wantErr(t, err, ErrBadSignature)
		// Garbage signature, and no acceptable keys at all.
		garbage := f.request("wallet-a", ts+6, f.key)
		garbage.Signature = "AAAA"
		_, _, err = IssueWalletToken(ctx, db, garbage)
		wantErr(t, err, ErrBadSignature)
		nokeys := f.request("wallet-a", ts+7, f.key)
		nokeys.AcceptKeys = nil
		_, _, err = IssueWalletToken(ctx, db, nokeys)
		wantErr(t, err, ErrBadSignature)

		// Bad arguments.
		for _, id := range []string{"", "a b", "a\nb", strings.Repeat("a", MaxWalletIDLen+1), "é"} {
			_, _, err := IssueWalletToken(ctx, db, f.request(id, ts+8, f.key))
			wantErr(t, err, ErrInvalid)
		}
		for _, ttl := range []time.Duration{-time.Minute, time.Millisecond, MaxTokenTTL + time.Second} {
			r := f.request("wallet-a", ts+9, f.key)
			r.TTL = ttl
			_, _, err := IssueWalletToken(ctx, db, r)
			wantErr(t, err, ErrInvalid)
		}
		noParams := f.request("wallet-a", ts+10, f.key)
		noParams.Params = nil
		if _, _, err := IssueWalletToken(ctx, db, noParams); err == nil {
			t.Error("request without params succeeded")
		}

		// Unknown and malformed tokens.
		for _, bad := range []string{"", "cwt_", "cwt_x", tok + "1", tok[:len(tok)-1], "cwt_" + strings.Repeat("1", 5000),
			"cwt_" + strings.Repeat("2", 44), "coffer_" + tok[4:]} {
			_, err := AuthenticateWalletToken(ctx, db, bad)
			wantErr(t, err, ErrUnauthenticated)
		}

		// Expiry: valid up to the second before expires_at.
		clock = exp.Add(-time.Second)
		if _, err := AuthenticateWalletToken(ctx, db, tok); err != nil {
			t.Errorf("just before expiry: %v", err)
		}
		clock = exp
		_, err = AuthenticateWalletToken(ctx, db, tok)
		wantErr(t, err, ErrExpired)
		if Code(err) != "token_expired" {
			t.Errorf("Code = %q", Code(err))
		}
	})
}

// negateS returns the other valid encoding of sig: S replaced by N−S and
// the recovery id's parity flipped.
func negateS(t *testing.T, sig string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(b) != 65 {
		t.Fatal("bad signature")
	}
	var s btcec.ModNScalar
	s.SetByteSlice(b[33:])
	s.Negate()
	sb := s.Bytes()
	copy(b[33:], sb[:])
	b[0] = 31 + ((b[0] - 31) ^ 1)
	return base64.StdEncoding.EncodeToString(b)
}

// TestWalletTokenXOnly: a taproot wallet's x-only key accepts a signer
// with that x coordinate, whichever the parity of its Y.
func TestWalletTokenXOnly(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		f := newTokenFixture(t)
		for i := byte(1); i <= 4; i++ {
			priv := testKey(i)
			var neg btcec.ModNScalar
			neg.Set(&priv.Key)
			neg.Negate()
			negPriv := btcec.PrivKeyFromScalar(&neg)
			xonly := priv.PubKey().SerializeCompressed()[1:]
			for j, signer := range []*btcec.PrivateKey{priv, negPriv} {
				r := f.request("tr-wallet", f.now.Unix()+int64(2*i)+int64(j), signer)
				r.AcceptKeys = [][]byte{xonly}
				if _, _, err := IssueWalletToken(ctx, db, r); err != nil {
					t.Errorf("key %d signer %d: %v", i, j, err)
				}
			}
			// An exact 33-byte key does not accept the negated key.
			r := f.request("tr-wallet", f.now.Unix()+20+int64(i), negPriv)
			r.AcceptKeys = [][]byte{priv.PubKey().SerializeCompressed()}
			_, _, err := IssueWalletToken(ctx, db, r)
			wantErr(t, err, ErrBadSignature)
			// Uncompressed accepted keys are understood too.
			r = f.request("tr-wallet", f.now.Unix()-20-int64(i), priv)
			r.AcceptKeys = [][]byte{{1, 2, 3}, priv.PubKey().SerializeUncompressed()}
			if _, _, err := IssueWalletToken(ctx, db, r); err != nil {
				t.Errorf("uncompressed accept key: %v", err)
			}
		}
	})
}

// TestPruneAndRevokeTokens: PruneExpired deletes expired tokens and old
// challenges only; RevokeWalletToken(s) delete tokens.
func TestPruneAndRevokeTokens(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		f := newTokenFixture(t)
		clock := f.now
		setClock(t, &clock)
		ts := f.now.Unix()
		short := f.request("w1", ts, f.key)
		short.TTL = time.Minute
		shortTok, _, err := IssueWalletToken(ctx, db, short)
		if err != nil {
			t.Fatal(err)
		}
		long := f.request("w1", ts+1, f.key)
		long.TTL = time.Hour
		longTok, _, err := IssueWalletToken(ctx, db, long)
		if err != nil {
			t.Fatal(err)
		}
		count := func(table string) int {
			t.Helper()
			var n int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		// Nothing is old yet; then the challenges outlive their window, and
		// the short token its minute.
		if n, err := PruneExpired(ctx, db, f.now); err != nil || n != 0 {
			t.Fatalf("PruneExpired now = %d, %v", n, err)
		}
		n, err := PruneExpired(ctx, db, f.now.Add(10*time.Minute))
		if err != nil || n != 3 {
			t.Fatalf("PruneExpired +10m = %d, %v; want 3 rows", n, err)
		}
		if count("wallet_tokens") != 1 || count("used_challenges") != 0 {
			t.Fatalf("left %d tokens, %d challenges", count("wallet_tokens"), count("used_challenges"))
		}
		if _, err := AuthenticateWalletToken(ctx, db, shortTok); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("pruned token: %v", err)
		}
		if _, err := AuthenticateWalletToken(ctx, db, longTok); err != nil {
			t.Errorf("unexpired token after prune: %v", err)
		}

		w2, _, err := IssueWalletToken(ctx, db, f.request("w2", ts+2, f.key))
		if err != nil {
			t.Fatal(err)
		}
		if n, err := RevokeWalletTokens(ctx, db, "w1"); err != nil || n != 1 {
			t.Errorf("RevokeWalletTokens = %d, %v", n, err)
		}
		if _, err := AuthenticateWalletToken(ctx, db, longTok); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("revoked token: %v", err)
		}
		if err := RevokeWalletToken(ctx, db, w2); err != nil {
			t.Fatal(err)
		}
		if _, err := AuthenticateWalletToken(ctx, db, w2); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("logged-out token: %v", err)
		}
		if err := RevokeWalletToken(ctx, db, "nonsense"); err != nil {
			t.Errorf("RevokeWalletToken(nonsense) = %v", err)
		}
	})
}

func TestAuthenticateRequest(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		f := newTokenFixture(t)
		clock := f.now
		setClock(t, &clock)
		key, _, err := CreateAPIKey(ctx, db, ScopeAdmin, "")
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := IssueWalletToken(ctx, db, f.request("w1", f.now.Unix(), f.key))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name    string
			headers map[string]string
			kind    string
			err     error
		}{
			{"bearer key", map[string]string{"Authorization": "Bearer " + key}, KindAPIKey, nil},
			{"lowercase scheme", map[string]string{"Authorization": "bearer " + key}, KindAPIKey, nil},
			{"x-api-key", map[string]string{"X-API-Key": key}, KindAPIKey, nil},
			{"bearer token", map[string]string{"Authorization": "Bearer " + tok}, KindWalletToken, nil},
			{"none", nil, "", ErrUnauthenticated},
			{"basic", map[string]string{"Authorization": "Basic " + key}, "", ErrUnauthenticated},
			{"no scheme", map[string]string{"Authorization": key}, "", ErrUnauthenticated},
			{"empty bearer", map[string]string{"Authorization": "Bearer "}, "", ErrUnauthenticated},
			{"other credential", map[string]string{"Authorization": "Bearer abc"}, "", ErrUnauthenticated},
			{"token in x-api-key", map[string]string{"X-API-Key": tok}, "", ErrUnauthenticated},
			{"both headers", map[string]string{"Authorization": "Bearer " + tok, "X-API-Key": key}, "", ErrUnauthenticated},
		} {
			r := httptest.NewRequest("GET", "/v1/wallets", nil)
			for k, v := range c.headers {
				r.Header.Set(k, v)
			}
			p, err := Authenticate(ctx, db, r)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Errorf("%s: error = %v, want %v", c.name, err, c.err)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
				continue
			}
			if p.Kind != c.kind {
				t.Errorf("%s: kind %q, want %q", c.name, p.Kind, c.kind)
			}
		}
		clock = f.now.Add(time.Hour)
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		if _, err := Authenticate(ctx, db, r); !errors.Is(err, ErrExpired) {
			t.Errorf("expired token: %v", err)
		}
	})
}

// TestWalletTokenReplayConcurrent: the same signed challenge sent many times
// at once buys exactly one token.
func TestWalletTokenReplayConcurrent(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		f := newTokenFixture(t)
		req := f.request("w1", f.now.Unix(), f.key)
		const n = 8
		errs := make(chan error, n)
		for range n {
			go func() {
				_, _, err := IssueWalletToken(ctx, db, req)
				errs <- err
			}()
		}
		ok := 0
		for range n {
			switch err := <-errs; {
			case err == nil:
				ok++
			case !errors.Is(err, ErrReplayed):
				t.Errorf("concurrent replay: %v", err)
			}
		}
		if ok != 1 {
			t.Errorf("%d tokens issued for one challenge", ok)
		}
	})
}

package api

// Authorization and bad input on the wallet routes, against the live stack of
// walletenv_test.go: every credential kind on every route, and every caller
// mistake answered with a 4xx and a stable code while nothing changes.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/base58"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/regtest"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/wallet"
)

// wiResp is one answer of the API.
type wiResp struct {
	status int
	code   string // the error envelope's code, "" when the body is not one
	body   []byte
	header http.Header
}

func (r wiResp) String() string { return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body)) }

// wiDo sends a request with the given headers and raw body and checks the
// answer against the OpenAPI document.
func wiDo(e *walletEnv, method, path string, hdr map[string]string, body []byte) wiResp {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.ts.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	_, pattern := e.srv.mux.Handler(req)
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, p, ok := strings.Cut(pattern, " "); ok {
		checkResponse(e.t, method, p, resp.StatusCode, b)
	}
	r := wiResp{status: resp.StatusCode, body: b, header: resp.Header}
	var env ErrorResponse
	if json.Unmarshal(b, &env) == nil {
		r.code = env.Error.Code
	}
	return r
}

// wiBody turns a test body into bytes: []byte and string are sent as they
// are, anything else as JSON, nil as no body.
func wiBody(t *testing.T, body any) []byte {
	t.Helper()
	switch b := body.(type) {
	case nil:
		return nil
	case []byte:
		return b
	case string:
		return []byte(b)
	}
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bearer is the Authorization header for a credential ("" for none).
func bearer(credential string) map[string]string {
	if credential == "" {
		return nil
	}
	return map[string]string{"Authorization": "Bearer " + credential}
}

// wiWant reports a response whose status or code differs from the wanted.
func wiWant(t *testing.T, what string, r wiResp, status int, code string) bool {
	t.Helper()
	if r.status != status || (code != "" && r.code != code) {
		t.Errorf("%s: got %s; want %d %s", what, r, status, code)
		return false
	}
	return true
}

// wiSigner is a signer whose seed is unique to the test and label, so the
// SQLite and PostgreSQL runs (and other tests) on the shared node never pay
// one another's addresses.
func wiSigner(t *testing.T, label string) *signer {
	t.Helper()
	seed := sha256.Sum256([]byte("wallet_input_test " + t.Name() + " " + label))
	net := &chaincfg.RegressionNetParams
	m, err := hdkeychain.NewMaster(seed[:], net)
	if err != nil {
		t.Fatal(err)
	}
	s := &signer{master: m, net: net}
	pub, err := m.ECPubKey()
	if err != nil {
		t.Fatal(err)
	}
	fp := btcutil.Hash160(pub.SerializeCompressed())[:4]
	s.fpHex = hex.EncodeToString(fp)
	s.fp = binary.LittleEndian.Uint32(fp) // as btcd's psbt stores it, like newSigner
	return s
}

// wiPath substitutes ids into a route pattern.
func wiPath(pattern, id, pid, txid string) string {
	return strings.NewReplacer("{id}", id, "{pid}", pid, "{txid}", txid).Replace(pattern)
}

// wiRouteBody is a well-formed body for a route, so that an authorized
// request would get past decoding.
func wiRouteBody(rt route, payTo string) []byte {
	switch rt.path {
	case "/v1/wallets":
		return []byte(`{"descriptor":"wpkh(x)"}`)
	case "/v1/wallets/{id}/addresses/check":
		return []byte(`{"addresses":["` + payTo + `"]}`)
	case "/v1/wallets/{id}/proposals":
		return []byte(`{"outputs":[{"address":"` + payTo + `","amount":"10000"}],"fee_rate":2}`)
	case "/v1/wallets/{id}/proposals/{pid}/send":
		return []byte(`{"psbt":"cHNidP8="}`)
	}
	return nil
}

// wiTip is the node's block count.
func wiTip(t *testing.T, e *walletEnv) int64 {
	t.Helper()
	n, err := e.node.Client().GetBlockCount(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

var wiAcct = []uint32{84 + h, 1 + h, 0 + h}

func wiDescriptor(t *testing.T, s *signer) string {
	return "wpkh(" + s.account(t, wiAcct...) + "/<0;1>/*)"
}

// wiSignChallenge signs the wallet-token challenge for walletID at ts with the
// signer's key at receive index 0.
func wiSignChallenge(t *testing.T, e *walletEnv, s *signer, walletID string, ts time.Time) string {
	t.Helper()
	priv, err := s.derive(t, append(wiAcct, 0, 0)...).ECPrivKey()
	if err != nil {
		t.Fatal(err)
	}
	sig := auth.SignMessage(e.wallets.Params(), priv, auth.Challenge(walletID, ts))
	if sig == "" {
		t.Fatal("SignMessage gave no signature")
	}
	return sig
}

// TestWalletAuthMatrix: every /v1 route refuses a missing, unknown or
// revoked credential; read keys read, write keys write; wallet tokens reach
// their own wallet's routes only, read-only tokens only to read; and the
// token endpoint refuses bad, stale, replayed and foreign signatures.
func TestWalletAuthMatrix(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		e := newWalletEnv(t, db)
		sa, sb := wiSigner(t, "A"), wiSigner(t, "B")
		tip := wiTip(t, e)
		A := e.register(map[string]any{"descriptor": wiDescriptor(t, sa), "birthday": tip})
		B := e.register(map[string]any{"descriptor": wiDescriptor(t, sb), "birthday": tip})
		var outs []regtest.Output
		for i := range uint32(4) {
			outs = append(outs, regtest.Output{PkScript: sa.wpkhScript(t, append(wiAcct, 0, i)...), Amount: 1_000_000})
		}
		fundTx, err := e.node.SendMany(ctx, outs)
		if err != nil {
			t.Fatal(err)
		}
		e.mine(1)
		if b := e.balance(A.ID); b.Confirmed != 4_000_000 {
			t.Fatalf("wallet A balance %+v, want 4000000 confirmed", b)
		}
		payTo := e.node.NewKey().WitnessAddress()
		propBody := map[string]any{"outputs": []map[string]any{{"address": payTo, "amount": "100000"}}, "fee_rate": 2}
		var p0 wallet.Proposal
		e.must(http.StatusCreated, "POST", "/v1/wallets/"+A.ID+"/proposals", propBody, &p0)
		pathA := func(rt route) string { return wiPath(rt.path, A.ID, p0.ID, fundTx) }
		pathB := func(rt route) string { return wiPath(rt.path, B.ID, p0.ID, fundTx) }

		// No credential: 401 unauthenticated everywhere but the public routes,
		// which are exactly these.
		wantPublic := map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /metrics": true,
			"GET /openapi.json": true, "POST /v1/auth/token": true}
		checked := 0
		for _, rt := range routes {
			if (rt.access == public) != wantPublic[rt.pattern()] {
				t.Errorf("%s: public is %v", rt.pattern(), rt.access == public)
			}
			r := wiDo(e, rt.method, pathA(rt), nil, wiRouteBody(rt, payTo))
			if rt.access == public {
				if r.status == http.StatusUnauthorized || r.status >= 500 {
					t.Errorf("public %s %s without credential: %s", rt.method, rt.path, r)
				}
				continue
			}
			checked++
			if wiWant(t, "no credential: "+rt.pattern(), r, http.StatusUnauthorized, auth.Code(auth.ErrUnauthenticated)) &&
				!strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s: 401 without a WWW-Authenticate Bearer challenge: %q", rt.pattern(), r.header.Get("WWW-Authenticate"))
			}
		}
		if checked < 15 {
			t.Fatalf("only %d protected routes in the table", checked)
		}

		// Garbage, unknown and revoked credentials.
		revoked, rk, err := auth.CreateAPIKey(ctx, db, auth.ScopeAdmin, "to revoke")
		if err != nil {
			t.Fatal(err)
		}
		wiWant(t, "key before revocation", wiDo(e, "GET", "/v1/status", bearer(revoked), nil), http.StatusOK, "")
		if err := auth.RevokeAPIKey(ctx, db, rk.ID); err != nil {
			t.Fatal(err)
		}
		realID := strings.SplitN(strings.TrimPrefix(e.key, "coffer_"), "_", 2)[0]
		secret := base58.Encode(bytes.Repeat([]byte{7}, 32))
		bad := map[string]struct {
			hdr  map[string]string
			code string
		}{
			"garbage bearer":           {bearer("garbage"), "unauthenticated"},
			"malformed API key":        {bearer("coffer_nothex_abc"), "unauthenticated"},
			"unknown API key":          {bearer("coffer_000000000000_" + secret), "unauthenticated"},
			"wrong secret":             {bearer("coffer_" + realID + "_" + secret), "unauthenticated"},
			"unknown wallet token":     {bearer("cwt_" + secret), "unauthenticated"},
			"malformed wallet token":   {bearer("cwt_0OIl"), "unauthenticated"},
			"basic scheme":             {map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(e.key))}, "unauthenticated"},
			"both headers":             {map[string]string{"Authorization": "Bearer " + e.key, "X-API-Key": e.key}, "unauthenticated"},
			"revoked key":              {bearer(revoked), auth.Code(auth.ErrRevoked)},
			"revoked key in X-API-Key": {map[string]string{"X-API-Key": revoked}, auth.Code(auth.ErrRevoked)},
		}
		for name, c := range bad {
			for _, rt := range routes {
				if rt.access == public {
					continue
				}
				wiWant(t, name+": "+rt.pattern(), wiDo(e, rt.method, pathA(rt), c.hdr, wiRouteBody(rt, payTo)), http.StatusUnauthorized, c.code)
			}
		}

		// A read key reads every route it may and is refused every write.
		readKey, _, err := auth.CreateAPIKey(ctx, db, auth.ScopeRead, "reader")
		if err != nil {
			t.Fatal(err)
		}
		for _, rt := range routes {
			// This stack has no ledger or WebSocket hub: custody_test.go and
			// ws_test.go check those routes.
			if rt.access == public || isCustodyRoute(rt.path) || rt.path == "/v1/ws" {
				continue
			}
			r := wiDo(e, rt.method, pathA(rt), bearer(readKey), wiRouteBody(rt, payTo))
			if rt.access == readAccess {
				wiWant(t, "read key: "+rt.pattern(), r, http.StatusOK, "")
			} else {
				wiWant(t, "read key: "+rt.pattern(), r, http.StatusForbidden, CodeForbidden)
			}
		}
		// The X-API-Key header works like the bearer header.
		wiWant(t, "read key in X-API-Key", wiDo(e, "GET", "/v1/wallets/"+A.ID, map[string]string{"X-API-Key": readKey}, nil), http.StatusOK, "")

		// A write key writes.
		writeKey, _, err := auth.CreateAPIKey(ctx, db, auth.ScopeWrite, "writer")
		if err != nil {
			t.Fatal(err)
		}
		var p1 wallet.Proposal
		r := wiDo(e, "POST", "/v1/wallets/"+A.ID+"/proposals", bearer(writeKey), wiBody(t, propBody))
		if wiWant(t, "write key: propose", r, http.StatusCreated, "") {
			json.Unmarshal(r.body, &p1)
		}
		wiWant(t, "write key: re-register A", wiDo(e, "POST", "/v1/wallets", bearer(writeKey),
			wiBody(t, map[string]any{"descriptor": wiDescriptor(t, sa)})), http.StatusOK, "")
		wiWant(t, "write key: next address", wiDo(e, "POST", "/v1/wallets/"+A.ID+"/addresses/next", bearer(writeKey), nil), http.StatusOK, "")
		wiWant(t, "write key: cancel", wiDo(e, "DELETE", "/v1/wallets/"+A.ID+"/proposals/"+p1.ID, bearer(writeKey), nil), http.StatusOK, "")
		// A proposal is reached through its own wallet only.
		wiWant(t, "A's proposal via B", wiDo(e, "GET", "/v1/wallets/"+B.ID+"/proposals/"+p0.ID, bearer(e.key), nil), http.StatusNotFound, "not_found")

		// Wallet tokens.
		token := func(walletID string, ts int64, sig string, readOnly bool) wiResp {
			t.Helper()
			body := map[string]any{"wallet_id": walletID, "timestamp": ts, "signature": sig}
			if readOnly {
				body["read_only"] = true
			}
			return wiDo(e, "POST", "/v1/auth/token", nil, wiBody(t, body))
		}
		now := time.Now()
		r = token(A.ID, now.Unix(), wiSignChallenge(t, e, sa, A.ID, now), false)
		var full TokenResponse
		if !wiWant(t, "full token for A", r, http.StatusCreated, "") {
			t.FailNow()
		}
		if err := json.Unmarshal(r.body, &full); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(full.Token, "cwt_") || full.WalletID != A.ID || full.ReadOnly ||
			full.ExpiresAt.Before(now) || full.ExpiresAt.After(now.Add(auth.MaxTokenTTL)) {
			t.Fatalf("token response %+v", full)
		}
		for _, rt := range routes {
			if rt.access == public || rt.tokens {
				continue // rt.tokens: ws_test.go checks the WebSocket with a token
			}
			what := "full token: " + rt.pattern()
			switch {
			case !rt.wallet:
				wiWant(t, what, wiDo(e, rt.method, pathA(rt), bearer(full.Token), wiRouteBody(rt, payTo)), http.StatusForbidden, CodeForbidden)
			case rt.access == readAccess:
				wiWant(t, what+" on A", wiDo(e, rt.method, pathA(rt), bearer(full.Token), wiRouteBody(rt, payTo)), http.StatusOK, "")
			}
			if rt.wallet {
				wiWant(t, what+" on B", wiDo(e, rt.method, pathB(rt), bearer(full.Token), wiRouteBody(rt, payTo)), http.StatusForbidden, CodeForbidden)
			}
		}
		var p2 wallet.Proposal
		r = wiDo(e, "POST", "/v1/wallets/"+A.ID+"/proposals", bearer(full.Token), wiBody(t, propBody))
		if wiWant(t, "full token: propose on A", r, http.StatusCreated, "") {
			json.Unmarshal(r.body, &p2)
		}
		wiWant(t, "full token: next address on A", wiDo(e, "POST", "/v1/wallets/"+A.ID+"/addresses/next", bearer(full.Token), nil), http.StatusOK, "")
		wiWant(t, "full token: cancel on A", wiDo(e, "DELETE", "/v1/wallets/"+A.ID+"/proposals/"+p2.ID, bearer(full.Token), nil), http.StatusOK, "")

		r = token(A.ID, now.Unix()-1, wiSignChallenge(t, e, sa, A.ID, now.Add(-time.Second)), true)
		var ro TokenResponse
		if !wiWant(t, "read-only token for A", r, http.StatusCreated, "") {
			t.FailNow()
		}
		if err := json.Unmarshal(r.body, &ro); err != nil {
			t.Fatal(err)
		}
		if !ro.ReadOnly || !strings.HasPrefix(ro.Token, "cwt_") {
			t.Fatalf("read-only token response %+v", ro)
		}
		for _, rt := range routes {
			if rt.access == public || rt.tokens {
				continue
			}
			what := "read-only token: " + rt.pattern()
			r := wiDo(e, rt.method, pathA(rt), bearer(ro.Token), wiRouteBody(rt, payTo))
			switch {
			case !rt.wallet || rt.access != readAccess:
				wiWant(t, what, r, http.StatusForbidden, CodeForbidden)
			default:
				wiWant(t, what, r, http.StatusOK, "")
			}
		}

		// An expired token (stored directly: the clock cannot be moved).
		expSecret := bytes.Repeat([]byte{9}, 32)
		sum := sha256.Sum256(expSecret)
		if err := db.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO wallet_tokens (token_hash, wallet_id, mode, created_at, expires_at)
				VALUES ($1, $2, 'full', $3, $4)`, hex.EncodeToString(sum[:]), A.ID, now.Unix()-3600, now.Unix()-60)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		wiWant(t, "expired token", wiDo(e, "GET", "/v1/wallets/"+A.ID, bearer("cwt_"+base58.Encode(expSecret)), nil),
			http.StatusUnauthorized, auth.Code(auth.ErrExpired))

		// Refused token requests.
		ts := now.Add(-2 * time.Second)
		good := wiSignChallenge(t, e, sa, A.ID, ts)
		refusals := []struct {
			what     string
			walletID string
			ts       int64
			sig      string
			status   int
			code     string
		}{
			{"signed by B's key", A.ID, ts.Unix(), wiSignChallenge(t, e, sb, A.ID, ts), http.StatusUnauthorized, "bad_signature"},
			{"signed over B's challenge", A.ID, ts.Unix(), wiSignChallenge(t, e, sa, B.ID, ts), http.StatusUnauthorized, "bad_signature"},
			{"signed over another timestamp", A.ID, ts.Unix() + 1, good, http.StatusUnauthorized, "bad_signature"},
			{"signature not base64", A.ID, ts.Unix(), "!!!", http.StatusUnauthorized, "bad_signature"},
			{"signature too short", A.ID, ts.Unix(), base64.StdEncoding.EncodeToString([]byte("short")), http.StatusUnauthorized, "bad_signature"},
			{"empty signature", A.ID, ts.Unix(), "", http.StatusUnauthorized, "bad_signature"},
			{"31 s old", A.ID, now.Unix() - 31, wiSignChallenge(t, e, sa, A.ID, now.Add(-31*time.Second)), http.StatusUnauthorized, "stale_challenge"},
			{"60 s ahead", A.ID, now.Unix() + 60, wiSignChallenge(t, e, sa, A.ID, now.Add(60*time.Second)), http.StatusUnauthorized, "stale_challenge"},
			{"timestamp 0", A.ID, 0, good, http.StatusUnauthorized, "stale_challenge"},
			{"unknown wallet", strings.Repeat("ab", 32), ts.Unix(), wiSignChallenge(t, e, sa, strings.Repeat("ab", 32), ts), http.StatusUnauthorized, "bad_signature"},
		}
		for _, c := range refusals {
			wiWant(t, "token "+c.what, token(c.walletID, c.ts, c.sig, false), c.status, c.code)
		}
		for name, body := range map[string]string{
			"empty body":    "",
			"not JSON":      "wallet_id=" + A.ID,
			"unknown field": `{"wallet_id":"` + A.ID + `","timestamp":1,"signature":"x","ttl":60}`,
			"string ts":     `{"wallet_id":"` + A.ID + `","timestamp":"1","signature":"x"}`,
		} {
			wiWant(t, "token: "+name, wiDo(e, "POST", "/v1/auth/token", nil, []byte(body)), http.StatusBadRequest, CodeInvalidJSON)
		}
		// A signed challenge buys one token; not a second one, read-only or not.
		wiWant(t, "token: first use", token(A.ID, ts.Unix(), good, false), http.StatusCreated, "")
		replayed := auth.HTTPStatus(auth.ErrReplayed)
		wiWant(t, "token: second use", token(A.ID, ts.Unix(), good, false), replayed, "challenge_reused")
		wiWant(t, "token: second use, read-only", token(A.ID, ts.Unix(), good, true), replayed, "challenge_reused")
		// A token request never needs nor consults a credential.
		r = wiDo(e, "POST", "/v1/auth/token", bearer("garbage"), wiBody(t, map[string]any{
			"wallet_id": B.ID, "timestamp": ts.Unix(), "signature": wiSignChallenge(t, e, sb, B.ID, ts)}))
		wiWant(t, "token for B with a garbage Authorization header", r, http.StatusCreated, "")
	})
}

// wiState is what a refused request must leave as it was.
type wiState struct {
	Wallets, Proposals, OpenProposals, Reservations, ReservedAddresses, Tokens, APIKeys int
	ProposalStates                                                                      string
	Listed                                                                              int
	Balance                                                                             wallet.Balance
	UTXOs                                                                               string
}

func wiSnapshot(t *testing.T, e *walletEnv, walletID string) (s wiState, addresses int) {
	t.Helper()
	ctx := context.Background()
	for q, dst := range map[string]*int{
		`SELECT COUNT(*) FROM wallets`:                                        &s.Wallets,
		`SELECT COUNT(*) FROM wallet_proposals`:                               &s.Proposals,
		`SELECT COUNT(*) FROM wallet_proposals WHERE status = 'open'`:         &s.OpenProposals,
		`SELECT COUNT(*) FROM wallet_reservations`:                            &s.Reservations,
		`SELECT COUNT(*) FROM wallet_addresses WHERE reserved_at IS NOT NULL`: &s.ReservedAddresses,
		`SELECT COUNT(*) FROM wallet_tokens`:                                  &s.Tokens,
		`SELECT COUNT(*) FROM api_keys`:                                       &s.APIKeys,
		`SELECT COUNT(*) FROM wallet_addresses`:                               &addresses,
	} {
		if err := e.db.QueryRowContext(ctx, q).Scan(dst); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	rows, err := e.db.QueryContext(ctx, `SELECT id, status FROM wallet_proposals ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for rows.Next() {
		var id, status string
		if err := rows.Scan(&id, &status); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%s ", id, status)
	}
	rows.Close()
	s.ProposalStates = b.String()
	var list WalletList
	e.must(http.StatusOK, "GET", "/v1/wallets", nil, &list)
	s.Listed = len(list.Wallets)
	s.Balance = e.balance(walletID)
	r := wiDo(e, "GET", "/v1/wallets/"+walletID+"/utxos?include_reserved=true&include_immature=true", bearer(e.key), nil)
	if r.status != http.StatusOK {
		t.Fatalf("listing UTXOs: %s", r)
	}
	s.UTXOs = string(r.body)
	return s, addresses
}

// TestWalletBadInput: each caller mistake gets its 4xx and stable code, and
// leaves wallets, proposals, reservations and balances untouched.
func TestWalletBadInput(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		e := newWalletEnv(t, db)
		s := wiSigner(t, "A")
		A := e.register(map[string]any{"descriptor": wiDescriptor(t, s), "birthday": wiTip(t, e)})
		var outs []regtest.Output
		for i := range uint32(3) {
			outs = append(outs, regtest.Output{PkScript: s.wpkhScript(t, append(wiAcct, 0, i)...), Amount: 1_000_000})
		}
		fundTx, err := e.node.SendMany(ctx, outs)
		if err != nil {
			t.Fatal(err)
		}
		e.mine(1)
		if b := e.balance(A.ID); b.Confirmed != 3_000_000 {
			t.Fatalf("balance %+v, want 3000000 confirmed", b)
		}
		payee := e.node.NewKey().WitnessAddress()
		const mainnetAddr = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
		pay := func(addr string, amt any) map[string]any {
			return map[string]any{"outputs": []map[string]any{{"address": addr, "amount": amt}}, "fee_rate": 2}
		}
		// Two open proposals and a cancelled one.
		var p1, p2, p3 wallet.Proposal
		e.must(http.StatusCreated, "POST", "/v1/wallets/"+A.ID+"/proposals", pay(payee, "100000"), &p1)
		e.must(http.StatusCreated, "POST", "/v1/wallets/"+A.ID+"/proposals", pay(payee, "100000"), &p2)
		e.must(http.StatusCreated, "POST", "/v1/wallets/"+A.ID+"/proposals", pay(payee, "100000"), &p3)
		e.must(http.StatusOK, "DELETE", "/v1/wallets/"+A.ID+"/proposals/"+p3.ID, nil, nil)
		signed2, signed3 := s.sign(t, p2.PSBT), s.sign(t, p3.PSBT)
		unsigned1, err := psbt.NewFromRawBytes(strings.NewReader(p1.PSBT), true)
		if err != nil {
			t.Fatal(err)
		}
		var rawBuf bytes.Buffer
		if err := unsigned1.UnsignedTx.Serialize(&rawBuf); err != nil {
			t.Fatal(err)
		}
		unsignedRaw1 := hex.EncodeToString(rawBuf.Bytes())
		tooMany := make([]map[string]any, 1001)
		for i := range tooMany {
			tooMany[i] = map[string]any{"address": payee, "amount": "10000"}
		}

		// Keys for descriptors: a mainnet account, a private key, a second tpub.
		mainMaster, err := hdkeychain.NewMaster(bytes.Repeat([]byte{0x42}, 32), &chaincfg.MainNetParams)
		if err != nil {
			t.Fatal(err)
		}
		mainAcct, err := mainMaster.Derive(84 + h)
		if err != nil {
			t.Fatal(err)
		}
		mainXpub, err := mainAcct.Neuter()
		if err != nil {
			t.Fatal(err)
		}
		acct := s.account(t, wiAcct...)
		other := wiSigner(t, "other").account(t, 48+h, 1+h, 0+h, 2+h)
		tprv := s.derive(t, wiAcct...).String()
		desc := wiDescriptor(t, s)

		// Addresses for the check endpoint.
		var recv, chg AddressList
		e.must(http.StatusOK, "GET", "/v1/wallets/"+A.ID+"/addresses?branch=receive", nil, &recv)
		e.must(http.StatusOK, "GET", "/v1/wallets/"+A.ID+"/addresses?branch=change", nil, &chg)
		if len(recv.Addresses) < 6 || len(chg.Addresses) < 2 {
			t.Fatalf("%d receive and %d change addresses", len(recv.Addresses), len(chg.Addresses))
		}
		own := recv.Addresses[0].Address
		many := make([]string, wallet.MaxCheckAddresses+1)
		for i := range many {
			many[i] = own
		}

		unknownWallet := strings.Repeat("0", 64)
		w := "/v1/wallets/" + A.ID
		cases := []struct {
			what         string
			method, path string
			body         any
			status       int
			code         string
		}{
			// Registration.
			{"malformed descriptor", "POST", "/v1/wallets", map[string]any{"descriptor": "wpkh(" + acct + "/<0;1>/*"}, 400, "invalid_descriptor"},
			{"descriptor of nonsense", "POST", "/v1/wallets", map[string]any{"descriptor": "hello"}, 400, "invalid_descriptor"},
			{"bad checksum", "POST", "/v1/wallets", map[string]any{"descriptor": desc + "#qqqqqqqq"}, 400, "invalid_descriptor"},
			{"malformed checksum", "POST", "/v1/wallets", map[string]any{"descriptor": desc + "#abc"}, 400, "invalid_descriptor"},
			{"mainnet descriptor", "POST", "/v1/wallets", map[string]any{"descriptor": "wpkh([deadbeef/84h/0h/0h]" + mainXpub.String() + "/<0;1>/*)"}, 400, "wrong_network"},
			{"mainnet xpub", "POST", "/v1/wallets", map[string]any{"xpub": mainXpub.String(), "script_type": "wpkh"}, 400, "wrong_network"},
			{"malformed xpub", "POST", "/v1/wallets", map[string]any{"xpub": "tpubD6NzVbkrYhZ4garbage", "script_type": "wpkh"}, 400, "invalid_descriptor"},
			{"xpub with a bad checksum", "POST", "/v1/wallets", map[string]any{"xpub": mainXpub.String()[:len(mainXpub.String())-1] + "x", "script_type": "wpkh"}, 400, "invalid_descriptor"},
			{"private key descriptor", "POST", "/v1/wallets", map[string]any{"descriptor": "wpkh(" + tprv + "/<0;1>/*)"}, 400, "invalid_descriptor"},
			{"hardened wildcard", "POST", "/v1/wallets", map[string]any{"descriptor": "wpkh(" + acct + "/0/*h)"}, 400, "invalid_descriptor"},
			{"xpub without script_type", "POST", "/v1/wallets", map[string]any{"xpub": strings.SplitN(acct, "]", 2)[1]}, 400, "invalid_descriptor"},
			{"xpub with a path", "POST", "/v1/wallets", map[string]any{"xpub": acct + "/0/*", "script_type": "wpkh"}, 400, "invalid_descriptor"},
			{"both descriptor and xpub", "POST", "/v1/wallets", map[string]any{"descriptor": desc, "xpub": mainXpub.String()}, 400, "invalid_parameter"},
			{"neither descriptor nor xpub", "POST", "/v1/wallets", map[string]any{"label": "x"}, 400, "invalid_parameter"},
			{"script_type with a descriptor", "POST", "/v1/wallets", map[string]any{"descriptor": desc, "script_type": "wpkh"}, 400, "invalid_parameter"},
			{"gap_limit -1", "POST", "/v1/wallets", map[string]any{"descriptor": desc, "gap_limit": -1}, 400, "invalid_parameter"},
			{"gap_limit 1001", "POST", "/v1/wallets", map[string]any{"descriptor": desc, "gap_limit": 1001}, 400, "invalid_parameter"},
			{"gap_limit as a string", "POST", "/v1/wallets", map[string]any{"descriptor": desc, "gap_limit": "20"}, 400, "invalid_json"},
			{"birthday yesterday", "POST", "/v1/wallets", map[string]any{"descriptor": desc, "birthday": "yesterday"}, 400, "invalid_parameter"},
			{"birthday -5", "POST", "/v1/wallets", map[string]any{"descriptor": desc, "birthday": -5}, 400, "invalid_parameter"},
			{"birthday true", "POST", "/v1/wallets", map[string]any{"descriptor": desc, "birthday": true}, 400, "invalid_parameter"},
			{"label too long", "POST", "/v1/wallets", map[string]any{"descriptor": desc, "label": strings.Repeat("x", 201)}, 400, "invalid_parameter"},
			{"unknown field", "POST", "/v1/wallets", map[string]any{"descriptor": desc, "colour": "blue"}, 400, "invalid_json"},
			{"non-JSON body", "POST", "/v1/wallets", "descriptor=" + desc, 400, "invalid_json"},
			{"empty body", "POST", "/v1/wallets", nil, 400, "invalid_json"},
			{"two JSON values", "POST", "/v1/wallets", `{"descriptor":"x"} {}`, 400, "invalid_json"},
			{"JSON array", "POST", "/v1/wallets", `[]`, 400, "invalid_json"},
			{"sh(multi) descriptor", "POST", "/v1/wallets", map[string]any{"descriptor": "sh(multi(1," + acct + "/<0;1>/*," + other + "/<0;1>/*))"}, 400, "invalid_descriptor"},
			{"pk descriptor", "POST", "/v1/wallets", map[string]any{"descriptor": "pk(" + acct + "/<0;1>/*)"}, 400, "invalid_descriptor"},
			{"wsh(pk) descriptor", "POST", "/v1/wallets", map[string]any{"descriptor": "wsh(pk(" + acct + "/<0;1>/*))"}, 400, "invalid_descriptor"},
			{"addr descriptor", "POST", "/v1/wallets", map[string]any{"descriptor": "addr(" + payee + ")"}, 400, "invalid_descriptor"},
			{"three-way multipath", "POST", "/v1/wallets", map[string]any{"descriptor": "wpkh(" + acct + "/<0;1;2>/*)"}, 400, "invalid_descriptor"},

			// Proposals.
			{"mainnet payee", "POST", w + "/proposals", pay(mainnetAddr, "10000"), 400, "wrong_network"},
			{"garbage payee", "POST", w + "/proposals", pay("not-an-address", "10000"), 400, "invalid_address"},
			{"empty payee", "POST", w + "/proposals", pay("", "10000"), 400, "invalid_address"},
			{"mainnet taproot payee", "POST", w + "/proposals", pay("bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3297", "10000"), 400, "wrong_network"},
			{"1001 outputs", "POST", w + "/proposals", map[string]any{"outputs": tooMany, "fee_rate": 2}, 400, "invalid_parameter"},
			{"amount above the money supply", "POST", w + "/proposals", pay(payee, "2100000000000001"), 400, "invalid_amount"},
			{"mainnet send_all_to", "POST", w + "/proposals", map[string]any{"send_all_to": mainnetAddr}, 400, "wrong_network"},
			{"amount 0", "POST", w + "/proposals", pay(payee, "0"), 400, "invalid_amount"},
			{"amount -5", "POST", w + "/proposals", pay(payee, "-5"), 400, "invalid_amount"},
			{"amount missing", "POST", w + "/proposals", map[string]any{"outputs": []map[string]any{{"address": payee}}}, 400, "invalid_amount"},
			{"dust amount", "POST", w + "/proposals", pay(payee, "100"), 400, "dust_amount"},
			{"amount as a number", "POST", w + "/proposals", pay(payee, 1000), 400, "invalid_json"},
			{"amount 1.5", "POST", w + "/proposals", pay(payee, "1.5"), 400, "invalid_json"},
			{"amount 1e5", "POST", w + "/proposals", pay(payee, "1e5"), 400, "invalid_json"},
			{"amount out of range", "POST", w + "/proposals", pay(payee, "99999999999999999999"), 400, "invalid_json"},
			{"more than the balance", "POST", w + "/proposals", pay(payee, "1000000000"), 422, "insufficient_funds"},
			{"more than the unreserved balance", "POST", w + "/proposals", pay(payee, "1500000"), 422, "insufficient_funds"},
			{"fee_rate 20000", "POST", w + "/proposals", map[string]any{"outputs": pay(payee, "10000")["outputs"], "fee_rate": 20000}, 400, "invalid_parameter"},
			{"fee_rate -1", "POST", w + "/proposals", map[string]any{"outputs": pay(payee, "10000")["outputs"], "fee_rate": -1}, 400, "invalid_parameter"},
			{"conf_target 2000", "POST", w + "/proposals", map[string]any{"outputs": pay(payee, "10000")["outputs"], "conf_target": 2000}, 400, "invalid_parameter"},
			{"min_conf -1", "POST", w + "/proposals", map[string]any{"outputs": pay(payee, "10000")["outputs"], "min_conf": -1}, 400, "invalid_parameter"},
			{"include_inputs nonsense", "POST", w + "/proposals", map[string]any{"outputs": pay(payee, "10000")["outputs"], "include_inputs": []string{"nonsense"}}, 400, "invalid_parameter"},
			{"include_inputs as a string", "POST", w + "/proposals", map[string]any{"outputs": pay(payee, "10000")["outputs"], "include_inputs": "nonsense"}, 400, "invalid_json"},
			{"include_inputs unknown outpoint", "POST", w + "/proposals", map[string]any{"outputs": pay(payee, "10000")["outputs"], "include_inputs": []string{strings.Repeat("1", 64) + ":0"}}, 400, "invalid_parameter"},
			{"include_inputs reserved outpoint", "POST", w + "/proposals", map[string]any{"outputs": pay(payee, "10000")["outputs"], "include_inputs": []string{p1.Inputs[0].Txid + ":" + fmt.Sprint(p1.Inputs[0].Vout)}}, 400, "invalid_parameter"},
			{"exclude_inputs nonsense", "POST", w + "/proposals", map[string]any{"outputs": pay(payee, "10000")["outputs"], "exclude_inputs": []string{"x:y"}}, 400, "invalid_parameter"},
			{"no outputs", "POST", w + "/proposals", map[string]any{"fee_rate": 2}, 400, "invalid_parameter"},
			{"outputs and send_all_to", "POST", w + "/proposals", map[string]any{"outputs": pay(payee, "10000")["outputs"], "send_all_to": payee}, 400, "invalid_parameter"},
			{"proposal unknown field", "POST", w + "/proposals", map[string]any{"outputs": pay(payee, "10000")["outputs"], "feerate": 2}, 400, "invalid_json"},

			// Unknown things.
			{"unknown proposal: GET", "GET", w + "/proposals/prop_000000000000000000000000", nil, 404, "not_found"},
			{"unknown proposal: DELETE", "DELETE", w + "/proposals/prop_000000000000000000000000", nil, 404, "not_found"},
			{"unknown proposal: send", "POST", w + "/proposals/prop_000000000000000000000000/send", map[string]any{"psbt": signed2}, 404, "not_found"},
			{"unknown wallet: GET", "GET", "/v1/wallets/" + unknownWallet, nil, 404, "not_found"},
			{"unknown wallet: addresses", "GET", "/v1/wallets/" + unknownWallet + "/addresses", nil, 404, "not_found"},
			{"unknown wallet: next address", "POST", "/v1/wallets/" + unknownWallet + "/addresses/next", nil, 404, "not_found"},
			{"unknown wallet: check", "POST", "/v1/wallets/" + unknownWallet + "/addresses/check", map[string]any{"addresses": []string{own}}, 404, "not_found"},
			{"unknown wallet: balance", "GET", "/v1/wallets/" + unknownWallet + "/balance", nil, 404, "not_found"},
			{"unknown wallet: utxos", "GET", "/v1/wallets/" + unknownWallet + "/utxos", nil, 404, "not_found"},
			{"unknown wallet: transactions", "GET", "/v1/wallets/" + unknownWallet + "/transactions", nil, 404, "not_found"},
			{"unknown wallet: transaction", "GET", "/v1/wallets/" + unknownWallet + "/transactions/" + fundTx, nil, 404, "not_found"},
			{"unknown wallet: propose", "POST", "/v1/wallets/" + unknownWallet + "/proposals", pay(payee, "10000"), 404, "not_found"},
			{"unknown wallet: proposal", "GET", "/v1/wallets/" + unknownWallet + "/proposals/" + p1.ID, nil, 404, "not_found"},
			{"unknown wallet: cancel", "DELETE", "/v1/wallets/" + unknownWallet + "/proposals/" + p1.ID, nil, 404, "not_found"},
			{"unknown wallet: send", "POST", "/v1/wallets/" + unknownWallet + "/proposals/" + p1.ID + "/send", map[string]any{"psbt": signed2}, 404, "not_found"},
			{"unknown txid", "GET", w + "/transactions/" + strings.Repeat("ab", 32), nil, 404, "not_found"},
			{"bad txid", "GET", w + "/transactions/xyz", nil, 400, "invalid_parameter"},
			{"txid of 63 digits", "GET", w + "/transactions/" + fundTx[1:], nil, 400, "invalid_parameter"},
			{"txid of 65 digits", "GET", w + "/transactions/0" + fundTx, nil, 400, "invalid_parameter"},

			// Send.
			{"send another proposal's signed PSBT", "POST", w + "/proposals/" + p1.ID + "/send", map[string]any{"psbt": signed2}, 422, "transaction_mismatch"},
			{"send the unsigned PSBT", "POST", w + "/proposals/" + p1.ID + "/send", map[string]any{"psbt": p1.PSBT}, 422, "not_signed"},
			{"send the unsigned raw transaction", "POST", w + "/proposals/" + p1.ID + "/send", map[string]any{"raw_tx": unsignedRaw1}, 422, "not_signed"},
			{"send garbage base64", "POST", w + "/proposals/" + p1.ID + "/send", map[string]any{"psbt": "!!!not base64"}, 400, "invalid_parameter"},
			{"send base64 of no PSBT", "POST", w + "/proposals/" + p1.ID + "/send", map[string]any{"psbt": base64.StdEncoding.EncodeToString([]byte("hello, world"))}, 422, "transaction_mismatch"},
			{"send garbage hex", "POST", w + "/proposals/" + p1.ID + "/send", map[string]any{"raw_tx": "zz"}, 400, "invalid_parameter"},
			{"send both psbt and raw_tx", "POST", w + "/proposals/" + p1.ID + "/send", map[string]any{"psbt": signed2, "raw_tx": "00"}, 400, "invalid_parameter"},
			{"send nothing", "POST", w + "/proposals/" + p1.ID + "/send", map[string]any{}, 400, "invalid_parameter"},
			{"send no body", "POST", w + "/proposals/" + p1.ID + "/send", nil, 400, "invalid_json"},
			{"send a cancelled proposal", "POST", w + "/proposals/" + p3.ID + "/send", map[string]any{"psbt": signed3}, 409, "proposal_not_open"},
			{"cancel a cancelled proposal", "DELETE", w + "/proposals/" + p3.ID, nil, 409, "proposal_not_open"},

			// Address checks.
			{"check 1001 addresses", "POST", w + "/addresses/check", map[string]any{"addresses": many}, 400, "invalid_parameter"},
			{"check no addresses", "POST", w + "/addresses/check", map[string]any{"addresses": []string{}}, 400, "invalid_parameter"},
			{"check a mainnet address", "POST", w + "/addresses/check", map[string]any{"addresses": []string{own, mainnetAddr}}, 400, "wrong_network"},
			{"check a garbage address", "POST", w + "/addresses/check", map[string]any{"addresses": []string{"garbage"}}, 400, "invalid_address"},
			{"addresses of a bad branch", "GET", w + "/addresses?branch=sideways", nil, 400, "invalid_parameter"},

			// Query parameters.
			{"transactions limit=0", "GET", w + "/transactions?limit=0", nil, 400, "invalid_parameter"},
			{"transactions limit=501", "GET", w + "/transactions?limit=501", nil, 400, "invalid_parameter"},
			{"transactions limit=ten", "GET", w + "/transactions?limit=ten", nil, 400, "invalid_parameter"},
			{"transactions cursor=garbage", "GET", w + "/transactions?cursor=garbage", nil, 400, "invalid_parameter"},
			{"transactions cursor of base64 nonsense", "GET", w + "/transactions?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("1.2.3")), nil, 400, "invalid_parameter"},
			{"transactions details=maybe", "GET", w + "/transactions?details=maybe", nil, 400, "invalid_parameter"},
			{"utxos min_conf=-1", "GET", w + "/utxos?min_conf=-1", nil, 400, "invalid_parameter"},
			{"utxos min_amount=x", "GET", w + "/utxos?min_amount=x", nil, 400, "invalid_parameter"},
			{"utxos include_reserved=maybe", "GET", w + "/utxos?include_reserved=maybe", nil, 400, "invalid_parameter"},
		}
		grown := 0
		for _, c := range cases {
			before, addrsBefore := wiSnapshot(t, e, A.ID)
			r := wiDo(e, c.method, c.path, bearer(e.key), wiBody(t, c.body))
			wiWant(t, c.what, r, c.status, c.code)
			after, addrsAfter := wiSnapshot(t, e, A.ID)
			if !reflect.DeepEqual(before, after) {
				t.Errorf("%s changed state:\nbefore %+v\nafter  %+v", c.what, before, after)
			}
			if addrsAfter != addrsBefore {
				grown++
				t.Logf("%s: derived addresses %d → %d", c.what, addrsBefore, addrsAfter)
			}
		}

		// A mix of the wallet's own and foreign addresses.
		foreign := e.node.NewKey().WitnessAddress()
		mix := []string{own, foreign, chg.Addresses[1].Address, recv.Addresses[5].Address, e.node.NewKey().Address()}
		before, _ := wiSnapshot(t, e, A.ID)
		var checkRes CheckAddressesResponse
		e.must(http.StatusOK, "POST", w+"/addresses/check", map[string]any{"addresses": mix}, &checkRes)
		type want struct {
			mine   bool
			branch string
			index  int64
		}
		wants := []want{{true, "receive", 0}, {false, "", 0}, {true, "change", 1}, {true, "receive", 5}, {false, "", 0}}
		if len(checkRes.Addresses) != len(mix) {
			t.Fatalf("check answered %d addresses for %d", len(checkRes.Addresses), len(mix))
		}
		for i, got := range checkRes.Addresses {
			wt := wants[i]
			if got.Address != mix[i] || got.Mine != wt.mine || got.Branch != wt.branch ||
				(wt.mine && (got.Index == nil || *got.Index != wt.index)) || (!wt.mine && got.Index != nil) {
				t.Errorf("check %s: %+v, want %+v", mix[i], got, wt)
			}
		}
		if after, _ := wiSnapshot(t, e, A.ID); !reflect.DeepEqual(before, after) {
			t.Errorf("checking addresses changed state:\nbefore %+v\nafter  %+v", before, after)
		}
		if grown > 0 {
			t.Logf("%d refused requests derived more addresses (see above)", grown)
		}

		// The open proposals are intact: p1 is still sendable as signed.
		var sent wallet.Proposal
		e.must(http.StatusOK, "POST", w+"/proposals/"+p1.ID+"/send", map[string]any{"psbt": s.sign(t, p1.PSBT)}, &sent)
		if sent.Status != wallet.ProposalSent {
			t.Fatalf("p1 after the refusals: %+v", sent)
		}
	})
}

package api

// The Idempotency-Key layer over a real database (SQLite, and PostgreSQL when
// COFFER_TEST_POSTGRES is set): test routes with a counting handler served
// through the real Server, middleware and authorization, plus one real route.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil/base58"

	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/wallet"
)

// idemEnv serves test routes whose handler counts its runs.
type idemEnv struct {
	t     *testing.T
	db    *store.DB
	s     *Server
	ts    *httptest.Server
	key   string       // write API key
	calls atomic.Int64 // handler runs
	skew  atomic.Int64 // added to the idempotency clock, in nanoseconds

	mu    sync.Mutex
	reply func(n int64, w http.ResponseWriter, r *http.Request, body []byte) // nil: 201 with a Location
	keys  []string                                                           // idempotencyKey(r) of each run
}

const idemWallet = "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12"

func newIdemEnv(t *testing.T, db *store.DB) *idemEnv {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	e := &idemEnv{t: t, db: db, s: NewServer(Deps{DB: db, Events: events.NewLog(db), Logger: logger})}
	e.s.idem.now = func() time.Time { return time.Now().Add(time.Duration(e.skew.Load())) }
	handle := func(_ *Server, w http.ResponseWriter, r *http.Request) { e.serve(w, r) }
	for _, rt := range []route{
		{method: http.MethodPost, path: "/test/things", access: writeAccess, handle: handle},
		{method: http.MethodPost, path: "/test/other", access: writeAccess, handle: handle},
		{method: http.MethodDelete, path: "/test/things/{n}", access: writeAccess, handle: handle},
		{method: http.MethodPost, path: "/test/required", access: writeAccess, idempotency: idempotencyRequired, handle: handle},
		{method: http.MethodPost, path: "/test/off", access: writeAccess, idempotency: idempotencyOff, handle: handle},
		{method: http.MethodGet, path: "/test/things", access: readAccess, handle: handle},
		{method: http.MethodPost, path: "/test/public", handle: handle},
		{method: http.MethodPost, path: "/test/wallets/{id}/things", access: writeAccess, wallet: true, handle: handle},
	} {
		e.s.byPat[rt.pattern()] = rt
		// The same closure as NewServer's.
		e.s.mux.HandleFunc(rt.pattern(), func(w http.ResponseWriter, r *http.Request) {
			if e.s.authorize(w, r, rt) {
				e.s.idempotent(rt, w, r)
			}
		})
	}
	e.ts = httptest.NewServer(e.s)
	t.Cleanup(e.ts.Close)
	e.key = e.apiKey(auth.ScopeWrite)
	return e
}

func (e *idemEnv) apiKey(scope auth.Scope) string {
	e.t.Helper()
	key, _, err := auth.CreateAPIKey(context.Background(), e.db, scope, "idempotency test")
	if err != nil {
		e.t.Fatal(err)
	}
	return key
}

// walletToken makes a full token of walletID the way IssueWalletToken stores
// one, without the signed challenge.
func (e *idemEnv) walletToken(walletID string) string {
	e.t.Helper()
	secret := make([]byte, 32)
	rand.Read(secret)
	sum := sha256.Sum256(secret)
	now := time.Now().Unix()
	err := e.db.InTx(context.Background(), func(tx *store.Tx) error {
		_, err := tx.ExecContext(context.Background(), `INSERT INTO wallet_tokens (token_hash, wallet_id, mode, created_at, expires_at)
			VALUES ($1, $2, 'full', $3, $4)`, hex.EncodeToString(sum[:]), walletID, now, now+3600)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return "cwt_" + base58.Encode(secret)
}

func (e *idemEnv) setReply(f func(n int64, w http.ResponseWriter, r *http.Request, body []byte)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reply = f
}

func (e *idemEnv) serve(w http.ResponseWriter, r *http.Request) {
	n := e.calls.Add(1)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		e.t.Errorf("handler reading body: %v", err)
	}
	e.mu.Lock()
	e.keys = append(e.keys, idempotencyKey(r))
	reply := e.reply
	e.mu.Unlock()
	if reply != nil {
		reply(n, w, r, body)
		return
	}
	w.Header().Set("Location", fmt.Sprintf("/test/things/%d", n))
	writeJSON(w, http.StatusCreated, map[string]any{"n": n, "body": string(body)})
}

type idemResp struct {
	status int
	header http.Header
	body   []byte
}

func (r idemResp) String() string { return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body)) }

func (r idemResp) replayed() bool { return r.header.Get(IdempotentReplayedHeader) == "true" }

func (r idemResp) code() string {
	var e ErrorResponse
	json.Unmarshal(r.body, &e)
	return e.Error.Code
}

// send makes one request with credential cred (the env's write key when
// empty) and one Idempotency-Key header per key.
func (e *idemEnv) send(method, path, cred, body string, keys ...string) idemResp {
	e.t.Helper()
	req, err := http.NewRequest(method, e.ts.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if cred == "" {
		cred = e.key
	}
	req.Header.Set("Authorization", "Bearer "+cred)
	for _, k := range keys {
		req.Header.Add(IdempotencyKeyHeader, k)
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return idemResp{status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *idemEnv) wantCalls(want int64) {
	e.t.Helper()
	if got := e.calls.Load(); got != want {
		e.t.Fatalf("handler ran %d times, want %d", got, want)
	}
}

func wantIdemError(t *testing.T, r idemResp, status int, code string) {
	t.Helper()
	if r.status != status || r.code() != code {
		t.Fatalf("got %s, want %d %s", r, status, code)
	}
	var e ErrorResponse
	if json.Unmarshal(r.body, &e); e.Error.Message == "" {
		t.Fatalf("error without a message: %s", r.body)
	}
}

// wantReplay checks that again is first replayed byte for byte.
func wantReplay(t *testing.T, first, again idemResp) {
	t.Helper()
	if first.replayed() {
		t.Errorf("the first answer carries %s", IdempotentReplayedHeader)
	}
	if !again.replayed() {
		t.Fatalf("the retry %s is not marked %s: true", again, IdempotentReplayedHeader)
	}
	if again.status != first.status || !bytes.Equal(again.body, first.body) {
		t.Fatalf("replay %s, first answer %s", again, first)
	}
	for _, h := range []string{"Content-Type", "Location", "X-Content-Type-Options"} {
		if again.header.Get(h) != first.header.Get(h) {
			t.Errorf("replayed %s %q, first %q", h, again.header.Get(h), first.header.Get(h))
		}
	}
}

func TestIdempotencyReplay(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newIdemEnv(t, db)
		first := e.send("POST", "/test/things", "", `{"a":1}`, "k-1")
		if first.status != http.StatusCreated || first.header.Get("Location") != "/test/things/1" {
			t.Fatalf("first answer %s, Location %q", first, first.header.Get("Location"))
		}
		for range 3 {
			wantReplay(t, first, e.send("POST", "/test/things", "", `{"a":1}`, "k-1"))
		}
		e.wantCalls(1)
		if e.keys[0] != "k-1" {
			t.Errorf("idempotencyKey(r) = %q in the handler, want k-1", e.keys[0])
		}

		// No key: every request runs, and the handler sees no key.
		e.send("POST", "/test/things", "", `{"a":1}`)
		e.send("POST", "/test/things", "", `{"a":1}`)
		e.wantCalls(3)
		if e.keys[1] != "" || e.keys[2] != "" {
			t.Errorf("idempotencyKey(r) = %q without a header", e.keys[1:])
		}

		// DELETE is covered too; the path is part of the request.
		del := e.send("DELETE", "/test/things/1", "", "", "k-del")
		wantReplay(t, del, e.send("DELETE", "/test/things/1", "", "", "k-del"))
		e.wantCalls(4)

		// A final 4xx is replayed like a success, and so is an empty 200.
		e.setReply(func(n int64, w http.ResponseWriter, r *http.Request, body []byte) {
			switch string(body) {
			case "empty":
			case "gone":
				writeError(w, http.StatusConflict, "proposal_not_open", fmt.Sprintf("run %d", n))
			default:
				writeError(w, http.StatusUnprocessableEntity, "insufficient_funds", fmt.Sprintf("run %d", n))
			}
		})
		bad := e.send("POST", "/test/things", "", `{"a":2}`, "k-422")
		if bad.status != http.StatusUnprocessableEntity {
			t.Fatalf("got %s", bad)
		}
		wantReplay(t, bad, e.send("POST", "/test/things", "", `{"a":2}`, "k-422"))
		gone := e.send("POST", "/test/things", "", "gone", "k-409")
		wantReplay(t, gone, e.send("POST", "/test/things", "", "gone", "k-409"))
		empty := e.send("POST", "/test/things", "", "empty", "k-empty")
		if empty.status != http.StatusOK || len(empty.body) != 0 {
			t.Fatalf("got %s", empty)
		}
		wantReplay(t, empty, e.send("POST", "/test/things", "", "empty", "k-empty"))
		e.wantCalls(7)

		// GET, public routes and routes with idempotency off ignore the header.
		e.setReply(nil)
		for _, path := range []string{"/test/public", "/test/off"} {
			e.send("POST", path, "", "x", "k-ignored")
			if r := e.send("POST", path, "", "x", "k-ignored"); r.replayed() {
				t.Errorf("POST %s replayed %s", path, r)
			}
		}
		if r := e.send("GET", "/test/things", "", "", "not\tvalid"); r.status != http.StatusCreated || r.replayed() {
			t.Errorf("GET with a bad key: %s", r)
		}
		e.wantCalls(12)
	})
}

func TestIdempotencyKeyReused(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newIdemEnv(t, db)
		first := e.send("POST", "/test/things", "", `{"a":1}`, "k")
		for _, c := range []struct{ method, path, body string }{
			{"POST", "/test/things", `{"a":2}`},
			{"POST", "/test/things", `{"a":1} `}, // the body byte for byte
			{"POST", "/test/things?x=1", `{"a":1}`},
			{"POST", "/test/other", `{"a":1}`},
			{"DELETE", "/test/things/1", ``},
		} {
			r := e.send(c.method, c.path, "", c.body, "k")
			wantIdemError(t, r, http.StatusConflict, CodeIdempotencyKeyReused)
			if !strings.Contains(string(r.body), "POST /test/things") {
				t.Errorf("the message does not name the first request: %s", r.body)
			}
		}
		e.wantCalls(1)
		wantReplay(t, first, e.send("POST", "/test/things", "", `{"a":1}`, "k"))
	})
}

func TestIdempotencyConcurrent(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newIdemEnv(t, db)
		e.setReply(func(n int64, w http.ResponseWriter, r *http.Request, body []byte) {
			time.Sleep(200 * time.Millisecond) // long enough for the others to arrive
			writeJSON(w, http.StatusCreated, map[string]any{"n": n})
		})
		const clients = 20
		resps := make([]idemResp, clients)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range resps {
			wg.Go(func() {
				<-start
				// Pairs arrive together, some while the first runs, some after.
				time.Sleep(time.Duration(i%10) * 40 * time.Millisecond)
				resps[i] = e.send("POST", "/test/things", "", `{"same":true}`, "k-race")
			})
		}
		close(start)
		wg.Wait()
		e.wantCalls(1)
		var ran, replayed, busy int
		for _, r := range resps {
			switch {
			case r.status == http.StatusCreated && !r.replayed():
				ran++
				if string(r.body) != "{\"n\":1}\n" {
					t.Errorf("answer %s", r)
				}
			case r.status == http.StatusCreated && string(r.body) == "{\"n\":1}\n":
				replayed++
			case r.status == http.StatusConflict && r.code() == CodeIdempotencyInProgress:
				busy++
				if r.header.Get("Retry-After") == "" {
					t.Errorf("409 %s without Retry-After", CodeIdempotencyInProgress)
				}
			default:
				t.Errorf("unexpected answer %s", r)
			}
		}
		if ran != 1 || ran+replayed+busy != clients {
			t.Errorf("%d ran, %d replayed, %d in progress; want 1 run of %d", ran, replayed, busy, clients)
		}
		t.Logf("%d ran, %d replayed, %d in progress", ran, replayed, busy)
		if r := e.send("POST", "/test/things", "", `{"same":true}`, "k-race"); !r.replayed() || r.status != http.StatusCreated {
			t.Errorf("after the race: %s", r)
		}
	})
}

// TestIdempotencyNotStored: answers that are not final for the request leave
// the key free, so a retry runs the handler again.
func TestIdempotencyNotStored(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newIdemEnv(t, db)
		for i, fail := range []func(w http.ResponseWriter){
			func(w http.ResponseWriter) { writeError(w, http.StatusInternalServerError, CodeInternal, "boom") },
			func(w http.ResponseWriter) { writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "later") },
			func(w http.ResponseWriter) { panic("handler bug") },
			func(w http.ResponseWriter) {
				writeError(w, http.StatusConflict, "conflict", "wallet is syncing; retry")
			},
			func(w http.ResponseWriter) { writeError(w, http.StatusTooManyRequests, "rate_limited", "slow down") },
			func(w http.ResponseWriter) { writeError(w, http.StatusForbidden, CodeForbidden, "no") },
		} {
			key := fmt.Sprintf("k-%d", i)
			e.calls.Store(0)
			e.setReply(func(n int64, w http.ResponseWriter, r *http.Request, body []byte) {
				if n == 1 {
					fail(w)
					return
				}
				writeJSON(w, http.StatusCreated, map[string]any{"n": n})
			})
			r := e.send("POST", "/test/things", "", "x", key)
			if r.status < 400 || r.replayed() {
				t.Fatalf("case %d: first answer %s", i, r)
			}
			retry := e.send("POST", "/test/things", "", "x", key)
			if retry.status != http.StatusCreated || retry.replayed() {
				t.Fatalf("case %d: after %s the retry got %s, want a new run", i, r, retry)
			}
			wantReplay(t, retry, e.send("POST", "/test/things", "", "x", key))
			e.wantCalls(2)
		}
	})
}

// TestIdempotencyLeaseTakeover: a key whose holder outlived its lease is
// taken over by a retry; the old holder's answer still reaches its client
// but is not stored over the new one.
func TestIdempotencyLeaseTakeover(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newIdemEnv(t, db)
		release := make(chan struct{})
		e.setReply(func(n int64, w http.ResponseWriter, r *http.Request, body []byte) {
			if n == 1 {
				<-release
			}
			writeJSON(w, http.StatusCreated, map[string]any{"n": n})
		})
		slow := make(chan idemResp)
		go func() { slow <- e.send("POST", "/test/things", "", "x", "k") }()
		for deadline := time.Now().Add(10 * time.Second); e.calls.Load() == 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the first request never reached the handler")
			}
		}
		wantIdemError(t, e.send("POST", "/test/things", "", "x", "k"), http.StatusConflict, CodeIdempotencyInProgress)
		// A different request with the key is refused even while it runs.
		wantIdemError(t, e.send("POST", "/test/things", "", "y", "k"), http.StatusConflict, CodeIdempotencyKeyReused)

		e.skew.Store(int64(defaultIdempotencyLease + time.Second))
		taken := e.send("POST", "/test/things", "", "x", "k")
		if taken.status != http.StatusCreated || taken.replayed() || string(taken.body) != "{\"n\":2}\n" {
			t.Fatalf("takeover got %s", taken)
		}
		close(release)
		if old := <-slow; old.status != http.StatusCreated || old.replayed() || string(old.body) != "{\"n\":1}\n" {
			t.Fatalf("the first request got %s", old)
		}
		wantReplay(t, taken, e.send("POST", "/test/things", "", "x", "k"))
		e.wantCalls(2)
	})
}

func TestIdempotencyBadKey(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newIdemEnv(t, db)
		for _, keys := range [][]string{
			{""},
			{strings.Repeat("k", 256)},
			{"caf\u00e9"},
			{"tab\there"},
			{"one", "two"},
		} {
			r := e.send("POST", "/test/things", "", "x", keys...)
			wantIdemError(t, r, http.StatusBadRequest, CodeInvalidParameter)
			if !strings.Contains(string(r.body), "Idempotency-Key") {
				t.Errorf("keys %q: the message does not name the header: %s", keys, r.body)
			}
		}
		e.wantCalls(0)
		long := strings.Repeat("k", 255)
		first := e.send("POST", "/test/things", "", "x", long)
		wantReplay(t, first, e.send("POST", "/test/things", "", "x", long))
		spaced := "a key with spaces ~!@#$%^&*()"
		first = e.send("POST", "/test/things", "", "x", spaced)
		wantReplay(t, first, e.send("POST", "/test/things", "", "x", spaced))
		e.wantCalls(2)

		// A route that demands a key.
		wantIdemError(t, e.send("POST", "/test/required", "", "x"), http.StatusBadRequest, CodeIdempotencyKeyRequired)
		e.wantCalls(2)
		first = e.send("POST", "/test/required", "", "x", "k")
		wantReplay(t, first, e.send("POST", "/test/required", "", "x", "k"))
		e.wantCalls(3)

		// Authorization comes first: no key is looked at, and a refusal is
		// not stored.
		readKey := e.apiKey(auth.ScopeRead)
		wantIdemError(t, e.send("POST", "/test/things", readKey, "x", "k-read"), http.StatusForbidden, CodeForbidden)
		wantIdemError(t, e.send("POST", "/test/required", readKey, "x"), http.StatusForbidden, CodeForbidden)
		e.wantCalls(3)
	})
}

func TestIdempotencyPrincipals(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newIdemEnv(t, db)
		admin := e.apiKey(auth.ScopeAdmin)
		a := e.send("POST", "/test/things", "", "x", "shared")
		b := e.send("POST", "/test/things", admin, "x", "shared")
		if a.replayed() || b.replayed() || bytes.Equal(a.body, b.body) {
			t.Fatalf("two API keys share a key: %s, %s", a, b)
		}
		// A different body under the other principal's key is no reuse.
		c := e.send("POST", "/test/other", admin, "y", "other")
		d := e.send("POST", "/test/things", "", "x", "other")
		if c.status != http.StatusCreated || d.status != http.StatusCreated {
			t.Fatalf("got %s, %s", c, d)
		}
		wantReplay(t, a, e.send("POST", "/test/things", "", "x", "shared"))
		wantReplay(t, b, e.send("POST", "/test/things", admin, "x", "shared"))
		e.wantCalls(4)

		// Every token of a wallet shares the wallet's keys; an API key on the
		// same wallet has its own.
		path := "/test/wallets/" + idemWallet + "/things"
		t1, t2 := e.walletToken(idemWallet), e.walletToken(idemWallet)
		w1 := e.send("POST", path, t1, "x", "w")
		if w1.status != http.StatusCreated {
			t.Fatalf("wallet token: %s", w1)
		}
		wantReplay(t, w1, e.send("POST", path, t2, "x", "w"))
		if r := e.send("POST", path, admin, "x", "w"); r.replayed() || r.status != http.StatusCreated {
			t.Fatalf("API key after a wallet token: %s", r)
		}
		e.wantCalls(6)
	})
}

func TestIdempotencyScope(t *testing.T) {
	for _, c := range []struct {
		p    *auth.Principal
		want string
	}{
		{nil, ""},
		{&auth.Principal{Kind: auth.KindAPIKey, KeyID: "0123456789ab", Scope: auth.ScopeWrite}, "key:0123456789ab"},
		{&auth.Principal{Kind: auth.KindWalletToken, WalletID: idemWallet}, "wallet:" + idemWallet},
		{&auth.Principal{Kind: auth.KindAPIKey}, ""},
		{&auth.Principal{Kind: "other", KeyID: "x", WalletID: "y"}, ""},
	} {
		if got := idempotencyScope(c.p); got != c.want {
			t.Errorf("idempotencyScope(%+v) = %q, want %q", c.p, got, c.want)
		}
	}
}

// TestIdempotencyExpiry: a key older than the retention counts as unused,
// and PruneIdempotencyKeys deletes such keys unless a request holds one.
func TestIdempotencyExpiry(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		e := newIdemEnv(t, db)
		e.skew.Store(int64(-IdempotencyKeyRetention - time.Hour))
		e.send("POST", "/test/things", "", "x", "old")
		e.send("POST", "/test/things", "", "x", "old-2")
		e.skew.Store(0)
		recent := e.send("POST", "/test/things", "", "x", "recent")
		// An expired key is free again, even for another request.
		if r := e.send("POST", "/test/things", "", "y", "old"); r.status != http.StatusCreated || r.replayed() {
			t.Fatalf("reusing an expired key: %s", r)
		}
		e.wantCalls(4)
		// A request that took a key long ago still holds it (its lease was
		// just renewed by a takeover, say).
		now := time.Now()
		err := db.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO idempotency_keys
				(principal, key, method, path, fingerprint, state, created_at, locked_until)
				VALUES ('key:000000000000', 'held', 'POST', '/test/things', 'f', 'in_progress', $1, $2)`,
				now.Add(-48*time.Hour).Unix(), now.Add(time.Minute).Unix())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		n, err := PruneIdempotencyKeys(ctx, db, now.Add(-IdempotencyKeyRetention))
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("pruned %d keys, want 1 (old-2)", n)
		}
		var left []string
		rows, err := db.QueryContext(ctx, `SELECT key FROM idempotency_keys ORDER BY key`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				t.Fatal(err)
			}
			left = append(left, k)
		}
		if got := strings.Join(left, ","); got != "held,old,recent" {
			t.Errorf("keys left %s, want held,old,recent", got)
		}
		wantReplay(t, recent, e.send("POST", "/test/things", "", "x", "recent"))
	})
}

// TestIdempotencyRealRoute drives POST /v1/wallets, which answers a bad
// descriptor with a 400 without needing a node, and holds the answers
// against openapi.json.
func TestIdempotencyRealRoute(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		params, err := chain.Lookup(chain.BTC, chain.Regtest)
		if err != nil {
			t.Fatal(err)
		}
		log := events.NewLog(db)
		logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
		ws := wallet.New(db, params, log, nil, nil, wallet.Config{}, logger)
		s := NewServer(Deps{DB: db, Events: log, Wallets: ws, Logger: logger, Coin: "btc", Network: "regtest"})
		key, _, err := auth.CreateAPIKey(ctx, db, auth.ScopeWrite, "test")
		if err != nil {
			t.Fatal(err)
		}
		call := func(body, idemKey string) idemResp {
			t.Helper()
			req := httptest.NewRequest("POST", "/v1/wallets", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+key)
			if idemKey != "-" {
				req.Header.Set(IdempotencyKeyHeader, idemKey)
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			checkResponse(t, "POST", "/v1/wallets", rec.Code, rec.Body.Bytes())
			return idemResp{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
		}
		first := call(`{"descriptor":"wpkh(nonsense)"}`, "reg-1")
		wantIdemError(t, first, http.StatusBadRequest, "invalid_descriptor")
		wantReplay(t, first, call(`{"descriptor":"wpkh(nonsense)"}`, "reg-1"))
		wantIdemError(t, call(`{"descriptor":"wpkh(other)"}`, "reg-1"), http.StatusConflict, CodeIdempotencyKeyReused)
		wantIdemError(t, call(`{}`, "bad\x01key"), http.StatusBadRequest, CodeInvalidParameter)
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM idempotency_keys WHERE state = 'done' AND status = 400`).Scan(&n); err != nil || n != 1 {
			t.Errorf("%d stored answers (%v), want 1", n, err)
		}
	})
}

// TestIdempotencyRouteTable: only routes the layer applies to set a mode,
// and every route it applies to documents its answers.
func TestIdempotencyRouteTable(t *testing.T) {
	doc := openAPISpec()
	schemas, _ := deref(doc["components"])["schemas"].(map[string]any)
	codes := brief(deref(deref(deref(schemas["Error"])["properties"].(map[string]any)["error"])["properties"].(map[string]any)["code"])["enum"])
	for _, code := range []string{CodeIdempotencyKeyRequired, CodeIdempotencyKeyReused, CodeIdempotencyInProgress} {
		if !strings.Contains(codes, `"`+code+`"`) {
			t.Errorf("error code %s is missing from the Error schema", code)
		}
	}
	params, _ := deref(doc["components"])["parameters"].(map[string]any)
	if p := deref(params["IdempotencyKey"]); p["in"] != "header" || p["name"] != IdempotencyKeyHeader {
		t.Errorf("components.parameters.IdempotencyKey = %v", p)
	}
	for _, rt := range routes {
		eligible := rt.access != public && rt.method != http.MethodGet
		if rt.idempotency != idempotencyOptional && !eligible {
			t.Errorf("%s sets an idempotency mode, but the layer does not apply to it", rt.pattern())
		}
		if !rt.usesIdempotency() {
			continue
		}
		op := operation(rt.method, rt.path)
		responses, _ := op["responses"].(map[string]any)
		for _, status := range []string{"400", "409"} {
			desc, _ := deref(responses[status])["description"].(string)
			if !strings.Contains(desc, "idempotency") && !strings.Contains(desc, "Idempotency") {
				t.Errorf("%s: response %s does not describe the Idempotency-Key answers: %q", rt.pattern(), status, desc)
			}
		}
	}
}

package api

// The webhook routes over a real database (SQLite, and PostgreSQL when
// COFFER_TEST_POSTGRES is set) with the webhook service running: a receiver
// that verifies the Standard Webhooks signature with its own HMAC code (not
// the webhook package's) gets the events in order; retries, a failed
// delivery and its redelivery, secret rotation with both secrets signing,
// disabling and enabling, deletion; bad input and the wrong credentials
// answered with their 4xx while nothing changes. Every answer is checked
// against openapi.json.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil/base58"

	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/webhook"
)

// TestWebhookSchemasMatchTypes holds the webhook schemas against the Go
// types the server encodes and decodes, as TestOpenAPISchemasMatchTypes does
// for the others.
func TestWebhookSchemasMatchTypes(t *testing.T) {
	for name, v := range map[string]any{
		"WebhookEndpoint": webhook.Endpoint{}, "WebhookList": WebhookList{}, "WebhookDelivery": webhook.Delivery{},
		"WebhookDeliveryPage": WebhookDeliveryPage{}, "WebhookSecret": webhook.SecretInfo{}, "WebhookAttempt": webhook.Attempt{},
	} {
		compareType(t, name, reflect.TypeOf(v), map[string]any{"$ref": "#/components/schemas/" + name}, true)
	}
	for name, v := range map[string]any{"WebhookEndpointRequest": webhook.EndpointRequest{}, "WebhookEndpointUpdate": webhook.EndpointUpdate{}} {
		compareType(t, name, reflect.TypeOf(v), map[string]any{"$ref": "#/components/schemas/" + name}, false)
	}
}

// ---- a receiver written from the Standard Webhooks specification ----

// whVerify checks a delivery as the specification says: the signed content
// is "<webhook-id>.<webhook-timestamp>.<body>", the key the base64-decoded
// part of a secret after whsec_, the signature header space-separated
// "v1,<base64 HMAC-SHA256>" entries of which one must match (in constant
// time), and the timestamp within 5 minutes of the receiver's clock. It
// returns how many signatures the header held.
func whVerify(secrets []string, h http.Header, body []byte, now time.Time) (int, error) {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return 0, errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("webhook-timestamp %q is not an integer", ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return 0, fmt.Errorf("webhook-timestamp %s is %s from now", ts, d)
	}
	entries := strings.Fields(sigs)
	for _, secret := range secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		if err != nil {
			return 0, fmt.Errorf("secret %q: %v", secret, err)
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + ts + "."))
		mac.Write(body)
		want := mac.Sum(nil)
		for _, e := range entries {
			version, sig, ok := strings.Cut(e, ",")
			if !ok || version != "v1" {
				continue
			}
			if got, err := base64.StdEncoding.DecodeString(sig); err == nil && hmac.Equal(got, want) {
				return len(entries), nil
			}
		}
	}
	return len(entries), errors.New("no signature matches")
}

// whDelivered is a request the receiver verified and accepted.
type whDelivered struct {
	webhookID string
	sigs      int // signatures in the header
	body      []byte
	event     events.Event
	header    http.Header
}

// whReceiver accepts verified deliveries with 200 "ok", unless told to fail.
type whReceiver struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	secrets  []string // accepted secrets
	failNext int      // answer 500 to this many more requests
	down     bool     // answer 500 to every request
	requests int
	got      []whDelivered
	bad      []string // verification failures
}

func newWHReceiver(t *testing.T) *whReceiver {
	rc := &whReceiver{t: t}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *whReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.requests++
	if err != nil {
		rc.bad = append(rc.bad, "reading the body: "+err.Error())
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	sigs, verr := whVerify(rc.secrets, r.Header, body, time.Now())
	switch {
	case r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json":
		verr = fmt.Errorf("%s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
	case verr == nil:
		var ev events.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			verr = fmt.Errorf("body %s: %v", body, err)
		} else if want := "evt_" + strconv.FormatInt(ev.ID, 10); r.Header.Get("webhook-id") != want {
			verr = fmt.Errorf("webhook-id %q for event %d, want %q", r.Header.Get("webhook-id"), ev.ID, want)
		}
	}
	if verr != nil {
		rc.bad = append(rc.bad, verr.Error())
		http.Error(w, "verification failed", http.StatusBadRequest)
		return
	}
	if rc.down || rc.failNext > 0 {
		if rc.failNext > 0 {
			rc.failNext--
		}
		http.Error(w, "receiver down", http.StatusInternalServerError)
		return
	}
	var ev events.Event
	json.Unmarshal(body, &ev)
	rc.got = append(rc.got, whDelivered{webhookID: r.Header.Get("webhook-id"), sigs: sigs, body: body, event: ev, header: r.Header.Clone()})
	io.WriteString(w, "ok")
}

func (rc *whReceiver) set(f func(rc *whReceiver)) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	f(rc)
}

// delivered returns a copy of what was accepted so far, failing the test
// on any verification failure.
func (rc *whReceiver) delivered() []whDelivered {
	rc.t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.bad) > 0 {
		rc.t.Fatalf("the receiver refused deliveries: %q", rc.bad)
	}
	return slices.Clone(rc.got)
}

// ---- the API side ----

type whEnv struct {
	t                  *testing.T
	db                 *store.DB
	log                *events.Log
	svc                *webhook.Service
	ts                 *httptest.Server
	read, write, admin string
}

type whResp struct {
	status int
	header http.Header
	body   []byte
}

func (r whResp) String() string { return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body)) }

func newWHEnv(t *testing.T, db *store.DB, cfg webhook.Config, run bool) *whEnv {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	e := &whEnv{t: t, db: db, log: events.NewLog(db)}
	e.svc = webhook.New(db, e.log, cfg, logger)
	e.ts = httptest.NewServer(NewServer(Deps{DB: db, Events: e.log, Webhooks: e.svc, Logger: logger}))
	t.Cleanup(e.ts.Close)
	for _, k := range []struct {
		scope auth.Scope
		to    *string
	}{{auth.ScopeRead, &e.read}, {auth.ScopeWrite, &e.write}, {auth.ScopeAdmin, &e.admin}} {
		key, _, err := auth.CreateAPIKey(context.Background(), db, k.scope, "webhook test")
		if err != nil {
			t.Fatal(err)
		}
		*k.to = key
	}
	if run {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.svc.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("webhook Run: %v", err)
			}
		})
	}
	return e
}

// call sends a request with a credential ("" for none), extra headers
// ("Name: value") and a JSON body (a string is sent as is), and checks the
// answer against the document's pattern.
func (e *whEnv) call(method, path, pattern, credential string, body any, headers ...string) whResp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.ts.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if credential != "" {
		req.Header.Set("Authorization", "Bearer "+credential)
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ": ")
		req.Header.Set(name, value)
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
	checkResponse(e.t, method, pattern, resp.StatusCode, b)
	return whResp{status: resp.StatusCode, header: resp.Header, body: b}
}

// ok is call as the admin that fails unless the status is want, decoding
// the answer into out.
func (e *whEnv) ok(want int, method, path, pattern string, body, out any) whResp {
	e.t.Helper()
	r := e.call(method, path, pattern, e.admin, body)
	if r.status != want {
		e.t.Fatalf("%s %s: %s; want %d", method, path, r, want)
	}
	if out != nil {
		reflect.ValueOf(out).Elem().SetZero()
		if err := json.Unmarshal(r.body, out); err != nil {
			e.t.Fatalf("%s %s: decoding %s: %v", method, path, r.body, err)
		}
	}
	return r
}

// fails is call that fails unless the answer is status with code.
func (e *whEnv) fails(status int, code, method, path, pattern, credential string, body any) {
	e.t.Helper()
	r := e.call(method, path, pattern, credential, body)
	var er ErrorResponse
	if r.status != status || json.Unmarshal(r.body, &er) != nil || er.Error.Code != code {
		e.t.Errorf("%s %s: %s; want %d %s", method, path, r, status, code)
	}
}

// appendEvent writes an event to the log and returns its id.
func (e *whEnv) appendEvent(typ, walletID string, data any) int64 {
	e.t.Helper()
	var id int64
	err := e.db.InTx(context.Background(), func(tx *store.Tx) error {
		var err error
		id, err = e.log.Append(context.Background(), tx, typ, walletID, data)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *whEnv) deliveries(id, query string) WebhookDeliveryPage {
	e.t.Helper()
	var page WebhookDeliveryPage
	e.ok(200, "GET", "/v1/webhooks/"+id+"/deliveries"+query, "/v1/webhooks/{id}/deliveries", nil, &page)
	return page
}

// settle waits until the endpoint has no pending delivery: the receiver may
// have an attempt's answer before Coffer has recorded it.
func (e *whEnv) settle(id string) {
	e.t.Helper()
	whWait(e.t, 10*time.Second, "the deliveries to be recorded", func() (bool, string) {
		n := len(e.deliveries(id, "?status=pending").Deliveries)
		return n == 0, fmt.Sprintf("%d pending", n)
	})
}

func (e *whEnv) count(table string) int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// whWait polls cond until it holds, failing after timeout with what it
// last said.
func whWait(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not after %s; last: %s", what, timeout, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitDelivered waits until the receiver accepted n deliveries in all and
// returns the ones after the first skip.
func waitDelivered(t *testing.T, rc *whReceiver, skip, n int) []whDelivered {
	t.Helper()
	var got []whDelivered
	whWait(t, 15*time.Second, fmt.Sprintf("%d deliveries", n), func() (bool, string) {
		got = rc.delivered()
		return len(got) >= n, fmt.Sprintf("%d delivered", len(got))
	})
	if len(got) != n {
		t.Fatalf("%d deliveries, want %d: %v", len(got), n, webhookIDs(got))
	}
	return got[skip:]
}

func webhookIDs(ds []whDelivered) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.webhookID)
	}
	return out
}

func evtIDs(ids ...int64) []string {
	var out []string
	for _, id := range ids {
		out = append(out, webhook.WebhookID(id))
	}
	return out
}

// whWalletToken makes a full token of walletID as IssueWalletToken stores
// one (the table has no foreign key to wallets).
func whWalletToken(t *testing.T, db *store.DB, walletID string) string {
	t.Helper()
	secret := make([]byte, 32)
	rand.Read(secret)
	sum := sha256.Sum256(secret)
	now := time.Now().Unix()
	err := db.InTx(context.Background(), func(tx *store.Tx) error {
		_, err := tx.ExecContext(context.Background(), `INSERT INTO wallet_tokens (token_hash, wallet_id, mode, created_at, expires_at)
			VALUES ($1, $2, 'full', $3, $4)`, hex.EncodeToString(sum[:]), walletID, now, now+3600)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return "cwt_" + base58.Encode(secret)
}

func TestWebhooks(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newWHEnv(t, db, webhook.Config{
			Schedule: []time.Duration{0, 20 * time.Millisecond, 50 * time.Millisecond},
			Timeout:  2 * time.Second,
		}, true)
		rc := newWHReceiver(t)

		// Register an endpoint for blocks and alerts.
		var ep webhook.Endpoint
		r := e.ok(201, "POST", "/v1/webhooks", "/v1/webhooks", map[string]any{
			"url": rc.srv.URL + "/hooks", "event_types": []string{"block.*", "alert*"}, "description": "test receiver",
		}, &ep)
		if cc := r.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q on the answer holding the secret, want no-store", cc)
		}
		if !strings.HasPrefix(ep.Secret, "whsec_") || !strings.HasPrefix(ep.ID, "whk_") || !ep.Enabled || len(ep.Secrets) != 1 ||
			ep.URL != rc.srv.URL+"/hooks" || !slices.Equal(ep.EventTypes, []string{"block.*", "alert*"}) || ep.Description != "test receiver" {
			t.Fatalf("created %+v", ep)
		}
		secret1 := ep.Secret
		rc.set(func(rc *whReceiver) { rc.secrets = []string{secret1} })
		base := "/v1/webhooks/" + ep.ID

		var list WebhookList
		e.ok(200, "GET", "/v1/webhooks", "/v1/webhooks", nil, &list)
		if len(list.Webhooks) != 1 || list.Webhooks[0].ID != ep.ID || list.Webhooks[0].Secret != "" {
			t.Fatalf("list %s", e.call("GET", "/v1/webhooks", "/v1/webhooks", e.admin, nil))
		}
		var got webhook.Endpoint
		if r := e.ok(200, "GET", base, "/v1/webhooks/{id}", nil, &got); bytes.Contains(r.body, []byte(secret1)) || got.Secret != "" {
			t.Fatalf("GET answers the secret: %s", r.body)
		}

		// Events in order; a type outside the filter is left out.
		b1 := e.appendEvent(events.BlockConnected, "", map[string]any{"height": 1})
		e.appendEvent(events.TxSeen, "", map[string]any{"txid": strings.Repeat("ab", 32)})
		b2 := e.appendEvent(events.BlockConnected, "", map[string]any{"height": 2})
		al := e.appendEvent(webhook.EventAlert, "", map[string]any{"kind": "test", "message": "look"})
		b3 := e.appendEvent(events.BlockDisconnected, "", map[string]any{"height": 2})
		ds := waitDelivered(t, rc, 0, 4)
		if ids := webhookIDs(ds); !slices.Equal(ids, evtIDs(b1, b2, al, b3)) {
			t.Fatalf("delivered %v, want %v in this order", ids, evtIDs(b1, b2, al, b3))
		}
		// The body is the event as GET /v1/events answers it.
		var evs EventsResponse
		r = e.ok(200, "GET", fmt.Sprintf("/v1/events?after=%d&limit=1", b2-1), "/v1/events", nil, &evs)
		want, _ := json.Marshal(evs.Events[0])
		if !bytes.Equal(ds[1].body, want) {
			t.Errorf("delivered body %s, GET /v1/events has %s", ds[1].body, want)
		}
		if ds[0].sigs != 1 || ds[0].header.Get("User-Agent") == "" {
			t.Errorf("headers %v", ds[0].header)
		}
		// The receiver's verifier refuses a tampered body, a stale
		// timestamp and another secret, so its acceptance above means
		// something.
		d := ds[0]
		if _, err := whVerify([]string{secret1}, d.header, append([]byte(" "), d.body...), time.Now()); err == nil {
			t.Error("a tampered body verified")
		}
		if _, err := whVerify([]string{secret1}, d.header, d.body, time.Now().Add(6*time.Minute)); err == nil {
			t.Error("a stale timestamp verified")
		}
		if _, err := whVerify([]string{"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 32))}, d.header, d.body, time.Now()); err == nil {
			t.Error("another secret verified")
		}

		e.settle(ep.ID)
		page := e.deliveries(ep.ID, "")
		if len(page.Deliveries) != 4 || page.NextBefore != 0 {
			t.Fatalf("deliveries %+v", page)
		}
		for i, dl := range page.Deliveries {
			wantEvent := []int64{b3, al, b2, b1}[i] // newest first
			if dl.EventID != wantEvent || dl.WebhookID != webhook.WebhookID(wantEvent) || dl.Status != webhook.StatusSucceeded ||
				dl.AttemptCount != 1 || len(dl.Attempts) != 1 || !dl.Attempts[0].Succeeded || dl.Attempts[0].StatusCode != 200 ||
				dl.Attempts[0].Response != "ok" || dl.LastStatusCode != 200 || dl.NextAttemptAt != nil || dl.Redelivery {
				t.Errorf("delivery %d: %+v", i, dl)
			}
		}
		// Paging and the status filter.
		p1 := e.deliveries(ep.ID, "?limit=3")
		p2 := e.deliveries(ep.ID, fmt.Sprintf("?limit=3&before=%d", p1.NextBefore))
		if len(p1.Deliveries) != 3 || p1.NextBefore != p1.Deliveries[2].ID || len(p2.Deliveries) != 1 || p2.NextBefore != 0 ||
			p2.Deliveries[0].EventID != b1 {
			t.Errorf("pages %+v / %+v", p1, p2)
		}
		if n := len(e.deliveries(ep.ID, "?status=succeeded").Deliveries); n != 4 {
			t.Errorf("%d succeeded, want 4", n)
		}
		if n := len(e.deliveries(ep.ID, "?status=pending").Deliveries); n != 0 {
			t.Errorf("%d pending, want 0", n)
		}

		// Down for two attempts: the third, on the schedule, succeeds.
		rc.set(func(rc *whReceiver) { rc.failNext = 2 })
		b4 := e.appendEvent(events.BlockConnected, "", map[string]any{"height": 3})
		ds = waitDelivered(t, rc, 4, 5)
		if ds[0].webhookID != webhook.WebhookID(b4) {
			t.Fatalf("delivered %v", webhookIDs(ds))
		}
		e.settle(ep.ID)
		dl := e.deliveries(ep.ID, "?limit=1").Deliveries[0]
		if dl.EventID != b4 || dl.Status != webhook.StatusSucceeded || dl.AttemptCount != 3 || len(dl.Attempts) != 3 ||
			dl.Attempts[0].StatusCode != 500 || dl.Attempts[0].Succeeded || dl.Attempts[0].Error != "HTTP 500" ||
			dl.Attempts[1].StatusCode != 500 || !dl.Attempts[2].Succeeded || dl.LastStatusCode != 200 || dl.LastLatencyMS == nil {
			t.Fatalf("retried delivery %+v", dl)
		}

		// Down for every attempt: failed; then redelivered.
		rc.set(func(rc *whReceiver) { rc.down = true })
		b5 := e.appendEvent(events.BlockConnected, "", map[string]any{"height": 4})
		var failed *webhook.Delivery
		whWait(t, 15*time.Second, "a failed delivery", func() (bool, string) {
			p := e.deliveries(ep.ID, "?status=failed")
			if len(p.Deliveries) == 0 {
				return false, "none failed yet"
			}
			failed = p.Deliveries[0]
			return true, ""
		})
		if failed.EventID != b5 || failed.AttemptCount != 3 || len(failed.Attempts) != 3 || failed.NextAttemptAt != nil ||
			failed.LastError != "HTTP 500" || failed.LastStatusCode != 500 {
			t.Fatalf("failed delivery %+v", failed)
		}
		rc.set(func(rc *whReceiver) { rc.down = false })
		var re webhook.Delivery
		e.ok(202, "POST", fmt.Sprintf("%s/deliveries/%d/redeliver", base, failed.ID), "/v1/webhooks/{id}/deliveries/{did}/redeliver", nil, &re)
		if re.ID == failed.ID || re.EventID != b5 || re.WebhookID != failed.WebhookID || !re.Redelivery ||
			(re.Status != webhook.StatusPending && re.Status != webhook.StatusSucceeded) {
			t.Fatalf("redelivery %+v", re)
		}
		ds = waitDelivered(t, rc, 5, 6)
		if ds[0].webhookID != webhook.WebhookID(b5) {
			t.Fatalf("redelivered %v", webhookIDs(ds))
		}
		// A succeeded delivery can be sent again too, with its webhook-id.
		first := e.deliveries(ep.ID, "?status=succeeded&limit=1000").Deliveries
		oldest := first[len(first)-1]
		e.ok(202, "POST", fmt.Sprintf("%s/deliveries/%d/redeliver", base, oldest.ID), "/v1/webhooks/{id}/deliveries/{did}/redeliver", nil, &re)
		if ds = waitDelivered(t, rc, 6, 7); ds[0].webhookID != webhook.WebhookID(b1) {
			t.Fatalf("redelivered %v, want %s again", webhookIDs(ds), webhook.WebhookID(b1))
		}
		e.settle(ep.ID)
		if p := e.deliveries(ep.ID, ""); len(p.Deliveries) != 8 || !p.Deliveries[0].Redelivery || p.Deliveries[0].EventID != b1 {
			t.Fatalf("deliveries after the redeliveries: %d, newest %+v", len(p.Deliveries), p.Deliveries[0])
		}

		// Rotation: a new secret, once; both sign during the overlap.
		r = e.ok(200, "PATCH", base, "/v1/webhooks/{id}", map[string]any{"rotate_secret": true}, &got)
		if cc := r.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q on the answer holding the new secret", cc)
		}
		secret2 := got.Secret
		if !strings.HasPrefix(secret2, "whsec_") || secret2 == secret1 || len(got.Secrets) != 2 || got.Secrets[0].ExpiresAt != nil ||
			got.Secrets[1].ExpiresAt == nil || time.Until(*got.Secrets[1].ExpiresAt) < 23*time.Hour {
			t.Fatalf("rotated %+v", got)
		}
		rc.set(func(rc *whReceiver) { rc.secrets = []string{secret2} })
		b6 := e.appendEvent(events.BlockConnected, "", map[string]any{"height": 5})
		if ds = waitDelivered(t, rc, 7, 8); ds[0].webhookID != webhook.WebhookID(b6) || ds[0].sigs != 2 {
			t.Fatalf("after rotation: %v with %d signatures, want %s with 2", webhookIDs(ds), ds[0].sigs, webhook.WebhookID(b6))
		}
		rc.set(func(rc *whReceiver) { rc.secrets = []string{secret1} }) // the old one still signs
		b7 := e.appendEvent(events.BlockConnected, "", map[string]any{"height": 6})
		if ds = waitDelivered(t, rc, 8, 9); ds[0].webhookID != webhook.WebhookID(b7) {
			t.Fatalf("with the old secret: %v", webhookIDs(ds))
		}
		rc.set(func(rc *whReceiver) { rc.secrets = []string{secret2} })
		if r := e.ok(200, "GET", base, "/v1/webhooks/{id}", nil, &got); got.Secret != "" || r.header.Get("Cache-Control") == "no-store" {
			t.Errorf("GET after rotation: %s", r.body)
		}

		// Disabled: nothing is queued; enabled: delivery resumes.
		e.ok(200, "PATCH", base, "/v1/webhooks/{id}", map[string]any{"enabled": false}, &got)
		if got.Enabled {
			t.Fatalf("still enabled: %+v", got)
		}
		before := len(e.deliveries(ep.ID, "?limit=1000").Deliveries)
		b8 := e.appendEvent(events.BlockConnected, "", map[string]any{"height": 7})
		whWait(t, 10*time.Second, "the dispatcher to pass the event", func() (bool, string) {
			var cur int64
			if err := db.QueryRowContext(context.Background(), `SELECT last_event_id FROM webhook_cursor`).Scan(&cur); err != nil {
				t.Fatal(err)
			}
			return cur >= b8, fmt.Sprintf("cursor at %d", cur)
		})
		if n := len(e.deliveries(ep.ID, "?limit=1000").Deliveries); n != before {
			t.Fatalf("%d deliveries after an event while disabled, want %d", n, before)
		}
		e.ok(200, "PATCH", base, "/v1/webhooks/{id}", map[string]any{"enabled": true, "description": "", "event_types": []string{"block.connected"}}, &got)
		if !got.Enabled || got.Description != "" || !slices.Equal(got.EventTypes, []string{"block.connected"}) || got.DisabledReason != "" {
			t.Fatalf("re-enabled %+v", got)
		}
		e.appendEvent(events.BlockDisconnected, "", map[string]any{"height": 7}) // outside the new filter
		b9 := e.appendEvent(events.BlockConnected, "", map[string]any{"height": 8})
		if ds = waitDelivered(t, rc, 9, 10); ds[0].webhookID != webhook.WebhookID(b9) {
			t.Fatalf("after re-enabling: %v, want %s (and never %s)", webhookIDs(ds), webhook.WebhookID(b9), webhook.WebhookID(b8))
		}
		e.settle(ep.ID)

		// Metrics count the attempts.
		m := e.call("GET", "/metrics", "/metrics", "", nil)
		for _, want := range []string{"coffer_webhook_attempts_total ", "coffer_webhook_deliveries_failed_total 1\n"} {
			if !strings.Contains(string(m.body), want) {
				t.Errorf("metrics lack %q", want)
			}
		}
		if strings.Contains(string(m.body), "coffer_webhook_attempts_total 0\n") {
			t.Error("coffer_webhook_attempts_total is 0")
		}

		whBadInput(t, e, ep.ID)

		// An Idempotency-Key replays the answer, secret included, and makes
		// one endpoint.
		n := e.count("webhook_endpoints")
		body := `{"url":"https://app.example/hooks"}`
		r1 := e.call("POST", "/v1/webhooks", "/v1/webhooks", e.admin, body, IdempotencyKeyHeader+": wh-1")
		r2 := e.call("POST", "/v1/webhooks", "/v1/webhooks", e.admin, body, IdempotencyKeyHeader+": wh-1")
		if r1.status != 201 || r2.status != 201 || !bytes.Equal(r1.body, r2.body) || r2.header.Get(IdempotentReplayedHeader) != "true" ||
			e.count("webhook_endpoints") != n+1 {
			t.Fatalf("idempotent create: %s / %s (replayed %q), %d endpoints, want %d", r1, r2, r2.header.Get(IdempotentReplayedHeader),
				e.count("webhook_endpoints"), n+1)
		}
		var extra webhook.Endpoint
		json.Unmarshal(r1.body, &extra)
		if r := e.call("DELETE", "/v1/webhooks/"+extra.ID, "/v1/webhooks/{id}", e.admin, nil); r.status != 204 || len(r.body) != 0 {
			t.Fatalf("DELETE: %s", r)
		}

		// Delete: gone with its deliveries and secrets.
		if r := e.call("DELETE", base, "/v1/webhooks/{id}", e.admin, nil); r.status != 204 {
			t.Fatalf("DELETE: %s", r)
		}
		e.fails(404, CodeNotFound, "GET", base, "/v1/webhooks/{id}", e.admin, nil)
		e.fails(404, CodeNotFound, "GET", base+"/deliveries", "/v1/webhooks/{id}/deliveries", e.admin, nil)
		e.fails(404, CodeNotFound, "DELETE", base, "/v1/webhooks/{id}", e.admin, nil)
		for _, table := range []string{"webhook_endpoints", "webhook_secrets", "webhook_deliveries", "webhook_attempts"} {
			if n := e.count(table); n != 0 {
				t.Errorf("%d rows left in %s", n, table)
			}
		}
		e.ok(200, "GET", "/v1/webhooks", "/v1/webhooks", nil, &list)
		if len(list.Webhooks) != 0 {
			t.Errorf("list after delete: %+v", list)
		}
	})
}

// whBadInput sends bad requests about endpoint id: each must get its 4xx
// and change nothing.
func whBadInput(t *testing.T, e *whEnv, id string) {
	t.Helper()
	snapshot := func() string {
		r := e.call("GET", "/v1/webhooks", "/v1/webhooks", e.admin, nil)
		d := e.call("GET", "/v1/webhooks/"+id+"/deliveries?limit=1000", "/v1/webhooks/{id}/deliveries", e.admin, nil)
		return fmt.Sprintf("%s\n%s\n%d %d %d %d", r.body, d.body, e.count("webhook_endpoints"), e.count("webhook_secrets"),
			e.count("webhook_deliveries"), e.count("webhook_attempts"))
	}
	before := snapshot()
	base := "/v1/webhooks/" + id
	const (
		coll   = "/v1/webhooks"
		one    = "/v1/webhooks/{id}"
		dels   = "/v1/webhooks/{id}/deliveries"
		redeli = "/v1/webhooks/{id}/deliveries/{did}/redeliver"
	)
	bad400 := func(method, path, pattern, code string, body any) {
		t.Helper()
		e.fails(400, code, method, path, pattern, e.admin, body)
	}
	for _, u := range []string{"", "   ", "ftp://app.example/x", "http://", "app.example/hooks", "https://app.example/#frag",
		"https://app.example/a b", "https://" + strings.Repeat("a", 2048) + ".example/", "javascript:alert(1)"} {
		bad400("POST", coll, coll, CodeInvalidParameter, map[string]any{"url": u})
		bad400("PATCH", base, one, CodeInvalidParameter, map[string]any{"url": u})
	}
	for _, types := range [][]string{{"Deposit.*"}, {""}, {"deposit.*x"}, {"a b"}, slices.Repeat([]string{"a"}, 101)} {
		bad400("POST", coll, coll, CodeInvalidParameter, map[string]any{"url": "https://app.example/", "event_types": types})
		bad400("PATCH", base, one, CodeInvalidParameter, map[string]any{"event_types": types})
	}
	bad400("POST", coll, coll, CodeInvalidParameter, map[string]any{"url": "https://app.example/", "wallet_id": "no-such-wallet"})
	bad400("PATCH", base, one, CodeInvalidParameter, map[string]any{"wallet_id": "no-such-wallet"})
	bad400("POST", coll, coll, CodeInvalidParameter, map[string]any{"url": "https://app.example/", "description": strings.Repeat("x", 501)})
	bad400("POST", coll, coll, CodeInvalidParameter, map[string]any{"url": "https://app.example/", "description": "nul \x00"})
	bad400("PATCH", base, one, CodeInvalidParameter, map[string]any{"description": "nul \x00"})
	bad400("POST", coll, coll, CodeInvalidJSON, `{"url":"https://app.example/","secret":"whsec_mine"}`)
	bad400("POST", coll, coll, CodeInvalidJSON, `{"url":"https://app.example/","event_types":"deposit.*"}`)
	bad400("POST", coll, coll, CodeInvalidJSON, ``)
	bad400("POST", coll, coll, CodeInvalidJSON, `{"url":"https://app.example/"} {}`)
	bad400("PATCH", base, one, CodeInvalidJSON, `{"enabled":"yes"}`)
	bad400("PATCH", base, one, CodeInvalidJSON, `{"id":"whk_other"}`)
	for _, q := range []string{"?status=done", "?status=SUCCEEDED", "?limit=0", "?limit=1001", "?limit=x", "?before=0", "?before=-1",
		"?before=x", "?before=1&before=2", "?status=%00"} {
		bad400("GET", base+"/deliveries"+q, dels, CodeInvalidParameter, nil)
	}
	bad400("GET", "/v1/webhooks/whk_%00", one, CodeInvalidParameter, nil)

	missing := "/v1/webhooks/whk_000000000000000000000000"
	e.fails(404, CodeNotFound, "GET", missing, one, e.admin, nil)
	e.fails(404, CodeNotFound, "PATCH", missing, one, e.admin, map[string]any{"enabled": true})
	e.fails(404, CodeNotFound, "PATCH", missing, one, e.admin, map[string]any{"rotate_secret": true})
	e.fails(404, CodeNotFound, "DELETE", missing, one, e.admin, nil)
	e.fails(404, CodeNotFound, "GET", missing+"/deliveries", dels, e.admin, nil)
	e.fails(404, CodeNotFound, "POST", missing+"/deliveries/1/redeliver", redeli, e.admin, nil)
	for _, did := range []string{"999999999", "0", "-1", "abc", "1.5", "99999999999999999999"} {
		e.fails(404, CodeNotFound, "POST", base+"/deliveries/"+did+"/redeliver", redeli, e.admin, nil)
	}
	// Another endpoint's delivery is not this one's.
	dl := e.deliveries(id, "?limit=1").Deliveries[0]
	e.fails(404, CodeNotFound, "POST", fmt.Sprintf("%s/deliveries/%d/redeliver", missing, dl.ID), redeli, e.admin, nil)

	// Credentials: admin keys only.
	token := whWalletToken(t, e.db, strings.Repeat("ab", 32))
	for _, c := range []struct {
		method, path, pattern string
		body                  any
	}{
		{"POST", coll, coll, map[string]any{"url": "https://app.example/"}},
		{"GET", coll, coll, nil},
		{"GET", base, one, nil},
		{"PATCH", base, one, map[string]any{"rotate_secret": true}},
		{"DELETE", base, one, nil},
		{"GET", base + "/deliveries", dels, nil},
		{"POST", fmt.Sprintf("%s/deliveries/%d/redeliver", base, dl.ID), redeli, nil},
	} {
		e.fails(401, CodeUnauthenticated, c.method, c.path, c.pattern, "", c.body)
		e.fails(401, CodeUnauthenticated, c.method, c.path, c.pattern, "coffer_nope", c.body)
		for _, cred := range []string{e.read, e.write, token} {
			e.fails(403, CodeForbidden, c.method, c.path, c.pattern, cred, c.body)
		}
	}
	if after := snapshot(); after != before {
		t.Errorf("bad requests changed something:\nbefore %s\nafter  %s", before, after)
	}
}

// TestWebhooksUnavailable: without the webhook service the routes answer
// 503, after the credential check.
func TestWebhooksUnavailable(t *testing.T) {
	db := storetest.Open(t, storetest.NewSQLiteDSN(t))
	srv := httptest.NewServer(NewServer(Deps{DB: db, Events: events.NewLog(db)}))
	t.Cleanup(srv.Close)
	admin, _, err := auth.CreateAPIKey(context.Background(), db, auth.ScopeAdmin, "test")
	if err != nil {
		t.Fatal(err)
	}
	e := &whEnv{t: t, db: db, ts: srv, admin: admin}
	for _, rt := range routes {
		if !strings.HasPrefix(rt.path, "/v1/webhooks") {
			continue
		}
		path := strings.NewReplacer("{id}", "whk_000000000000000000000000", "{did}", "1").Replace(rt.path)
		e.fails(503, CodeUnavailable, rt.method, path, rt.path, admin, "{}")
	}
}

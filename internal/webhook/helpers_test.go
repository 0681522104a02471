package webhook_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/webhook"
)

// ---- a receiver written from the Standard Webhooks specification ----
//
// It does not use the webhook package's signing code: it rebuilds the signed
// content "id.timestamp.body", computes HMAC-SHA256 with the base64-decoded
// part of the whsec_ secret, and accepts the request when one of the
// space-separated "v1,<base64>" entries matches in constant time and the
// timestamp is within the tolerance of its clock.

const tolerance = 5 * time.Minute

var (
	errMissingHeaders = errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	errStale          = errors.New("timestamp outside the tolerance")
	errNoMatch        = errors.New("no signature matches")
)

func verifyStandardWebhook(secrets []string, h http.Header, body []byte, now time.Time) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errMissingHeaders
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("bad timestamp %q", ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return errStale
	}
	for _, secret := range secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		if err != nil {
			return fmt.Errorf("bad secret: %v", err)
		}
		mac := hmac.New(sha256.New, key)
		io.WriteString(mac, id+"."+ts+".")
		mac.Write(body)
		want := mac.Sum(nil)
		for _, entry := range strings.Split(sigs, " ") {
			version, sig, ok := strings.Cut(entry, ",")
			if !ok || version != "v1" {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(sig)
			if err == nil && hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return errNoMatch
}

// wireEvent is the body of a delivery, as a receiver parses it.
type wireEvent struct {
	ID        int64           `json:"id"`
	Type      string          `json:"type"`
	WalletID  string          `json:"wallet_id"`
	Data      json.RawMessage `json:"data"`
	CreatedAt int64           `json:"created_at"`
}

type request struct {
	n      int // 1 for the receiver's first request
	header http.Header
	body   []byte
	event  wireEvent
	path   string
	at     time.Time
	status int // what the receiver answered (-1: closed the connection)
}

// receiver is an HTTP server that verifies every request and dedupes on
// webhook-id, as a Standard Webhooks receiver does.
type receiver struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	secrets   []string
	policy    func(r *request) int // answer: 0 or 2xx success, -1 close the connection, else that status
	reqs      []*request
	firstSeen []int64        // event ids in the order their first 2xx was answered
	acked     map[string]int // 2xx answers per path and webhook-id
	hits      map[string]int // requests per path and webhook-id
	bad       []string       // verification failures
	inflight  int
	changed   chan struct{}
}

func newReceiver(t *testing.T, secrets ...string) *receiver {
	r := &receiver{t: t, secrets: secrets, acked: map[string]int{}, hits: map[string]int{}, changed: make(chan struct{}, 1)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) url() string { return r.srv.URL + "/hook" }

func (r *receiver) setSecrets(s ...string) {
	r.mu.Lock()
	r.secrets = s
	r.mu.Unlock()
}

func (r *receiver) setPolicy(p func(*request) int) {
	r.mu.Lock()
	r.policy = p
	r.mu.Unlock()
}

func (r *receiver) serve(w http.ResponseWriter, hr *http.Request) {
	body, _ := io.ReadAll(hr.Body)
	req := &request{header: hr.Header.Clone(), body: body, path: hr.URL.Path, at: time.Now()}
	r.mu.Lock()
	req.n = len(r.reqs) + 1
	r.reqs = append(r.reqs, req)
	key := req.path + " " + hr.Header.Get("webhook-id")
	r.hits[key]++
	err := verifyStandardWebhook(r.secrets, hr.Header, body, time.Now())
	if err == nil && hr.Header.Get("Content-Type") != "application/json" {
		err = fmt.Errorf("Content-Type %q", hr.Header.Get("Content-Type"))
	}
	if err == nil {
		err = json.Unmarshal(body, &req.event)
	}
	if err == nil && hr.Header.Get("webhook-id") != "evt_"+strconv.FormatInt(req.event.ID, 10) {
		err = fmt.Errorf("webhook-id %s for event %d", hr.Header.Get("webhook-id"), req.event.ID)
	}
	if err != nil {
		r.bad = append(r.bad, fmt.Sprintf("request %d: %v", req.n, err))
		req.status = 400
		r.mu.Unlock()
		w.WriteHeader(400)
		r.notify()
		return
	}
	status := 0
	if r.policy != nil {
		status = r.policy(req)
	}
	r.inflight++
	r.mu.Unlock()

	defer r.notify()
	if status == -1 {
		r.finish(req, -1)
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			c.Close()
		}
		return
	}
	if status == 0 {
		status = 200
	}
	r.finish(req, status)
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"received":%d}`, req.event.ID)
}

// finish records the answer before it is written, so a test that sees the
// sender move on also sees the receiver's books.
func (r *receiver) finish(req *request, status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inflight--
	req.status = status
	if status >= 200 && status < 300 {
		key := req.path + " " + req.header.Get("webhook-id")
		if r.acked[key] == 0 {
			r.firstSeen = append(r.firstSeen, req.event.ID)
		}
		r.acked[key]++
	}
}

func (r *receiver) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// snapshot returns copies of the receiver's books.
func (r *receiver) snapshot() (first []int64, reqs []*request, bad []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.firstSeen), slices.Clone(r.reqs), slices.Clone(r.bad)
}

// waitFirstSeen waits until n distinct events were acknowledged.
func (r *receiver) waitFirstSeen(t *testing.T, n int, within time.Duration) []int64 {
	t.Helper()
	deadline := time.After(within)
	for {
		first, _, bad := r.snapshot()
		if len(bad) > 0 {
			t.Fatalf("receiver refused deliveries: %v", bad)
		}
		if len(first) >= n {
			return first
		}
		select {
		case <-r.changed:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("receiver saw %d of %d events within %s: %v", len(first), n, within, first)
		}
	}
}

// ---- databases, services, events ----

type env struct {
	engine, dsn string
	db          *store.DB
	log         *events.Log
}

// each runs f on a fresh database of every engine (PostgreSQL when
// COFFER_TEST_POSTGRES is set).
func each(t *testing.T, f func(t *testing.T, e *env)) {
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			dsn := storetest.NewDSN(t, engine)
			db := storetest.Open(t, dsn)
			f(t, &env{engine: engine, dsn: dsn, db: db, log: events.NewLog(db)})
		})
	}
}

// reopen returns a second, independent handle on the same database, as
// another process would have.
func (e *env) reopen(t *testing.T) *env {
	db := storetest.Open(t, e.dsn)
	return &env{engine: e.engine, dsn: e.dsn, db: db, log: events.NewLog(db)}
}

func fastConfig() webhook.Config {
	return webhook.Config{
		Timeout:      5 * time.Second,
		Schedule:     []time.Duration{0, 10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond},
		PollInterval: 50 * time.Millisecond,
		LeaseMargin:  time.Second,
	}
}

func (e *env) service(cfg webhook.Config) *webhook.Service {
	return webhook.New(e.db, e.log, cfg, slog.New(slog.DiscardHandler))
}

// start runs svc until the returned stop is called or the test ends.
func start(t *testing.T, svc *webhook.Service) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (e *env) appendEvent(t *testing.T, typ, wallet string, data any) int64 {
	t.Helper()
	var id int64
	err := e.db.InTx(context.Background(), func(tx *store.Tx) error {
		var err error
		id, err = e.log.Append(context.Background(), tx, typ, wallet, data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) appendN(t *testing.T, n int, typ string) []int64 {
	t.Helper()
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = e.appendEvent(t, typ, "", map[string]int{"n": i})
	}
	return ids
}

// addWallet registers a bare wallet row, enough for a wallet filter.
func (e *env) addWallet(t *testing.T, id string) {
	t.Helper()
	err := e.db.InTx(context.Background(), func(tx *store.Tx) error {
		_, err := tx.ExecContext(context.Background(), `INSERT INTO wallets (id, descriptor, receive_desc, change_desc,
			script_type, gap_limit, birthday, status, scan_height, scan_target, created_at, updated_at)
			VALUES ($1, 'd', 'r', 'c', 'p2wpkh', 20, 0, 'ready', 0, 0, 0, 0)`, id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// count runs a COUNT query.
func (e *env) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	if err := e.db.QueryRowContext(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitUntil polls cond until it holds or within passes.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustCreate(t *testing.T, svc *webhook.Service, r webhook.EndpointRequest) *webhook.Endpoint {
	t.Helper()
	ep, err := svc.Create(context.Background(), r)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return ep
}

func increasing(ids []int64) bool {
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			return false
		}
	}
	return true
}

// counts returns, per event id, the requests received and the 2xx answered.
func (r *receiver) counts() (hits, acked map[int64]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	conv := func(m map[string]int) map[int64]int {
		out := map[int64]int{}
		for k, v := range m {
			_, id, _ := strings.Cut(k, " evt_")
			n, _ := strconv.ParseInt(id, 10, 64)
			out[n] += v
		}
		return out
	}
	return conv(r.hits), conv(r.acked)
}

// exec runs a statement in a transaction and returns the rows it affected.
func (e *env) exec(t *testing.T, q string, args ...any) int64 {
	t.Helper()
	var n int64
	err := e.db.InTx(context.Background(), func(tx *store.Tx) error {
		res, err := tx.ExecContext(context.Background(), q, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitDrained waits until no delivery is pending.
func (e *env) waitDrained(t *testing.T) {
	t.Helper()
	waitUntil(t, 10*time.Second, "no pending deliveries", func() bool {
		return e.count(t, `SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'`) == 0
	})
}

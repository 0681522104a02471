package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/api"
	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

type fixture struct {
	db  *store.DB
	log *events.Log
	ts  *httptest.Server
	key string // admin API key the fixture's client sends
}

// bearer adds an API key to every request that carries no credential.
type bearer struct {
	key  string
	next http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" && r.Header.Get("X-API-Key") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+b.key)
	}
	return b.next.RoundTrip(r)
}

// newFixture serves an API over a fresh SQLite store. Fields left zero in d
// get the fixture's DB, event log and logger.
func newFixture(t *testing.T, d api.Deps) *fixture {
	t.Helper()
	f := &fixture{db: storetest.Open(t, storetest.NewSQLiteDSN(t))}
	f.log = events.NewLog(f.db)
	if d.DB == nil {
		d.DB = f.db
	}
	if d.Events == nil {
		d.Events = f.log
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	f.ts = httptest.NewServer(api.NewServer(d))
	t.Cleanup(f.ts.Close)
	key, _, err := auth.CreateAPIKey(context.Background(), f.db, auth.ScopeAdmin, "test")
	if err != nil {
		t.Fatal(err)
	}
	f.key = key
	f.ts.Client().Transport = bearer{key: key, next: f.ts.Client().Transport}
	return f
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (f *fixture) do(t *testing.T, method, path string) response {
	t.Helper()
	req, err := http.NewRequest(method, f.ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return send(t, f.ts.Client(), req)
}

func send(t *testing.T, c *http.Client, req *http.Request) response {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json; body %s", ct, r.body)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// wantError checks the status and the standard error envelope.
func (r response) wantError(t *testing.T, status int, code string) api.Error {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	var e api.ErrorResponse
	r.decode(t, &e)
	if e.Error.Code != code || e.Error.Message == "" {
		t.Fatalf("error %+v, want code %q and a message", e.Error, code)
	}
	return e.Error
}

func appendEvents(t *testing.T, f *fixture, n int) []int64 {
	t.Helper()
	ctx := context.Background()
	var ids []int64
	for i := 0; i < n; i++ {
		err := f.db.InTx(ctx, func(tx *store.Tx) error {
			id, err := f.log.Append(ctx, tx, events.BlockConnected, "", map[string]any{"height": len(ids) + 1})
			if err == nil {
				ids = append(ids, id)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func TestHealthz(t *testing.T) {
	f := newFixture(t, api.Deps{})
	r := f.do(t, "GET", "/healthz")
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var h api.HealthResponse
	r.decode(t, &h)
	if h.Status != "ok" {
		t.Fatalf("body %s", r.body)
	}
	if r.header.Get("X-Request-Id") == "" {
		t.Fatal("no X-Request-Id header")
	}
}

func TestRequestIDKeptOrReplaced(t *testing.T) {
	f := newFixture(t, api.Deps{})
	for sent, keep := range map[string]bool{"proxy-7f3a.1": true, "bad id <script>": false, strings.Repeat("a", 200): false} {
		req, _ := http.NewRequest("GET", f.ts.URL+"/healthz", nil)
		req.Header.Set("X-Request-Id", sent)
		got := send(t, f.ts.Client(), req).header.Get("X-Request-Id")
		if (got == sent) != keep || got == "" {
			t.Errorf("sent %q, got %q (keep=%v)", sent, got, keep)
		}
	}
}

func TestReadyz(t *testing.T) {
	client := regtestNode(t)
	info, err := client.GetBlockchainInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	synced := func(h int64) func() api.ChainStatus {
		return func() api.ChainStatus {
			return api.ChainStatus{NodeReachable: true, NodeHeight: info.Blocks, SyncedHeight: h}
		}
	}

	t.Run("ready", func(t *testing.T) {
		f := newFixture(t, api.Deps{Node: client, Chain: synced(info.Blocks - 1), ReadyLag: 1})
		r := f.do(t, "GET", "/readyz")
		var got api.ReadyResponse
		r.decode(t, &got)
		if r.status != http.StatusOK || got.Status != "ready" || len(got.Reasons) != 0 {
			t.Fatalf("status %d body %s", r.status, r.body)
		}
		if got.NodeHeight == nil || *got.NodeHeight != info.Blocks || got.Lag == nil || *got.Lag != 1 {
			t.Fatalf("heights in %s, node at %d", r.body, info.Blocks)
		}
	})

	closedDB := storetest.Open(t, storetest.NewSQLiteDSN(t))
	closedDB.Close()
	cases := []struct {
		name    string
		deps    api.Deps
		reasons []string
	}{
		{"database closed", api.Deps{DB: closedDB, Node: client, Chain: synced(info.Blocks)},
			[]string{"database unreachable: sql: database is closed"}},
		{"node down", api.Deps{Node: downNode{}, Chain: synced(info.Blocks)},
			[]string{"node unreachable: dial tcp 127.0.0.1:18443: connect: connection refused"}},
		{"follower halted", api.Deps{Node: client, Chain: func() api.ChainStatus {
			return api.ChainStatus{SyncedHeight: info.Blocks, Halted: "reorg deeper than 100 blocks"}
		}}, []string{"follower halted: reorg deeper than 100 blocks"}},
		{"lagging", api.Deps{Node: client, Chain: synced(info.Blocks - 3), ReadyLag: 2},
			[]string{"sync lag 3 blocks exceeds 2"}},
		{"node behind", api.Deps{Node: client, Chain: synced(info.Blocks + 5)},
			[]string{fmt.Sprintf("node is behind: at height %d, synced height %d", info.Blocks, info.Blocks+5)}},
		{"everything at once", api.Deps{DB: closedDB, Node: downNode{}, Chain: func() api.ChainStatus {
			return api.ChainStatus{SyncedHeight: -1, Halted: "stopped"}
		}}, []string{
			"database unreachable: sql: database is closed",
			"node unreachable: dial tcp 127.0.0.1:18443: connect: connection refused",
			"follower halted: stopped",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, c.deps)
			r := f.do(t, "GET", "/readyz")
			var got api.ReadyResponse
			r.decode(t, &got)
			if r.status != http.StatusServiceUnavailable || got.Status != "not_ready" {
				t.Fatalf("status %d body %s", r.status, r.body)
			}
			if strings.Join(got.Reasons, "\n") != strings.Join(c.reasons, "\n") {
				t.Fatalf("reasons\n%q\nwant\n%q", got.Reasons, c.reasons)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	client := regtestNode(t)
	info, err := client.GetBlockchainInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	updated := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	chain := api.ChainStatus{
		NodeReachable: true, NodeHeight: 999, NodeHash: "stale-node-hash",
		SyncedHeight: info.Blocks - 2, SyncedHash: "synced-hash", MempoolSize: 4,
		LastError: "getblock: timeout", UpdatedAt: updated,
	}
	deps := api.Deps{Chain: func() api.ChainStatus { return chain }, Version: "1.2.3", Coin: "btc", Network: "regtest"}

	t.Run("node up", func(t *testing.T) {
		d := deps
		d.Node = client
		r := newFixture(t, d).do(t, "GET", "/v1/status")
		if r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		var got map[string]any
		r.decode(t, &got)
		want := map[string]any{
			"version": "1.2.3", "coin": "btc", "network": "regtest",
			"node": map[string]any{"reachable": true, "height": float64(info.Blocks),
				"hash": info.BestBlockHash, "mempool_size": float64(4)},
			"synced":     map[string]any{"height": float64(info.Blocks - 2), "hash": "synced-hash"},
			"lag":        float64(2),
			"last_error": "getblock: timeout",
			"halted":     "",
			"leader":     true, // a nil Deps.Leader: the only instance leads
			"updated_at": "2026-01-02T03:04:05Z",
		}
		if !jsonEqual(got, want) {
			t.Fatalf("got  %s\nwant %s", r.body, mustJSON(want))
		}
	})

	t.Run("node down", func(t *testing.T) {
		d := deps
		d.Node = downNode{}
		r := newFixture(t, d).do(t, "GET", "/v1/status")
		var got api.StatusResponse
		r.decode(t, &got)
		if r.status != http.StatusOK || got.Node.Reachable || got.Node.Error == "" {
			t.Fatalf("status %d body %s", r.status, r.body)
		}
		// Without the node, its height and hash are the follower's last view.
		if got.Node.Height != 999 || got.Node.Hash != "stale-node-hash" || got.Lag != 999-(info.Blocks-2) {
			t.Fatalf("body %s", r.body)
		}
	})

	t.Run("not leading", func(t *testing.T) {
		d := deps
		d.Node = client
		d.Leader = func() bool { return false }
		r := newFixture(t, d).do(t, "GET", "/v1/status")
		var got api.StatusResponse
		r.decode(t, &got)
		if r.status != http.StatusOK || got.Leader || got.Synced.Height != info.Blocks-2 {
			t.Fatalf("status %d body %s", r.status, r.body)
		}
	})
}

func jsonEqual(a, b any) bool { return string(mustJSON(a)) == string(mustJSON(b)) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v) // maps marshal with sorted keys, so bytes compare
	if err != nil {
		panic(err)
	}
	return b
}

func (f *fixture) events(t *testing.T, query string) api.EventsResponse {
	t.Helper()
	r := f.do(t, "GET", "/v1/events"+query)
	if r.status != http.StatusOK {
		t.Fatalf("GET /v1/events%s: status %d: %s", query, r.status, r.body)
	}
	var page api.EventsResponse
	r.decode(t, &page)
	return page
}

func eventIDs(evs []events.Event) []int64 {
	ids := []int64{}
	for _, e := range evs {
		ids = append(ids, e.ID)
	}
	return ids
}

func TestEventsPaging(t *testing.T) {
	f := newFixture(t, api.Deps{})
	empty := f.events(t, "")
	if empty.Events == nil || len(empty.Events) != 0 || empty.NextAfter != 0 {
		t.Fatalf("empty log: %+v", empty)
	}

	ids := appendEvents(t, f, 5)
	all := f.events(t, "")
	if got := eventIDs(all.Events); !slices.Equal(got, ids) || all.NextAfter != ids[4] {
		t.Fatalf("default page: ids %v next %d, want %v", got, all.NextAfter, ids)
	}
	if e := all.Events[0]; e.Type != events.BlockConnected || string(e.Data) != `{"height":1}` || e.CreatedAt == 0 {
		t.Fatalf("first event %+v", e)
	}

	// Walk the log two at a time, following next_after.
	var walked []int64
	after := int64(0)
	for range 4 {
		page := f.events(t, "?limit=2&after="+itoa(after))
		walked = append(walked, eventIDs(page.Events)...)
		if len(page.Events) > 2 {
			t.Fatalf("limit 2 returned %d events", len(page.Events))
		}
		if len(page.Events) == 0 && page.NextAfter != after {
			t.Fatalf("empty page moved next_after from %d to %d", after, page.NextAfter)
		}
		after = page.NextAfter
	}
	if !slices.Equal(walked, ids) || after != ids[4] {
		t.Fatalf("walked %v ending at %d, want %v", walked, after, ids)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestEventsLongPoll(t *testing.T) {
	f := newFixture(t, api.Deps{})
	last := appendEvents(t, f, 2)[1]

	type result struct {
		page    api.EventsResponse
		elapsed time.Duration
		err     error
	}
	// The goroutine reports through the channel rather than t, which it
	// may outlive if the test fails first.
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		var r result
		resp, err := f.ts.Client().Get(f.ts.URL + "/v1/events?wait=30&after=" + itoa(last))
		if err == nil {
			defer resp.Body.Close()
			err = json.NewDecoder(resp.Body).Decode(&r.page)
		}
		r.elapsed, r.err = time.Since(start), err
		done <- r
	}()

	const delay = 300 * time.Millisecond
	time.Sleep(delay)
	select {
	case <-done:
		t.Fatal("long-poll answered before any new event")
	default:
	}
	id := appendEvents(t, f, 1)[0]

	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if got := eventIDs(r.page.Events); !slices.Equal(got, []int64{id}) || r.page.NextAfter != id {
			t.Fatalf("got ids %v next %d, want [%d]", got, r.page.NextAfter, id)
		}
		if r.elapsed < delay || r.elapsed > 10*time.Second {
			t.Fatalf("answered after %v; want soon after the append at %v, well before the 30s wait", r.elapsed, delay)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("long-poll did not return after an event was appended")
	}
}

func TestEventsNoWait(t *testing.T) {
	f := newFixture(t, api.Deps{})
	last := appendEvents(t, f, 1)[0]
	for _, q := range []string{"?wait=0&after=", "?after="} {
		start := time.Now()
		page := f.events(t, q+itoa(last))
		if len(page.Events) != 0 || page.NextAfter != last {
			t.Fatalf("%s: %+v", q, page)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%s took %v; want an immediate answer", q, d)
		}
	}
}

func TestEventsBadParameters(t *testing.T) {
	f := newFixture(t, api.Deps{})
	for query, wantMsg := range map[string]string{
		"after=x":                    `after must be a non-negative integer, got "x"`,
		"after=-1":                   `after must be a non-negative integer, got "-1"`,
		"after=":                     `after must be a non-negative integer, got ""`,
		"after=1&after=2":            "after must be given at most once, got 2 values",
		"limit=0":                    `limit must be an integer from 1 to 1000, got "0"`,
		"limit=1001":                 `limit must be an integer from 1 to 1000, got "1001"`,
		"limit=ten":                  `limit must be an integer from 1 to 1000, got "ten"`,
		"wait=61":                    `wait must be a whole number of seconds from 0 to 60, got "61"`,
		"wait=-1":                    `wait must be a whole number of seconds from 0 to 60, got "-1"`,
		"wait=1.5":                   `wait must be a whole number of seconds from 0 to 60, got "1.5"`,
		"after=99999999999999999999": `after must be a non-negative integer, got "99999999999999999999"`,
	} {
		r := f.do(t, "GET", "/v1/events?"+query)
		e := r.wantError(t, http.StatusBadRequest, api.CodeInvalidParameter)
		if e.Message != wantMsg {
			t.Errorf("%s: message %q, want %q", query, e.Message, wantMsg)
		}
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, api.Deps{
		Chain: func() api.ChainStatus { return api.ChainStatus{NodeHeight: 12, SyncedHeight: 10} },
		Counters: func() api.ChainCounters {
			return api.ChainCounters{BlocksApplied: 11, BlocksDisconnected: 2, Reorgs: 1}
		},
	})
	appendEvents(t, f, 1) // with the fixture's API key, two DB transactions
	f.do(t, "GET", "/healthz")
	f.do(t, "GET", "/no/such/path")

	r := f.do(t, "GET", "/metrics")
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("status %d, Content-Type %q", r.status, r.header.Get("Content-Type"))
	}
	body := string(r.body)
	for _, want := range []string{
		"coffer_synced_height 10\n",
		"coffer_node_height 12\n",
		"coffer_leader 1\n",
		"coffer_blocks_applied_total 11\n",
		"coffer_blocks_disconnected_total 2\n",
		"coffer_reorgs_total 1\n",
		"coffer_db_tx_attempts_total 2\n",
		"coffer_db_tx_retries_total 0\n",
		"coffer_db_tx_giveups_total 0\n",
		`coffer_http_requests_total{code="200",route="/healthz"} 1`,
		`coffer_http_requests_total{code="404",route="unmatched"} 1`,
		`coffer_http_request_duration_seconds_bucket{route="/healthz",le="0.005"}`,
		"go_goroutines ",
		"process_cpu_seconds_total ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

func TestMetricsRegistriesAreSeparate(t *testing.T) {
	// Two servers in one process must not collide on metric registration.
	a := newFixture(t, api.Deps{})
	b := newFixture(t, api.Deps{})
	a.do(t, "GET", "/healthz")
	if r := b.do(t, "GET", "/metrics"); strings.Contains(string(r.body), `route="/healthz"`) {
		t.Fatal("second server counted the first server's request")
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	f := newFixture(t, api.Deps{})
	f.do(t, "GET", "/v2/nothing").wantError(t, http.StatusNotFound, api.CodeNotFound)
	f.do(t, "GET", "/").wantError(t, http.StatusNotFound, api.CodeNotFound)

	for _, c := range []struct{ method, path string }{{"POST", "/healthz"}, {"DELETE", "/v1/events"}, {"PUT", "/v1/status"}} {
		r := f.do(t, c.method, c.path)
		r.wantError(t, http.StatusMethodNotAllowed, api.CodeMethodNotAllowed)
		if allow := r.header.Get("Allow"); allow != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q", c.method, c.path, allow)
		}
	}
}

func TestPanicBecomesInternalError(t *testing.T) {
	f := newFixture(t, api.Deps{Chain: func() api.ChainStatus { panic("follower state corrupted") }})
	r := f.do(t, "GET", "/v1/status")
	e := r.wantError(t, http.StatusInternalServerError, api.CodeInternal)
	if id := r.header.Get("X-Request-Id"); !strings.Contains(e.Message, id) {
		t.Errorf("message %q does not name request id %q", e.Message, id)
	}
	if r := f.do(t, "GET", "/healthz"); r.status != http.StatusOK {
		t.Fatalf("server unhealthy after a panic: %d", r.status)
	}
}

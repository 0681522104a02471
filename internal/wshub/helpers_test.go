package wshub_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/wshub"
)

// principalHeader tells the test server who the caller is: "key" for an
// operator API key, "wallet:<id>" for a wallet token. (The real API
// authenticates before calling ServeWS.)
const principalHeader = "X-Test-Principal"

func principalFor(who string) *auth.Principal {
	switch {
	case who == "key":
		return &auth.Principal{Kind: auth.KindAPIKey, KeyID: "k1", Scope: auth.ScopeRead}
	case strings.HasPrefix(who, "wallet:"):
		return &auth.Principal{Kind: auth.KindWalletToken, WalletID: strings.TrimPrefix(who, "wallet:"), ReadOnly: true}
	}
	return nil
}

// env is a running hub behind an httptest server, on a real database.
type env struct {
	t   testing.TB
	db  *store.DB
	log *events.Log
	hub *wshub.Hub
	srv *httptest.Server
	url string
}

func testLogger() *slog.Logger {
	if os.Getenv("WSHUB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

func newEnv(t testing.TB, db *store.DB, cfg wshub.Config) *env {
	t.Helper()
	log := events.NewLog(db)
	hub := wshub.New(log, db, cfg, testLogger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hub.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hub.ServeWS(w, r, principalFor(r.Header.Get(principalHeader)))
	}))
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
	})
	return &env{t: t, db: db, log: log, hub: hub, srv: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http")}
}

// appendEvent writes one event the way the follower and the ledger do:
// events.Log.Append inside a database transaction.
func (e *env) appendEvent(typ, wallet string, data any) int64 {
	e.t.Helper()
	return appendEvent(e.t, e.db, e.log, typ, wallet, data)
}

func appendEvent(t testing.TB, db *store.DB, log *events.Log, typ, wallet string, data any) int64 {
	t.Helper()
	var id int64
	err := db.InTx(context.Background(), func(tx *store.Tx) error {
		var err error
		id, err = log.Append(context.Background(), tx, typ, wallet, data)
		return err
	})
	if err != nil {
		t.Fatalf("append %s: %v", typ, err)
	}
	return id
}

// msg is any server message.
type msg struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	Code      string          `json:"code"`
	Message   string          `json:"message"`
	After     *int64          `json:"after"`
	EventID   int64           `json:"event_id"`
	EventType string          `json:"event_type"`
	WalletID  string          `json:"wallet_id"`
	Data      json.RawMessage `json:"data"`
	Event     *events.Event   `json:"event"`
	raw       string
}

// client is a test WebSocket client. Unless dialed with noRead, a goroutine
// reads every message into msgs (a read with a deadline would close the
// connection, so waits happen on the channel).
type client struct {
	t    testing.TB
	ws   *websocket.Conn
	msgs chan msg
	errc chan error
}

func (e *env) dial(who string) *client {
	e.t.Helper()
	c := e.dialNoRead(who)
	c.startReading()
	return c
}

func (e *env) dialNoRead(who string) *client {
	e.t.Helper()
	return dialURL(e.t, e.url, who)
}

func dialURL(t testing.TB, url, who string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{principalHeader: {who}}})
	if err != nil {
		t.Fatalf("dial as %s: %v", who, err)
	}
	ws.SetReadLimit(4 << 20)
	c := &client{t: t, ws: ws, msgs: make(chan msg, 100_000), errc: make(chan error, 1)}
	t.Cleanup(func() { ws.CloseNow() })
	return c
}

func (c *client) startReading() {
	go func() {
		defer close(c.msgs)
		for {
			_, b, err := c.ws.Read(context.Background())
			if err != nil {
				c.errc <- err
				return
			}
			var m msg
			if err := json.Unmarshal(b, &m); err != nil {
				m.Type = "undecodable"
			}
			m.raw = string(b)
			c.msgs <- m
		}
	}()
}

func (c *client) sendRaw(s string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatalf("send %s: %v", s, err)
	}
}

func (c *client) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(string(b))
}

const waitLong = 10 * time.Second

func (c *client) recv() msg {
	c.t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			c.t.Fatalf("connection closed: %v", <-c.errc)
		}
		return m
	case <-time.After(waitLong):
		c.t.Fatal("no message within", waitLong)
	}
	return msg{}
}

// expect receives the next message and checks its type.
func (c *client) expect(typ string) msg {
	c.t.Helper()
	m := c.recv()
	if m.Type != typ {
		c.t.Fatalf("got %s, want a %q message", m.raw, typ)
	}
	return m
}

// quiet checks that nothing arrives for d.
func (c *client) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case m, ok := <-c.msgs:
		if ok {
			c.t.Fatalf("unexpected message %s", m.raw)
		}
		c.t.Fatalf("connection closed: %v", <-c.errc)
	case <-time.After(d):
	}
}

// roundTrip sends a ping and waits for its pong: every message queued before
// the pong has then been received.
func (c *client) roundTrip() []msg {
	c.t.Helper()
	c.send(map[string]any{"action": "ping"})
	var got []msg
	for {
		m := c.recv()
		if m.Type == "pong" {
			return got
		}
		got = append(got, m)
	}
}

// closeErr waits for the connection to end and returns the read error.
func (c *client) closeErr() error {
	c.t.Helper()
	for {
		select {
		case _, ok := <-c.msgs:
			if !ok {
				return <-c.errc
			}
		case <-time.After(30 * time.Second):
			c.t.Fatal("connection still open")
		}
	}
}

func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func txData(txid, status string, received int64) map[string]any {
	d := map[string]any{"txid": txid, "status": status, "received": received, "sent": 0, "net": received}
	if status == "confirmed" {
		d["block_height"] = 101
	}
	return d
}

// needFDs makes sure the process may open n files, raising the soft limit
// towards the hard one if needed, or skips the test saying why.
func needFDs(t testing.TB, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("skipped: cannot read the file-descriptor limit: %v", err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Skipf("skipped: needs %d file descriptors, the hard limit is %d", n, lim.Max)
	}
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("skipped: cannot raise the file-descriptor limit to %d: %v", n, err)
	}
}

// Package wshub delivers Coffer's event log to WebSocket clients (GET /v1/ws).
//
// One shared reader per process follows the event log (events.Log.Wait) and
// fans every batch out to all live connections, so the database sees one
// query per batch however many clients there are. Each connection keeps its
// own cursor, the id of the last event it has processed. A client that
// subscribes with "after" first reads its backlog from the log itself, in
// pages, and then joins the shared stream at its cursor: ids are compared, so
// nothing is skipped or sent twice at the boundary. Several instances on one
// PostgreSQL each run their own reader for their own clients; events written
// by another instance reach them through the log (within about a second).
//
// Every connection has a bounded send queue. The shared reader never waits
// for a client: a client whose queue is full is disconnected with close code
// 1008 and the reason "too slow: N messages queued". Connections are pinged
// every Config.PingInterval and closed when a pong does not come back within
// Config.PongTimeout.
//
// The protocol is described in the README's "WebSocket" section.
package wshub

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
)

// Config tunes a Hub. Zero fields take the defaults given.
type Config struct {
	// QueueSize is how many messages may wait for one client before it is
	// disconnected as too slow. Default 1024.
	QueueSize int
	// PingInterval is how often every connection is pinged. Default 30s.
	PingInterval time.Duration
	// PongTimeout is how long a ping may go unanswered before the connection
	// is closed. Default 15s; at most PingInterval.
	PongTimeout time.Duration
	// WriteTimeout bounds writing one message to a client. Default 10s.
	WriteTimeout time.Duration
	// MaxMessageSize is the largest message a client may send; a larger one
	// closes the connection with 1009. Default 64 KiB.
	MaxMessageSize int64
	// ReplayPage is how many events a replaying connection reads per query.
	// Default 500, at most events.MaxLimit.
	ReplayPage int
	// PollWait is how long one long-poll of the shared reader lasts before it
	// starts another. Default 25s. (New events wake it at once.)
	PollWait time.Duration
	// MaxClients caps open connections; further upgrade requests get 503.
	// 0 means no cap.
	MaxClients int
	// OriginPatterns are the browser origins (host patterns, see
	// websocket.AcceptOptions) allowed besides the server's own host.
	// Clients that send no Origin header (non-browsers) are always allowed.
	OriginPatterns []string
	// TxMemo is how many wallet transactions the new-tx/update-tx
	// classification remembers. Default 100,000.
	TxMemo int
}

func (c Config) withDefaults() Config {
	if c.QueueSize <= 0 {
		c.QueueSize = 1024
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 30 * time.Second
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = 15 * time.Second
	}
	if c.PongTimeout > c.PingInterval {
		c.PongTimeout = c.PingInterval
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 64 << 10
	}
	if c.ReplayPage <= 0 {
		c.ReplayPage = 500
	}
	if c.ReplayPage > events.MaxLimit {
		c.ReplayPage = events.MaxLimit
	}
	if c.PollWait <= 0 {
		c.PollWait = 25 * time.Second
	}
	if c.TxMemo <= 0 {
		c.TxMemo = 100_000
	}
	return c
}

// Stats are the hub's counters, for metrics.
type Stats struct {
	Clients         int    // open connections
	Position        int64  // id of the last event the shared reader has fanned out
	Sent            uint64 // messages written to clients
	Received        uint64 // messages received from clients
	SlowDisconnects uint64 // connections closed because their send queue was full
	PingTimeouts    uint64 // pings that went unanswered (the connection is closed)
	TxLookups       uint64 // log queries made to tell new-tx from update-tx
	Batches         uint64 // batches the shared reader has fanned out
}

// Hub serves WebSocket clients from one shared reader of the event log.
type Hub struct {
	log    *events.Log
	cfg    Config
	logger *slog.Logger
	cls    *classifier

	started chan struct{} // closed when Run has found the end of the log
	done    chan struct{} // closed when Run returns
	running atomic.Bool

	wg sync.WaitGroup // connections and their replays, waited for by Run

	mu      sync.Mutex // lock order: Hub.mu, conn.mu, outbox.mu
	conns   map[*conn]struct{}
	joined  map[string]int // wallet id → connections that joined it
	pos     int64          // last event id fanned out
	stopped bool

	sent, received, slow, pingTimeouts, batches atomic.Uint64
}

// New returns a hub reading log (stored in db, which it also queries to tell
// a wallet's new transactions from updates). logger may be nil. Start it with
// Run and mount ServeWS behind authentication.
func New(log *events.Log, db *store.DB, cfg Config, logger *slog.Logger) *Hub {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	return &Hub{
		log:     log,
		cfg:     cfg,
		logger:  logger,
		cls:     newClassifier(db, cfg.TxMemo),
		started: make(chan struct{}),
		done:    make(chan struct{}),
		conns:   map[*conn]struct{}{},
		joined:  map[string]int{},
	}
}

// ErrRunning is returned by a second call of Run.
var ErrRunning = errors.New("wshub: Run called twice")

// Run is the shared reader: it starts at the current end of the log and
// fans every new event out to the connections until ctx ends. Then it closes
// every connection with 1001 "server shutting down", waits for them to end
// and returns nil. Call it once, in its own goroutine; ServeWS waits for it
// to start.
func (h *Hub) Run(ctx context.Context) error {
	if !h.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer close(h.done)
	defer h.wg.Wait()
	defer h.shutdown()
	var pos int64
	for {
		var err error
		if pos, err = h.log.LastID(ctx); err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		h.logger.Warn("wshub: reading the end of the event log", "err", err)
		if !sleep(ctx, time.Second) {
			return nil
		}
	}
	h.mu.Lock()
	h.pos = pos
	h.mu.Unlock()
	close(h.started)
	h.logger.Debug("wshub: following the event log", "after", pos)
	for {
		evs, err := h.log.Wait(ctx, pos, events.MaxLimit, h.cfg.PollWait)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			h.logger.Warn("wshub: reading the event log", "after", pos, "err", err)
			if !sleep(ctx, time.Second) {
				return nil
			}
			continue
		}
		if len(evs) == 0 {
			continue
		}
		h.fanout(ctx, evs)
		pos = evs[len(evs)-1].ID
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// fanout delivers one batch of the log to every live connection.
func (h *Hub) fanout(ctx context.Context, evs []events.Event) {
	items := make([]*item, len(evs))
	var needClass []*item
	h.mu.Lock()
	for i, ev := range evs {
		items[i] = newItem(ev)
		if items[i].needsClass() && h.joined[ev.WalletID] > 0 {
			needClass = append(needClass, items[i])
		}
	}
	h.mu.Unlock()
	// Database lookups happen before the fan-out takes the lock.
	for _, it := range needClass {
		h.classify(ctx, it)
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	var buf [][]byte
	for c := range h.conns {
		buf = c.deliverLive(ctx, items, buf)
	}
	h.pos = evs[len(evs)-1].ID
	h.batches.Add(1)
}

func (h *Hub) classify(ctx context.Context, it *item) {
	if err := h.cls.classify(ctx, it); err != nil && ctx.Err() == nil {
		h.logger.Warn("wshub: telling new-tx from update-tx", "event", it.ev.ID, "err", err)
	}
}

// shutdown closes every connection when Run ends.
func (h *Hub) shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	for c := range h.conns {
		c.kick(websocket.StatusGoingAway, "server shutting down")
	}
}

// Clients returns the number of open connections.
func (h *Hub) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	clients, pos := len(h.conns), h.pos
	h.mu.Unlock()
	h.cls.mu.Lock()
	lookups := h.cls.queries
	h.cls.mu.Unlock()
	return Stats{
		Clients:         clients,
		Position:        pos,
		Sent:            h.sent.Load(),
		Received:        h.received.Load(),
		SlowDisconnects: h.slow.Load(),
		PingTimeouts:    h.pingTimeouts.Load(),
		TxLookups:       lookups,
		Batches:         h.batches.Load(),
	}
}

// startWait bounds how long ServeWS waits for Run to start.
const startWait = 10 * time.Second

// ServeWS upgrades an authenticated request to a WebSocket and serves it
// until either side closes. p is the caller's principal, authenticated by
// the API layer: an operator API key (any scope) sees every wallet and
// event; a wallet token sees its own wallet and the global chain events.
// A nil principal gets 401, one without read access 403, and a hub that is
// not running (or full) 503, all as {"error":{"code","message"}} JSON.
func (h *Hub) ServeWS(w http.ResponseWriter, r *http.Request, p *auth.Principal) {
	if p == nil {
		httpError(w, http.StatusUnauthorized, "unauthenticated", "no credentials")
		return
	}
	if !p.Allows(auth.ScopeRead) {
		httpError(w, http.StatusForbidden, "forbidden", "the credentials do not allow reading events")
		return
	}
	t := time.NewTimer(startWait)
	select {
	case <-h.started:
	case <-h.done:
	case <-r.Context().Done():
		t.Stop()
		return
	case <-t.C:
	}
	t.Stop()
	select {
	case <-h.started:
	default:
		httpError(w, http.StatusServiceUnavailable, "unavailable", "the event stream is not running")
		return
	}
	if !h.admit() {
		httpError(w, http.StatusServiceUnavailable, "unavailable", "too many WebSocket clients or shutting down")
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: h.cfg.OriginPatterns})
	if err != nil {
		h.logger.Debug("wshub: upgrade failed", "err", err)
		return // Accept has answered
	}
	ws.SetReadLimit(h.cfg.MaxMessageSize)
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	c := &conn{h: h, ws: ws, p: p, out: newOutbox(h.cfg.QueueSize), ctx: ctx, joined: map[string]bool{}}
	if !h.register(c) {
		cancel()
		ws.Close(websocket.StatusTryAgainLater, "too many clients or shutting down")
		return
	}
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop()
	}()
	c.readLoop()
	h.unregister(c)
	c.out.close(websocket.StatusNormalClosure, "")
	select {
	case <-writerDone: // the writer has closed the connection with its status
	case <-time.After(h.cfg.WriteTimeout + 11*time.Second): // Close's own handshake bound is 10s
	}
	cancel()
	<-writerDone
	ws.CloseNow()
	h.wg.Done()
}

func httpError(w http.ResponseWriter, status int, code, msg string) {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// admit is a cheap early check before the upgrade.
func (h *Hub) admit() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.stopped && (h.cfg.MaxClients <= 0 || len(h.conns) < h.cfg.MaxClients)
}

// register adds c as a live connection positioned at the current end of the
// stream.
func (h *Hub) register(c *conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || (h.cfg.MaxClients > 0 && len(h.conns) >= h.cfg.MaxClients) {
		return false
	}
	c.cursor, c.live = h.pos, true
	h.conns[c] = struct{}{}
	h.wg.Add(1)
	return true
}

func (h *Hub) unregister(c *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.conns, c)
	c.mu.Lock()
	for id := range c.joined {
		h.unjoinLocked(id)
	}
	c.live = false
	c.mu.Unlock()
}

func (h *Hub) unjoinLocked(id string) {
	if h.joined[id] <= 1 {
		delete(h.joined, id)
	} else {
		h.joined[id]--
	}
}

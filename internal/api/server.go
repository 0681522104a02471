// Package api is Coffer's HTTP API: routing, middleware (request ids,
// logging, panic recovery, metrics), JSON errors, the health and status
// endpoints, event long-polling, Prometheus metrics and the OpenAPI document.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/follow"
	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/wallet"
	"github.com/coffer/coffer/internal/webhook"
	"github.com/coffer/coffer/internal/wshub"
)

// ChainStatus is the chain follower's view of the node and of its progress.
type ChainStatus = follow.Status

// ChainCounters are the follower's totals since the process started.
type ChainCounters = follow.Counters

// NodeChecker is the part of the node client the API needs; *node.Client
// satisfies it.
type NodeChecker interface {
	GetBlockchainInfo(ctx context.Context) (*node.BlockchainInfo, error)
}

// Deps are what the server reads from. DB and Events are required; a nil
// Node, Chain or Counters reads as "node unknown" and zero values.
type Deps struct {
	DB       *store.DB
	Events   *events.Log
	Node     NodeChecker
	Chain    func() ChainStatus
	Counters func() ChainCounters
	// Leader reports whether this instance leads: follows the chain and
	// pays withdrawals (one instance per database does). Nil means always.
	Leader  func() bool
	Version string
	Coin    string // e.g. "btc"
	Network string // e.g. "regtest"
	// ReadyLag is how many blocks the follower may trail the node and still
	// report ready.
	ReadyLag int64
	Logger   *slog.Logger
	// Wallets is the watch-only wallet service; nil answers its routes 503.
	Wallets *wallet.Service
	// Custody is the custodial ledger; nil answers its routes 503.
	Custody *ledger.Service
	// Hub serves WebSocket subscriptions at /v1/ws; nil answers 503.
	Hub *wshub.Hub
	// Webhooks manages webhook endpoints and their deliveries; nil answers
	// its routes 503.
	Webhooks *webhook.Service
}

// Timeouts for the dependency checks, short so a probe answers before the
// orchestrator gives up on it.
const (
	dbCheckTimeout   = time.Second
	nodeCheckTimeout = 2 * time.Second
)

// Event paging bounds.
const (
	defaultEventLimit = 100
	maxWaitSeconds    = 60
)

// Server is the API's http.Handler.
type Server struct {
	d       Deps
	log     *slog.Logger
	mux     *http.ServeMux
	byPat   map[string]route // ServeMux pattern → route, for logging and labels
	metrics *metrics
	idem    idempotencyConfig
}

// route is one entry of the route table. The table is the single source for
// both the ServeMux and the OpenAPI coverage test.
type route struct {
	method string
	path   string // ServeMux path pattern; also the OpenAPI path key
	// quiet routes are polled by machines; logging them at Info would bury
	// the requests people make.
	quiet bool
	// access is the credential the route needs; wallet routes ({id} is a
	// wallet id) also accept that wallet's token.
	access access
	wallet bool
	// tokens lets any wallet token use a route that is not a wallet's own
	// (the WebSocket, which checks each wallet it joins).
	tokens bool
	handle func(s *Server, w http.ResponseWriter, r *http.Request)

	// idempotency is how the route treats the Idempotency-Key header (see
	// idempotency.go); the zero value honours a key on mutating routes that
	// need a credential.
	idempotency idempotencyMode
}

// access levels of routes.
type access int

const (
	public      access = iota // no credential
	readAccess                // API key of any scope, or a wallet token
	writeAccess               // API key of scope write or admin, or a full wallet token
	adminAccess               // API key of scope admin
)

func (rt route) pattern() string { return rt.method + " " + rt.path }

var routes = []route{
	{method: http.MethodGet, path: "/healthz", quiet: true, handle: (*Server).handleHealthz},
	{method: http.MethodGet, path: "/readyz", quiet: true, handle: (*Server).handleReadyz},
	{method: http.MethodGet, path: "/metrics", quiet: true, handle: (*Server).handleMetrics},
	{method: http.MethodGet, path: "/openapi.json", handle: (*Server).handleOpenAPI},
	{method: http.MethodGet, path: "/v1/status", access: readAccess, handle: (*Server).handleStatus},
	{method: http.MethodGet, path: "/v1/events", access: readAccess, handle: (*Server).handleEvents},
	{method: http.MethodGet, path: "/v1/ws", access: readAccess, tokens: true, handle: (*Server).handleWS},
	{method: http.MethodPost, path: "/v1/auth/token", handle: (*Server).handleAuthToken},
	{method: http.MethodPost, path: "/v1/wallets", access: writeAccess, handle: (*Server).handleRegisterWallet},
	{method: http.MethodGet, path: "/v1/wallets", access: readAccess, handle: (*Server).handleListWallets},
	{method: http.MethodGet, path: "/v1/wallets/{id}", access: readAccess, wallet: true, handle: (*Server).handleGetWallet},
	{method: http.MethodGet, path: "/v1/wallets/{id}/addresses", access: readAccess, wallet: true, handle: (*Server).handleAddresses},
	{method: http.MethodPost, path: "/v1/wallets/{id}/addresses/next", access: writeAccess, wallet: true, handle: (*Server).handleNextAddress},
	{method: http.MethodPost, path: "/v1/wallets/{id}/addresses/check", access: readAccess, wallet: true, handle: (*Server).handleCheckAddresses},
	{method: http.MethodGet, path: "/v1/wallets/{id}/balance", access: readAccess, wallet: true, handle: (*Server).handleBalance},
	{method: http.MethodGet, path: "/v1/wallets/{id}/utxos", access: readAccess, wallet: true, handle: (*Server).handleUTXOs},
	{method: http.MethodGet, path: "/v1/wallets/{id}/transactions", access: readAccess, wallet: true, handle: (*Server).handleTransactions},
	{method: http.MethodGet, path: "/v1/wallets/{id}/transactions/{txid}", access: readAccess, wallet: true, handle: (*Server).handleTransaction},
	{method: http.MethodPost, path: "/v1/wallets/{id}/proposals", access: writeAccess, wallet: true, handle: (*Server).handleCreateProposal},
	{method: http.MethodGet, path: "/v1/wallets/{id}/proposals/{pid}", access: readAccess, wallet: true, handle: (*Server).handleGetProposal},
	{method: http.MethodDelete, path: "/v1/wallets/{id}/proposals/{pid}", access: writeAccess, wallet: true, handle: (*Server).handleCancelProposal},
	{method: http.MethodPost, path: "/v1/wallets/{id}/proposals/{pid}/send", access: writeAccess, wallet: true, handle: (*Server).handleSendProposal},
	{method: http.MethodPost, path: "/v1/custody/wallets", access: adminAccess, handle: (*Server).handleCreateCustodyWallet},
	{method: http.MethodGet, path: "/v1/custody/wallets", access: readAccess, handle: (*Server).handleListCustodyWallets},
	{method: http.MethodGet, path: "/v1/custody/wallets/{id}", access: readAccess, handle: (*Server).handleGetCustodyWallet},
	{method: http.MethodPost, path: "/v1/custody/wallets/{id}/accounts", access: writeAccess, handle: (*Server).handleCreateAccount},
	{method: http.MethodGet, path: "/v1/custody/wallets/{id}/accounts", access: readAccess, handle: (*Server).handleListAccounts},
	{method: http.MethodGet, path: "/v1/custody/wallets/{id}/accounts/{aid}", access: readAccess, handle: (*Server).handleGetAccount},
	{method: http.MethodPost, path: "/v1/custody/wallets/{id}/accounts/{aid}/addresses", access: writeAccess, handle: (*Server).handleNewDepositAddress},
	{method: http.MethodGet, path: "/v1/custody/wallets/{id}/accounts/{aid}/addresses", access: readAccess, handle: (*Server).handleDepositAddresses},
	{method: http.MethodGet, path: "/v1/custody/wallets/{id}/accounts/{aid}/entries", access: readAccess, handle: (*Server).handleEntries},
	{method: http.MethodGet, path: "/v1/deposits", access: readAccess, handle: (*Server).handleListDeposits},
	{method: http.MethodGet, path: "/v1/deposits/{id}", access: readAccess, handle: (*Server).handleGetDeposit},
	{method: http.MethodPost, path: "/v1/deposits/{id}/ack", access: writeAccess, handle: (*Server).handleAckDeposit},
	{method: http.MethodPost, path: "/v1/transfers", access: writeAccess, idempotency: idempotencyRequired, handle: (*Server).handleTransfer},
	{method: http.MethodPost, path: "/v1/transfers/batch", access: writeAccess, idempotency: idempotencyRequired, handle: (*Server).handleTransferBatch},
	{method: http.MethodGet, path: "/v1/transfers/{id}", access: readAccess, handle: (*Server).handleGetTransfer},
	{method: http.MethodPost, path: "/v1/withdrawals", access: writeAccess, idempotency: idempotencyRequired, handle: (*Server).handleRequestWithdrawal},
	{method: http.MethodGet, path: "/v1/withdrawals", access: readAccess, handle: (*Server).handleListWithdrawals},
	{method: http.MethodGet, path: "/v1/withdrawals/{id}", access: readAccess, handle: (*Server).handleGetWithdrawal},
	{method: http.MethodPost, path: "/v1/withdrawals/{id}/cancel", access: writeAccess, handle: (*Server).handleCancelWithdrawal},
	{method: http.MethodGet, path: "/v1/custody/batches/{id}", access: readAccess, handle: (*Server).handleGetBatch},
	{method: http.MethodPost, path: "/v1/custody/batches/{id}/bump", access: adminAccess, handle: (*Server).handleBumpBatch},
	{method: http.MethodGet, path: "/v1/audit", access: adminAccess, handle: (*Server).handleAudit},
	{method: http.MethodPost, path: "/v1/webhooks", access: adminAccess, handle: (*Server).handleCreateWebhook},
	{method: http.MethodGet, path: "/v1/webhooks", access: adminAccess, handle: (*Server).handleListWebhooks},
	{method: http.MethodGet, path: "/v1/webhooks/{id}", access: adminAccess, handle: (*Server).handleGetWebhook},
	{method: http.MethodPatch, path: "/v1/webhooks/{id}", access: adminAccess, handle: (*Server).handleUpdateWebhook},
	{method: http.MethodDelete, path: "/v1/webhooks/{id}", access: adminAccess, handle: (*Server).handleDeleteWebhook},
	{method: http.MethodGet, path: "/v1/webhooks/{id}/deliveries", access: adminAccess, handle: (*Server).handleWebhookDeliveries},
	{method: http.MethodPost, path: "/v1/webhooks/{id}/deliveries/{did}/redeliver", access: adminAccess, handle: (*Server).handleRedeliver},
}

// NewServer builds the handler. It panics when DB or Events is nil, which is
// a wiring mistake rather than a runtime condition.
func NewServer(d Deps) *Server {
	if d.DB == nil || d.Events == nil {
		panic("api: Deps.DB and Deps.Events are required")
	}
	if d.Chain == nil {
		d.Chain = func() ChainStatus { return ChainStatus{SyncedHeight: -1} }
	}
	if d.Counters == nil {
		d.Counters = func() ChainCounters { return ChainCounters{} }
	}
	if d.Leader == nil {
		d.Leader = func() bool { return true }
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		d:     d,
		log:   d.Logger,
		mux:   http.NewServeMux(),
		byPat: make(map[string]route, len(routes)),
	}
	s.metrics = newMetrics(prometheus.NewRegistry(), d, s.log)
	for _, rt := range routes {
		s.byPat[rt.pattern()] = rt
		s.mux.HandleFunc(rt.pattern(), func(w http.ResponseWriter, r *http.Request) {
			if s.authorize(w, r, rt) {
				s.idempotent(rt, w, r)
			}
		})
	}
	return s
}

// ServeHTTP runs the middleware chain around the ServeMux: request id,
// panic recovery, JSON 404/405, metrics and the access log.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := requestID(r)
	w.Header().Set(requestIDHeader, id)
	r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
	sw := &statusWriter{ResponseWriter: w}

	h, pattern := s.mux.Handler(r)
	rt, matched := s.byPat[pattern]
	label := "unmatched" // one label for every unknown path keeps cardinality bounded
	if matched {
		label = rt.path
	}

	defer func() {
		p := recover()
		status := sw.code()
		if p != nil {
			status = http.StatusInternalServerError
			// ErrAbortHandler is a deliberate abort, not a bug to report.
			if p != http.ErrAbortHandler {
				s.log.Error("panic while handling request", "request_id", id, "method", r.Method,
					"path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
				if !sw.wroteHeader {
					writeError(sw, status, CodeInternal, "internal error (request id "+id+")")
				}
			}
		}
		d := time.Since(start)
		s.metrics.observe(label, status, d)
		level := slog.LevelInfo
		if rt.quiet {
			level = slog.LevelDebug
		}
		s.log.LogAttrs(r.Context(), level, "http request",
			slog.String("request_id", id), slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", status), slog.Duration("duration", d))
		if p == http.ErrAbortHandler {
			panic(p) // the server relies on it to drop the connection
		}
	}()

	if pattern == "" {
		s.unmatched(sw, r, h)
		return
	}
	s.mux.ServeHTTP(sw, r)
}

// unmatched lets the ServeMux decide between 404, 405 and a path-cleaning
// redirect, then answers 404 and 405 with the JSON error body instead of its
// plain text.
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request, h http.Handler) {
	rec := &captureWriter{header: http.Header{}}
	h.ServeHTTP(rec, r)
	switch rec.status {
	case http.StatusMethodNotAllowed:
		allow := rec.header.Get("Allow")
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed,
			"method "+r.Method+" is not allowed on "+r.URL.Path+"; allowed: "+allow)
	case http.StatusNotFound, 0:
		writeError(w, http.StatusNotFound, CodeNotFound, "no such endpoint: "+r.URL.Path)
	default:
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
		w.Write(rec.body)
	}
}

// captureWriter holds what the ServeMux's own fallback handlers write.
type captureWriter struct {
	header http.Header
	status int
	body   []byte
}

func (c *captureWriter) Header() http.Header { return c.header }

func (c *captureWriter) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
}

func (c *captureWriter) Write(b []byte) (int, error) {
	c.WriteHeader(http.StatusOK)
	c.body = append(c.body, b...)
	return len(b), nil
}

// statusWriter remembers the status code for logs and metrics.
type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(status int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = status, true
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

// Flush is forwarded so streaming handlers keep working behind the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if !w.wroteHeader {
			w.status, w.wroteHeader = http.StatusOK, true
		}
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if !w.wroteHeader {
		return http.StatusOK // net/http sends 200 for a handler that wrote nothing
	}
	return w.status
}

// Package webhook delivers Coffer's event log to HTTP endpoints, signed as
// the Standard Webhooks specification (https://www.standardwebhooks.com)
// says, with retries that persist in the database.
//
// How it works:
//
//   - A dispatcher reads the event log from a cursor stored in the database
//     (webhook_cursor) and, in the transaction that moves the cursor, queues
//     one delivery per event and matching enabled endpoint. Several
//     instances on one PostgreSQL may run it: the cursor moves by
//     compare-and-set in a SERIALIZABLE transaction and a unique key allows
//     one delivery per (endpoint, event), so an event is queued once.
//   - Per endpoint, deliveries go out in queue (event log) order, one at a
//     time: the next waits until the previous one succeeded or used up the
//     retry schedule and was marked failed.
//   - Endpoints are worked independently, at most Config.MaxConcurrency at a
//     time in one instance; an endpoint that hangs holds only its own slot,
//     and only up to Config.Timeout.
//   - Before an attempt the instance leases the delivery (locked_by,
//     locked_until_ms) in a transaction and records the result in another,
//     so each attempt is made by one instance. An instance that dies
//     mid-attempt loses its lease when it ends (Timeout + LeaseMargin) and
//     another retries: that attempt may then reach the receiver twice, with
//     the same webhook-id, which receivers dedupe on.
//   - Nothing lives only in memory: the queue, the retry times and the
//     cursor are rows, so a restarted process carries on where the last one
//     stopped.
package webhook

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/fault"
	"github.com/coffer/coffer/internal/store"
)

// DefaultSchedule is the delay before each attempt of a delivery: the first
// at once, then retries after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h —
// eight attempts over about 28 hours.
var DefaultSchedule = []time.Duration{
	0,
	5 * time.Second,
	5 * time.Minute,
	30 * time.Minute,
	2 * time.Hour,
	5 * time.Hour,
	10 * time.Hour,
	10 * time.Hour,
}

// Defaults of Config.
const (
	DefaultTimeout        = 15 * time.Second
	DefaultDisableAfter   = 5 * 24 * time.Hour
	DefaultMaxConcurrency = 32
	DefaultSecretOverlap  = 24 * time.Hour
	DefaultLeaseMargin    = 10 * time.Second
	DefaultPollInterval   = time.Second
)

// Limits.
const (
	MaxResponseSnippet = 1024 // bytes of an answer's body kept per attempt
	MaxURLLength       = 2048
	MaxEventTypes      = 100 // patterns in one endpoint's filter
	MaxDescription     = 500 // characters
	MaxDeliveriesLimit = 1000
)

// EventAlert is the type of the event written when an endpoint is disabled
// for failing too long; its data has kind AlertKindDisabled.
const (
	EventAlert        = "alert"
	AlertKindDisabled = "webhook_disabled"
)

// Config tunes delivery. The zero value means every default.
type Config struct {
	// Timeout bounds one attempt, from connecting to reading the answer
	// (default 15 s). A 2xx answer within it is success.
	Timeout time.Duration
	// Schedule is the delay before each attempt of a delivery, counted from
	// when it was queued (the first) or from the previous attempt's end; its
	// length is the number of attempts (default DefaultSchedule).
	Schedule []time.Duration
	// DisableAfter disables an endpoint, with an alert event, at a failed
	// attempt when its attempts have failed without a success for this long
	// (default 5 days; negative: never).
	DisableAfter time.Duration
	// MaxConcurrency bounds the endpoints this instance sends to at once
	// (default 32).
	MaxConcurrency int
	// SecretOverlap is how long the previous secret keeps signing after a
	// rotation (default 24 h; negative: it stops at once).
	SecretOverlap time.Duration
	// Instance names this process in leases and the attempts log; it must
	// differ between instances sharing a database (default: host name and a
	// random suffix, new for every process).
	Instance string
	// Client sends the requests (default: a client that does not follow
	// redirects, so a 3xx answer is a failure). A client given here should
	// not follow redirects either. The attempt's deadline is set on the
	// request's context, not on the client.
	Client *http.Client
	// LeaseMargin is added to Timeout for the lease an instance takes on a
	// delivery while it tries it: long enough to record the result
	// (default 10 s).
	LeaseMargin time.Duration
	// PollInterval is how often the queue is checked for work queued by
	// other instances or falling due (default 1 s). Work queued by this
	// instance starts at once.
	PollInterval time.Duration
	// Script is the script hook; SyncScript applies it to the database.
	// Its Timeout replaces Timeout for the script hook's attempts and
	// lease. Instances sharing a database should configure it alike.
	Script Script
}

// Error kinds. They map to HTTP answers through the api package.
var (
	ErrInvalid  = fault.New("invalid_parameter", 400)
	ErrNotFound = fault.New("not_found", 404)
)

var errorf = fault.Errorf

// Stats are counters since the service started, for metrics.
type Stats struct {
	Attempts  uint64 // attempts made by this instance
	Succeeded uint64 // of them, those answered with a 2xx
	Failed    uint64 // deliveries that used up the schedule (status failed)
	Disabled  uint64 // endpoints this instance disabled for failing too long
	LeaseLost uint64 // attempts whose result could not be recorded: the lease had passed to another instance
}

// Service manages webhook endpoints and delivers events to them.
type Service struct {
	db     *store.DB
	events *events.Log
	cfg    Config
	log    *slog.Logger
	client *http.Client

	wake    chan struct{} // the scheduler should look for work now
	running atomic.Bool

	attempts, succeeded, failed, disabled, leaseLost atomic.Uint64
}

// New returns the service. Call Run to deliver; the management methods work
// without it.
func New(db *store.DB, log *events.Log, cfg Config, logger *slog.Logger) *Service {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if len(cfg.Schedule) == 0 {
		cfg.Schedule = DefaultSchedule
	}
	cfg.Schedule = append([]time.Duration(nil), cfg.Schedule...)
	for i, d := range cfg.Schedule {
		cfg.Schedule[i] = max(d, 0)
	}
	if cfg.DisableAfter == 0 {
		cfg.DisableAfter = DefaultDisableAfter
	}
	if cfg.MaxConcurrency <= 0 {
		cfg.MaxConcurrency = DefaultMaxConcurrency
	}
	if cfg.SecretOverlap == 0 {
		cfg.SecretOverlap = DefaultSecretOverlap
	}
	if cfg.Instance == "" {
		cfg.Instance = NewInstanceID()
	}
	if cfg.LeaseMargin <= 0 {
		cfg.LeaseMargin = DefaultLeaseMargin
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Script.Timeout <= 0 {
		cfg.Script.Timeout = DefaultScriptTimeout
	}
	cfg.Script.EventTypes = append([]string(nil), cfg.Script.EventTypes...)
	client := cfg.Client
	if client == nil {
		client = DefaultClient()
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Service{
		db: db, events: log, cfg: cfg, client: client,
		log:  logger.With("component", "webhook", "instance", cfg.Instance),
		wake: make(chan struct{}, 1),
	}
}

// Config returns the configuration in effect, defaults filled in.
func (s *Service) Config() Config { return s.cfg }

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{
		Attempts: s.attempts.Load(), Succeeded: s.succeeded.Load(), Failed: s.failed.Load(),
		Disabled: s.disabled.Load(), LeaseLost: s.leaseLost.Load(),
	}
}

// DefaultClient returns the HTTP client used when Config.Client is nil: it
// does not follow redirects (a 3xx answer is returned, and is a failure).
func DefaultClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 4
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// NewInstanceID returns a name for this process: the host name and a random
// suffix.
func NewInstanceID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "coffer"
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return host + "-" + hex.EncodeToString(b[:])
}

// wakeUp makes the scheduler look for work now.
func (s *Service) wakeUp() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// newID returns prefix + 24 random hex digits.
func newID(prefix string) string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return prefix + hex.EncodeToString(b[:])
}

// querier reads inside or outside a transaction.
type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func unixTime(sec int64) time.Time { return time.Unix(sec, 0).UTC() }

func optTime(sec sql.NullInt64) *time.Time {
	if !sec.Valid {
		return nil
	}
	t := unixTime(sec.Int64)
	return &t
}

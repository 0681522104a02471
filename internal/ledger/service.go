// Package ledger is Coffer's custodial side: custodial wallets whose seeds
// Coffer holds, customer and system accounts with a double-entry ledger,
// deposits credited at a confirmation threshold, internal transfers, and
// withdrawals paid in batches that are journaled before they are broadcast,
// so a crash can never pay twice.
//
// Sign convention: an account's balance is what Coffer owes on it. Customer
// accounts are positive; the hot-wallet account is the negative of the coins
// the books say Coffer holds; every transfer's postings sum to zero per
// asset, so the sum of all balances is always zero.
package ledger

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/fault"
	"github.com/coffer/coffer/internal/keys"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/wallet"
)

// Config tunes the ledger.
type Config struct {
	// Confirmations credits a deposit once it has this many (default 6).
	Confirmations int64
	// TrackConfirmations keeps counting a deposit's confirmations up to this
	// many (at least Confirmations; default Confirmations).
	TrackConfirmations int64
	// BatchInterval is how often queued withdrawals are paid (default 1 min).
	BatchInterval time.Duration
	// BatchMaxCount pays a batch as soon as this many withdrawals are queued
	// and bounds the outputs of one transaction (default 250).
	BatchMaxCount int
	// BatchMaxSum pays a batch as soon as this much is queued (0: no trigger).
	BatchMaxSum amount.Amount
	// BumpAfter fee-bumps a batch still unconfirmed this long after its last
	// broadcast (0: never automatically).
	BumpAfter time.Duration
	// WithdrawalFee is charged to the customer per withdrawal and credited to
	// the fees account, which pays the actual network fee (default 0).
	WithdrawalFee amount.Amount
	// CustomerPaysNetworkFee charges each withdrawal its share of its
	// batch's actual network fee (split evenly), at most MaxNetworkFeeShare,
	// which is held at request; the fees account pays any rest.
	CustomerPaysNetworkFee bool
	MaxNetworkFeeShare     amount.Amount
	// FeeConfTarget is the confirmation target, in blocks, for each fee
	// priority: low, normal, high (defaults 24, 6, 2).
	FeeConfTarget map[string]int
}

// Limits of one request.
const (
	MaxBatchTransfers = 1000 // transfers in one POST /v1/transfers/batch
	MaxLegs           = 100  // postings in one multi-leg transfer
	maxNameLen        = 200
	maxMemoLen        = 500
)

// Fee priorities of withdrawals.
var priorities = []string{"low", "normal", "high"}

// Follower is the part of the chain follower the ledger needs.
type Follower interface {
	AddMempoolTx(ctx context.Context, tx *wire.MsgTx) error
}

// Service is the custodial ledger.
type Service struct {
	db       *store.DB
	params   *chain.Params
	events   *events.Log
	wallets  *wallet.Service
	keys     *keys.Store
	node     *node.Client
	follower Follower
	cfg      Config
	log      *slog.Logger
	asset    string

	wakeBatcher chan struct{}

	shortMu      sync.Mutex
	shortAlerted map[string]string // wallet -> the withdrawal a hot_wallet_short alert named last

	// batching holds the withdrawals a batch is being built for in this
	// process; CancelWithdrawal refuses them rather than make the batch
	// start over. (A cancel from another process is caught when the batch
	// is journaled, and the batch is built again.)
	batchingMu sync.Mutex
	batching   map[string]bool

	// txMu: request-path transactions share it, the batcher's take it
	// alone (see aloneTx).
	txMu sync.RWMutex
}

// New returns the service. Call Run to pay withdrawals.
func New(db *store.DB, params *chain.Params, log *events.Log, wallets *wallet.Service, ks *keys.Store,
	client *node.Client, f Follower, cfg Config, logger *slog.Logger) *Service {
	if cfg.Confirmations <= 0 {
		cfg.Confirmations = 6
	}
	cfg.TrackConfirmations = max(cfg.TrackConfirmations, cfg.Confirmations)
	if cfg.BatchInterval <= 0 {
		cfg.BatchInterval = time.Minute
	}
	if cfg.BatchMaxCount <= 0 {
		cfg.BatchMaxCount = 250
	}
	targets := map[string]int{"low": 24, "normal": 6, "high": 2}
	for k, v := range cfg.FeeConfTarget {
		if v > 0 {
			targets[k] = v
		}
	}
	cfg.FeeConfTarget = targets
	if logger == nil {
		logger = slog.Default()
	}
	return &Service{
		db: db, params: params, events: log, wallets: wallets, keys: ks, node: client, follower: f,
		cfg: cfg, log: logger, asset: strings.ToUpper(string(params.Coin)),
		wakeBatcher: make(chan struct{}, 1), shortAlerted: map[string]string{}, batching: map[string]bool{},
	}
}

// Asset is the asset code of this server's chain, e.g. "BTC".
func (s *Service) Asset() string { return s.asset }

// Error kinds of the ledger, beside the wallet's.
var (
	ErrInvalid           = wallet.ErrInvalid
	ErrNotFound          = wallet.ErrNotFound
	ErrInvalidAddress    = wallet.ErrInvalidAddress
	ErrWrongNetwork      = wallet.ErrWrongNetwork
	ErrInvalidAmount     = wallet.ErrInvalidAmount
	ErrDust              = wallet.ErrDust
	ErrInsufficientFunds = wallet.ErrInsufficientFunds
	ErrConflict          = wallet.ErrConflict
	ErrSameAccount       = fault.New("same_account", 400)
	ErrAssetMismatch     = fault.New("asset_mismatch", 400)
	ErrUnbalanced        = fault.New("unbalanced_transfer", 400)
	ErrIdempotencyReused = fault.New("idempotency_key_reused", 409)
	ErrInvalidState      = fault.New("invalid_state", 409)
	ErrBooksExceedChain  = fault.New("books_exceed_chain", 409)
	ErrNoMasterKey       = fault.New("custody_unavailable", 503)
)

// noKeys is the error for custody work that needs the master key.
func noKeys() error {
	return errorf(ErrNoMasterKey, "custodial wallets need a master key: set custody.master_key_file or custody.master_key_env")
}

var errorf = fault.Errorf

// newID returns prefix + 24 random hex digits.
func newID(prefix string) string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // the system's randomness failing is not recoverable
	}
	return prefix + hex.EncodeToString(b[:])
}

// querier reads inside or outside a transaction.
type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// tipHeight is the height of the last applied block (-1 before the first).
func tipHeight(ctx context.Context, q querier) (int64, error) {
	var h int64
	err := q.QueryRowContext(ctx, `SELECT height FROM chain_cursor WHERE id = 1`).Scan(&h)
	if err == sql.ErrNoRows {
		return -1, nil
	}
	return h, err
}

func unixTime(sec int64) time.Time { return time.Unix(sec, 0).UTC() }

// inTx runs fn in a write transaction of the request path. Concurrent
// requests moving the same accounts conflict on PostgreSQL (SERIALIZABLE),
// and a request should not fail because its accounts are busy: when the
// store's retries run out, inTx goes round again a few times.
func (s *Service) inTx(ctx context.Context, fn func(tx *store.Tx) error) error {
	s.txMu.RLock()
	defer s.txMu.RUnlock()
	return s.retryTx(ctx, fn)
}

// aloneTx runs fn while no request-path transaction of this process runs:
// for the batcher's transactions, which touch the rows of every account
// with a withdrawal in the batch and would otherwise keep losing to the
// small transfers that commit while they run (on PostgreSQL) until their
// retries run out.
func (s *Service) aloneTx(ctx context.Context, fn func(tx *store.Tx) error) error {
	s.txMu.Lock()
	defer s.txMu.Unlock()
	return s.retryTx(ctx, fn)
}

func (s *Service) retryTx(ctx context.Context, fn func(tx *store.Tx) error) error {
	for round := 1; ; round++ {
		err := s.db.InTx(ctx, fn)
		if !errors.Is(err, store.ErrConflictUnresolved) || round == txRounds || ctx.Err() != nil {
			return err
		}
	}
}

// txRounds is how many times inTx runs the store's retrying transaction.
const txRounds = 4

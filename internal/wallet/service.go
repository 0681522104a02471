// Package wallet is Coffer's watch-only wallet service: it registers
// descriptors, derives and tracks their addresses within the gap limit,
// recovers their history, keeps a per-wallet view of the transactions the
// follower records, and builds transaction proposals for the wallet's owner
// to sign.
package wallet

import (
	"context"
	"database/sql"
	"log/slog"
	"sync"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/descriptor"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/store"
)

// Config tunes the service.
type Config struct {
	DefaultGapLimit int           // 20 when zero
	ProposalTTL     time.Duration // how long a proposal reserves its inputs; 15 min when zero
	// FallbackFeeRate (sat/vB) is used for a confirmation target when the
	// node has no estimate (a fresh or regtest chain).
	FallbackFeeRate int64
	// FullBlocks makes history recovery read every block even when the node
	// serves compact block filters.
	FullBlocks bool
	// ConfirmationsMax is how many confirmations a transaction's
	// tx.confirmed event is repeated up to, once per connected block; 6
	// when zero.
	ConfirmationsMax int64
}

// Follower is the chain follower the service extends. *follow.Follower
// satisfies it.
type Follower interface {
	ImportBlock(ctx context.Context, height int64, hash string, blk *wire.MsgBlock) (int, error)
	CaughtUp(ctx context.Context, height int64) (bool, error)
	AddMempoolTx(ctx context.Context, tx *wire.MsgTx) error
}

// Service is the watch-only wallet service.
type Service struct {
	db       *store.DB
	params   *chain.Params
	events   *events.Log
	node     *node.Client
	follower Follower
	cfg      Config
	log      *slog.Logger

	mu    sync.Mutex
	descs map[string]*walletDescs // parsed descriptors by wallet id

	wakeRecovery chan struct{}
}

// walletDescs are a wallet's parsed receive and change descriptors.
type walletDescs struct {
	branch [2]*descriptor.Descriptor
	gap    int
}

// New returns the service. Call Run to recover history and expire proposals.
func New(db *store.DB, params *chain.Params, log *events.Log, client *node.Client, f Follower, cfg Config, logger *slog.Logger) *Service {
	if cfg.DefaultGapLimit <= 0 {
		cfg.DefaultGapLimit = 20
	}
	if cfg.ProposalTTL <= 0 {
		cfg.ProposalTTL = 15 * time.Minute
	}
	if cfg.FallbackFeeRate <= 0 {
		cfg.FallbackFeeRate = 10
	}
	if cfg.ConfirmationsMax <= 0 {
		cfg.ConfirmationsMax = 6
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Service{
		db: db, params: params, events: log, node: client, follower: f, cfg: cfg, log: logger,
		descs:        map[string]*walletDescs{},
		wakeRecovery: make(chan struct{}, 1),
	}
}

// Params returns the chain the service works on.
func (s *Service) Params() *chain.Params { return s.params }

// querier reads inside or outside a transaction.
type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// descsOf returns the wallet's parsed descriptors, parsing them once.
func (s *Service) descsOf(ctx context.Context, q querier, walletID string) (*walletDescs, error) {
	s.mu.Lock()
	d, ok := s.descs[walletID]
	s.mu.Unlock()
	if ok {
		return d, nil
	}
	var recv, chg string
	var gap int
	err := q.QueryRowContext(ctx, `SELECT receive_desc, change_desc, gap_limit FROM wallets WHERE id = $1`, walletID).Scan(&recv, &chg, &gap)
	if err != nil {
		return nil, err
	}
	d = &walletDescs{gap: gap}
	for i, text := range []string{recv, chg} {
		if d.branch[i], err = descriptor.Parse(text, s.params); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	s.descs[walletID] = d
	s.mu.Unlock()
	return d, nil
}

// Run recovers wallet history and releases expired proposals until ctx ends.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.runRecovery(ctx) }()
	go func() { defer wg.Done(); s.runSweeper(ctx) }()
	wg.Wait()
}

func (s *Service) wake() {
	select {
	case s.wakeRecovery <- struct{}{}:
	default:
	}
}

// tipHeight is the follower's applied height, -1 before the first block.
func tipHeight(ctx context.Context, q querier) (int64, error) {
	var h int64
	err := q.QueryRowContext(ctx, `SELECT height FROM chain_cursor WHERE id = 1`).Scan(&h)
	if err == sql.ErrNoRows {
		return -1, nil
	}
	return h, err
}

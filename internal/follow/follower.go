// Package follow follows a node's best chain into the store: it applies each
// block in one transaction that also moves the cursor, unwinds reorgs back to
// the fork point, and tracks mempool transactions that touch watched scripts.
package follow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/store"
)

// Config tunes the follower.
type Config struct {
	StartHeight   int64         // first block applied when the database has none
	MaxReorgDepth int64         // a deeper reorg halts the follower
	PollInterval  time.Duration // how often the node's tip is checked
	Prefetch      int           // blocks fetched concurrently while catching up
	// ConfirmationsMax is how many confirmations tx.confirmed is repeated
	// up to, once per connected block; 6 when zero.
	ConfirmationsMax int64
}

// ErrReorgTooDeep halts the follower: the node's chain forked from ours deeper
// than MaxReorgDepth (or below the first block we applied), and unwinding that
// much history automatically would be a guess an operator must make.
var ErrReorgTooDeep = errors.New("reorg deeper than the configured maximum")

// Status is a snapshot of what the follower knows, for /readyz, /v1/status and
// metrics.
type Status struct {
	NodeReachable bool
	NodeHeight    int64
	NodeHash      string
	SyncedHeight  int64 // -1 before the first block
	SyncedHash    string
	MempoolSize   int
	LastError     string
	Halted        string
	UpdatedAt     time.Time
}

// Counters are monotonically increasing totals, exported as metrics.
type Counters struct {
	BlocksApplied      uint64
	BlocksDisconnected uint64
	Reorgs             uint64
}

// Follower applies the node's chain to the store. Run it in one goroutine;
// Track and Status may be called from any.
type Follower struct {
	db     *store.DB
	node   *node.Client
	params *chain.Params
	events *events.Log
	cfg    Config
	log    *slog.Logger

	scriptsMu    sync.RWMutex
	scripts      map[string]struct{} // tracked output scripts
	lastScriptID int64

	watcher Watcher

	// Rebuilt from the database by loadIndex. applyMu guards them: Run
	// applies blocks and the mempool, ImportBlock recovers history.
	applyMu     sync.Mutex
	memDirty    atomic.Bool // scripts were added: examine the whole mempool again
	cursor      *cursor
	outpoints   map[wire.OutPoint]struct{} // outputs of live tracked txs
	memSpends   map[wire.OutPoint]string   // inputs of tracked mempool txs -> txid
	memSeen     map[string][]wire.OutPoint // node mempool txids already examined -> their inputs
	firstHeight int64                      // lowest block in chain_blocks

	statusMu sync.Mutex
	status   Status

	blocksApplied, blocksDisconnected, reorgs atomic.Uint64
	wake                                      chan struct{}
}

type cursor struct {
	height int64
	hash   string
}

// New returns a follower; it does nothing until Run.
func New(db *store.DB, client *node.Client, params *chain.Params, log *events.Log, cfg Config, logger *slog.Logger) *Follower {
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.MaxReorgDepth <= 0 {
		cfg.MaxReorgDepth = 100
	}
	if cfg.Prefetch <= 0 {
		cfg.Prefetch = 8
	}
	if cfg.ConfirmationsMax <= 0 {
		cfg.ConfirmationsMax = 6
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Follower{
		db: db, node: client, params: params, events: log, cfg: cfg, log: logger,
		scripts: map[string]struct{}{},
		status:  Status{SyncedHeight: -1},
		wake:    make(chan struct{}, 1),
	}
}

// Status returns what the follower currently knows.
func (f *Follower) Status() Status {
	f.statusMu.Lock()
	defer f.statusMu.Unlock()
	return f.status
}

// Counters returns the follower's totals.
func (f *Follower) Counters() Counters {
	return Counters{
		BlocksApplied:      f.blocksApplied.Load(),
		BlocksDisconnected: f.blocksDisconnected.Load(),
		Reorgs:             f.reorgs.Load(),
	}
}

func (f *Follower) updateStatus(fn func(*Status)) {
	f.statusMu.Lock()
	fn(&f.status)
	f.status.UpdatedAt = time.Now()
	f.statusMu.Unlock()
}

// Wake makes Run check the node at once instead of at the next poll; node
// notifications call it.
func (f *Follower) Wake() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Run follows the chain until ctx ends. It returns nil when ctx ends and an
// error wrapping ErrReorgTooDeep when it halts. Other failures (node or
// database down) are logged, reported in Status, and retried.
func (f *Follower) Run(ctx context.Context) error {
	go f.listen(ctx)
	backoff := f.cfg.PollInterval
	indexed := false
	for {
		var err error
		if !indexed {
			f.applyMu.Lock()
			err = f.loadIndex(ctx)
			f.applyMu.Unlock()
			indexed = err == nil
		}
		if err == nil {
			err = f.Sync(ctx)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrReorgTooDeep):
			f.halt(ctx, err)
			return err
		case err != nil:
			f.log.Warn("follower: sync failed; retrying", "err", err, "retry_in", backoff)
			f.updateStatus(func(s *Status) { s.LastError = err.Error() })
			indexed = false // the in-memory index may be ahead of a rolled-back transaction
		default:
			// Sync itself clears LastError once the node answers, and sets
			// it while the node is behind.
			backoff = f.cfg.PollInterval
		}
		wait := f.cfg.PollInterval
		if err != nil {
			wait = backoff
			backoff = min(backoff*2, 30*time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-f.wake:
			// A busy node notifies per transaction; let a burst gather so
			// one pass handles it.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wakeDebounce):
			}
		case <-time.After(wait):
		}
	}
}

// wakeDebounce is how long Run lets notifications gather before a pass.
const wakeDebounce = 100 * time.Millisecond

// listen wakes the follower on node notifications where the node pushes them
// (btcd); elsewhere polling alone drives it.
func (f *Follower) listen(ctx context.Context) {
	for ctx.Err() == nil {
		err := f.node.Notify(ctx, func(string) { f.Wake() })
		if errors.Is(err, node.ErrNoNotifications) {
			f.log.Info("follower: node pushes no notifications; polling", "interval", f.cfg.PollInterval)
			return
		}
		if ctx.Err() != nil {
			return
		}
		f.log.Debug("follower: node notifications interrupted; reconnecting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

func (f *Follower) halt(ctx context.Context, err error) {
	f.log.Error("FOLLOWER HALTED: the node's chain reorganised deeper than allowed; resolve manually (raise follow.max_reorg_depth or resync) and restart", "err", err)
	f.updateStatus(func(s *Status) { s.Halted = err.Error(); s.LastError = err.Error() })
	_ = f.db.InTx(ctx, func(tx *store.Tx) error {
		_, e := f.events.Append(ctx, tx, events.FollowerHalted, "", map[string]string{"reason": err.Error()})
		return e
	})
}

// Sync applies blocks until the store matches the node's tip, then
// reconciles the mempool. It is what Run calls on every poll.
func (f *Follower) Sync(ctx context.Context) error {
	f.applyMu.Lock()
	var err error
	if f.cursor == nil && f.outpoints == nil {
		err = f.loadIndex(ctx)
	}
	f.applyMu.Unlock()
	if err != nil {
		return err
	}
	if err := f.loadNewScripts(ctx); err != nil {
		return err
	}
	info, err := f.node.GetBlockchainInfo(ctx)
	if err != nil {
		f.updateStatus(func(s *Status) { s.NodeReachable = false })
		return fmt.Errorf("asking node for its tip: %w", err)
	}
	f.updateStatus(func(s *Status) {
		s.NodeReachable, s.NodeHeight, s.NodeHash, s.LastError = true, info.Blocks, info.BestBlockHash, ""
	})
	// While one batch is applied the next one is fetched; a batch made stale
	// by a reorg fails the prev-hash check and is dropped.
	var ahead *prefetch
	for ctx.Err() == nil {
		if f.cursor != nil && f.cursor.hash == info.BestBlockHash {
			f.applyMu.Lock()
			defer f.applyMu.Unlock()
			return f.syncMempool(ctx, info.BestBlockHash)
		}
		next := f.cfg.StartHeight
		if f.cursor != nil {
			next = f.cursor.height + 1
		}
		if next > info.Blocks {
			if f.cursor == nil {
				return nil // the chain has not reached the start height yet
			}
			behind, err := f.nodeBehind(ctx, info)
			if err != nil || behind {
				return err
			}
			// Our tip is at or above the node's but is not its tip, and the
			// node's tip is not in our chain: it switched to another branch.
			if err := f.lockedReorg(ctx, info.Blocks); err != nil {
				return err
			}
			continue
		}
		var blocks []fetchedBlock
		if ahead != nil && ahead.from == next {
			r := <-ahead.done
			blocks, err = r.blocks, r.err
		} else {
			blocks, err = f.fetch(ctx, next, min(info.Blocks, next+int64(f.cfg.Prefetch)-1))
		}
		ahead = nil
		if err != nil {
			return err
		}
		if last := blocks[len(blocks)-1].height; last < info.Blocks {
			ahead = f.fetchAhead(ctx, last+1, min(info.Blocks, last+int64(f.cfg.Prefetch)))
		}
		for _, b := range blocks {
			if f.cursor != nil && b.msg.Header.PrevBlock.String() != f.cursor.hash {
				if err := f.lockedReorg(ctx, info.Blocks); err != nil {
					return err
				}
				break
			}
			if err := f.connect(ctx, b); err != nil {
				return fmt.Errorf("applying block %d %s: %w", b.height, b.hash, err)
			}
		}
		if f.cursor != nil && f.cursor.height >= info.Blocks {
			// Refresh the tip: blocks may have arrived while we caught up.
			if info, err = f.node.GetBlockchainInfo(ctx); err != nil {
				return err
			}
			f.updateStatus(func(s *Status) { s.NodeHeight, s.NodeHash = info.Blocks, info.BestBlockHash })
		}
	}
	return ctx.Err()
}

// nodeBehind reports whether the node's tip is a block of our own chain
// below our cursor (or below the first block we applied): a node that lost
// recent blocks in a crash, or is still syncing. That is no reorg; the
// follower waits for the node to catch up instead of unwinding.
func (f *Follower) nodeBehind(ctx context.Context, info *node.BlockchainInfo) (bool, error) {
	if info.Blocks >= f.cursor.height {
		return false, nil
	}
	if info.Blocks >= f.firstHeight {
		var ours string
		err := f.db.QueryRowContext(ctx, `SELECT hash FROM chain_blocks WHERE height = $1`, info.Blocks).Scan(&ours)
		if err != nil {
			return false, err
		}
		if ours != info.BestBlockHash {
			return false, nil
		}
	}
	f.log.Warn("follower: node is behind the applied chain; waiting for it", "node_height", info.Blocks, "synced_height", f.cursor.height)
	f.updateStatus(func(s *Status) {
		s.LastError = fmt.Sprintf("node is behind: at height %d, Coffer has applied %d; waiting for the node", info.Blocks, f.cursor.height)
	})
	return true, nil
}

// prefetch is a batch of blocks being fetched in the background.
type prefetch struct {
	from int64
	done chan fetchResult // buffered: the fetcher never blocks
}

type fetchResult struct {
	blocks []fetchedBlock
	err    error
}

func (f *Follower) fetchAhead(ctx context.Context, from, to int64) *prefetch {
	p := &prefetch{from: from, done: make(chan fetchResult, 1)}
	go func() {
		blocks, err := f.fetch(ctx, from, to)
		p.done <- fetchResult{blocks, err}
	}()
	return p
}

type fetchedBlock struct {
	height int64
	hash   string
	msg    *wire.MsgBlock
}

// fetch downloads and parses blocks from..to concurrently, in order.
func (f *Follower) fetch(ctx context.Context, from, to int64) ([]fetchedBlock, error) {
	out := make([]fetchedBlock, to-from+1)
	errs := make([]error, len(out))
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			h := from + int64(i)
			hash, err := f.node.GetBlockHash(ctx, h)
			if err != nil {
				errs[i] = fmt.Errorf("getblockhash %d: %w", h, err)
				return
			}
			raw, err := f.node.GetRawBlock(ctx, hash)
			if err != nil {
				errs[i] = fmt.Errorf("getblock %s: %w", hash, err)
				return
			}
			msg, err := f.params.ParseBlock(raw)
			if err != nil {
				errs[i] = fmt.Errorf("parsing block %d %s: %w", h, hash, err)
				return
			}
			if got := msg.BlockHash().String(); got != hash {
				errs[i] = fmt.Errorf("block %d: node sent %s for %s", h, got, hash)
				return
			}
			out[i] = fetchedBlock{height: h, hash: hash, msg: msg}
		}(i)
	}
	wg.Wait()
	// Keep the blocks before the first failure; a later poll retries the rest.
	for i, err := range errs {
		if err != nil {
			if i == 0 {
				return nil, err
			}
			return out[:i], nil
		}
	}
	return out, nil
}

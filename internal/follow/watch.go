package follow

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/store"
)

// Watcher is told what the follower changes, so services built on the chain
// data (watch-only wallets) keep their own tables in step in the same
// transaction.
type Watcher interface {
	// Extend is called with the tracked scripts a block, imported block or
	// mempool batch pays, before it is applied. It may track more scripts
	// (in its own transaction) and reports whether it did; the follower then
	// matches again, so payments to the new scripts in the same block count.
	Extend(ctx context.Context, paid [][]byte) (bool, error)
	// Changed runs inside the transaction that recorded the change.
	Changed(ctx context.Context, tx *store.Tx, c Change) error
}

// Change says which transactions were recorded or changed status.
type Change struct {
	// Connected is the height of the block just connected, else 0.
	Connected int64
	// Disconnected is the height of the block just disconnected, else 0.
	Disconnected int64
	// Imported marks history recovered by ImportBlock rather than news.
	Imported bool
	Txids    []string
}

// Watchers runs several watchers in order: Extend asks each, Changed tells
// each in turn within the same transaction.
type Watchers []Watcher

// Extend implements Watcher.
func (ws Watchers) Extend(ctx context.Context, paid [][]byte) (bool, error) {
	grew := false
	for _, w := range ws {
		g, err := w.Extend(ctx, paid)
		if err != nil {
			return grew, err
		}
		grew = grew || g
	}
	return grew, nil
}

// Changed implements Watcher.
func (ws Watchers) Changed(ctx context.Context, tx *store.Tx, c Change) error {
	for _, w := range ws {
		if err := w.Changed(ctx, tx, c); err != nil {
			return err
		}
	}
	return nil
}

// SetWatcher installs w. Call it before Run.
func (f *Follower) SetWatcher(w Watcher) { f.watcher = w }

func (f *Follower) notify(ctx context.Context, tx *store.Tx, c Change) error {
	if f.watcher == nil {
		return nil
	}
	return f.watcher.Changed(ctx, tx, c)
}

func txids(rs []*relevantTx) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.txid
	}
	return out
}

// ErrStaleBlock means a block offered to ImportBlock is not in the applied
// chain (a reorg replaced it, or the follower has not reached it yet).
var ErrStaleBlock = errors.New("block is not in the applied chain")

// ImportBlock records the tracked transactions of a block at or below the
// cursor: history recovery for scripts tracked after the follower passed it.
// The block must be the one applied at its height, or lie below the first
// block the follower applied. It returns how many transactions it recorded.
// Importing a block twice is harmless.
func (f *Follower) ImportBlock(ctx context.Context, height int64, hash string, blk *wire.MsgBlock) (int, error) {
	if err := f.loadNewScripts(ctx); err != nil {
		return 0, err
	}
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if f.outpoints == nil {
		if err := f.loadIndex(ctx); err != nil {
			return 0, err
		}
	}
	if f.cursor == nil || height > f.cursor.height {
		return 0, fmt.Errorf("%w: block %d is above the applied tip", ErrStaleBlock, height)
	}
	relevant, added, err := f.matchBlock(ctx, blk, txHashes(blk))
	if err != nil || len(relevant) == 0 {
		return 0, err
	}
	b := fetchedBlock{height: height, hash: hash, msg: blk}
	err = f.db.InTx(ctx, func(tx *store.Tx) error {
		var applied string
		err := tx.QueryRowContext(ctx, `SELECT hash FROM chain_blocks WHERE height = $1`, height).Scan(&applied)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if height >= f.firstHeight {
				return fmt.Errorf("%w: no applied block at height %d", ErrStaleBlock, height)
			}
		case err != nil:
			return err
		case applied != hash:
			return fmt.Errorf("%w: block %d is %s in the applied chain, not %s", ErrStaleBlock, height, applied, hash)
		}
		now := time.Now().Unix()
		for _, r := range relevant {
			if err := f.recordTx(ctx, tx, r, "confirmed", &b, now); err != nil {
				return err
			}
		}
		return f.notify(ctx, tx, Change{Imported: true, Txids: txids(relevant)})
	})
	if err != nil {
		return 0, err
	}
	for op := range added {
		f.outpoints[op] = struct{}{}
	}
	return len(relevant), nil
}

// CaughtUp reports whether the applied tip is at or below height, after
// loading every script tracked so far. When it says yes, blocks up to height
// are someone else's job (a history scan) and every later block is matched
// against those scripts.
func (f *Follower) CaughtUp(ctx context.Context, height int64) (bool, error) {
	if err := f.loadNewScripts(ctx); err != nil {
		return false, err
	}
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	return f.cursor != nil && f.cursor.height <= height, nil
}

// Tip returns the applied tip, or -1 and "" before the first block.
func (f *Follower) Tip() (int64, string) {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if f.cursor == nil {
		return -1, ""
	}
	return f.cursor.height, f.cursor.hash
}

// AddMempoolTx records a transaction Coffer has just broadcast as in the
// mempool, so it shows at once instead of at the next mempool poll. A
// transaction touching nothing tracked is ignored; recording one twice is
// harmless.
func (f *Follower) AddMempoolTx(ctx context.Context, msg *wire.MsgTx) error {
	if err := f.loadNewScripts(ctx); err != nil {
		return err
	}
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if f.outpoints == nil {
		if err := f.loadIndex(ctx); err != nil {
			return err
		}
	}
	added := map[wire.OutPoint]struct{}{}
	r, err := f.match(msg, msg.TxHash(), 0, false, f.knownOutpoint, added)
	if err != nil || r == nil {
		return err
	}
	err = f.db.InTx(ctx, func(tx *store.Tx) error {
		if err := f.recordTx(ctx, tx, r, "mempool", nil, time.Now().Unix()); err != nil {
			return err
		}
		return f.notify(ctx, tx, Change{Txids: []string{r.txid}})
	})
	if err != nil {
		return err
	}
	for op := range added {
		f.outpoints[op] = struct{}{}
	}
	inputs := make([]wire.OutPoint, len(msg.TxIn))
	for i, in := range msg.TxIn {
		inputs[i] = in.PreviousOutPoint
		f.memSpends[in.PreviousOutPoint] = r.txid
	}
	if f.memSeen == nil {
		f.memSeen = map[string][]wire.OutPoint{}
	}
	f.memSeen[r.txid] = inputs
	return nil
}

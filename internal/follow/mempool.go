package follow

import (
	"context"
	"errors"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/store"
)

// syncMempool records new node-mempool transactions that touch tracked
// scripts or outputs, and settles tracked mempool transactions the node no
// longer has. It runs only when the store is at the node's tip (tipHash), so
// a transaction missing from the mempool is not simply in a block we have
// yet to apply.
func (f *Follower) syncMempool(ctx context.Context, tipHash string) error {
	ids, err := f.node.GetRawMempool(ctx)
	if err != nil {
		return err
	}
	f.updateStatus(func(s *Status) { s.MempoolSize = len(ids) })
	if f.memDirty.Swap(false) {
		// New scripts: transactions examined before may touch them now.
		clear(f.memSeen)
	}
	inMempool := make(map[string]struct{}, len(ids))
	var fresh []*wire.MsgTx
	for _, id := range ids {
		inMempool[id] = struct{}{}
		if _, ok := f.memSeen[id]; ok {
			continue
		}
		raw, err := f.node.GetRawTransaction(ctx, id)
		var rpcErr *node.RPCError
		if errors.As(err, &rpcErr) {
			continue // left the mempool since getrawmempool
		}
		if err != nil {
			return err
		}
		tx, err := f.params.ParseTx(raw)
		if err != nil {
			f.log.Debug("follower: skipping mempool tx Coffer cannot parse", "txid", id, "err", err)
			f.memSeen[id] = nil
			continue
		}
		inputs := make([]wire.OutPoint, len(tx.TxIn))
		for i, in := range tx.TxIn {
			inputs[i] = in.PreviousOutPoint
		}
		f.memSeen[id] = inputs
		fresh = append(fresh, tx)
	}
	// memSeen only needs what is still in the node's mempool.
	for id := range f.memSeen {
		if _, ok := inMempool[id]; !ok {
			delete(f.memSeen, id)
		}
	}

	// Parents and children arrive in any order: repeat until no new
	// transaction becomes relevant through an output found in this batch.
	added := map[wire.OutPoint]struct{}{}
	var relevant []*relevantTx
	for changed := true; changed; {
		changed = false
		rest := fresh[:0]
		for _, tx := range fresh {
			r, err := f.match(tx, tx.TxHash(), 0, false, f.knownOutpoint, added)
			if err != nil {
				return err
			}
			if r == nil {
				rest = append(rest, tx)
				continue
			}
			relevant = append(relevant, r)
			changed = true
		}
		fresh = rest
	}

	if grew, err := f.extend(ctx, relevant); err != nil {
		return err
	} else if grew {
		f.memDirty.Store(true) // the next pass looks at the whole mempool again
	}

	vanished, err := f.vanishedTxs(ctx, inMempool, tipHash)
	if err != nil {
		return err
	}
	if len(relevant) == 0 && len(vanished) == 0 {
		return nil
	}
	err = f.db.InTx(ctx, func(tx *store.Tx) error {
		if err := f.checkCursor(ctx, tx); err != nil {
			return err
		}
		now := time.Now().Unix()
		for _, r := range relevant {
			if err := f.recordTx(ctx, tx, r, "mempool", nil, now); err != nil {
				return err
			}
		}
		changed := txids(relevant)
		for status, ids := range vanished {
			ids, err := f.setMempoolStatus(ctx, tx, ids, status, vanishedEvent[status], now)
			if err != nil {
				return err
			}
			changed = append(changed, ids...)
		}
		return f.notify(ctx, tx, Change{Txids: changed})
	})
	if err != nil {
		return err
	}
	for op := range added {
		f.outpoints[op] = struct{}{}
	}
	for _, r := range relevant {
		for _, in := range r.msg.TxIn {
			f.memSpends[in.PreviousOutPoint] = r.txid
		}
	}
	if len(vanished) > 0 {
		return f.loadIndex(ctx) // statuses changed; rebuild spends and outpoints
	}
	return nil
}

var vanishedEvent = map[string]string{
	"dropped":    events.TxDropped,
	"replaced":   events.TxReplaced,
	"conflicted": events.TxConflicted,
}

// vanishedTxs finds tracked mempool transactions the node no longer has and
// works out why, grouped by the status they get: "conflicted" when an input
// is spent on chain, "replaced" when another transaction in the node's
// mempool spends it, "dropped" otherwise (expired or evicted). Mempool spends
// come from the inputs the follower has seen, not from gettxout: btcd's
// gettxout ignores mempool spends.
func (f *Follower) vanishedTxs(ctx context.Context, inMempool map[string]struct{}, tipHash string) (map[string]map[string]struct{}, error) {
	// memSpends holds the inputs of every tracked mempool tx, so it names
	// them all without a database read on this every-poll path.
	goneSet := map[string]struct{}{}
	for _, txid := range f.memSpends {
		if _, ok := inMempool[txid]; !ok {
			goneSet[txid] = struct{}{}
		}
	}
	if len(goneSet) == 0 {
		return nil, nil
	}
	// A block that arrived after getrawmempool would explain the absence.
	if tip, err := f.node.GetBestBlockHash(ctx); err != nil || tip != tipHash {
		return nil, err
	}
	gone := make([]string, 0, len(goneSet))
	stored := make(map[string]*wire.MsgTx, len(goneSet))
	for txid := range goneSet {
		txs, err := f.loadTxs(ctx, `SELECT txid, raw FROM txs WHERE txid = $1 AND status = 'mempool'`, txid)
		if err != nil {
			return nil, err
		}
		if tx, ok := txs[txid]; ok {
			gone = append(gone, txid)
			stored[txid] = tx
		}
	}
	mempoolSpends := map[wire.OutPoint]struct{}{}
	for _, inputs := range f.memSeen {
		for _, op := range inputs {
			mempoolSpends[op] = struct{}{}
		}
	}
	out := map[string]map[string]struct{}{}
	for _, txid := range gone {
		status := "dropped"
		for _, in := range stored[txid].TxIn {
			prev := in.PreviousOutPoint
			if _, parentInMempool := inMempool[prev.Hash.String()]; !parentInMempool {
				onChain, err := f.node.GetTxOut(ctx, prev.Hash.String(), prev.Index, false)
				if err != nil {
					return nil, err
				}
				if onChain == nil {
					status = "conflicted"
					break
				}
			}
			if _, ok := mempoolSpends[prev]; ok {
				status = "replaced"
			}
		}
		if out[status] == nil {
			out[status] = map[string]struct{}{}
		}
		out[status][txid] = struct{}{}
	}
	// A block mined while we looked would make a transaction it confirmed
	// look conflicted (its inputs are spent on chain, by itself): judge
	// again at the next poll, after the follower has applied that block.
	if len(out["conflicted"]) > 0 {
		if tip, err := f.node.GetBestBlockHash(ctx); err != nil || tip != tipHash {
			return nil, err
		}
	}
	return out, nil
}

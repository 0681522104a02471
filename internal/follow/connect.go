package follow

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
)

// relevantTx is a transaction that pays a tracked script or spends a tracked
// output, with the parts of it that do.
type relevantTx struct {
	txid     string
	pos      int
	coinbase bool
	raw      []byte
	msg      *wire.MsgTx
	outputs  []trackedOutput
	spends   []trackedSpend
}

type trackedOutput struct {
	vout   uint32
	script []byte
	amount int64
}

type trackedSpend struct {
	vin  uint32
	prev wire.OutPoint
}

// match returns the tracked parts of tx. known reports whether an outpoint is
// tracked; outputs found are added to added so later transactions of the same
// block or mempool batch can spend them.
func (f *Follower) match(tx *wire.MsgTx, hash chainhash.Hash, pos int, coinbase bool, known func(wire.OutPoint) bool, added map[wire.OutPoint]struct{}) (*relevantTx, error) {
	var r relevantTx
	if !coinbase {
		for vin, in := range tx.TxIn {
			if _, ok := added[in.PreviousOutPoint]; ok || known(in.PreviousOutPoint) {
				r.spends = append(r.spends, trackedSpend{vin: uint32(vin), prev: in.PreviousOutPoint})
			}
		}
	}
	for vout, out := range tx.TxOut {
		if f.isTracked(out.PkScript) {
			r.outputs = append(r.outputs, trackedOutput{vout: uint32(vout), script: out.PkScript, amount: out.Value})
			added[wire.OutPoint{Hash: hash, Index: uint32(vout)}] = struct{}{}
		}
	}
	if len(r.outputs) == 0 && len(r.spends) == 0 {
		return nil, nil
	}
	var buf bytes.Buffer
	if err := tx.Serialize(&buf); err != nil {
		return nil, err
	}
	r.txid, r.pos, r.coinbase, r.raw, r.msg = hash.String(), pos, coinbase, buf.Bytes(), tx
	return &r, nil
}

func (f *Follower) knownOutpoint(op wire.OutPoint) bool {
	_, ok := f.outpoints[op]
	return ok
}

// matchBlock returns the block's relevant transactions and the tracked
// outputs they create. When a watcher extends what is tracked because of
// what the block pays (a wallet's gap window moving on), it matches again so
// payments in the same block to the newly tracked scripts are found too.
func (f *Follower) matchBlock(ctx context.Context, blk *wire.MsgBlock, hashes []chainhash.Hash) ([]*relevantTx, map[wire.OutPoint]struct{}, error) {
	for {
		added := map[wire.OutPoint]struct{}{}
		var relevant []*relevantTx
		for i, tx := range blk.Transactions {
			coinbase := i == 0 && blockchain.IsCoinBaseTx(tx)
			r, err := f.match(tx, hashes[i], i, coinbase, f.knownOutpoint, added)
			if err != nil {
				return nil, nil, err
			}
			if r != nil {
				relevant = append(relevant, r)
			}
		}
		grew, err := f.extend(ctx, relevant)
		if err != nil || !grew {
			return relevant, added, err
		}
	}
}

// extend asks the watcher whether the scripts relevant pays make more scripts
// worth tracking, and loads any it tracked.
func (f *Follower) extend(ctx context.Context, relevant []*relevantTx) (bool, error) {
	if f.watcher == nil || len(relevant) == 0 {
		return false, nil
	}
	var paid [][]byte
	for _, r := range relevant {
		for _, o := range r.outputs {
			paid = append(paid, o.script)
		}
	}
	if len(paid) == 0 {
		return false, nil
	}
	grew, err := f.watcher.Extend(ctx, paid)
	if err != nil || !grew {
		return false, err
	}
	return true, f.loadNewScripts(ctx)
}

func txHashes(blk *wire.MsgBlock) []chainhash.Hash {
	hashes := make([]chainhash.Hash, len(blk.Transactions))
	for i, tx := range blk.Transactions {
		hashes[i] = tx.TxHash() // hashing dominates parsing cost: once per tx
	}
	return hashes
}

// connect applies one block on top of the cursor in a single transaction.
func (f *Follower) connect(ctx context.Context, b fetchedBlock) error {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	hashes := txHashes(b.msg)
	relevant, added, err := f.matchBlock(ctx, b.msg, hashes)
	if err != nil {
		return err
	}
	conflicts := map[string]struct{}{} // tracked mempool txs double-spent by this block
	if len(f.memSpends) > 0 {
		for i, tx := range b.msg.Transactions {
			if i == 0 && blockchain.IsCoinBaseTx(tx) {
				continue
			}
			txid := hashes[i].String()
			for _, in := range tx.TxIn {
				if other, ok := f.memSpends[in.PreviousOutPoint]; ok && other != txid {
					conflicts[other] = struct{}{}
				}
			}
		}
	}
	var conflicted []string
	err = f.db.InTx(ctx, func(tx *store.Tx) error {
		if err := f.checkCursor(ctx, tx); err != nil {
			return err
		}
		now := time.Now().Unix()
		for _, r := range relevant {
			if err := f.recordTx(ctx, tx, r, "confirmed", &b, now); err != nil {
				return err
			}
		}
		var err error
		if conflicted, err = f.markConflicted(ctx, tx, conflicts, now); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO chain_blocks (height, hash, prev_hash, time, tx_count, applied_at) VALUES ($1, $2, $3, $4, $5, $6)`,
			b.height, b.hash, b.msg.Header.PrevBlock.String(), b.msg.Header.Timestamp.Unix(), len(b.msg.Transactions), now); err != nil {
			return err
		}
		if err := setCursor(ctx, tx, b.height, b.hash, now); err != nil {
			return err
		}
		if err := f.repeatConfirmed(ctx, tx, b.height); err != nil {
			return err
		}
		// Watchers see the new tip (confirmations, maturity).
		if err := f.notify(ctx, tx, Change{Connected: b.height, Txids: append(txids(relevant), conflicted...)}); err != nil {
			return err
		}
		_, err = f.events.Append(ctx, tx, events.BlockConnected, "", map[string]any{
			"height": b.height, "hash": b.hash, "prev_hash": b.msg.Header.PrevBlock.String(),
			"time": b.msg.Header.Timestamp.Unix(), "tx_count": len(b.msg.Transactions), "tracked_txs": len(relevant),
		})
		return err
	})
	if err != nil {
		return err
	}
	// Committed: bring the in-memory index up to date.
	for op := range added {
		f.outpoints[op] = struct{}{}
	}
	done := map[string]struct{}{}
	for _, r := range relevant {
		done[r.txid] = struct{}{}
	}
	for _, id := range conflicted {
		done[id] = struct{}{}
	}
	for op, id := range f.memSpends {
		if _, ok := done[id]; ok {
			delete(f.memSpends, op)
		}
	}
	if f.cursor == nil {
		f.firstHeight = b.height
	}
	f.cursor = &cursor{height: b.height, hash: b.hash}
	f.blocksApplied.Add(1)
	f.updateStatus(func(s *Status) { s.SyncedHeight, s.SyncedHash = b.height, b.hash })
	return nil
}

// checkCursor makes sure the database cursor is where this follower believes
// it is, so a second follower on the same database cannot interleave blocks.
func (f *Follower) checkCursor(ctx context.Context, tx *store.Tx) error {
	var c cursor
	err := tx.QueryRowContext(ctx, `SELECT height, hash FROM chain_cursor WHERE id = 1`).Scan(&c.height, &c.hash)
	if errors.Is(err, sql.ErrNoRows) {
		if f.cursor == nil {
			return nil
		}
	} else if err != nil {
		return err
	} else if f.cursor != nil && c == *f.cursor {
		return nil
	}
	return fmt.Errorf("chain cursor moved under the follower (another follower on this database?)")
}

func setCursor(ctx context.Context, tx *store.Tx, height int64, hash string, now int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO chain_cursor (id, height, hash, updated_at) VALUES (1, $1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET height = excluded.height, hash = excluded.hash, updated_at = excluded.updated_at`,
		height, hash, now)
	return err
}

// recordTx stores r with status (confirmed in block b, or mempool when b is
// nil) and its tracked outputs and spends, and emits its events.
func (f *Follower) recordTx(ctx context.Context, tx *store.Tx, r *relevantTx, status string, b *fetchedBlock, now int64) error {
	var prev string
	err := tx.QueryRowContext(ctx, `SELECT status FROM txs WHERE txid = $1`, r.txid).Scan(&prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	isNew := errors.Is(err, sql.ErrNoRows)
	if !isNew && prev == status {
		return nil // already recorded: a replay or a mempool tx we knew
	}
	if prev == "confirmed" && status == "mempool" {
		// A mempool view (a poll, or a rebroadcast's AddMempoolTx) older
		// than the block that confirmed it; only a disconnect undoes that.
		return nil
	}
	var height, pos sql.NullInt64
	var hash sql.NullString
	if b != nil {
		height = sql.NullInt64{Int64: b.height, Valid: true}
		hash = sql.NullString{String: b.hash, Valid: true}
		pos = sql.NullInt64{Int64: int64(r.pos), Valid: true}
	}
	if isNew {
		_, err = tx.ExecContext(ctx, `INSERT INTO txs (txid, status, block_height, block_hash, block_pos, coinbase, raw, first_seen_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)`, r.txid, status, height, hash, pos, r.coinbase, r.raw, now)
	} else {
		_, err = tx.ExecContext(ctx, `UPDATE txs SET status = $2, block_height = $3, block_hash = $4, block_pos = $5, updated_at = $6 WHERE txid = $1`,
			r.txid, status, height, hash, pos, now)
	}
	if err != nil {
		return err
	}
	for _, o := range r.outputs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tx_outputs (txid, vout, script, amount) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
			r.txid, o.vout, o.script, o.amount); err != nil {
			return err
		}
	}
	for _, s := range r.spends {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tx_spends (txid, vin, prev_txid, prev_vout) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
			r.txid, s.vin, s.prev.Hash.String(), s.prev.Index); err != nil {
			return err
		}
	}
	data := map[string]any{"txid": r.txid, "status": status}
	if b != nil {
		data["block_height"], data["block_hash"] = b.height, b.hash
		// A connected block is the tip; an imported one lies at or below
		// the cursor.
		tip := b.height
		if f.cursor != nil && f.cursor.height > tip {
			tip = f.cursor.height
		}
		data["confirmations"] = tip - b.height + 1
	}
	if isNew || status == "mempool" {
		if _, err := f.events.Append(ctx, tx, events.TxSeen, "", data); err != nil {
			return err
		}
	}
	if status == "confirmed" {
		if _, err := f.events.Append(ctx, tx, events.TxConfirmed, "", data); err != nil {
			return err
		}
	}
	return nil
}

// repeatConfirmed emits tx.confirmed again, with its new confirmations, for
// every tracked transaction that block tip takes to between 2 and
// ConfirmationsMax confirmations (recordTx emits the first, at 1). The
// query reads the txs_block_height index: a few rows per block.
func (f *Follower) repeatConfirmed(ctx context.Context, tx *store.Tx, tip int64) error {
	if f.cfg.ConfirmationsMax < 2 {
		return nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT txid, block_height, block_hash FROM txs
		WHERE status = 'confirmed' AND block_height BETWEEN $1 AND $2
		ORDER BY block_height DESC, block_pos`, tip-f.cfg.ConfirmationsMax+1, tip-1)
	reps, err := store.Collect(rows, err, func(r interface{ Scan(...any) error }) (map[string]any, error) {
		var txid, hash string
		var height int64
		if err := r.Scan(&txid, &height, &hash); err != nil {
			return nil, err
		}
		return map[string]any{"txid": txid, "status": "confirmed", "block_height": height,
			"block_hash": hash, "confirmations": tip - height + 1}, nil
	})
	if err != nil {
		return err
	}
	for _, data := range reps {
		if _, err := f.events.Append(ctx, tx, events.TxConfirmed, "", data); err != nil {
			return err
		}
	}
	return nil
}

// markConflicted sets tracked mempool txs (and their tracked descendants) to
// conflicted and returns the txids it changed.
func (f *Follower) markConflicted(ctx context.Context, tx *store.Tx, ids map[string]struct{}, now int64) ([]string, error) {
	return f.setMempoolStatus(ctx, tx, ids, "conflicted", events.TxConflicted, now)
}

// setMempoolStatus moves mempool txs in ids, and tracked mempool txs spending
// their outputs, to status, emitting evType for each.
func (f *Follower) setMempoolStatus(ctx context.Context, tx *store.Tx, ids map[string]struct{}, status, evType string, now int64) ([]string, error) {
	var changed []string
	queue := make([]string, 0, len(ids))
	for id := range ids {
		queue = append(queue, id)
	}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		res, err := tx.ExecContext(ctx, `UPDATE txs SET status = $2, updated_at = $3 WHERE txid = $1 AND status = 'mempool'`, id, status, now)
		if err != nil {
			return nil, err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			continue
		}
		changed = append(changed, id)
		if _, err := f.events.Append(ctx, tx, evType, "", map[string]any{"txid": id, "status": status}); err != nil {
			return nil, err
		}
		rows, err := tx.QueryContext(ctx, `SELECT DISTINCT s.txid FROM tx_spends s JOIN txs t ON t.txid = s.txid
			WHERE s.prev_txid = $1 AND t.status = 'mempool'`, id)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var child string
			if err := rows.Scan(&child); err != nil {
				rows.Close()
				return nil, err
			}
			queue = append(queue, child)
		}
		rows.Close()
	}
	return changed, nil
}

func (f *Follower) lockedReorg(ctx context.Context, nodeHeight int64) error {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	return f.reorg(ctx, nodeHeight)
}

// reorg unwinds our chain to the last block the node still has, one block
// per transaction. nodeHeight is the node's current tip height.
func (f *Follower) reorg(ctx context.Context, nodeHeight int64) error {
	if f.cursor == nil {
		return nil
	}
	oldTip := *f.cursor
	fork := int64(-1)
	for h := min(oldTip.height, nodeHeight); h >= f.firstHeight && oldTip.height-h <= f.cfg.MaxReorgDepth; h-- {
		var ours string
		if err := f.db.QueryRowContext(ctx, `SELECT hash FROM chain_blocks WHERE height = $1`, h).Scan(&ours); err != nil {
			return err
		}
		theirs, err := f.node.GetBlockHash(ctx, h)
		if err != nil {
			return err
		}
		if ours == theirs {
			fork = h
			break
		}
	}
	if fork < 0 {
		return fmt.Errorf("%w: our tip %d %s is not in the node's chain within %d blocks (first applied block %d)",
			ErrReorgTooDeep, oldTip.height, oldTip.hash, f.cfg.MaxReorgDepth, f.firstHeight)
	}
	if fork == oldTip.height {
		return nil // nothing to unwind: a block fetched across a tip change
	}
	depth := oldTip.height - fork
	f.log.Warn("follower: chain reorganisation", "depth", depth, "fork_height", fork, "old_tip", oldTip.hash)
	for h := oldTip.height; h > fork; h-- {
		var reorgInfo map[string]any
		if h == oldTip.height {
			reorgInfo = map[string]any{"depth": depth, "fork_height": fork, "old_tip_height": oldTip.height, "old_tip_hash": oldTip.hash}
		}
		if err := f.disconnect(ctx, reorgInfo); err != nil {
			return fmt.Errorf("disconnecting block %d: %w", h, err)
		}
	}
	f.reorgs.Add(1)
	return f.loadIndex(ctx)
}

// disconnect removes the cursor block: its transactions return to the mempool
// (coinbase ones vanish with it) and the cursor moves to its parent.
func (f *Follower) disconnect(ctx context.Context, reorgInfo map[string]any) error {
	c := *f.cursor
	var parent string
	err := f.db.InTx(ctx, func(tx *store.Tx) error {
		if err := f.checkCursor(ctx, tx); err != nil {
			return err
		}
		now := time.Now().Unix()
		if err := tx.QueryRowContext(ctx, `SELECT hash FROM chain_blocks WHERE height = $1`, c.height-1).Scan(&parent); err != nil {
			return fmt.Errorf("parent of block %d: %w", c.height, err)
		}
		if reorgInfo != nil {
			if _, err := f.events.Append(ctx, tx, events.ChainReorg, "", reorgInfo); err != nil {
				return err
			}
		}
		rows, err := tx.QueryContext(ctx, `SELECT txid, coinbase FROM txs WHERE block_hash = $1 ORDER BY block_pos DESC`, c.hash)
		if err != nil {
			return err
		}
		type txRow struct {
			txid     string
			coinbase bool
		}
		var txs []txRow
		for rows.Next() {
			var r txRow
			if err := rows.Scan(&r.txid, &r.coinbase); err != nil {
				rows.Close()
				return err
			}
			txs = append(txs, r)
		}
		rows.Close()
		ids := make([]string, 0, len(txs))
		for _, r := range txs {
			ids = append(ids, r.txid)
			data := map[string]any{"txid": r.txid, "block_height": c.height, "block_hash": c.hash}
			if r.coinbase {
				// A coinbase cannot return to the mempool: it ceases to exist.
				_, err = tx.ExecContext(ctx, `DELETE FROM txs WHERE txid = $1`, r.txid)
				data["status"] = "removed"
			} else {
				_, err = tx.ExecContext(ctx, `UPDATE txs SET status = 'mempool', block_height = NULL, block_hash = NULL, block_pos = NULL, updated_at = $2 WHERE txid = $1`, r.txid, now)
				data["status"] = "mempool"
			}
			if err != nil {
				return err
			}
			if _, err := f.events.Append(ctx, tx, events.TxReorged, "", data); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM chain_blocks WHERE height = $1`, c.height); err != nil {
			return err
		}
		if err := setCursor(ctx, tx, c.height-1, parent, now); err != nil {
			return err
		}
		if err := f.notify(ctx, tx, Change{Disconnected: c.height, Txids: ids}); err != nil {
			return err
		}
		_, err = f.events.Append(ctx, tx, events.BlockDisconnected, "", map[string]any{"height": c.height, "hash": c.hash})
		return err
	})
	if err != nil {
		return err
	}
	f.cursor = &cursor{height: c.height - 1, hash: parent}
	f.blocksDisconnected.Add(1)
	f.updateStatus(func(s *Status) { s.SyncedHeight, s.SyncedHash = c.height-1, parent })
	return nil
}

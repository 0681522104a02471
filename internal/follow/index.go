package follow

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/store"
)

// Track starts watching scripts for owner. Outputs paying them in blocks
// applied from now on, and in the mempool, are recorded; earlier history is
// the job of a rescan. Tracking a script twice is harmless.
func (f *Follower) Track(ctx context.Context, owner string, scripts ...[]byte) error {
	if err := TrackScripts(ctx, f.db, owner, scripts...); err != nil {
		return err
	}
	return f.loadNewScripts(ctx)
}

// TrackScripts records scripts to watch in the database. A follower running in
// this or another process picks them up before its next block.
func TrackScripts(ctx context.Context, db *store.DB, owner string, scripts ...[]byte) error {
	return db.InTx(ctx, func(tx *store.Tx) error { return TrackScriptsTx(ctx, tx, owner, scripts...) })
}

// TrackScriptsTx is TrackScripts inside the caller's transaction.
func TrackScriptsTx(ctx context.Context, tx *store.Tx, owner string, scripts ...[]byte) error {
	// Followers load scripts by "id above the last seen".
	if err := tx.LockOrdered(ctx, trackedScriptsLockKey); err != nil {
		return err
	}
	now := time.Now().Unix()
	for _, s := range scripts {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO tracked_scripts (script, owner, created_at) VALUES ($1, $2, $3) ON CONFLICT (script) DO NOTHING`,
			s, owner, now); err != nil {
			return err
		}
	}
	return nil
}

// trackedScriptsLockKey serialises inserts into tracked_scripts on PostgreSQL.
const trackedScriptsLockKey = 7316003

// loadNewScripts adds scripts tracked since the last load to the index.
func (f *Follower) loadNewScripts(ctx context.Context) error {
	f.scriptsMu.Lock()
	defer f.scriptsMu.Unlock()
	rows, err := f.db.QueryContext(ctx, `SELECT id, script FROM tracked_scripts WHERE id > $1 ORDER BY id`, f.lastScriptID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var s []byte
		if err := rows.Scan(&id, &s); err != nil {
			return err
		}
		f.scripts[string(s)] = struct{}{}
		f.lastScriptID = id
		f.memDirty.Store(true)
	}
	return rows.Err()
}

func (f *Follower) isTracked(script []byte) bool {
	f.scriptsMu.RLock()
	_, ok := f.scripts[string(script)]
	f.scriptsMu.RUnlock()
	return ok
}

// loadIndex rebuilds the in-memory view (cursor, tracked outpoints, mempool
// spends) from the database, the single source of truth. It runs at start,
// after a reorg and after any failed step.
func (f *Follower) loadIndex(ctx context.Context) error {
	var c cursor
	err := f.db.QueryRowContext(ctx, `SELECT height, hash FROM chain_cursor WHERE id = 1`).Scan(&c.height, &c.hash)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		f.cursor = nil
	case err != nil:
		return err
	default:
		f.cursor = &c
	}
	var first sql.NullInt64
	if err := f.db.QueryRowContext(ctx, `SELECT MIN(height) FROM chain_blocks`).Scan(&first); err != nil {
		return err
	}
	f.firstHeight = first.Int64

	outpoints := map[wire.OutPoint]struct{}{}
	rows, err := f.db.QueryContext(ctx, `SELECT o.txid, o.vout FROM tx_outputs o JOIN txs t ON t.txid = o.txid
		WHERE t.status IN ('mempool', 'confirmed')`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var txid string
		var vout uint32
		if err := rows.Scan(&txid, &vout); err != nil {
			rows.Close()
			return err
		}
		h, err := chainhash.NewHashFromStr(txid)
		if err != nil {
			rows.Close()
			return err
		}
		outpoints[wire.OutPoint{Hash: *h, Index: vout}] = struct{}{}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	memSpends := map[wire.OutPoint]string{}
	mempool, err := f.loadTxs(ctx, `SELECT txid, raw FROM txs WHERE status = 'mempool'`)
	if err != nil {
		return err
	}
	for txid, tx := range mempool {
		for _, in := range tx.TxIn {
			memSpends[in.PreviousOutPoint] = txid
		}
	}
	f.outpoints, f.memSpends = outpoints, memSpends
	if f.memSeen == nil {
		f.memSeen = map[string][]wire.OutPoint{}
	}
	if f.cursor != nil {
		f.updateStatus(func(s *Status) { s.SyncedHeight, s.SyncedHash = f.cursor.height, f.cursor.hash })
	}
	return f.loadNewScripts(ctx)
}

// loadTxs reads and parses stored transactions selected by query (txid, raw).
func (f *Follower) loadTxs(ctx context.Context, query string, args ...any) (map[string]*wire.MsgTx, error) {
	rows, err := f.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]*wire.MsgTx{}
	for rows.Next() {
		var txid string
		var raw []byte
		if err := rows.Scan(&txid, &raw); err != nil {
			return nil, err
		}
		tx, err := f.params.ParseTx(raw)
		if err != nil {
			return nil, err
		}
		out[txid] = tx
	}
	return out, rows.Err()
}

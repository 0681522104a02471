package follow

import (
	"context"
	"fmt"

	"github.com/coffer/coffer/internal/store"
)

// Output is a tracked output of a live (mempool or confirmed) transaction.
type Output struct {
	TxID          string
	Vout          uint32
	Script        []byte
	Amount        int64
	Coinbase      bool
	BlockHeight   int64 // 0 while in the mempool
	Confirmations int64
	Mature        bool   // spendable by consensus: not a coinbase under maturity
	SpentBy       string // txid of a live tx spending it, or ""
}

// Outputs lists tracked outputs of live transactions, spent or not, with
// confirmations counted against tipHeight and coinbase maturity applied
// (maturity blocks, 100 on Bitcoin and Litecoin).
func Outputs(ctx context.Context, db *store.DB, tipHeight int64, maturity int64) ([]Output, error) {
	rows, err := db.QueryContext(ctx, `
		SELECT o.txid, o.vout, o.script, o.amount, t.coinbase, COALESCE(t.block_height, 0),
		       COALESCE((SELECT MIN(s.txid) FROM tx_spends s JOIN txs st ON st.txid = s.txid
		                 WHERE s.prev_txid = o.txid AND s.prev_vout = o.vout AND st.status IN ('mempool', 'confirmed')), '')
		FROM tx_outputs o JOIN txs t ON t.txid = o.txid
		WHERE t.status IN ('mempool', 'confirmed')
		ORDER BY o.txid, o.vout`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Output
	for rows.Next() {
		var o Output
		if err := rows.Scan(&o.TxID, &o.Vout, &o.Script, &o.Amount, &o.Coinbase, &o.BlockHeight, &o.SpentBy); err != nil {
			return nil, err
		}
		if o.BlockHeight > 0 {
			o.Confirmations = tipHeight - o.BlockHeight + 1
		}
		o.Mature = !o.Coinbase || o.Confirmations >= maturity
		out = append(out, o)
	}
	return out, rows.Err()
}

// Snapshot is the live chain state in a comparable form: two followers that
// saw the same chain and mempool produce equal snapshots, whatever path
// (fresh sync, crash and replay, reorg) they took.
type Snapshot struct {
	CursorHeight int64
	CursorHash   string
	Blocks       []string // "height:hash" of every applied block
	Txs          []string // "txid:status:height:hash:pos:coinbase"
	Outputs      []string // "txid:vout:script:amount"
	Spends       []string // "txid:vin:prev_txid:prev_vout"
}

// TakeSnapshot reads the live state of db.
func TakeSnapshot(ctx context.Context, db *store.DB) (*Snapshot, error) {
	var s Snapshot
	s.CursorHeight = -1
	_ = db.QueryRowContext(ctx, `SELECT height, hash FROM chain_cursor WHERE id = 1`).Scan(&s.CursorHeight, &s.CursorHash)
	queries := []struct {
		dst *[]string
		q   string
	}{
		{&s.Blocks, `SELECT height, hash FROM chain_blocks ORDER BY height`},
		{&s.Txs, `SELECT txid, status, COALESCE(block_height, -1), COALESCE(block_hash, ''), COALESCE(block_pos, -1), coinbase
			FROM txs WHERE status IN ('mempool', 'confirmed') ORDER BY txid`},
		{&s.Outputs, `SELECT o.txid, o.vout, o.script, o.amount FROM tx_outputs o JOIN txs t ON t.txid = o.txid
			WHERE t.status IN ('mempool', 'confirmed') ORDER BY o.txid, o.vout`},
		{&s.Spends, `SELECT s.txid, s.vin, s.prev_txid, s.prev_vout FROM tx_spends s JOIN txs t ON t.txid = s.txid
			WHERE t.status IN ('mempool', 'confirmed') ORDER BY s.txid, s.vin`},
	}
	for _, q := range queries {
		rows, err := db.QueryContext(ctx, q.q)
		if err != nil {
			return nil, err
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return nil, err
			}
			line := ""
			for i, v := range vals {
				if i > 0 {
					line += ":"
				}
				if b, ok := v.([]byte); ok {
					line += fmt.Sprintf("%x", b)
				} else {
					line += fmt.Sprint(normalizeBool(v))
				}
			}
			*q.dst = append(*q.dst, line)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return &s, nil
}

// normalizeBool makes SQLite's 0/1 and PostgreSQL's booleans print alike.
func normalizeBool(v any) any {
	switch b := v.(type) {
	case bool:
		if b {
			return 1
		}
		return 0
	}
	return v
}

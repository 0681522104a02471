package wallet

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/follow"
	"github.com/coffer/coffer/internal/store"
)

// Wallet event types, in the event log with the wallet's id.
const (
	EventBalanceChanged = "balance.changed"
	EventWalletSynced   = "wallet.synced"
)

// unconfirmedPos sorts unconfirmed transactions after every confirmed one of
// the same sort height.
const unconfirmedPos = 1 << 40

// Changed implements follow.Watcher: it brings wallet_txs, used flags and
// balances in step with the follower's change, in the follower's
// transaction, and emits the wallets' events.
func (s *Service) Changed(ctx context.Context, tx *store.Tx, c follow.Change) error {
	touched := map[string]struct{}{}
	if len(c.Txids) > 0 {
		tip, err := tipHeight(ctx, tx)
		if err != nil {
			return err
		}
		now := time.Now().Unix()
		for _, txid := range c.Txids {
			if err := s.txChanged(ctx, tx, txid, tip, now, !c.Imported, touched); err != nil {
				return err
			}
		}
	}
	if c.Connected > 0 && !c.Imported {
		if err := s.repeatConfirmed(ctx, tx, c.Connected); err != nil {
			return err
		}
	}
	if c.Connected > 0 {
		// Coinbase outputs that mature with this block change balances.
		rows, err := tx.QueryContext(ctx, `SELECT DISTINCT w.wallet_id FROM txs t JOIN wallet_txs w ON w.txid = t.txid
			WHERE t.coinbase AND t.block_height = $1`, c.Connected-int64(s.params.CoinbaseMaturity)+1)
		ids, err := store.Collect(rows, err, func(r interface{ Scan(...any) error }) (string, error) {
			var id string
			err := r.Scan(&id)
			return id, err
		})
		if err != nil {
			return err
		}
		for _, id := range ids {
			touched[id] = struct{}{}
		}
	}
	for id := range touched {
		if err := s.announceBalance(ctx, tx, id, false); err != nil {
			return err
		}
	}
	return nil
}

// repeatConfirmed emits tx.confirmed again, with its new confirmations, for
// every wallet transaction that block tip takes to between 2 and
// ConfirmationsMax confirmations (the first, at 1, comes from txChanged).
// Wallets still recovering history stay quiet, as for balance.changed. One
// query on txs' block_height index and wallet_txs' txid index: its cost
// follows the transactions in the last few blocks, not the wallets' history.
func (s *Service) repeatConfirmed(ctx context.Context, tx *store.Tx, tip int64) error {
	if s.cfg.ConfirmationsMax < 2 {
		return nil
	}
	type repeat struct {
		walletID, txid string
		received, sent int64
		height         int64
	}
	rows, err := tx.QueryContext(ctx, `SELECT w.wallet_id, w.txid, w.received, w.sent, t.block_height
		FROM txs t JOIN wallet_txs w ON w.txid = t.txid JOIN wallets ws ON ws.id = w.wallet_id
		WHERE t.status = 'confirmed' AND t.block_height BETWEEN $1 AND $2 AND w.status = 'confirmed' AND ws.status = $3
		ORDER BY t.block_height DESC, t.block_pos, w.wallet_id`, tip-s.cfg.ConfirmationsMax+1, tip-1, StatusReady)
	reps, err := store.Collect(rows, err, func(sc interface{ Scan(...any) error }) (repeat, error) {
		var r repeat
		err := sc.Scan(&r.walletID, &r.txid, &r.received, &r.sent, &r.height)
		return r, err
	})
	if err != nil {
		return err
	}
	for _, r := range reps {
		data := map[string]any{"txid": r.txid, "status": "confirmed", "received": amount.Amount(r.received),
			"sent": amount.Amount(r.sent), "net": amount.Amount(r.received - r.sent),
			"block_height": r.height, "confirmations": tip - r.height + 1}
		if _, err := s.events.Append(ctx, tx, events.TxConfirmed, r.walletID, data); err != nil {
			return err
		}
	}
	return nil
}

// txEffect is what one transaction does to one wallet.
type txEffect struct {
	received, sent int64
	scripts        [][]byte // wallet scripts it pays
}

// txChanged updates every wallet's row for txid.
func (s *Service) txChanged(ctx context.Context, tx *store.Tx, txid string, tip, now int64, announce bool, touched map[string]struct{}) error {
	var status string
	var height, pos sql.NullInt64
	var raw []byte
	var firstSeen int64
	err := tx.QueryRowContext(ctx, `SELECT status, block_height, block_pos, raw, first_seen_at FROM txs WHERE txid = $1`, txid).
		Scan(&status, &height, &pos, &raw, &firstSeen)
	if errors.Is(err, sql.ErrNoRows) {
		// A disconnected coinbase ceases to exist; its rows went with it.
		return nil
	}
	if err != nil {
		return err
	}
	effects := map[string]*txEffect{}
	effect := func(id string) *txEffect {
		e := effects[id]
		if e == nil {
			e = &txEffect{}
			effects[id] = e
		}
		return e
	}
	rows, err := tx.QueryContext(ctx, `SELECT a.wallet_id, o.amount, o.script FROM tx_outputs o
		JOIN wallet_addresses a ON a.script = o.script WHERE o.txid = $1`, txid)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id string
		var amount int64
		var script []byte
		if err := rows.Scan(&id, &amount, &script); err != nil {
			rows.Close()
			return err
		}
		e := effect(id)
		e.received += amount
		e.scripts = append(e.scripts, script)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = tx.QueryContext(ctx, `SELECT a.wallet_id, o.amount FROM tx_spends sp
		JOIN tx_outputs o ON o.txid = sp.prev_txid AND o.vout = sp.prev_vout
		JOIN wallet_addresses a ON a.script = o.script WHERE sp.txid = $1`, txid)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id string
		var amount int64
		if err := rows.Scan(&id, &amount); err != nil {
			rows.Close()
			return err
		}
		effect(id).sent += amount
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(effects) == 0 {
		return nil
	}
	if err := refreshUTXOs(ctx, tx, txid); err != nil {
		return err
	}
	fee, err := s.knownFee(ctx, tx, raw)
	if err != nil {
		return err
	}
	sortHeight, sortPos := tip+1, unconfirmedPos+firstSeen
	if status == "confirmed" {
		sortHeight, sortPos = height.Int64, pos.Int64
	}
	for id, e := range effects {
		var prev string
		err := tx.QueryRowContext(ctx, `SELECT status FROM wallet_txs WHERE wallet_id = $1 AND txid = $2`, id, txid).Scan(&prev)
		isNew := errors.Is(err, sql.ErrNoRows)
		if err != nil && !isNew {
			return err
		}
		if isNew {
			_, err = tx.ExecContext(ctx, `INSERT INTO wallet_txs (wallet_id, txid, status, sort_height, sort_pos, received, sent, fee, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, id, txid, status, sortHeight, sortPos, e.received, e.sent, fee, now)
		} else if status != "confirmed" && prev != "confirmed" {
			// Still unconfirmed: keep its place in the history.
			_, err = tx.ExecContext(ctx, `UPDATE wallet_txs SET status = $3, received = $4, sent = $5, fee = $6, updated_at = $7
				WHERE wallet_id = $1 AND txid = $2`, id, txid, status, e.received, e.sent, fee, now)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE wallet_txs SET status = $3, sort_height = $4, sort_pos = $5, received = $6, sent = $7, fee = $8, updated_at = $9
				WHERE wallet_id = $1 AND txid = $2`, id, txid, status, sortHeight, sortPos, e.received, e.sent, fee, now)
		}
		if err != nil {
			return err
		}
		if status == "mempool" || status == "confirmed" {
			for _, script := range e.scripts {
				if _, err := tx.ExecContext(ctx, `UPDATE wallet_addresses SET used = TRUE WHERE wallet_id = $1 AND script = $2 AND NOT used`, id, script); err != nil {
					return err
				}
			}
		}
		touched[id] = struct{}{}
		if !announce || (!isNew && prev == status) {
			continue
		}
		data := map[string]any{"txid": txid, "status": status, "received": amount.Amount(e.received),
			"sent": amount.Amount(e.sent), "net": amount.Amount(e.received - e.sent)}
		if height.Valid {
			data["block_height"] = height.Int64
		}
		if status == "confirmed" && height.Valid {
			data["confirmations"] = tip - height.Int64 + 1
		}
		if _, err := s.events.Append(ctx, tx, txEventType(isNew, prev, status), id, data); err != nil {
			return err
		}
	}
	return nil
}

// liveUnspent is true for an output o of a live transaction t that no live
// transaction spends.
const liveUnspent = `t.status IN ('mempool', 'confirmed') AND NOT EXISTS (
		SELECT 1 FROM tx_spends s JOIN txs st ON st.txid = s.txid
		WHERE s.prev_txid = o.txid AND s.prev_vout = o.vout AND st.status IN ('mempool', 'confirmed'))`

// insertUTXOs inserts wallet_utxos rows from a wallet address a, the output o
// paying it and o's transaction t; the caller adds FROM and WHERE.
const insertUTXOs = `INSERT INTO wallet_utxos (wallet_id, txid, vout, amount, branch, idx, address, height, coinbase)
	SELECT a.wallet_id, o.txid, o.vout, o.amount, a.branch, a.idx, a.address, t.block_height, t.coinbase`

// RebuildUTXOs recomputes a wallet's wallet_utxos rows from the output
// history: for tools that write chain data in bulk rather than through the
// follower.
func RebuildUTXOs(ctx context.Context, tx *store.Tx, walletID string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM wallet_utxos WHERE wallet_id = $1`, walletID); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, insertUTXOs+`
		FROM wallet_addresses a JOIN tx_outputs o ON o.script = a.script JOIN txs t ON t.txid = o.txid
		WHERE a.wallet_id = $1 AND `+liveUnspent, walletID)
	return err
}

// refreshUTXOs brings wallet_utxos in step for the outputs txid creates and
// the outputs it spends, whatever its new status: each is deleted and put
// back when it is still a live unspent output of some wallet.
func refreshUTXOs(ctx context.Context, tx *store.Tx, txid string) error {
	for _, q := range []string{
		`DELETE FROM wallet_utxos WHERE txid = $1`,
		`DELETE FROM wallet_utxos WHERE EXISTS (SELECT 1 FROM tx_spends sp
			WHERE sp.txid = $1 AND sp.prev_txid = wallet_utxos.txid AND sp.prev_vout = wallet_utxos.vout)`,
		insertUTXOs + `
			FROM tx_outputs o JOIN wallet_addresses a ON a.script = o.script JOIN txs t ON t.txid = o.txid
			WHERE o.txid = $1 AND ` + liveUnspent,
		insertUTXOs + `
			FROM tx_spends sp JOIN tx_outputs o ON o.txid = sp.prev_txid AND o.vout = sp.prev_vout
			JOIN wallet_addresses a ON a.script = o.script JOIN txs t ON t.txid = o.txid
			WHERE sp.txid = $1 AND ` + liveUnspent,
	} {
		if _, err := tx.ExecContext(ctx, q, txid); err != nil {
			return err
		}
	}
	return nil
}

// txEventType names the wallet event for a status change.
func txEventType(isNew bool, prev, status string) string {
	switch {
	case status == "confirmed":
		return events.TxConfirmed
	case status == "replaced":
		return events.TxReplaced
	case status == "conflicted":
		return events.TxConflicted
	case status == "dropped":
		return events.TxDropped
	case !isNew && prev == "confirmed":
		return events.TxReorged
	}
	return events.TxSeen
}

// knownFee is the fee of raw when every input spends a recorded output, else
// nil.
func (s *Service) knownFee(ctx context.Context, q querier, raw []byte) (*int64, error) {
	msg, err := s.params.ParseTx(raw)
	if err != nil {
		return nil, err
	}
	var in int64
	for _, txIn := range msg.TxIn {
		var amount int64
		err := q.QueryRowContext(ctx, `SELECT amount FROM tx_outputs WHERE txid = $1 AND vout = $2`,
			txIn.PreviousOutPoint.Hash.String(), txIn.PreviousOutPoint.Index).Scan(&amount)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		in += amount
	}
	var out int64
	for _, o := range msg.TxOut {
		out += o.Value
	}
	fee := in - out
	return &fee, nil
}

// announceBalance emits balance.changed when the wallet's balance differs
// from the one last announced. Wallets still recovering history stay quiet
// unless force; wallet.synced announces their balance.
func (s *Service) announceBalance(ctx context.Context, tx *store.Tx, walletID string, force bool) error {
	var status string
	var last Balance
	err := tx.QueryRowContext(ctx, `SELECT status, bal_confirmed, bal_unconfirmed, bal_immature FROM wallets WHERE id = $1`, walletID).
		Scan(&status, &last.Confirmed, &last.Unconfirmed, &last.Immature)
	if err != nil {
		return err
	}
	if status != StatusReady && !force {
		return nil
	}
	b, err := s.balance(ctx, tx, walletID)
	if err != nil {
		return err
	}
	if b.Confirmed == last.Confirmed && b.Unconfirmed == last.Unconfirmed && b.Immature == last.Immature {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE wallets SET bal_confirmed = $2, bal_unconfirmed = $3, bal_immature = $4 WHERE id = $1`,
		walletID, b.Confirmed, b.Unconfirmed, b.Immature); err != nil {
		return err
	}
	_, err = s.events.Append(ctx, tx, EventBalanceChanged, walletID, b.JSON())
	return err
}

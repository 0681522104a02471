package wallet

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/coffer/coffer/internal/amount"
)

// Balance is a wallet's money as its unspent outputs imply it. Total =
// Confirmed + Unconfirmed + Immature.
type Balance struct {
	Confirmed   amount.Amount `json:"confirmed"`   // in blocks, spendable by consensus
	Unconfirmed amount.Amount `json:"unconfirmed"` // outputs of mempool transactions
	Immature    amount.Amount `json:"immature"`    // coinbase outputs not yet mature
	Spendable   amount.Amount `json:"spendable"`   // confirmed, not reserved by a proposal
	Reserved    amount.Amount `json:"reserved"`    // held by open proposals
	Total       amount.Amount `json:"total"`
	Height      int64         `json:"height"` // the applied tip it was computed at
}

// JSON is the balance as an event payload.
func (b Balance) JSON() map[string]any {
	return map[string]any{"confirmed": b.Confirmed, "unconfirmed": b.Unconfirmed, "immature": b.Immature,
		"spendable": b.Spendable, "total": b.Total, "height": b.Height}
}

// UTXO is an unspent output of a wallet.
type UTXO struct {
	Txid          string        `json:"txid"`
	Vout          uint32        `json:"vout"`
	Amount        amount.Amount `json:"amount"`
	Address       string        `json:"address"`
	Branch        string        `json:"branch"`
	Index         uint32        `json:"index"`
	Confirmations int64         `json:"confirmations"` // 0 in the mempool
	Height        *int64        `json:"block_height"`
	Coinbase      bool          `json:"coinbase"`
	Immature      bool          `json:"immature"`
	Reserved      bool          `json:"reserved"`
	ProposalID    string        `json:"proposal_id,omitempty"`
}

// utxos returns every unspent output of the wallet, ordered by outpoint.
func (s *Service) utxos(ctx context.Context, q querier, walletID string, tip int64) ([]UTXO, error) {
	reserved, err := reservations(ctx, q, walletID)
	if err != nil {
		return nil, err
	}
	rows, err := q.QueryContext(ctx, `SELECT txid, vout, amount, address, branch, idx, height, coinbase
		FROM wallet_utxos WHERE wallet_id = $1 ORDER BY txid, vout`, walletID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []UTXO{}
	for rows.Next() {
		var u UTXO
		var height sql.NullInt64
		var branch int
		if err := rows.Scan(&u.Txid, &u.Vout, &u.Amount, &u.Address, &branch, &u.Index, &height, &u.Coinbase); err != nil {
			return nil, err
		}
		u.Branch = branchNames[branch]
		if height.Valid {
			h := height.Int64
			u.Height = &h
			u.Confirmations = tip - h + 1
		}
		u.Immature = u.Coinbase && u.Confirmations < int64(s.params.CoinbaseMaturity)
		u.ProposalID, u.Reserved = reserved[outpointKey{u.Txid, u.Vout}]
		out = append(out, u)
	}
	return out, rows.Err()
}

type outpointKey struct {
	txid string
	vout uint32
}

// reservations maps the wallet's outputs held by open proposals to the
// proposal holding each.
func reservations(ctx context.Context, q querier, walletID string) (map[outpointKey]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT r.txid, r.vout, r.proposal_id FROM wallet_reservations r
		JOIN wallet_proposals p ON p.id = r.proposal_id WHERE p.wallet_id = $1`, walletID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[outpointKey]string{}
	for rows.Next() {
		var k outpointKey
		var id string
		if err := rows.Scan(&k.txid, &k.vout, &id); err != nil {
			return nil, err
		}
		out[k] = id
	}
	return out, rows.Err()
}

// balance sums the wallet's unspent outputs in the database, so even a wallet
// with a very large UTXO set costs one aggregate read.
func (s *Service) balance(ctx context.Context, q querier, walletID string) (Balance, error) {
	tip, err := tipHeight(ctx, q)
	if err != nil {
		return Balance{}, err
	}
	// Coinbase outputs at or above this height are immature.
	immatureFrom := tip - int64(s.params.CoinbaseMaturity) + 2
	const mature = `u.height IS NOT NULL AND NOT (u.coinbase AND u.height >= $2)`
	var unconfirmed, immature, confirmed, reserved sql.NullInt64
	err = q.QueryRowContext(ctx, `SELECT
			SUM(CASE WHEN u.height IS NULL THEN u.amount END),
			SUM(CASE WHEN u.height IS NOT NULL AND u.coinbase AND u.height >= $2 THEN u.amount END),
			SUM(CASE WHEN `+mature+` THEN u.amount END)
		FROM wallet_utxos u WHERE u.wallet_id = $1`, walletID, immatureFrom).Scan(&unconfirmed, &immature, &confirmed)
	if err != nil {
		return Balance{}, err
	}
	err = q.QueryRowContext(ctx, `SELECT SUM(u.amount) FROM wallet_reservations r
		JOIN wallet_proposals p ON p.id = r.proposal_id
		JOIN wallet_utxos u ON u.wallet_id = p.wallet_id AND u.txid = r.txid AND u.vout = r.vout
		WHERE p.wallet_id = $1 AND `+mature, walletID, immatureFrom).Scan(&reserved)
	if err != nil {
		return Balance{}, err
	}
	b := Balance{Height: tip, Unconfirmed: amount.Amount(unconfirmed.Int64), Immature: amount.Amount(immature.Int64),
		Confirmed: amount.Amount(confirmed.Int64), Reserved: amount.Amount(reserved.Int64)}
	if b.Spendable, err = amount.Sub(b.Confirmed, b.Reserved); err != nil {
		return Balance{}, err
	}
	for _, part := range []amount.Amount{b.Confirmed, b.Unconfirmed, b.Immature} {
		if b.Total, err = amount.Add(b.Total, part); err != nil {
			return Balance{}, err
		}
	}
	return b, nil
}

// Balance returns the wallet's balance.
func (s *Service) Balance(ctx context.Context, walletID string) (Balance, error) {
	if _, err := s.Get(ctx, walletID); err != nil {
		return Balance{}, err
	}
	return s.balance(ctx, s.db, walletID)
}

// UTXOFilter narrows a UTXO listing.
type UTXOFilter struct {
	MinConf         int64
	MinAmount       amount.Amount
	MaxAmount       amount.Amount // 0: no maximum
	IncludeReserved bool
	IncludeImmature bool
}

// UTXOs lists the wallet's unspent outputs that pass f, ordered by
// outpoint.
func (s *Service) UTXOs(ctx context.Context, walletID string, f UTXOFilter) ([]UTXO, error) {
	if _, err := s.Get(ctx, walletID); err != nil {
		return nil, err
	}
	if f.MinConf < 0 || f.MinAmount < 0 || f.MaxAmount < 0 {
		return nil, errorf(ErrInvalid, "min_conf, min_amount and max_amount must not be negative")
	}
	tip, err := tipHeight(ctx, s.db)
	if err != nil {
		return nil, err
	}
	all, err := s.utxos(ctx, s.db, walletID, tip)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, u := range all {
		if u.Confirmations < f.MinConf || u.Amount < f.MinAmount || (f.MaxAmount > 0 && u.Amount > f.MaxAmount) ||
			(u.Reserved && !f.IncludeReserved) || (u.Immature && !f.IncludeImmature) {
			continue
		}
		out = append(out, u)
	}
	return out, nil
}

// Tx is a transaction as a wallet sees it.
type Tx struct {
	Txid          string         `json:"txid"`
	Status        string         `json:"status"`
	Net           amount.Amount  `json:"net"` // received − sent
	Received      amount.Amount  `json:"received"`
	Sent          amount.Amount  `json:"sent"`
	Fee           *amount.Amount `json:"fee"` // null when an input is unknown to Coffer
	Confirmations int64          `json:"confirmations"`
	Height        *int64         `json:"block_height"`
	BlockHash     *string        `json:"block_hash"`
	BlockTime     *time.Time     `json:"block_time"`
	FirstSeen     time.Time      `json:"first_seen"`
	Inputs        []TxInput      `json:"inputs,omitempty"`
	Outputs       []TxOutput     `json:"outputs,omitempty"`
}

// TxInput is an input; Mine when it spends the wallet's output.
type TxInput struct {
	PrevTxid string         `json:"prev_txid"`
	PrevVout uint32         `json:"prev_vout"`
	Amount   *amount.Amount `json:"amount"` // null when the spent output is unknown to Coffer
	Address  string         `json:"address,omitempty"`
	Mine     bool           `json:"mine"`
}

// TxOutput is an output; Mine when it pays the wallet.
type TxOutput struct {
	Vout    uint32        `json:"vout"`
	Amount  amount.Amount `json:"amount"`
	Address string        `json:"address,omitempty"` // empty for scripts without one
	Mine    bool          `json:"mine"`
	Branch  string        `json:"branch,omitempty"`
	Index   *uint32       `json:"index,omitempty"`
}

// TxPage is one page of a wallet's history.
type TxPage struct {
	Transactions []Tx   `json:"transactions"`
	Next         string `json:"next,omitempty"` // cursor of the next page; empty on the last
}

// MaxPageSize bounds a history page.
const MaxPageSize = 500

// Transactions returns the wallet's history newest first: unconfirmed
// transactions, then confirmed ones by block height and position. cursor is
// the Next of the previous page ("" for the first). Pages are keyset-paged
// on an index, so deep pages cost what the first does.
func (s *Service) Transactions(ctx context.Context, walletID, cursor string, limit int, details bool) (*TxPage, error) {
	if _, err := s.Get(ctx, walletID); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > MaxPageSize {
		return nil, errorf(ErrInvalid, "limit must be between 1 and %d", MaxPageSize)
	}
	q := txSelect + ` WHERE w.wallet_id = $1`
	args := []any{walletID}
	if cursor != "" {
		h, p, id, err := decodeCursor(cursor)
		if err != nil {
			return nil, err
		}
		// A row-value comparison, not the equivalent OR chain: PostgreSQL
		// seeks wallet_txs_order to it, where the OR chain is only a filter
		// over every newer row (deep pages then cost their depth).
		q += ` AND (w.sort_height, w.sort_pos, w.txid) < ($2, $3, $4)`
		args = append(args, h, p, id)
	}
	q += fmt.Sprintf(` ORDER BY w.sort_height DESC, w.sort_pos DESC, w.txid DESC LIMIT %d`, limit+1)
	txs, keys, err := s.scanTxs(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	page := &TxPage{Transactions: txs}
	if len(txs) > limit {
		page.Transactions = txs[:limit]
		k := keys[limit-1]
		page.Next = encodeCursor(k.height, k.pos, k.txid)
	}
	if details {
		for i := range page.Transactions {
			if err := s.addDetails(ctx, walletID, &page.Transactions[i]); err != nil {
				return nil, err
			}
		}
	}
	return page, nil
}

// Transaction returns one transaction of the wallet with its inputs and
// outputs.
func (s *Service) Transaction(ctx context.Context, walletID, txid string) (*Tx, error) {
	if _, err := s.Get(ctx, walletID); err != nil {
		return nil, err
	}
	if _, err := chainhash.NewHashFromStr(txid); err != nil || len(txid) != 64 {
		return nil, errorf(ErrInvalid, "%q is not a transaction id (64 hex digits)", txid)
	}
	txs, _, err := s.scanTxs(ctx, txSelect+` WHERE w.wallet_id = $1 AND w.txid = $2`, walletID, strings.ToLower(txid))
	if err != nil {
		return nil, err
	}
	if len(txs) == 0 {
		return nil, errorf(ErrNotFound, "wallet %s has no transaction %s", walletID, txid)
	}
	t := txs[0]
	return &t, s.addDetails(ctx, walletID, &t)
}

const txSelect = `SELECT w.txid, w.status, w.received, w.sent, w.fee, w.sort_height, w.sort_pos,
		t.block_height, t.block_hash, b.time, t.first_seen_at
	FROM wallet_txs w JOIN txs t ON t.txid = w.txid
	LEFT JOIN chain_blocks b ON b.height = t.block_height AND b.hash = t.block_hash`

type sortKey struct {
	height, pos int64
	txid        string
}

func (s *Service) scanTxs(ctx context.Context, q string, args ...any) ([]Tx, []sortKey, error) {
	tip, err := tipHeight(ctx, s.db)
	if err != nil {
		return nil, nil, err
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	txs := []Tx{}
	var keys []sortKey
	for rows.Next() {
		var t Tx
		var k sortKey
		var fee, height, btime sql.NullInt64
		var bhash sql.NullString
		var firstSeen int64
		if err := rows.Scan(&t.Txid, &t.Status, &t.Received, &t.Sent, &fee, &k.height, &k.pos,
			&height, &bhash, &btime, &firstSeen); err != nil {
			return nil, nil, err
		}
		k.txid = t.Txid
		if t.Net, err = amount.Sub(t.Received, t.Sent); err != nil {
			return nil, nil, err
		}
		if fee.Valid {
			f := amount.Amount(fee.Int64)
			t.Fee = &f
		}
		if height.Valid {
			h := height.Int64
			t.Height, t.Confirmations = &h, tip-h+1
			hash := bhash.String
			t.BlockHash = &hash
		}
		if btime.Valid {
			bt := time.Unix(btime.Int64, 0).UTC()
			t.BlockTime = &bt
		}
		t.FirstSeen = time.Unix(firstSeen, 0).UTC()
		txs = append(txs, t)
		keys = append(keys, k)
	}
	return txs, keys, rows.Err()
}

// addDetails fills in t's inputs and outputs, marking the wallet's.
func (s *Service) addDetails(ctx context.Context, walletID string, t *Tx) error {
	var raw []byte
	if err := s.db.QueryRowContext(ctx, `SELECT raw FROM txs WHERE txid = $1`, t.Txid).Scan(&raw); err != nil {
		return err
	}
	msg, err := s.params.ParseTx(raw)
	if err != nil {
		return err
	}
	t.Inputs = make([]TxInput, 0, len(msg.TxIn))
	for _, in := range msg.TxIn {
		ti := TxInput{PrevTxid: in.PreviousOutPoint.Hash.String(), PrevVout: in.PreviousOutPoint.Index}
		var amt int64
		var script []byte
		var mine bool
		err := s.db.QueryRowContext(ctx, `SELECT o.amount, o.script, EXISTS (SELECT 1 FROM wallet_addresses a WHERE a.wallet_id = $3 AND a.script = o.script)
			FROM tx_outputs o WHERE o.txid = $1 AND o.vout = $2`, ti.PrevTxid, ti.PrevVout, walletID).Scan(&amt, &script, &mine)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		default:
			a := amount.Amount(amt)
			ti.Amount, ti.Mine = &a, mine
			ti.Address, _ = s.params.ScriptAddress(script)
		}
		t.Inputs = append(t.Inputs, ti)
	}
	t.Outputs = make([]TxOutput, 0, len(msg.TxOut))
	for vout, out := range msg.TxOut {
		to := TxOutput{Vout: uint32(vout), Amount: amount.Amount(out.Value)}
		to.Address, _ = s.params.ScriptAddress(out.PkScript)
		var branch int
		var idx uint32
		err := s.db.QueryRowContext(ctx, `SELECT branch, idx FROM wallet_addresses WHERE wallet_id = $1 AND script = $2`,
			walletID, out.PkScript).Scan(&branch, &idx)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		default:
			to.Mine, to.Branch, to.Index = true, branchNames[branch], &idx
		}
		t.Outputs = append(t.Outputs, to)
	}
	return nil
}

// Cursors are opaque to callers: base64 of "height.pos.txid".
func encodeCursor(height, pos int64, txid string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("%d.%d.%s", height, pos, txid)))
}

func decodeCursor(c string) (int64, int64, string, error) {
	bad := errorf(ErrInvalid, "cursor %q is not one this server returned", c)
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, 0, "", bad
	}
	parts := strings.Split(string(b), ".")
	if len(parts) != 3 || len(parts[2]) != 64 {
		return 0, 0, "", bad
	}
	h, err1 := strconv.ParseInt(parts[0], 10, 64)
	p, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, "", bad
	}
	return h, p, parts[2], nil
}

package ledger

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/store"
)

// Transfer kinds.
const (
	TransferInternal   = "transfer"   // between accounts, asked for through the API
	TransferDeposit    = "deposit"    // a deposit credited
	TransferReversal   = "reversal"   // a credited deposit reorged out
	TransferWithdrawal = "withdrawal" // withdrawals signed into a batch
	TransferSettlement = "settlement" // a batch confirmed: holdings and fee booked
	TransferUnsettle   = "unsettlement"
	TransferRefund     = "refund" // a failed batch's withdrawals returned
	TransferImport     = "import"
)

// Transfer is one atomic movement: postings that sum to zero per asset.
type Transfer struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	Ref       string    `json:"ref,omitempty"`
	Memo      string    `json:"memo,omitempty"`
	Postings  []Posting `json:"postings"`
	CreatedAt time.Time `json:"created_at"`
}

// Posting is one leg of a transfer.
type Posting struct {
	AccountID    string        `json:"account_id"`
	Asset        string        `json:"asset"`
	Amount       amount.Amount `json:"amount"` // signed: + credits the account
	BalanceAfter amount.Amount `json:"balance_after"`
}

// leg is a posting to make. release lowers the account's hold by that much
// in the same update (a withdrawal's held funds leaving the account).
type leg struct {
	account string
	amount  int64
	release int64
}

// postOpts describe the transfer post records.
type postOpts struct {
	kind, ref, memo string
	idemKey         string // empty: none
	requestHash     string
	// reversal may take a customer account below zero; it lowers the
	// account's floor and flags it.
	reversal bool
	// funded keeps every debited account, system accounts included, at or
	// above zero available: transfers asked for through the API move
	// existing money and may not create it out of the fees or imports
	// account.
	funded bool
}

// post records a transfer inside tx: it updates each account's balance
// (customer accounts may not go below their floor, checked by the UPDATE and
// by the table's CHECK constraint), writes the postings, and checks they sum
// to zero per asset. Accounts are updated in id order so concurrent
// transfers take row locks in one order.
//
// Callers append their events after their postings: on PostgreSQL the
// event log takes a lock held until commit, and a transaction holding it
// while it waits for an account row deadlocks with one holding the row and
// waiting for the event log (resolved only after deadlock_timeout).
func (s *Service) post(ctx context.Context, tx *store.Tx, o postOpts, legs []leg) (*Transfer, error) {
	merged := map[string]*leg{}
	for _, l := range legs {
		m := merged[l.account]
		if m == nil {
			m = &leg{account: l.account}
			merged[l.account] = m
		}
		var err error
		if m.amount, err = checkedAdd(m.amount, l.amount); err != nil {
			return nil, err
		}
		m.release += l.release
	}
	ids := make([]string, 0, len(merged))
	for id, l := range merged {
		if l.amount != 0 || l.release != 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	now := time.Now().Unix()
	t := &Transfer{ID: newID("tr_"), Kind: o.kind, Ref: o.ref, Memo: o.memo, CreatedAt: unixTime(now)}
	var idem, hash any
	if o.idemKey != "" {
		idem, hash = o.idemKey, o.requestHash
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO ledger_transfers (id, kind, ref, memo, idem_key, request_hash, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, t.ID, o.kind, o.ref, o.memo, idem, hash, now); err != nil {
		return nil, err
	}
	sums := map[string]int64{}
	for _, id := range ids {
		l := merged[id]
		q := s.updateBalanceSQL(l.amount < 0, o.reversal, o.funded)
		var p Posting
		var kind string
		err := tx.QueryRowContext(ctx, q, id, l.amount, l.release, now).Scan(&p.BalanceAfter, &kind, &p.Asset)
		if errors.Is(err, sql.ErrNoRows) {
			if _, gerr := getAccount(ctx, tx, id); gerr != nil {
				return nil, gerr
			}
			return nil, errorf(ErrInsufficientFunds, "account %s has less available than %s", id, amount.Amount(-l.amount))
		}
		if err != nil {
			return nil, err
		}
		var serr error
		if sums[p.Asset], serr = checkedAdd(sums[p.Asset], l.amount); serr != nil {
			return nil, serr
		}
		if l.amount == 0 {
			continue // only a hold moved
		}
		p.AccountID, p.Amount = id, amount.Amount(l.amount)
		if _, err := tx.ExecContext(ctx, `INSERT INTO ledger_postings (transfer_id, account_id, asset, amount, balance_after, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, t.ID, id, p.Asset, l.amount, p.BalanceAfter, now); err != nil {
			return nil, err
		}
		t.Postings = append(t.Postings, p)
	}
	for asset, sum := range sums {
		if sum != 0 {
			return nil, errorf(ErrUnbalanced, "the postings in %s sum to %d, not zero", asset, sum)
		}
	}
	return t, nil
}

// updateBalanceSQL is the UPDATE that applies one leg and returns the new
// balance, the account's kind and asset. A debit of a customer account
// matches no row when it would take the available balance below zero.
func (s *Service) updateBalanceSQL(debit, reversal, funded bool) string {
	least, greatest := "LEAST", "GREATEST"
	if s.db.Dialect() == store.SQLite {
		least, greatest = "MIN", "MAX"
	}
	// $2 amount, $3 released hold; "avail" is the available balance after.
	const avail = `(balance + $2 - held + $3)`
	set := `balance = balance + $2, held = held - $3, updated_at = $4, floor = ` +
		least + `(0, ` + greatest + `(floor, ` + avail + `))`
	if reversal {
		// Only a customer account is lowered and flagged: the system
		// accounts (the hot wallet's is always negative) have no floor.
		set = `balance = balance + $2, held = held - $3, updated_at = $4,
			floor = CASE WHEN kind = 'customer' THEN ` + least + `(floor, ` + avail + `) ELSE floor END,
			flagged = (flagged OR (kind = 'customer' AND ` + avail + ` < 0))`
	}
	q := `UPDATE ledger_accounts SET ` + set + ` WHERE id = $1`
	switch {
	case debit && funded:
		q += ` AND ` + avail + ` >= 0`
	case debit && !reversal:
		q += ` AND (kind <> 'customer' OR ` + avail + ` >= 0)`
	}
	return q + ` RETURNING balance, kind, asset`
}

// lockAccounts takes the row locks of accounts in id order, on PostgreSQL,
// for a transaction that posts several transfers: their postings then lock
// no row out of that order. SQLite has one writer at a time: a no-op.
func lockAccounts(ctx context.Context, tx *store.Tx, ids []string) error {
	if tx.Dialect() != store.Postgres {
		return nil
	}
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `SELECT id FROM ledger_accounts WHERE id = $1 FOR UPDATE`, id); err != nil {
			return err
		}
	}
	return nil
}

// checkedAdd adds without overflowing.
func checkedAdd(a, b int64) (int64, error) {
	s, err := amount.Add(amount.Amount(a), amount.Amount(b))
	return int64(s), err
}

// GetTransfer returns a transfer with its postings.
func (s *Service) GetTransfer(ctx context.Context, id string) (*Transfer, error) {
	return getTransfer(ctx, s.db, id)
}

func getTransfer(ctx context.Context, q querier, id string) (*Transfer, error) {
	t := &Transfer{ID: id}
	var created int64
	err := q.QueryRowContext(ctx, `SELECT kind, ref, memo, created_at FROM ledger_transfers WHERE id = $1`, id).
		Scan(&t.Kind, &t.Ref, &t.Memo, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(ErrNotFound, "no transfer %s", id)
	}
	if err != nil {
		return nil, err
	}
	t.CreatedAt = unixTime(created)
	rows, err := q.QueryContext(ctx, `SELECT account_id, asset, amount, balance_after FROM ledger_postings
		WHERE transfer_id = $1 ORDER BY id`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var p Posting
		if err := rows.Scan(&p.AccountID, &p.Asset, &p.Amount, &p.BalanceAfter); err != nil {
			return nil, err
		}
		t.Postings = append(t.Postings, p)
	}
	return t, rows.Err()
}

// hold reserves amt of a customer account's available balance.
func hold(ctx context.Context, tx *store.Tx, accountID string, amt int64) error {
	res, err := tx.ExecContext(ctx, `UPDATE ledger_accounts SET held = held + $2, updated_at = $3
		WHERE id = $1 AND kind = 'customer' AND balance - held - $2 >= 0`, accountID, amt, time.Now().Unix())
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	return errorf(ErrInsufficientFunds, "account %s has less available than %s", accountID, amount.Amount(amt))
}

// release returns amt of a hold to the available balance.
func release(ctx context.Context, tx *store.Tx, accountID string, amt int64) error {
	_, err := tx.ExecContext(ctx, `UPDATE ledger_accounts SET held = held - $2, updated_at = $3 WHERE id = $1`,
		accountID, amt, time.Now().Unix())
	return err
}

// idemLookup finds the transfer recorded under an idempotency key. A key
// recorded with another request is ErrIdempotencyReused.
func idemLookup(ctx context.Context, q querier, table, key, hash string) (id string, found bool, err error) {
	if key == "" {
		return "", false, nil
	}
	var stored sql.NullString
	err = q.QueryRowContext(ctx, `SELECT id, request_hash FROM `+table+` WHERE idem_key = $1`, key).Scan(&id, &stored)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	if stored.String != hash {
		return "", false, errorf(ErrIdempotencyReused, "this Idempotency-Key was used with a different request; use a new key for a new request")
	}
	return id, true, nil
}

// validMemo checks a memo's length.
func validMemo(m string) error {
	if len(m) > maxMemoLen || strings.ContainsRune(m, 0) {
		return errorf(ErrInvalid, "memo must be at most %d bytes of text", maxMemoLen)
	}
	return nil
}

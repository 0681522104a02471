package ledger

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/follow"
	"github.com/coffer/coffer/internal/store"
)

// Deposit statuses.
const (
	DepositPending   = "pending"
	DepositCredited  = "credited"
	DepositProcessed = "processed"
	DepositRemoved   = "removed"
)

// DepositAddress is a hot-wallet receive address handed to an account.
type DepositAddress struct {
	Address   string    `json:"address"`
	AccountID string    `json:"account_id"`
	WalletID  string    `json:"wallet_id"`
	Index     uint32    `json:"index"`
	CreatedAt time.Time `json:"created_at"`
}

// NewDepositAddress derives a fresh receive address of the account's wallet
// for the account.
func (s *Service) NewDepositAddress(ctx context.Context, accountID string) (*DepositAddress, error) {
	a, err := s.GetAccount(ctx, accountID)
	if err != nil {
		return nil, err
	}
	if a.Kind != KindCustomer {
		return nil, errorf(ErrInvalid, "account %s is a system account; deposit addresses are for customer accounts", accountID)
	}
	addr, err := s.wallets.NextAddress(ctx, a.WalletID)
	if err != nil {
		return nil, err
	}
	now := time.Now().Unix()
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO custody_addresses (wallet_id, branch, idx, account_id, address, created_at)
			VALUES ($1, 0, $2, $3, $4, $5)`, a.WalletID, addr.Index, accountID, addr.Address, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &DepositAddress{Address: addr.Address, AccountID: accountID, WalletID: a.WalletID, Index: addr.Index, CreatedAt: unixTime(now)}, nil
}

// DepositAddresses lists the addresses handed to an account, oldest first.
func (s *Service) DepositAddresses(ctx context.Context, accountID string) ([]DepositAddress, error) {
	if _, err := s.GetAccount(ctx, accountID); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT address, wallet_id, idx, created_at FROM custody_addresses
		WHERE account_id = $1 ORDER BY created_at, idx`, accountID)
	return store.Collect(rows, err, func(row interface{ Scan(...any) error }) (DepositAddress, error) {
		d := DepositAddress{AccountID: accountID}
		var created int64
		err := row.Scan(&d.Address, &d.WalletID, &d.Index, &created)
		d.CreatedAt = unixTime(created)
		return d, err
	})
}

// Deposit is an output paying a deposit address.
type Deposit struct {
	ID            string        `json:"id"`
	WalletID      string        `json:"wallet_id"`
	AccountID     string        `json:"account_id"`
	Txid          string        `json:"txid"`
	Vout          uint32        `json:"vout"`
	Address       string        `json:"address"`
	Amount        amount.Amount `json:"amount"`
	Status        string        `json:"status"`
	Confirmations int64         `json:"confirmations"` // counted up to the configured maximum
	BlockHeight   *int64        `json:"block_height"`
	Reversals     int           `json:"reversals"`
	CreatedAt     time.Time     `json:"created_at"`
	UpdatedAt     time.Time     `json:"updated_at"`
}

const depositCols = `id, wallet_id, account_id, txid, vout, address, amount, status, confirmations, block_height, reversals, created_at, updated_at`

func scanDeposit(row interface{ Scan(...any) error }) (*Deposit, error) {
	var d Deposit
	var height sql.NullInt64
	var created, updated int64
	if err := row.Scan(&d.ID, &d.WalletID, &d.AccountID, &d.Txid, &d.Vout, &d.Address, &d.Amount, &d.Status,
		&d.Confirmations, &height, &d.Reversals, &created, &updated); err != nil {
		return nil, err
	}
	if height.Valid {
		d.BlockHeight = &height.Int64
	}
	d.CreatedAt, d.UpdatedAt = unixTime(created), unixTime(updated)
	return &d, nil
}

// GetDeposit returns a deposit.
func (s *Service) GetDeposit(ctx context.Context, id string) (*Deposit, error) {
	return getDeposit(ctx, s.db, id)
}

func getDeposit(ctx context.Context, q querier, id string) (*Deposit, error) {
	d, err := scanDeposit(q.QueryRowContext(ctx, `SELECT `+depositCols+` FROM deposits WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(ErrNotFound, "no deposit %s", id)
	}
	return d, err
}

// DepositFilter narrows ListDeposits; results come oldest first, by id
// after After.
type DepositFilter struct {
	WalletID  string
	AccountID string
	Status    string
	After     string
	Limit     int // default 100, at most 1000
}

// ListDeposits pages deposits.
func (s *Service) ListDeposits(ctx context.Context, f DepositFilter) ([]*Deposit, error) {
	switch f.Status {
	case "", DepositPending, DepositCredited, DepositProcessed, DepositRemoved:
	default:
		return nil, errorf(ErrInvalid, "status must be pending, credited, processed or removed")
	}
	q, args, err := pageQuery(`SELECT `+depositCols+` FROM deposits`, f.After, f.Limit,
		"wallet_id", f.WalletID, "account_id", f.AccountID, "status", f.Status)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	return store.Collect(rows, err, scanDeposit)
}

// pageQuery completes a list query: rows whose id follows after, where each
// given column (pairs of column, value) equals its value unless the value
// is empty, by id, at most limit (default 100, at most 1000).
func pageQuery(base, after string, limit int, filters ...string) (string, []any, error) {
	if limit == 0 {
		limit = 100
	}
	if limit < 1 || limit > 1000 {
		return "", nil, errorf(ErrInvalid, "limit must be between 1 and 1000")
	}
	q := base + ` WHERE id > $1`
	args := []any{after}
	for i := 0; i+1 < len(filters); i += 2 {
		if filters[i+1] != "" {
			args = append(args, filters[i+1])
			q += ` AND ` + filters[i] + ` = $` + strconv.Itoa(len(args))
		}
	}
	args = append(args, limit)
	return q + ` ORDER BY id LIMIT $` + strconv.Itoa(len(args)), args, nil
}

// AckDeposit marks a credited deposit processed: the application has acted
// on it. Acknowledging a processed deposit again changes nothing.
func (s *Service) AckDeposit(ctx context.Context, id string) (*Deposit, error) {
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		d, err := getDeposit(ctx, tx, id)
		if err != nil {
			return err
		}
		switch d.Status {
		case DepositProcessed:
			return nil
		case DepositCredited:
		default:
			return errorf(ErrInvalidState, "deposit %s is %s; only credited deposits can be acknowledged", id, d.Status)
		}
		return s.setDepositStatus(ctx, tx, d, DepositProcessed, EventDepositProcessed)
	})
	if err != nil {
		return nil, err
	}
	return s.GetDeposit(ctx, id)
}

// setDepositStatus moves a deposit to status and emits ev with it.
func (s *Service) setDepositStatus(ctx context.Context, tx *store.Tx, d *Deposit, status, ev string) error {
	now := time.Now().Unix()
	if _, err := tx.ExecContext(ctx, `UPDATE deposits SET status = $2, confirmations = $3, block_height = $4, reversals = $5, updated_at = $6
		WHERE id = $1`, d.ID, status, d.Confirmations, d.BlockHeight, d.Reversals, now); err != nil {
		return err
	}
	d.Status, d.UpdatedAt = status, unixTime(now)
	if ev == "" {
		return nil
	}
	_, err := s.events.Append(ctx, tx, ev, d.WalletID, d)
	return err
}

// Extend implements follow.Watcher; deposit addresses are the wallet
// service's addresses, which it tracks.
func (s *Service) Extend(context.Context, [][]byte) (bool, error) { return false, nil }

// Changed implements follow.Watcher: in the follower's transaction it records
// deposits the change makes or removes, counts confirmations, credits
// deposits that reach the threshold, reverses credited ones a reorg took
// below it, and settles withdrawal batches that confirm.
func (s *Service) Changed(ctx context.Context, tx *store.Tx, c follow.Change) error {
	tip, err := tipHeight(ctx, tx)
	if err != nil {
		return err
	}
	for _, txid := range c.Txids {
		if err := s.depositsOf(ctx, tx, txid, tip); err != nil {
			return err
		}
		if err := s.batchTxChanged(ctx, tx, txid); err != nil {
			return err
		}
	}
	return s.countConfirmations(ctx, tx, tip, c.Disconnected)
}

// txState is a transaction's status and height; live is false once it left
// both the chain and the mempool (or ceased to exist).
func txState(ctx context.Context, q querier, txid string) (live bool, height sql.NullInt64, err error) {
	var status string
	err = q.QueryRowContext(ctx, `SELECT status, block_height FROM txs WHERE txid = $1`, txid).Scan(&status, &height)
	if errors.Is(err, sql.ErrNoRows) {
		return false, height, nil
	}
	return status == "mempool" || status == "confirmed", height, err
}

// depositsOf records the deposits txid pays, or removes them when it is no
// longer live.
func (s *Service) depositsOf(ctx context.Context, tx *store.Tx, txid string, tip int64) error {
	live, height, err := txState(ctx, tx, txid)
	if err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+depositCols+` FROM deposits WHERE txid = $1`, txid)
	ds, err := store.Collect(rows, err, scanDeposit)
	if err != nil {
		return err
	}
	if !live {
		for _, d := range ds {
			if err := s.removeDeposit(ctx, tx, d); err != nil {
				return err
			}
		}
		return nil
	}
	existing := map[uint32]*Deposit{}
	for _, d := range ds {
		existing[d.Vout] = d
	}
	type paid struct {
		vout                       uint32
		amount                     int64
		account, walletID, address string
	}
	rows, err = tx.QueryContext(ctx, `SELECT o.vout, o.amount, ca.account_id, ca.wallet_id, ca.address FROM tx_outputs o
		JOIN wallet_addresses a ON a.script = o.script
		JOIN custody_addresses ca ON ca.wallet_id = a.wallet_id AND ca.branch = a.branch AND ca.idx = a.idx
		WHERE o.txid = $1 AND o.amount > 0`, txid)
	outs, err := store.Collect(rows, err, func(row interface{ Scan(...any) error }) (paid, error) {
		var p paid
		err := row.Scan(&p.vout, &p.amount, &p.account, &p.walletID, &p.address)
		return p, err
	})
	if err != nil {
		return err
	}
	now := time.Now().Unix()
	for _, p := range outs {
		d := existing[p.vout]
		switch {
		case d == nil:
			d = &Deposit{ID: newID("dep_"), WalletID: p.walletID, AccountID: p.account, Txid: txid, Vout: p.vout,
				Address: p.address, Amount: amount.Amount(p.amount), Status: DepositPending,
				CreatedAt: unixTime(now), UpdatedAt: unixTime(now)}
			if height.Valid {
				d.BlockHeight, d.Confirmations = &height.Int64, min(tip-height.Int64+1, s.cfg.TrackConfirmations)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO deposits (id, wallet_id, account_id, txid, vout, address, amount, status,
				confirmations, block_height, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)`,
				d.ID, d.WalletID, d.AccountID, txid, p.vout, p.address, p.amount, d.Status, d.Confirmations, d.BlockHeight, now); err != nil {
				return err
			}
		case d.Status == DepositRemoved:
			// Back in the mempool or a block after it had vanished.
			if err := s.setDepositStatus(ctx, tx, d, DepositPending, ""); err != nil {
				return err
			}
		default:
			continue
		}
		if err := addPending(ctx, tx, d.AccountID, p.amount); err != nil {
			return err
		}
		if _, err := s.events.Append(ctx, tx, EventDepositPending, d.WalletID, d); err != nil {
			return err
		}
	}
	return nil
}

// prefixCols qualifies each of a comma-separated column list with alias.
func prefixCols(alias, cols string) string {
	return alias + "." + strings.ReplaceAll(cols, ", ", ", "+alias+".")
}

// scanWith scans a row into a scanner's own columns and then into extra:
// for a query selecting more columns after those a scan function reads.
type scanWith struct {
	row   interface{ Scan(...any) error }
	extra []any
}

func (s scanWith) Scan(dest ...any) error { return s.row.Scan(append(dest, s.extra...)...) }

// addPending changes an account's pending incoming total.
func addPending(ctx context.Context, tx *store.Tx, accountID string, delta int64) error {
	_, err := tx.ExecContext(ctx, `UPDATE ledger_accounts SET pending_in = pending_in + $2 WHERE id = $1`, accountID, delta)
	return err
}

// removeDeposit handles a deposit whose transaction left the chain and the
// mempool: pending ones are removed, credited ones reversed first.
func (s *Service) removeDeposit(ctx context.Context, tx *store.Tx, d *Deposit) error {
	switch d.Status {
	case DepositRemoved:
		return nil
	case DepositCredited, DepositProcessed:
		if err := s.reverseDeposit(ctx, tx, d); err != nil {
			return err
		}
	}
	if err := addPending(ctx, tx, d.AccountID, -int64(d.Amount)); err != nil {
		return err
	}
	d.Confirmations, d.BlockHeight = 0, nil
	return s.setDepositStatus(ctx, tx, d, DepositRemoved, EventDepositRemoved)
}

// countConfirmations brings deposits' confirmation counts up to date,
// credits those that reached the threshold and reverses credited ones whose
// block a reorg disconnected. disconnected is the height of a block just
// disconnected (0 if none): credited deposits from it are checked whatever
// their count.
func (s *Service) countConfirmations(ctx context.Context, tx *store.Tx, tip, disconnected int64) error {
	if disconnected == 0 {
		disconnected = 1 << 62
	}
	// Each deposit comes with its transaction's height (NULL when it is in
	// no block or unknown), read in the same query.
	type counted struct {
		d      *Deposit
		height sql.NullInt64
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+prefixCols("d", depositCols)+`, t.block_height FROM deposits d
		LEFT JOIN txs t ON t.txid = d.txid
		WHERE d.status = 'pending' OR (d.status IN ('credited', 'processed') AND (d.confirmations < $1 OR d.block_height >= $2))
		ORDER BY d.id`, s.cfg.TrackConfirmations, disconnected)
	cs, err := store.Collect(rows, err, func(row interface{ Scan(...any) error }) (counted, error) {
		var c counted
		var err error
		c.d, err = scanDeposit(scanWith{row, []any{&c.height}})
		return c, err
	})
	if err != nil {
		return err
	}
	for _, c := range cs {
		d, height := c.d, c.height
		conf, bh := int64(0), (*int64)(nil)
		if height.Valid {
			conf, bh = min(tip-height.Int64+1, s.cfg.TrackConfirmations), &height.Int64
		}
		changed := conf != d.Confirmations || (bh == nil) != (d.BlockHeight == nil)
		d.Confirmations, d.BlockHeight = conf, bh
		switch {
		case d.Status == DepositPending && conf >= s.cfg.Confirmations:
			if err := s.creditDeposit(ctx, tx, d); err != nil {
				return err
			}
		case d.Status != DepositPending && bh == nil:
			// Its block was disconnected: the transaction is back in the
			// mempool (or about to be found double-spent). A deposit whose
			// block survives a reorg above it keeps its credit, though its
			// count dips until the new branch is connected.
			if err := s.reverseDeposit(ctx, tx, d); err != nil {
				return err
			}
			if err := s.setDepositStatus(ctx, tx, d, DepositPending, EventDepositReversed); err != nil {
				return err
			}
		case changed:
			if err := s.setDepositStatus(ctx, tx, d, d.Status, ""); err != nil {
				return err
			}
		}
	}
	return nil
}

// creditDeposit posts a deposit to its account.
func (s *Service) creditDeposit(ctx context.Context, tx *store.Tx, d *Deposit) error {
	sys, err := s.systemAccounts(ctx, tx, d.WalletID)
	if err != nil {
		return err
	}
	if _, err := s.post(ctx, tx, postOpts{kind: TransferDeposit, ref: d.ID},
		[]leg{{account: sys.Hot, amount: -int64(d.Amount)}, {account: d.AccountID, amount: int64(d.Amount)}}); err != nil {
		return err
	}
	if err := addPending(ctx, tx, d.AccountID, -int64(d.Amount)); err != nil {
		return err
	}
	return s.setDepositStatus(ctx, tx, d, DepositCredited, EventDepositCredited)
}

// reverseDeposit takes a credited deposit back off its account, which may
// then go below zero: the account is flagged and an alert raised. The
// caller sets the deposit's new status.
func (s *Service) reverseDeposit(ctx context.Context, tx *store.Tx, d *Deposit) error {
	sys, err := s.systemAccounts(ctx, tx, d.WalletID)
	if err != nil {
		return err
	}
	wasFlagged := false
	if err := tx.QueryRowContext(ctx, `SELECT flagged FROM ledger_accounts WHERE id = $1`, d.AccountID).Scan(&wasFlagged); err != nil {
		return err
	}
	if _, err := s.post(ctx, tx, postOpts{kind: TransferReversal, ref: d.ID, reversal: true},
		[]leg{{account: sys.Hot, amount: int64(d.Amount)}, {account: d.AccountID, amount: -int64(d.Amount)}}); err != nil {
		return err
	}
	if err := addPending(ctx, tx, d.AccountID, int64(d.Amount)); err != nil {
		return err
	}
	d.Reversals++
	a, err := getAccount(ctx, tx, d.AccountID)
	if err != nil {
		return err
	}
	if a.Flagged && !wasFlagged {
		if _, err := s.events.Append(ctx, tx, EventAccountFlagged, d.WalletID, a); err != nil {
			return err
		}
	}
	return s.alert(ctx, tx, d.WalletID, "deposit_reversed",
		"a reorg reversed credited deposit "+d.ID+" of "+d.Amount.String()+" sat to account "+d.AccountID, map[string]any{
			"deposit_id": d.ID, "account_id": d.AccountID, "amount": d.Amount, "account_available": a.Available})
}

// alert records an event an operator must see.
func (s *Service) alert(ctx context.Context, tx *store.Tx, walletID, kind, msg string, data map[string]any) error {
	if data == nil {
		data = map[string]any{}
	}
	data["kind"], data["message"] = kind, msg
	_, err := s.events.Append(ctx, tx, EventAlert, walletID, data)
	return err
}

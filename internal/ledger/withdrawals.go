package ledger

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"time"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/txbuild"
)

// Withdrawal statuses.
const (
	WithdrawalQueued    = "queued"
	WithdrawalSigned    = "signed"
	WithdrawalBroadcast = "broadcast"
	WithdrawalConfirmed = "confirmed"
	WithdrawalCancelled = "cancelled"
	WithdrawalFailed    = "failed"
	WithdrawalInternal  = "internal"
)

// WithdrawalRequest asks to pay Amount from an account to an address.
type WithdrawalRequest struct {
	Account      string        `json:"account"`
	Address      string        `json:"address"`
	Amount       amount.Amount `json:"amount"`
	Priority     string        `json:"priority,omitempty"` // low, normal (default), high
	ForceOnchain bool          `json:"force_onchain,omitempty"`
}

// Withdrawal is a payment out of an account.
type Withdrawal struct {
	ID         string        `json:"id"`
	WalletID   string        `json:"wallet_id"`
	AccountID  string        `json:"account_id"`
	Address    string        `json:"address"`
	Amount     amount.Amount `json:"amount"`
	Fee        amount.Amount `json:"fee"` // charged to the account on top of amount
	Priority   string        `json:"priority"`
	Status     string        `json:"status"`
	TransferID *string       `json:"transfer_id"` // internal ones
	BatchID    *string       `json:"batch_id"`
	Txid       *string       `json:"txid"`
	Vout       *uint32       `json:"vout"`
	Error      string        `json:"error,omitempty"`
	CreatedAt  time.Time     `json:"created_at"`
	UpdatedAt  time.Time     `json:"updated_at"`
}

const withdrawalCols = `id, wallet_id, account_id, address, amount, fee, priority, status, transfer_id, batch_id, txid, vout, error, created_at, updated_at`

func scanWithdrawal(row interface{ Scan(...any) error }) (*Withdrawal, error) {
	var w Withdrawal
	var transfer, batch, txid sql.NullString
	var vout sql.NullInt64
	var created, updated int64
	if err := row.Scan(&w.ID, &w.WalletID, &w.AccountID, &w.Address, &w.Amount, &w.Fee, &w.Priority, &w.Status,
		&transfer, &batch, &txid, &vout, &w.Error, &created, &updated); err != nil {
		return nil, err
	}
	if transfer.Valid {
		w.TransferID = &transfer.String
	}
	if batch.Valid {
		w.BatchID = &batch.String
	}
	if txid.Valid {
		w.Txid = &txid.String
	}
	if vout.Valid {
		v := uint32(vout.Int64)
		w.Vout = &v
	}
	w.CreatedAt, w.UpdatedAt = unixTime(created), unixTime(updated)
	return &w, nil
}

// GetWithdrawal returns a withdrawal.
func (s *Service) GetWithdrawal(ctx context.Context, id string) (*Withdrawal, error) {
	return getWithdrawal(ctx, s.db, id)
}

func getWithdrawal(ctx context.Context, q querier, id string) (*Withdrawal, error) {
	w, err := scanWithdrawal(q.QueryRowContext(ctx, `SELECT `+withdrawalCols+` FROM withdrawals WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(ErrNotFound, "no withdrawal %s", id)
	}
	return w, err
}

// WithdrawalFilter narrows ListWithdrawals; results come by id after After.
type WithdrawalFilter struct {
	WalletID, AccountID, Status, BatchID, After string
	Limit                                       int // default 100, at most 1000
}

// ListWithdrawals pages withdrawals.
func (s *Service) ListWithdrawals(ctx context.Context, f WithdrawalFilter) ([]*Withdrawal, error) {
	q, args, err := pageQuery(`SELECT `+withdrawalCols+` FROM withdrawals`, f.After, f.Limit,
		"wallet_id", f.WalletID, "account_id", f.AccountID, "status", f.Status, "batch_id", f.BatchID)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	return store.Collect(rows, err, scanWithdrawal)
}

// RequestWithdrawal holds the amount (plus the configured withdrawal fee) on
// the account and queues the withdrawal for the next batch. An address that
// is another account's deposit address in the same wallet is paid by an
// internal transfer instead, unless ForceOnchain.
func (s *Service) RequestWithdrawal(ctx context.Context, req WithdrawalRequest, key string) (*Withdrawal, error) {
	if req.Priority == "" {
		req.Priority = "normal"
	}
	if !slices.Contains(priorities, req.Priority) {
		return nil, errorf(ErrInvalid, "priority must be low, normal or high")
	}
	if req.Amount <= 0 {
		return nil, errorf(ErrInvalidAmount, "amount must be positive")
	}
	script, err := s.wallets.AddressScript(req.Address)
	if err != nil {
		return nil, err
	}
	if dust := txbuild.DustThreshold(script, s.params); int64(req.Amount) < dust {
		return nil, errorf(ErrDust, "amount %s is below the dust threshold of %d sat for this address", req.Amount, dust)
	}
	a, err := s.GetAccount(ctx, req.Account)
	if err != nil {
		return nil, err
	}
	if a.Kind != KindCustomer {
		return nil, errorf(ErrInvalid, "account %s is a system account; withdrawals are made from customer accounts", a.ID)
	}
	hash := requestHash(req)
	id := newID("wd_")
	err = s.idempotent(ctx, "withdrawals", key, hash, func(tx *store.Tx) (string, error) {
		now := time.Now().Unix()
		var idem, h any
		if key != "" {
			idem, h = key, hash
		}
		var target string
		if !req.ForceOnchain {
			err := tx.QueryRowContext(ctx, `SELECT account_id FROM custody_addresses WHERE wallet_id = $1 AND address = $2`,
				a.WalletID, req.Address).Scan(&target)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return "", err
			}
		}
		if target != "" {
			if target == a.ID {
				return "", errorf(ErrSameAccount, "the address is a deposit address of the account itself")
			}
			t, err := s.post(ctx, tx, postOpts{kind: TransferInternal, ref: id, memo: "withdrawal to " + req.Address, funded: true},
				[]leg{{account: a.ID, amount: -int64(req.Amount)}, {account: target, amount: int64(req.Amount)}})
			if err != nil {
				return "", err
			}
			if err := s.transferEvent(ctx, tx, t, a.WalletID); err != nil {
				return "", err
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO withdrawals (id, wallet_id, account_id, address, amount, priority, status,
				transfer_id, idem_key, request_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'internal', $7, $8, $9, $10, $10)`,
				id, a.WalletID, a.ID, req.Address, req.Amount, req.Priority, t.ID, idem, h, now)
			return id, err
		}
		// The most the customer can be charged on top: the withdrawal fee
		// and, when customers pay the network fee, its largest share.
		fee := int64(s.cfg.WithdrawalFee)
		if s.cfg.CustomerPaysNetworkFee {
			fee += int64(s.cfg.MaxNetworkFeeShare)
		}
		total, err := checkedAdd(int64(req.Amount), fee)
		if err != nil {
			return "", err
		}
		if err := hold(ctx, tx, a.ID, total); err != nil {
			return "", err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO withdrawals (id, wallet_id, account_id, address, amount, fee, priority, status,
			idem_key, request_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $9, $10, $10)`,
			id, a.WalletID, a.ID, req.Address, req.Amount, fee, req.Priority, idem, h, now); err != nil {
			return "", err
		}
		// Described without reading the row back: on PostgreSQL that read
		// would be one more predicate lock for concurrent requests to hit.
		w := &Withdrawal{ID: id, WalletID: a.WalletID, AccountID: a.ID, Address: req.Address, Amount: req.Amount,
			Fee: amount.Amount(fee), Priority: req.Priority, Status: WithdrawalQueued, CreatedAt: unixTime(now), UpdatedAt: unixTime(now)}
		_, err = s.events.Append(ctx, tx, EventWithdrawalQueued, a.WalletID, w)
		return id, err
	}, func(existing string) error {
		id = existing
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.poke()
	return s.GetWithdrawal(ctx, id)
}

// CancelWithdrawal cancels a queued withdrawal and releases its hold. Once
// signed into a batch it can no longer be cancelled.
func (s *Service) CancelWithdrawal(ctx context.Context, id string) (*Withdrawal, error) {
	if s.isBatching(id) {
		return nil, errorf(ErrInvalidState, "withdrawal %s is being signed into a batch and can no longer be cancelled", id)
	}
	err := s.inTx(ctx, func(tx *store.Tx) error {
		w, err := getWithdrawal(ctx, tx, id)
		if err != nil {
			return err
		}
		switch w.Status {
		case WithdrawalCancelled:
			return nil
		case WithdrawalQueued:
		default:
			return errorf(ErrInvalidState, "withdrawal %s is %s; only queued withdrawals can be cancelled", id, w.Status)
		}
		if err := release(ctx, tx, w.AccountID, int64(w.Amount+w.Fee)); err != nil {
			return err
		}
		return s.setWithdrawalStatus(ctx, tx, w, WithdrawalCancelled, EventWithdrawalCancelled)
	})
	if err != nil {
		return nil, err
	}
	return s.GetWithdrawal(ctx, id)
}

// setWithdrawalStatus moves a withdrawal to status (with its batch fields)
// and emits ev.
func (s *Service) setWithdrawalStatus(ctx context.Context, tx *store.Tx, w *Withdrawal, status, ev string) error {
	now := time.Now().Unix()
	if _, err := tx.ExecContext(ctx, `UPDATE withdrawals SET status = $2, batch_id = $3, txid = $4, vout = $5, error = $6, fee = $7, updated_at = $8
		WHERE id = $1`, w.ID, status, w.BatchID, w.Txid, w.Vout, w.Error, w.Fee, now); err != nil {
		return err
	}
	w.Status, w.UpdatedAt = status, unixTime(now)
	if ev == "" {
		return nil
	}
	_, err := s.events.Append(ctx, tx, ev, w.WalletID, w)
	return err
}

// poke wakes the batcher to check the queue's count and sum triggers.
func (s *Service) poke() {
	select {
	case s.wakeBatcher <- struct{}{}:
	default:
	}
}

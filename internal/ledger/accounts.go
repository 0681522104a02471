package ledger

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/store"
)

// Account is a ledger account.
type Account struct {
	ID         string        `json:"id"`
	WalletID   string        `json:"wallet_id"`
	Kind       string        `json:"kind"`
	Name       string        `json:"name"`
	ExternalID *string       `json:"external_id"`
	Asset      string        `json:"asset"`
	Total      amount.Amount `json:"total"`     // the balance: sum of postings
	Available  amount.Amount `json:"available"` // total − held
	Held       amount.Amount `json:"held"`      // by queued withdrawals
	Pending    amount.Amount `json:"pending"`   // deposits below the threshold
	Flagged    bool          `json:"flagged"`   // a reversal took it below zero
	CreatedAt  time.Time     `json:"created_at"`
	UpdatedAt  time.Time     `json:"updated_at"`
}

const accountCols = `id, wallet_id, kind, name, external_id, asset, balance, held, pending_in, flagged, created_at, updated_at`

func scanAccount(row interface{ Scan(...any) error }) (*Account, error) {
	var a Account
	var ext sql.NullString
	var created, updated int64
	if err := row.Scan(&a.ID, &a.WalletID, &a.Kind, &a.Name, &ext, &a.Asset, &a.Total, &a.Held, &a.Pending,
		&a.Flagged, &created, &updated); err != nil {
		return nil, err
	}
	if ext.Valid {
		a.ExternalID = &ext.String
	}
	a.Available = a.Total - a.Held
	a.CreatedAt, a.UpdatedAt = unixTime(created), unixTime(updated)
	return &a, nil
}

// CreateAccountRequest opens a customer account.
type CreateAccountRequest struct {
	Name       string
	ExternalID string // optional; unique per wallet
}

// CreateAccount opens a customer account in a custodial wallet. An external
// id already used in the wallet is a conflict.
func (s *Service) CreateAccount(ctx context.Context, walletID string, req CreateAccountRequest) (*Account, error) {
	name := strings.TrimSpace(req.Name)
	if name == "" || len(name) > maxNameLen {
		return nil, errorf(ErrInvalid, "name is required and at most %d bytes", maxNameLen)
	}
	if len(req.ExternalID) > maxNameLen {
		return nil, errorf(ErrInvalid, "external_id is longer than %d bytes", maxNameLen)
	}
	if _, err := s.GetWallet(ctx, walletID); err != nil {
		return nil, err
	}
	var ext any
	if req.ExternalID != "" {
		ext = req.ExternalID
	}
	id := newID("acc_")
	now := time.Now().Unix()
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO ledger_accounts (id, wallet_id, kind, name, external_id, asset, created_at, updated_at)
			VALUES ($1, $2, 'customer', $3, $4, $5, $6, $6)`, id, walletID, name, ext, s.asset, now)
		return err
	})
	if store.IsUniqueViolation(err) {
		return nil, errorf(ErrConflict, "wallet %s already has an account with external_id %q", walletID, req.ExternalID)
	}
	if err != nil {
		return nil, err
	}
	return s.GetAccount(ctx, id)
}

// GetAccount returns an account.
func (s *Service) GetAccount(ctx context.Context, id string) (*Account, error) {
	return getAccount(ctx, s.db, id)
}

func getAccount(ctx context.Context, q querier, id string) (*Account, error) {
	a, err := scanAccount(q.QueryRowContext(ctx, `SELECT `+accountCols+` FROM ledger_accounts WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(ErrNotFound, "no account %s", id)
	}
	return a, err
}

// AccountFilter narrows ListAccounts.
type AccountFilter struct {
	Kind       string // customer or a system kind; empty: all
	ExternalID string
	After      string // cursor: accounts after this id
	Limit      int    // default 100, at most 1000
}

// ListAccounts pages a wallet's accounts by id.
func (s *Service) ListAccounts(ctx context.Context, walletID string, f AccountFilter) ([]*Account, error) {
	if _, err := s.GetWallet(ctx, walletID); err != nil {
		return nil, err
	}
	q, args, err := pageQuery(`SELECT `+accountCols+` FROM ledger_accounts`, f.After, f.Limit,
		"wallet_id", walletID, "kind", f.Kind, "external_id", f.ExternalID)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	return store.Collect(rows, err, scanAccount)
}

// Entry is one posting on an account.
type Entry struct {
	ID           int64         `json:"id"`
	TransferID   string        `json:"transfer_id"`
	Kind         string        `json:"kind"` // the transfer's
	Ref          string        `json:"ref,omitempty"`
	Memo         string        `json:"memo,omitempty"`
	Amount       amount.Amount `json:"amount"` // signed
	BalanceAfter amount.Amount `json:"balance_after"`
	CreatedAt    time.Time     `json:"created_at"`
}

// Entries pages an account's postings newest first: before is the id of the
// last entry of the previous page (0 for the first page).
func (s *Service) Entries(ctx context.Context, accountID string, before int64, limit int) ([]Entry, error) {
	if _, err := s.GetAccount(ctx, accountID); err != nil {
		return nil, err
	}
	if limit == 0 {
		limit = 100
	}
	if limit < 1 || limit > 1000 || before < 0 {
		return nil, errorf(ErrInvalid, "limit must be between 1 and 1000 and before not negative")
	}
	if before == 0 {
		before = 1 << 62
	}
	rows, err := s.db.QueryContext(ctx, `SELECT p.id, p.transfer_id, t.kind, t.ref, t.memo, p.amount, p.balance_after, p.created_at
		FROM ledger_postings p JOIN ledger_transfers t ON t.id = p.transfer_id
		WHERE p.account_id = $1 AND p.id < $2 ORDER BY p.id DESC LIMIT $3`, accountID, before, limit)
	return store.Collect(rows, err, func(row interface{ Scan(...any) error }) (Entry, error) {
		var e Entry
		var created int64
		err := row.Scan(&e.ID, &e.TransferID, &e.Kind, &e.Ref, &e.Memo, &e.Amount, &e.BalanceAfter, &created)
		e.CreatedAt = unixTime(created)
		return e, err
	})
}

package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/store"
)

// Event types of the ledger.
const (
	EventTransferCreated     = "transfer.created"
	EventDepositPending      = "deposit.pending"
	EventDepositCredited     = "deposit.credited"
	EventDepositReversed     = "deposit.reversed"
	EventDepositRemoved      = "deposit.removed"
	EventDepositProcessed    = "deposit.processed"
	EventWithdrawalQueued    = "withdrawal.queued"
	EventWithdrawalSigned    = "withdrawal.signed"
	EventWithdrawalBroadcast = "withdrawal.broadcast"
	EventWithdrawalConfirmed = "withdrawal.confirmed"
	EventWithdrawalFailed    = "withdrawal.failed"
	EventWithdrawalCancelled = "withdrawal.cancelled"
	EventAccountFlagged      = "account.flagged"
	EventAlert               = "alert"
)

// TransferRequest moves Amount from one account to another of the same
// wallet and asset.
type TransferRequest struct {
	From   string        `json:"from"`
	To     string        `json:"to"`
	Amount amount.Amount `json:"amount"`
	Memo   string        `json:"memo,omitempty"`
}

// Leg is one posting of a multi-leg transfer.
type Leg struct {
	Account string        `json:"account"`
	Amount  amount.Amount `json:"amount"` // signed
}

// LegsRequest is a multi-leg transfer: postings that sum to zero per asset,
// possibly over several wallets (a swap).
type LegsRequest struct {
	Legs []Leg  `json:"legs"`
	Memo string `json:"memo,omitempty"`
}

// requestHash fingerprints a request for idempotency checks.
func requestHash(v any) string {
	b, _ := json.Marshal(v) // plain structs of strings and integers
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Transfer moves money between two accounts. key is the idempotency key
// (empty: none): a repeat returns the first transfer.
func (s *Service) Transfer(ctx context.Context, req TransferRequest, key string) (*Transfer, error) {
	ts, err := s.TransferBatch(ctx, []TransferRequest{req}, key)
	if err != nil {
		return nil, err
	}
	return ts[0], nil
}

// TransferBatch makes up to MaxBatchTransfers transfers atomically: all or
// none.
func (s *Service) TransferBatch(ctx context.Context, reqs []TransferRequest, key string) ([]*Transfer, error) {
	if len(reqs) == 0 || len(reqs) > MaxBatchTransfers {
		return nil, errorf(ErrInvalid, "a batch holds 1 to %d transfers, not %d", MaxBatchTransfers, len(reqs))
	}
	hash := requestHash(reqs)
	for i, r := range reqs {
		if err := validMemo(r.Memo); err != nil {
			return nil, err
		}
		if r.Amount <= 0 {
			return nil, errorf(ErrInvalidAmount, "transfer %d: amount must be positive", i)
		}
		if r.From == r.To {
			return nil, errorf(ErrSameAccount, "transfer %d: from and to are the same account", i)
		}
	}
	var out []*Transfer
	err := s.idempotent(ctx, "ledger_transfers", key, hash, func(tx *store.Tx) (string, error) {
		out = out[:0]
		batchRef := ""
		if len(reqs) > 1 {
			batchRef = newID("tb_")
			ids := make([]string, 0, 2*len(reqs))
			for _, r := range reqs {
				ids = append(ids, r.From, r.To)
			}
			if err := lockAccounts(ctx, tx, ids); err != nil {
				return "", err
			}
		}
		walletIDs := make([]string, 0, len(reqs))
		for i, r := range reqs {
			from, err := s.movable(ctx, tx, r.From)
			if err != nil {
				return "", err
			}
			to, err := s.movable(ctx, tx, r.To)
			if err != nil {
				return "", err
			}
			if from.WalletID != to.WalletID {
				return "", errorf(ErrInvalid, "transfer %d: the accounts belong to different wallets; use a multi-leg transfer for swaps", i)
			}
			if from.Asset != to.Asset {
				return "", errorf(ErrAssetMismatch, "transfer %d: %s holds %s but %s holds %s", i, from.ID, from.Asset, to.ID, to.Asset)
			}
			o := postOpts{kind: TransferInternal, ref: batchRef, memo: r.Memo, funded: true}
			if i == 0 && key != "" {
				o.idemKey, o.requestHash = key, hash
			}
			t, err := s.post(ctx, tx, o, []leg{{account: r.From, amount: -int64(r.Amount)}, {account: r.To, amount: int64(r.Amount)}})
			if err != nil {
				return "", err
			}
			walletIDs = append(walletIDs, from.WalletID)
			out = append(out, t)
		}
		// Events last (see post).
		for i, t := range out {
			if err := s.transferEvent(ctx, tx, t, walletIDs[i]); err != nil {
				return "", err
			}
		}
		return out[0].ID, nil
	}, func(id string) error {
		var err error
		out, err = s.transfersFrom(ctx, id)
		return err
	})
	return out, err
}

// TransferLegs makes a multi-leg transfer.
func (s *Service) TransferLegs(ctx context.Context, req LegsRequest, key string) (*Transfer, error) {
	if len(req.Legs) < 2 || len(req.Legs) > MaxLegs {
		return nil, errorf(ErrInvalid, "a multi-leg transfer has 2 to %d legs", MaxLegs)
	}
	if err := validMemo(req.Memo); err != nil {
		return nil, err
	}
	legs := make([]leg, 0, len(req.Legs))
	for i, l := range req.Legs {
		if l.Amount == 0 {
			return nil, errorf(ErrInvalidAmount, "leg %d: amount must not be zero", i)
		}
		legs = append(legs, leg{account: l.Account, amount: int64(l.Amount)})
	}
	var out *Transfer
	hash := requestHash(req)
	err := s.idempotent(ctx, "ledger_transfers", key, hash, func(tx *store.Tx) (string, error) {
		wallets := []string{}
		for _, l := range req.Legs {
			a, err := s.movable(ctx, tx, l.Account)
			if err != nil {
				return "", err
			}
			if !slices.Contains(wallets, a.WalletID) {
				wallets = append(wallets, a.WalletID)
			}
		}
		t, err := s.post(ctx, tx, postOpts{kind: TransferInternal, memo: req.Memo, idemKey: key, requestHash: hash, funded: true}, legs)
		if err != nil {
			return "", err
		}
		for _, w := range wallets {
			if err := s.transferEvent(ctx, tx, t, w); err != nil {
				return "", err
			}
		}
		out = t
		return t.ID, nil
	}, func(id string) error {
		var err error
		out, err = s.GetTransfer(ctx, id)
		return err
	})
	return out, err
}

// movable loads an account that API transfers may move: not the hot or
// in-flight account, which only the chain moves.
func (s *Service) movable(ctx context.Context, tx *store.Tx, id string) (*Account, error) {
	a, err := getAccount(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	if a.Kind == KindHot || a.Kind == KindInflight {
		return nil, errorf(ErrInvalid, "account %s is the wallet's %s account, which only deposits and withdrawals move", id, a.Kind)
	}
	return a, nil
}

func (s *Service) transferEvent(ctx context.Context, tx *store.Tx, t *Transfer, walletID string) error {
	_, err := s.events.Append(ctx, tx, EventTransferCreated, walletID, t)
	return err
}

// transfersFrom returns the transfer id and, when it is the first of a
// batch, the rest of the batch, in order.
func (s *Service) transfersFrom(ctx context.Context, id string) ([]*Transfer, error) {
	first, err := s.GetTransfer(ctx, id)
	if err != nil {
		return nil, err
	}
	if first.Ref == "" {
		return []*Transfer{first}, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT t.id FROM ledger_transfers t JOIN ledger_postings p ON p.transfer_id = t.id
		WHERE t.ref = $1 GROUP BY t.id ORDER BY MIN(p.id)`, first.Ref)
	ids, err := store.Collect(rows, err, scanString)
	if err != nil {
		return nil, err
	}
	out := make([]*Transfer, 0, len(ids))
	for _, tid := range ids {
		t, err := s.GetTransfer(ctx, tid)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// idempotent runs do in a transaction unless key already names a record in
// table (made by an earlier request with the same hash), in which case
// replay loads that record instead. The key is looked up before the write
// transaction, not in it: on PostgreSQL a read inside a SERIALIZABLE
// transaction is a predicate lock that every concurrent request writing
// the table conflicts with. The unique key settles races: two requests
// racing with one key, the loser's insert violates it, and it replays the
// winner's.
func (s *Service) idempotent(ctx context.Context, table, key, hash string,
	do func(tx *store.Tx) (string, error), replay func(id string) error) error {
	for attempt := 0; ; attempt++ {
		id, found, err := idemLookup(ctx, s.db, table, key, hash)
		if err != nil {
			return err
		}
		if found {
			return replay(id)
		}
		err = s.inTx(ctx, func(tx *store.Tx) error {
			_, err := do(tx)
			return err
		})
		if key != "" && attempt < 2 && store.IsUniqueViolation(err) {
			continue
		}
		return err
	}
}

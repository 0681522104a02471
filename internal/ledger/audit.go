package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/store"
)

// AuditReport is the result of re-deriving the books.
type AuditReport struct {
	CheckedAt   time.Time         `json:"checked_at"`
	Clean       bool              `json:"clean"` // no differences
	Accounts    int               `json:"accounts"`
	Differences []AuditDifference `json:"differences"`
	Warnings    []string          `json:"warnings"` // true but expected, e.g. flagged accounts
	Wallets     []WalletAudit     `json:"wallets"`
}

// AuditDifference is one place where two derivations disagree.
type AuditDifference struct {
	Check     string        `json:"check"`
	WalletID  string        `json:"wallet_id,omitempty"`
	AccountID string        `json:"account_id,omitempty"`
	Expected  amount.Amount `json:"expected"`
	Actual    amount.Amount `json:"actual"`
	Message   string        `json:"message"`
}

// WalletAudit compares a wallet's liabilities with its assets.
type WalletAudit struct {
	WalletID string `json:"wallet_id"`
	Asset    string `json:"asset"`
	// Customers is what customer accounts hold; System what the fees,
	// imports and in-flight accounts hold. Together they equal Booked.
	Customers amount.Amount `json:"customer_liabilities"`
	System    amount.Amount `json:"system_liabilities"`
	// Booked is what the hot-wallet account says Coffer holds.
	Booked amount.Amount `json:"booked_holdings"`
	// OnChain is the wallet's confirmed unspent outputs less confirmed
	// deposits not yet credited: what Booked should be.
	OnChain         amount.Amount `json:"onchain_holdings"`
	PendingDeposits amount.Amount `json:"pending_confirmed_deposits"`
	Unaccounted     amount.Amount `json:"unaccounted"` // OnChain − Booked
}

// Audit re-derives every account balance, hold and pending total from
// postings, withdrawals and deposits, checks every transfer sums to zero,
// and compares each wallet's books with its confirmed outputs on chain. It
// reads one consistent snapshot.
func (s *Service) Audit(ctx context.Context) (*AuditReport, error) {
	var r *AuditReport
	// Read-only, so safe to retry when PostgreSQL cannot serialize it.
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		r = &AuditReport{CheckedAt: time.Now().UTC(), Differences: []AuditDifference{}, Warnings: []string{}, Wallets: []WalletAudit{}}
		return s.audit(ctx, tx, r)
	})
	if err != nil {
		return nil, err
	}
	r.Clean = len(r.Differences) == 0
	return r, nil
}

func (s *Service) audit(ctx context.Context, tx *store.Tx, r *AuditReport) error {
	type acct struct {
		id, wallet, kind                 string
		balance, held, pending, postings int64
		queued, deposits                 int64
		flagged                          bool
	}
	rows, err := tx.QueryContext(ctx, `SELECT a.id, a.wallet_id, a.kind, a.balance, a.held, a.pending_in, a.flagged,
		COALESCE((SELECT SUM(p.amount) FROM ledger_postings p WHERE p.account_id = a.id), 0),
		COALESCE((SELECT SUM(w.amount + w.fee) FROM withdrawals w WHERE w.account_id = a.id AND w.status = 'queued'), 0),
		COALESCE((SELECT SUM(d.amount) FROM deposits d WHERE d.account_id = a.id AND d.status = 'pending'), 0)
		FROM ledger_accounts a ORDER BY a.wallet_id, a.id`)
	accts, err := store.Collect(rows, err, func(row interface{ Scan(...any) error }) (acct, error) {
		var a acct
		err := row.Scan(&a.id, &a.wallet, &a.kind, &a.balance, &a.held, &a.pending, &a.flagged, &a.postings, &a.queued, &a.deposits)
		return a, err
	})
	if err != nil {
		return err
	}
	r.Accounts = len(accts)
	diff := func(check, wallet, account string, expected, actual int64, msg string) {
		r.Differences = append(r.Differences, AuditDifference{Check: check, WalletID: wallet, AccountID: account,
			Expected: amount.Amount(expected), Actual: amount.Amount(actual), Message: msg})
	}
	books := map[string]*WalletAudit{}
	for _, a := range accts {
		if a.balance != a.postings {
			diff("balance_vs_postings", a.wallet, a.id, a.postings, a.balance, "the account's balance differs from the sum of its postings")
		}
		if a.held != a.queued {
			diff("held_vs_withdrawals", a.wallet, a.id, a.queued, a.held, "the account's hold differs from its queued withdrawals")
		}
		if a.pending != a.deposits {
			diff("pending_vs_deposits", a.wallet, a.id, a.deposits, a.pending, "the account's pending total differs from its pending deposits")
		}
		if a.kind == KindCustomer && a.balance-a.held < 0 {
			r.Warnings = append(r.Warnings, fmt.Sprintf("customer account %s is %d sat below zero after a reversed deposit (flagged: %v)",
				a.id, a.held-a.balance, a.flagged))
		}
		w := books[a.wallet]
		if w == nil {
			w = &WalletAudit{WalletID: a.wallet, Asset: s.asset}
			books[a.wallet] = w
		}
		switch a.kind {
		case KindCustomer:
			w.Customers += amount.Amount(a.balance)
		case KindHot:
			w.Booked = amount.Amount(-a.balance)
		default:
			w.System += amount.Amount(a.balance)
		}
	}
	rows, err = tx.QueryContext(ctx, `SELECT transfer_id, asset, SUM(amount) FROM ledger_postings
		GROUP BY transfer_id, asset HAVING SUM(amount) <> 0`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id, asset string
		var sum int64
		if err := rows.Scan(&id, &asset, &sum); err != nil {
			rows.Close()
			return err
		}
		diff("transfer_unbalanced", "", "", 0, sum, fmt.Sprintf("transfer %s's %s postings sum to %d", id, asset, sum))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	ids, err := walletIDsOf(ctx, tx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		w := books[id]
		if w == nil {
			w = &WalletAudit{WalletID: id, Asset: s.asset}
		}
		onchain, pending, err := holdings(ctx, tx, id)
		if err != nil {
			return err
		}
		w.PendingDeposits, w.OnChain = amount.Amount(pending), amount.Amount(onchain-pending)
		w.Unaccounted = w.OnChain - w.Booked
		if w.Customers+w.System != w.Booked {
			diff("liabilities_vs_assets", id, "", int64(w.Booked), int64(w.Customers+w.System),
				"customer and system liabilities differ from the booked holdings")
		}
		if w.Unaccounted != 0 {
			msg := "the chain holds more than the books: run coffer custody import-unaccounted to book it"
			if w.Unaccounted < 0 {
				msg = "the books claim more than the chain holds"
			}
			diff("chain_vs_books", id, "", int64(w.OnChain), int64(w.Booked), msg)
		}
		r.Wallets = append(r.Wallets, *w)
	}
	return nil
}

func walletIDsOf(ctx context.Context, q querier) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT id FROM custody_wallets ORDER BY created_at, id`)
	return store.Collect(rows, err, scanString)
}

// holdings returns the value of a wallet's confirmed outputs that no
// confirmed transaction spends, and the part of it that is deposits not yet
// credited.
func holdings(ctx context.Context, q querier, walletID string) (onchain, pending int64, err error) {
	var a, b sql.NullInt64
	err = q.QueryRowContext(ctx, `SELECT SUM(o.amount) FROM wallet_addresses a
		JOIN tx_outputs o ON o.script = a.script
		JOIN txs t ON t.txid = o.txid AND t.status = 'confirmed'
		WHERE a.wallet_id = $1 AND NOT EXISTS (SELECT 1 FROM tx_spends sp JOIN txs st ON st.txid = sp.txid
			WHERE sp.prev_txid = o.txid AND sp.prev_vout = o.vout AND st.status = 'confirmed')`, walletID).Scan(&a)
	if err != nil {
		return 0, 0, err
	}
	err = q.QueryRowContext(ctx, `SELECT SUM(d.amount) FROM deposits d JOIN txs t ON t.txid = d.txid
		WHERE d.wallet_id = $1 AND d.status = 'pending' AND t.status = 'confirmed'`, walletID).Scan(&b)
	return a.Int64, b.Int64, err
}

// ImportUnaccounted books the hot wallet's confirmed funds that no account
// owns (paid to it outside deposit addresses, or before Coffer kept its
// books) into the imports account. It refuses when the books claim more
// than the chain holds, and returns what it booked (0: nothing to do).
func (s *Service) ImportUnaccounted(ctx context.Context, walletID string) (amount.Amount, error) {
	if _, err := s.GetWallet(ctx, walletID); err != nil {
		return 0, err
	}
	var booked int64
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		booked = 0
		sys, err := s.systemAccounts(ctx, tx, walletID)
		if err != nil {
			return err
		}
		var hot int64
		if err := tx.QueryRowContext(ctx, `SELECT balance FROM ledger_accounts WHERE id = $1`, sys.Hot).Scan(&hot); err != nil {
			return err
		}
		onchain, pending, err := holdings(ctx, tx, walletID)
		if err != nil {
			return err
		}
		// Coins paid to a deposit address belong to its account: if some
		// have no deposit yet, importing them would book them twice once a
		// rescan records the deposit.
		var missed int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM custody_addresses ca
			JOIN wallet_addresses a ON a.wallet_id = ca.wallet_id AND a.branch = ca.branch AND a.idx = ca.idx
			JOIN tx_outputs o ON o.script = a.script
			JOIN txs t ON t.txid = o.txid AND t.status = 'confirmed'
			WHERE ca.wallet_id = $1 AND NOT EXISTS (SELECT 1 FROM deposits d WHERE d.txid = o.txid AND d.vout = o.vout)`,
			walletID).Scan(&missed); err != nil {
			return err
		}
		if missed > 0 {
			return errorf(ErrInvalidState, "%d confirmed output(s) pay deposit addresses of wallet %s but have no deposit; run coffer custody rescan first, then import", missed, walletID)
		}
		extra := onchain - pending + hot // hot is the negative of the booked holdings
		switch {
		case extra < 0:
			return errorf(ErrBooksExceedChain, "the books claim %d sat more than the chain holds for wallet %s; run coffer audit and investigate before importing", -extra, walletID)
		case extra == 0:
			return nil
		}
		if _, err := s.post(ctx, tx, postOpts{kind: TransferImport, memo: "import-unaccounted"},
			[]leg{{account: sys.Hot, amount: -extra}, {account: sys.Imports, amount: extra}}); err != nil {
			return err
		}
		booked = extra
		return s.alert(ctx, tx, walletID, "funds_imported", fmt.Sprintf("%d sat of unaccounted on-chain funds booked to the imports account", extra),
			map[string]any{"amount": amount.Amount(extra)})
	})
	return amount.Amount(booked), err
}

// Rescan looks for deposits missed while Coffer was not following: it
// records deposits for transactions already stored that pay deposit
// addresses, and has the wallet recover its history again from the height
// of its first deposit address, so blocks applied before an address was
// tracked are read again. It returns how many deposits it recorded now.
func (s *Service) Rescan(ctx context.Context, walletID string, from int64) (int, error) {
	if _, err := s.GetWallet(ctx, walletID); err != nil {
		return 0, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT o.txid FROM custody_addresses ca
		JOIN wallet_addresses a ON a.wallet_id = ca.wallet_id AND a.branch = ca.branch AND a.idx = ca.idx
		JOIN tx_outputs o ON o.script = a.script
		WHERE ca.wallet_id = $1 AND NOT EXISTS (SELECT 1 FROM deposits d WHERE d.txid = o.txid AND d.vout = o.vout)`, walletID)
	txids, err := store.Collect(rows, err, scanString)
	if err != nil {
		return 0, err
	}
	var found int
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		var before, after int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM deposits WHERE wallet_id = $1`, walletID).Scan(&before); err != nil {
			return err
		}
		tip, err := tipHeight(ctx, tx)
		if err != nil {
			return err
		}
		for _, t := range txids {
			if err := s.depositsOf(ctx, tx, t, tip); err != nil {
				return err
			}
		}
		if err := s.countConfirmations(ctx, tx, tip, 0); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM deposits WHERE wallet_id = $1`, walletID).Scan(&after); err != nil {
			return err
		}
		found = after - before
		return nil
	})
	if err != nil {
		return 0, err
	}
	return found, s.wallets.Rescan(ctx, walletID, from)
}

package ledger_test

import (
	"testing"
	"time"

	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// TestImportUnaccounted: coins paid to the hot wallet outside deposit
// addresses show in the audit as chain_vs_books until imported; a deposit
// below the threshold is not imported; books claiming more than the chain
// make the import refuse.
func TestImportUnaccounted(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, testConfig())
		ctx := e.ctx
		cw := e.newWallet("imports")
		alice := e.account(cw.ID, "alice")
		sys := cw.Accounts

		// A receive address no account owns, and a change address.
		recv, err := e.wallets.NextAddress(ctx, cw.ID)
		if err != nil {
			t.Fatal(err)
		}
		change, err := e.wallets.Addresses(ctx, cw.ID, 1)
		if err != nil || len(change) == 0 {
			t.Fatalf("change addresses %v, %v", change, err)
		}
		if _, _, err := e.node.Fund(ctx, e.script(recv.Address), 7_000_000); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.node.Fund(ctx, e.script(change[0].Address), 1_000_000); err != nil {
			t.Fatal(err)
		}
		// And a deposit still below the threshold after the block.
		txD, _, err := e.node.Fund(ctx, e.script(e.depositAddress(alice.ID)), 3_000_000)
		if err != nil {
			t.Fatal(err)
		}
		d := e.depositOf(alice.ID, txD)
		e.mine(1)

		r, err := e.led.Audit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r.Clean || len(r.Differences) != 1 || r.Differences[0].Check != "chain_vs_books" ||
			r.Differences[0].Expected != 8_000_000 || r.Differences[0].Actual != 0 {
			t.Fatalf("audit before the import: %+v", r)
		}
		if w := r.Wallets[0]; w.Unaccounted != 8_000_000 || w.PendingDeposits != 3_000_000 {
			t.Fatalf("wallet audit %+v", w)
		}

		booked, err := e.led.ImportUnaccounted(ctx, cw.ID)
		if err != nil || booked != 8_000_000 {
			t.Fatalf("import: %d, %v", booked, err)
		}
		if imp, hot := e.get(sys.Imports), e.get(sys.Hot); imp.Total != 8_000_000 || hot.Total != -8_000_000 {
			t.Fatalf("imports %d, hot %d", imp.Total, hot.Total)
		}
		if len(e.eventsOf(ledger.EventAlert, "kind", "funds_imported")) != 1 {
			t.Fatal("no funds_imported alert")
		}
		e.auditClean()
		if booked, err := e.led.ImportUnaccounted(ctx, cw.ID); err != nil || booked != 0 {
			t.Fatalf("second import: %d, %v", booked, err)
		}

		// The deposit is credited at the threshold, not imported twice.
		e.mine(int(e.cfg.Confirmations) - 1)
		if d = e.deposit(d.ID); d.Status != ledger.DepositCredited {
			t.Fatalf("deposit %+v", d)
		}
		e.auditClean()
		if booked, err := e.led.ImportUnaccounted(ctx, cw.ID); err != nil || booked != 0 {
			t.Fatalf("import after crediting: %d, %v", booked, err)
		}

		// Imported funds go to customers with a multi-leg transfer.
		if _, err := e.led.TransferLegs(ctx, ledger.LegsRequest{Legs: []ledger.Leg{
			{Account: sys.Imports, Amount: -8_000_000}, {Account: alice.ID, Amount: 8_000_000}}}, ""); err != nil {
			t.Fatal(err)
		}
		if a := e.get(alice.ID); a.Total != 11_000_000 {
			t.Fatalf("alice %d", a.Total)
		}
		e.auditClean()

		// Books claiming more than the chain: a fix posted straight into
		// the database, balanced but for coins that do not exist.
		if err := db.InTx(ctx, func(tx *store.Tx) error {
			now := time.Now().Unix()
			for _, q := range []string{
				`INSERT INTO ledger_transfers (id, kind, created_at) VALUES ('tr_tamper', 'import', $1)`,
				`INSERT INTO ledger_postings (transfer_id, account_id, asset, amount, balance_after, created_at)
					SELECT 'tr_tamper', id, asset, CASE WHEN kind = 'hot' THEN -500000 ELSE 500000 END,
					balance + CASE WHEN kind = 'hot' THEN -500000 ELSE 500000 END, $1
					FROM ledger_accounts WHERE wallet_id = '` + cw.ID + `' AND kind IN ('hot', 'imports')`,
				`UPDATE ledger_accounts SET balance = balance + CASE WHEN kind = 'hot' THEN -500000 ELSE 500000 END, updated_at = $1
					WHERE wallet_id = '` + cw.ID + `' AND kind IN ('hot', 'imports')`,
			} {
				if _, err := tx.ExecContext(ctx, q, now); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		r, err = e.led.Audit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r.Clean || len(r.Differences) != 1 || r.Differences[0].Check != "chain_vs_books" || r.Wallets[0].Unaccounted != -500_000 {
			t.Fatalf("audit of tampered books: %+v", r)
		}
		before := e.snapshot()
		_, err = e.led.ImportUnaccounted(ctx, cw.ID)
		wantCode(t, err, "books_exceed_chain")
		if after := e.snapshot(); after != before {
			t.Fatalf("a refused import changed the books:\n%+v\n%+v", before, after)
		}
	})
}

package ledger_test

import (
	"strings"
	"testing"

	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// TestReorg: a reorg before crediting removes a double-spent deposit with no
// posting; after crediting it posts a reversal, which may take an account
// whose money moved on below zero (flagged, alerted, no more debits); and a
// deposit whose transaction returns to the mempool and is mined again is
// credited again.
func TestReorg(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		cfg := testConfig()
		cfg.TrackConfirmations = 6 // counted past the threshold
		e := newEnv(t, db, cfg)
		ctx := e.ctx
		cw := e.newWallet("reorg")
		alice, bob, carol := e.account(cw.ID, "alice"), e.account(cw.ID, "bob"), e.account(cw.ID, "carol")
		// Other customers' coins, so the hot account stays negative
		// through the reversals below.
		dave := e.account(cw.ID, "dave")
		e.fundAccounts([]*ledger.Account{dave}, 2_000_000)
		elsewhere := e.node.NewKey().PkScript()
		// doubleSpend replaces txid (paid from the harness miner's
		// coinbases) with a payment elsewhere, in the reorg's new branch.
		doubleSpend := func(txid string) func() error {
			return func() error {
				raw, err := e.node.DoubleSpend(ctx, txid, e.node.MinerKey(), elsewhere, 50_000)
				if err != nil {
					return err
				}
				_, err = e.node.Client().SendRawTransaction(ctx, raw)
				return err
			}
		}

		// Before crediting: one confirmation, then the block is replaced by
		// a branch that double-spends the deposit.
		txA, _, err := e.node.Fund(ctx, e.script(e.depositAddress(alice.ID)), 10_000_000)
		if err != nil {
			t.Fatal(err)
		}
		dA := e.depositOf(alice.ID, txA)
		e.mine(1)
		if dA = e.deposit(dA.ID); dA.Status != ledger.DepositPending || dA.Confirmations != 1 {
			t.Fatalf("before the reorg: %+v", dA)
		}
		if _, _, err := e.node.Reorg(ctx, 1, doubleSpend(txA)); err != nil {
			t.Fatal(err)
		}
		e.waitTip()
		e.eventually(30e9, "the double-spent deposit to be removed", func() (bool, string) {
			dA = e.deposit(dA.ID)
			return dA.Status == ledger.DepositRemoved, dA.Status
		})
		if dA.Confirmations != 0 || dA.BlockHeight != nil || dA.Reversals != 0 {
			t.Fatalf("removed deposit %+v", dA)
		}
		if n := e.count(`SELECT COUNT(*) FROM ledger_transfers WHERE ref = $1`, dA.ID); n != 0 {
			t.Fatalf("%d transfers for a deposit never credited", n)
		}
		if a := e.get(alice.ID); a.Total != 0 || a.Pending != 0 || a.Flagged {
			t.Fatalf("alice after the removed deposit: %+v", a)
		}
		if len(e.eventsOf(ledger.EventDepositRemoved, "id", dA.ID)) != 1 {
			t.Fatal("no deposit.removed event")
		}

		// After crediting: alice moves the money to bob, then the
		// deposit's block is orphaned and the deposit double-spent.
		txB, _, err := e.node.Fund(ctx, e.script(e.depositAddress(alice.ID)), 10_000_000)
		if err != nil {
			t.Fatal(err)
		}
		dB := e.depositOf(alice.ID, txB)
		e.mine(int(e.cfg.Confirmations))
		if dB = e.deposit(dB.ID); dB.Status != ledger.DepositCredited {
			t.Fatalf("deposit at the threshold: %+v", dB)
		}
		if _, err := e.led.Transfer(ctx, ledger.TransferRequest{From: alice.ID, To: bob.ID, Amount: 10_000_000}, ""); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.node.Reorg(ctx, int(e.cfg.Confirmations), doubleSpend(txB)); err != nil {
			t.Fatal(err)
		}
		e.waitTip()
		e.eventually(30e9, "the credited deposit to be reversed and removed", func() (bool, string) {
			dB = e.deposit(dB.ID)
			return dB.Status == ledger.DepositRemoved, dB.Status
		})
		if dB.Reversals != 1 {
			t.Fatalf("reversed deposit %+v", dB)
		}
		a := e.get(alice.ID)
		if a.Total != -10_000_000 || a.Available != -10_000_000 || a.Pending != 0 || !a.Flagged {
			t.Fatalf("alice after the reversal: %+v", a)
		}
		if n := e.count(`SELECT COUNT(*) FROM ledger_transfers WHERE ref = $1 AND kind = 'reversal'`, dB.ID); n != 1 {
			t.Fatalf("%d reversal transfers", n)
		}
		if len(e.eventsOf(ledger.EventDepositReversed, "id", dB.ID)) != 1 ||
			len(e.eventsOf(ledger.EventAlert, "deposit_id", dB.ID)) != 1 ||
			len(e.eventsOf(ledger.EventAccountFlagged, "id", alice.ID)) != 1 {
			t.Fatal("missing deposit.reversed, alert or account.flagged event")
		}
		// The hot account is no customer: it is never flagged.
		if hot := e.get(cw.Accounts.Hot); hot.Flagged {
			t.Fatalf("hot account flagged: %+v", hot)
		}
		// No money leaves a negative account; money may come in.
		_, err = e.led.Transfer(ctx, ledger.TransferRequest{From: alice.ID, To: bob.ID, Amount: 1}, "")
		wantCode(t, err, "insufficient_funds")
		_, err = e.led.RequestWithdrawal(ctx, ledger.WithdrawalRequest{Account: alice.ID, Address: e.externalAddress(), Amount: 100_000}, "")
		wantCode(t, err, "insufficient_funds")
		if _, err := e.led.Transfer(ctx, ledger.TransferRequest{From: bob.ID, To: alice.ID, Amount: 3_000_000}, ""); err != nil {
			t.Fatal(err)
		}
		if a := e.get(alice.ID); a.Total != -7_000_000 || !a.Flagged {
			t.Fatalf("alice after a payment in: %+v", a)
		}
		_, err = e.led.Transfer(ctx, ledger.TransferRequest{From: alice.ID, To: bob.ID, Amount: 1}, "")
		wantCode(t, err, "insufficient_funds")
		// Even a direct UPDATE cannot take it lower: the floor is in SQL.
		err = db.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.ExecContext(ctx, `UPDATE ledger_accounts SET balance = balance - 1 WHERE id = $1`, alice.ID)
			return err
		})
		if err == nil {
			t.Fatal("the CHECK constraint let alice's balance fall below its floor")
		}

		// After crediting, without a double spend: the transaction returns
		// to the mempool, is mined in the new branch and credited again.
		txC, _, err := e.node.Fund(ctx, e.script(e.depositAddress(carol.ID)), 5_000_000)
		if err != nil {
			t.Fatal(err)
		}
		dC := e.depositOf(carol.ID, txC)
		e.mine(int(e.cfg.Confirmations))
		if dC = e.deposit(dC.ID); dC.Status != ledger.DepositCredited {
			t.Fatalf("deposit at the threshold: %+v", dC)
		}
		if _, _, err := e.node.Reorg(ctx, int(e.cfg.Confirmations), nil); err != nil {
			t.Fatal(err)
		}
		e.waitTip()
		dC = e.deposit(dC.ID)
		if dC.Status != ledger.DepositCredited || dC.Reversals != 1 || dC.Confirmations < e.cfg.Confirmations {
			t.Fatalf("deposit mined again: %+v", dC)
		}
		if c := e.get(carol.ID); c.Total != 5_000_000 || c.Pending != 0 || c.Flagged {
			t.Fatalf("carol: %+v", c)
		}
		if n := len(e.eventsOf(ledger.EventDepositCredited, "id", dC.ID)); n != 2 {
			t.Fatalf("%d deposit.credited events for a deposit credited twice", n)
		}
		entries, err := e.led.Entries(ctx, carol.ID, 0, 0)
		if err != nil || len(entries) != 3 || entries[1].Kind != ledger.TransferReversal {
			t.Fatalf("carol's entries %+v, %v", entries, err)
		}

		// A reorg of the blocks above a credited deposit's block leaves it
		// credited, though its count dips below the threshold meanwhile.
		txE, _, err := e.node.Fund(ctx, e.script(e.depositAddress(dave.ID)), 1_000_000)
		if err != nil {
			t.Fatal(err)
		}
		dE := e.depositOf(dave.ID, txE)
		e.mine(int(e.cfg.Confirmations))
		if dE = e.deposit(dE.ID); dE.Status != ledger.DepositCredited {
			t.Fatalf("deposit at the threshold: %+v", dE)
		}
		if _, _, err := e.node.Reorg(ctx, int(e.cfg.Confirmations)-1, nil); err != nil {
			t.Fatal(err)
		}
		e.waitTip()
		if dE = e.deposit(dE.ID); dE.Status != ledger.DepositCredited || dE.Reversals != 0 || dE.Confirmations != e.cfg.Confirmations+1 {
			t.Fatalf("a reorg above the deposit's block: %+v", dE)
		}
		if n := len(e.eventsOf(ledger.EventDepositReversed, "id", dE.ID)); n != 0 {
			t.Fatalf("%d reversals of a deposit whose block stayed", n)
		}
		if d := e.get(dave.ID); d.Total != 3_000_000 || d.Flagged {
			t.Fatalf("dave %+v", d)
		}

		// A confirmed batch whose block is orphaned is unsettled, and
		// settled again when the new branch mines it.
		w, err := e.led.RequestWithdrawal(ctx, ledger.WithdrawalRequest{Account: dave.ID, Address: e.externalAddress(), Amount: 500_000}, "")
		if err != nil {
			t.Fatal(err)
		}
		e.tick()
		e.mine(1)
		if w, _ = e.led.GetWithdrawal(ctx, w.ID); w.Status != ledger.WithdrawalConfirmed {
			t.Fatalf("withdrawal %+v", w)
		}
		if _, _, err := e.node.Reorg(ctx, 1, nil); err != nil {
			t.Fatal(err)
		}
		e.waitTip()
		b, err := e.led.GetBatch(ctx, *w.BatchID)
		if w, _ = e.led.GetWithdrawal(ctx, w.ID); err != nil || w.Status != ledger.WithdrawalConfirmed || b.Status != ledger.BatchConfirmed {
			t.Fatalf("after the reorg: withdrawal %+v, batch %+v, %v", w, b, err)
		}
		if n := e.count(`SELECT COUNT(*) FROM ledger_transfers WHERE ref = $1 AND kind = 'unsettlement'`, b.ID); n != 1 {
			t.Fatalf("%d unsettlements of the reorged batch", n)
		}
		if n := e.count(`SELECT COUNT(*) FROM ledger_transfers WHERE ref = $1 AND kind = 'settlement'`, b.ID); n != 2 {
			t.Fatalf("%d settlements of the batch mined twice", n)
		}
		if f, infl := e.get(cw.Accounts.Fees), e.get(cw.Accounts.Inflight); sat(f.Total) != -b.Fee || infl.Total != 0 {
			t.Fatalf("fees %d (batch fee %d), inflight %d", f.Total, b.Fee, infl.Total)
		}

		r := e.auditClean()
		warned := false
		for _, w := range r.Warnings {
			warned = warned || strings.Contains(w, alice.ID)
		}
		if !warned {
			t.Fatalf("the audit does not warn about alice's negative account: %v", r.Warnings)
		}
	})
}

package ledger_test

import (
	"bytes"
	"testing"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// TestFeeBump: a broadcast batch replaced at a higher fee rate: both
// versions journaled, the node holds only the new one, which confirms and
// settles the batch with its fee.
func TestFeeBump(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		cfg := testConfig()
		cfg.WithdrawalFee = 500 // charged per withdrawal, to the fees account
		e := newEnv(t, db, cfg)
		ctx := e.ctx
		cw := e.newWallet("bump")
		alice := e.account(cw.ID, "alice")
		e.fundAccounts([]*ledger.Account{alice}, 20_000_000)
		var ws []*ledger.Withdrawal
		for i := range 3 {
			w, err := e.led.RequestWithdrawal(ctx, ledger.WithdrawalRequest{Account: alice.ID, Address: e.externalAddress(),
				Amount: amount.Amount(1_000_000 + 1_000*i)}, "")
			if err != nil {
				t.Fatal(err)
			}
			ws = append(ws, w)
		}
		if a := e.get(alice.ID); a.Held != 3_003_000+3*500 || ws[0].Fee != 500 {
			t.Fatalf("held %d with the withdrawal fee; fee %d", a.Held, ws[0].Fee)
		}
		e.tick()
		w, err := e.led.GetWithdrawal(ctx, ws[0].ID)
		if err != nil || w.BatchID == nil || w.Status != ledger.WithdrawalBroadcast {
			t.Fatalf("after the tick: %+v, %v", w, err)
		}
		b, err := e.led.GetBatch(ctx, *w.BatchID)
		if err != nil || b.Status != ledger.BatchBroadcast || len(b.Versions) != 1 || b.Versions[0] != b.Txid {
			t.Fatalf("batch %+v, %v", b, err)
		}
		old := b.Txid
		if !e.mempool()[old] {
			t.Fatal("the node's mempool lacks the batch")
		}
		_, err = e.led.BumpBatch(ctx, b.ID, b.FeeRate)
		wantCode(t, err, "invalid_parameter")

		nb, err := e.led.BumpBatch(ctx, b.ID, 3*b.FeeRate)
		if err != nil {
			t.Fatal(err)
		}
		if nb.Txid == old || nb.Status != ledger.BatchBroadcast || nb.Fee <= b.Fee || nb.FeeRate < 3*b.FeeRate ||
			len(nb.Versions) != 2 || nb.Versions[0] != old || nb.Versions[1] != nb.Txid {
			t.Fatalf("bumped batch %+v (was %+v)", nb, b)
		}
		mp := e.mempool()
		if !mp[nb.Txid] || mp[old] {
			t.Fatalf("mempool has new %v, old %v", mp[nb.Txid], mp[old])
		}
		// The replacement pays the same withdrawals, at the same outputs.
		ntx := e.nodeTransaction(nb.Txid)
		for _, w := range ws {
			w, err := e.led.GetWithdrawal(ctx, w.ID)
			if err != nil || w.Txid == nil || *w.Txid != nb.Txid {
				t.Fatalf("withdrawal after the bump: %+v, %v", w, err)
			}
			o := ntx.msg.TxOut[*w.Vout]
			if o.Value != int64(w.Amount) || !bytes.Equal(o.PkScript, e.script(w.Address)) {
				t.Fatalf("the replacement's output %d pays %d to %x", *w.Vout, o.Value, o.PkScript)
			}
		}
		e.tick() // rebroadcasting must not bring the old version back
		if e.mempool()[old] {
			t.Fatal("the replaced version is back in the mempool")
		}

		e.mine(1)
		fb, err := e.led.GetBatch(ctx, b.ID)
		if err != nil || fb.Status != ledger.BatchConfirmed || fb.ConfirmedTxid == nil || *fb.ConfirmedTxid != nb.Txid || fb.Fee != nb.Fee {
			t.Fatalf("batch after mining: %+v, %v", fb, err)
		}
		if c := e.nodeTransaction(nb.Txid); c.Confirmations < 1 {
			t.Fatal("the node has not confirmed the replacement")
		}
		for _, w := range ws {
			if w, _ := e.led.GetWithdrawal(ctx, w.ID); w.Status != ledger.WithdrawalConfirmed || *w.Txid != nb.Txid {
				t.Fatalf("withdrawal after mining: %+v", w)
			}
		}
		if f := e.get(cw.Accounts.Fees); sat(f.Total) != 3*500-nb.Fee {
			t.Fatalf("fees account %d, want %d", f.Total, 3*500-nb.Fee)
		}
		if a := e.get(alice.ID); a.Total != 20_000_000-3_003_000-3*500 || a.Held != 0 {
			t.Fatalf("alice after paying: %+v", a)
		}
		_, err = e.led.BumpBatch(ctx, b.ID, 10*b.FeeRate)
		wantCode(t, err, "invalid_state")
		e.auditClean()
	})
}

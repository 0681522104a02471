package ledger_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// TestEndToEnd: a deposit goes pending → credited at the threshold, in the
// block's own transaction → processed; an internal transfer; then 50
// withdrawals from 10 accounts are paid in batches that the node confirms,
// with the network fees booked and the audit clean.
func TestEndToEnd(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, testConfig())
		ctx := e.ctx
		cw := e.newWallet("e2e")
		sys := cw.Accounts
		if sys.Hot == "" || sys.Fees == "" || sys.Imports == "" || sys.Inflight == "" {
			t.Fatalf("system accounts %+v", sys)
		}
		alice, bob := e.account(cw.ID, "alice"), e.account(cw.ID, "bob")

		// Deposit: seen in the mempool.
		const amt = 150_000_000
		txid, _, err := e.node.Fund(ctx, e.script(e.depositAddress(alice.ID)), amt)
		if err != nil {
			t.Fatal(err)
		}
		d := e.depositOf(alice.ID, txid)
		if d.Status != ledger.DepositPending || d.Confirmations != 0 || d.Amount != amt || d.BlockHeight != nil {
			t.Fatalf("deposit in the mempool: %+v", d)
		}
		if a := e.get(alice.ID); a.Pending != amt || a.Total != 0 || a.Available != 0 {
			t.Fatalf("account with a pending deposit: %+v", a)
		}
		if len(e.eventsOf(ledger.EventDepositPending, "id", d.ID)) != 1 {
			t.Fatal("no deposit.pending event")
		}
		_, err = e.led.AckDeposit(ctx, d.ID)
		wantCode(t, err, "invalid_state")

		// Below the threshold it stays pending, counting.
		for i := int64(1); i < e.cfg.Confirmations; i++ {
			e.mine(1)
			d = e.deposit(d.ID)
			if d.Status != ledger.DepositPending || d.Confirmations != i {
				t.Fatalf("after %d blocks: %+v", i, d)
			}
			if a := e.get(alice.ID); a.Total != 0 || a.Pending != amt {
				t.Fatalf("credited early: %+v", a)
			}
		}
		if n := e.count(`SELECT COUNT(*) FROM ledger_transfers WHERE ref = $1`, d.ID); n != 0 {
			t.Fatalf("%d transfers for a pending deposit", n)
		}

		// The block reaching the threshold credits it in its own transaction.
		e.mine(1)
		h := e.tip()
		d = e.deposit(d.ID)
		if d.Status != ledger.DepositCredited || d.Confirmations != e.cfg.Confirmations || d.BlockHeight == nil ||
			*d.BlockHeight != h-e.cfg.Confirmations+1 {
			t.Fatalf("deposit at the threshold: %+v (tip %d)", d, h)
		}
		a := e.get(alice.ID)
		if a.Total != amt || a.Available != amt || a.Pending != 0 || a.Held != 0 {
			t.Fatalf("account after crediting: %+v", a)
		}
		if hot := e.get(sys.Hot); hot.Total != -amt {
			t.Fatalf("hot account %d, want %d", hot.Total, -amt)
		}
		credited := e.eventsOf(ledger.EventDepositCredited, "id", d.ID)
		prev := e.eventsOf("block.connected", "height", fmt.Sprint(h-1))
		this := e.eventsOf("block.connected", "height", fmt.Sprint(h))
		if len(credited) != 1 || len(prev) != 1 || len(this) != 1 {
			t.Fatalf("events: %d deposit.credited, %d + %d block.connected", len(credited), len(prev), len(this))
		}
		if !(prev[0].ID < credited[0].ID && credited[0].ID < this[0].ID) {
			t.Fatalf("deposit.credited (event %d) is not in block %d's transaction (events %d..%d)", credited[0].ID, h, prev[0].ID, this[0].ID)
		}
		entries, err := e.led.Entries(ctx, alice.ID, 0, 0)
		if err != nil || len(entries) != 1 || entries[0].Kind != ledger.TransferDeposit || entries[0].Ref != d.ID ||
			entries[0].Amount != amt || entries[0].BalanceAfter != amt {
			t.Fatalf("entries %+v, %v", entries, err)
		}

		// Acknowledged: processed; again: no change.
		if d, err = e.led.AckDeposit(ctx, d.ID); err != nil || d.Status != ledger.DepositProcessed {
			t.Fatalf("ack: %+v, %v", d, err)
		}
		nProcessed := len(e.eventsOf(ledger.EventDepositProcessed, "id", d.ID))
		if d, err = e.led.AckDeposit(ctx, d.ID); err != nil || d.Status != ledger.DepositProcessed {
			t.Fatalf("second ack: %+v, %v", d, err)
		}
		if n := len(e.eventsOf(ledger.EventDepositProcessed, "id", d.ID)); n != 1 || nProcessed != 1 {
			t.Fatalf("%d then %d deposit.processed events; want 1", nProcessed, n)
		}

		// Internal transfer.
		tr, err := e.led.Transfer(ctx, ledger.TransferRequest{From: alice.ID, To: bob.ID, Amount: 50_000_000, Memo: "rent"}, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(tr.Postings) != 2 || tr.Kind != ledger.TransferInternal || tr.Memo != "rent" {
			t.Fatalf("transfer %+v", tr)
		}
		if a, b := e.get(alice.ID), e.get(bob.ID); a.Total != 100_000_000 || b.Total != 50_000_000 || b.Available != 50_000_000 {
			t.Fatalf("after the transfer: alice %+v, bob %+v", a, b)
		}
		if len(e.eventsOf(ledger.EventTransferCreated, "id", tr.ID)) != 1 {
			t.Fatal("no transfer.created event")
		}

		// A withdrawal to another account's deposit address is an internal
		// transfer, unless forced on chain.
		bobAddr := e.depositAddress(bob.ID)
		iw, err := e.led.RequestWithdrawal(ctx, ledger.WithdrawalRequest{Account: alice.ID, Address: bobAddr, Amount: 1_000_000}, "")
		if err != nil || iw.Status != ledger.WithdrawalInternal || iw.TransferID == nil || iw.BatchID != nil {
			t.Fatalf("internal withdrawal %+v, %v", iw, err)
		}
		if a, b := e.get(alice.ID), e.get(bob.ID); a.Total != 99_000_000 || a.Held != 0 || b.Total != 51_000_000 {
			t.Fatalf("after the internal withdrawal: alice %+v, bob %+v", a, b)
		}
		fw, err := e.led.RequestWithdrawal(ctx, ledger.WithdrawalRequest{Account: alice.ID, Address: bobAddr, Amount: 1_000_000, ForceOnchain: true}, "")
		if err != nil || fw.Status != ledger.WithdrawalQueued {
			t.Fatalf("forced on-chain withdrawal %+v, %v", fw, err)
		}
		if _, err := e.led.CancelWithdrawal(ctx, fw.ID); err != nil {
			t.Fatal(err)
		}
		if a := e.get(alice.ID); a.Held != 0 || a.Available != 99_000_000 {
			t.Fatalf("after cancelling: %+v", a)
		}
		if cust, err := e.led.ListAccounts(ctx, cw.ID, ledger.AccountFilter{Kind: ledger.KindCustomer}); err != nil || len(cust) != 2 {
			t.Fatalf("customer accounts %d, %v", len(cust), err)
		}
		if hot, err := e.led.ListAccounts(ctx, cw.ID, ledger.AccountFilter{Kind: ledger.KindHot}); err != nil || len(hot) != 1 || hot[0].ID != sys.Hot {
			t.Fatalf("hot accounts %v, %v", hot, err)
		}

		// 50 withdrawals from 10 accounts.
		const funded = 20_000_000
		var customers []*ledger.Account
		for i := range 10 {
			customers = append(customers, e.account(cw.ID, fmt.Sprintf("customer %d", i)))
		}
		e.fundAccounts(customers, funded)
		type want struct {
			addr string
			amt  int64
		}
		wants := map[string]want{}
		spent := map[string]int64{}
		priorities := []string{"low", "normal", "high", ""}
		var oldest []string
		for j := range 5 {
			if j == 1 {
				// Timestamps are in seconds: let the first ten be older.
				time.Sleep(1100 * time.Millisecond)
			}
			for i, c := range customers {
				addr := e.externalAddress()
				amt := int64(100_000 + 1_000*i + 37*j)
				w, err := e.led.RequestWithdrawal(ctx, ledger.WithdrawalRequest{Account: c.ID, Address: addr,
					Amount: amount.Amount(amt), Priority: priorities[(i+j)%4]}, "")
				if err != nil {
					t.Fatal(err)
				}
				if w.Status != ledger.WithdrawalQueued {
					t.Fatalf("withdrawal %+v", w)
				}
				wants[w.ID] = want{addr, amt}
				if j == 0 {
					oldest = append(oldest, w.ID)
				}
				spent[c.ID] += amt
			}
		}
		for _, c := range customers {
			if a := e.get(c.ID); sat(a.Held) != spent[c.ID] || sat(a.Available) != funded-spent[c.ID] || a.Total != funded {
				t.Fatalf("account with queued withdrawals: %+v (held want %d)", a, spent[c.ID])
			}
		}

		// The first batch pays the oldest first.
		first, err := e.led.PayBatch(ctx, cw.ID)
		if err != nil || first == nil {
			t.Fatalf("first batch %+v, %v", first, err)
		}
		for _, id := range oldest {
			if w, err := e.led.GetWithdrawal(ctx, id); err != nil || w.BatchID == nil || *w.BatchID != first.ID {
				t.Fatalf("one of the oldest withdrawals is not in the first batch: %+v, %v", w, err)
			}
		}
		// One tick pays the rest, in batches of at most 20.
		e.tick()
		load := func() []*ledger.Withdrawal {
			var ws []*ledger.Withdrawal
			for id := range wants {
				w, err := e.led.GetWithdrawal(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				ws = append(ws, w)
			}
			return ws
		}
		ws := load()
		batches := map[string]int{}
		mempool := e.mempool()
		for _, w := range ws {
			if w.Status != ledger.WithdrawalBroadcast || w.BatchID == nil || w.Txid == nil || w.Vout == nil {
				t.Fatalf("after the tick: %+v", w)
			}
			batches[*w.BatchID]++
			if !mempool[*w.Txid] {
				t.Fatalf("the node's mempool lacks batch transaction %s", *w.Txid)
			}
		}
		if len(batches) < 3 {
			t.Fatalf("%d batches for 50 withdrawals of at most 20: %v", len(batches), batches)
		}
		for id, n := range batches {
			if n > 20 {
				t.Fatalf("batch %s pays %d withdrawals, more than BatchMaxCount", id, n)
			}
		}
		if infl := e.get(sys.Inflight); infl.Total != sumValues(spent) {
			t.Fatalf("inflight %d, want %d", infl.Total, sumValues(spent))
		}

		e.mine(1)
		var fees int64
		for id := range batches {
			b, err := e.led.GetBatch(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if b.Status != ledger.BatchConfirmed || b.ConfirmedTxid == nil || *b.ConfirmedTxid != b.Txid {
				t.Fatalf("batch %+v", b)
			}
			// The fee booked is what the node's transaction pays.
			ntx := e.nodeTransaction(b.Txid)
			var in, out int64
			for _, txin := range ntx.msg.TxIn {
				prev := e.nodeTransaction(txin.PreviousOutPoint.Hash.String())
				in += prev.msg.TxOut[txin.PreviousOutPoint.Index].Value
			}
			for _, o := range ntx.msg.TxOut {
				out += o.Value
			}
			if in-out != b.Fee {
				t.Fatalf("batch %s books fee %d; its transaction pays %d", id, b.Fee, in-out)
			}
			fees += b.Fee
		}
		for _, w := range load() {
			if w.Status != ledger.WithdrawalConfirmed || w.Txid == nil || w.Vout == nil {
				t.Fatalf("after mining: %+v", w)
			}
			ntx := e.nodeTransaction(*w.Txid)
			if ntx.Confirmations < 1 || ntx.BlockHash == "" {
				t.Fatalf("the node has %s with %d confirmations", *w.Txid, ntx.Confirmations)
			}
			o := ntx.msg.TxOut[*w.Vout]
			if wt := wants[w.ID]; !bytes.Equal(o.PkScript, e.script(wt.addr)) || o.Value != wt.amt {
				t.Fatalf("withdrawal %s: output %d pays %d to %x; want %d to %s", w.ID, *w.Vout, o.Value, o.PkScript, wt.amt, wt.addr)
			}
		}
		if n := len(e.eventsOf(ledger.EventWithdrawalConfirmed, "", "")); n != 50 {
			t.Fatalf("%d withdrawal.confirmed events", n)
		}
		for _, c := range customers {
			if a := e.get(c.ID); sat(a.Total) != funded-spent[c.ID] || a.Held != 0 || a.Available != a.Total {
				t.Fatalf("account after paying: %+v", a)
			}
		}
		if f := e.get(sys.Fees); sat(f.Total) != -fees {
			t.Fatalf("fees account %d, want %d", f.Total, -fees)
		}
		if infl := e.get(sys.Inflight); infl.Total != 0 {
			t.Fatalf("inflight %d after confirmation", infl.Total)
		}
		r := e.auditClean()
		bal, err := e.wallets.Balance(ctx, cw.ID)
		if err != nil {
			t.Fatal(err)
		}
		hot := e.get(sys.Hot)
		if len(r.Wallets) != 1 || r.Wallets[0].OnChain != bal.Confirmed || hot.Total != -bal.Confirmed || r.Wallets[0].Booked != bal.Confirmed {
			b, _ := json.Marshal(r.Wallets)
			t.Fatalf("hot account %d, wallet confirmed %d, audit %s", hot.Total, bal.Confirmed, b)
		}
		// Nothing left to do.
		e.tick()
		if n := e.count(`SELECT COUNT(*) FROM custody_batches`); n != len(batches) {
			t.Fatalf("%d batches after an idle tick, want %d", n, len(batches))
		}
	})
}

func sumValues(m map[string]int64) amount.Amount {
	var s int64
	for _, v := range m {
		s += v
	}
	return amount.Amount(s)
}

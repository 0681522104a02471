package api

import (
	"net/http"
	"testing"

	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/wallet"
)

// TestWalletLifecycle: a wallet funded in old blocks is registered later and
// its whole history appears; a receive goes mempool → confirmed; a proposal
// is signed by an independent signer, sent, and confirmed; balances are
// exact at every step and the change is recognised as the wallet's.
func TestWalletLifecycle(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newWalletEnv(t, db)
		s := newSigner(t, 0x11+byte(len(t.Name())))
		acct := []uint32{84 + h, 1 + h, 0 + h}
		desc := "wpkh(" + s.account(t, acct...) + "/<0;1>/*)"

		// History before registration: receive 0 and 3, change 1.
		recv := func(i uint32) []byte { return s.wpkhScript(t, append(acct, 0, i)...) }
		old := []int64{50_000_000, 20_000_000, 7_000_000}
		e.fund(recv(0), old[0])
		e.mine(1)
		e.fund(recv(3), old[1])
		e.fund(s.wpkhScript(t, append(acct, 1, 1)...), old[2])
		e.mine(3)
		const oldTotal = 77_000_000

		w := e.register(map[string]any{"descriptor": desc, "label": "app", "birthday": 400})
		if b := e.balance(w.ID); b.Confirmed != oldTotal || b.Unconfirmed != 0 || b.Total != oldTotal || b.Spendable != oldTotal {
			t.Fatalf("recovered balance %+v, want %d confirmed", b, oldTotal)
		}
		if hist := e.history(w.ID); len(hist) != 3 {
			t.Fatalf("recovered history has %d transactions, want 3: %+v", len(hist), hist)
		}
		// Registering again returns the same wallet, also via the
		// single-path spelling of the same descriptor.
		var again wallet.Wallet
		e.must(http.StatusOK, "POST", "/v1/wallets", map[string]any{"descriptor": "wpkh(" + s.account(t, acct...) + "/0/*)"}, &again)
		if again.ID != w.ID {
			t.Fatalf("re-registration gave id %s, want %s", again.ID, w.ID)
		}

		// Receive: the next address is the lowest unused one, index 1.
		var next wallet.Address
		e.must(http.StatusOK, "POST", "/v1/wallets/"+w.ID+"/addresses/next", nil, &next)
		if next.Index != 1 || next.Branch != "receive" {
			t.Fatalf("next address %+v, want receive index 1", next)
		}
		script, err := e.node.Chain().AddressScript(next.Address)
		if err != nil {
			t.Fatal(err)
		}
		txid := e.fund(script, 10_000_000)
		e.eventually(30e9, "the receive to show in the mempool", func() (bool, string) {
			var tx wallet.Tx
			code, b := e.call("GET", "/v1/wallets/"+w.ID+"/transactions/"+txid, "", nil, &tx)
			return code == 200 && tx.Status == "mempool", string(b)
		})
		if b := e.balance(w.ID); b.Confirmed != oldTotal || b.Unconfirmed != 10_000_000 || b.Total != oldTotal+10_000_000 {
			t.Fatalf("balance with a mempool receive: %+v", b)
		}
		e.mine(1)
		var tx wallet.Tx
		e.must(200, "GET", "/v1/wallets/"+w.ID+"/transactions/"+txid, nil, &tx)
		if tx.Status != "confirmed" || tx.Confirmations != 1 || tx.Net != 10_000_000 {
			t.Fatalf("confirmed receive: %+v", tx)
		}
		total := int64(oldTotal + 10_000_000)
		if b := e.balance(w.ID); int64(b.Confirmed) != total || b.Unconfirmed != 0 {
			t.Fatalf("balance after confirmation: %+v", b)
		}

		// Spend: propose, sign independently, send.
		payee := e.node.NewKey()
		var p wallet.Proposal
		e.must(http.StatusCreated, "POST", "/v1/wallets/"+w.ID+"/proposals", map[string]any{
			"outputs": []map[string]any{{"address": payee.WitnessAddress(), "amount": "15000000"}}, "fee_rate": 5}, &p)
		if p.Status != "open" || p.Fee <= 0 || len(p.Inputs) == 0 {
			t.Fatalf("proposal %+v", p)
		}
		var change *wallet.ProposalOutput
		for i, o := range p.Outputs {
			if o.Change {
				change = &p.Outputs[i]
			}
		}
		if change == nil {
			t.Fatalf("proposal has no change output: %+v", p.Outputs)
		}
		var sent wallet.Proposal
		e.must(http.StatusOK, "POST", "/v1/wallets/"+w.ID+"/proposals/"+p.ID+"/send", map[string]any{"psbt": s.sign(t, p.PSBT)}, &sent)
		if sent.Status != "sent" {
			t.Fatalf("sent proposal %+v", sent)
		}
		// At once, before any poll: the transaction is in the wallet's
		// history as mempool and the node has it.
		e.must(200, "GET", "/v1/wallets/"+w.ID+"/transactions/"+sent.Txid, nil, &tx)
		if tx.Status != "mempool" || int64(tx.Net) != -(15_000_000+int64(p.Fee)) || tx.Fee == nil || *tx.Fee != p.Fee {
			t.Fatalf("sent tx: %+v (fee %v), want mempool, net -%d", tx, tx.Fee, 15_000_000+int64(p.Fee))
		}
		nodeTx(t, e.node, sent.Txid)
		total -= 15_000_000 + int64(p.Fee)
		if b := e.balance(w.ID); int64(b.Total) != total || b.Unconfirmed != change.Amount {
			t.Fatalf("balance after send: %+v, want total %d with change %s unconfirmed", b, total, change.Amount)
		}
		e.mine(1)
		e.must(200, "GET", "/v1/wallets/"+w.ID+"/transactions/"+sent.Txid, nil, &tx)
		if tx.Status != "confirmed" {
			t.Fatalf("sent tx after a block: %+v", tx)
		}
		mine := 0
		for _, o := range tx.Outputs {
			if o.Mine {
				mine++
				if o.Branch != "change" || o.Amount != change.Amount {
					t.Errorf("wallet output %+v, want the change %s", o, change.Amount)
				}
			}
		}
		for _, in := range tx.Inputs {
			if !in.Mine {
				t.Errorf("input %+v not marked as the wallet's", in)
			}
		}
		if mine != 1 {
			t.Errorf("%d outputs marked as the wallet's, want 1 (the change)", mine)
		}
		if b := e.balance(w.ID); int64(b.Confirmed) != total || b.Unconfirmed != 0 {
			t.Fatalf("final balance %+v, want %d confirmed", b, total)
		}
		// The UTXO set implies the balance.
		var us UTXOList
		e.must(200, "GET", "/v1/wallets/"+w.ID+"/utxos", nil, &us)
		if int64(us.Total) != total {
			t.Fatalf("UTXOs total %s, balance %d", us.Total, total)
		}
		if hist := e.history(w.ID); len(hist) != 5 || hist[0].Txid != sent.Txid {
			t.Fatalf("history: %d txs, newest %s; want 5 with %s first", len(hist), hist[0].Txid, sent.Txid)
		}
		t.Logf("wallet %s: %d txs, balance %d, proposal fee %s via %s", w.ID[:8], len(e.history(w.ID)), total, p.Fee, p.Algorithm)
	})
}

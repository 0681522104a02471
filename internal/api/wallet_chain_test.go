package api

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/coffer/coffer/internal/regtest"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/wallet"
)

// TestWalletMultisig: a 2-of-3 wsh(sortedmulti) wallet receives, and a
// proposal signed by two independent signers is sent and confirmed.
func TestWalletMultisig(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newWalletEnv(t, db)
		base := byte(0x40 + len(t.Name()))
		a, b, c := newSigner(t, base), newSigner(t, base+1), newSigner(t, base+2)
		acct := []uint32{48 + h, 1 + h, 0 + h, 2 + h}
		desc := fmt.Sprintf("wsh(sortedmulti(2,%s/<0;1>/*,%s/<0;1>/*,%s/<0;1>/*))", a.account(t, acct...), b.account(t, acct...), c.account(t, acct...))
		w := e.register(map[string]any{"descriptor": desc, "birthday": 440})

		var next wallet.Address
		e.must(http.StatusOK, "POST", "/v1/wallets/"+w.ID+"/addresses/next", nil, &next)
		script, err := e.node.Chain().AddressScript(next.Address)
		if err != nil {
			t.Fatal(err)
		}
		e.fund(script, 30_000_000)
		e.mine(1)
		if b := e.balance(w.ID); b.Confirmed != 30_000_000 {
			t.Fatalf("multisig balance %+v", b)
		}
		var p wallet.Proposal
		e.must(http.StatusCreated, "POST", "/v1/wallets/"+w.ID+"/proposals", map[string]any{
			"outputs": []map[string]any{{"address": e.node.NewKey().WitnessAddress(), "amount": "12000000"}}, "fee_rate": 3}, &p)
		// One signature is not enough.
		oneSig := a.sign(t, p.PSBT)
		if code, body := e.call("POST", "/v1/wallets/"+w.ID+"/proposals/"+p.ID+"/send", "", map[string]any{"psbt": oneSig}, nil); code != 422 {
			t.Fatalf("send with one of two signatures: %d %s", code, body)
		}
		var sent wallet.Proposal
		e.must(http.StatusOK, "POST", "/v1/wallets/"+w.ID+"/proposals/"+p.ID+"/send", map[string]any{"psbt": c.sign(t, oneSig)}, &sent)
		e.mine(1)
		var tx wallet.Tx
		e.must(200, "GET", "/v1/wallets/"+w.ID+"/transactions/"+sent.Txid, nil, &tx)
		if tx.Status != "confirmed" || int64(tx.Net) != -(12_000_000+int64(p.Fee)) {
			t.Fatalf("multisig spend %+v", tx)
		}
		if b := e.balance(w.ID); int64(b.Confirmed) != 30_000_000-12_000_000-int64(p.Fee) {
			t.Fatalf("balance after the multisig spend %+v", b)
		}
	})
}

// TestWalletGapLimit: payments to receive index 19, then 39, are found as
// the window moves; a payment beyond the gap is not. Both live (follower)
// and in recovery (registration after the payments).
func TestWalletGapLimit(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newWalletEnv(t, db)
		acct := []uint32{84 + h, 1 + h, 0 + h}
		live := newSigner(t, byte(0x60+len(t.Name())))
		w := e.register(map[string]any{"descriptor": "wpkh(" + live.account(t, acct...) + "/<0;1>/*)", "birthday": 440})
		pay := func(s *signer, idx uint32, amt int64) { e.fund(s.wpkhScript(t, append(acct, 0, idx)...), amt) }
		pay(live, 19, 1_000)
		e.mine(1)
		pay(live, 39, 2_000)
		e.mine(1)
		pay(live, 60, 4_000) // 39 + 20 = 59 is the last watched index
		e.mine(1)
		if b := e.balance(w.ID); b.Confirmed != 3_000 {
			t.Fatalf("live gap limit: confirmed %s, want 3000 (indexes 19 and 39, not 60)", b.Confirmed)
		}

		// The same payments made before registration, 19 and 39 in one block.
		later := newSigner(t, byte(0x70+len(t.Name())))
		pay(later, 19, 1_000)
		pay(later, 39, 2_000)
		pay(later, 60, 4_000)
		e.mine(1)
		w2 := e.register(map[string]any{"descriptor": "wpkh(" + later.account(t, acct...) + "/<0;1>/*)", "birthday": 440})
		if b := e.balance(w2.ID); b.Confirmed != 3_000 {
			t.Fatalf("recovered gap limit: confirmed %s, want 3000", b.Confirmed)
		}
		var addrs AddressList
		e.must(200, "GET", "/v1/wallets/"+w2.ID+"/addresses?branch=receive", nil, &addrs)
		if n := len(addrs.Addresses); n != 60 || !addrs.Addresses[39].Used || addrs.Addresses[38].Used {
			t.Fatalf("receive addresses after recovery: %d (want 0..59, 19 and 39 used)", n)
		}
	})
}

// TestWalletReorgAndReplacement: a reorg orphaning a confirmed receive (its
// transaction double-spent on the winning branch) reverts balance and
// history; an RBF replacement of a mempool receive shows "replaced".
func TestWalletReorgAndReplacement(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newWalletEnv(t, db)
		ctx := context.Background()
		s := newSigner(t, byte(0x80+len(t.Name())))
		acct := []uint32{84 + h, 1 + h, 0 + h}
		w := e.register(map[string]any{"descriptor": "wpkh(" + s.account(t, acct...) + "/<0;1>/*)", "birthday": 440})
		script := s.wpkhScript(t, append(acct, 0, 0)...)
		elsewhere := e.node.NewKey().PkScript()

		// RBF: a mempool receive replaced by a payment elsewhere.
		tx1 := e.fund(script, 5_000_000)
		e.eventually(30e9, "the receive in the mempool", func() (bool, string) {
			b := e.balance(w.ID)
			return b.Unconfirmed == 5_000_000, fmt.Sprint(b)
		})
		if _, err := e.node.Client().SendRawTransaction(ctx, doubleSpend(t, e.node, tx1, elsewhere)); err != nil {
			t.Fatalf("replacement rejected: %v", err)
		}
		e.eventually(30e9, "the receive to be replaced", func() (bool, string) {
			var tx wallet.Tx
			e.must(200, "GET", "/v1/wallets/"+w.ID+"/transactions/"+tx1, nil, &tx)
			return tx.Status == "replaced", tx.Status
		})
		if b := e.balance(w.ID); b.Total != 0 {
			t.Fatalf("balance after replacement %+v", b)
		}
		e.mine(1)

		// Reorg: a confirmed receive whose block is orphaned and whose
		// input is spent elsewhere on the winning branch.
		tx2 := e.fund(script, 6_000_000)
		e.mine(1)
		if b := e.balance(w.ID); b.Confirmed != 6_000_000 {
			t.Fatalf("balance before the reorg %+v", b)
		}
		if _, _, err := e.node.Reorg(ctx, 1, func() error {
			_, err := e.node.Client().SendRawTransaction(ctx, doubleSpend(t, e.node, tx2, elsewhere))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		e.waitTip()
		e.eventually(30e9, "the orphaned receive to leave the balance", func() (bool, string) {
			var tx wallet.Tx
			e.must(200, "GET", "/v1/wallets/"+w.ID+"/transactions/"+tx2, nil, &tx)
			b := e.balance(w.ID)
			return (tx.Status == "conflicted" || tx.Status == "replaced") && b.Total == 0, tx.Status + " " + fmt.Sprint(b)
		})
	})
}

// doubleSpend spends the inputs of txid (the harness miner key's P2PKH
// outputs) again, paying payTo with a higher fee.
func doubleSpend(t *testing.T, n *regtest.Node, txid string, payTo []byte) []byte {
	t.Helper()
	raw, err := n.DoubleSpend(context.Background(), txid, n.MinerKey(), payTo, 20_000)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestWalletConcurrentProposals: 20 concurrent proposals on a wallet with 20
// UTXOs never share an input; a 21st finds nothing left.
func TestWalletConcurrentProposals(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newWalletEnv(t, db)
		s := newSigner(t, byte(0x90+len(t.Name())))
		acct := []uint32{84 + h, 1 + h, 0 + h}
		w := e.register(map[string]any{"descriptor": "wpkh(" + s.account(t, acct...) + "/<0;1>/*)", "birthday": 440})
		var outs []regtest.Output
		for i := range uint32(20) {
			outs = append(outs, regtest.Output{PkScript: s.wpkhScript(t, append(acct, 0, i)...), Amount: 1_000_000})
		}
		if _, err := e.node.SendMany(context.Background(), outs); err != nil {
			t.Fatal(err)
		}
		e.mine(1)
		var us UTXOList
		e.must(200, "GET", "/v1/wallets/"+w.ID+"/utxos", nil, &us)
		if len(us.UTXOs) != 20 {
			t.Fatalf("%d UTXOs, want 20", len(us.UTXOs))
		}
		payee := e.node.NewKey().WitnessAddress()
		req := map[string]any{"outputs": []map[string]any{{"address": payee, "amount": "600000"}}, "fee_rate": 2}
		var wg sync.WaitGroup
		props := make([]wallet.Proposal, 20)
		codes := make([]int, 20)
		bodies := make([][]byte, 20)
		for i := range props {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i], bodies[i] = e.call("POST", "/v1/wallets/"+w.ID+"/proposals", "", req, &props[i])
			}()
		}
		wg.Wait()
		seen := map[string]string{}
		for i, p := range props {
			if codes[i] != http.StatusCreated {
				t.Fatalf("proposal %d: %d %s", i, codes[i], bodies[i])
			}
			for _, in := range p.Inputs {
				op := fmt.Sprintf("%s:%d", in.Txid, in.Vout)
				if other, ok := seen[op]; ok {
					t.Fatalf("input %s is in proposals %s and %s", op, other, p.ID)
				}
				seen[op] = p.ID
			}
		}
		if code, body := e.call("POST", "/v1/wallets/"+w.ID+"/proposals", "", req, nil); code != 422 {
			t.Fatalf("a 21st proposal: %d %s, want 422 insufficient_funds", code, body)
		}
		// Cancelling one frees its input for the next.
		e.must(200, "DELETE", "/v1/wallets/"+w.ID+"/proposals/"+props[0].ID, nil, nil)
		e.must(http.StatusCreated, "POST", "/v1/wallets/"+w.ID+"/proposals", req, nil)
	})
}

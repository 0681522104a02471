package ledger_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// TestIdempotency: a request repeated with its key returns the first result
// and records nothing more; the key with another request is a 409; a failed
// request leaves its key free; racing repeats make one record.
func TestIdempotency(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, testConfig())
		ctx := e.ctx
		cw := e.newWallet("idem")
		alice, bob := e.account(cw.ID, "alice"), e.account(cw.ID, "bob")
		e.fundAccounts([]*ledger.Account{alice, bob}, 10_000_000)

		// Transfer.
		req := ledger.TransferRequest{From: alice.ID, To: bob.ID, Amount: 1_000, Memo: "once"}
		t1, err := e.led.Transfer(ctx, req, "key-transfer")
		if err != nil {
			t.Fatal(err)
		}
		t2, err := e.led.Transfer(ctx, req, "key-transfer")
		if err != nil || t2.ID != t1.ID || len(t2.Postings) != 2 {
			t.Fatalf("repeat: %+v, %v; first %s", t2, err, t1.ID)
		}
		if n := e.count(`SELECT COUNT(*) FROM ledger_transfers WHERE idem_key = 'key-transfer'`); n != 1 {
			t.Fatalf("%d transfers with the key", n)
		}
		if a := e.get(alice.ID); a.Total != 10_000_000-1_000 {
			t.Fatalf("alice %d after a repeated transfer", a.Total)
		}
		other := req
		other.Amount = 2_000
		_, err = e.led.Transfer(ctx, other, "key-transfer")
		wantCode(t, err, "idempotency_key_reused")
		if a := e.get(alice.ID); a.Total != 10_000_000-1_000 {
			t.Fatalf("alice %d after a reused key", a.Total)
		}
		// The same single transfer through the batch call is the same request.
		ts, err := e.led.TransferBatch(ctx, []ledger.TransferRequest{req}, "key-transfer")
		if err != nil || len(ts) != 1 || ts[0].ID != t1.ID {
			t.Fatalf("as a batch of one: %+v, %v", ts, err)
		}

		// A failed request does not use up its key.
		big := ledger.TransferRequest{From: alice.ID, To: bob.ID, Amount: 50_000_000}
		_, err = e.led.Transfer(ctx, big, "key-failed")
		wantCode(t, err, "insufficient_funds")
		if _, err := e.led.Transfer(ctx, ledger.TransferRequest{From: bob.ID, To: alice.ID, Amount: 10_000_000}, ""); err != nil {
			t.Fatal(err)
		}
		big.Amount = 15_000_000
		if _, err := e.led.Transfer(ctx, big, "key-failed"); err != nil {
			t.Fatalf("the key of a failed request: %v", err)
		}

		// Batch.
		batch := []ledger.TransferRequest{
			{From: alice.ID, To: bob.ID, Amount: 10},
			{From: bob.ID, To: alice.ID, Amount: 20},
			{From: alice.ID, To: bob.ID, Amount: 30},
		}
		b1, err := e.led.TransferBatch(ctx, batch, "key-batch")
		if err != nil || len(b1) != 3 {
			t.Fatalf("batch: %v, %v", b1, err)
		}
		b2, err := e.led.TransferBatch(ctx, batch, "key-batch")
		if err != nil || len(b2) != 3 {
			t.Fatalf("repeated batch: %v, %v", b2, err)
		}
		for i := range b1 {
			if b1[i].ID != b2[i].ID || len(b2[i].Postings) != 2 || b2[i].Postings[0].Amount+b2[i].Postings[1].Amount != 0 {
				t.Fatalf("repeated batch transfer %d: %+v, first %+v", i, b2[i], b1[i])
			}
		}
		if n := e.count(`SELECT COUNT(*) FROM ledger_transfers WHERE ref = $1`, b1[0].Ref); n != 3 || b1[0].Ref == "" {
			t.Fatalf("%d transfers in batch %q", n, b1[0].Ref)
		}
		batch[2].Amount = 31
		_, err = e.led.TransferBatch(ctx, batch, "key-batch")
		wantCode(t, err, "idempotency_key_reused")

		// Multi-leg.
		legs := ledger.LegsRequest{Legs: []ledger.Leg{{Account: alice.ID, Amount: -100}, {Account: bob.ID, Amount: 60}, {Account: cw.Accounts.Fees, Amount: 40}}}
		l1, err := e.led.TransferLegs(ctx, legs, "key-legs")
		if err != nil {
			t.Fatal(err)
		}
		if l2, err := e.led.TransferLegs(ctx, legs, "key-legs"); err != nil || l2.ID != l1.ID {
			t.Fatalf("repeated legs: %+v, %v", l2, err)
		}
		legs.Memo = "changed"
		_, err = e.led.TransferLegs(ctx, legs, "key-legs")
		wantCode(t, err, "idempotency_key_reused")

		// Withdrawal.
		wreq := ledger.WithdrawalRequest{Account: alice.ID, Address: e.externalAddress(), Amount: 100_000}
		w1, err := e.led.RequestWithdrawal(ctx, wreq, "key-withdrawal")
		if err != nil {
			t.Fatal(err)
		}
		w2, err := e.led.RequestWithdrawal(ctx, wreq, "key-withdrawal")
		if err != nil || w2.ID != w1.ID {
			t.Fatalf("repeated withdrawal: %+v, %v", w2, err)
		}
		if a := e.get(alice.ID); a.Held != 100_000 {
			t.Fatalf("held %d after a repeated withdrawal", a.Held)
		}
		if n := e.count(`SELECT COUNT(*) FROM withdrawals`); n != 1 {
			t.Fatalf("%d withdrawals", n)
		}
		wreq.Amount = 100_001
		_, err = e.led.RequestWithdrawal(ctx, wreq, "key-withdrawal")
		wantCode(t, err, "idempotency_key_reused")

		// Eight racing repeats: one transfer, the same answer to each.
		race := ledger.TransferRequest{From: bob.ID, To: alice.ID, Amount: 777}
		before := e.get(bob.ID).Total
		ids := make([]string, 8)
		errs := make([]error, 8)
		var wg sync.WaitGroup
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tr, err := e.led.Transfer(ctx, race, "key-race")
				errs[i] = err
				if err == nil {
					ids[i] = tr.ID
				}
			}()
		}
		wg.Wait()
		for i := range ids {
			if errs[i] != nil || ids[i] != ids[0] {
				t.Fatalf("racing repeat %d: %q, %v; first %q", i, ids[i], errs[i], ids[0])
			}
		}
		if after := e.get(bob.ID).Total; after != before-777 {
			t.Fatalf("bob %d → %d after racing repeats", before, after)
		}
		e.auditClean()
	})
}

// snapshot is the state a refused request must leave alone.
type snapshot struct {
	accounts                                  string
	transfers, postings, withdrawals, deposit int
	events                                    int
}

func (e *env) snapshot() snapshot {
	e.t.Helper()
	var b strings.Builder
	rows, err := e.db.QueryContext(e.ctx, `SELECT id, balance, held, pending_in, floor, flagged FROM ledger_accounts ORDER BY id`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var bal, held, pend, floor int64
		var flagged bool
		if err := rows.Scan(&id, &bal, &held, &pend, &floor, &flagged); err != nil {
			e.t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %d %d %d %d %v\n", id, bal, held, pend, floor, flagged)
	}
	return snapshot{
		accounts:    b.String(),
		transfers:   e.count(`SELECT COUNT(*) FROM ledger_transfers`),
		postings:    e.count(`SELECT COUNT(*) FROM ledger_postings`),
		withdrawals: e.count(`SELECT COUNT(*) FROM withdrawals`),
		deposit:     e.count(`SELECT COUNT(*) FROM custody_addresses`),
		events:      e.count(`SELECT COUNT(*) FROM events WHERE type NOT LIKE 'block.%' AND type NOT LIKE 'tx.%'`),
	}
}

// TestBadInput: every malformed or impossible request is refused with its
// code and changes nothing.
func TestBadInput(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, testConfig())
		ctx := e.ctx
		cw := e.newWallet("input")
		other := e.newWallet("other")
		alice, bob := e.account(cw.ID, "alice"), e.account(cw.ID, "bob")
		stranger := e.account(other.ID, "stranger")
		e.fundAccounts([]*ledger.Account{alice, bob}, 5_000_000)
		bobAddr := e.depositAddress(bob.ID)
		aliceAddr := e.depositAddress(alice.ID)
		// An account of another asset in the same wallet (a future
		// multi-asset wallet), written directly.
		if err := db.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO ledger_accounts (id, wallet_id, kind, name, asset, balance, created_at, updated_at)
				VALUES ('acc_ltc', $1, 'customer', 'ltc', 'LTC', 0, 0, 0)`, cw.ID)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.led.CreateAccount(ctx, cw.ID, ledger.CreateAccountRequest{Name: "carol", ExternalID: "ext-1"}); err != nil {
			t.Fatal(err)
		}
		many := make([]ledger.TransferRequest, ledger.MaxBatchTransfers+1)
		for i := range many {
			many[i] = ledger.TransferRequest{From: alice.ID, To: bob.ID, Amount: 1}
		}
		tr := func(from, to string, amt amount.Amount) func() error {
			return func() error {
				_, err := e.led.Transfer(ctx, ledger.TransferRequest{From: from, To: to, Amount: amt}, "")
				return err
			}
		}
		wd := func(account, addr string, amt amount.Amount, priority string) func() error {
			return func() error {
				_, err := e.led.RequestWithdrawal(ctx, ledger.WithdrawalRequest{Account: account, Address: addr, Amount: amt, Priority: priority}, "")
				return err
			}
		}
		ext := e.externalAddress()
		badSum := ext[:len(ext)-1] + "q"
		if strings.HasSuffix(ext, "q") {
			badSum = ext[:len(ext)-1] + "p"
		}
		cases := []struct {
			name, code string
			do         func() error
		}{
			{"unknown from", "not_found", tr("acc_nope", bob.ID, 1)},
			{"unknown to", "not_found", tr(alice.ID, "acc_nope", 1)},
			{"same account", "same_account", tr(alice.ID, alice.ID, 1)},
			{"other wallet", "invalid_parameter", tr(alice.ID, stranger.ID, 1)},
			{"other asset", "asset_mismatch", tr(alice.ID, "acc_ltc", 1)},
			{"zero amount", "invalid_amount", tr(alice.ID, bob.ID, 0)},
			{"negative amount", "invalid_amount", tr(alice.ID, bob.ID, -5)},
			{"insufficient funds", "insufficient_funds", tr(alice.ID, bob.ID, 5_000_001)},
			{"from the hot account", "invalid_parameter", tr(cw.Accounts.Hot, bob.ID, 1)},
			{"to the in-flight account", "invalid_parameter", tr(alice.ID, cw.Accounts.Inflight, 1)},
			{"memo too long", "invalid_parameter", func() error {
				_, err := e.led.Transfer(ctx, ledger.TransferRequest{From: alice.ID, To: bob.ID, Amount: 1, Memo: strings.Repeat("m", 501)}, "")
				return err
			}},
			{"batch over the limit", "invalid_parameter", func() error { _, err := e.led.TransferBatch(ctx, many, ""); return err }},
			{"empty batch", "invalid_parameter", func() error { _, err := e.led.TransferBatch(ctx, nil, ""); return err }},
			{"batch with one transfer short", "insufficient_funds", func() error {
				_, err := e.led.TransferBatch(ctx, []ledger.TransferRequest{
					{From: alice.ID, To: bob.ID, Amount: 1_000}, {From: bob.ID, To: alice.ID, Amount: 2_000},
					{From: alice.ID, To: bob.ID, Amount: 5_001_001}}, "")
				return err
			}},
			{"unbalanced legs", "unbalanced_transfer", func() error {
				_, err := e.led.TransferLegs(ctx, ledger.LegsRequest{Legs: []ledger.Leg{{Account: alice.ID, Amount: -10}, {Account: bob.ID, Amount: 9}}}, "")
				return err
			}},
			{"money out of the empty fees account", "insufficient_funds", func() error {
				_, err := e.led.TransferLegs(ctx, ledger.LegsRequest{Legs: []ledger.Leg{{Account: cw.Accounts.Fees, Amount: -10}, {Account: bob.ID, Amount: 10}}}, "")
				return err
			}},
			{"money out of the empty imports account", "insufficient_funds", tr(cw.Accounts.Imports, bob.ID, 10)},
			{"one leg", "invalid_parameter", func() error {
				_, err := e.led.TransferLegs(ctx, ledger.LegsRequest{Legs: []ledger.Leg{{Account: alice.ID, Amount: -10}}}, "")
				return err
			}},
			{"withdrawal: unknown account", "not_found", wd("acc_nope", ext, 100_000, "")},
			{"withdrawal: invalid address", "invalid_address", wd(alice.ID, "not-an-address", 100_000, "")},
			{"withdrawal: checksum error", "invalid_address", wd(alice.ID, badSum, 100_000, "")},
			{"withdrawal: mainnet bech32", "wrong_network", wd(alice.ID, "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", 100_000, "")},
			{"withdrawal: mainnet base58", "wrong_network", wd(alice.ID, "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", 100_000, "")},
			{"withdrawal: testnet bech32", "wrong_network", wd(alice.ID, "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", 100_000, "")},
			{"withdrawal: zero", "invalid_amount", wd(alice.ID, ext, 0, "")},
			{"withdrawal: negative", "invalid_amount", wd(alice.ID, ext, -1, "")},
			{"withdrawal: dust", "dust_amount", wd(alice.ID, ext, 200, "")},
			{"withdrawal: insufficient funds", "insufficient_funds", wd(alice.ID, ext, 5_000_001, "")},
			{"withdrawal: bad priority", "invalid_parameter", wd(alice.ID, ext, 100_000, "urgent")},
			{"withdrawal: from a system account", "invalid_parameter", wd(cw.Accounts.Fees, ext, 100_000, "")},
			{"withdrawal: to its own deposit address", "same_account", wd(alice.ID, aliceAddr, 100_000, "")},
			{"withdrawal: internal, insufficient", "insufficient_funds", wd(alice.ID, bobAddr, 5_000_001, "")},
			{"account: no name", "invalid_parameter", func() error {
				_, err := e.led.CreateAccount(ctx, cw.ID, ledger.CreateAccountRequest{Name: "  "})
				return err
			}},
			{"account: external id taken", "conflict", func() error {
				_, err := e.led.CreateAccount(ctx, cw.ID, ledger.CreateAccountRequest{Name: "dup", ExternalID: "ext-1"})
				return err
			}},
			{"account: unknown wallet", "not_found", func() error {
				_, err := e.led.CreateAccount(ctx, "w_nope", ledger.CreateAccountRequest{Name: "x"})
				return err
			}},
			{"deposit address of a system account", "invalid_parameter", func() error {
				_, err := e.led.NewDepositAddress(ctx, cw.Accounts.Hot)
				return err
			}},
			{"ack unknown deposit", "not_found", func() error { _, err := e.led.AckDeposit(ctx, "dep_nope"); return err }},
			{"cancel unknown withdrawal", "not_found", func() error { _, err := e.led.CancelWithdrawal(ctx, "wd_nope"); return err }},
			{"bump unknown batch", "not_found", func() error { _, err := e.led.BumpBatch(ctx, "bat_nope", 50); return err }},
			{"wallet: mnemonic and xprv", "invalid_parameter", func() error {
				_, err := e.led.CreateWallet(ctx, ledger.CreateWalletRequest{Mnemonic: "abandon", Xprv: "tprv"})
				return err
			}},
			{"wallet: bad mnemonic", "invalid_parameter", func() error {
				_, err := e.led.CreateWallet(ctx, ledger.CreateWalletRequest{Mnemonic: "abandon abandon abandon"})
				return err
			}},
			{"wallet: 13 words", "invalid_parameter", func() error {
				_, err := e.led.CreateWallet(ctx, ledger.CreateWalletRequest{Words: 13})
				return err
			}},
		}
		before := e.snapshot()
		for _, c := range cases {
			wantCode(t, c.do(), c.code)
			if after := e.snapshot(); after != before {
				t.Fatalf("%s: refused, yet the state changed:\n%+v\n%+v", c.name, before, after)
			}
		}
		// The funded accounts still work.
		if err := tr(alice.ID, bob.ID, 5_000_000)(); err != nil {
			t.Fatal(err)
		}
		e.auditClean()
	})
}

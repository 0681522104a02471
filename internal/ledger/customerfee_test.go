package ledger_test

import (
	"testing"
	"time"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// TestCustomerPaysNetworkFee: with the customer paying, each withdrawal is
// charged the withdrawal fee plus its even share of the batch's actual fee
// (the shares sum to the fee); the unused part of the held maximum returns
// to the account, and the fees account ends at the withdrawal fees.
func TestCustomerPaysNetworkFee(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		cfg := testConfig()
		cfg.WithdrawalFee, cfg.CustomerPaysNetworkFee, cfg.MaxNetworkFeeShare = 500, true, 50_000
		e := newEnv(t, db, cfg)
		ctx := e.ctx
		cw := e.newWallet("customer fee")
		alice, bob := e.account(cw.ID, "alice"), e.account(cw.ID, "bob")
		e.fundAccounts([]*ledger.Account{alice, bob}, 5_000_000)
		var ws []*ledger.Withdrawal
		for i, acc := range []*ledger.Account{alice, bob, alice} {
			w, err := e.led.RequestWithdrawal(ctx, ledger.WithdrawalRequest{Account: acc.ID, Address: e.externalAddress(),
				Amount: amount.Amount(1_000_000 + 1_000*i)}, "")
			if err != nil {
				t.Fatal(err)
			}
			if w.Fee != 50_500 {
				t.Fatalf("queued withdrawal holds a fee of %s, want the withdrawal fee plus the largest share", w.Fee)
			}
			ws = append(ws, w)
		}
		if a := e.get(alice.ID); a.Held != 2_002_000+2*50_500 {
			t.Fatalf("alice holds %s", a.Held)
		}
		e.tick()
		e.mine(1)
		var charged, networkFee int64
		for _, w := range ws {
			e.eventually(30*time.Second, "withdrawal confirmed", func() (bool, string) {
				got, err := e.led.GetWithdrawal(ctx, w.ID)
				if err != nil || got.Status != ledger.WithdrawalConfirmed {
					return false, "not yet"
				}
				return true, ""
			})
			got, _ := e.led.GetWithdrawal(ctx, w.ID)
			if got.Fee <= 500 || got.Fee > 50_500 {
				t.Fatalf("withdrawal %s charged %s", got.ID, got.Fee)
			}
			charged += int64(got.Fee) - 500
			b, err := e.led.GetBatch(ctx, *got.BatchID)
			if err != nil {
				t.Fatal(err)
			}
			networkFee = b.Fee
		}
		if charged != networkFee {
			t.Fatalf("customers were charged %d of a network fee of %d", charged, networkFee)
		}
		// The holds are gone; each account paid amount + its charge.
		for _, acc := range []*ledger.Account{alice, bob} {
			if a := e.get(acc.ID); a.Held != 0 {
				t.Fatalf("%s still holds %s", acc.Name, a.Held)
			}
		}
		if fees := e.get(cw.Accounts.Fees); fees.Total != 3*500 {
			t.Fatalf("fees account at %s, want the three withdrawal fees", fees.Total)
		}
		e.auditClean()
	})
}

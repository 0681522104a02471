package ledger_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// TestRunTrigger: the running batcher pays as soon as the queue reaches
// BatchMaxCount, without waiting for its interval.
func TestRunTrigger(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		cfg := testConfig()
		cfg.BatchMaxCount = 3
		e := newEnv(t, db, cfg)
		cw := e.newWallet("run")
		alice := e.account(cw.ID, "alice")
		// Started first: its first round, which pays whatever is queued,
		// is over before anything is.
		ctx, cancel := context.WithCancel(e.ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); e.led.Run(ctx) }()
		defer wg.Wait()
		defer cancel()
		e.fundAccounts([]*ledger.Account{alice}, 5_000_000)

		request := func() *ledger.Withdrawal {
			w, err := e.led.RequestWithdrawal(e.ctx, ledger.WithdrawalRequest{Account: alice.ID, Address: e.externalAddress(), Amount: 100_000}, "")
			if err != nil {
				t.Fatal(err)
			}
			return w
		}
		first := request()
		request()
		time.Sleep(300 * time.Millisecond)
		if w, _ := e.led.GetWithdrawal(e.ctx, first.ID); w.Status != ledger.WithdrawalQueued {
			t.Fatalf("paid below the trigger: %+v", w)
		}
		request()
		e.eventually(30*time.Second, "the batcher to pay the full queue", func() (bool, string) {
			w, _ := e.led.GetWithdrawal(e.ctx, first.ID)
			return w.Status == ledger.WithdrawalBroadcast, w.Status
		})
		if n := e.count(`SELECT COUNT(*) FROM withdrawals WHERE status = 'broadcast'`); n != 3 {
			t.Fatalf("%d withdrawals broadcast", n)
		}
	})
}

package ledger_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// TestConcurrency: 8 goroutines × 500 random operations (transfers, batch
// transfers, withdrawal requests, cancellations) over 20 funded accounts,
// while the batcher pays and blocks are mined. Afterwards no account is
// negative, the postings sum to zero, balances equal postings, every paid
// withdrawal is an output on chain exactly once, and the audit is clean.
func TestConcurrency(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		cfg := testConfig()
		cfg.BatchMaxCount = 250
		e := newEnv(t, db, cfg)
		ctx := e.ctx
		cw := e.newWallet("busy")
		const nAccounts, funded = 20, 50_000_000
		var accts []*ledger.Account
		for i := range nAccounts {
			accts = append(accts, e.account(cw.ID, fmt.Sprintf("acct %d", i)))
		}
		e.fundAccounts(accts, funded)
		dests := make([]string, 40)
		for i := range dests {
			dests[i] = e.externalAddress()
		}

		const workers, opsEach = 8, 500
		type result struct {
			codes     map[string]int
			requested []string // withdrawals made
		}
		results := make([]result, workers)
		stop := make(chan struct{})
		var bg sync.WaitGroup
		bgErr := make(chan error, 1)
		var tickErrs []error
		// The batcher and the miner run beside the clients.
		bg.Add(1)
		go func() {
			defer bg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(300 * time.Millisecond):
				}
				if err := e.led.Tick(ctx, true); err != nil {
					// As Run does: log, and try again at the next tick.
					tickErrs = append(tickErrs, err)
				}
				if i%3 == 2 {
					if _, err := e.node.Mine(ctx, 1); err != nil {
						select {
						case bgErr <- fmt.Errorf("mine: %w", err):
						default:
						}
						return
					}
				}
			}
		}()
		start := time.Now()
		var wg sync.WaitGroup
		for g := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(g), 42))
				res := result{codes: map[string]int{}}
				pick := func() string { return accts[r.IntN(nAccounts)].ID }
				pair := func() (string, string) {
					a, b := r.IntN(nAccounts), r.IntN(nAccounts-1)
					if b >= a {
						b++
					}
					return accts[a].ID, accts[b].ID
				}
				for range opsEach {
					var err error
					op := ""
					switch n := r.IntN(100); {
					case n < 45:
						op = "transfer"
						from, to := pair()
						_, err = e.led.Transfer(ctx, ledger.TransferRequest{From: from, To: to,
							Amount: amount.Amount(1 + r.Int64N(15_000_000))}, "")
					case n < 50:
						op = "batch"
						var reqs []ledger.TransferRequest
						for range 3 {
							from, to := pair()
							reqs = append(reqs, ledger.TransferRequest{From: from, To: to, Amount: amount.Amount(1 + r.Int64N(8_000_000))})
						}
						_, err = e.led.TransferBatch(ctx, reqs, "")
					case n < 85:
						op = "withdraw"
						var w *ledger.Withdrawal
						w, err = e.led.RequestWithdrawal(ctx, ledger.WithdrawalRequest{Account: pick(),
							Address: dests[r.IntN(len(dests))], Amount: amount.Amount(10_000 + r.Int64N(200_000))}, "")
						if err == nil {
							res.requested = append(res.requested, w.ID)
						}
					default:
						op = "cancel"
						if len(res.requested) == 0 {
							continue
						}
						_, err = e.led.CancelWithdrawal(ctx, res.requested[r.IntN(len(res.requested))])
					}
					res.codes[op+":"+code(err)]++
					if code(err) == "?" {
						res.codes["error: "+err.Error()]++
					}
				}
				results[g] = res
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		close(stop)
		bg.Wait()
		select {
		case err := <-bgErr:
			t.Fatal(err)
		default:
		}

		totals := map[string]int{}
		var requested []string
		for _, r := range results {
			for k, v := range r.codes {
				totals[k] += v
			}
			requested = append(requested, r.requested...)
		}
		st := db.Stats()
		t.Logf("%d operations in %s: %v", workers*opsEach, elapsed.Round(time.Millisecond), totals)
		t.Logf("store: %d transaction attempts, %d retries, %d given up", st.Attempts, st.Retries, st.GiveUps)
		for _, err := range tickErrs {
			t.Logf("a batcher tick failed (retried at the next): %v", err)
		}
		for k := range totals {
			switch k {
			case "transfer:", "transfer:insufficient_funds", "batch:", "batch:insufficient_funds",
				"withdraw:", "withdraw:insufficient_funds", "cancel:", "cancel:invalid_state":
			default:
				t.Errorf("unexpected outcome %q (%d times)", k, totals[k])
			}
		}
		if totals["transfer:"] == 0 || totals["withdraw:"] == 0 || totals["cancel:"] == 0 || totals["batch:"] == 0 {
			t.Fatalf("some operation never succeeded: %v", totals)
		}

		// Pay what is left and confirm everything.
		e.waitTip()
		for round := 0; ; round++ {
			e.tick()
			e.mine(1)
			left := e.count(`SELECT COUNT(*) FROM withdrawals WHERE status IN ('queued', 'signed', 'broadcast')`)
			if left == 0 {
				break
			}
			if round == 10 {
				dumpBatches(e)
				t.Fatalf("%d withdrawals still unpaid", left)
			}
		}

		if n := e.count(`SELECT COUNT(*) FROM ledger_accounts WHERE kind = 'customer' AND (balance < 0 OR balance - held < 0 OR flagged)`); n != 0 {
			t.Fatalf("%d customer accounts below zero", n)
		}
		if s := e.sum(`SELECT SUM(amount) FROM ledger_postings`); s != 0 {
			t.Fatalf("the postings sum to %d", s)
		}
		if n := e.count(`SELECT COUNT(*) FROM ledger_accounts a WHERE a.balance <> COALESCE((SELECT SUM(p.amount) FROM ledger_postings p WHERE p.account_id = a.id), 0)`); n != 0 {
			t.Fatalf("%d accounts whose balance differs from their postings", n)
		}
		if n := e.count(`SELECT COUNT(*) FROM ledger_accounts WHERE held <> 0`); n != 0 {
			t.Fatalf("%d accounts still hold funds", n)
		}
		if n := e.count(`SELECT COUNT(*) FROM withdrawals`); n != len(requested) {
			t.Fatalf("%d withdrawal rows, %d requests succeeded", n, len(requested))
		}
		// Every confirmed withdrawal is its own output of a confirmed
		// transaction, paying what it asked.
		ws := map[string]*ledger.Withdrawal{}
		after := ""
		for {
			page, err := e.led.ListWithdrawals(ctx, ledger.WithdrawalFilter{WalletID: cw.ID, After: after, Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, w := range page {
				ws[w.ID] = w
			}
			after = page[len(page)-1].ID
		}
		txs := map[string]*nodeTx{}
		outs := map[string]string{}
		confirmed, cancelled := 0, 0
		for _, w := range ws {
			switch w.Status {
			case ledger.WithdrawalCancelled:
				cancelled++
				continue
			case ledger.WithdrawalConfirmed:
				confirmed++
			default:
				t.Fatalf("withdrawal %s is %s", w.ID, w.Status)
			}
			ntx := txs[*w.Txid]
			if ntx == nil {
				ntx = e.nodeTransaction(*w.Txid)
				txs[*w.Txid] = ntx
				if ntx.Confirmations < 1 {
					t.Fatalf("batch transaction %s unconfirmed", *w.Txid)
				}
			}
			o := ntx.msg.TxOut[*w.Vout]
			if o.Value != int64(w.Amount) || !bytes.Equal(o.PkScript, e.script(w.Address)) {
				t.Fatalf("withdrawal %s: output %s:%d pays %d to %x", w.ID, *w.Txid, *w.Vout, o.Value, o.PkScript)
			}
			key := fmt.Sprintf("%s:%d", *w.Txid, *w.Vout)
			if other, dup := outs[key]; dup {
				t.Fatalf("withdrawals %s and %s share output %s", other, w.ID, key)
			}
			outs[key] = w.ID
		}
		t.Logf("%d withdrawals confirmed in %d transactions, %d cancelled", confirmed, len(txs), cancelled)
		for _, ev := range e.eventsOf(ledger.EventAlert, "", "") {
			if !strings.Contains(string(ev.Data), `"kind":"hot_wallet_short"`) {
				t.Errorf("alert %s", ev.Data)
			}
		}
		e.auditClean()
	})
}

// dumpBatches logs every batch with its inputs and the chain events of the
// failed ones, to see why withdrawals were not paid.
func dumpBatches(e *env) {
	e.t.Helper()
	rows, err := e.db.QueryContext(e.ctx, `SELECT id, status, error, txid, raw FROM custody_batches ORDER BY created_at`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	spentBy := map[string]string{}
	var failed []string
	for rows.Next() {
		var id, status, msg, txid string
		var raw []byte
		if err := rows.Scan(&id, &status, &msg, &txid, &raw); err != nil {
			e.t.Fatal(err)
		}
		tx, err := e.node.Chain().ParseTx(raw)
		if err != nil {
			e.t.Fatal(err)
		}
		var ins []string
		for _, in := range tx.TxIn {
			op := in.PreviousOutPoint.String()
			ins = append(ins, op)
			if other, ok := spentBy[op]; ok {
				e.t.Logf("batches %s and %s both spend %s", other, id, op)
			}
			spentBy[op] = id
		}
		if status == ledger.BatchFailed {
			failed = append(failed, txid)
		}
		e.t.Logf("batch %s %s %s spends %v %q", id, status, txid, ins, msg)
	}
	for _, ev := range e.allEvents() {
		show := ev.Type == "block.connected" || ev.Type == "block.disconnected" || ev.Type == ledger.EventAlert
		for _, txid := range failed {
			show = show || (strings.HasPrefix(ev.Type, "tx.") && strings.Contains(string(ev.Data), txid))
		}
		if show {
			e.t.Logf("event %d %s %.300s", ev.ID, ev.Type, ev.Data)
		}
	}
}

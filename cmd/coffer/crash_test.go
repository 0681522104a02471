//go:build unix

package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/follow"
	"github.com/coffer/coffer/internal/keys"
	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/regtest"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/wallet"
)

// Crash-safety of withdrawal batches: how many rounds per crash point, and
// how many withdrawals from how many accounts each round queues.
const (
	crashRounds      = 3
	crashWithdrawals = 12
	crashAccounts    = 3
)

// crashBumpRounds is how many rounds kill coffer serve right after it
// fee-bumped a batch.
const crashBumpRounds = 2

// crashPoints are the places internal/ledger/crash.go can kill the process
// while paying a batch, in the order a batch passes them.
var crashPoints = []string{"batching", "journaled", "broadcast"}

// TestCrashDuringBatching SIGKILLs `coffer serve` (COFFER_TEST_CRASH_AT) at
// each point of paying a withdrawal batch — withdrawals picked but nothing
// journaled, signed and journaled but not broadcast, broadcast but not
// recorded — several times each, restarts it without the fault, and checks
// on the node's chain that every withdrawal was paid exactly once (its
// fresh address received exactly its amount in exactly one output of all
// the transactions mined or pending), and that coffer audit is clean.
func TestCrashDuringBatching(t *testing.T) {
	if testing.Short() {
		t.Skip("TestCrashDuringBatching runs a regtest btcd and SIGKILLs coffer serve while it pays withdrawals; skipped in -short mode")
	}
	// Segwit is active from height 432 on btcd regtest; the hot wallet's
	// outputs are P2WPKH.
	n := regtest.StartT(t, regtest.Options{PreMine: 440})
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) { crashDuringBatching(t, n, engine) })
	}
}

// custodyDriver is how the test works the ledger: through the HTTP API of
// the running server, or, where those routes do not exist, through the Go
// ledger on the same database.
type custodyDriver interface {
	name() string
	createWallet(t *testing.T) *ledger.CustodyWallet
	createAccount(t *testing.T, walletID, name string) *ledger.Account
	depositAddress(t *testing.T, walletID, accountID string) string
	deposits(t *testing.T, accountID string) []ledger.Deposit
	// withdraw queues a withdrawal; an error means the server may or may
	// not have it (it died), and the same key is retried later.
	withdraw(t *testing.T, req ledger.WithdrawalRequest, key string) (*ledger.Withdrawal, error)
	withdrawal(t *testing.T, id string) *ledger.Withdrawal
}

// crashEnv is one engine's run: a database, a master key, a serve config.
type crashEnv struct {
	node    *regtest.Node
	dir     string
	dsn     string
	db      *store.DB
	env     []string
	base    string
	keyFile string
	drv     custodyDriver
}

func crashDuringBatching(t *testing.T, n *regtest.Node, engine string) {
	start := time.Now()
	ctx := context.Background()
	e := &crashEnv{node: n, dir: t.TempDir(), dsn: storetest.NewDSN(t, engine)}
	e.db = storetest.Open(t, e.dsn)
	line, err := keys.GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	e.keyFile = filepath.Join(e.dir, "master.key")
	if err := os.WriteFile(e.keyFile, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rpc := n.RPC()
	listen := freeAddr(t)
	e.base = "http://" + listen
	e.env = serveEnv(e.dir, e.dsn, listen, rpc.URL, rpc.User, rpc.Password,
		"COFFER_CUSTODY_MASTER_KEY_FILE="+e.keyFile,
		"COFFER_CUSTODY_CONFIRMATIONS=1",
		"COFFER_CUSTODY_BATCH_INTERVAL=1s",
		"COFFER_LOG_LEVEL=warn")

	// Set up: a custodial wallet with accounts funded by credited deposits.
	p := startCoffer(t, e.dir, e.env, "serve")
	waitSynced(t, p, e.base, 60*time.Second)
	w, accounts, p := e.setUp(t, p)
	t.Logf("%s: set up wallet %s with %d funded accounts through %s in %s", engine, w.ID, len(accounts), e.drv.name(),
		time.Since(start).Round(time.Millisecond))

	firstHeight, err := n.Client().GetBlockCount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p.stop(syscall.SIGTERM, 30*time.Second)

	// Each round: queue withdrawals under a coffer that dies at point,
	// restart it without the fault, mine until every one is confirmed.
	var all []*ledger.Withdrawal
	round := 0
	for _, point := range crashPoints {
		for i := range crashRounds {
			round++
			all = append(all, e.crashRound(t, round, point, crashVariant(point, i), accounts)...)
		}
	}

	// Fee bumps replace a batch's journaled transaction: kill right after
	// one, while the replacement may or may not have reached the node.
	for i := range crashBumpRounds {
		round++
		all = append(all, e.bumpRound(t, round, i+2, accounts)...)
	}

	// A kill between choosing a batch's inputs and journaling it.
	round++
	all = append(all, e.proposedRound(t, round, accounts)...)

	// Every withdrawal paid exactly once, on chain.
	p = startCoffer(t, e.dir, e.env, "serve")
	waitSynced(t, p, e.base, 60*time.Second)
	e.checkPaidOnce(t, firstHeight, all)
	if _, isHTTP := e.drv.(*httpDriver); isHTTP {
		var r ledger.AuditReport
		code, body, err := getJSON(e.base+"/v1/audit", &r)
		if err != nil || code != http.StatusOK || !r.Clean {
			t.Errorf("GET /v1/audit: %d %v %s", code, err, body)
		}
	}
	p.stop(syscall.SIGTERM, 30*time.Second)
	e.checkAlerts(t)
	code, out, errs := runCoffer(t, e.dir, 30*time.Second, e.env, "audit", "-node")
	if code != 0 || !strings.Contains(out, "the books are clean") {
		t.Errorf("coffer audit after the crashes exited %d:\n%s%s", code, out, errs)
	}
	if !t.Failed() {
		t.Logf("%s: %d withdrawals in %d rounds with a SIGKILL each, all paid exactly once; audit clean; %s in all",
			engine, len(all), round, time.Since(start).Round(time.Millisecond))
	}
}

// setUp creates the wallet and accounts, two deposit addresses each, pays
// two deposits to each and waits until they are credited. p runs a server
// without faults; setUp returns the one running at the end, p or another
// it started after working behind p's back.
func (e *crashEnv) setUp(t *testing.T, p *proc) (*ledger.CustodyWallet, []*ledger.Account, *proc) {
	ctx := context.Background()
	// Use the server's routes when it has them.
	hd := &httpDriver{base: e.base}
	code, body := hd.post(t, "/v1/custody/wallets", "setup-wallet", map[string]any{"label": "crash test", "return_mnemonic": false}, nil)
	var w *ledger.CustodyWallet
	switch code {
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		t.Logf("POST /v1/custody/wallets answers %d: the custody routes are not there yet; setting up through the Go ledger on the same database instead", code)
		p.stop(syscall.SIGTERM, 30*time.Second)
		e.drv = newGoDriver(t, e)
		w = e.drv.createWallet(t)
	case http.StatusOK, http.StatusCreated:
		e.drv = hd
		w = new(ledger.CustodyWallet)
		if err := json.Unmarshal(body, w); err != nil || w.ID == "" {
			t.Fatalf("POST /v1/custody/wallets: %v: %s", err, body)
		}
	default:
		t.Fatalf("POST /v1/custody/wallets: %d %s", code, body)
	}
	var accounts []*ledger.Account
	var addrs []string
	for i := range crashAccounts {
		a := e.drv.createAccount(t, w.ID, fmt.Sprintf("customer %d", i+1))
		accounts = append(accounts, a)
		for range 2 {
			addrs = append(addrs, e.drv.depositAddress(t, w.ID, a.ID))
		}
	}
	if p.exited() {
		// A wallet made behind the server's back is followed from its start.
		p = startCoffer(t, e.dir, e.env, "serve")
	}
	// Its history is recovered before it can pay: wait for ready.
	waitUntil(t, p, 60*time.Second, 100*time.Millisecond, "the custodial wallet to be ready", func() (bool, string) {
		var st struct{ Status string }
		code, body, err := getJSON(e.base+"/v1/wallets/"+w.ID, &st)
		return err == nil && code == http.StatusOK && st.Status == wallet.StatusReady, fmt.Sprintf("%d %s %v", code, body, err)
	})
	for i, a := range addrs {
		script, err := e.node.Chain().AddressScript(a)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.node.Fund(ctx, script, int64(50_000_000+i*1_000_000)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.node.Mine(ctx, 1); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, p, 60*time.Second, 100*time.Millisecond, "the deposits to be credited", func() (bool, string) {
		credited := 0
		for _, a := range accounts {
			for _, d := range e.drv.deposits(t, a.ID) {
				if d.Status == ledger.DepositCredited {
					credited++
				}
			}
		}
		return credited == len(addrs), fmt.Sprintf("%d of %d deposits credited", credited, len(addrs))
	})
	return w, accounts, p
}

// A round's variant: what happens between the kill and the restart
// without faults.
const (
	plainRestart = ""
	// crashAgain restarts first with the next crash point, so the second
	// server dies finishing what the first left (rebroadcasting it, say).
	crashAgain = "crash-again"
	// mineWhileDown mines the broadcast batch while no Coffer runs: the
	// restarted server finds it confirmed.
	mineWhileDown = "mine-while-down"
)

// crashVariant is the variant of the i-th round at point.
func crashVariant(point string, i int) string {
	switch {
	case i == 1 && point != "broadcast":
		return crashAgain
	case i >= 1 && point == "broadcast":
		// Twice: the restarted follower and batcher race, and the
		// outcome once depended on which came first.
		return mineWhileDown
	}
	return plainRestart
}

// crashRound queues crashWithdrawals withdrawals under a server that kills
// itself at point, checks it died by SIGKILL there, restarts it without the
// fault (after what variant says) and mines until all of them are
// confirmed.
func (e *crashEnv) crashRound(t *testing.T, round int, point, variant string, accounts []*ledger.Account) []*ledger.Withdrawal {
	ctx := context.Background()
	roundStart := time.Now()
	// It has nothing to pay until the withdrawals below are queued. Let
	// its start-up tick pass, so that the next one, a second later, finds
	// all of them queued (if it does not, requests the kill cuts off are
	// sent again after the restart).
	p := startCoffer(t, e.dir, append(slices.Clip(e.env), "COFFER_TEST_CRASH_AT="+point), "serve")
	e.waitAnswering(t, p)
	time.Sleep(250 * time.Millisecond)
	type pending struct {
		req ledger.WithdrawalRequest
		key string
	}
	var ws []*ledger.Withdrawal
	var retry []pending
	for i := range crashWithdrawals {
		req := ledger.WithdrawalRequest{
			Account: accounts[i%len(accounts)].ID,
			Address: e.node.NewKey().WitnessAddress(), // fresh: paid by Coffer only
			Amount:  amount.Amount(100_000 + round*1_000 + i*37),
		}
		key := fmt.Sprintf("crash-%d-%d", round, i)
		wd, err := e.drv.withdraw(t, req, key)
		if err != nil {
			retry = append(retry, pending{req, key})
			continue
		}
		ws = append(ws, wd)
	}

	e.waitKilled(t, p, round, point)
	state := e.crashState(t, point, ws)
	switch variant {
	case crashAgain:
		next := crashPoints[slices.Index(crashPoints, point)+1]
		// It may die finishing the batch before it answers requests.
		p = startCoffer(t, e.dir, append(slices.Clip(e.env), "COFFER_TEST_CRASH_AT="+next), "serve")
		e.waitKilled(t, p, round, next)
		state += "; restarted with COFFER_TEST_CRASH_AT=" + next + ", killed again: " + e.crashState(t, next, ws)
	case mineWhileDown:
		if _, err := e.node.Mine(ctx, 1); err != nil {
			t.Fatal(err)
		}
		state += "; a block mined before the restart"
	}

	p = startCoffer(t, e.dir, e.env, "serve")
	e.waitAnswering(t, p)
	// Requests cut off by the kill are sent again with their keys: each
	// either finds the withdrawal the dead server made or makes it now.
	retryStart := time.Now()
	for _, r := range retry {
		var wd *ledger.Withdrawal
		// Up to the idempotency lease (60s) of a request the kill cut off.
		waitUntil(t, p, 90*time.Second, 250*time.Millisecond, "a withdrawal request to be retried", func() (bool, string) {
			var err error
			wd, err = e.drv.withdraw(t, r.req, r.key)
			return err == nil, fmt.Sprint(err)
		})
		ws = append(ws, wd)
	}
	if len(retry) > 0 {
		state += fmt.Sprintf("; %d request(s) cut off by the kill sent again with their keys (accepted after %s)", len(retry),
			time.Since(retryStart).Round(time.Millisecond))
	}
	mined := e.mineUntilConfirmed(t, p, round, ws)
	p.stop(syscall.SIGTERM, 30*time.Second)
	t.Logf("round %d (%s%s): killed with %d withdrawals queued; %s; after restart all confirmed (%d block(s) mined) in %s",
		round, point, strings.TrimSuffix(", "+variant, ", "), len(ws), state, mined, time.Since(roundStart).Round(time.Millisecond))
	return ws
}

// bumpRound queues withdrawals under a server that fee-bumps a batch one
// second after broadcasting it, SIGKILLs it as soon as the batch has
// `versions` journaled versions (the last one just journaled, maybe
// broadcast), restarts it without bumps and mines until all are confirmed.
func (e *crashEnv) bumpRound(t *testing.T, round, versions int, accounts []*ledger.Account) []*ledger.Withdrawal {
	ctx := context.Background()
	roundStart := time.Now()
	p := startCoffer(t, e.dir, append(slices.Clip(e.env), "COFFER_CUSTODY_BUMP_AFTER=1s"), "serve")
	e.waitAnswering(t, p)
	var ws []*ledger.Withdrawal
	for i := range crashWithdrawals {
		req := ledger.WithdrawalRequest{
			Account: accounts[i%len(accounts)].ID,
			Address: e.node.NewKey().WitnessAddress(),
			Amount:  amount.Amount(100_000 + round*1_000 + i*37),
		}
		wd, err := e.drv.withdraw(t, req, fmt.Sprintf("crash-%d-%d", round, i))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		ws = append(ws, wd)
	}
	var batch string
	var n int
	deadline := time.Now().Add(60 * time.Second)
	for {
		if batch == "" {
			var b *string
			if err := e.db.QueryRowContext(ctx, `SELECT batch_id FROM withdrawals WHERE id = $1`, ws[0].ID).Scan(&b); err != nil {
				t.Fatal(err)
			}
			if b != nil {
				batch = *b
			}
		}
		if batch != "" {
			if err := e.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM custody_batch_txs WHERE batch_id = $1`, batch).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n >= versions {
				p.kill()
				break
			}
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("round %d: batch %q has %d version(s), waiting for %d (exited: %v); stderr:\n%s", round, batch, n, versions,
				p.exited(), tailLines(withoutAccessLog(p.stderr.String()), 30))
		}
		time.Sleep(2 * time.Millisecond)
	}
	if st, _ := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !st.Signaled() || st.Signal() != syscall.SIGKILL {
		t.Fatalf("round %d: coffer serve ended with %q, want death by SIGKILL", round, p.cmd.ProcessState)
	}
	var status, txid string
	if err := e.db.QueryRowContext(ctx, `SELECT status, txid FROM custody_batches WHERE id = $1`, batch).Scan(&status, &txid); err != nil {
		t.Fatal(err)
	}
	pool, err := e.node.Client().GetRawMempool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	state := fmt.Sprintf("killed at version %d of batch %s (%s, journaled version in the mempool: %v)", versions, batch, status,
		slices.Contains(pool, txid))

	p = startCoffer(t, e.dir, e.env, "serve")
	e.waitAnswering(t, p)
	mined := e.mineUntilConfirmed(t, p, round, ws)
	p.stop(syscall.SIGTERM, 30*time.Second)
	var confirmed string
	if err := e.db.QueryRowContext(ctx, `SELECT confirmed_txid FROM custody_batches WHERE id = $1`, batch).Scan(&confirmed); err != nil {
		t.Fatal(err)
	}
	t.Logf("round %d (fee bump): %s; after restart version %s confirmed (%d block(s) mined) in %s",
		round, state, confirmed, mined, time.Since(roundStart).Round(time.Millisecond))
	return ws
}

// orphanProposals counts the open proposals of custodial wallets that no
// batch journaled, and the inputs they reserve. With no server running,
// every one is left over from a process that died between proposing a
// batch and journaling it.
func (e *crashEnv) orphanProposals(t *testing.T) (proposals, inputs int) {
	t.Helper()
	err := e.db.QueryRowContext(context.Background(), `SELECT COUNT(DISTINCT p.id), COUNT(r.proposal_id) FROM wallet_proposals p
		JOIN custody_wallets c ON c.id = p.wallet_id
		LEFT JOIN wallet_reservations r ON r.proposal_id = p.id
		WHERE p.status = 'open' AND NOT EXISTS (SELECT 1 FROM custody_batches b WHERE b.proposal_id = p.id)`).Scan(&proposals, &inputs)
	if err != nil {
		t.Fatal(err)
	}
	return proposals, inputs
}

// proposedRound SIGKILLs a server (from outside) as soon as it has proposed
// a batch, reserving its inputs, and not journaled it yet: it is signing.
// The restarted server must pay the withdrawals once and release the
// inputs the dead one reserved, or the hot wallet cannot spend them until
// the proposal expires (wallets.proposal_ttl).
func (e *crashEnv) proposedRound(t *testing.T, round int, accounts []*ledger.Account) []*ledger.Withdrawal {
	roundStart := time.Now()
	p := startCoffer(t, e.dir, e.env, "serve")
	e.waitAnswering(t, p)
	var ws []*ledger.Withdrawal
	for i := range crashWithdrawals {
		req := ledger.WithdrawalRequest{
			Account: accounts[i%len(accounts)].ID,
			Address: e.node.NewKey().WitnessAddress(),
			Amount:  amount.Amount(100_000 + round*1_000 + i*37),
		}
		wd, err := e.drv.withdraw(t, req, fmt.Sprintf("crash-%d-%d", round, i))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		ws = append(ws, wd)
	}
	hit := false
	deadline := time.Now().Add(10 * time.Second)
	for !hit && time.Now().Before(deadline) && !p.exited() {
		n, _ := e.orphanProposals(t)
		hit = n > 0
		time.Sleep(200 * time.Microsecond) // the window lasts milliseconds
	}
	p.kill()
	if st, _ := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !st.Signaled() || st.Signal() != syscall.SIGKILL {
		t.Fatalf("round %d: coffer serve ended with %q, want death by SIGKILL", round, p.cmd.ProcessState)
	}
	proposals, inputs := e.orphanProposals(t)
	state := fmt.Sprintf("killed with %d proposal(s) not journaled, reserving %d input(s)", proposals, inputs)
	if !hit {
		state = "missed the moment between proposing and journaling; killed later"
	}

	p = startCoffer(t, e.dir, e.env, "serve")
	e.waitAnswering(t, p)
	mined := e.mineUntilConfirmed(t, p, round, ws)
	p.stop(syscall.SIGTERM, 30*time.Second)
	t.Logf("round %d (killed while signing): %s; after restart all confirmed (%d block(s) mined) in %s",
		round, state, mined, time.Since(roundStart).Round(time.Millisecond))
	if proposals, inputs := e.orphanProposals(t); proposals > 0 {
		t.Errorf("round %d: after the restart paid every withdrawal, %d proposal(s) of the dead server's batch still reserve %d hot-wallet input(s): "+
			"no batch can spend them until wallets.proposal_ttl runs out, and a hot wallet with no other coins stops paying withdrawals (hot_wallet_short) until then",
			round, proposals, inputs)
	}
	return ws
}

// mineUntilConfirmed mines while the mempool holds anything until every
// one of ws is confirmed, and returns how many blocks it mined.
func (e *crashEnv) mineUntilConfirmed(t *testing.T, p *proc, round int, ws []*ledger.Withdrawal) int {
	ctx := context.Background()
	mined := 0
	// When the node first showed a withdrawal's payment confirmed while
	// Coffer did not.
	seenPaid := map[string]time.Time{}
	onChain := func(w *ledger.Withdrawal) *node.TxOut {
		if w.Txid == nil || w.Vout == nil {
			return nil
		}
		out, err := e.node.Client().GetTxOut(ctx, *w.Txid, *w.Vout, false)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	waitUntil(t, p, 90*time.Second, 300*time.Millisecond, fmt.Sprintf("round %d's withdrawals to confirm", round), func() (bool, string) {
		left := 0
		var last *ledger.Withdrawal
		for _, w := range ws {
			cur := e.drv.withdrawal(t, w.ID)
			switch cur.Status {
			case ledger.WithdrawalConfirmed:
				continue
			case ledger.WithdrawalFailed, ledger.WithdrawalCancelled:
				state := "not in the node's chain"
				if out := onChain(cur); out != nil {
					state = fmt.Sprintf("CONFIRMED in the node's chain (%d confirmation(s)): paid on chain and refunded in the books, a double payment",
						out.Confirmations)
				}
				t.Fatalf("round %d: withdrawal %s is %s (%s); its payment %v:%v is %s", round, cur.ID, cur.Status, cur.Error,
					deref(cur.Txid), deref(cur.Vout), state)
			}
			if out := onChain(cur); out != nil {
				if first, ok := seenPaid[cur.ID]; !ok {
					seenPaid[cur.ID] = time.Now()
				} else if time.Since(first) > 10*time.Second {
					t.Fatalf("round %d: withdrawal %s is still %s, 10s after the node showed its payment %s:%d confirmed (%d confirmation(s))",
						round, cur.ID, cur.Status, *cur.Txid, *cur.Vout, out.Confirmations)
				}
			}
			left++
			last = cur
		}
		if left == 0 {
			return true, ""
		}
		if pool, err := e.node.Client().GetRawMempool(ctx); err == nil && len(pool) > 0 {
			if _, err := e.node.Mine(ctx, 1); err != nil {
				t.Fatal(err)
			}
			mined++
		}
		return false, fmt.Sprintf("%d unconfirmed, e.g. %s is %s", left, last.ID, last.Status)
	})
	return mined
}

// waitKilled waits for p, started with COFFER_TEST_CRASH_AT=point, to die,
// and requires that SIGKILL killed it.
func (e *crashEnv) waitKilled(t *testing.T, p *proc, round int, point string) {
	t.Helper()
	code, ok := p.wait(30 * time.Second)
	if !ok {
		t.Fatalf("round %d: coffer serve with COFFER_TEST_CRASH_AT=%s did not die within 30s; stderr:\n%s", round, point,
			tailLines(withoutAccessLog(p.stderr.String()), 30))
	}
	st, _ := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !st.Signaled() || st.Signal() != syscall.SIGKILL || p.cmd.ProcessState.String() != "signal: killed" {
		t.Fatalf("round %d: coffer serve with COFFER_TEST_CRASH_AT=%s ended with %q (code %d), want death by SIGKILL; stderr:\n%s",
			round, point, p.cmd.ProcessState, code, tailLines(withoutAccessLog(p.stderr.String()), 30))
	}
}

// checkAlerts fails on batch_failed alerts (a failed batch returns funds
// whose payment may yet confirm) and reports the others.
func (e *crashEnv) checkAlerts(t *testing.T) {
	t.Helper()
	rows, err := e.db.QueryContext(context.Background(), `SELECT data FROM events WHERE type = $1 ORDER BY id`, ledger.EventAlert)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	kinds := map[string]int{}
	for rows.Next() {
		var data string
		if err := rows.Scan(&data); err != nil {
			t.Fatal(err)
		}
		var a struct{ Kind, Message string }
		if err := json.Unmarshal([]byte(data), &a); err != nil {
			t.Fatal(err)
		}
		kinds[a.Kind]++
		switch a.Kind {
		case "batch_failed":
			t.Errorf("alert %s: %s", a.Kind, a.Message)
		case "hot_wallet_short":
			// Expected while a batch's change is unconfirmed.
		default:
			t.Logf("alert %s: %s", a.Kind, a.Message)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("alerts raised: %v", kinds)
}

// waitAnswering waits until the server p answers HTTP requests.
func (e *crashEnv) waitAnswering(t *testing.T, p *proc) {
	t.Helper()
	waitUntil(t, p, 30*time.Second, 20*time.Millisecond, "coffer serve to answer", func() (bool, string) {
		code, _, err := getJSON(e.base+"/v1/status", nil)
		return err == nil && code == http.StatusOK, fmt.Sprint(code, err)
	})
}

// crashState checks the database and the node show the crash where point
// says it happened, and describes it.
func (e *crashEnv) crashState(t *testing.T, point string, ws []*ledger.Withdrawal) string {
	ctx := context.Background()
	ids := make([]string, len(ws))
	for i, w := range ws {
		ids[i] = w.ID
	}
	statuses := map[string]int{}
	batches := map[string]string{} // id → status
	txids := map[string]string{}   // batch id → txid
	for _, id := range ids {
		var status string
		var batch, batchStatus, txid *string
		err := e.db.QueryRowContext(ctx, `SELECT w.status, w.batch_id, b.status, b.txid FROM withdrawals w
			LEFT JOIN custody_batches b ON b.id = w.batch_id WHERE w.id = $1`, id).Scan(&status, &batch, &batchStatus, &txid)
		if err != nil {
			t.Fatalf("withdrawal %s after the crash: %v", id, err)
		}
		statuses[status]++
		if batch != nil {
			batches[*batch], txids[*batch] = *batchStatus, *txid
		}
	}
	pool, err := e.node.Client().GetRawMempool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	switch point {
	case "batching":
		if len(batches) != 0 || statuses[ledger.WithdrawalQueued] != len(ids) {
			t.Fatalf("killed while batching, yet withdrawals are %v in batches %v", statuses, batches)
		}
	case "journaled", "broadcast":
		if len(batches) != 1 {
			t.Fatalf("killed at %s: the withdrawals are in %d batches (%v), want 1", point, len(batches), batches)
		}
		for id, status := range batches {
			inPool := slices.Contains(pool, txids[id])
			if status != ledger.BatchSigned || inPool != (point == "broadcast") {
				t.Fatalf("killed at %s: batch %s is %s, its transaction in the node's mempool: %v", point, id, status, inPool)
			}
		}
	}
	return fmt.Sprintf("withdrawals %v, batches %v, %d tx(s) in the mempool", statuses, batches, len(pool))
}

// checkPaidOnce scans every block above from and the mempool for outputs
// paying the withdrawals' addresses: each must be paid exactly once, its
// exact amount, by the output Coffer recorded.
func (e *crashEnv) checkPaidOnce(t *testing.T, from int64, ws []*ledger.Withdrawal) {
	ctx := context.Background()
	c := e.node.Client()
	type payment struct {
		txid   string
		vout   int
		amount int64
		where  string
	}
	byScript := map[string][]payment{}
	want := map[string]*ledger.Withdrawal{}
	for _, w := range ws {
		script, err := e.node.Chain().AddressScript(w.Address)
		if err != nil {
			t.Fatal(err)
		}
		if want[string(script)] != nil {
			t.Fatalf("two withdrawals to %s: the addresses must be fresh", w.Address)
		}
		want[string(script)] = w
	}
	tip, err := c.GetBlockCount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	scan := func(raw []byte, where string) {
		tx, err := e.node.Chain().ParseTx(raw)
		if err != nil {
			t.Fatal(err)
		}
		for i, o := range tx.TxOut {
			if want[string(o.PkScript)] != nil {
				byScript[string(o.PkScript)] = append(byScript[string(o.PkScript)],
					payment{tx.TxHash().String(), i, o.Value, where})
			}
		}
	}
	txs := 0
	for h := from + 1; h <= tip; h++ {
		hash, err := c.GetBlockHash(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := c.GetRawBlock(ctx, hash)
		if err != nil {
			t.Fatal(err)
		}
		blk, err := e.node.Chain().ParseBlock(raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, tx := range blk.Transactions {
			var b bytes.Buffer
			if err := tx.Serialize(&b); err != nil {
				t.Fatal(err)
			}
			scan(b.Bytes(), fmt.Sprintf("block %d", h))
			txs++
		}
	}
	pool, err := c.GetRawMempool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, txid := range pool {
		raw, err := c.GetRawTransaction(ctx, txid)
		if err != nil {
			continue // mined or evicted meanwhile; the blocks were read already
		}
		scan(raw, "mempool")
		txs++
	}
	bad := 0
	for script, w := range want {
		pays := byScript[script]
		cur := e.drv.withdrawal(t, w.ID)
		switch {
		case len(pays) == 0:
			t.Errorf("withdrawal %s of %s sat to %s was never paid (it is %s)", w.ID, w.Amount, w.Address, cur.Status)
		case len(pays) > 1:
			t.Errorf("withdrawal %s of %s sat to %s was PAID %d TIMES: %+v", w.ID, w.Amount, w.Address, len(pays), pays)
		case pays[0].amount != int64(w.Amount):
			t.Errorf("withdrawal %s of %s sat to %s was paid %d sat (%+v)", w.ID, w.Amount, w.Address, pays[0].amount, pays[0])
		case pays[0].where == "mempool":
			t.Errorf("withdrawal %s is paid only by %s, still in the mempool", w.ID, pays[0].txid)
		case cur.Txid == nil || *cur.Txid != pays[0].txid || cur.Vout == nil || int(*cur.Vout) != pays[0].vout:
			t.Errorf("withdrawal %s is paid by %s:%d on chain, but Coffer records %v:%v", w.ID, pays[0].txid, pays[0].vout, cur.Txid, cur.Vout)
		default:
			continue
		}
		bad++
	}
	if bad == 0 {
		t.Logf("scanned %d blocks (%d txs) and the mempool: each of %d withdrawal addresses received exactly its amount, exactly once",
			tip-from, txs, len(want))
	}
}

// httpDriver works the ledger through the HTTP API.
type httpDriver struct{ base string }

func (d *httpDriver) name() string { return "the HTTP API" }

// post sends body as JSON with an idempotency key and decodes a 2xx answer
// into out (if not nil). It returns the status and body; a transport error
// fails the test.
func (d *httpDriver) post(t *testing.T, path, key string, body, out any) (int, []byte) {
	t.Helper()
	code, b, err := d.tryPost(path, key, body, out)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return code, b
}

func (d *httpDriver) tryPost(path, key string, body, out any) (int, []byte, error) {
	payload, err := json.Marshal(body)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequest(http.MethodPost, d.base+path, bytes.NewReader(payload))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, b, fmt.Errorf("decoding the answer: %v: %s", err, b)
		}
	}
	return resp.StatusCode, b, nil
}

func (d *httpDriver) mustPost(t *testing.T, path, key string, body, out any) {
	t.Helper()
	if code, b := d.post(t, path, key, body, out); code/100 != 2 {
		t.Fatalf("POST %s: %d %s", path, code, b)
	}
}

func (d *httpDriver) get(t *testing.T, path string, out any) {
	t.Helper()
	code, body, err := getJSON(d.base+path, out)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s: %d %v %s", path, code, err, body)
	}
}

func (d *httpDriver) createWallet(t *testing.T) *ledger.CustodyWallet {
	var w ledger.CustodyWallet
	d.mustPost(t, "/v1/custody/wallets", "", map[string]any{"label": "crash test"}, &w)
	return &w
}

func (d *httpDriver) createAccount(t *testing.T, walletID, name string) *ledger.Account {
	var a ledger.Account
	d.mustPost(t, "/v1/custody/wallets/"+walletID+"/accounts", "account-"+name, map[string]any{"name": name}, &a)
	return &a
}

func (d *httpDriver) depositAddress(t *testing.T, walletID, accountID string) string {
	var a ledger.DepositAddress
	d.mustPost(t, "/v1/custody/wallets/"+walletID+"/accounts/"+accountID+"/addresses", "", map[string]any{}, &a)
	if a.Address == "" {
		t.Fatalf("POST …/accounts/%s/addresses answered no address", accountID)
	}
	return a.Address
}

func (d *httpDriver) deposits(t *testing.T, accountID string) []ledger.Deposit {
	var raw json.RawMessage
	d.get(t, "/v1/deposits?account_id="+accountID, &raw)
	var out []ledger.Deposit
	if err := decodeList(raw, &out); err != nil {
		t.Fatalf("GET /v1/deposits: %v: %s", err, raw)
	}
	return out
}

func (d *httpDriver) withdraw(t *testing.T, req ledger.WithdrawalRequest, key string) (*ledger.Withdrawal, error) {
	var w ledger.Withdrawal
	code, body, err := d.tryPost("/v1/withdrawals", key, req, &w)
	if err != nil {
		return nil, err // the server died under the request: retried later
	}
	if code == http.StatusConflict && bytes.Contains(body, []byte(`"idempotency_in_progress"`)) {
		// A retry of a request a killed server was running: its key stays
		// leased until the lease runs out.
		return nil, fmt.Errorf("409 idempotency_in_progress")
	}
	if code/100 != 2 || w.ID == "" {
		t.Fatalf("POST /v1/withdrawals: %d %s", code, body)
	}
	return &w, nil
}

func (d *httpDriver) withdrawal(t *testing.T, id string) *ledger.Withdrawal {
	var w ledger.Withdrawal
	d.get(t, "/v1/withdrawals/"+id, &w)
	return &w
}

// decodeList decodes a list answer: a JSON array, or an object whose one
// array member holds the items.
func decodeList(raw json.RawMessage, out any) error {
	if err := json.Unmarshal(raw, out); err == nil {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return err
	}
	for _, v := range obj {
		if len(v) > 0 && v[0] == '[' {
			return json.Unmarshal(v, out)
		}
	}
	return errors.New("no list in the answer")
}

// goDriver works the ledger through the Go package on the server's
// database, as a second process beside it.
type goDriver struct {
	svc *ledger.Service
}

func newGoDriver(t *testing.T, e *crashEnv) *goDriver {
	params := e.node.Chain()
	log := events.NewLog(e.db)
	ws := wallet.New(e.db, params, log, e.node.Client(), nil, wallet.Config{}, nil)
	ks := keys.New(e.db, keys.FileProvider(e.keyFile))
	return &goDriver{svc: ledger.New(e.db, params, log, ws, ks, e.node.Client(), nil, ledger.Config{Confirmations: 1}, nil)}
}

func (d *goDriver) name() string { return "the Go ledger package (no custody routes in the API yet)" }

func (d *goDriver) createWallet(t *testing.T) *ledger.CustodyWallet {
	w, err := d.svc.CreateWallet(context.Background(), ledger.CreateWalletRequest{Label: "crash test"})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (d *goDriver) createAccount(t *testing.T, walletID, name string) *ledger.Account {
	a, err := d.svc.CreateAccount(context.Background(), walletID, ledger.CreateAccountRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (d *goDriver) depositAddress(t *testing.T, _, accountID string) string {
	a, err := d.svc.NewDepositAddress(context.Background(), accountID)
	if err != nil {
		t.Fatal(err)
	}
	return a.Address
}

func (d *goDriver) deposits(t *testing.T, accountID string) []ledger.Deposit {
	ds, err := d.svc.ListDeposits(context.Background(), ledger.DepositFilter{AccountID: accountID})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]ledger.Deposit, len(ds))
	for i, dep := range ds {
		out[i] = *dep
	}
	return out
}

func (d *goDriver) withdraw(t *testing.T, req ledger.WithdrawalRequest, key string) (*ledger.Withdrawal, error) {
	w, err := d.svc.RequestWithdrawal(context.Background(), req, key)
	if err != nil {
		t.Fatal(err)
	}
	return w, nil
}

func (d *goDriver) withdrawal(t *testing.T, id string) *ledger.Withdrawal {
	w, err := d.svc.GetWithdrawal(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestRebroadcastConfirmedBatch: the batcher sends again every batch it
// lists as unconfirmed, and the node answers "already in the chain" for one
// confirmed meanwhile. That happens when the follower applies the block
// confirming a batch between the batcher's listing and its broadcast — as
// when coffer serve restarts after a kill at "broadcast" and the batch was
// mined while it was down: the new follower and batcher race. A step later
// in the same send, the node has it in its mempool, and the block comes
// before the follower records the sent transaction as in the mempool. Either
// way the batch must stay confirmed and its withdrawal paid once: not
// refunded (a double payment), not left unconfirmed.
func TestRebroadcastConfirmedBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("TestRebroadcastConfirmedBatch runs a regtest btcd; skipped in -short mode")
	}
	n := regtest.StartT(t, regtest.Options{PreMine: 440})
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) { rebroadcastConfirmedBatch(t, n, engine) })
	}
}

func rebroadcastConfirmedBatch(t *testing.T, n *regtest.Node, engine string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	dsn := storetest.NewDSN(t, engine)
	db := storetest.Open(t, dsn)
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	log := events.NewLog(db)
	params := n.Chain()
	f := follow.New(db, n.Client(), params, log, follow.Config{PollInterval: 50 * time.Millisecond}, logger)
	ws := wallet.New(db, params, log, n.Client(), f, wallet.Config{}, logger)
	line, err := keys.GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "master.key")
	if err := os.WriteFile(keyFile, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := ledger.New(db, params, log, ws, keys.New(db, keys.FileProvider(keyFile)), n.Client(), f,
		ledger.Config{Confirmations: 1, BatchInterval: time.Hour}, logger)
	f.SetWatcher(follow.Watchers{ws, l})
	done := make(chan struct{}, 2)
	go func() { f.Run(ctx); done <- struct{}{} }()
	go func() { ws.Run(ctx); done <- struct{}{} }()
	defer func() { cancel(); <-done; <-done }()
	wait := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s: not after 60s", what)
			}
		}
	}

	cw, err := l.CreateWallet(ctx, ledger.CreateWalletRequest{Label: "rebroadcast"})
	if err != nil {
		t.Fatal(err)
	}
	wait("the wallet to be ready", func() bool { w, err := ws.Get(ctx, cw.ID); return err == nil && w.Status == wallet.StatusReady })
	a, err := l.CreateAccount(ctx, cw.ID, ledger.CreateAccountRequest{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	da, err := l.NewDepositAddress(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	script, err := params.AddressScript(da.Address)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.Fund(ctx, script, 100_000_000); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Mine(ctx, 1); err != nil {
		t.Fatal(err)
	}
	wait("the deposit to be credited", func() bool { a, err := l.GetAccount(ctx, a.ID); return err == nil && a.Total == 100_000_000 })
	wd, err := l.RequestWithdrawal(ctx, ledger.WithdrawalRequest{Account: a.ID, Address: n.NewKey().WitnessAddress(), Amount: 250_000}, "w1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.PayBatch(ctx, cw.ID)
	if err != nil || b == nil {
		t.Fatalf("PayBatch: %v %v", b, err)
	}
	if _, err := n.Mine(ctx, 1); err != nil {
		t.Fatal(err)
	}
	wait("the withdrawal to confirm", func() bool {
		w, err := l.GetWithdrawal(ctx, wd.ID)
		return err == nil && w.Status == ledger.WithdrawalConfirmed
	})
	paid, err := l.GetAccount(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}

	// The batcher's broadcast of the batch it listed before the block.
	var raw []byte
	if err := db.QueryRowContext(ctx, `SELECT raw FROM custody_batches WHERE id = $1`, b.ID).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var msg wire.MsgTx
	if err := msg.Deserialize(bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	if err := ws.Broadcast(ctx, &msg); err != nil {
		t.Logf("broadcasting the confirmed batch again: %v", err)
	}
	// The same race a step later: the node still had the transaction in
	// its mempool when it was sent, and the block came before the follower
	// recorded the sent transaction as in the mempool.
	if err := f.AddMempoolTx(ctx, &msg); err != nil {
		t.Logf("recording the confirmed batch as in the mempool: %v", err)
	}
	// Past the follower's next mempool polls.
	time.Sleep(time.Second)

	var txStatus string
	if err := db.QueryRowContext(ctx, `SELECT status FROM txs WHERE txid = $1`, b.Txid).Scan(&txStatus); err != nil {
		t.Fatal(err)
	}
	batch, err := l.GetBatch(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	w, err := l.GetWithdrawal(ctx, wd.ID)
	if err != nil {
		t.Fatal(err)
	}
	acct, err := l.GetAccount(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if txStatus != "confirmed" || batch.Status != ledger.BatchConfirmed || w.Status != ledger.WithdrawalConfirmed || acct.Total != paid.Total {
		t.Errorf("after the batch's transaction %s, confirmed in the node's chain, was sent again and recorded as sent: the database says it is %s, the batch is %s, "+
			"the withdrawal %s %q, and alice holds %s sat (%s after paying it): paid on chain %s",
			b.Txid, txStatus, batch.Status, w.Status, w.Error, acct.Total, paid.Total,
			map[bool]string{true: "and refunded in the books", false: "once"}[acct.Total != paid.Total])
	}

	// coffer audit -node compares the database's view of the chain with the
	// node's.
	rpc := n.RPC()
	env := []string{"COFFER_DATABASE_DSN=" + dsn, "COFFER_NODE_URL=" + rpc.URL, "COFFER_NODE_USER=" + rpc.User,
		"COFFER_NODE_PASSWORD=" + rpc.Password, "COFFER_LOG_LEVEL=warn"}
	cancel() // no follower beside the audit
	code, out, errs := runCoffer(t, dir, 60*time.Second, env, "audit", "-node")
	if code != 0 {
		t.Errorf("coffer audit -node exited %d:\n%s%s", code, out, errs)
	}
}

// deref is *p, or the zero value for nil.
func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

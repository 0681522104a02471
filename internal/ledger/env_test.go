package ledger_test

// The live environment of the ledger's integration tests: one regtest btcd
// shared by the package (started on first use, stopped by TestMain), and
// per test a database, follower, wallet service, key store and ledger.

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/wire"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/fault"
	"github.com/coffer/coffer/internal/follow"
	"github.com/coffer/coffer/internal/keys"
	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/regtest"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/wallet"
)

var (
	nodeOnce sync.Once
	sharedN  *regtest.Node
	nodeErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedN != nil {
		sharedN.Stop()
	}
	os.Exit(code)
}

// liveNode returns the package's btcd with segwit active (height 432 on
// btcd's regtest).
func liveNode(t *testing.T) *regtest.Node {
	t.Helper()
	if testing.Short() {
		t.Skip("ledger integration tests need a regtest btcd; skipped in -short mode")
	}
	nodeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		sharedN, nodeErr = regtest.Start(ctx, regtest.Options{Kind: regtest.KindBtcd, PreMine: 440})
	})
	if nodeErr != nil {
		t.Fatalf("starting btcd: %v", nodeErr)
	}
	return sharedN
}

// testConfig is the ledger configuration of most tests: 3 confirmations,
// batches of at most 20, no timers (tests call Tick).
func testConfig() ledger.Config {
	return ledger.Config{Confirmations: 3, BatchMaxCount: 20, BatchInterval: time.Hour}
}

// env is the custodial stack over one database.
type env struct {
	t        *testing.T
	ctx      context.Context
	node     *regtest.Node
	db       *store.DB
	log      *events.Log
	follower *follow.Follower
	wallets  *wallet.Service
	keys     *keys.Store
	master   keys.MasterKey
	led      *ledger.Service
	cfg      ledger.Config
}

func newEnv(t *testing.T, db *store.DB, cfg ledger.Config) *env {
	t.Helper()
	n := liveNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	tip, err := n.Client().GetBlockCount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	log := events.NewLog(db)
	// Start at the node's tip: the history before is nobody's business
	// here, and imports scan it through the wallet's recovery.
	f := follow.New(db, n.Client(), n.Chain(), log, follow.Config{PollInterval: 50 * time.Millisecond, StartHeight: tip}, logger)
	ws := wallet.New(db, n.Chain(), log, n.Client(), f, wallet.Config{ProposalTTL: time.Hour}, logger)
	var raw [keys.MasterKeySize]byte
	if _, err := rand.Read(raw[:]); err != nil {
		t.Fatal(err)
	}
	master := keys.NewMasterKey(raw)
	ks := keys.New(db, keys.StaticProvider(master))
	led := ledger.New(db, n.Chain(), log, ws, ks, n.Client(), f, cfg, logger)
	f.SetWatcher(follow.Watchers{ws, led})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); f.Run(ctx) }()
	go func() { defer wg.Done(); ws.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	e := &env{t: t, ctx: ctx, node: n, db: db, log: log, follower: f, wallets: ws, keys: ks, master: master, led: led, cfg: cfg}
	e.waitTip()
	return e
}

// eventually polls cond until it holds or timeout passes.
func (e *env) eventually(timeout time.Duration, what string, cond func() (bool, string)) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitTip waits until the follower has applied the node's best block.
func (e *env) waitTip() {
	e.t.Helper()
	best, err := e.node.Client().GetBestBlockHash(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	e.eventually(60*time.Second, "the follower to reach the node's tip", func() (bool, string) {
		var h int64
		var hash string
		e.db.QueryRowContext(e.ctx, `SELECT height, hash FROM chain_cursor WHERE id = 1`).Scan(&h, &hash)
		return hash == best, fmt.Sprintf("at %d %s, node at %s", h, hash, best)
	})
}

// tip is the follower's applied height.
func (e *env) tip() int64 {
	e.t.Helper()
	var h int64
	if err := e.db.QueryRowContext(e.ctx, `SELECT height FROM chain_cursor WHERE id = 1`).Scan(&h); err != nil {
		e.t.Fatal(err)
	}
	return h
}

// mine mines count blocks and waits until the follower applied them.
func (e *env) mine(count int) []string {
	e.t.Helper()
	hashes, err := e.node.Mine(e.ctx, count)
	if err != nil {
		e.t.Fatal(err)
	}
	e.waitTip()
	return hashes
}

// newWallet creates a custodial wallet with a generated seed and waits until
// its watch-only side is ready.
func (e *env) newWallet(label string) *ledger.CustodyWallet {
	e.t.Helper()
	cw, err := e.led.CreateWallet(e.ctx, ledger.CreateWalletRequest{Label: label})
	if err != nil {
		e.t.Fatal(err)
	}
	e.waitReady(cw.ID)
	return cw
}

func (e *env) waitReady(walletID string) {
	e.t.Helper()
	e.eventually(60*time.Second, "wallet "+walletID+" to be ready", func() (bool, string) {
		w, err := e.wallets.Get(e.ctx, walletID)
		if err != nil {
			return false, err.Error()
		}
		return w.Status == wallet.StatusReady, w.Status + " " + w.Error
	})
}

func (e *env) account(walletID, name string) *ledger.Account {
	e.t.Helper()
	a, err := e.led.CreateAccount(e.ctx, walletID, ledger.CreateAccountRequest{Name: name})
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

func (e *env) get(id string) *ledger.Account {
	e.t.Helper()
	a, err := e.led.GetAccount(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// script is the output script of an address of the node's network.
func (e *env) script(addr string) []byte {
	e.t.Helper()
	s, err := e.node.Chain().AddressScript(addr)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// externalAddress is a fresh address nobody in Coffer owns.
func (e *env) externalAddress() string { return e.node.NewKey().WitnessAddress() }

// depositAddress hands the account a deposit address.
func (e *env) depositAddress(accountID string) string {
	e.t.Helper()
	d, err := e.led.NewDepositAddress(e.ctx, accountID)
	if err != nil {
		e.t.Fatal(err)
	}
	return d.Address
}

// deposits lists an account's deposits.
func (e *env) deposits(accountID string) []*ledger.Deposit {
	e.t.Helper()
	ds, err := e.led.ListDeposits(e.ctx, ledger.DepositFilter{AccountID: accountID})
	if err != nil {
		e.t.Fatal(err)
	}
	return ds
}

// depositOf waits for the deposit of txid to the account and returns it.
func (e *env) depositOf(accountID, txid string) *ledger.Deposit {
	e.t.Helper()
	var found *ledger.Deposit
	e.eventually(30*time.Second, "the deposit of "+txid+" to be seen", func() (bool, string) {
		for _, d := range e.deposits(accountID) {
			if d.Txid == txid {
				found = d
				return true, ""
			}
		}
		return false, "not yet"
	})
	return found
}

func (e *env) deposit(id string) *ledger.Deposit {
	e.t.Helper()
	d, err := e.led.GetDeposit(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

// fundAccounts pays each account amt through a deposit (one transaction),
// mines to the threshold and waits until every deposit is credited.
func (e *env) fundAccounts(accounts []*ledger.Account, amt int64) {
	e.t.Helper()
	var outs []regtest.Output
	for _, a := range accounts {
		outs = append(outs, regtest.Output{PkScript: e.script(e.depositAddress(a.ID)), Amount: amt})
	}
	txid, err := e.node.SendMany(e.ctx, outs)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, a := range accounts {
		e.depositOf(a.ID, txid)
	}
	e.mine(int(e.cfg.Confirmations))
	for _, a := range accounts {
		for _, d := range e.deposits(a.ID) {
			if d.Txid == txid && d.Status != ledger.DepositCredited {
				e.t.Fatalf("deposit %s is %s after %d blocks", d.ID, d.Status, e.cfg.Confirmations)
			}
		}
	}
}

// tick runs the batcher once, paying every queued withdrawal it can.
func (e *env) tick() {
	e.t.Helper()
	if err := e.led.Tick(e.ctx, true); err != nil {
		e.t.Fatal(err)
	}
}

// audit runs the audit and fails unless it is clean.
func (e *env) auditClean() *ledger.AuditReport {
	e.t.Helper()
	r, err := e.led.Audit(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if !r.Clean || len(r.Differences) > 0 {
		b, _ := json.MarshalIndent(r, "", "  ")
		e.t.Fatalf("audit not clean:\n%s", b)
	}
	return r
}

// allEvents returns the whole event log.
func (e *env) allEvents() []events.Event {
	e.t.Helper()
	var all []events.Event
	after := int64(0)
	for {
		evs, err := e.log.List(e.ctx, after, events.MaxLimit)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(evs) == 0 {
			return all
		}
		all = append(all, evs...)
		after = evs[len(evs)-1].ID
	}
}

// eventsOf returns the events of type typ whose data has field == value
// (any value when field is empty).
func (e *env) eventsOf(typ, field, value string) []events.Event {
	e.t.Helper()
	var out []events.Event
	for _, ev := range e.allEvents() {
		if ev.Type != typ {
			continue
		}
		if field != "" {
			var m map[string]any
			if err := json.Unmarshal(ev.Data, &m); err != nil {
				e.t.Fatal(err)
			}
			if fmt.Sprint(m[field]) != value {
				continue
			}
		}
		out = append(out, ev)
	}
	return out
}

// count runs a COUNT(*) query.
func (e *env) count(q string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRowContext(e.ctx, q, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// sum runs a SUM query (NULL is 0).
func (e *env) sum(q string, args ...any) int64 {
	e.t.Helper()
	var n *int64
	if err := e.db.QueryRowContext(e.ctx, q, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	if n == nil {
		return 0
	}
	return *n
}

// nodeTx is what the node says about a transaction.
type nodeTx struct {
	msg           *wire.MsgTx
	Confirmations int64  `json:"confirmations"`
	BlockHash     string `json:"blockhash"`
}

// nodeTransaction asks the node for txid (it runs with --txindex).
func (e *env) nodeTransaction(txid string) *nodeTx {
	e.t.Helper()
	var v nodeTx
	if err := e.node.Client().Call(e.ctx, "getrawtransaction", &v, txid, 1); err != nil {
		e.t.Fatalf("the node does not know %s: %v", txid, err)
	}
	raw, err := e.node.Client().GetRawTransaction(e.ctx, txid)
	if err != nil {
		e.t.Fatal(err)
	}
	if v.msg, err = e.node.Chain().ParseTx(raw); err != nil {
		e.t.Fatal(err)
	}
	return &v
}

// mempool is the node's mempool as a set.
func (e *env) mempool() map[string]bool {
	e.t.Helper()
	ids, err := e.node.Client().GetRawMempool(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// wantCode fails unless err is a fault with the code.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %s", code)
	}
	f, ok := fault.As(err)
	if !ok {
		t.Fatalf("error %v is no fault; want %s", err, code)
	}
	if f.Code != code {
		t.Fatalf("error code %s (%v); want %s", f.Code, err, code)
	}
}

// code is err's fault code, "" for nil and "?" for other errors.
func code(err error) string {
	if err == nil {
		return ""
	}
	if f, ok := fault.As(err); ok {
		return f.Code
	}
	if errors.Is(err, store.ErrConflictUnresolved) {
		return "conflict_unresolved"
	}
	return "?"
}

func sat(a amount.Amount) int64 { return int64(a) }

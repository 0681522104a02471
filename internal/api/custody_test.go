package api

// The custodial routes against a live stack (walletenv_test.go's shared
// regtest btcd, a follower feeding both the wallet service and the ledger,
// and the API server): a deposit credited at the threshold and acknowledged,
// transfers, withdrawals paid in a fee-bumped batch and confirmed, a clean
// audit; the auth matrix; and bad input answered with a 4xx while nothing
// changes. Every answer is checked against openapi.json (wiDo).

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/follow"
	"github.com/coffer/coffer/internal/keys"
	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/wallet"
)

// custodyEnv is walletEnv's stack plus the ledger, and API keys of every
// scope. The batcher does not run: tests pay batches with Tick.
type custodyEnv struct {
	*walletEnv
	custody            *ledger.Service
	read, write, admin string
}

const custodyWithdrawalFee = 500

func newCustodyEnv(t *testing.T, db *store.DB) *custodyEnv {
	t.Helper()
	n := walletNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	log := events.NewLog(db)
	f := follow.New(db, n.Client(), n.Chain(), log, follow.Config{PollInterval: 50 * time.Millisecond}, logger)
	ws := wallet.New(db, n.Chain(), log, n.Client(), f, wallet.Config{ProposalTTL: time.Hour}, logger)
	var mk [keys.MasterKeySize]byte
	copy(mk[:], "custody_test master key .......")
	ks := keys.New(db, keys.StaticProvider(keys.NewMasterKey(mk)))
	cs := ledger.New(db, n.Chain(), log, ws, ks, n.Client(), f, ledger.Config{
		Confirmations: 2, TrackConfirmations: 3, BatchInterval: time.Hour, WithdrawalFee: custodyWithdrawalFee,
	}, logger)
	f.SetWatcher(follow.Watchers{ws, cs})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); f.Run(ctx) }()
	go func() { defer wg.Done(); ws.Run(ctx) }()
	srv := NewServer(Deps{DB: db, Events: log, Node: n.Client(), Chain: f.Status, Wallets: ws, Custody: cs, Logger: logger,
		Coin: "btc", Network: "regtest"})
	ts := httptest.NewServer(srv)
	e := &custodyEnv{custody: cs}
	for _, k := range []struct {
		scope auth.Scope
		to    *string
	}{{auth.ScopeRead, &e.read}, {auth.ScopeWrite, &e.write}, {auth.ScopeAdmin, &e.admin}} {
		key, _, err := auth.CreateAPIKey(ctx, db, k.scope, "custody test "+string(k.scope))
		if err != nil {
			t.Fatal(err)
		}
		*k.to = key
	}
	t.Cleanup(func() {
		ts.Close()
		cancel()
		wg.Wait()
	})
	e.walletEnv = &walletEnv{t: t, node: n, db: db, wallets: ws, srv: srv, ts: ts, key: e.admin}
	e.waitTip()
	return e
}

// do sends a request with a credential and an Idempotency-Key ("" for
// none) and checks the answer against the document.
func (e *custodyEnv) do(method, path, credential, idemKey string, body any) wiResp {
	e.t.Helper()
	hdr := bearer(credential)
	if idemKey != "" {
		if hdr == nil {
			hdr = map[string]string{}
		}
		hdr[IdempotencyKeyHeader] = idemKey
	}
	return wiDo(e.walletEnv, method, path, hdr, wiBody(e.t, body))
}

// ok is do that fails the test unless the status is want, decoding the
// answer into out.
func (e *custodyEnv) ok(want int, method, path, credential, idemKey string, body, out any) wiResp {
	e.t.Helper()
	r := e.do(method, path, credential, idemKey, body)
	if r.status != want {
		e.t.Fatalf("%s %s: %s; want %d", method, path, r, want)
	}
	if out != nil {
		reflect.ValueOf(out).Elem().SetZero() // fields the answer omits must not keep old values
		if err := json.Unmarshal(r.body, out); err != nil {
			e.t.Fatalf("%s %s: decoding %s: %v", method, path, r.body, err)
		}
	}
	return r
}

func (e *custodyEnv) account(walletID, id string) *ledger.Account {
	e.t.Helper()
	var a ledger.Account
	e.ok(200, "GET", "/v1/custody/wallets/"+walletID+"/accounts/"+id, e.read, "", nil, &a)
	return &a
}

func (e *custodyEnv) withdrawal(id string) *ledger.Withdrawal {
	e.t.Helper()
	var wd ledger.Withdrawal
	e.ok(200, "GET", "/v1/withdrawals/"+id, e.read, "", nil, &wd)
	return &wd
}

// createWallet makes a custodial wallet with a generated seed and waits
// until its watch-only wallet is ready.
func (e *custodyEnv) createWallet(label string) *ledger.CustodyWallet {
	e.t.Helper()
	var cw ledger.CustodyWallet
	e.ok(http.StatusCreated, "POST", "/v1/custody/wallets", e.admin, "", map[string]any{"label": label}, &cw)
	e.eventually(60*time.Second, "custodial wallet "+cw.ID+" to be ready", func() (bool, string) {
		e.ok(200, "GET", "/v1/custody/wallets/"+cw.ID, e.read, "", nil, &cw)
		return cw.Status == wallet.StatusReady, cw.Status
	})
	return &cw
}

// custodyState is what bad requests must leave alone: every account's
// balances, and how many transfers, withdrawals and deposit addresses exist.
type custodyState struct {
	accounts                       map[string][4]amount.Amount
	transfers, withdrawals, addrsN int
}

func custodySnapshot(t *testing.T, db *store.DB) custodyState {
	t.Helper()
	ctx := context.Background()
	st := custodyState{accounts: map[string][4]amount.Amount{}}
	rows, err := db.QueryContext(ctx, `SELECT id, balance, held, pending_in, floor FROM ledger_accounts`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var v [4]amount.Amount
		if err := rows.Scan(&id, &v[0], &v[1], &v[2], &v[3]); err != nil {
			t.Fatal(err)
		}
		st.accounts[id] = v
	}
	rows.Close()
	for _, c := range []struct {
		table string
		n     *int
	}{{"ledger_transfers", &st.transfers}, {"withdrawals", &st.withdrawals}, {"custody_addresses", &st.addrsN}} {
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+c.table).Scan(c.n); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// custodyExec runs one statement in a transaction.
func custodyExec(t *testing.T, db *store.DB, q string, args ...any) {
	t.Helper()
	err := db.InTx(context.Background(), func(tx *store.Tx) error {
		_, err := tx.ExecContext(context.Background(), q, args...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCustody runs the custodial API end to end on both engines.
func TestCustody(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newCustodyEnv(t, db)
		var f custodyFixture
		if !t.Run("lifecycle", func(t *testing.T) { e.t = t; f = custodyLifecycle(t, e) }) {
			return
		}
		t.Run("auth", func(t *testing.T) { e.t = t; custodyAuth(t, e, f) })
		t.Run("idempotency", func(t *testing.T) { e.t = t; custodyIdempotency(t, e, f) })
		t.Run("bad input", func(t *testing.T) { e.t = t; custodyBadInput(t, e, f) })
		e.t = t
		var rep ledger.AuditReport
		e.ok(200, "GET", "/v1/audit", e.admin, "", nil, &rep)
		if !rep.Clean {
			t.Errorf("audit after all subtests is not clean: %+v", rep.Differences)
		}
	})
}

// custodyFixture is what the lifecycle leaves for the other subtests.
type custodyFixture struct {
	wallet              *ledger.CustodyWallet
	alice, bob, carol   string // customer accounts
	carolAddr, paidAddr string // carol's deposit address; an address of the node's
	deposit             string
	withdrawal, batch   string
}

func custodyLifecycle(t *testing.T, e *custodyEnv) custodyFixture {
	ctx := context.Background()
	var f custodyFixture

	// A wallet whose mnemonic is shown once, and never again.
	var cw ledger.CustodyWallet
	r := e.ok(http.StatusCreated, "POST", "/v1/custody/wallets", e.admin, "",
		map[string]any{"label": "exchange", "words": 12, "return_mnemonic": true}, &cw)
	if n := len(strings.Fields(cw.Mnemonic)); n != 12 || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("created wallet: %d mnemonic words, Cache-Control %q", n, r.header.Get("Cache-Control"))
	}
	if cw.Asset != "BTC" || cw.Label != "exchange" || cw.Accounts.Hot == "" || cw.Accounts.Fees == "" {
		t.Fatalf("created wallet %+v", cw)
	}
	e.eventually(60*time.Second, "the custodial wallet to be ready", func() (bool, string) {
		var got ledger.CustodyWallet
		r := e.ok(200, "GET", "/v1/custody/wallets/"+cw.ID, e.read, "", nil, &got)
		if got.Mnemonic != "" || strings.Contains(string(r.body), cw.Mnemonic) {
			t.Fatalf("GET answers the mnemonic: %s", r.body)
		}
		return got.Status == wallet.StatusReady, got.Status
	})
	f.wallet = &cw
	var list CustodyWalletList
	e.ok(200, "GET", "/v1/custody/wallets", e.read, "", nil, &list)
	if len(list.Wallets) != 1 || list.Wallets[0].ID != cw.ID || list.Wallets[0].Mnemonic != "" {
		t.Fatalf("wallet list %+v", list)
	}
	w := "/v1/custody/wallets/" + cw.ID

	// Accounts.
	open := func(name, ext string) string {
		var a ledger.Account
		e.ok(http.StatusCreated, "POST", w+"/accounts", e.write, "", map[string]any{"name": name, "external_id": ext}, &a)
		if a.Kind != ledger.KindCustomer || a.Name != name || a.WalletID != cw.ID || a.Total != 0 || a.ExternalID == nil || *a.ExternalID != ext {
			t.Fatalf("opened account %+v", a)
		}
		return a.ID
	}
	f.alice, f.bob, f.carol = open("Alice", "u-alice"), open("Bob", "u-bob"), open("Carol", "u-carol")
	var accts AccountList
	e.ok(200, "GET", w+"/accounts?kind=customer&limit=2", e.read, "", nil, &accts)
	if len(accts.Accounts) != 2 || accts.NextAfter != accts.Accounts[1].ID {
		t.Fatalf("first page of customer accounts: %+v", accts)
	}
	e.ok(200, "GET", w+"/accounts?kind=customer&limit=2&after="+accts.NextAfter, e.read, "", nil, &accts)
	if len(accts.Accounts) != 1 || accts.NextAfter != "" {
		t.Fatalf("second page of customer accounts: %+v", accts)
	}
	e.ok(200, "GET", w+"/accounts?external_id=u-bob", e.read, "", nil, &accts)
	if len(accts.Accounts) != 1 || accts.Accounts[0].ID != f.bob {
		t.Fatalf("account by external_id: %+v", accts)
	}
	e.ok(200, "GET", w+"/accounts", e.read, "", nil, &accts)
	if len(accts.Accounts) != 7 {
		t.Fatalf("%d accounts, want 3 customers and 4 system accounts", len(accts.Accounts))
	}

	// A deposit: pending below the threshold of 2, credited at it, acked.
	var addr ledger.DepositAddress
	e.ok(http.StatusCreated, "POST", w+"/accounts/"+f.alice+"/addresses", e.write, "", nil, &addr)
	var carolAddr ledger.DepositAddress
	e.ok(http.StatusCreated, "POST", w+"/accounts/"+f.carol+"/addresses", e.write, "", nil, &carolAddr)
	f.carolAddr = carolAddr.Address
	var addrs DepositAddressList
	e.ok(200, "GET", w+"/accounts/"+f.alice+"/addresses", e.read, "", nil, &addrs)
	if len(addrs.Addresses) != 1 || addrs.Addresses[0] != addr || addr.AccountID != f.alice || addr.Address == carolAddr.Address {
		t.Fatalf("alice's addresses %+v, created %+v", addrs, addr)
	}
	script, err := e.node.Chain().AddressScript(addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	const deposited = 1_000_000
	txid := e.fund(script, deposited)
	var deps DepositList
	e.eventually(30*time.Second, "the deposit to be seen", func() (bool, string) {
		e.ok(200, "GET", "/v1/deposits?account_id="+f.alice, e.read, "", nil, &deps)
		return len(deps.Deposits) == 1, brief(deps)
	})
	d := deps.Deposits[0]
	f.deposit = d.ID
	if d.Status != ledger.DepositPending || d.Txid != txid || d.Amount != deposited || d.Confirmations != 0 || d.BlockHeight != nil {
		t.Fatalf("seen deposit %+v", d)
	}
	if a := e.account(cw.ID, f.alice); a.Pending != deposited || a.Total != 0 {
		t.Fatalf("alice with a pending deposit: %+v", a)
	}
	e.mine(1)
	e.ok(200, "GET", "/v1/deposits/"+d.ID, e.read, "", nil, d)
	if d.Status != ledger.DepositPending || d.Confirmations != 1 {
		t.Fatalf("deposit with 1 confirmation: %+v", d)
	}
	if r := e.do("POST", "/v1/deposits/"+d.ID+"/ack", e.write, "", nil); r.status != http.StatusConflict || r.code != "invalid_state" {
		t.Fatalf("acking a pending deposit: %s", r)
	}
	e.mine(1)
	e.ok(200, "GET", "/v1/deposits/"+d.ID, e.read, "", nil, d)
	if d.Status != ledger.DepositCredited || d.Confirmations != 2 {
		t.Fatalf("deposit with 2 confirmations: %+v", d)
	}
	if a := e.account(cw.ID, f.alice); a.Pending != 0 || a.Total != deposited || a.Available != deposited {
		t.Fatalf("alice after crediting: %+v", a)
	}
	e.ok(200, "POST", "/v1/deposits/"+d.ID+"/ack", e.write, "", nil, d)
	if d.Status != ledger.DepositProcessed {
		t.Fatalf("acked deposit %+v", d)
	}
	e.ok(200, "POST", "/v1/deposits/"+d.ID+"/ack", e.write, "", nil, d) // again: no change
	e.ok(200, "GET", "/v1/deposits?wallet_id="+cw.ID+"&status=processed", e.read, "", nil, &deps)
	if len(deps.Deposits) != 1 || deps.Deposits[0].ID != d.ID {
		t.Fatalf("processed deposits %+v", deps)
	}

	// Transfers: two-account, multi-leg and a batch.
	var tr ledger.Transfer
	e.ok(http.StatusCreated, "POST", "/v1/transfers", e.write, "t-1", map[string]any{"from": f.alice, "to": f.bob, "amount": "300000", "memo": "rent"}, &tr)
	if tr.Kind != ledger.TransferInternal || tr.Memo != "rent" || len(tr.Postings) != 2 {
		t.Fatalf("transfer %+v", tr)
	}
	var got ledger.Transfer
	e.ok(200, "GET", "/v1/transfers/"+tr.ID, e.read, "", nil, &got)
	if brief(got) != brief(tr) {
		t.Fatalf("GET transfer %s, created %s", brief(got), brief(tr))
	}
	e.ok(http.StatusCreated, "POST", "/v1/transfers", e.write, "t-2", map[string]any{"legs": []map[string]any{
		{"account": f.alice, "amount": "-50000"}, {"account": f.bob, "amount": "20000"}, {"account": f.carol, "amount": "30000"}}}, &tr)
	if len(tr.Postings) != 3 {
		t.Fatalf("multi-leg transfer %+v", tr)
	}
	var batch TransferBatchResponse
	e.ok(http.StatusCreated, "POST", "/v1/transfers/batch", e.write, "t-3", map[string]any{"transfers": []map[string]any{
		{"from": f.bob, "to": f.carol, "amount": "1000"}, {"from": f.carol, "to": f.alice, "amount": "2000", "memo": "x"},
		{"from": f.alice, "to": f.bob, "amount": "3000"}}}, &batch)
	if len(batch.Transfers) != 3 || batch.Transfers[0].Ref == "" || batch.Transfers[2].Ref != batch.Transfers[0].Ref ||
		batch.Transfers[1].Memo != "x" {
		t.Fatalf("batch %s", brief(batch))
	}
	want := map[string]amount.Amount{f.alice: 1_000_000 - 300_000 - 50_000 + 2000 - 3000, f.bob: 300_000 + 20_000 - 1000 + 3000,
		f.carol: 30_000 + 1000 - 2000}
	for id, bal := range want {
		if a := e.account(cw.ID, id); a.Total != bal || a.Available != bal {
			t.Fatalf("account %s after transfers: %+v, want %s", a.Name, a, bal)
		}
	}

	// Alice's entries, newest first, in pages of 2.
	var entries []ledger.Entry
	before := int64(0)
	for page := 0; ; page++ {
		var p EntryPage
		e.ok(200, "GET", fmt.Sprintf("%s/accounts/%s/entries?limit=2&before=%d", w, f.alice, before), e.read, "", nil, &p)
		entries = append(entries, p.Entries...)
		if p.NextBefore == 0 {
			break
		}
		if page > 5 || len(p.Entries) != 2 || p.NextBefore != p.Entries[1].ID {
			t.Fatalf("entries page %d: %+v", page, p)
		}
		before = p.NextBefore
	}
	kinds := []string{}
	for i, en := range entries {
		kinds = append(kinds, en.Kind)
		if i > 0 && en.ID >= entries[i-1].ID {
			t.Fatalf("entries not newest first: %+v", entries)
		}
	}
	if len(entries) != 5 || entries[0].BalanceAfter != want[f.alice] || entries[4].Kind != ledger.TransferDeposit ||
		entries[4].Amount != deposited || entries[4].Ref != d.ID {
		t.Fatalf("alice's entries (%v): %+v", kinds, entries)
	}

	// Withdrawals: one to carol's deposit address becomes an internal
	// transfer; one is cancelled; one is paid on chain.
	var wd ledger.Withdrawal
	e.ok(http.StatusCreated, "POST", "/v1/withdrawals", e.write, "w-1", map[string]any{
		"account": f.alice, "address": f.carolAddr, "amount": "5000"}, &wd)
	if wd.Status != ledger.WithdrawalInternal || wd.TransferID == nil || wd.BatchID != nil {
		t.Fatalf("withdrawal to a deposit address of the wallet: %+v", wd)
	}
	e.ok(http.StatusCreated, "POST", "/v1/withdrawals", e.write, "w-2", map[string]any{
		"account": f.bob, "address": e.node.NewKey().WitnessAddress(), "amount": "7000", "priority": "low"}, &wd)
	if wd.Status != ledger.WithdrawalQueued || wd.Fee != custodyWithdrawalFee {
		t.Fatalf("queued withdrawal %+v", wd)
	}
	if a := e.account(cw.ID, f.bob); a.Held != 7000+custodyWithdrawalFee || a.Available != want[f.bob]-a.Held {
		t.Fatalf("bob with a queued withdrawal: %+v", a)
	}
	e.ok(200, "POST", "/v1/withdrawals/"+wd.ID+"/cancel", e.write, "", nil, &wd)
	if wd.Status != ledger.WithdrawalCancelled {
		t.Fatalf("cancelled withdrawal %+v", wd)
	}
	if a := e.account(cw.ID, f.bob); a.Held != 0 || a.Available != want[f.bob] {
		t.Fatalf("bob after the cancel: %+v", a)
	}
	f.paidAddr = e.node.NewKey().WitnessAddress()
	const paid = 100_000
	e.ok(http.StatusCreated, "POST", "/v1/withdrawals", e.write, "w-3", map[string]any{
		"account": f.bob, "address": f.paidAddr, "amount": "100000", "priority": "high"}, &wd)
	f.withdrawal = wd.ID
	var wds WithdrawalList
	e.ok(200, "GET", "/v1/withdrawals?wallet_id="+cw.ID+"&status=queued", e.read, "", nil, &wds)
	if len(wds.Withdrawals) != 1 || wds.Withdrawals[0].ID != wd.ID {
		t.Fatalf("queued withdrawals %+v", wds)
	}
	if err := e.custody.Tick(ctx, true); err != nil {
		t.Fatalf("paying the batch: %v", err)
	}
	wd = *e.withdrawal(wd.ID)
	if wd.Status != ledger.WithdrawalBroadcast || wd.BatchID == nil || wd.Txid == nil || wd.Vout == nil {
		t.Fatalf("withdrawal after the batcher ran: %+v", wd)
	}
	f.batch = *wd.BatchID
	var b CustodyBatch
	e.ok(200, "GET", "/v1/custody/batches/"+f.batch, e.read, "", nil, &b)
	if b.Status != ledger.BatchBroadcast || b.Txid != *wd.Txid || len(b.Txids) != 1 || b.Fee <= 0 || b.BroadcastAt == nil {
		t.Fatalf("batch %+v", b)
	}
	nodeTx(t, e.node, b.Txid)
	e.ok(200, "GET", "/v1/withdrawals?batch_id="+f.batch, e.read, "", nil, &wds)
	if len(wds.Withdrawals) != 1 || wds.Withdrawals[0].ID != wd.ID {
		t.Fatalf("the batch's withdrawals: %+v", wds)
	}
	if r := e.do("POST", "/v1/withdrawals/"+wd.ID+"/cancel", e.write, "", nil); r.status != http.StatusConflict || r.code != "invalid_state" {
		t.Fatalf("cancelling a broadcast withdrawal: %s", r)
	}

	// Fee bump by hand: a replacement journaled and broadcast.
	var bumped CustodyBatch
	e.ok(200, "POST", "/v1/custody/batches/"+f.batch+"/bump", e.admin, "", map[string]any{"fee_rate": b.FeeRate + 10}, &bumped)
	if bumped.Txid == b.Txid || len(bumped.Txids) != 2 || bumped.Fee <= b.Fee || bumped.FeeRate < b.FeeRate+10 {
		t.Fatalf("bumped batch %+v, was %+v", bumped, b)
	}
	if r := e.do("POST", "/v1/custody/batches/"+f.batch+"/bump", e.admin, "", map[string]any{"fee_rate": 1}); r.status != http.StatusBadRequest {
		t.Errorf("bumping to a lower fee rate: %s", r)
	}
	if err := e.custody.Tick(ctx, true); err != nil { // sends the replacement again if the first broadcast failed
		t.Fatal(err)
	}
	nodeTx(t, e.node, bumped.Txid)
	e.mine(1)
	e.eventually(30*time.Second, "the withdrawal to confirm", func() (bool, string) {
		wd = *e.withdrawal(wd.ID)
		return wd.Status == ledger.WithdrawalConfirmed, wd.Status
	})
	e.ok(200, "GET", "/v1/custody/batches/"+f.batch, e.read, "", nil, &b)
	if b.Status != ledger.BatchConfirmed || b.ConfirmedTxid == nil || *b.ConfirmedTxid != bumped.Txid || *wd.Txid != bumped.Txid {
		t.Fatalf("confirmed batch %+v, withdrawal %+v; bumped to %s", b, wd, bumped.Txid)
	}
	paying := nodeTx(t, e.node, bumped.Txid).TxOut[*wd.Vout]
	if script, _ := e.node.Chain().AddressScript(f.paidAddr); paying.Value != paid || string(paying.PkScript) != string(script) {
		t.Fatalf("output %d of the batch pays %d to %x", *wd.Vout, paying.Value, paying.PkScript)
	}

	// The books: bob paid amount + fee, the fees account got the fee and
	// paid the network fee, the hot account holds what is left on chain.
	want[f.alice] -= 5000
	want[f.carol] += 5000
	want[f.bob] -= paid + custodyWithdrawalFee
	for id, bal := range want {
		if a := e.account(cw.ID, id); a.Total != bal || a.Held != 0 {
			t.Errorf("account %s at the end: %+v, want %s", a.Name, a, bal)
		}
	}
	if fees := e.account(cw.ID, cw.Accounts.Fees); fees.Total != custodyWithdrawalFee-b.Fee {
		t.Errorf("fees account %s, want %d − %s", fees.Total, custodyWithdrawalFee, b.Fee)
	}
	if hot := e.account(cw.ID, cw.Accounts.Hot); hot.Total != -(deposited - paid - b.Fee) {
		t.Errorf("hot account %s, want −(%d − %d − %s)", hot.Total, deposited, paid, b.Fee)
	}
	var rep ledger.AuditReport
	e.ok(200, "GET", "/v1/audit", e.admin, "", nil, &rep)
	if !rep.Clean || len(rep.Wallets) != 1 || rep.Wallets[0].Unaccounted != 0 || rep.Wallets[0].OnChain != deposited-paid-b.Fee {
		t.Fatalf("audit: %s", brief(rep))
	}
	return f
}

// custodyAuth: no credential is 401; a read key reads; a write key cannot
// create wallets, bump batches or audit; wallet tokens are refused on every
// custodial route, even one for the custodial wallet's own id.
func custodyAuth(t *testing.T, e *custodyEnv, f custodyFixture) {
	ctx := context.Background()
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	token, _, err := auth.IssueWalletToken(ctx, e.db, auth.TokenRequest{
		WalletID: f.wallet.ID, Timestamp: now.Unix(), Params: e.wallets.Params(),
		Signature:  auth.SignMessage(e.wallets.Params(), priv, auth.Challenge(f.wallet.ID, now)),
		AcceptKeys: [][]byte{priv.PubKey().SerializeCompressed()},
	})
	if err != nil {
		t.Fatal(err)
	}
	// {aid} is the hot account: a deposit address for it is refused.
	fill := strings.NewReplacer("/v1/custody/wallets/{id}", "/v1/custody/wallets/"+f.wallet.ID, "{aid}", f.wallet.Accounts.Hot,
		"/v1/deposits/{id}", "/v1/deposits/dep_000000000000000000000000", "/v1/transfers/{id}", "/v1/transfers/tr_000000000000000000000000",
		"/v1/withdrawals/{id}", "/v1/withdrawals/wd_000000000000000000000000", "/v1/custody/batches/{id}", "/v1/custody/batches/bat_000000000000000000000000")
	// Bodies that get past authorization and then fail, so nothing changes.
	harmless := map[string]string{
		"POST /v1/custody/wallets":               `{"words":13}`,
		"POST /v1/custody/wallets/{id}/accounts": `{"name":""}`,
		"POST /v1/custody/batches/{id}/bump":     `{"fee_rate":0}`,
		"POST /v1/transfers":                     `{}`,
		"POST /v1/transfers/batch":               `{"transfers":[]}`,
		"POST /v1/withdrawals":                   `{}`,
	}
	before := custodySnapshot(t, e.db)
	n := 0
	for _, rt := range routes {
		if !isCustodyRoute(rt.path) {
			continue
		}
		n++
		path := fill.Replace(rt.path)
		body := harmless[rt.pattern()]
		wiWant(t, rt.pattern()+" without a credential", e.do(rt.method, path, "", "", body), 401, CodeUnauthenticated)
		wiWant(t, rt.pattern()+" with a wallet token", e.do(rt.method, path, token, "", body), 403, CodeForbidden)
		for _, k := range []struct {
			name  string
			key   string
			scope access
		}{{"read", e.read, readAccess}, {"write", e.write, writeAccess}, {"admin", e.admin, adminAccess}} {
			if r := e.do(rt.method, path, k.key, "", body); k.scope < rt.access {
				wiWant(t, rt.pattern()+" with a "+k.name+" key", r, 403, CodeForbidden)
			} else if r.status == 401 || r.status == 403 || r.status >= 500 {
				t.Errorf("%s with a %s key: %s", rt.pattern(), k.name, r)
			}
		}
	}
	if n != 22 {
		t.Errorf("%d custodial routes, want 22", n)
	}
	if after := custodySnapshot(t, e.db); !reflect.DeepEqual(before, after) {
		t.Errorf("the auth matrix changed the books:\nbefore %+v\nafter  %+v", before, after)
	}
}

func isCustodyRoute(p string) bool {
	for _, prefix := range []string{"/v1/custody/", "/v1/deposits", "/v1/transfers", "/v1/withdrawals", "/v1/audit"} {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}

// custodyIdempotency: the money routes need a key; a retry replays, another
// body under the key is 409; keys of two API keys do not collide in the
// ledger; and the ledger keeps a key past the idempotency layer's memory.
func custodyIdempotency(t *testing.T, e *custodyEnv, f custodyFixture) {
	before := custodySnapshot(t, e.db)
	move := map[string]any{"from": f.alice, "to": f.bob, "amount": "1000"}
	for _, c := range []struct {
		path string
		body any
	}{
		{"/v1/transfers", move},
		{"/v1/transfers/batch", map[string]any{"transfers": []any{move}}},
		{"/v1/withdrawals", map[string]any{"account": f.alice, "address": f.paidAddr, "amount": "10000"}},
	} {
		wiWant(t, c.path+" without a key", e.do("POST", c.path, e.write, "", c.body), 400, CodeIdempotencyKeyRequired)
	}
	if after := custodySnapshot(t, e.db); !reflect.DeepEqual(before, after) {
		t.Fatalf("requests without a key changed the books")
	}

	first := e.ok(http.StatusCreated, "POST", "/v1/transfers", e.write, "idem-1", move, nil)
	again := e.ok(http.StatusCreated, "POST", "/v1/transfers", e.write, "idem-1", move, nil)
	if string(again.body) != string(first.body) || again.header.Get(IdempotentReplayedHeader) != "true" {
		t.Fatalf("retry: %s (replayed %q), first %s", again, again.header.Get(IdempotentReplayedHeader), first)
	}
	other := map[string]any{"from": f.alice, "to": f.bob, "amount": "1001"}
	wiWant(t, "same key, other body", e.do("POST", "/v1/transfers", e.write, "idem-1", other), 409, CodeIdempotencyKeyReused)
	// The same Idempotency-Key from another API key is another request.
	var mine, theirs ledger.Transfer
	json.Unmarshal(first.body, &mine)
	e.ok(http.StatusCreated, "POST", "/v1/transfers", e.admin, "idem-1", other, &theirs)
	if theirs.ID == mine.ID {
		t.Fatal("two API keys' transfers under one Idempotency-Key were taken for one")
	}
	// The idempotency layer forgets keys (after 24 hours); the ledger does
	// not: a retry still returns the first transfer, another body is 409.
	custodyExec(t, e.db, `DELETE FROM idempotency_keys`)
	var retried ledger.Transfer
	e.ok(http.StatusCreated, "POST", "/v1/transfers", e.write, "idem-1", move, &retried)
	if retried.ID != mine.ID {
		t.Fatalf("a retry after the idempotency layer forgot the key made transfer %s, first %s", retried.ID, mine.ID)
	}
	wiWant(t, "same key, other body, in the ledger", e.do("POST", "/v1/transfers", e.write, "idem-1", other), 409, CodeIdempotencyKeyReused)
	var wd1, wd2 ledger.Withdrawal
	wdBody := map[string]any{"account": f.alice, "address": f.paidAddr, "amount": "10000"}
	e.ok(http.StatusCreated, "POST", "/v1/withdrawals", e.write, "idem-w", wdBody, &wd1)
	custodyExec(t, e.db, `DELETE FROM idempotency_keys`)
	e.ok(http.StatusCreated, "POST", "/v1/withdrawals", e.write, "idem-w", wdBody, &wd2)
	if wd1.ID != wd2.ID {
		t.Fatalf("a withdrawal retried after the layer forgot its key made %s, first %s", wd2.ID, wd1.ID)
	}
	e.ok(200, "POST", "/v1/withdrawals/"+wd1.ID+"/cancel", e.write, "", nil, &wd1)
	for _, a := range []string{f.alice, f.bob} {
		if got := e.account(f.wallet.ID, a); got.Total != before.accounts[a][0]+map[string]amount.Amount{f.alice: -2001, f.bob: 2001}[a] || got.Held != 0 {
			t.Errorf("account %s after the idempotency checks: %+v", got.Name, got)
		}
	}

	// A generated mnemonic is never stored to be replayed.
	r := e.do("POST", "/v1/custody/wallets", e.admin, "idem-wallet", map[string]any{"return_mnemonic": true})
	wiWant(t, "return_mnemonic with an Idempotency-Key", r, 400, CodeInvalidParameter)
}

// custodyBadInput: every mistake is a 4xx with a stable code and changes
// nothing.
func custodyBadInput(t *testing.T, e *custodyEnv, f custodyFixture) {
	other := e.createWallet("other")
	var dave ledger.Account
	e.ok(http.StatusCreated, "POST", "/v1/custody/wallets/"+other.ID+"/accounts", e.write, "", map[string]any{"name": "Dave"}, &dave)
	// An account of another asset, which this server cannot make: written
	// directly, removed at the end.
	const ltc = "acc_11c000000000000000000000"
	custodyExec(t, e.db, `INSERT INTO ledger_accounts (id, wallet_id, kind, name, asset, created_at, updated_at)
		VALUES ($1, $2, 'customer', 'ltc', 'LTC', 0, 0)`, ltc, f.wallet.ID)
	defer custodyExec(t, e.db, `DELETE FROM ledger_accounts WHERE id = $1`, ltc)

	w := "/v1/custody/wallets/" + f.wallet.ID
	unknown := "acc_000000000000000000000000"
	mainnet := "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
	wd := func(acct, addr, amt string) map[string]any {
		return map[string]any{"account": acct, "address": addr, "amount": amt}
	}
	tr := func(from, to, amt string) map[string]any {
		return map[string]any{"from": from, "to": to, "amount": amt}
	}
	many := make([]any, ledger.MaxBatchTransfers+1)
	for i := range many {
		many[i] = tr(f.alice, f.bob, "1")
	}
	hot, fees := f.wallet.Accounts.Hot, f.wallet.Accounts.Fees
	cases := []struct {
		name, method, path, credential string
		body                           any
		status                         int
		code                           string
	}{
		// Custodial wallets.
		{"words", "POST", "/v1/custody/wallets", e.admin, map[string]any{"words": 13}, 400, "invalid_parameter"},
		{"mnemonic and xprv", "POST", "/v1/custody/wallets", e.admin, map[string]any{"mnemonic": "a", "xprv": "b"}, 400, "invalid_parameter"},
		{"bad mnemonic", "POST", "/v1/custody/wallets", e.admin, map[string]any{"mnemonic": "abandon abandon abandon"}, 400, "invalid_parameter"},
		{"bad xprv", "POST", "/v1/custody/wallets", e.admin, map[string]any{"xprv": "tprvnonsense"}, 400, "invalid_parameter"},
		{"return an import", "POST", "/v1/custody/wallets", e.admin, map[string]any{"xprv": "tprvnonsense", "return_mnemonic": true}, 400, "invalid_parameter"},
		{"birthday without import", "POST", "/v1/custody/wallets", e.admin, map[string]any{"birthday_height": 5}, 400, "invalid_parameter"},
		{"long label", "POST", "/v1/custody/wallets", e.admin, map[string]any{"label": strings.Repeat("x", 201)}, 400, "invalid_parameter"},
		{"unknown field", "POST", "/v1/custody/wallets", e.admin, map[string]any{"seed": "x"}, 400, "invalid_json"},
		{"NUL in a label", "POST", "/v1/custody/wallets", e.admin, map[string]any{"label": "a\x00b"}, 400, "invalid_parameter"},
		{"NUL in a name", "POST", w + "/accounts", e.write, map[string]any{"name": "a\x00b"}, 400, "invalid_parameter"},
		{"NUL in an external_id", "POST", w + "/accounts", e.write, map[string]any{"name": "ab", "external_id": "\x00"}, 400, "invalid_parameter"},
		{"NUL in a filter", "GET", w + "/accounts?external_id=%00", e.read, nil, 400, "invalid_parameter"},
		{"NUL in a cursor", "GET", "/v1/deposits?after=x%00", e.read, nil, 400, "invalid_parameter"},
		{"NUL in a path", "GET", "/v1/deposits/dep%00x", e.read, nil, 400, "invalid_parameter"},
		{"NUL in a leg", "POST", "/v1/transfers", e.write, map[string]any{"legs": []any{
			map[string]any{"account": f.alice + "\x00", "amount": "-1"}, map[string]any{"account": f.bob, "amount": "1"}}}, 400, "invalid_parameter"},
		{"NUL in a batch memo", "POST", "/v1/transfers/batch", e.write, map[string]any{"transfers": []any{
			map[string]any{"from": f.alice, "to": f.bob, "amount": "1", "memo": "\x00"}}}, 400, "invalid_parameter"},
		{"NUL in an address", "POST", "/v1/withdrawals", e.write, wd(f.alice, f.paidAddr+"\x00", "10000"), 400, "invalid_parameter"},
		{"unknown wallet", "GET", "/v1/custody/wallets/" + strings.Repeat("0", 64), e.read, nil, 404, "not_found"},
		{"malformed wallet id", "GET", "/v1/custody/wallets/nope", e.read, nil, 404, "not_found"},
		// Accounts.
		{"no name", "POST", w + "/accounts", e.write, map[string]any{"external_id": "x"}, 400, "invalid_parameter"},
		{"duplicate external_id", "POST", w + "/accounts", e.write, map[string]any{"name": "A2", "external_id": "u-alice"}, 409, "conflict"},
		{"account of unknown wallet", "POST", "/v1/custody/wallets/" + strings.Repeat("0", 64) + "/accounts", e.write, map[string]any{"name": "x"}, 404, "not_found"},
		{"bad kind", "GET", w + "/accounts?kind=boss", e.read, nil, 400, "invalid_parameter"},
		{"limit 0", "GET", w + "/accounts?limit=0", e.read, nil, 400, "invalid_parameter"},
		{"limit 1001", "GET", w + "/accounts?limit=1001", e.read, nil, 400, "invalid_parameter"},
		{"limit x", "GET", w + "/accounts?limit=x", e.read, nil, 400, "invalid_parameter"},
		{"unknown account", "GET", w + "/accounts/" + unknown, e.read, nil, 404, "not_found"},
		{"other wallet's account", "GET", "/v1/custody/wallets/" + other.ID + "/accounts/" + f.alice, e.read, nil, 404, "not_found"},
		{"address for a system account", "POST", w + "/accounts/" + hot + "/addresses", e.write, nil, 400, "invalid_parameter"},
		{"address for other wallet's account", "POST", "/v1/custody/wallets/" + other.ID + "/accounts/" + f.alice + "/addresses", e.write, nil, 404, "not_found"},
		{"addresses of unknown account", "GET", w + "/accounts/" + unknown + "/addresses", e.read, nil, 404, "not_found"},
		{"negative before", "GET", w + "/accounts/" + f.alice + "/entries?before=-1", e.read, nil, 400, "invalid_parameter"},
		{"entries limit", "GET", w + "/accounts/" + f.alice + "/entries?limit=5000", e.read, nil, 400, "invalid_parameter"},
		// Deposits.
		{"deposit status", "GET", "/v1/deposits?status=lost", e.read, nil, 400, "invalid_parameter"},
		{"deposit limit", "GET", "/v1/deposits?limit=-3", e.read, nil, 400, "invalid_parameter"},
		{"unknown deposit", "GET", "/v1/deposits/dep_x", e.read, nil, 404, "not_found"},
		{"ack unknown deposit", "POST", "/v1/deposits/dep_x/ack", e.write, nil, 404, "not_found"},
		// Transfers.
		{"transfer from unknown account", "POST", "/v1/transfers", e.write, tr(unknown, f.bob, "1"), 404, "not_found"},
		{"transfer to unknown account", "POST", "/v1/transfers", e.write, tr(f.alice, unknown, "1"), 404, "not_found"},
		{"same account", "POST", "/v1/transfers", e.write, tr(f.alice, f.alice, "1"), 400, "same_account"},
		{"other asset", "POST", "/v1/transfers", e.write, tr(f.alice, ltc, "1"), 400, "asset_mismatch"},
		{"other wallet", "POST", "/v1/transfers", e.write, tr(f.alice, dave.ID, "1"), 400, "invalid_parameter"},
		{"from the hot account", "POST", "/v1/transfers", e.write, tr(hot, f.alice, "1"), 400, "invalid_parameter"},
		{"zero amount", "POST", "/v1/transfers", e.write, tr(f.alice, f.bob, "0"), 400, "invalid_amount"},
		{"negative amount", "POST", "/v1/transfers", e.write, tr(f.alice, f.bob, "-5"), 400, "invalid_amount"},
		{"huge amount", "POST", "/v1/transfers", e.write, tr(f.alice, f.bob, "9223372036854775807"), 400, "invalid_amount"},
		{"amount as a number", "POST", "/v1/transfers", e.write, map[string]any{"from": f.alice, "to": f.bob, "amount": 5}, 400, "invalid_json"},
		{"fractional amount", "POST", "/v1/transfers", e.write, tr(f.alice, f.bob, "0.5"), 400, "invalid_json"},
		{"missing amount", "POST", "/v1/transfers", e.write, map[string]any{"from": f.alice, "to": f.bob}, 400, "invalid_parameter"},
		{"insufficient funds", "POST", "/v1/transfers", e.write, tr(f.carol, f.alice, "100000000"), 422, "insufficient_funds"},
		{"long memo", "POST", "/v1/transfers", e.write, map[string]any{"from": f.alice, "to": f.bob, "amount": "1", "memo": strings.Repeat("m", 501)}, 400, "invalid_parameter"},
		{"unknown transfer field", "POST", "/v1/transfers", e.write, map[string]any{"from": f.alice, "to": f.bob, "amount": "1", "fee": "1"}, 400, "invalid_json"},
		{"legs and from", "POST", "/v1/transfers", e.write, map[string]any{"from": f.alice, "legs": []any{}}, 400, "invalid_parameter"},
		{"one leg", "POST", "/v1/transfers", e.write, map[string]any{"legs": []any{map[string]any{"account": f.alice, "amount": "1"}}}, 400, "invalid_parameter"},
		{"unbalanced legs", "POST", "/v1/transfers", e.write, map[string]any{"legs": []any{
			map[string]any{"account": f.alice, "amount": "-2"}, map[string]any{"account": f.bob, "amount": "1"}}}, 400, "unbalanced_transfer"},
		{"zero leg", "POST", "/v1/transfers", e.write, map[string]any{"legs": []any{
			map[string]any{"account": f.alice, "amount": "0"}, map[string]any{"account": f.bob, "amount": "0"}}}, 400, "invalid_amount"},
		{"overflowing legs", "POST", "/v1/transfers", e.write, map[string]any{"legs": []any{
			map[string]any{"account": fees, "amount": "-4611686018427387904"}, map[string]any{"account": f.wallet.Accounts.Imports, "amount": "-4611686018427387904"},
			map[string]any{"account": f.bob, "amount": "4611686018427387904"}, map[string]any{"account": f.carol, "amount": "4611686018427387904"}}}, 400, "invalid_amount"},
		{"legs cancelling out", "POST", "/v1/transfers", e.write, map[string]any{"legs": []any{
			map[string]any{"account": f.alice, "amount": "-5"}, map[string]any{"account": f.alice, "amount": "5"}}}, 400, "same_account"},
		{"leg without account", "POST", "/v1/transfers", e.write, map[string]any{"legs": []any{
			map[string]any{"amount": "-1"}, map[string]any{"account": f.bob, "amount": "1"}}}, 400, "invalid_parameter"},
		{"leg overdraws", "POST", "/v1/transfers", e.write, map[string]any{"legs": []any{
			map[string]any{"account": f.carol, "amount": "-100000000"}, map[string]any{"account": f.bob, "amount": "100000000"}}}, 422, "insufficient_funds"},
		{"empty batch", "POST", "/v1/transfers/batch", e.write, map[string]any{"transfers": []any{}}, 400, "invalid_parameter"},
		{"batch over the limit", "POST", "/v1/transfers/batch", e.write, map[string]any{"transfers": many}, 400, "invalid_parameter"},
		{"batch with a bad one", "POST", "/v1/transfers/batch", e.write, map[string]any{"transfers": []any{tr(f.alice, f.bob, "1"), tr(f.bob, f.bob, "1")}}, 400, "same_account"},
		{"batch overdraws at the end", "POST", "/v1/transfers/batch", e.write, map[string]any{"transfers": []any{
			tr(f.alice, f.bob, "1"), tr(f.carol, f.alice, "100000000")}}, 422, "insufficient_funds"},
		{"batch with an unknown account", "POST", "/v1/transfers/batch", e.write, map[string]any{"transfers": []any{
			tr(f.alice, f.bob, "1"), tr(f.alice, unknown, "1")}}, 404, "not_found"},
		{"batch item without amount", "POST", "/v1/transfers/batch", e.write, map[string]any{"transfers": []any{map[string]any{"from": f.alice, "to": f.bob}}}, 400, "invalid_amount"},
		{"unknown transfer", "GET", "/v1/transfers/tr_x", e.read, nil, 404, "not_found"},
		// Withdrawals.
		{"withdraw from unknown account", "POST", "/v1/withdrawals", e.write, wd(unknown, f.paidAddr, "10000"), 404, "not_found"},
		{"withdraw from a system account", "POST", "/v1/withdrawals", e.write, wd(fees, f.paidAddr, "10000"), 400, "invalid_parameter"},
		{"invalid address", "POST", "/v1/withdrawals", e.write, wd(f.alice, "notanaddress", "10000"), 400, "invalid_address"},
		{"wrong network", "POST", "/v1/withdrawals", e.write, wd(f.alice, mainnet, "10000"), 400, "wrong_network"},
		{"zero withdrawal", "POST", "/v1/withdrawals", e.write, wd(f.alice, f.paidAddr, "0"), 400, "invalid_amount"},
		{"negative withdrawal", "POST", "/v1/withdrawals", e.write, wd(f.alice, f.paidAddr, "-1"), 400, "invalid_amount"},
		{"dust", "POST", "/v1/withdrawals", e.write, wd(f.alice, f.paidAddr, "100"), 400, "dust_amount"},
		{"huge withdrawal", "POST", "/v1/withdrawals", e.write, wd(f.alice, f.paidAddr, "9223372036854775807"), 400, "invalid_amount"},
		{"withdrawal over available", "POST", "/v1/withdrawals", e.write, wd(f.carol, f.paidAddr, "100000000"), 422, "insufficient_funds"},
		{"withdrawal of the whole balance and the fee", "POST", "/v1/withdrawals", e.write, wd(f.carol, f.paidAddr, "34000"), 422, "insufficient_funds"},
		{"withdraw to own deposit address", "POST", "/v1/withdrawals", e.write, wd(f.carol, f.carolAddr, "1000"), 400, "same_account"},
		{"bad priority", "POST", "/v1/withdrawals", e.write, map[string]any{"account": f.alice, "address": f.paidAddr, "amount": "10000", "priority": "urgent"}, 400, "invalid_parameter"},
		{"missing address", "POST", "/v1/withdrawals", e.write, map[string]any{"account": f.alice, "amount": "10000"}, 400, "invalid_parameter"},
		{"withdrawal status", "GET", "/v1/withdrawals?status=sent", e.read, nil, 400, "invalid_parameter"},
		{"withdrawal limit", "GET", "/v1/withdrawals?limit=", e.read, nil, 400, "invalid_parameter"},
		{"unknown withdrawal", "GET", "/v1/withdrawals/wd_x", e.read, nil, 404, "not_found"},
		{"cancel unknown withdrawal", "POST", "/v1/withdrawals/wd_x/cancel", e.write, nil, 404, "not_found"},
		{"cancel a confirmed withdrawal", "POST", "/v1/withdrawals/" + f.withdrawal + "/cancel", e.write, nil, 409, "invalid_state"},
		// Batches.
		{"unknown batch", "GET", "/v1/custody/batches/bat_x", e.read, nil, 404, "not_found"},
		{"bump unknown batch", "POST", "/v1/custody/batches/bat_x/bump", e.admin, map[string]any{"fee_rate": 20}, 404, "not_found"},
		{"bump a confirmed batch", "POST", "/v1/custody/batches/" + f.batch + "/bump", e.admin, map[string]any{"fee_rate": 500}, 409, "invalid_state"},
		{"bump fee rate 0", "POST", "/v1/custody/batches/" + f.batch + "/bump", e.admin, map[string]any{"fee_rate": 0}, 400, "invalid_parameter"},
		{"bump fee rate huge", "POST", "/v1/custody/batches/" + f.batch + "/bump", e.admin, map[string]any{"fee_rate": 1_000_000}, 400, "invalid_parameter"},
		{"bump without body", "POST", "/v1/custody/batches/" + f.batch + "/bump", e.admin, nil, 400, "invalid_json"},
	}
	before := custodySnapshot(t, e.db)
	for i, c := range cases {
		idem := ""
		if c.method == "POST" && (c.path == "/v1/transfers" || c.path == "/v1/transfers/batch" || c.path == "/v1/withdrawals") {
			idem = fmt.Sprintf("bad-%d", i)
		}
		wiWant(t, c.name, e.do(c.method, c.path, c.credential, idem, c.body), c.status, c.code)
	}
	if after := custodySnapshot(t, e.db); !reflect.DeepEqual(before, after) {
		for id, v := range after.accounts {
			if before.accounts[id] != v {
				t.Errorf("account %s changed: %v → %v", id, before.accounts[id], v)
			}
		}
		t.Errorf("bad input changed the books: %d → %d transfers, %d → %d withdrawals, %d → %d deposit addresses",
			before.transfers, after.transfers, before.withdrawals, after.withdrawals, before.addrsN, after.addrsN)
	}
}

// TestCustodyUnavailable: without the ledger every custodial route answers
// 503 unavailable; without a master key creating a wallet is 503
// custody_unavailable.
func TestCustodyUnavailable(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t, storetest.NewSQLiteDSN(t))
	log := events.NewLog(db)
	key, _, err := auth.CreateAPIKey(ctx, db, auth.ScopeAdmin, "test")
	if err != nil {
		t.Fatal(err)
	}
	serve := func(s *Server, method, target, pattern, body string) (int, string) {
		t.Helper()
		req := httptest.NewRequest(method, target, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set(IdempotencyKeyHeader, "k-"+method+target)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		checkResponse(t, method, pattern, rec.Code, rec.Body.Bytes())
		var e ErrorResponse
		json.Unmarshal(rec.Body.Bytes(), &e)
		return rec.Code, e.Error.Code
	}
	s := NewServer(Deps{DB: db, Events: log})
	fill := strings.NewReplacer("{id}", strings.Repeat("ab", 32), "{aid}", "acc_000000000000000000000000")
	for _, rt := range routes {
		if !isCustodyRoute(rt.path) {
			continue
		}
		if code, ec := serve(s, rt.method, fill.Replace(rt.path), rt.path, `{}`); code != 503 || ec != CodeUnavailable {
			t.Errorf("%s without the ledger: %d %s", rt.pattern(), code, ec)
		}
	}
	params, err := chain.Lookup(chain.BTC, chain.Regtest)
	if err != nil {
		t.Fatal(err)
	}
	s = NewServer(Deps{DB: db, Events: log, Custody: ledger.New(db, params, log, nil, nil, nil, nil, ledger.Config{}, nil)})
	if code, ec := serve(s, "POST", "/v1/custody/wallets", "/v1/custody/wallets", `{"words":12}`); code != 503 || ec != "custody_unavailable" {
		t.Errorf("creating a wallet without a master key: %d %s", code, ec)
	}
	var list CustodyWalletList
	req := httptest.NewRequest("GET", "/v1/custody/wallets", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	checkResponse(t, "GET", "/v1/custody/wallets", rec.Code, rec.Body.Bytes())
	if err := json.Unmarshal(rec.Body.Bytes(), &list); rec.Code != 200 || err != nil || list.Wallets == nil || len(list.Wallets) != 0 {
		t.Errorf("listing no wallets: %d %s", rec.Code, rec.Body)
	}
}

// TestCustodySchemasMatchTypes holds the custodial schemas against the Go
// types the server encodes and decodes with them.
func TestCustodySchemasMatchTypes(t *testing.T) {
	responses := map[string]any{
		"CustodyWallet": ledger.CustodyWallet{}, "SystemAccounts": ledger.SystemAccounts{}, "CustodyWalletList": CustodyWalletList{},
		"Account": ledger.Account{}, "AccountList": AccountList{}, "DepositAddress": ledger.DepositAddress{},
		"DepositAddressList": DepositAddressList{}, "Entry": ledger.Entry{}, "EntryPage": EntryPage{}, "Deposit": ledger.Deposit{},
		"DepositList": DepositList{}, "Transfer": ledger.Transfer{}, "Posting": ledger.Posting{},
		"TransferBatchResponse": TransferBatchResponse{}, "Withdrawal": ledger.Withdrawal{}, "WithdrawalList": WithdrawalList{},
		"Batch": CustodyBatch{}, "AuditReport": ledger.AuditReport{}, "AuditDifference": ledger.AuditDifference{},
		"WalletAudit": ledger.WalletAudit{},
	}
	requests := map[string]any{
		"CreateCustodyWalletRequest": CreateCustodyWalletRequest{}, "CreateAccountRequest": CreateAccountRequest{},
		"TransferRequest": TransferRequest{}, "TransferLeg": ledger.Leg{}, "TransferBatchRequest": TransferBatchRequest{},
		"TransferBatchItem": ledger.TransferRequest{}, "WithdrawalRequest": ledger.WithdrawalRequest{}, "BumpBatchRequest": BumpBatchRequest{},
	}
	for _, name := range slices.Sorted(maps.Keys(responses)) {
		compareType(t, name, reflect.TypeOf(responses[name]), map[string]any{"$ref": "#/components/schemas/" + name}, true)
	}
	for _, name := range slices.Sorted(maps.Keys(requests)) {
		compareType(t, name, reflect.TypeOf(requests[name]), map[string]any{"$ref": "#/components/schemas/" + name}, false)
	}
	// The batch type shows every field of the ledger's.
	var names []string
	for f := range reflect.TypeFor[ledger.Batch]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		names = append(names, name)
	}
	var ours []string
	for f := range reflect.TypeFor[CustodyBatch]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		ours = append(ours, name)
	}
	if slices.Sort(names); !slices.Equal(names, slices.Sorted(slices.Values(ours))) {
		t.Errorf("ledger.Batch has JSON fields %v, CustodyBatch %v", names, ours)
	}
}

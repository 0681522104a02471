package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/keys"
	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/wallet"
)

// cliRun runs `coffer args…` in-process, through the same dispatch as main.
func cliRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// custodyConfig writes a configuration naming dsn, on BTC regtest, crediting
// deposits at one confirmation, and returns its path.
func custodyConfig(t *testing.T, dsn string) string {
	t.Helper()
	t.Setenv("COFFER_CONFIG", "")
	path := filepath.Join(t.TempDir(), "coffer.yaml")
	body := fmt.Sprintf("database:\n  dsn: %q\nchain:\n  coin: btc\n  network: regtest\ncustody:\n  confirmations: 1\nlog:\n  level: warn\n", dsn)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCustodyUsage(t *testing.T) {
	t.Setenv("COFFER_CONFIG", "")
	for _, c := range []struct {
		args       []string
		code       int
		out, msg   string // substrings of stdout and stderr
		noDatabase bool
	}{
		{args: []string{"audit", "extra"}, code: 2, msg: `unexpected argument "extra"`},
		{args: []string{"audit", "-bogus"}, code: 2, msg: "flag provided but not defined: -bogus"},
		{args: []string{"audit", "-h"}, code: 0, msg: "coffer audit [-config FILE] [-json]"},
		{args: []string{"custody"}, code: 2, msg: "coffer custody import-unaccounted -wallet ID"},
		{args: []string{"custody", "help"}, code: 0, out: "coffer custody rescan -wallet ID [-from HEIGHT]"},
		{args: []string{"custody", "import"}, code: 2, msg: `unknown subcommand "import"`},
		{args: []string{"custody", "import-unaccounted"}, code: 2, msg: "-wallet ID is required"},
		{args: []string{"custody", "rescan", "-from", "5"}, code: 2, msg: "-wallet ID is required"},
		{args: []string{"custody", "rescan", "w1"}, code: 2, msg: `unexpected argument "w1" (give the wallet as -wallet ID)`},
		{args: []string{"custody", "rescan", "-wallet", "w1", "-from", "-1"}, code: 2, msg: "-from must not be negative"},
		{args: []string{"custody", "rescan", "-wallet", "w1", "-from", "x"}, code: 2, msg: `invalid value "x" for flag -from`},
		{args: []string{"custody", "import-unaccounted", "--wallet"}, code: 2, msg: "flag needs an argument: -wallet"},
		{args: []string{"custody", "rescan", "-h"}, code: 0, msg: "rescan finds deposits missed"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, out, errs := cliRun(t, c.args...)
			if code != c.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, c.code, errs)
			}
			if !strings.Contains(out, c.out) {
				t.Errorf("stdout lacks %q:\n%s", c.out, out)
			}
			if !strings.Contains(errs, c.msg) {
				t.Errorf("stderr lacks %q:\n%s", c.msg, errs)
			}
		})
	}
	// The top-level usage names both commands.
	_, out, _ := cliRun(t, "help")
	for _, want := range []string{"coffer audit", "coffer custody CMD"} {
		if !strings.Contains(out, want) {
			t.Errorf("coffer help lacks %q:\n%s", want, out)
		}
	}
}

func TestAuditEmptyDatabase(t *testing.T) {
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			cfg := custodyConfig(t, storetest.NewDSN(t, engine))
			code, out, errs := cliRun(t, "audit", "-config", cfg)
			if code != 0 {
				t.Fatalf("audit of an empty database exited %d:\n%s%s", code, out, errs)
			}
			if !strings.Contains(out, "Audit of 0 account(s) in 0 custodial wallet(s)") || !strings.Contains(out, "the books are clean") {
				t.Errorf("audit printed:\n%s", out)
			}
			code, out, errs = cliRun(t, "audit", "--json", "-config", cfg)
			if code != 0 {
				t.Fatalf("audit -json exited %d: %s", code, errs)
			}
			var r ledger.AuditReport
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("audit -json printed no report: %v\n%s", err, out)
			}
			if !r.Clean || len(r.Differences) != 0 || r.Wallets == nil {
				t.Errorf("report %+v", r)
			}
		})
	}
}

func TestAuditNodeUnreachable(t *testing.T) {
	cfg := custodyConfig(t, storetest.NewSQLiteDSN(t))
	t.Setenv("COFFER_NODE_URL", "http://127.0.0.1:1")
	t.Setenv("COFFER_NODE_RETRIES", "0")
	code, out, errs := cliRun(t, "audit", "-node", "-config", cfg)
	if code != 1 || out != "" || !strings.Contains(errs, "coffer audit: node at http://127.0.0.1:1") {
		t.Errorf("audit -node without a node: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestAuditUnreadableConfig(t *testing.T) {
	t.Setenv("COFFER_CONFIG", "")
	code, _, errs := cliRun(t, "audit", "-config", filepath.Join(t.TempDir(), "missing.yaml"))
	if code != 1 || !strings.Contains(errs, "coffer audit: config:") {
		t.Errorf("exit %d, stderr %q; want 1 and the config error", code, errs)
	}
}

// custodyFixture is a custodial wallet with two customer accounts in a
// database that has no node: chain state is written as the follower would.
type custodyFixture struct {
	db           *store.DB
	svc          *ledger.Service
	params       *chain.Params
	wallet       *ledger.CustodyWallet
	alice, bob   *ledger.Account
	aliceDeposit string // a deposit address of alice
	height       int64
}

func newCustodyFixture(t *testing.T, dsn string) *custodyFixture {
	t.Helper()
	ctx := context.Background()
	db := storetest.Open(t, dsn)
	params, err := chain.Lookup(chain.BTC, chain.Regtest)
	if err != nil {
		t.Fatal(err)
	}
	line, err := keys.GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(keyFile, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := events.NewLog(db)
	wallets := wallet.New(db, params, log, nil, nil, wallet.Config{}, nil)
	svc := ledger.New(db, params, log, wallets, keys.New(db, keys.FileProvider(keyFile)), nil, nil,
		ledger.Config{Confirmations: 1}, nil)
	f := &custodyFixture{db: db, svc: svc, params: params}
	if f.wallet, err = svc.CreateWallet(ctx, ledger.CreateWalletRequest{Label: "hot"}); err != nil {
		t.Fatal(err)
	}
	if f.alice, err = svc.CreateAccount(ctx, f.wallet.ID, ledger.CreateAccountRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	if f.bob, err = svc.CreateAccount(ctx, f.wallet.ID, ledger.CreateAccountRequest{Name: "bob"}); err != nil {
		t.Fatal(err)
	}
	a, err := svc.NewDepositAddress(ctx, f.alice.ID)
	if err != nil {
		t.Fatal(err)
	}
	f.aliceDeposit = a.Address
	f.height = 100
	f.exec(t, `INSERT INTO chain_cursor (id, height, hash, updated_at) VALUES (1, $1, $2, $3)`,
		f.height, fmt.Sprintf("%064x", f.height), time.Now().Unix())
	return f
}

func (f *custodyFixture) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	ctx := context.Background()
	if err := f.db.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, q, args...)
		return err
	}); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// confirmPayment stores a confirmed transaction of the last block paying
// amount to script, as the follower records one, without telling the
// ledger: a payment Coffer missed.
func (f *custodyFixture) confirmPayment(t *testing.T, script []byte, amount int64) string {
	t.Helper()
	txid := fmt.Sprintf("%064x", time.Now().UnixNano())
	now := time.Now().Unix()
	f.exec(t, `INSERT INTO txs (txid, status, block_height, block_hash, block_pos, coinbase, raw, first_seen_at, updated_at)
		VALUES ($1, 'confirmed', $2, $3, 1, $4, $5, $6, $6)`, txid, f.height, fmt.Sprintf("%064x", f.height), false, []byte{0}, now)
	f.exec(t, `INSERT INTO tx_outputs (txid, vout, script, amount) VALUES ($1, 0, $2, $3)`, txid, script, amount)
	return txid
}

func (f *custodyFixture) script(t *testing.T, addr string) []byte {
	t.Helper()
	s, err := f.params.AddressScript(addr)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// changeScript is the script of an address of the wallet that no account
// owns.
func (f *custodyFixture) changeScript(t *testing.T) []byte {
	t.Helper()
	var s []byte
	if err := f.db.QueryRowContext(context.Background(), `SELECT script FROM wallet_addresses WHERE wallet_id = $1 AND branch = 1 AND idx = 0`,
		f.wallet.ID).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *custodyFixture) audit(t *testing.T) *ledger.AuditReport {
	t.Helper()
	r, err := f.svc.Audit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestCustodyCommands goes through a missed deposit found by rescan, funds
// no account owns booked by import-unaccounted, and tampered books found by
// audit and refused by import-unaccounted.
func TestCustodyCommands(t *testing.T) {
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			dsn := storetest.NewDSN(t, engine)
			f := newCustodyFixture(t, dsn)
			cfg := custodyConfig(t, dsn)
			w := f.wallet.ID

			code, out, errs := cliRun(t, "audit", "-config", cfg)
			if code != 0 || !strings.Contains(out, w) || !strings.Contains(out, "the books are clean") {
				t.Fatalf("audit of a new wallet: exit %d\n%s%s", code, out, errs)
			}

			// Unknown wallets.
			for _, sub := range []string{"import-unaccounted", "rescan"} {
				code, _, errs := cliRun(t, "custody", sub, "-wallet", "nosuch", "-config", cfg)
				if code != 1 || !strings.Contains(errs, "no custodial wallet nosuch") {
					t.Errorf("%s of an unknown wallet: exit %d, stderr %q", sub, code, errs)
				}
			}

			// A deposit Coffer missed: the audit sees coins the books lack,
			// rescan records and credits it.
			f.confirmPayment(t, f.script(t, f.aliceDeposit), 70_000)
			if r := f.audit(t); r.Clean || r.Differences[0].Check != "chain_vs_books" {
				t.Fatalf("audit after a missed deposit: %+v", r.Differences)
			}
			code, out, errs = cliRun(t, "custody", "rescan", "-wallet", w, "-from", "101", "-config", cfg)
			if code != 1 || out != "" || !strings.Contains(errs, "-from 101 is past the last block the follower applied (100)") {
				t.Errorf("rescan past the tip: exit %d, stdout %q, stderr %q", code, out, errs)
			}
			if ds, err := f.svc.ListDeposits(ctx, ledger.DepositFilter{WalletID: w}); err != nil || len(ds) != 0 {
				t.Errorf("the refused rescan recorded deposits: %v %v", ds, err)
			}
			code, out, errs = cliRun(t, "custody", "rescan", "-wallet", w, "-from", "50", "-config", cfg)
			if code != 0 {
				t.Fatalf("rescan exited %d: %s", code, errs)
			}
			for _, want := range []string{"recorded 1 new deposit(s)", "0 pending, 1 credited", "from block 50", "coffer serve"} {
				if !strings.Contains(out, want) {
					t.Errorf("rescan printed no %q:\n%s", want, out)
				}
			}
			a, err := f.svc.GetAccount(ctx, f.alice.ID)
			if err != nil {
				t.Fatal(err)
			}
			if a.Total != 70_000 {
				t.Errorf("alice holds %s after the rescan, want 70000", a.Total)
			}
			var status string
			var scan int64
			if err := f.db.QueryRowContext(ctx, `SELECT status, scan_height FROM wallets WHERE id = $1`, w).Scan(&status, &scan); err != nil {
				t.Fatal(err)
			}
			if status != wallet.StatusSyncing || scan != 49 {
				t.Errorf("wallet is %s scanned to %d after rescan -from 50, want syncing from 49", status, scan)
			}
			code, out, _ = cliRun(t, "custody", "rescan", "-wallet", w, "-config", cfg)
			if code != 0 || !strings.Contains(out, "recorded 0 new deposit(s)") || !strings.Contains(out, "from block 0") {
				t.Errorf("second rescan: exit %d\n%s", code, out)
			}
			if code, out, errs := cliRun(t, "audit", "-config", cfg); code != 0 {
				t.Fatalf("audit after the rescan: exit %d\n%s%s", code, out, errs)
			}

			// Coins no account owns.
			code, out, _ = cliRun(t, "custody", "import-unaccounted", "-wallet", w, "-config", cfg)
			if code != 0 || !strings.Contains(out, "nothing to import") {
				t.Errorf("import with nothing to import: exit %d\n%s", code, out)
			}
			f.confirmPayment(t, f.changeScript(t), 25_000)
			code, out, _ = cliRun(t, "audit", "-config", cfg)
			if code != 1 || !strings.Contains(out, "chain_vs_books") || !strings.Contains(out, "coffer custody import-unaccounted") {
				t.Errorf("audit of unaccounted coins: exit %d\n%s", code, out)
			}
			code, out, errs = cliRun(t, "custody", "import-unaccounted", "--wallet", w, "-config", cfg)
			if code != 0 || !strings.Contains(out, "booked 25000 sat") || !strings.Contains(out, f.wallet.Accounts.Imports) {
				t.Fatalf("import: exit %d\n%s%s", code, out, errs)
			}
			if code, out, errs := cliRun(t, "audit", "-config", cfg); code != 0 {
				t.Fatalf("audit after the import: exit %d\n%s%s", code, out, errs)
			}

			// A tampered balance: the audit names the account.
			f.exec(t, `UPDATE ledger_accounts SET balance = balance + 500 WHERE id = $1`, f.alice.ID)
			code, out, errs = cliRun(t, "audit", "-config", cfg)
			if code != 1 {
				t.Errorf("audit of a tampered balance exited %d, want 1", code)
			}
			for _, want := range []string{"balance_vs_postings", f.alice.ID + ` (customer account "alice")`,
				"expected: 70000", "actual:   70500", "liabilities_vs_assets"} {
				if !strings.Contains(out, want) {
					t.Errorf("audit output lacks %q:\n%s", want, out)
				}
			}
			if !strings.Contains(errs, "difference(s) found") {
				t.Errorf("audit's stderr = %q", errs)
			}
			code, out, _ = cliRun(t, "audit", "-json", "-config", cfg)
			var r ledger.AuditReport
			if err := json.Unmarshal([]byte(out), &r); err != nil || code != 1 || r.Clean {
				t.Fatalf("audit -json of tampered books: exit %d, err %v\n%s", code, err, out)
			}
			named := false
			for _, d := range r.Differences {
				named = named || (d.Check == "balance_vs_postings" && d.AccountID == f.alice.ID)
			}
			if !named {
				t.Errorf("the JSON report does not name account %s: %+v", f.alice.ID, r.Differences)
			}
			f.exec(t, `UPDATE ledger_accounts SET balance = balance - 500 WHERE id = $1`, f.alice.ID)

			// Books that claim more than the chain holds: import refuses
			// and changes nothing.
			f.exec(t, `UPDATE ledger_accounts SET balance = balance - 1000 WHERE id = $1`, f.wallet.Accounts.Hot)
			var before int
			if err := f.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM ledger_postings`).Scan(&before); err != nil {
				t.Fatal(err)
			}
			code, out, errs = cliRun(t, "custody", "import-unaccounted", "-wallet", w, "-config", cfg)
			if code != 1 || out != "" || !strings.Contains(errs, "the books claim 1000 sat more than the chain holds") {
				t.Errorf("import over a shortfall: exit %d, stdout %q, stderr %q", code, out, errs)
			}
			var after int
			if err := f.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM ledger_postings`).Scan(&after); err != nil {
				t.Fatal(err)
			}
			if after != before {
				t.Errorf("the refused import wrote %d posting(s)", after-before)
			}
			code, out, _ = cliRun(t, "audit", "-config", cfg)
			if code != 1 || !strings.Contains(out, "the books claim more than the chain holds") {
				t.Errorf("audit of a shortfall: exit %d\n%s", code, out)
			}
		})
	}
}

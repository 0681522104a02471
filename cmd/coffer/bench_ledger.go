package main

// coffer bench ledger: internal transfers per second through the custodial
// ledger — its Go API, POST /v1/transfers, and the batch calls — on SQLite
// and PostgreSQL, beside pgbench running a bare SERIALIZABLE transfer (two
// UPDATEs and one INSERT, scripts/pgbench) on the same PostgreSQL server in
// the same run. Every case ends by checking the books.
//
// The ledger runs without a node: ledger.CreateWallet generates a seed,
// stores it under a random master key and registers the watch-only wallet
// with birthday 0, none of which asks the node anything; the wallet stays in
// status "creating" because no recovery loop runs, and transfers do not
// look at it. Customer accounts are funded by multi-leg transfers from the
// wallet's imports account (a system account, which may go negative), so
// nothing is written into the database behind the ledger's back.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/api"
	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/fault"
	"github.com/coffer/coffer/internal/keys"
	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/wallet"
	"github.com/jackc/pgx/v5/pgconn"
)

const benchLedgerUsage = `Usage:
  coffer bench ledger [flags]   internal transfers per second through the
                                ledger's Go API, POST /v1/transfers and the
                                batch calls, on SQLite and PostgreSQL, beside
                                pgbench running a bare SERIALIZABLE transfer

Flags of bench ledger:
  -accounts N     customer accounts, each funded with 10 BTC (default 1000)
  -duration D     length of each case (default 10s; pgbench runs whole seconds)
  -clients LIST   concurrent clients, comma-separated (default 1,16)
  -batch N        transfers per batch request, 1..1000 (default 1000)
  -pg DSN         also run on PostgreSQL, and pgbench there when pgbench and
                  psql are on PATH; the ledger and pgbench each get a fresh
                  database created through DSN (its role needs CREATEDB) and
                  dropped after
  -cases LIST     run only the matching cases: comma-separated filters, each a
                  "/"-separated list of words a case must all match; a word is
                  an engine (sqlite, postgres), a path (go, api, go-batch,
                  api-batch, pgbench; "batch" matches both batch paths), a
                  client count, or a distribution (uniform, hot); for example
                  -cases go/hot,pgbench
  -scripts DIR    where transfer.sql and setup.sql are (default: scripts/pgbench
                  in the working directory or the nearest one above it)

Paths: go is ledger.Service.Transfer, api is POST /v1/transfers on an
in-process HTTP server (loopback TCP, admin API key, Idempotency-Key on every
request), go-batch is ledger.Service.TransferBatch and api-batch is
POST /v1/transfers/batch, both with -batch transfers per request. Uniform
moves 1..10,000 sat between two distinct accounts drawn at random; hot makes
account 0 one side of every transfer. A request still running 10s (or one
-duration, if longer) after its case ended is cancelled and counts as failed.
`

// Shape of the books.
const (
	ledgerFunding   = 1_000_000_000 // sat per customer account (10 BTC); setup.sql uses the same
	ledgerMaxAmount = 10_000        // transfers move 1..this many sat
	ledgerFundChunk = ledger.MaxLegs - 1
	pgbenchMaxTries = 10
)

var (
	ledgerEngines = []string{"sqlite", "postgres"}
	ledgerPaths   = []string{"go", "api", "go-batch", "api-batch", "pgbench"}
	ledgerDists   = []string{"uniform", "hot"}
)

// ledgerCase is one measurement.
type ledgerCase struct {
	engine, path, dist string
	clients            int
}

func (c ledgerCase) String() string {
	return fmt.Sprintf("%s/%s/%d/%s", c.engine, c.path, c.clients, c.dist)
}

// matches reports whether every word of filter names one of c's fields.
func (c ledgerCase) matches(filter []string) bool {
	for _, w := range filter {
		if w != c.engine && w != c.path && w != c.dist && w != strconv.Itoa(c.clients) &&
			!(w == "batch" && strings.HasSuffix(c.path, "-batch")) {
			return false
		}
	}
	return true
}

// ledgerRow is a case's result.
type ledgerRow struct {
	ledgerCase
	transfers int64
	rate      float64 // transfers per second
	lat       []time.Duration
	retries   int64
	failed    int64
	failures  map[string]int64 // failed requests by reason
	notes     []string
	skipped   string
}

type ledgerOpts struct {
	accounts int
	duration time.Duration
	batch    int
	scripts  string
	logger   *slog.Logger
	progress func(string, ...any)
}

func benchLedger(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench ledger", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchLedgerUsage) }
	accounts := fs.Int("accounts", 1000, "customer accounts")
	duration := fs.Duration("duration", 10*time.Second, "length of each case")
	clientsFlag := fs.String("clients", "1,16", "concurrent clients, comma-separated")
	batch := fs.Int("batch", ledger.MaxBatchTransfers, "transfers per batch request")
	pg := fs.String("pg", "", "PostgreSQL DSN whose role may create databases")
	casesFlag := fs.String("cases", "", "run only the matching cases")
	scripts := fs.String("scripts", "", "directory of the pgbench scripts")
	if err := fs.Parse(args); err != nil {
		return err
	}
	clients, err := parseClients(*clientsFlag)
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("bench ledger: unexpected argument %q", fs.Arg(0))
	case err != nil:
		return err
	case *accounts < 2:
		return errors.New("bench ledger: -accounts must be at least 2")
	case *duration <= 0:
		return errors.New("bench ledger: -duration must be positive")
	case *batch < 1 || *batch > ledger.MaxBatchTransfers:
		return fmt.Errorf("bench ledger: -batch must be 1..%d", ledger.MaxBatchTransfers)
	case *pg != "" && !strings.HasPrefix(*pg, "postgres://") && !strings.HasPrefix(*pg, "postgresql://"):
		return errors.New("bench ledger: -pg takes a postgres:// DSN")
	}
	filters, err := parseCaseFilters(*casesFlag)
	if err != nil {
		return err
	}
	engines := []string{"sqlite"}
	if *pg != "" {
		engines = append(engines, "postgres")
	}
	var cases []ledgerCase
	for _, engine := range engines {
		for _, p := range ledgerPaths {
			if p == "pgbench" && engine != "postgres" {
				continue
			}
			for _, n := range clients {
				for _, d := range ledgerDists {
					c := ledgerCase{engine: engine, path: p, clients: n, dist: d}
					if len(filters) == 0 || slices.ContainsFunc(filters, c.matches) {
						cases = append(cases, c)
					}
				}
			}
		}
	}
	if len(cases) == 0 {
		return errors.New("bench ledger: -cases selects no case (PostgreSQL and pgbench cases need -pg)")
	}

	o := &ledgerOpts{
		accounts: *accounts, duration: *duration, batch: *batch, scripts: *scripts,
		logger:   slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		progress: func(format string, a ...any) { fmt.Fprintf(stderr, format+"\n", a...) },
	}
	// Each phase returns the rows it finished even when it fails, so that a
	// failure late in a long run still reports what came before it.
	start := time.Now()
	var rows []*ledgerRow
	var infos []string
	var runErr error
	for _, engine := range engines {
		var cs []ledgerCase
		for _, c := range cases {
			if c.engine == engine && c.path != "pgbench" {
				cs = append(cs, c)
			}
		}
		if len(cs) == 0 {
			continue
		}
		r, info, err := benchLedgerEngine(ctx, engine, *pg, o, cs)
		rows, infos = append(rows, r...), append(infos, info)
		if err != nil {
			runErr = fmt.Errorf("bench ledger: %s: %w", engine, err)
			break
		}
	}
	var pgb []ledgerCase
	for _, c := range cases {
		if c.path == "pgbench" {
			pgb = append(pgb, c)
		}
	}
	if len(pgb) > 0 && runErr == nil {
		r, info, err := benchPgbench(ctx, *pg, o, pgb)
		rows, infos = append(rows, r...), append(infos, info)
		if err != nil {
			runErr = fmt.Errorf("bench ledger: pgbench: %w", err)
		}
	}

	say := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }
	say("coffer bench ledger — %s", Version())
	say("machine:  %d CPUs (%s), GOMAXPROCS %d, %s %s/%s; whole run %.0fs", runtime.NumCPU(), cpuModel(),
		runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, time.Since(start).Seconds())
	say("books:    %d customer accounts of one custodial wallet, 10 BTC each (funded from its imports account);",
		*accounts)
	say("          transfers of 1..%d sat; uniform: two distinct random accounts, hot: account 0 on one side;",
		ledgerMaxAmount)
	say("          %s per case, batches of %d transfers, the clients in this process", *duration, *batch)
	for _, info := range infos {
		if info == "" {
			continue
		}
		say("%s", info)
	}
	say("")
	printLedgerRows(stdout, rows)
	say("")
	say("Latency is per request (a batch request carries %d transfers) and counts the requests that succeeded.", *batch)
	say("retries: transactions run again after a serialization failure, deadlock or busy database (pgbench: its")
	say("retries); failed: requests that still failed (Coffer gives up after %d attempts, pgbench after %d).",
		store.DefaultMaxAttempts, pgbenchMaxTries)
	for _, r := range rows {
		if len(r.failures) > 0 {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(r.failures)) {
				parts = append(parts, fmt.Sprintf("%d × %s", r.failures[k], k))
			}
			say("failed %s: %s", r.ledgerCase, strings.Join(parts, ", "))
		}
	}
	for _, r := range rows {
		for _, n := range r.notes {
			say("%s: %s", r.ledgerCase, n)
		}
	}
	for _, r := range rows {
		if r.skipped != "" {
			say("skipped %s: %s", r.ledgerCase, r.skipped)
		}
	}
	if runErr != nil {
		say("STOPPED: %v", runErr)
		return runErr
	}
	say("books balanced after every case: postings sum to zero (each transfer's too), every balance equals its")
	say("postings, no customer account below zero, and the transfers recorded are the transfers answered.")
	return nil
}

func parseClients(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1000 {
			return nil, fmt.Errorf("bench ledger: -clients takes client counts 1..1000, comma-separated, not %q", s)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

func parseCaseFilters(s string) ([][]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out [][]string
	for _, f := range strings.Split(s, ",") {
		words := strings.Split(strings.TrimSpace(f), "/")
		for _, w := range words {
			if _, err := strconv.Atoi(w); err == nil || w == "batch" || slices.Contains(ledgerEngines, w) ||
				slices.Contains(ledgerPaths, w) || slices.Contains(ledgerDists, w) {
				continue
			}
			return nil, fmt.Errorf("bench ledger: -cases: unknown word %q (engines %s, paths %s or batch, distributions %s, client counts)",
				w, strings.Join(ledgerEngines, ", "), strings.Join(ledgerPaths, ", "), strings.Join(ledgerDists, ", "))
		}
		out = append(out, words)
	}
	return out, nil
}

func printLedgerRows(w io.Writer, rows []*ledgerRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "engine\tpath\tclients\tdistribution\ttransfers\ttransfers/s\tp50 ms\tp99 ms\tretries\tfailed\t")
	for _, r := range rows {
		if r.skipped != "" {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\tskipped\t-\t-\t-\t-\t-\t\n", r.engine, r.path, r.clients, r.dist)
			continue
		}
		p50, p99 := "-", "-"
		if len(r.lat) > 0 {
			p50, p99 = fmt.Sprintf("%.2f", ms(quantile(r.lat, 0.5))), fmt.Sprintf("%.2f", ms(quantile(r.lat, 0.99)))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%.0f\t%s\t%s\t%d\t%d\t\n", r.engine, r.path, r.clients, r.dist,
			r.transfers, r.rate, p50, p99, r.retries, r.failed)
	}
	tw.Flush()
}

// benchTempPostgres creates a database named prefix + random hex through
// pgDSN and returns its DSN and a function dropping it.
func benchTempPostgres(ctx context.Context, pgDSN, prefix string) (string, func(), error) {
	admin, err := sql.Open("pgx", pgDSN)
	if err != nil {
		return "", nil, err
	}
	defer admin.Close()
	b := make([]byte, 6)
	rand.Read(b)
	name := prefix + hex.EncodeToString(b)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("creating a PostgreSQL database for the benchmark: %w", err)
	}
	drop := func() {
		a, err := sql.Open("pgx", pgDSN)
		if err != nil {
			return
		}
		defer a.Close()
		a.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	}
	u, err := url.Parse(pgDSN)
	if err != nil {
		drop()
		return "", nil, err
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}

// ---- The ledger ----

// ledgerEnv is a funded ledger on one database.
type ledgerEnv struct {
	o        *ledgerOpts
	db       *store.DB
	events   *events.Log
	wallets  *wallet.Service
	svc      *ledger.Service
	accounts []string // customer account ids; 0 is the hot one
	recorded int64    // internal transfers the books must hold

	api     *ledgerAPI
	apiSkip map[string]string // API path → why its cases are skipped
}

func benchLedgerEngine(ctx context.Context, engine, pgDSN string, o *ledgerOpts, cases []ledgerCase) ([]*ledgerRow, string, error) {
	var dsn string
	var cleanup func()
	if engine == "postgres" {
		var err error
		if dsn, cleanup, err = benchTempPostgres(ctx, pgDSN, "coffer_bench_ledger_"); err != nil {
			return nil, "", err
		}
	} else {
		d, err := os.MkdirTemp("", "coffer-bench-ledger-")
		if err != nil {
			return nil, "", err
		}
		dsn, cleanup = filepath.Join(d, "coffer.db"), func() { os.RemoveAll(d) }
	}
	defer cleanup()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		return nil, "", err
	}
	defer db.Close()
	if _, err := db.Migrate(ctx); err != nil {
		return nil, "", err
	}
	info := "sqlite:   a temporary file; WAL, synchronous=NORMAL, one writer at a time (BEGIN IMMEDIATE), 8 connections"
	if engine == "postgres" {
		var version, fsync, syncCommit string
		if err := db.QueryRowContext(ctx, `SELECT current_setting('server_version'), current_setting('fsync'),
			current_setting('synchronous_commit')`).Scan(&version, &fsync, &syncCommit); err != nil {
			return nil, "", err
		}
		info = fmt.Sprintf("postgres: PostgreSQL %s, fsync %s, synchronous_commit %s; a fresh database, SERIALIZABLE, 20 connections",
			version, fsync, syncCommit)
	}

	e := &ledgerEnv{o: o, db: db, apiSkip: map[string]string{}}
	defer e.closeAPI()
	o.progress("bench: %s: a custodial wallet with %d funded accounts…", engine, o.accounts)
	t0 := time.Now()
	if err := e.setup(ctx); err != nil {
		return nil, "", err
	}
	o.progress("bench:   ready in %.1fs", time.Since(t0).Seconds())
	var rows []*ledgerRow
	for _, c := range cases {
		r, err := e.run(ctx, c)
		if err != nil {
			return rows, info, fmt.Errorf("%s: %w", c, err)
		}
		rows = append(rows, r)
	}
	return rows, info, nil
}

// setup makes the services, the wallet and its funded customer accounts.
func (e *ledgerEnv) setup(ctx context.Context) error {
	params, err := chain.Lookup(chain.BTC, chain.Regtest)
	if err != nil {
		return err
	}
	var mk [keys.MasterKeySize]byte
	rand.Read(mk[:])
	e.events = events.NewLog(e.db)
	ks := keys.New(e.db, keys.StaticProvider(keys.NewMasterKey(mk)))
	e.wallets = wallet.New(e.db, params, e.events, nil, nil, wallet.Config{}, e.o.logger)
	e.svc = ledger.New(e.db, params, e.events, e.wallets, ks, nil, nil, ledger.Config{}, e.o.logger)
	cw, err := e.svc.CreateWallet(ctx, ledger.CreateWalletRequest{Label: "coffer bench ledger"})
	if err != nil {
		return err
	}

	// Accounts, eight at a time; account i is named after i so that index
	// and id stay paired.
	e.accounts = make([]string, e.o.accounts)
	errs := make([]error, 8)
	var wg sync.WaitGroup
	for w := range errs {
		wg.Go(func() {
			for i := w; i < len(e.accounts) && errs[w] == nil; i += len(errs) {
				a, err := e.svc.CreateAccount(ctx, cw.ID, ledger.CreateAccountRequest{Name: fmt.Sprintf("bench %06d", i)})
				if err != nil {
					errs[w] = err
					return
				}
				e.accounts[i] = a.ID
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}

	// Funding: the hot wallet gets one confirmed output worth every
	// account's funding (written as the follower would record it: there is
	// no chain here), import-unaccounted books it to the imports account,
	// and multi-leg transfers move it on to the accounts.
	if err := fundHotWallet(ctx, e.db, cw.ID, int64(ledgerFunding)*int64(len(e.accounts))); err != nil {
		return err
	}
	if _, err := e.svc.ImportUnaccounted(ctx, cw.ID); err != nil {
		return fmt.Errorf("importing the bench's coins: %w", err)
	}
	for lo := 0; lo < len(e.accounts); lo += ledgerFundChunk {
		chunk := e.accounts[lo:min(lo+ledgerFundChunk, len(e.accounts))]
		legs := []ledger.Leg{{Account: cw.Accounts.Imports, Amount: -amount.Amount(ledgerFunding * len(chunk))}}
		for _, id := range chunk {
			legs = append(legs, ledger.Leg{Account: id, Amount: ledgerFunding})
		}
		if _, err := e.svc.TransferLegs(ctx, ledger.LegsRequest{Legs: legs, Memo: "bench funding"},
			fmt.Sprintf("bench/funding/%d", lo)); err != nil {
			return fmt.Errorf("funding accounts: %w", err)
		}
	}
	if err := e.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM ledger_transfers WHERE kind = $1`,
		ledger.TransferInternal).Scan(&e.recorded); err != nil {
		return err
	}
	return e.checkBooks(ctx)
}

// fundHotWallet records a confirmed transaction paying total to the
// wallet's first receive address.
func fundHotWallet(ctx context.Context, db *store.DB, walletID string, total int64) error {
	var script []byte
	if err := db.QueryRowContext(ctx, `SELECT script FROM wallet_addresses WHERE wallet_id = $1 AND branch = 0 AND idx = 0`,
		walletID).Scan(&script); err != nil {
		return fmt.Errorf("the wallet's first address: %w", err)
	}
	var id [32]byte
	rand.Read(id[:])
	txid, hash, now := hex.EncodeToString(id[:]), strings.Repeat("00", 32), time.Now().Unix()
	return db.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO txs (txid, status, block_height, block_hash, block_pos, coinbase, raw, first_seen_at, updated_at)
			VALUES ($1, 'confirmed', 0, $2, 1, FALSE, $3, $4, $4)`, txid, hash, []byte{0}, now); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO tx_outputs (txid, vout, script, amount) VALUES ($1, 0, $2, $3)`, txid, script, total)
		return err
	})
}

// pick draws the indexes of a transfer's two accounts.
func pickPair(rng *mrand.Rand, n int, hot bool) (from, to int) {
	if hot {
		other := 1 + rng.IntN(n-1)
		if rng.IntN(2) == 0 {
			return 0, other
		}
		return other, 0
	}
	from = rng.IntN(n)
	return from, (from + 1 + rng.IntN(n-1)) % n
}

func (e *ledgerEnv) request(rng *mrand.Rand, hot bool) ledger.TransferRequest {
	from, to := pickPair(rng, len(e.accounts), hot)
	return ledger.TransferRequest{From: e.accounts[from], To: e.accounts[to], Amount: amount.Amount(1 + rng.Int64N(ledgerMaxAmount))}
}

// doFunc makes one request with the idempotency key key and returns how many
// transfers it made, or why it failed (a failure the benchmark counts), or
// an error that stops the benchmark.
type doFunc func(ctx context.Context, rng *mrand.Rand, key string) (transfers int, failure string, err error)

// ledgerFailure sorts an error of the ledger: conflicts that outlasted the
// retries and refusals count as failed requests; anything else stops.
func ledgerFailure(err error) (string, error) {
	if err == nil {
		return "", nil
	}
	if errors.Is(err, store.ErrConflictUnresolved) {
		return "conflict unresolved", nil
	}
	if f, ok := fault.As(err); ok {
		return f.Code, nil
	}
	// PostgreSQL refusing work it cannot track, such as "not enough
	// elements in RWConflictPool" (53200) under heavy SERIALIZABLE load.
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return "SQLSTATE " + pg.Code + ": " + pg.Message, nil
	}
	return "", err
}

func (e *ledgerEnv) run(ctx context.Context, c ledgerCase) (*ledgerRow, error) {
	row := &ledgerRow{ledgerCase: c}
	hot := c.dist == "hot"
	var do doFunc
	switch c.path {
	case "go":
		do = func(ctx context.Context, rng *mrand.Rand, key string) (int, string, error) {
			_, err := e.svc.Transfer(ctx, e.request(rng, hot), key)
			f, err := ledgerFailure(err)
			return 1, f, err
		}
	case "go-batch":
		do = func(ctx context.Context, rng *mrand.Rand, key string) (int, string, error) {
			reqs := make([]ledger.TransferRequest, e.o.batch)
			for i := range reqs {
				reqs[i] = e.request(rng, hot)
			}
			_, err := e.svc.TransferBatch(ctx, reqs, key)
			f, err := ledgerFailure(err)
			return len(reqs), f, err
		}
	case "api", "api-batch":
		if reason := e.apiReady(ctx, c.path); reason != "" {
			row.skipped = reason
			e.o.progress("bench:   %s skipped: %s", c, reason)
			return row, nil
		}
		route, n := "/v1/transfers", 1
		if c.path == "api-batch" {
			route, n = "/v1/transfers/batch", e.o.batch
		}
		do = func(ctx context.Context, rng *mrand.Rand, key string) (int, string, error) {
			status, code, _, err := e.api.post(ctx, route, key, e.apiBody(rng, hot, c.path == "api-batch"))
			if err != nil || status/100 == 2 {
				return n, "", err
			}
			return n, fmt.Sprintf("%d %s", status, code), nil
		}
	default:
		return nil, fmt.Errorf("unknown path %q", c.path)
	}

	e.o.progress("bench: %s…", c)
	deadlocks, err := e.deadlocks(ctx)
	if err != nil {
		return nil, err
	}
	before := e.db.Stats()
	load, err := runLoad(ctx, c, e.o.duration, do)
	if err != nil {
		return nil, err
	}
	if e.api != nil {
		e.api.inflight.Wait() // handlers of cancelled requests
	}
	after := e.db.Stats()
	row.transfers, row.lat, row.failures = load.transfers, load.lat, load.failures
	row.rate = float64(load.transfers) / load.elapsed.Seconds()
	row.retries = int64(after.Retries - before.Retries)
	e.recorded += load.transfers
	// A request cancelled at the cutoff made all its transfers or none: its
	// idempotency key (the API prefixes its scope) tells which.
	for _, co := range load.cutOff {
		var n int
		if err := e.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM ledger_transfers WHERE idem_key = $1 OR idem_key LIKE $2`,
			co.key, "%/"+co.key).Scan(&n); err != nil {
			return nil, err
		}
		what := fmt.Sprintf("cancelled %s after the case, nothing made", cutoffGrace(e.o.duration))
		if n > 0 {
			what = fmt.Sprintf("cancelled %s after the case, made (not counted above)", cutoffGrace(e.o.duration))
			e.recorded += int64(co.transfers)
		}
		row.failures[what]++
	}
	for _, n := range row.failures {
		row.failed += n
	}
	if err := e.checkBooks(ctx); err != nil {
		return nil, err
	}
	if row.retries > 0 && e.db.Dialect() == store.Postgres {
		time.Sleep(1100 * time.Millisecond) // backends report their statistics at most once a second
		n, err := e.deadlocks(ctx)
		if err != nil {
			return nil, err
		}
		if n -= deadlocks; n > 0 {
			row.notes = append(row.notes, fmt.Sprintf("PostgreSQL detected %d deadlocks", n))
		}
	}
	e.o.progress("bench:   %d transfers in %.1fs (%.0f/s), %d retries, %d failed; books balanced",
		row.transfers, load.elapsed.Seconds(), row.rate, row.retries, row.failed)
	return row, nil
}

// deadlocks is PostgreSQL's count of deadlocks detected in the database (0
// on SQLite).
func (e *ledgerEnv) deadlocks(ctx context.Context) (int64, error) {
	if e.db.Dialect() != store.Postgres {
		return 0, nil
	}
	var n int64
	err := e.db.QueryRowContext(ctx, `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&n)
	return n, err
}

// loadResult is what the clients of one case did.
type loadResult struct {
	transfers int64
	elapsed   time.Duration
	lat       []time.Duration // of the requests that succeeded
	failures  map[string]int64
	cutOff    []cutOff // requests cancelled at the cutoff
}

// cutOff is a request still running at the cutoff, cancelled: it may have
// committed all its transfers or none.
type cutOff struct {
	key       string
	transfers int
}

// cutoffGrace is how long after a case's end a request may still run before
// it is cancelled: a pathological case (16 concurrent batches deadlocking on
// PostgreSQL, say) would otherwise run on for minutes.
func cutoffGrace(d time.Duration) time.Duration { return max(d, 10*time.Second) }

// runLoad runs c.clients clients calling do until d has passed, each with
// its own random source seeded from the case, and waits for the last
// request; requests still running after cutoffGrace more are cancelled. The
// first error stops every client.
func runLoad(ctx context.Context, c ledgerCase, d time.Duration, do doFunc) (*loadResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	deadline := start.Add(d)
	reqCtx, reqCancel := context.WithDeadline(ctx, deadline.Add(cutoffGrace(d)))
	defer reqCancel()
	var firstErr error
	var once sync.Once
	fail := func(err error) {
		once.Do(func() { firstErr = err; cancel() })
	}
	h := fnv.New64a()
	h.Write([]byte(c.String()))
	seed := h.Sum64()
	type clientResult struct {
		transfers int64
		lat       []time.Duration
		failures  map[string]int64
		cutOff    []cutOff
	}
	results := make([]clientResult, c.clients)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			r := &results[i]
			r.failures = map[string]int64{}
			rng := mrand.New(mrand.NewPCG(benchSeed, seed+uint64(i)))
			for seq := 0; time.Now().Before(deadline) && ctx.Err() == nil; seq++ {
				key := fmt.Sprintf("bench/%s/%d/%d", c, i, seq)
				t0 := time.Now()
				n, failure, err := do(reqCtx, rng, key)
				lat := time.Since(t0)
				switch {
				case (err != nil || failure != "") && ctx.Err() == nil && errors.Is(reqCtx.Err(), context.DeadlineExceeded):
					r.cutOff = append(r.cutOff, cutOff{key: key, transfers: n})
					return
				case err != nil:
					fail(err)
					return
				case failure != "":
					r.failures[failure]++
				default:
					r.transfers += int64(n)
					r.lat = append(r.lat, lat)
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err() // the caller's context ended
	}
	if firstErr != nil {
		return nil, firstErr
	}
	out := &loadResult{elapsed: time.Since(start), failures: map[string]int64{}}
	for _, r := range results {
		out.transfers += r.transfers
		out.lat = append(out.lat, r.lat...)
		for k, v := range r.failures {
			out.failures[k] += v
		}
		out.cutOff = append(out.cutOff, r.cutOff...)
	}
	return out, nil
}

// checkBooks fails unless the books balance: postings sum to zero overall
// and per transfer, every balance equals the sum of its postings, no
// customer account is below zero, and the internal transfers recorded are
// exactly those answered.
func (e *ledgerEnv) checkBooks(ctx context.Context) error {
	var sum, unbalanced, wrong, negative, recorded int64
	err := e.db.QueryRowContext(ctx, `SELECT
		(SELECT COALESCE(SUM(amount), 0) FROM ledger_postings),
		(SELECT COUNT(*) FROM (SELECT transfer_id FROM ledger_postings GROUP BY transfer_id HAVING SUM(amount) <> 0) u),
		(SELECT COUNT(*) FROM ledger_accounts a
			LEFT JOIN (SELECT account_id, SUM(amount) AS s FROM ledger_postings GROUP BY account_id) p ON p.account_id = a.id
			WHERE a.balance <> COALESCE(p.s, 0)),
		(SELECT COUNT(*) FROM ledger_accounts WHERE kind = 'customer' AND balance - held < 0),
		(SELECT COUNT(*) FROM ledger_transfers WHERE kind = $1)`, ledger.TransferInternal).
		Scan(&sum, &unbalanced, &wrong, &negative, &recorded)
	switch {
	case err != nil:
		return fmt.Errorf("checking the books: %w", err)
	case sum != 0:
		return fmt.Errorf("books NOT balanced: the postings sum to %d", sum)
	case unbalanced != 0:
		return fmt.Errorf("books NOT balanced: %d transfers' postings do not sum to zero", unbalanced)
	case wrong != 0:
		return fmt.Errorf("books NOT balanced: %d accounts' balances differ from their postings", wrong)
	case negative != 0:
		return fmt.Errorf("books NOT balanced: %d customer accounts below zero", negative)
	case recorded != e.recorded:
		return fmt.Errorf("books NOT balanced: %d internal transfers recorded, %d answered", recorded, e.recorded)
	}
	return nil
}

// ---- The HTTP API ----

// ledgerAPI is the API server on a loopback port and a client of it.
type ledgerAPI struct {
	srv      *httptest.Server
	client   *http.Client
	key      string         // admin API key
	inflight sync.WaitGroup // requests being handled
}

// apiBody is the body of POST /v1/transfers, or of /v1/transfers/batch
// when batch is set: ledger.TransferRequest is the API's transfer object.
func (e *ledgerEnv) apiBody(rng *mrand.Rand, hot, batch bool) []byte {
	if !batch {
		b, _ := json.Marshal(e.request(rng, hot))
		return b
	}
	ts := make([]ledger.TransferRequest, e.o.batch)
	for i := range ts {
		ts[i] = e.request(rng, hot)
	}
	b, _ := json.Marshal(map[string][]ledger.TransferRequest{"transfers": ts})
	return b
}

// apiReady starts the API server once and probes path's route once with a
// real request; it returns why the path's cases must be skipped, or "".
func (e *ledgerEnv) apiReady(ctx context.Context, path string) string {
	if reason, ok := e.apiSkip[path]; ok {
		return reason
	}
	if e.api == nil {
		plaintext, _, err := auth.CreateAPIKey(ctx, e.db, auth.ScopeAdmin, "coffer bench ledger")
		if err != nil {
			return "creating an API key: " + err.Error()
		}
		h := api.NewServer(api.Deps{DB: e.db, Events: e.events, Wallets: e.wallets, Custody: e.svc,
			Version: Version(), Coin: "btc", Network: "regtest", Logger: slog.New(slog.DiscardHandler)})
		a := &ledgerAPI{
			client: &http.Client{Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024,
				IdleConnTimeout: time.Minute}},
			key: plaintext,
		}
		a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.inflight.Add(1)
			defer a.inflight.Done()
			h.ServeHTTP(w, r)
		}))
		e.api = a
	}
	route, n := "/v1/transfers", 1
	var body []byte
	rng := mrand.New(mrand.NewPCG(benchSeed, 1))
	if path == "api-batch" {
		route, n = "/v1/transfers/batch", 2
		r1, r2 := e.request(rng, false), e.request(rng, false)
		r1.Memo, r2.Memo = "bench probe", "bench probe"
		body, _ = json.Marshal(map[string][]ledger.TransferRequest{"transfers": {r1, r2}})
	} else {
		r := e.request(rng, false)
		r.Memo = "bench probe"
		body, _ = json.Marshal(r)
	}
	status, code, msg, err := e.api.post(ctx, route, "bench/probe"+route, body)
	reason := ""
	switch {
	case err != nil:
		reason = fmt.Sprintf("POST %s: %v", route, err)
	case status/100 == 2:
		e.recorded += int64(n)
	case (status == http.StatusNotFound && strings.HasPrefix(msg, "no such endpoint")) || status == http.StatusMethodNotAllowed:
		reason = fmt.Sprintf("POST %s is not served by this build (%d %s)", route, status, code)
	default:
		reason = fmt.Sprintf("POST %s answered a probe transfer with %d %s: %s", route, status, code, msg)
	}
	e.apiSkip[path] = reason
	return reason
}

// post sends an authenticated POST with an Idempotency-Key and returns the
// status and, for errors, the error body's code and message.
func (a *ledgerAPI) post(ctx context.Context, route, key string, body []byte) (status int, code, msg string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.srv.URL+route, bytes.NewReader(body))
	if err != nil {
		return 0, "", "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+a.key)
	req.Header.Set(api.IdempotencyKeyHeader, key)
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", "", err
	}
	if resp.StatusCode/100 != 2 {
		var er api.ErrorResponse
		if json.Unmarshal(b, &er) == nil {
			code, msg = er.Error.Code, er.Error.Message
		}
	}
	return resp.StatusCode, code, msg, nil
}

func (e *ledgerEnv) closeAPI() {
	if e.api != nil {
		e.api.client.CloseIdleConnections()
		e.api.srv.Close()
	}
}

// ---- pgbench ----

var (
	pgbenchTPS       = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	pgbenchProcessed = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	pgbenchFailed    = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	pgbenchRetries   = regexp.MustCompile(`(?m)^total number of retries: (\d+)`)
)

// benchPgbench runs scripts/pgbench/transfer.sql with pgbench on a fresh
// database of the same server. Without pgbench, psql or the scripts, its
// cases are skipped, saying why.
func benchPgbench(ctx context.Context, pgDSN string, o *ledgerOpts, cases []ledgerCase) ([]*ledgerRow, string, error) {
	skipAll := func(reason string) ([]*ledgerRow, string, error) {
		o.progress("bench: pgbench skipped: %s", reason)
		var rows []*ledgerRow
		for _, c := range cases {
			rows = append(rows, &ledgerRow{ledgerCase: c, skipped: reason})
		}
		return rows, "pgbench:  skipped: " + reason, nil
	}
	pgbench, err1 := exec.LookPath("pgbench")
	psql, err2 := exec.LookPath("psql")
	if err1 != nil || err2 != nil {
		return skipAll("pgbench and psql must be on PATH (Debian: apt-get install postgresql-client)")
	}
	dir := o.scripts
	if dir == "" {
		dir = findPgbenchScripts()
	}
	transferSQL, setupSQL := filepath.Join(dir, "transfer.sql"), filepath.Join(dir, "setup.sql")
	for _, f := range []string{transferSQL, setupSQL} {
		if _, err := os.Stat(f); err != nil {
			return skipAll(fmt.Sprintf("no %s (run from the repository or give -scripts)", f))
		}
	}
	out, err := exec.CommandContext(ctx, pgbench, "--version").Output()
	if err != nil {
		return nil, "", fmt.Errorf("pgbench --version: %w", err)
	}
	version := strings.TrimSpace(string(out))

	dsn, drop, err := benchTempPostgres(ctx, pgDSN, "coffer_bench_pgbench_")
	if err != nil {
		return nil, "", err
	}
	defer drop()
	env := append(os.Environ(), "PGOPTIONS="+strings.TrimSpace(os.Getenv("PGOPTIONS")+" -c default_transaction_isolation=serializable"))
	o.progress("bench: pgbench: %s with %d accounts…", setupSQL, o.accounts)
	cmd := exec.CommandContext(ctx, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "accounts="+strconv.Itoa(o.accounts),
		"-f", setupSQL, dsn)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("psql -f %s: %w\n%s", setupSQL, err, out)
	}
	cmd = exec.CommandContext(ctx, psql, "-X", "-At", "-c", "SHOW default_transaction_isolation", dsn)
	cmd.Env = env
	if out, err := cmd.Output(); err != nil || strings.TrimSpace(string(out)) != "serializable" {
		return nil, "", fmt.Errorf("PGOPTIONS did not make sessions serializable (%q, %v)", strings.TrimSpace(string(out)), err)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, "", err
	}
	defer db.Close()

	secs := max(1, int((o.duration+time.Second/2)/time.Second))
	shown := transferSQL
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, transferSQL); err == nil {
			shown = rel
		}
	}
	info := fmt.Sprintf("pgbench:  %s; %s (2 UPDATEs + 1 INSERT), SERIALIZABLE\n"+
		"          through PGOPTIONS, --max-tries %d, -j min(clients, 2), -T %d; a fresh database on the same server",
		version, shown, pgbenchMaxTries, secs)
	var rows []*ledgerRow
	for _, c := range cases {
		o.progress("bench: %s…", c)
		var before int64
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM bench_postings`).Scan(&before); err != nil {
			return rows, info, err
		}
		logDir, err := os.MkdirTemp("", "coffer-bench-pgbench-")
		if err != nil {
			return rows, info, err
		}
		hot := "0"
		if c.dist == "hot" {
			hot = "1"
		}
		cmd := exec.CommandContext(ctx, pgbench, "-n", "-f", transferSQL,
			"-D", "accounts="+strconv.Itoa(o.accounts), "-D", "hot="+hot,
			"-c", strconv.Itoa(c.clients), "-j", strconv.Itoa(min(c.clients, 2)), "-T", strconv.Itoa(secs),
			"--max-tries="+strconv.Itoa(pgbenchMaxTries), "-l", "--log-prefix="+filepath.Join(logDir, "tx"), dsn)
		cmd.Env = env
		out, runErr := cmd.CombinedOutput()
		row := &ledgerRow{ledgerCase: c}
		row.lat, err = pgbenchLatencies(logDir)
		os.RemoveAll(logDir)
		if err != nil {
			return rows, info, err
		}
		if submatch(pgbenchTPS, out) == "" || submatch(pgbenchProcessed, out) == "" {
			if runErr == nil {
				return rows, info, fmt.Errorf("cannot read pgbench's report:\n%s", out)
			}
			// No report: nothing to show, but the books must still balance.
			row.skipped = fmt.Sprintf("pgbench failed (%v): %s", runErr, firstPgbenchError(out))
			o.progress("bench:   %s\n%s", row.skipped, out)
			if err := checkPgbenchBooks(ctx, db, o.accounts, -1); err != nil {
				return rows, info, fmt.Errorf("%s: %w", c, err)
			}
			rows = append(rows, row)
			continue
		}
		row.rate, _ = strconv.ParseFloat(submatch(pgbenchTPS, out), 64)
		row.transfers, _ = strconv.ParseInt(submatch(pgbenchProcessed, out), 10, 64)
		row.failed, _ = strconv.ParseInt(submatch(pgbenchFailed, out), 10, 64)
		row.retries, _ = strconv.ParseInt(submatch(pgbenchRetries, out), 10, 64)
		if row.failed > 0 {
			row.failures = map[string]int64{"serialization failure or deadlock after retries": row.failed}
		}
		if runErr != nil {
			// pgbench aborts a client on an error it does not retry, such as
			// "not enough elements in RWConflictPool"; the others go on.
			aborted := bytes.Count(out, []byte(" aborted in command "))
			row.notes = append(row.notes, fmt.Sprintf("pgbench aborted %d clients (%v): %s", aborted, runErr, firstPgbenchError(out)))
			o.progress("bench:   pgbench aborted %d clients: %s", aborted, firstPgbenchError(out))
		}
		if err := checkPgbenchBooks(ctx, db, o.accounts, before+row.transfers); err != nil {
			return rows, info, fmt.Errorf("%s: %w", c, err)
		}
		o.progress("bench:   %d transfers (%.0f/s), %d retries, %d failed; books balanced",
			row.transfers, row.rate, row.retries, row.failed)
		rows = append(rows, row)
	}
	return rows, info, nil
}

// firstPgbenchError is the first error pgbench printed.
func firstPgbenchError(out []byte) string {
	for line := range strings.Lines(string(out)) {
		if _, msg, ok := strings.Cut(line, "ERROR:"); ok {
			return strings.TrimSpace(msg)
		}
		if _, msg, ok := strings.Cut(line, "error:"); ok {
			return strings.TrimSpace(msg)
		}
	}
	return "no error message"
}

func submatch(re *regexp.Regexp, b []byte) string {
	if m := re.FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return ""
}

// pgbenchLatencies reads the per-transaction logs (-l): the third field is
// the latency in microseconds, or "failed".
func pgbenchLatencies(dir string) ([]time.Duration, error) {
	files, err := filepath.Glob(filepath.Join(dir, "tx.*"))
	if err != nil {
		return nil, err
	}
	var out []time.Duration
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 3 {
				continue
			}
			if us, err := strconv.ParseInt(fields[2], 10, 64); err == nil {
				out = append(out, time.Duration(us)*time.Microsecond)
			}
		}
		err = sc.Err()
		fh.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// checkPgbenchBooks fails unless pgbench's books balance: every balance is
// its funding plus what it received less what it sent, the total is
// unchanged, and there are as many postings as pgbench reported transfers
// (unless postings is -1).
func checkPgbenchBooks(ctx context.Context, db *sql.DB, accounts int, postings int64) error {
	var n, total, wrong int64
	err := db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM bench_postings),
		(SELECT COALESCE(SUM(balance), 0) FROM bench_accounts),
		(SELECT COUNT(*) FROM bench_accounts a
			LEFT JOIN (SELECT id, SUM(d) AS s FROM (SELECT from_id AS id, -amount AS d FROM bench_postings
				UNION ALL SELECT to_id, amount FROM bench_postings) x GROUP BY id) p ON p.id = a.id
			WHERE a.balance <> $1 + COALESCE(p.s, 0))`, ledgerFunding).Scan(&n, &total, &wrong)
	switch {
	case err != nil:
		return fmt.Errorf("checking pgbench's books: %w", err)
	case total != int64(accounts)*ledgerFunding:
		return fmt.Errorf("pgbench's books NOT balanced: the balances sum to %d, not %d", total, int64(accounts)*ledgerFunding)
	case wrong != 0:
		return fmt.Errorf("pgbench's books NOT balanced: %d balances differ from their postings", wrong)
	case postings >= 0 && n != postings:
		return fmt.Errorf("pgbench's books NOT balanced: %d postings, pgbench reported %d transfers in all", n, postings)
	}
	return nil
}

// findPgbenchScripts looks for scripts/pgbench in the working directory and
// the directories above it.
func findPgbenchScripts() string {
	const rel = "scripts/pgbench"
	dir, err := os.Getwd()
	if err != nil {
		return rel
	}
	for {
		if fi, err := os.Stat(filepath.Join(dir, rel, "transfer.sql")); err == nil && !fi.IsDir() {
			return filepath.Join(dir, rel)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return rel
		}
		dir = parent
	}
}

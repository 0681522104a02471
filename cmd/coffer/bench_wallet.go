package main

// coffer bench wallet: the watch-only wallet service's figures. History
// recovery runs on a regtest btcd chain built for the purpose (compact block
// filters against full blocks); listing UTXOs and paging history run on
// synthetic wallets written straight into the database, far larger than a
// regtest chain built in minutes could make them. Every measurement checks
// its result.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/cfilter"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/follow"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/regtest"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/wallet"
)

const benchWalletUsage = `Usage:
  coffer bench wallet [flags]   time the wallet service: history recovery on a
                                built regtest chain (compact block filters and
                                full blocks), listing UTXOs and paging history
                                on large synthetic wallets

Flags of bench wallet:
  -blocks N    blocks to build after btcd's 440 pre-mined ones (default 2000;
               0 skips the recovery benchmark)
  -txs N       wallet transactions among them, paying receive index 0, 1, …
               in order (default 1000)
  -group N     wallet payments per paying block (default 1: -txs blocks pay
               the wallet, spread evenly)
  -pad N       other transactions per block, 10 outputs each (default 5)
  -utxos N     unspent outputs of the synthetic UTXO wallet (default 200000;
               0 skips)
  -history N   transactions of the synthetic history wallet (default 100000;
               0 skips)
  -pages N     random deep history pages timed, besides the full walk (default 1000)
  -runs N      timed UTXO and balance calls (default 5)
  -pg DSN      also run on PostgreSQL; each benchmark gets a fresh database
               created through DSN (its role needs CREATEDB) and dropped after
`

// Recovery chain shape.
const (
	benchPreMine     = 440 // btcd regtest activates segwit at 432
	benchPadOutputs  = 10  // outputs of each padding transaction
	benchWalletSeed  = "coffer bench wallet"
	benchPayBase     = 10_000 // sat; wallet payment j is benchPayBase + 7*j
	synthRecvAddrs   = 2_400  // receive addresses the synthetic wallets spread over
	synthChangeAddrs = 600    // change addresses
	historyPageSize  = 50
	benchGap         = 20 // the wallet service's default gap limit
)

func benchWallet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench wallet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchWalletUsage) }
	blocks := fs.Int("blocks", 2000, "blocks to build after the pre-mine (0 skips recovery)")
	txs := fs.Int("txs", 1000, "wallet transactions in them")
	group := fs.Int("group", 1, "wallet payments per paying block")
	pad := fs.Int("pad", 5, "other transactions per block")
	utxos := fs.Int("utxos", 200_000, "UTXOs of the synthetic UTXO wallet (0 skips)")
	history := fs.Int("history", 100_000, "transactions of the synthetic history wallet (0 skips)")
	pages := fs.Int("pages", 1000, "random deep history pages timed")
	runs := fs.Int("runs", 5, "timed UTXO and balance calls")
	pg := fs.String("pg", "", "PostgreSQL DSN whose role may create databases")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("bench wallet: unexpected argument %q", fs.Arg(0))
	case *blocks < 0 || *txs < 0 || *pad < 0 || *utxos < 0 || *history < 0:
		return errors.New("bench wallet: -blocks, -txs, -pad, -utxos and -history must not be negative")
	case *blocks > 0 && (*txs < 1 || *group < 1 || (*txs+*group-1) / *group > *blocks):
		return errors.New("bench wallet: -txs and -group must be at least 1, and -txs/-group at most -blocks")
	case *pages < 1 || *runs < 1:
		return errors.New("bench wallet: -pages and -runs must be at least 1")
	case *pg != "" && !strings.HasPrefix(*pg, "postgres://") && !strings.HasPrefix(*pg, "postgresql://"):
		return errors.New("bench wallet: -pg takes a postgres:// DSN")
	}
	progress := func(format string, a ...any) { fmt.Fprintf(stderr, format+"\n", a...) }
	say := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }
	engines := []string{"sqlite"}
	if *pg != "" {
		engines = append(engines, "postgres")
	}
	params, err := chain.Lookup(chain.BTC, chain.Regtest)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	start := time.Now()

	var rec *recoveryReport
	if *blocks > 0 {
		if rec, err = benchRecoveryAll(ctx, engines, *pg, *blocks, *txs, *group, *pad, logger, progress); err != nil {
			return err
		}
	}
	var utxoRows []utxoRow
	var utxoNote string
	if *utxos > 0 {
		for _, engine := range engines {
			rows, note, err := benchUTXOs(ctx, engine, *pg, params, *utxos, *runs, logger, progress)
			if err != nil {
				return fmt.Errorf("bench wallet: UTXOs on %s: %w", engine, err)
			}
			utxoRows, utxoNote = append(utxoRows, rows...), note
		}
	}
	var histRows []histRow
	var histNote string
	if *history > 0 {
		for _, engine := range engines {
			rows, note, err := benchHistory(ctx, engine, *pg, params, *history, *pages, logger, progress)
			if err != nil {
				return fmt.Errorf("bench wallet: history on %s: %w", engine, err)
			}
			histRows, histNote = append(histRows, rows...), note
		}
	}

	say("coffer bench wallet — %s", Version())
	say("machine:  %d CPUs (%s), GOMAXPROCS %d, %s %s/%s; whole run %.0fs", runtime.NumCPU(), cpuModel(),
		runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, time.Since(start).Seconds())
	if rec != nil {
		say("")
		say("Register + recover (birthday 0, follower already at the tip; until status ready):")
		say("chain:    %s", rec.chain)
		for _, s := range rec.scans {
			say("scan only (node side, no database): %s", s)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "engine\tmode\tblocks\twallet txs\tseconds\tblocks/s\tfollower to tip s\t")
		for _, r := range rec.rows {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.2f\t%.0f\t%.1f\t\n", r.engine, r.mode, r.blocks, r.txs,
				r.wall.Seconds(), float64(r.blocks)/r.wall.Seconds(), r.follower.Seconds())
		}
		tw.Flush()
	}
	if utxoRows != nil {
		say("")
		say("List UTXOs (goal < 1 s): %s", utxoNote)
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "engine\tcall\tresult\truns\tmin s\tmedian s\tmax s\t")
		for _, r := range utxoRows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.3f\t%.3f\t%.3f\t\n", r.engine, r.call, r.result, len(r.times),
				quantile(r.times, 0).Seconds(), quantile(r.times, 0.5).Seconds(), quantile(r.times, 1).Seconds())
		}
		tw.Flush()
	}
	if histRows != nil {
		say("")
		say("History page of %d, details=false (goal p50 < 20 ms): %s", historyPageSize, histNote)
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "engine\tpages\trequests\tp50 ms\tp99 ms\tmax ms\t")
		for _, r := range histRows {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f\t%.2f\t%.2f\t\n", r.engine, r.what, len(r.times),
				ms(quantile(r.times, 0.5)), ms(quantile(r.times, 0.99)), ms(quantile(r.times, 1)))
		}
		tw.Flush()
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// quantile is the q-quantile (nearest rank) of ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// benchDatabase opens a fresh, migrated database of engine: a temporary
// SQLite file, or a PostgreSQL database created through pgDSN.
func benchDatabase(ctx context.Context, engine, pgDSN string) (*store.DB, func(), error) {
	var dsn string
	var cleanup func()
	if engine == "postgres" {
		admin, err := sql.Open("pgx", pgDSN)
		if err != nil {
			return nil, nil, err
		}
		defer admin.Close()
		b := make([]byte, 6)
		rand.Read(b)
		name := "coffer_bench_wallet_" + hex.EncodeToString(b)
		if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
			return nil, nil, fmt.Errorf("creating a PostgreSQL database for the benchmark: %w", err)
		}
		u, err := url.Parse(pgDSN)
		if err != nil {
			return nil, nil, err
		}
		u.Path = "/" + name
		dsn = u.String()
		cleanup = func() {
			a, err := sql.Open("pgx", pgDSN)
			if err != nil {
				return
			}
			defer a.Close()
			a.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		}
	} else {
		d, err := os.MkdirTemp("", "coffer-bench-wallet-")
		if err != nil {
			return nil, nil, err
		}
		dsn = filepath.Join(d, "coffer.db")
		cleanup = func() { os.RemoveAll(d) }
	}
	db, err := store.Open(ctx, dsn)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	if _, err := db.Migrate(ctx); err != nil {
		db.Close()
		cleanup()
		return nil, nil, err
	}
	return db, func() { db.Close(); cleanup() }, nil
}

// benchAccount is a BIP84 account held by the benchmark: its keys come from
// hdkeychain, not from Coffer's descriptor code, so payments to them check
// that the wallet derives the same scripts.
type benchAccount struct {
	desc   string                     // wpkh([fp/84h/1h/Nh]tpub…/<0;1>/*)
	branch [2]*hdkeychain.ExtendedKey // the account's public …/0 and …/1
}

func newBenchAccount(account uint32) (*benchAccount, error) {
	seed := sha256.Sum256([]byte(benchWalletSeed))
	master, err := hdkeychain.NewMaster(seed[:], &chaincfg.RegressionNetParams)
	if err != nil {
		return nil, err
	}
	pub, err := master.ECPubKey()
	if err != nil {
		return nil, err
	}
	fp := btcutil.Hash160(pub.SerializeCompressed())[:4]
	k := master
	for _, step := range []uint32{84, 1, account} {
		if k, err = k.Derive(hdkeychain.HardenedKeyStart + step); err != nil {
			return nil, err
		}
	}
	acct, err := k.Neuter()
	if err != nil {
		return nil, err
	}
	a := &benchAccount{desc: fmt.Sprintf("wpkh([%x/84h/1h/%dh]%s/<0;1>/*)", fp, account, acct)}
	for b := range 2 {
		if a.branch[b], err = acct.Derive(uint32(b)); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// script is the P2WPKH script of index i on branch (0 receive, 1 change).
func (a *benchAccount) script(branch int, i uint32) ([]byte, error) {
	k, err := a.branch[branch].Derive(i)
	if err != nil {
		return nil, err
	}
	pub, err := k.ECPubKey()
	if err != nil {
		return nil, err
	}
	return append([]byte{0x00, 0x14}, btcutil.Hash160(pub.SerializeCompressed())...), nil
}

// ---- Register + recover ----

type recoveryRow struct {
	engine, mode string
	blocks       int64 // heights scanned, 0..tip
	txs          int
	wall         time.Duration
	follower     time.Duration // the follower's sync to the tip, before registering
}

type recoveryReport struct {
	chain string
	scans []string // node-side scans
	rows  []recoveryRow
}

// recoveryChain is what the built chain holds for the wallet.
type recoveryChain struct {
	acct    *benchAccount
	tip     int64
	tipHash string
	txids   map[string]bool // the wallet's transactions
	sum     int64           // paid to the wallet
	paying  int             // blocks paying it
	scripts [][]byte        // its gap window once recovered
}

func benchRecoveryAll(ctx context.Context, engines []string, pgDSN string, blocks, txs, group, pad int,
	logger *slog.Logger, progress func(string, ...any)) (*recoveryReport, error) {
	progress("bench: starting a regtest btcd…")
	n, err := regtest.Start(ctx, regtest.Options{Kind: regtest.KindBtcd, PreMine: benchPreMine,
		Logf: func(format string, a ...any) { progress(format, a...) }})
	if err != nil {
		return nil, fmt.Errorf("starting regtest btcd: %w", err)
	}
	defer n.Stop()
	rpc := n.RPC()
	rpc.Timeout = 5 * time.Minute
	client, err := node.New(rpc)
	if err != nil {
		return nil, err
	}
	built := time.Now()
	rc, others, err := buildRecoveryChain(ctx, n, client, blocks, txs, group, pad, progress)
	if err != nil {
		return nil, err
	}
	rep := &recoveryReport{chain: fmt.Sprintf("heights 0..%d (%d pre-mined, %d built); %d wallet txs in %d blocks, %d others with %d outputs each; built in %.1fs",
		rc.tip, benchPreMine, blocks, len(rc.txids), rc.paying, others, benchPadOutputs, time.Since(built).Seconds())}

	// The node side alone: the scan recovery does, with the wallet's final
	// scripts and no database work.
	progress("bench: scanning the chain without a database…")
	for _, full := range []bool{false, true} {
		line, err := nodeScan(ctx, client, n.Chain(), rc, full)
		if err != nil {
			return nil, err
		}
		rep.scans = append(rep.scans, line)
	}
	for _, engine := range engines {
		for _, full := range []bool{false, true} {
			mode := "filters"
			if full {
				mode = "full blocks"
			}
			progress("bench: recovery on %s with %s…", engine, mode)
			r, err := measureRecovery(ctx, engine, pgDSN, rpc, n.Chain(), rc, full, logger)
			if err != nil {
				return nil, fmt.Errorf("bench wallet: recovery on %s with %s: %w", engine, mode, err)
			}
			r.engine, r.mode = engine, mode
			rep.rows = append(rep.rows, *r)
			progress("bench:   %.2fs", r.wall.Seconds())
		}
	}
	return rep, nil
}

// buildRecoveryChain mines blocks on n, paying the wallet's receive indexes
// 0..txs-1 in order, group of them in each paying block, the paying blocks
// spread evenly over the chain, and pad other transactions to random keys in
// every block.
func buildRecoveryChain(ctx context.Context, n *regtest.Node, client *node.Client, blocks, txs, group, pad int,
	progress func(string, ...any)) (*recoveryChain, int, error) {
	acct, err := newBenchAccount(0)
	if err != nil {
		return nil, 0, err
	}
	rc := &recoveryChain{acct: acct, txids: map[string]bool{}}
	rng := mrand.New(mrand.NewPCG(benchSeed, uint64(blocks)))
	progress("bench: building %d blocks with %d wallet payments and %d other txs per block…", blocks, txs, pad)
	start := time.Now()
	paid, others := 0, 0
	payingBlocks := (txs + group - 1) / group
	for b := 0; b < blocks; b++ {
		if paid < min(txs, (b+1)*payingBlocks/blocks*group) {
			rc.paying++
		}
		for ; paid < min(txs, (b+1)*payingBlocks/blocks*group); paid++ {
			script, err := acct.script(0, uint32(paid))
			if err != nil {
				return nil, 0, err
			}
			amount := int64(benchPayBase + 7*paid)
			txid, err := n.SendMany(ctx, []regtest.Output{{PkScript: script, Amount: amount}})
			if err != nil {
				return nil, 0, fmt.Errorf("bench: wallet payment %d: %w", paid, err)
			}
			rc.txids[txid] = true
			rc.sum += amount
		}
		for range pad {
			outs := make([]regtest.Output, benchPadOutputs)
			for i := range outs {
				outs[i] = regtest.Output{PkScript: randomP2WPKH(rng), Amount: minPayment + rng.Int64N(maxPayment-minPayment+1)}
			}
			if _, err := n.SendMany(ctx, outs); err != nil {
				return nil, 0, fmt.Errorf("bench: padding in block %d: %w", b, err)
			}
			others++
		}
		if _, err := n.Mine(ctx, 1); err != nil {
			return nil, 0, err
		}
		if err := checkMempoolEmpty(ctx, client, int64(benchPreMine+b+1)); err != nil {
			return nil, 0, err
		}
		if (b+1)%500 == 0 {
			progress("bench: built %d/%d blocks, %.1fs", b+1, blocks, time.Since(start).Seconds())
		}
	}
	if paid != txs {
		return nil, 0, fmt.Errorf("bench: paid the wallet %d times, not %d", paid, txs)
	}
	for branch, count := range []int{txs + benchGap, benchGap} {
		for i := range count {
			script, err := acct.script(branch, uint32(i))
			if err != nil {
				return nil, 0, err
			}
			rc.scripts = append(rc.scripts, script)
		}
	}
	if rc.tip, err = client.GetBlockCount(ctx); err != nil {
		return nil, 0, err
	}
	if rc.tipHash, err = client.GetBlockHash(ctx, rc.tip); err != nil {
		return nil, 0, err
	}
	return rc, others, nil
}

// nodeScan runs the scan recovery makes over the whole chain with the
// wallet's final scripts, handing blocks to nothing.
func nodeScan(ctx context.Context, client *node.Client, params *chain.Params, rc *recoveryChain, fullBlocks bool) (string, error) {
	sc := &cfilter.Scanner{Client: client, Params: params}
	mode := "full blocks"
	if !fullBlocks {
		sc.Filters, mode = cfilter.New(client), "filters"
	}
	start := time.Now()
	st, err := sc.Scan(ctx, 0, rc.tip, func() [][]byte { return rc.scripts },
		func(int64, string, *wire.MsgBlock) error { return nil }, nil)
	if err != nil {
		return "", fmt.Errorf("scanning with %s: %w", mode, err)
	}
	if !fullBlocks && !st.UsedFilters {
		return "", errors.New("btcd serves no compact block filters")
	}
	if int(st.Matched) < rc.paying {
		return "", fmt.Errorf("scanning with %s matched %d blocks; %d pay the wallet", mode, st.Matched, rc.paying)
	}
	d := time.Since(start)
	return fmt.Sprintf("%-11s %d heights in %.2fs (%.0f/s), %d blocks downloaded, %d matched",
		mode+":", st.Heights, d.Seconds(), float64(st.Heights)/d.Seconds(), st.Fetched, st.Matched), nil
}

// measureRecovery syncs a follower on a fresh database to the tip, then
// registers the wallet and times it until it is ready, and checks its
// history and balance.
func measureRecovery(ctx context.Context, engine, pgDSN string, rpc node.Config, params *chain.Params, rc *recoveryChain,
	fullBlocks bool, logger *slog.Logger) (*recoveryRow, error) {
	db, done, err := benchDatabase(ctx, engine, pgDSN)
	if err != nil {
		return nil, err
	}
	defer done()
	client, err := node.New(rpc)
	if err != nil {
		return nil, err
	}
	log := events.NewLog(db)
	f := follow.New(db, client, params, log, follow.Config{PollInterval: 50 * time.Millisecond}, logger)
	ws := wallet.New(db, params, log, client, f, wallet.Config{FullBlocks: fullBlocks}, logger)
	f.SetWatcher(ws)

	r := &recoveryRow{blocks: rc.tip + 1, txs: len(rc.txids)}
	start := time.Now()
	for attempt := 0; f.Status().SyncedHash != rc.tipHash; attempt++ {
		if attempt == 5 {
			return nil, fmt.Errorf("follower not at the tip after %d syncs (at %d)", attempt, f.Status().SyncedHeight)
		}
		if err := f.Sync(ctx); err != nil {
			return nil, err
		}
	}
	r.follower = time.Since(start)

	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Go(func() { f.Run(runCtx) })
	wg.Go(func() { ws.Run(runCtx) })

	zero := int64(0)
	start = time.Now()
	w, _, err := ws.Register(ctx, wallet.RegisterRequest{Descriptor: rc.acct.desc, BirthdayHeight: &zero})
	if err != nil {
		return nil, err
	}
	deadline := start.Add(10 * time.Minute)
	for w.Status != wallet.StatusReady {
		if w.Status == wallet.StatusError {
			return nil, fmt.Errorf("wallet recovery failed: %s", w.Error)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("wallet not ready after 10 minutes (%s, scanned to %d)", w.Status, w.ScanHeight)
		}
		time.Sleep(5 * time.Millisecond)
		if w, err = ws.Get(ctx, w.ID); err != nil {
			return nil, err
		}
	}
	r.wall = time.Since(start)

	// The wallet must hold exactly the payments made to it.
	seen := map[string]bool{}
	for cursor := ""; ; {
		page, err := ws.Transactions(ctx, w.ID, cursor, wallet.MaxPageSize, false)
		if err != nil {
			return nil, err
		}
		for _, t := range page.Transactions {
			if !rc.txids[t.Txid] || seen[t.Txid] || t.Status != "confirmed" {
				return nil, fmt.Errorf("history has %s (%s), not one of the wallet's payments or twice", t.Txid, t.Status)
			}
			seen[t.Txid] = true
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	if len(seen) != len(rc.txids) {
		return nil, fmt.Errorf("history has %d transactions, want %d", len(seen), len(rc.txids))
	}
	b, err := ws.Balance(ctx, w.ID)
	if err != nil {
		return nil, err
	}
	if int64(b.Confirmed) != rc.sum || int64(b.Total) != rc.sum {
		return nil, fmt.Errorf("balance confirmed %d, total %d; want %d paid", b.Confirmed, b.Total, rc.sum)
	}
	return r, nil
}

// ---- Synthetic wallets ----

// synthWallet is a synthetic wallet written into the database.
type synthWallet struct {
	id      string
	txs     int   // transactions in its history
	utxos   int   // unspent outputs
	balance int64 // their sum
	addrs   int
	tip     int64
	blocks  int64 // heights holding its transactions
}

// buildSynthWallet registers a wallet and writes its history straight into
// the database: confirmed transactions, one to six per block, each paying
// the wallet one output on one of a few thousand of its real addresses;
// every tenth transaction spends the wallet's output of the ninth before
// it. It stops once the wallet has wantUTXOs unspent outputs, or wantTxs
// transactions. Transactions are real serialized transactions with their
// own txids; the inputs paying the wallet spend outputs unknown to Coffer.
func buildSynthWallet(ctx context.Context, db *store.DB, params *chain.Params, acct *benchAccount,
	wantUTXOs, wantTxs int, logger *slog.Logger) (*synthWallet, error) {
	svc := wallet.New(db, params, events.NewLog(db), nil, nil, wallet.Config{}, logger)
	zero := int64(0)
	w, _, err := svc.Register(ctx, wallet.RegisterRequest{Descriptor: acct.desc, BirthdayHeight: &zero})
	if err != nil {
		return nil, err
	}
	sw := &synthWallet{id: w.ID}

	// Addresses: derived here, after checking that they are the ones the
	// wallet derived itself on registering.
	rows, err := db.QueryContext(ctx, `SELECT branch, idx, script FROM wallet_addresses WHERE wallet_id = $1`, w.ID)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var branch int
		var idx uint32
		var got []byte
		if err := rows.Scan(&branch, &idx, &got); err != nil {
			rows.Close()
			return nil, err
		}
		if want, err := acct.script(branch, idx); err != nil || !bytes.Equal(got, want) {
			rows.Close()
			return nil, fmt.Errorf("the wallet derived %x at %d/%d, hdkeychain %x (%v)", got, branch, idx, want, err)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var scripts [][]byte
	var addrRows, trackRows [][]any
	now := time.Now().Unix()
	for branch, count := range []int{synthRecvAddrs, synthChangeAddrs} {
		for i := range count {
			script, err := acct.script(branch, uint32(i))
			if err != nil {
				return nil, err
			}
			addr, ok := params.ScriptAddress(script)
			if !ok {
				return nil, fmt.Errorf("script %x has no address", script)
			}
			scripts = append(scripts, script)
			addrRows = append(addrRows, []any{w.ID, branch, i, script, addr, true})
			trackRows = append(trackRows, []any{script, "wallet:" + w.ID, now})
		}
	}
	sw.addrs = len(scripts)
	err = db.InTx(ctx, func(tx *store.Tx) error {
		if err := bulkInsert(ctx, tx, "wallet_addresses", []string{"wallet_id", "branch", "idx", "script", "address", "used"},
			" ON CONFLICT DO NOTHING", addrRows); err != nil {
			return err
		}
		if err := bulkInsert(ctx, tx, "tracked_scripts", []string{"script", "owner", "created_at"},
			" ON CONFLICT DO NOTHING", trackRows); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE wallet_addresses SET used = TRUE WHERE wallet_id = $1`, w.ID)
		return err
	})
	if err != nil {
		return nil, err
	}

	rng := mrand.New(mrand.NewPCG(benchSeed, uint64(wantUTXOs)<<32|uint64(wantTxs)))
	var blockRows, txRows, outRows, spendRows, wtxRows [][]any
	height, inBlock, pos, perBlock := int64(1), int64(0), int64(0), 1+rng.Int64N(6)
	var headHash chainhash.Hash // the output the next spend spends
	var headAmount int64
	blockHash := func(h int64) string {
		return chainhash.DoubleHashH(binary.LittleEndian.AppendUint64([]byte("block"), uint64(h))).String()
	}
	blockTime := func(h int64) int64 { return 1_600_000_000 + 600*h }
	addBlock := func(h, txCount int64) {
		blockRows = append(blockRows, []any{h, blockHash(h), blockHash(h - 1), blockTime(h), txCount, now})
	}
	flush := func() error {
		return db.InTx(ctx, func(tx *store.Tx) error {
			for _, t := range []struct {
				table string
				cols  []string
				rows  [][]any
			}{
				{"chain_blocks", []string{"height", "hash", "prev_hash", "time", "tx_count", "applied_at"}, blockRows},
				{"txs", []string{"txid", "status", "block_height", "block_hash", "block_pos", "coinbase", "raw", "first_seen_at", "updated_at"}, txRows},
				{"tx_outputs", []string{"txid", "vout", "script", "amount"}, outRows},
				{"tx_spends", []string{"txid", "vin", "prev_txid", "prev_vout"}, spendRows},
				{"wallet_txs", []string{"wallet_id", "txid", "status", "sort_height", "sort_pos", "received", "sent", "fee", "updated_at"}, wtxRows},
			} {
				if err := bulkInsert(ctx, tx, t.table, t.cols, "", t.rows); err != nil {
					return err
				}
			}
			return nil
		})
	}
	addBlock(0, 1)
	for i := 0; (wantUTXOs > 0 && sw.utxos < wantUTXOs) || (wantTxs > 0 && sw.txs < wantTxs); i++ {
		if inBlock == perBlock {
			addBlock(height, pos+1+rng.Int64N(100))
			height, inBlock, pos, perBlock = height+1, 0, 0, 1+rng.Int64N(6)
		}
		inBlock++
		pos += 1 + rng.Int64N(20)
		spend := i%10 == 9
		msg := wire.NewMsgTx(2)
		var prev wire.OutPoint
		if spend {
			prev = wire.OutPoint{Hash: headHash, Index: 0}
		} else {
			for j := 0; j < len(prev.Hash); j += 8 {
				binary.LittleEndian.PutUint64(prev.Hash[j:], rng.Uint64())
			}
			prev.Index = rng.Uint32N(4)
		}
		msg.AddTxIn(&wire.TxIn{PreviousOutPoint: prev, Sequence: wire.MaxTxInSequenceNum - 2,
			Witness: wire.TxWitness{bytes.Repeat([]byte{0x30}, 72), bytes.Repeat([]byte{0x02}, 33)}})
		amount := 10_000 + rng.Int64N(1_000_000)
		var script []byte
		if spend {
			amount = headAmount
			msg.AddTxOut(wire.NewTxOut(amount-1_000, randomP2WPKH(rng)))
		} else {
			script = scripts[rng.IntN(len(scripts))]
			msg.AddTxOut(wire.NewTxOut(amount, script))
			msg.AddTxOut(wire.NewTxOut(1_000_000+rng.Int64N(100_000_000), randomP2WPKH(rng)))
		}
		var raw bytes.Buffer
		if err := msg.Serialize(&raw); err != nil {
			return nil, err
		}
		hash := msg.TxHash()
		txid := hash.String()
		txRows = append(txRows, []any{txid, "confirmed", height, blockHash(height), pos, false, raw.Bytes(), blockTime(height), now})
		if spend {
			spendRows = append(spendRows, []any{txid, 0, prev.Hash.String(), 0})
			wtxRows = append(wtxRows, []any{w.ID, txid, "confirmed", height, pos, 0, amount, 1_000, now})
			sw.utxos--
			sw.balance -= amount
		} else {
			outRows = append(outRows, []any{txid, 0, script, amount})
			wtxRows = append(wtxRows, []any{w.ID, txid, "confirmed", height, pos, amount, 0, nil, now})
			sw.utxos++
			sw.balance += amount
			if i%10 == 0 {
				headHash, headAmount = hash, amount
			}
		}
		sw.txs++
		if len(txRows) == 10_000 {
			if err := flush(); err != nil {
				return nil, err
			}
			blockRows, txRows, outRows, spendRows, wtxRows = nil, nil, nil, nil, nil
		}
	}
	sw.blocks = height
	addBlock(height, pos+1)
	sw.tip = height + 5
	for h := height + 1; h <= sw.tip; h++ {
		addBlock(h, 1)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	err = db.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO chain_cursor (id, height, hash, updated_at) VALUES (1, $1, $2, $3)
			ON CONFLICT (id) DO UPDATE SET height = excluded.height, hash = excluded.hash, updated_at = excluded.updated_at`,
			sw.tip, blockHash(sw.tip), now); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE wallets SET status = $2, scan_height = $3, scan_target = $3 WHERE id = $1`,
			w.ID, wallet.StatusReady, sw.tip); err != nil {
			return err
		}
		return wallet.RebuildUTXOs(ctx, tx, w.ID)
	})
	if err != nil {
		return nil, err
	}
	// PostgreSQL's autovacuum would have analysed tables this size long
	// before a wallet grew to them; do it now rather than wait for it.
	if db.Dialect() == store.Postgres {
		if err := db.InTx(ctx, func(tx *store.Tx) error { _, err := tx.ExecContext(ctx, `ANALYZE`); return err }); err != nil {
			return nil, err
		}
	}
	return sw, nil
}

// bulkInsert writes rows into table with multi-row INSERTs (suffix follows
// each, e.g. an ON CONFLICT clause).
func bulkInsert(ctx context.Context, tx *store.Tx, table string, cols []string, suffix string, rows [][]any) error {
	per := max(1, 10_000/len(cols)) // parameters per statement: far below both engines' limits
	for len(rows) > 0 {
		batch := rows[:min(per, len(rows))]
		rows = rows[len(batch):]
		var b strings.Builder
		fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES ", table, strings.Join(cols, ", "))
		args := make([]any, 0, len(batch)*len(cols))
		for i, r := range batch {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('(')
			for j, v := range r {
				if j > 0 {
					b.WriteString(", ")
				}
				args = append(args, v)
				if tx.Dialect() == store.SQLite {
					b.WriteByte('?') // SQLite looks "$n" names up one by one: quadratic here
				} else {
					fmt.Fprintf(&b, "$%d", len(args))
				}
			}
			b.WriteByte(')')
		}
		b.WriteString(suffix)
		if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("inserting into %s: %w", table, err)
		}
	}
	return nil
}

// ---- List UTXOs ----

type utxoRow struct {
	engine, call, result string
	times                []time.Duration
}

func benchUTXOs(ctx context.Context, engine, pgDSN string, params *chain.Params, utxos, runs int,
	logger *slog.Logger, progress func(string, ...any)) ([]utxoRow, string, error) {
	db, done, err := benchDatabase(ctx, engine, pgDSN)
	if err != nil {
		return nil, "", err
	}
	defer done()
	acct, err := newBenchAccount(1)
	if err != nil {
		return nil, "", err
	}
	progress("bench: writing a wallet with %d UTXOs into %s…", utxos, engine)
	start := time.Now()
	sw, err := buildSynthWallet(ctx, db, params, acct, utxos, 0, logger)
	if err != nil {
		return nil, "", err
	}
	note := fmt.Sprintf("%d UTXOs on %d addresses, %d transactions in %d blocks", sw.utxos, sw.addrs, sw.txs, sw.blocks)
	progress("bench:   written in %.1fs; timing…", time.Since(start).Seconds())
	svc := wallet.New(db, params, events.NewLog(db), nil, nil, wallet.Config{}, logger)
	list := utxoRow{engine: engine, call: "UTXOs"}
	bal := utxoRow{engine: engine, call: "Balance"}
	for range runs {
		t0 := time.Now()
		us, err := svc.UTXOs(ctx, sw.id, wallet.UTXOFilter{})
		d := time.Since(t0)
		if err != nil {
			return nil, "", err
		}
		var sum int64
		for _, u := range us {
			sum += int64(u.Amount)
		}
		if len(us) != sw.utxos || sum != sw.balance {
			return nil, "", fmt.Errorf("UTXOs: %d outputs of %d sat, want %d of %d", len(us), sum, sw.utxos, sw.balance)
		}
		list.times = append(list.times, d)
		list.result = fmt.Sprintf("%d UTXOs", len(us))

		t0 = time.Now()
		b, err := svc.Balance(ctx, sw.id)
		d = time.Since(t0)
		if err != nil {
			return nil, "", err
		}
		if int64(b.Confirmed) != sw.balance || int64(b.Total) != sw.balance {
			return nil, "", fmt.Errorf("balance: confirmed %d, total %d; want %d", b.Confirmed, b.Total, sw.balance)
		}
		bal.times = append(bal.times, d)
		bal.result = fmt.Sprintf("%d sat", int64(b.Total))
	}
	return []utxoRow{list, bal}, note, nil
}

// ---- History pages ----

type histRow struct {
	engine, what string
	times        []time.Duration
}

func benchHistory(ctx context.Context, engine, pgDSN string, params *chain.Params, history, pages int,
	logger *slog.Logger, progress func(string, ...any)) ([]histRow, string, error) {
	db, done, err := benchDatabase(ctx, engine, pgDSN)
	if err != nil {
		return nil, "", err
	}
	defer done()
	acct, err := newBenchAccount(2)
	if err != nil {
		return nil, "", err
	}
	progress("bench: writing a wallet with %d transactions into %s…", history, engine)
	start := time.Now()
	sw, err := buildSynthWallet(ctx, db, params, acct, 0, history, logger)
	if err != nil {
		return nil, "", err
	}
	note := fmt.Sprintf("%d transactions in %d blocks", sw.txs, sw.blocks)
	progress("bench:   written in %.1fs; timing…", time.Since(start).Seconds())
	svc := wallet.New(db, params, events.NewLog(db), nil, nil, wallet.Config{}, logger)

	// Walk the whole history newest to oldest, checking its order, and keep
	// the cursors for the random deep pages.
	walk := histRow{engine: engine, what: "walk, newest to oldest"}
	var cursors []string
	seen := make(map[string]bool, sw.txs)
	lastHeight := int64(1 << 62)
	for cursor := ""; ; {
		t0 := time.Now()
		page, err := svc.Transactions(ctx, sw.id, cursor, historyPageSize, false)
		walk.times = append(walk.times, time.Since(t0))
		if err != nil {
			return nil, "", err
		}
		for _, t := range page.Transactions {
			if seen[t.Txid] || t.Height == nil || *t.Height > lastHeight || t.BlockTime == nil {
				return nil, "", fmt.Errorf("history out of order or repeated at %s", t.Txid)
			}
			seen[t.Txid], lastHeight = true, *t.Height
		}
		if page.Next == "" {
			break
		}
		if len(page.Transactions) != historyPageSize {
			return nil, "", fmt.Errorf("a page of %d transactions with a next cursor", len(page.Transactions))
		}
		cursor = page.Next
		cursors = append(cursors, cursor)
	}
	if len(seen) != sw.txs {
		return nil, "", fmt.Errorf("the walk found %d transactions, want %d", len(seen), sw.txs)
	}
	deep := histRow{engine: engine, what: "random deep pages"}
	rng := mrand.New(mrand.NewPCG(benchSeed, 7))
	for range pages {
		if len(cursors) == 0 {
			break
		}
		t0 := time.Now()
		page, err := svc.Transactions(ctx, sw.id, cursors[rng.IntN(len(cursors))], historyPageSize, false)
		deep.times = append(deep.times, time.Since(t0))
		if err != nil {
			return nil, "", err
		}
		if len(page.Transactions) == 0 {
			return nil, "", errors.New("an empty page before the end of the history")
		}
	}
	rows := []histRow{walk}
	if len(deep.times) > 0 {
		rows = append(rows, deep)
	}
	return rows, note, nil
}

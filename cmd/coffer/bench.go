package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/follow"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/regtest"
	"github.com/coffer/coffer/internal/store"
)

const benchUsage = `Usage:
  coffer bench sync [flags]   index a regtest chain built for the purpose and
                              compare the follower with raw getblock + parse
  coffer bench ledger [flags] internal transfers per second through the
                              custodial ledger, beside pgbench

Flags of bench sync:
  -blocks N        full blocks to build (default 1000)
  -txs N           transactions per full block, 1..2000 (default 100)
  -tracked F       fraction of generated outputs paying tracked scripts (default 0.1)
  -db DB           "sqlite" (a temporary file, the default), a SQLite file path
                   (must not exist), or a postgres:// DSN naming an empty
                   database; with a DSN the follower runs on a temporary SQLite
                   database first and then on PostgreSQL
  -dir DIR         keep the built chain in DIR; a later run with the same DIR
                   replays it into a fresh node instead of rebuilding it
  -prefetch N      blocks the follower fetches concurrently (default 8)
  -cpuprofile F    write a CPU profile of each follower run to F (the database
                   engine is added to the name when there are two runs)
`

// cmdBench dispatches the bench subcommands.
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return errors.New("bench: name a benchmark (sync, wallet, ledger)")
	}
	switch args[0] {
	case "sync":
		return benchSync(ctx, args[1:], stdout, stderr)
	case "wallet":
		return benchWallet(ctx, args[1:], stdout, stderr)
	case "ledger":
		return benchLedger(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, benchUsage+"\n"+benchWalletUsage+"\n"+benchLedgerUsage)
		return nil
	}
	fmt.Fprint(stderr, benchUsage)
	return fmt.Errorf("bench: unknown benchmark %q", args[0])
}

// Chain shape. Every full-block transaction is a SendFrom by one of -txs
// harness keys, each key spending its own change from the block before: no
// unconfirmed chains, so no mempool ancestor limits apply, and the harness
// wallet holds about one output per key (its send scans them all).
const (
	minPayment   = 1_000   // sat; far above the dust limit
	maxPayment   = 5_000   // sat
	feeAllowance = 1_000   // sat per transaction; the harness pays ~460
	keyMargin    = 100_000 // sat left on each key at the end, above its change dust
	fanOutChunk  = 500     // outputs per fan-out transaction (~17 kB)
	receivePool  = 1_000   // tracked receive scripts payments pick from
	maxTxs       = 2_000   // btcd's default 750 kB block size fits ~3,000 such txs
	benchSeed    = 20_240_601
)

const (
	manifestFile = "bench-chain.json"
	blocksFile   = "blocks.dat"
)

// benchManifest describes a chain kept in -dir.
type benchManifest struct {
	Blocks       int       `json:"blocks"`        // full blocks
	TxsPerBlock  int       `json:"txs_per_block"` // besides the coinbase
	Tracked      float64   `json:"tracked"`
	SetupTip     int64     `json:"setup_tip"` // last pre-mine / fan-out block
	Tip          int64     `json:"tip"`
	TipHash      string    `json:"tip_hash"`
	Scripts      []string  `json:"tracked_scripts"` // hex
	BuildSeconds float64   `json:"build_seconds"`
	BuiltAt      time.Time `json:"built_at"`
}

func (m *benchManifest) scripts() ([][]byte, error) {
	out := make([][]byte, len(m.Scripts))
	for i, s := range m.Scripts {
		b, err := hex.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("bench: bad tracked script in %s: %w", manifestFile, err)
		}
		out[i] = b
	}
	return out, nil
}

// benchTarget is one database the follower runs on.
type benchTarget struct {
	name    string // sqlite | postgres
	dsn     string
	cleanup func()
}

func benchSync(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench sync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage) }
	blocks := fs.Int("blocks", 1000, "full blocks to build")
	txs := fs.Int("txs", 100, "transactions per full block (1..2000)")
	tracked := fs.Float64("tracked", 0.1, "fraction of generated outputs paying tracked scripts")
	dbFlag := fs.String("db", "sqlite", `"sqlite", a SQLite file path, or a postgres:// DSN`)
	dir := fs.String("dir", "", "keep (and reuse) the built chain in this directory")
	prefetch := fs.Int("prefetch", 8, "blocks the follower fetches concurrently")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of each follower run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("bench sync: unexpected argument %q", fs.Arg(0))
	case *blocks < 1:
		return errors.New("bench sync: -blocks must be at least 1")
	case *txs < 1 || *txs > maxTxs:
		return fmt.Errorf("bench sync: -txs must be 1..%d", maxTxs)
	case *tracked < 0 || *tracked > 1:
		return errors.New("bench sync: -tracked must be within 0..1")
	case *prefetch < 1:
		return errors.New("bench sync: -prefetch must be at least 1")
	}
	progress := func(format string, a ...any) { fmt.Fprintf(stderr, format+"\n", a...) }
	say := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }

	targets, err := benchTargets(*dbFlag)
	if err != nil {
		return err
	}
	defer func() {
		for _, t := range targets {
			if t.cleanup != nil {
				t.cleanup()
			}
		}
	}()

	// Reuse a kept chain, or build one.
	var manifest *benchManifest
	var nodeDir string
	if *dir != "" {
		abs, err := filepath.Abs(*dir)
		if err != nil {
			return err
		}
		*dir = abs
		nodeDir = filepath.Join(abs, "node")
		if manifest, err = readManifest(abs); err != nil {
			return err
		}
	}
	premine := 0
	if manifest == nil {
		premine = premineFor(int64(*txs) * perKeyFunds(*blocks) * 21 / 20)
	} else if manifest.Blocks != *blocks || manifest.TxsPerBlock != *txs || manifest.Tracked != *tracked {
		progress("bench: reusing the chain in %s: %d blocks × %d txs, tracked %.3g (flags -blocks/-txs/-tracked ignored)",
			*dir, manifest.Blocks, manifest.TxsPerBlock, manifest.Tracked)
	}

	progress("bench: starting a regtest btcd…")
	n, err := regtest.Start(ctx, regtest.Options{
		Kind: regtest.KindBtcd, Dir: nodeDir, PreMine: premine,
		Logf: func(format string, a ...any) { progress(format, a...) },
	})
	if err != nil {
		return fmt.Errorf("starting regtest btcd: %w", err)
	}
	defer n.Stop()

	rpc := n.RPC()
	rpc.Timeout = 5 * time.Minute
	client, err := node.New(rpc)
	if err != nil {
		return err
	}

	var buildNote string
	if manifest == nil {
		if manifest, err = buildBenchChain(ctx, n, client, *blocks, *txs, *tracked, progress); err != nil {
			return err
		}
		buildNote = fmt.Sprintf("built in %.1fs (%.0f tx/s through the harness)", manifest.BuildSeconds,
			float64(manifest.Blocks*manifest.TxsPerBlock)/manifest.BuildSeconds)
		if *dir != "" {
			if err := saveChain(ctx, client, *dir, manifest, progress); err != nil {
				return err
			}
			buildNote += ", kept in " + *dir
		}
	} else {
		start := time.Now()
		if err := replayChain(ctx, client, *dir, manifest, progress); err != nil {
			return err
		}
		buildNote = fmt.Sprintf("replayed from %s in %.1fs (built %s in %.1fs)", *dir, time.Since(start).Seconds(),
			manifest.BuiltAt.Format(time.RFC3339), manifest.BuildSeconds)
	}
	scripts, err := manifest.scripts()
	if err != nil {
		return err
	}

	params, err := chain.Lookup(chain.BTC, chain.Regtest)
	if err != nil {
		return err
	}
	btcdPid := n.Pid()

	// (a) raw getblockhash + getblock + parse, sequential, then in batches
	// like the follower's prefetch.
	progress("bench: raw getblock + parse, sequential…")
	seq, counts, err := measureRaw(ctx, client, params, manifest, 1, btcdPid)
	if err != nil {
		return err
	}
	progress("bench: raw getblock + parse, %d at a time…", *prefetch)
	par, _, err := measureRaw(ctx, client, params, manifest, *prefetch, btcdPid)
	if err != nil {
		return err
	}
	results := []*benchResult{seq, par}

	// (b) the follower on a fresh database, from height 0 to the tip.
	var stats []string
	for _, t := range targets {
		progress("bench: follower on %s…", t.name)
		profile := *cpuprofile
		if profile != "" && len(targets) > 1 {
			ext := filepath.Ext(profile)
			profile = strings.TrimSuffix(profile, ext) + "." + t.name + ext
		}
		r, st, err := measureFollower(ctx, t, rpc, params, manifest, scripts, counts, *prefetch, btcdPid, profile, stderr)
		if err != nil {
			return fmt.Errorf("follower on %s: %w", t.name, err)
		}
		results = append(results, r)
		stats = append(stats, st)
	}

	// Report.
	say("coffer bench sync — %s", Version())
	say("machine:  %d CPUs (%s), GOMAXPROCS %d, %s %s/%s", runtime.NumCPU(), cpuModel(), runtime.GOMAXPROCS(0),
		runtime.Version(), runtime.GOOS, runtime.GOARCH)
	say("node:     btcd regtest (harness), RPC %s", rpc.URL)
	say("chain:    heights 0..%d: %d setup blocks (genesis, pre-mine, fan-out) + %d full blocks of %d txs + coinbase",
		manifest.Tip, manifest.SetupTip+1, manifest.Blocks, manifest.TxsPerBlock)
	say("          %s", buildNote)
	say("tracked:  %d scripts (%.3g of outputs); prefetch %d", len(scripts), manifest.Tracked, *prefetch)
	for _, s := range stats {
		say("          %s", s)
	}
	say("")
	say("All blocks, height 0..%d:", manifest.Tip)
	printResults(stdout, results, false)
	say("")
	say("Full blocks only, heights %d..%d (the setup blocks' share of the time taken out):", manifest.SetupTip+1, manifest.Tip)
	printResults(stdout, results, true)
	return nil
}

// benchTargets turns -db into the databases the follower runs on.
func benchTargets(db string) ([]*benchTarget, error) {
	tempSQLite := func() (*benchTarget, error) {
		d, err := os.MkdirTemp("", "coffer-bench-db-")
		if err != nil {
			return nil, err
		}
		return &benchTarget{name: "sqlite", dsn: filepath.Join(d, "coffer.db"), cleanup: func() { os.RemoveAll(d) }}, nil
	}
	switch {
	case db == "" || db == "sqlite":
		t, err := tempSQLite()
		if err != nil {
			return nil, err
		}
		return []*benchTarget{t}, nil
	case strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://"):
		t, err := tempSQLite()
		if err != nil {
			return nil, err
		}
		return []*benchTarget{t, {name: "postgres", dsn: db}}, nil
	default:
		path := strings.TrimPrefix(db, "sqlite://")
		if _, err := os.Stat(path); err == nil {
			return nil, fmt.Errorf("bench sync: %s exists; the follower needs a fresh database", path)
		}
		return []*benchTarget{{name: "sqlite", dsn: path}}, nil
	}
}

// perKeyFunds is what one sending key needs for blocks transactions.
func perKeyFunds(blocks int) int64 {
	return int64(blocks)*(maxPayment+feeAllowance) + keyMargin
}

// premineFor returns how many blocks to pre-mine so that mature coinbases
// hold at least need satoshis.
func premineFor(need int64) int {
	var sum int64
	h := int32(0)
	for sum < need {
		h++
		sum += blockchain.CalcBlockSubsidy(h, &chaincfg.RegressionNetParams)
	}
	// A coinbase at height h is spendable once it has CoinbaseMaturity
	// confirmations; one block more leaves room.
	return int(h) + int(chaincfg.RegressionNetParams.CoinbaseMaturity) + 1
}

// randomP2WPKH returns a P2WPKH script for a random key hash: a fresh,
// standard output nobody will spend.
func randomP2WPKH(rng *rand.Rand) []byte {
	s := make([]byte, 2, 22)
	s[0], s[1] = 0x00, 0x14 // OP_0, push 20 bytes
	s = binary.LittleEndian.AppendUint64(s, rng.Uint64())
	s = binary.LittleEndian.AppendUint64(s, rng.Uint64())
	return binary.LittleEndian.AppendUint32(s, rng.Uint32())
}

// buildBenchChain makes blocks full blocks of txs transactions each on n.
func buildBenchChain(ctx context.Context, n *regtest.Node, client *node.Client, blocks, txs int, tracked float64,
	progress func(string, ...any)) (*benchManifest, error) {
	rng := rand.New(rand.NewPCG(benchSeed, uint64(txs)))
	start := time.Now()

	// Sending keys: one per transaction of a block. The first `tracked`
	// fraction of them is tracked, so their spends and change are recorded.
	keys := make([]*regtest.Key, txs)
	for i := range keys {
		keys[i] = n.NewKey()
	}
	var scripts [][]byte
	for _, k := range keys[:int(math.Round(tracked*float64(txs)))] {
		scripts = append(scripts, k.PkScript())
	}
	pool := make([][]byte, receivePool)
	for i := range pool {
		pool[i] = randomP2WPKH(rng)
	}
	if tracked > 0 {
		scripts = append(scripts, pool...)
	}

	// Fan out: one output per key, enough for all its transactions.
	perKey := perKeyFunds(blocks)
	progress("bench: funding %d keys with %d sat each…", len(keys), perKey)
	for i := 0; i < len(keys); i += fanOutChunk {
		var outs []regtest.Output
		for _, k := range keys[i:min(i+fanOutChunk, len(keys))] {
			outs = append(outs, regtest.Output{PkScript: k.PkScript(), Amount: perKey})
		}
		if _, err := n.SendMany(ctx, outs); err != nil {
			return nil, fmt.Errorf("bench: fan-out: %w", err)
		}
	}
	if _, err := n.Mine(ctx, 1); err != nil {
		return nil, err
	}
	setupTip, err := client.GetBlockCount(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkMempoolEmpty(ctx, client, setupTip); err != nil {
		return nil, err
	}
	progress("bench: setup done at height %d in %.1fs; building %d blocks × %d txs…",
		setupTip, time.Since(start).Seconds(), blocks, txs)

	buildStart := time.Now()
	last := buildStart
	warned := false
	for b := 1; b <= blocks; b++ {
		for i, k := range keys {
			script := randomP2WPKH(rng)
			if rng.Float64() < tracked {
				script = pool[rng.IntN(len(pool))]
			}
			amount := minPayment + rng.Int64N(maxPayment-minPayment+1)
			if _, err := n.SendFrom(ctx, k, []regtest.Output{{PkScript: script, Amount: amount}}); err != nil {
				return nil, fmt.Errorf("bench: block %d, tx %d: %w", b, i, err)
			}
		}
		if _, err := n.Mine(ctx, 1); err != nil {
			return nil, err
		}
		if err := checkMempoolEmpty(ctx, client, setupTip+int64(b)); err != nil {
			return nil, err
		}
		if b%50 == 0 || b == blocks {
			el := time.Since(buildStart)
			rate := float64(b*txs) / el.Seconds()
			eta := time.Duration(float64(el) / float64(b) * float64(blocks-b))
			progress("bench: built %d/%d blocks, %d txs, %.1fs (last 50: %.1fs), %.0f tx/s, ~%s to go",
				b, blocks, b*txs, el.Seconds(), time.Since(last).Seconds(), rate, eta.Round(time.Second))
			last = time.Now()
			if !warned && el+eta > 10*time.Minute {
				warned = true
				progress("bench: NOTE: building this chain takes about %s, over 10 minutes on this machine",
					(el + eta).Round(time.Second))
			}
		}
	}
	buildTime := time.Since(buildStart)
	tip, err := client.GetBlockCount(ctx)
	if err != nil {
		return nil, err
	}
	tipHash, err := client.GetBlockHash(ctx, tip)
	if err != nil {
		return nil, err
	}
	m := &benchManifest{
		Blocks: blocks, TxsPerBlock: txs, Tracked: tracked, SetupTip: setupTip, Tip: tip, TipHash: tipHash,
		BuildSeconds: buildTime.Seconds(), BuiltAt: time.Now().UTC(),
	}
	for _, s := range scripts {
		m.Scripts = append(m.Scripts, hex.EncodeToString(s))
	}
	return m, nil
}

// checkMempoolEmpty makes sure the block just mined took every transaction:
// a block cut short by btcd's size limits would leave them behind.
func checkMempoolEmpty(ctx context.Context, client *node.Client, height int64) error {
	ids, err := client.GetRawMempool(ctx)
	if err != nil {
		return err
	}
	if len(ids) > 0 {
		return fmt.Errorf("bench: block %d left %d transactions in the mempool (btcd block size limits?)", height, len(ids))
	}
	return nil
}

func readManifest(dir string) (*benchManifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m benchManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("bench: %s: %w", filepath.Join(dir, manifestFile), err)
	}
	return &m, nil
}

// saveChain writes blocks 1..tip (length-prefixed raw blocks) and the
// manifest to dir. btcd deletes its regtest database whenever it starts, so
// the blocks themselves are what a later run replays.
func saveChain(ctx context.Context, client *node.Client, dir string, m *benchManifest, progress func(string, ...any)) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(dir, blocksFile+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	w := bufio.NewWriterSize(f, 1<<20)
	var size int64
	for h := int64(1); h <= m.Tip; h++ {
		hash, err := client.GetBlockHash(ctx, h)
		if err != nil {
			f.Close()
			return err
		}
		raw, err := client.GetRawBlock(ctx, hash)
		if err != nil {
			f.Close()
			return err
		}
		var l [4]byte
		binary.LittleEndian.PutUint32(l[:], uint32(len(raw)))
		w.Write(l[:])
		w.Write(raw)
		size += int64(len(raw))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, blocksFile)); err != nil {
		return err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, manifestFile), append(b, '\n'), 0o600); err != nil {
		return err
	}
	progress("bench: kept %d blocks (%.1f MB) in %s", m.Tip, float64(size)/1e6, dir)
	return nil
}

// replayChain submits the kept blocks to a fresh node.
func replayChain(ctx context.Context, client *node.Client, dir string, m *benchManifest, progress func(string, ...any)) error {
	f, err := os.Open(filepath.Join(dir, blocksFile))
	if err != nil {
		return fmt.Errorf("bench: %w (delete %s to rebuild)", err, filepath.Join(dir, manifestFile))
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	progress("bench: replaying %d kept blocks into the node…", m.Tip)
	start := time.Now()
	for h := int64(1); h <= m.Tip; h++ {
		var l [4]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return fmt.Errorf("bench: %s: block %d: %w", blocksFile, h, err)
		}
		raw := make([]byte, binary.LittleEndian.Uint32(l[:]))
		if _, err := io.ReadFull(r, raw); err != nil {
			return fmt.Errorf("bench: %s: block %d: %w", blocksFile, h, err)
		}
		var reject *string
		if err := client.Call(ctx, "submitblock", &reject, hex.EncodeToString(raw)); err != nil {
			return fmt.Errorf("bench: submitting block %d: %w", h, err)
		}
		if reject != nil {
			return fmt.Errorf("bench: node rejected kept block %d: %s", h, *reject)
		}
		if h%200 == 0 {
			progress("bench: replayed %d/%d blocks, %.1fs", h, m.Tip, time.Since(start).Seconds())
		}
	}
	best, err := client.GetBestBlockHash(ctx)
	if err != nil {
		return err
	}
	if best != m.TipHash {
		return fmt.Errorf("bench: after replay the node's tip is %s, not %s", best, m.TipHash)
	}
	return nil
}

// benchResult is one timed pass over heights 0..tip.
type benchResult struct {
	name       string
	blocks     int64 // 0..tip
	txs        int64
	wall       time.Duration
	setupWall  time.Duration // time until the setup blocks were done
	setupTxs   int64
	setupBlks  int64
	cofferCPU  time.Duration
	btcdCPU    time.Duration
	cpuMissing bool
}

// cpuMeter reads this process's and btcd's CPU time (Linux /proc).
type cpuMeter struct {
	pid            int
	self, btcd     time.Duration
	selfOK, nodeOK bool
}

func startCPU(pid int) cpuMeter {
	m := cpuMeter{pid: pid}
	m.self, m.selfOK = procCPU("self")
	m.btcd, m.nodeOK = procCPU(strconv.Itoa(pid))
	return m
}

func (m cpuMeter) stop(r *benchResult) {
	self, ok1 := procCPU("self")
	node, ok2 := procCPU(strconv.Itoa(m.pid))
	if !(ok1 && ok2 && m.selfOK && m.nodeOK) {
		r.cpuMissing = true
		return
	}
	r.cofferCPU, r.btcdCPU = self-m.self, node-m.btcd
}

// procCPU returns user+system CPU time of a process from /proc/<pid>/stat.
func procCPU(pid string) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, false
	}
	// Fields after the parenthesised command name start at field 3; utime
	// and stime are fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux).
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+s) * 10 * time.Millisecond, true
}

// blockCounts holds the transaction count of every height.
type blockCounts []int64

func (c blockCounts) sum(from, to int64) int64 {
	var s int64
	for h := from; h <= to; h++ {
		s += c[h]
	}
	return s
}

// measureRaw times getblockhash + getblock + ParseBlock over heights 0..tip,
// conc blocks at a time in batches, as the follower fetches them. The setup
// blocks and the full blocks are timed as two ranges.
func measureRaw(ctx context.Context, client *node.Client, params *chain.Params, m *benchManifest, conc, btcdPid int) (*benchResult, blockCounts, error) {
	counts := make(blockCounts, m.Tip+1)
	fetch := func(h int64) error {
		hash, err := client.GetBlockHash(ctx, h)
		if err != nil {
			return err
		}
		raw, err := client.GetRawBlock(ctx, hash)
		if err != nil {
			return err
		}
		blk, err := params.ParseBlock(raw)
		if err != nil {
			return err
		}
		if got := blk.BlockHash().String(); got != hash {
			return fmt.Errorf("block %d: node sent %s for %s", h, got, hash)
		}
		counts[h] = int64(len(blk.Transactions))
		return nil
	}
	run := func(from, to int64) error {
		for lo := from; lo <= to; lo += int64(conc) {
			hi := min(to, lo+int64(conc)-1)
			if lo == hi {
				if err := fetch(lo); err != nil {
					return err
				}
				continue
			}
			errs := make([]error, hi-lo+1)
			var wg sync.WaitGroup
			for h := lo; h <= hi; h++ {
				wg.Go(func() { errs[h-lo] = fetch(h) })
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				return err
			}
		}
		return nil
	}
	name := "raw getblock+parse, sequential"
	if conc > 1 {
		name = fmt.Sprintf("raw getblock+parse, %d concurrent", conc)
	}
	r := &benchResult{name: name, blocks: m.Tip + 1}
	cpu := startCPU(btcdPid)
	start := time.Now()
	if err := run(0, m.SetupTip); err != nil {
		return nil, nil, err
	}
	r.setupWall = time.Since(start)
	if err := run(m.SetupTip+1, m.Tip); err != nil {
		return nil, nil, err
	}
	r.wall = time.Since(start)
	cpu.stop(r)
	r.txs = counts.sum(0, m.Tip)
	r.setupBlks, r.setupTxs = m.SetupTip+1, counts.sum(0, m.SetupTip)
	return r, counts, nil
}

// measureFollower syncs a follower on a fresh database from height 0 to the
// tip and times it.
func measureFollower(ctx context.Context, t *benchTarget, rpc node.Config, params *chain.Params, m *benchManifest,
	scripts [][]byte, counts blockCounts, prefetch, btcdPid int, profile string, stderr io.Writer) (*benchResult, string, error) {
	db, err := store.Open(ctx, t.dsn)
	if err != nil {
		return nil, "", err
	}
	defer db.Close()
	if _, err := db.Migrate(ctx); err != nil {
		return nil, "", err
	}
	var used int64
	if err := db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM chain_blocks) + (SELECT COUNT(*) FROM tracked_scripts)`).Scan(&used); err != nil {
		return nil, "", err
	}
	if used > 0 {
		return nil, "", errors.New("the database is not empty; give the benchmark a fresh one")
	}
	if err := follow.TrackScripts(ctx, db, "bench", scripts...); err != nil {
		return nil, "", err
	}
	client, err := node.New(rpc)
	if err != nil {
		return nil, "", err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	f := follow.New(db, client, params, events.NewLog(db), follow.Config{StartHeight: 0, Prefetch: prefetch}, logger)

	if profile != "" {
		pf, err := os.Create(profile)
		if err != nil {
			return nil, "", err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return nil, "", err
		}
		defer pprof.StopCPUProfile()
	}

	// Note when the follower passes the setup blocks, to time them apart.
	r := &benchResult{name: "follower, " + t.name, blocks: m.Tip + 1, txs: counts.sum(0, m.Tip),
		setupBlks: m.SetupTip + 1, setupTxs: counts.sum(0, m.SetupTip)}
	done := make(chan struct{})
	split := make(chan time.Duration, 1)
	cpu := startCPU(btcdPid)
	start := time.Now()
	go func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				split <- 0
				return
			case <-tick.C:
				if f.Status().SyncedHeight >= m.SetupTip {
					split <- time.Since(start)
					return
				}
			}
		}
	}()
	for attempt := 0; f.Status().SyncedHash != m.TipHash; attempt++ {
		if attempt == 5 {
			close(done)
			return nil, "", fmt.Errorf("not at the tip after %d syncs (at %d)", attempt, f.Status().SyncedHeight)
		}
		if err := f.Sync(ctx); err != nil {
			close(done)
			return nil, "", err
		}
	}
	r.wall = time.Since(start)
	cpu.stop(r)
	close(done)
	r.setupWall = <-split
	if profile != "" {
		pprof.StopCPUProfile()
	}

	var nTxs, nOut, nSpend, nEvents int64
	err = db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM txs), (SELECT COUNT(*) FROM tx_outputs),
		(SELECT COUNT(*) FROM tx_spends), (SELECT COUNT(*) FROM events)`).Scan(&nTxs, &nOut, &nSpend, &nEvents)
	if err != nil {
		return nil, "", err
	}
	st := db.Stats()
	return r, fmt.Sprintf("%s: recorded %d txs, %d outputs, %d spends, %d events; %d transactions, %d retries",
		t.name, nTxs, nOut, nSpend, nEvents, st.Attempts, st.Retries), nil
}

func printResults(w io.Writer, results []*benchResult, fullOnly bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tblocks\ttxs\tseconds\tblocks/s\ttx/s\tcoffer CPU s\tbtcd CPU s\t")
	for _, r := range results {
		blocks, txs, wall := r.blocks, r.txs, r.wall
		if fullOnly {
			blocks, txs, wall = blocks-r.setupBlks, txs-r.setupTxs, wall-r.setupWall
		}
		cpu := func(d time.Duration) string {
			if r.cpuMissing || fullOnly {
				return "-"
			}
			return fmt.Sprintf("%.1f", d.Seconds())
		}
		s := wall.Seconds()
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.1f\t%.0f\t%s\t%s\t\n", r.name, blocks, txs, s,
			float64(blocks)/s, float64(txs)/s, cpu(r.cofferCPU), cpu(r.btcdCPU))
	}
	tw.Flush()
}

// cpuModel names the processor, from /proc/cpuinfo where there is one.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

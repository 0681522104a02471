package regtest_test

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/regtest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// confirmedOut asserts txid:vout is unspent with the given confirmations
// and value.
func confirmedOut(t *testing.T, ctx context.Context, n *regtest.Node, txid string, vout uint32, confs int64, sat int64) {
	t.Helper()
	out, err := n.Client().GetTxOut(ctx, txid, vout, true)
	if err != nil {
		t.Fatal(err)
	}
	if out == nil {
		t.Fatalf("%s:%d: not unspent", txid, vout)
	}
	if out.Confirmations != confs || int64(out.Value*1e8+0.5) != sat {
		t.Fatalf("%s:%d: %d confirmations, value %v; want %d, %d sat", txid, vout, out.Confirmations, out.Value, confs, sat)
	}
}

func mine(t *testing.T, ctx context.Context, n *regtest.Node, count int) []string {
	t.Helper()
	hs, err := n.Mine(ctx, count)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != count {
		t.Fatalf("mined %d blocks, want %d", len(hs), count)
	}
	return hs
}

// exercise runs the wallet and reorg path common to both node kinds:
// fund a fresh key, spend from it, reorg, and keep funding.
func exercise(t *testing.T, ctx context.Context, n *regtest.Node, key *regtest.Key, script []byte) {
	t.Helper()
	c := n.Client()
	txid, vout, err := n.Fund(ctx, script, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	confirmedOut(t, ctx, n, txid, vout, 0, 1_000_000)
	mine(t, ctx, n, 1)
	confirmedOut(t, ctx, n, txid, vout, 1, 1_000_000)

	dest := n.NewKey()
	spend, err := n.SendFrom(ctx, key, []regtest.Output{{PkScript: dest.PkScript(), Amount: 400_000}})
	if err != nil {
		t.Fatal(err)
	}
	// btcd's gettxout ignores mempool spends of confirmed outputs.
	if out, err := c.GetTxOut(ctx, txid, vout, true); err != nil || (out != nil && n.Kind == regtest.KindLitecoind) {
		t.Fatalf("funded output after SendFrom: %+v, %v; want spent", out, err)
	}
	mine(t, ctx, n, 1)
	confirmedOut(t, ctx, n, spend, 0, 1, 400_000)
	if got := n.Balance(key); got <= 0 || got >= 600_000 {
		t.Fatalf("key's change %d, want below 600000 (fee) and above 0", got)
	}

	before, err := c.GetBlockchainInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	orphaned, fresh, err := n.Reorg(ctx, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(orphaned) != 2 || orphaned[1] != before.BestBlockHash || len(fresh) != 3 {
		t.Fatalf("reorg: orphaned %v (old tip %s), new %v", orphaned, before.BestBlockHash, fresh)
	}
	after, err := c.GetBlockchainInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Blocks != before.Blocks+1 || after.BestBlockHash != fresh[2] {
		t.Fatalf("after reorg tip %d %s; want %d %s", after.Blocks, after.BestBlockHash, before.Blocks+1, fresh[2])
	}
	// Both orphaned transactions went back to the mempool and into the new
	// branch's first block.
	confirmedOut(t, ctx, n, spend, 0, 3, 400_000)

	// The harness wallet survived the reorg (orphaned coinbases and all).
	for range 3 {
		if _, _, err := n.Fund(ctx, n.NewKey().PkScript(), 50_000); err != nil {
			t.Fatal(err)
		}
	}
	mine(t, ctx, n, 1)
	if pool, err := c.GetRawMempool(ctx); err != nil || len(pool) != 0 {
		t.Fatalf("mempool after mining: %v, %v", pool, err)
	}
}

func assertStopped(t *testing.T, n *regtest.Node) {
	t.Helper()
	pid, dir := n.Pid(), n.DataDir()
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("data dir %s still there: %v", dir, err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("node pid %d still exists: %v", pid, err)
	}
}

func TestBtcd(t *testing.T) {
	ctx := ctxT(t)
	n := regtest.StartT(t, regtest.Options{PreMine: 101})
	c := n.Client()
	key := n.NewKey()
	exercise(t, ctx, n, key, key.PkScript())

	// Compact filters are on by default; the follower's rescan needs them.
	best, err := c.GetBestBlockHash(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var filter string
	if err := c.Call(ctx, "getcfilter", &filter, best, 0); err != nil || filter == "" {
		t.Fatalf("getcfilter: %q, %v", filter, err)
	}

	// btcd wipes its regtest database at every start, so a restart means
	// a new chain on the same address; the harness follows it.
	if err := n.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if h, err := c.GetBlockCount(ctx); err != nil || h != 0 {
		t.Fatalf("after restart height %d, %v; want 0 (btcd starts regtest over)", h, err)
	}
	if n.Balance(nil) != 0 {
		t.Fatalf("harness still counts %d sat from the old chain", n.Balance(nil))
	}
	mine(t, ctx, n, 101)
	if _, _, err := n.Fund(ctx, key.PkScript(), 70_000); err != nil {
		t.Fatal(err)
	}

	// A crash: the client sees a transport error until the node is back.
	n.Kill()
	if _, err := c.GetBlockCount(ctx); !isTransport(err) {
		t.Fatalf("killed node answered: %v", err)
	}
	if err := n.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetBlockCount(ctx); err != nil {
		t.Fatal(err)
	}
	assertStopped(t, n)
}

func isTransport(err error) bool {
	var te *node.TransportError
	return errors.As(err, &te)
}

func TestBtcdSegwit(t *testing.T) {
	ctx := ctxT(t)
	n := regtest.StartT(t, regtest.Options{})
	// btcd activates segwit on regtest through BIP9 after three 144-block
	// windows.
	mine(t, ctx, n, 432)
	key := n.NewKey()
	txid, vout, err := n.Fund(ctx, key.WitnessPkScript(), 2_000_000)
	if err != nil {
		t.Fatal(err)
	}
	mine(t, ctx, n, 1)
	confirmedOut(t, ctx, n, txid, vout, 1, 2_000_000)
	spend, err := n.SendFrom(ctx, key, []regtest.Output{{PkScript: n.NewKey().WitnessPkScript(), Amount: 1_500_000}})
	if err != nil {
		t.Fatal(err)
	}
	mine(t, ctx, n, 1)
	confirmedOut(t, ctx, n, spend, 0, 1, 1_500_000)
}

func TestTwoNodes(t *testing.T) {
	for _, kind := range []regtest.Kind{regtest.KindBtcd, regtest.KindLitecoind} {
		t.Run(kind.String(), func(t *testing.T) {
			ctx := ctxT(t)
			a := regtest.StartT(t, regtest.Options{Kind: kind, PreMine: 5})
			b := regtest.StartT(t, regtest.Options{Kind: kind})
			if err := a.Connect(ctx, b); err != nil {
				t.Fatal(err)
			}
			if err := a.WaitSynced(ctx, b); err != nil {
				t.Fatal(err)
			}
			// Split, let each side mine, and rejoin: b's longer branch wins.
			if err := a.Disconnect(ctx, b); err != nil {
				t.Fatal(err)
			}
			mine(t, ctx, a, 1)
			bh := mine(t, ctx, b, 2)
			if err := a.Connect(ctx, b); err != nil {
				t.Fatal(err)
			}
			if err := b.WaitSynced(ctx, a); err != nil {
				t.Fatal(err)
			}
			if best, _ := a.Client().GetBestBlockHash(ctx); best != bh[1] {
				t.Fatalf("a's tip %s, want b's %s", best, bh[1])
			}
		})
	}
}

func TestLitecoind(t *testing.T) {
	ctx := ctxT(t)
	n := regtest.StartT(t, regtest.Options{Kind: regtest.KindLitecoind, PreMine: 101})
	c := n.Client()
	key := n.NewKey()
	exercise(t, ctx, n, key, key.PkScript())

	// Past MWEB activation (432 on regtest) the harness pegs in for the
	// first MWEB block, and funding keeps working, to P2WPKH too.
	height, err := c.GetBlockCount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mine(t, ctx, n, int(450-height))
	wkey := n.NewKey()
	txid, vout, err := n.Fund(ctx, wkey.WitnessPkScript(), 3_000_000)
	if err != nil {
		t.Fatal(err)
	}
	hs := mine(t, ctx, n, 1)
	confirmedOut(t, ctx, n, txid, vout, 1, 3_000_000)
	if _, err := n.SendFrom(ctx, wkey, []regtest.Output{{PkScript: key.WitnessPkScript(), Amount: 1_000_000}}); err != nil {
		t.Fatal(err)
	}
	mine(t, ctx, n, 1)

	var info struct {
		Softforks map[string]struct {
			Active bool `json:"active"`
		} `json:"softforks"`
	}
	if err := c.Call(ctx, "getblockchaininfo", &info); err != nil || !info.Softforks["mweb"].Active {
		t.Fatalf("mweb not active: %+v, %v", info, err)
	}
	raw, err := c.GetRawBlock(ctx, hs[0])
	if err != nil {
		t.Fatal(err)
	}
	checkMWEBBlock(t, n, raw, txid)

	// litecoind keeps its chain across a graceful restart, and the harness
	// finds its outputs again.
	before, err := c.GetBlockCount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if h, err := c.GetBlockCount(ctx); err != nil || h != before {
		t.Fatalf("after restart height %d, %v; want %d", h, err, before)
	}
	if _, _, err := n.Fund(ctx, key.PkScript(), 80_000); err != nil {
		t.Fatal(err)
	}
	assertStopped(t, n)
}

// checkMWEBBlock checks that a post-MWEB Litecoin block parses with the
// chain package and carries the transaction txid.
func checkMWEBBlock(t *testing.T, n *regtest.Node, raw []byte, txid string) {
	t.Helper()
	blk, err := n.Chain().ParseBlock(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, tx := range blk.Transactions {
		if tx.TxHash().String() == txid {
			return
		}
	}
	t.Fatalf("block with %d txs lacks %s", len(blk.Transactions), txid)
}

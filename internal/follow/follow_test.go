package follow_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/follow"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/regtest"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// fixture is a follower on one database watching one regtest node.
type fixture struct {
	db       *store.DB
	follower *follow.Follower
	log      *events.Log
	client   *node.Client
}

func newFixture(t *testing.T, db *store.DB, n *regtest.Node, coin chain.Coin, maxDepth int64, scripts ...[]byte) *fixture {
	t.Helper()
	params, err := chain.Lookup(coin, chain.Regtest)
	if err != nil {
		t.Fatal(err)
	}
	client, err := node.New(n.RPC())
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.TrackScripts(context.Background(), db, "test", scripts...); err != nil {
		t.Fatal(err)
	}
	log := events.NewLog(db)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := follow.New(db, client, params, log, follow.Config{MaxReorgDepth: maxDepth, PollInterval: 50 * time.Millisecond}, logger)
	return &fixture{db: db, follower: f, log: log, client: client}
}

// sync runs the follower until it is at the node's tip.
func (fx *fixture) sync(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for range 20 {
		if err := fx.follower.Sync(ctx); err != nil {
			t.Fatalf("sync: %v", err)
		}
		tip, err := fx.client.GetBestBlockHash(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fx.follower.Status().SyncedHash == tip {
			return
		}
	}
	t.Fatal("follower did not reach the node's tip")
}

func (fx *fixture) snapshot(t *testing.T) *follow.Snapshot {
	t.Helper()
	s, err := follow.TakeSnapshot(context.Background(), fx.db)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (fx *fixture) eventTypes(t *testing.T, after int64) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for {
		evs, err := fx.log.List(context.Background(), after, events.MaxLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return counts
		}
		for _, e := range evs {
			if e.ID <= after {
				t.Fatalf("event ids not increasing: %d after %d", e.ID, after)
			}
			after = e.ID
			counts[e.Type]++
		}
	}
}

func diffSnapshots(t *testing.T, what string, got, want *follow.Snapshot) {
	t.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	gv, wv := reflect.ValueOf(*got), reflect.ValueOf(*want)
	for i := 0; i < gv.NumField(); i++ {
		if !reflect.DeepEqual(gv.Field(i).Interface(), wv.Field(i).Interface()) {
			t.Errorf("%s: %s differs:\n got  %v\n want %v", what, gv.Type().Field(i).Name,
				trim(gv.Field(i).Interface()), trim(wv.Field(i).Interface()))
		}
	}
}

func trim(v any) string {
	s := fmt.Sprint(v)
	if len(s) > 600 {
		s = s[:600] + "…"
	}
	return s
}

// activity makes rounds of payments to, from and between tracked keys and to
// an untracked key, mining one block per round; the last round's payments stay
// in the mempool.
func activity(t *testing.T, n *regtest.Node, rounds int, a, b, other *regtest.Key) {
	t.Helper()
	ctx := context.Background()
	for i := range rounds {
		if _, _, err := n.Fund(ctx, a.PkScript(), int64(200_000+i*1000)); err != nil {
			t.Fatalf("round %d fund: %v", i, err)
		}
		if i%3 == 1 && n.Balance(a) > 300_000 {
			if _, err := n.SendFrom(ctx, a, []regtest.Output{{PkScript: b.PkScript(), Amount: 70_000}, {PkScript: other.PkScript(), Amount: 30_000}}); err != nil {
				t.Fatalf("round %d a->b: %v", i, err)
			}
		}
		if i%5 == 4 && n.Balance(b) > 100_000 {
			if _, err := n.SendFrom(ctx, b, []regtest.Output{{PkScript: other.PkScript(), Amount: 40_000}}); err != nil {
				t.Fatalf("round %d b->other: %v", i, err)
			}
		}
		if i < rounds-1 {
			if _, err := n.Mine(ctx, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// nodeKinds are the node implementations every follower test runs against;
// litecoind's half is skipped, by name, where it is not installed.
var nodeKinds = []struct {
	kind regtest.Kind
	coin chain.Coin
}{{regtest.KindBtcd, chain.BTC}, {regtest.KindLitecoind, chain.LTC}}

// TestFollowMatchesNode builds 300+ blocks of payments to and from tracked
// scripts (on Litecoin past MWEB activation at height 432), syncs them into
// each database, and cross-checks everything recorded against what the node
// reports over RPC.
func TestFollowMatchesNode(t *testing.T) {
	for _, nk := range nodeKinds {
		t.Run(nk.kind.String(), func(t *testing.T) { followMatchesNode(t, nk.kind, nk.coin) })
	}
}

func followMatchesNode(t *testing.T, kind regtest.Kind, coin chain.Coin) {
	n := regtest.StartT(t, regtest.Options{Kind: kind, PreMine: 101})
	a, b, other := n.NewKey(), n.NewKey(), n.NewKey()
	activity(t, n, 210, a, b, other)
	ctx := context.Background()
	if kind == regtest.KindLitecoind {
		// Cross MWEB activation, then keep paying on the MWEB-era chain.
		if _, err := n.Mine(ctx, 130); err != nil {
			t.Fatal(err)
		}
		activity(t, n, 15, a, b, other)
	}
	if tip, _ := n.Client().GetBlockCount(ctx); tip < 300 || (kind == regtest.KindLitecoind && tip < 445) {
		t.Fatalf("chain too short: %d", tip)
	}
	params, err := chain.Lookup(coin, chain.Regtest)
	if err != nil {
		t.Fatal(err)
	}
	tracked := [][]byte{a.PkScript(), b.PkScript(), n.MinerKey().PkScript()}
	want := scanNode(t, n.Client(), params, tracked)

	storetest.Each(t, func(t *testing.T, db *store.DB) {
		fx := newFixture(t, db, n, coin, 10, tracked...)
		fx.sync(t)
		tip, err := fx.client.GetBlockCount(ctx)
		if err != nil {
			t.Fatal(err)
		}
		outs, err := follow.Outputs(ctx, db, tip, 100)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		immature, mempoolOuts := 0, 0
		for _, o := range outs {
			got[fmt.Sprintf("%s:%d", o.TxID, o.Vout)] = fmt.Sprintf("%x:%d:%d:%s", o.Script, o.Amount, o.BlockHeight, o.SpentBy)
			if o.Coinbase && !o.Mature {
				immature++
				if o.Confirmations >= 100 {
					t.Errorf("coinbase %s with %d confirmations reported immature", o.TxID, o.Confirmations)
				}
			}
			if o.BlockHeight == 0 {
				mempoolOuts++
			}
		}
		if len(got) != len(want) {
			t.Errorf("recorded %d tracked outputs, node shows %d", len(got), len(want))
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("output %s: recorded %q, node %q", k, got[k], v)
			}
		}
		if immature != 99 && immature != 100 {
			t.Errorf("%d immature coinbase outputs, want the last 99 or 100", immature)
		}
		if mempoolOuts == 0 {
			t.Error("no mempool outputs recorded although the last round was not mined")
		}
		// The node agrees on what the chain has spent. (btcd's gettxout
		// ignores mempool spends, so those are checked against the mempool.)
		pool, err := fx.client.GetRawMempool(ctx)
		if err != nil {
			t.Fatal(err)
		}
		inPool := map[string]bool{}
		for _, id := range pool {
			inPool[id] = true
		}
		for _, o := range outs {
			if o.BlockHeight == 0 {
				continue
			}
			txo, err := fx.client.GetTxOut(ctx, o.TxID, o.Vout, false)
			if err != nil {
				t.Fatal(err)
			}
			spentOnChain := o.SpentBy != "" && !inPool[o.SpentBy]
			if (txo == nil) != spentOnChain {
				t.Errorf("output %s:%d: node unspent=%v, recorded spent by %q", o.TxID, o.Vout, txo != nil, o.SpentBy)
			}
		}
		counts := fx.eventTypes(t, 0)
		if counts[events.BlockConnected] != int(tip)+1 {
			t.Errorf("%d block.connected events for %d blocks", counts[events.BlockConnected], tip+1)
		}
		// A second sync changes nothing.
		before := fx.snapshot(t)
		fx.sync(t)
		diffSnapshots(t, "resync", fx.snapshot(t), before)
	})
}

// scanNode independently computes, from raw blocks and the mempool, every
// output paying a tracked script: "txid:vout" → "script:amount:height:spender".
// Blocks are decoded with the chain's parser (Litecoin's MWEB format needs
// it); everything else is the test's own bookkeeping.
func scanNode(t *testing.T, c *node.Client, params *chain.Params, tracked [][]byte) map[string]string {
	t.Helper()
	ctx := context.Background()
	isTracked := func(s []byte) bool {
		for _, x := range tracked {
			if bytes.Equal(x, s) {
				return true
			}
		}
		return false
	}
	type out struct {
		script         []byte
		amount, height int64
		spender        string
	}
	outs := map[wire.OutPoint]*out{}
	apply := func(tx *wire.MsgTx, height int64) {
		txid := tx.TxHash()
		if !blockchain.IsCoinBaseTx(tx) {
			for _, in := range tx.TxIn {
				if o, ok := outs[in.PreviousOutPoint]; ok {
					o.spender = txid.String()
				}
			}
		}
		for i, o := range tx.TxOut {
			if isTracked(o.PkScript) {
				outs[wire.OutPoint{Hash: txid, Index: uint32(i)}] = &out{o.PkScript, o.Value, height, ""}
			}
		}
	}
	tip, err := c.GetBlockCount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for h := int64(0); h <= tip; h++ {
		hash, err := c.GetBlockHash(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := c.GetRawBlock(ctx, hash)
		if err != nil {
			t.Fatal(err)
		}
		blk, err := params.ParseBlock(raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, tx := range blk.Transactions {
			apply(tx, h)
		}
	}
	ids, err := c.GetRawMempool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Apply mempool parents before children.
	var pool []*wire.MsgTx
	for _, id := range ids {
		raw, err := c.GetRawTransaction(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := params.ParseTx(raw)
		if err != nil {
			t.Fatal(err)
		}
		pool = append(pool, tx)
	}
	for range len(pool) {
		for _, tx := range pool {
			apply(tx, 0)
		}
	}
	res := map[string]string{}
	for op, o := range outs {
		res[op.String()] = fmt.Sprintf("%x:%d:%d:%s", o.script, o.amount, o.height, o.spender)
	}
	return res
}

// TestReorg orphans blocks holding tracked payments at depths 1 and 3: the
// follower's state must equal a fresh sync of the winning chain, and the
// event log must show the reorg.
func TestReorg(t *testing.T) {
	for _, nk := range nodeKinds {
		for _, depth := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s/depth%d", nk.kind, depth), func(t *testing.T) { reorg(t, nk.kind, nk.coin, depth) })
		}
	}
}

func reorg(t *testing.T, kind regtest.Kind, coin chain.Coin, depth int) {
	n := regtest.StartT(t, regtest.Options{Kind: kind, PreMine: 101})
	a, b, other := n.NewKey(), n.NewKey(), n.NewKey()
	activity(t, n, 10, a, b, other)
	tracked := [][]byte{a.PkScript(), b.PkScript(), n.MinerKey().PkScript()}
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		fx := newFixture(t, db, n, coin, 10, tracked...)
		fx.sync(t)
		// Tracked payments go into the blocks about to be orphaned.
		for range depth {
			if _, _, err := n.Fund(ctx, a.PkScript(), 123_000); err != nil {
				t.Fatal(err)
			}
			if _, err := n.Mine(ctx, 1); err != nil {
				t.Fatal(err)
			}
		}
		fx.sync(t)
		mark, _ := fx.log.LastID(ctx)
		if _, _, err := n.Reorg(ctx, depth, func() error {
			_, _, err := n.Fund(ctx, b.PkScript(), 77_000) // only on the winning branch
			return err
		}); err != nil {
			t.Fatal(err)
		}
		fx.sync(t)
		fresh := newFixture(t, storetest.Open(t, storetest.NewSQLiteDSN(t)), n, coin, 10, tracked...)
		fresh.sync(t)
		diffSnapshots(t, "after reorg vs fresh sync", fx.snapshot(t), fresh.snapshot(t))

		counts := fx.eventTypes(t, mark)
		if counts[events.ChainReorg] != 1 || counts[events.BlockDisconnected] != depth || counts[events.TxReorged] < depth {
			t.Errorf("reorg events: %v", counts)
		}
		if got := fx.follower.Counters().Reorgs; got != 1 {
			t.Errorf("reorg counter %d", got)
		}
	})
}

// TestReorgTooDeepHalts makes a reorg deeper than allowed: the follower must
// stop with ErrReorgTooDeep and leave its state untouched.
func TestReorgTooDeepHalts(t *testing.T) {
	n := regtest.StartT(t, regtest.Options{PreMine: 101})
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		fx := newFixture(t, db, n, chain.BTC, 2, n.MinerKey().PkScript())
		fx.sync(t)
		before := fx.snapshot(t)
		if _, _, err := n.Reorg(ctx, 3, nil); err != nil {
			t.Fatal(err)
		}
		err := fx.follower.Sync(ctx)
		if !errors.Is(err, follow.ErrReorgTooDeep) {
			t.Fatalf("sync after a depth-3 reorg with max 2: %v", err)
		}
		diffSnapshots(t, "halted follower", fx.snapshot(t), before)
		// Run reports the halt and records an alert event.
		runErr := fx.follower.Run(ctx)
		if !errors.Is(runErr, follow.ErrReorgTooDeep) || fx.follower.Status().Halted == "" {
			t.Fatalf("Run: %v, status %+v", runErr, fx.follower.Status())
		}
		if fx.eventTypes(t, 0)[events.FollowerHalted] != 1 {
			t.Error("no alert event for the halt")
		}
		// Put the node back on our branch for the next engine's subtest.
		tipHash := before.CursorHash
		_ = tipHash
	})
}

func assertStatus(t *testing.T, db *store.DB, txid, want string) {
	t.Helper()
	var got string
	if err := db.QueryRowContext(context.Background(), `SELECT status FROM txs WHERE txid = $1`, txid).Scan(&got); err != nil {
		t.Fatalf("tx %s: %v", txid, err)
	}
	if got != want {
		t.Fatalf("tx %s status %q, want %q", txid, got, want)
	}
}

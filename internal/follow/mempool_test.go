package follow_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"testing"
	"time"

	"github.com/btcsuite/btcd/wire"

	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/regtest"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// doubleSpend replaces txid's payment with one to payTo (see
// regtest.Node.DoubleSpend).
func doubleSpend(t *testing.T, n *regtest.Node, txid string, key *regtest.Key, payTo []byte) []byte {
	t.Helper()
	raw, err := n.DoubleSpend(context.Background(), txid, key, payTo, 5_000)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestMempoolReplacedAndConflicted: a tracked mempool payment replaced by
// fee (BIP125) becomes "replaced"; one double-spent by a block mined
// elsewhere becomes "conflicted".
func TestMempoolReplacedAndConflicted(t *testing.T) {
	n1 := regtest.StartT(t, regtest.Options{PreMine: 101})
	n2 := regtest.StartT(t, regtest.Options{})
	ctx := context.Background()
	a, b, other := n1.NewKey(), n1.NewKey(), n1.NewKey()
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		fx := newFixture(t, db, n1, chain.BTC, 10, a.PkScript(), b.PkScript())
		fx.sync(t)

		// Replaced: the same inputs pay b with a higher fee.
		tx1, _, err := n1.Fund(ctx, a.PkScript(), 100_000)
		if err != nil {
			t.Fatal(err)
		}
		fx.sync(t)
		assertStatus(t, db, tx1, "mempool")
		tx2, err := n1.Client().SendRawTransaction(ctx, doubleSpend(t, n1, tx1, n1.MinerKey(), b.PkScript()))
		if err != nil {
			t.Fatalf("replacement rejected: %v", err)
		}
		fx.sync(t)
		assertStatus(t, db, tx1, "replaced")
		assertStatus(t, db, tx2, "mempool")
		if _, err := n1.Mine(ctx, 1); err != nil {
			t.Fatal(err)
		}
		fx.sync(t)
		assertStatus(t, db, tx2, "confirmed")
		assertStatus(t, db, tx1, "replaced")

		// A rebroadcast's stale view of a confirmed transaction (the node
		// answers "already in chain") must not take it out of its block.
		raw2, err := n1.Client().GetRawTransaction(ctx, tx2)
		if err != nil {
			t.Fatal(err)
		}
		var msg2 wire.MsgTx
		if err := msg2.Deserialize(bytes.NewReader(raw2)); err != nil {
			t.Fatal(err)
		}
		if err := fx.follower.AddMempoolTx(ctx, &msg2); err != nil {
			t.Fatal(err)
		}
		fx.sync(t)
		assertStatus(t, db, tx2, "confirmed")

		// Conflicted: while the nodes are apart, n2 mines a double spend of a
		// payment sitting in n1's mempool; rejoined, n1 takes n2's block.
		if err := n1.Connect(ctx, n2); err != nil {
			t.Fatal(err)
		}
		if err := n1.WaitSynced(ctx, n2); err != nil {
			t.Fatal(err)
		}
		if err := n1.Disconnect(ctx, n2); err != nil {
			t.Fatal(err)
		}
		tx3, _, err := n1.Fund(ctx, a.PkScript(), 90_000)
		if err != nil {
			t.Fatal(err)
		}
		fx.sync(t)
		assertStatus(t, db, tx3, "mempool")
		if _, err := n2.Client().SendRawTransaction(ctx, doubleSpend(t, n1, tx3, n1.MinerKey(), other.PkScript())); err != nil {
			t.Fatal(err)
		}
		if _, err := n2.Mine(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if err := n1.Connect(ctx, n2); err != nil {
			t.Fatal(err)
		}
		if err := n2.WaitSynced(ctx, n1); err != nil {
			t.Fatal(err)
		}
		fx.sync(t)
		assertStatus(t, db, tx3, "conflicted")
		counts := fx.eventTypes(t, 0)
		if counts[events.TxReplaced] != 1 || counts[events.TxConflicted] != 1 {
			t.Errorf("events: %v", counts)
		}
		if err := n1.Disconnect(ctx, n2); err != nil {
			t.Fatal(err)
		}
	})
}

// TestMempoolDropped runs on Litecoin Core started without a persisted
// mempool: a tracked payment the restarted node has forgotten becomes
// "dropped", and "confirmed" once it is rebroadcast and mined.
func TestMempoolDropped(t *testing.T) {
	n := regtest.StartT(t, regtest.Options{Kind: regtest.KindLitecoind, PreMine: 101})
	a := n.NewKey()
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		fx := newFixture(t, db, n, chain.LTC, 10, a.PkScript())
		fx.sync(t)
		txid, _, err := n.Fund(ctx, a.PkScript(), 55_000)
		if err != nil {
			t.Fatal(err)
		}
		fx.sync(t)
		assertStatus(t, db, txid, "mempool")
		raw, err := n.Client().GetRawTransaction(ctx, txid)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		waitMempoolEmpty(t, n)
		fx.sync(t)
		assertStatus(t, db, txid, "dropped")
		if _, err := n.Client().SendRawTransaction(ctx, raw); err != nil {
			t.Fatalf("rebroadcast %s: %v", hex.EncodeToString(raw[:8]), err)
		}
		if _, err := n.Mine(ctx, 1); err != nil {
			t.Fatal(err)
		}
		fx.sync(t)
		assertStatus(t, db, txid, "confirmed")
		counts := fx.eventTypes(t, 0)
		if counts[events.TxDropped] != 1 {
			t.Errorf("events: %v", counts)
		}
	})
}

func waitMempoolEmpty(t *testing.T, n *regtest.Node) {
	t.Helper()
	for range 50 {
		ids, err := n.Client().GetRawMempool(context.Background())
		if err == nil && len(ids) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the restarted node still has a mempool; it must run with -persistmempool=0")
}

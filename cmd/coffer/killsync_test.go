//go:build unix

package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/follow"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/regtest"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// killChainHeight is how long a chain TestKillDuringSync builds: past
// segwit activation on btcd regtest (432), with payments all the way.
const killChainHeight = 620

// kills is how many times TestKillDuringSync SIGKILLs a syncing coffer.
const kills = 6

// TestKillDuringSync SIGKILLs `coffer serve` at random points while it
// syncs a 600-block chain full of payments to and from tracked scripts,
// restarting it each time, then lets it finish and requires exactly the
// state and events a clean, uninterrupted sync produces.
func TestKillDuringSync(t *testing.T) {
	n := regtest.StartT(t, regtest.Options{PreMine: 101})
	start := time.Now()
	tracked := buildPaymentChain(t, n, killChainHeight)
	ctx := context.Background()
	tip, err := n.Client().GetBlockCount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := n.Client().GetRawMempool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built a %d-block chain (%d txs left in the mempool) in %s", tip, len(pool), time.Since(start).Round(time.Millisecond))

	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) { killDuringSync(t, n, engine, tracked, tip) })
	}
}

func killDuringSync(t *testing.T, n *regtest.Node, engine string, tracked [][]byte, tip int64) {
	ctx := context.Background()
	// The reference: a clean in-process sync into a fresh database.
	refDB := storetest.Open(t, storetest.NewDSN(t, engine))
	refStart := time.Now()
	cleanSync(t, n, refDB, tracked)
	want, err := follow.TakeSnapshot(ctx, refDB)
	if err != nil {
		t.Fatal(err)
	}
	if want.CursorHeight != tip {
		t.Fatalf("reference sync ended at %d, node tip %d", want.CursorHeight, tip)
	}
	wantMempool := countStatus(want, "mempool")
	t.Logf("reference sync: %s, %d tracked txs (%d in the mempool)", time.Since(refStart).Round(time.Millisecond), len(want.Txs), wantMempool)

	dir := t.TempDir()
	dsn := storetest.NewDSN(t, engine)
	db := storetest.Open(t, dsn)
	if err := follow.TrackScripts(ctx, db, "e2e", tracked...); err != nil {
		t.Fatal(err)
	}
	rpc := n.RPC()
	listen := freeAddr(t)
	env := serveEnv(dir, dsn, listen, rpc.URL, rpc.User, rpc.Password, "COFFER_FOLLOW_PREFETCH=1")

	// Kill points: random heights spread over 5%..90% of the chain (so each
	// run makes progress and none can finish the sync), each hit plus a
	// random few milliseconds so the kill lands anywhere in a block's work.
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("kill points seed %d", seed)
	lo, hi := tip*5/100, tip*90/100
	span := (hi - lo) / kills
	var prev int64 = -1
	for i := range kills {
		// At least a few blocks past the last kill, which may have
		// overshot this target: every run must apply blocks.
		target := max(lo+int64(i)*span+rng.Int64N(span), prev+5)
		p := startCoffer(t, dir, env, "serve")
		var h int64
		waitUntil(t, p, 60*time.Second, 2*time.Millisecond, fmt.Sprintf("cursor to reach %d", target), func() (bool, string) {
			h = cursorHeight(t, db)
			return h >= target, fmt.Sprintf("cursor at %d", h)
		})
		time.Sleep(time.Duration(rng.IntN(15_000)) * time.Microsecond)
		p.kill()
		after := cursorHeight(t, db)
		t.Logf("kill %d: target %d, cursor %d when seen, %d after SIGKILL (tip %d)", i+1, target, h, after, tip)
		if after >= tip {
			t.Fatalf("kill %d came after the sync had finished (cursor %d, tip %d): not a kill during sync", i+1, after, tip)
		}
		if after <= prev {
			t.Fatalf("kill %d: cursor %d did not move past %d: the restarted coffer made no progress", i+1, after, prev)
		}
		prev = after
	}

	// Let it finish, then stop it gracefully.
	p := startCoffer(t, dir, env, "serve")
	base := "http://" + listen
	waitSynced(t, p, base, 60*time.Second)
	waitUntil(t, p, 30*time.Second, 20*time.Millisecond, "the mempool to be recorded", func() (bool, string) {
		s, err := follow.TakeSnapshot(ctx, db)
		if err != nil {
			return false, err.Error()
		}
		return countStatus(s, "mempool") == wantMempool, fmt.Sprintf("%d mempool txs, want %d", countStatus(s, "mempool"), wantMempool)
	})
	p.stop(syscall.SIGTERM, 30*time.Second)

	got, err := follow.TakeSnapshot(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	diffSnapshot(t, got, want)
	checkEvents(t, db, refDB)
}

// buildPaymentChain mines a chain up to height with payments in most
// batches: harness funds to tracked keys, tracked keys paying each other and
// an untracked key, and (once segwit is active) the same with P2WPKH
// scripts. The last round of payments stays in the mempool. It returns the
// tracked scripts, the miner's among them, so every coinbase and every
// harness payment (their change goes back to the miner's script) counts.
func buildPaymentChain(t *testing.T, n *regtest.Node, height int64) [][]byte {
	t.Helper()
	ctx := context.Background()
	a, b, c, other := n.NewKey(), n.NewKey(), n.NewKey(), n.NewKey()
	tracked := [][]byte{a.PkScript(), b.PkScript(), a.WitnessPkScript(), c.WitnessPkScript(), n.MinerKey().PkScript()}
	rng := rand.New(rand.NewPCG(7, 7))
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	tip, err := n.Client().GetBlockCount(ctx)
	must("getblockcount", err)
	const segwitActive = 432
	for round := 0; ; round++ {
		_, _, err := n.Fund(ctx, a.PkScript(), 400_000+int64(round))
		must("fund a", err)
		_, _, err = n.Fund(ctx, b.PkScript(), 150_000)
		must("fund b", err)
		if n.Balance(a) > 600_000 {
			_, err = n.SendFrom(ctx, a, []regtest.Output{{PkScript: b.PkScript(), Amount: 90_000}, {PkScript: other.PkScript(), Amount: 60_000}})
			must("a pays b and other", err)
		}
		if round%2 == 1 && n.Balance(b) > 300_000 {
			_, err = n.SendFrom(ctx, b, []regtest.Output{{PkScript: other.PkScript(), Amount: 70_000}, {PkScript: a.PkScript(), Amount: 20_000}})
			must("b pays other and a", err)
		}
		if tip > segwitActive+1 {
			_, _, err = n.Fund(ctx, c.WitnessPkScript(), 250_000)
			must("fund c", err)
			_, _, err = n.Fund(ctx, a.WitnessPkScript(), 120_000)
			must("fund a (witness)", err)
			if n.Balance(c) > 400_000 {
				_, err = n.SendFrom(ctx, c, []regtest.Output{{PkScript: a.WitnessPkScript(), Amount: 50_000}, {PkScript: other.WitnessPkScript(), Amount: 40_000}})
				must("c pays a and other", err)
			}
		}
		if tip >= height {
			return tracked // this round stays in the mempool
		}
		batch := min(1+rng.Int64N(12), height-tip)
		if tip < segwitActive && tip+batch > segwitActive {
			batch = segwitActive + 1 - tip // first witness payments right after activation
		}
		_, err = n.Mine(ctx, int(batch))
		must("mine", err)
		tip += batch
	}
}

// cleanSync syncs db from scratch to the node's tip in this process.
func cleanSync(t *testing.T, n *regtest.Node, db *store.DB, tracked [][]byte) {
	t.Helper()
	ctx := context.Background()
	if err := follow.TrackScripts(ctx, db, "e2e", tracked...); err != nil {
		t.Fatal(err)
	}
	client, err := node.New(n.RPC())
	if err != nil {
		t.Fatal(err)
	}
	params, err := chain.Lookup(chain.BTC, chain.Regtest)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := follow.New(db, client, params, events.NewLog(db), follow.Config{PollInterval: 50 * time.Millisecond}, logger)
	best, err := client.GetBestBlockHash(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := f.Sync(ctx); err != nil {
			t.Fatalf("reference sync: %v", err)
		}
		if f.Status().SyncedHash == best {
			return
		}
	}
	t.Fatalf("reference sync stopped at %d, short of %s", f.Status().SyncedHeight, best)
}

func countStatus(s *follow.Snapshot, status string) int {
	n := 0
	for _, tx := range s.Txs {
		if strings.Split(tx, ":")[1] == status {
			n++
		}
	}
	return n
}

// diffSnapshot reports each field of got that differs from want, with the
// first few differing entries of list fields.
func diffSnapshot(t *testing.T, got, want *follow.Snapshot) {
	t.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	gv, wv := reflect.ValueOf(*got), reflect.ValueOf(*want)
	for i := range gv.NumField() {
		g, w := gv.Field(i).Interface(), wv.Field(i).Interface()
		if reflect.DeepEqual(g, w) {
			continue
		}
		name := gv.Type().Field(i).Name
		gl, ok1 := g.([]string)
		wl, ok2 := w.([]string)
		if !ok1 || !ok2 {
			t.Errorf("snapshot after kills: %s = %v, clean sync has %v", name, g, w)
			continue
		}
		extra, missing := listDiff(gl, wl), listDiff(wl, gl)
		t.Errorf("snapshot after kills: %s has %d entries, clean sync %d; %d extra %v; %d missing %v",
			name, len(gl), len(wl), len(extra), firstN(extra, 5), len(missing), firstN(missing, 5))
	}
}

// listDiff returns the entries of a (with multiplicity) not in b.
func listDiff(a, b []string) []string {
	have := map[string]int{}
	for _, s := range b {
		have[s]++
	}
	var out []string
	for _, s := range a {
		if have[s] > 0 {
			have[s]--
			continue
		}
		out = append(out, s)
	}
	return out
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// checkEvents requires db's event log to be what a clean sync writes: ids
// strictly increasing, one block.connected per applied block and none for
// any other height, one tx.seen per txid, and the same events (type and
// data) as the reference log, in any order.
func checkEvents(t *testing.T, db, ref *store.DB) {
	t.Helper()
	got := readEvents(t, db)
	want := readEvents(t, ref)

	ctx := context.Background()
	rows, err := db.QueryContext(ctx, `SELECT height FROM chain_blocks`)
	if err != nil {
		t.Fatal(err)
	}
	applied := map[int64]bool{}
	for rows.Next() {
		var h int64
		if err := rows.Scan(&h); err != nil {
			t.Fatal(err)
		}
		applied[h] = true
	}
	rows.Close()

	connected := map[int64]int{}
	seen := map[string]int{}
	var lastID int64
	for _, e := range got {
		if e.ID <= lastID {
			t.Fatalf("event id %d follows %d: ids not strictly increasing", e.ID, lastID)
		}
		lastID = e.ID
		var d struct {
			Height *int64 `json:"height"`
			TxID   string `json:"txid"`
		}
		if err := json.Unmarshal(e.Data, &d); err != nil {
			t.Fatalf("event %d data %s: %v", e.ID, e.Data, err)
		}
		switch e.Type {
		case events.BlockConnected:
			if d.Height == nil {
				t.Fatalf("block.connected event %d has no height: %s", e.ID, e.Data)
			}
			connected[*d.Height]++
		case events.TxSeen:
			seen[d.TxID]++
		}
	}
	for h := range applied {
		if connected[h] != 1 {
			t.Errorf("height %d: %d block.connected events, want 1", h, connected[h])
		}
	}
	for h, c := range connected {
		if !applied[h] {
			t.Errorf("height %d: %d block.connected events but no such block applied", h, c)
		}
	}
	var dupSeen []string
	for id, c := range seen {
		if c != 1 {
			dupSeen = append(dupSeen, fmt.Sprintf("%s×%d", id, c))
		}
	}
	sort.Strings(dupSeen)
	if len(dupSeen) > 0 {
		t.Errorf("%d txids with more than one tx.seen event: %v", len(dupSeen), firstN(dupSeen, 5))
	}

	key := func(e events.Event) string { return e.Type + " " + string(e.Data) }
	var gk, wk []string
	for _, e := range got {
		gk = append(gk, key(e))
	}
	for _, e := range want {
		wk = append(wk, key(e))
	}
	if extra, missing := listDiff(gk, wk), listDiff(wk, gk); len(extra)+len(missing) > 0 {
		t.Errorf("event log after kills has %d events, clean sync %d; %d extra %v; %d missing %v",
			len(gk), len(wk), len(extra), firstN(extra, 5), len(missing), firstN(missing, 5))
	}
	t.Logf("%d events, %d blocks, %d tracked txs seen", len(got), len(applied), len(seen))
}

func readEvents(t *testing.T, db *store.DB) []events.Event {
	t.Helper()
	log := events.NewLog(db)
	var all []events.Event
	var after int64
	for {
		evs, err := log.List(context.Background(), after, events.MaxLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return all
		}
		all = append(all, evs...)
		after = evs[len(evs)-1].ID
	}
}

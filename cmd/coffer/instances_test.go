//go:build unix

package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/api"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/regtest"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/webhook"
)

// countingReceiver answers every webhook 204 and counts requests per
// webhook-id.
type countingReceiver struct {
	mu    sync.Mutex
	count map[string]int
}

func (rc *countingReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	rc.count[r.Header.Get("webhook-id")]++
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rc *countingReceiver) snapshot() map[string]int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make(map[string]int, len(rc.count))
	for k, v := range rc.count {
		out[k] = v
	}
	return out
}

// TestSeveralInstances runs two `coffer serve` on one PostgreSQL database:
// exactly one leads (follows the chain, pays withdrawals), both report the
// synced height, webhook deliveries are made once in total across both,
// every block is applied once, and when the leader is SIGKILLed the other
// takes over within a few seconds and follows new blocks.
func TestSeveralInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("TestSeveralInstances runs a regtest btcd and two coffer serve processes; skipped in -short mode")
	}
	if os.Getenv(storetest.EnvPostgres) == "" {
		t.Skipf("TestSeveralInstances needs PostgreSQL (leader election is a PostgreSQL advisory lock): %s is not set", storetest.EnvPostgres)
	}
	start := time.Now()
	ctx := context.Background()
	n := regtest.StartT(t, regtest.Options{})
	rc := &countingReceiver{count: map[string]int{}}
	recv := httptest.NewServer(rc)
	t.Cleanup(recv.Close)

	dsn := storetest.NewPostgresDSN(t)
	db := storetest.Open(t, dsn)
	rpc := n.RPC()
	type instance struct {
		name string
		base string
		p    *proc
	}
	var insts []*instance
	for _, name := range []string{"A", "B"} {
		dir := t.TempDir()
		listen := freeAddr(t)
		env := serveEnv(dir, dsn, listen, rpc.URL, rpc.User, rpc.Password,
			"COFFER_WEBHOOKS_SCHEDULE=0s,300ms"+strings.Repeat(",1s", 20))
		insts = append(insts, &instance{name: name, base: "http://" + listen, p: startCoffer(t, dir, env, "serve")})
	}
	for _, in := range insts {
		waitSynced(t, in.p, in.base, 60*time.Second)
	}

	// Exactly one leads, and each says so in its log.
	var leader, other *instance
	waitUntil(t, nil, 10*time.Second, 50*time.Millisecond, "exactly one leader", func() (bool, string) {
		var leaders []*instance
		for _, in := range insts {
			if status(t, in.base).Leader {
				leaders = append(leaders, in)
			}
		}
		if len(leaders) != 1 {
			return false, fmt.Sprintf("%d leaders", len(leaders))
		}
		leader = leaders[0]
		return true, ""
	})
	for _, in := range insts {
		if in != leader {
			other = in
		}
	}
	waitUntil(t, nil, 5*time.Second, 50*time.Millisecond, "the log lines", func() (bool, string) {
		return strings.Contains(leader.p.stderr.String(), "leading: following the chain and paying withdrawals") &&
				strings.Contains(other.p.stderr.String(), "another instance leads; serving the API only"),
			"missing"
	})
	t.Logf("%s leads, %s serves the API only", leader.name, other.name)
	if st := status(t, other.base); st.Leader {
		t.Fatalf("%s also leads", other.name)
	}

	// A webhook registered on the non-leader; blocks mined.
	var ep webhook.Endpoint
	whSend(t, "POST", other.base+"/v1/webhooks",
		map[string]any{"url": recv.URL + "/coffer", "event_types": []string{"block.connected"}}, &ep, 201)
	var after int64
	if err := db.QueryRowContext(ctx, `SELECT after_event_id FROM webhook_endpoints WHERE id = $1`, ep.ID).Scan(&after); err != nil {
		t.Fatal(err)
	}
	const firstBlocks = 6
	if _, err := n.Mine(ctx, firstBlocks); err != nil {
		t.Fatal(err)
	}
	for _, in := range insts {
		st := waitSynced(t, in.p, in.base, 30*time.Second)
		if in == other && st.Leader {
			t.Fatalf("%s leads after mining", other.name)
		}
	}
	want := blockConnectedIDs(t, leader.base, after)
	if len(want) != firstBlocks {
		t.Fatalf("%d block.connected events after the endpoint, want %d (each block applied once)", len(want), firstBlocks)
	}
	waitDelivered(t, rc, want)

	// SIGKILL the leader: the other takes over.
	if err := leader.p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, ok := leader.p.wait(10 * time.Second); !ok {
		t.Fatal("the leader did not die of SIGKILL")
	}
	killed := time.Now()
	waitUntil(t, other.p, 10*time.Second, 50*time.Millisecond, other.name+" to take over", func() (bool, string) {
		st := status(t, other.base)
		return st.Leader, "leader=false"
	})
	t.Logf("%s took over %s after the leader was killed", other.name, time.Since(killed).Round(time.Millisecond))
	const laterBlocks = 3
	if _, err := n.Mine(ctx, laterBlocks); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, other.p, other.base, 30*time.Second)
	want = blockConnectedIDs(t, other.base, after)
	if len(want) != firstBlocks+laterBlocks {
		t.Fatalf("%d block.connected events after the endpoint, want %d", len(want), firstBlocks+laterBlocks)
	}
	waitDelivered(t, rc, want)
	if !strings.Contains(other.p.stderr.String(), "leading: following the chain and paying withdrawals") {
		t.Fatalf("%s took over without saying so", other.name)
	}

	// The instances that made the attempts.
	rows, err := db.QueryContext(ctx, `SELECT instance, count(*) FROM webhook_attempts GROUP BY instance ORDER BY instance`)
	if err == nil {
		var parts []string
		for rows.Next() {
			var inst string
			var c int
			if rows.Scan(&inst, &c) == nil {
				parts = append(parts, fmt.Sprintf("%s: %d", inst, c))
			}
		}
		rows.Close()
		t.Logf("attempts by instance: %s", strings.Join(parts, ", "))
	}
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
	other.p.stop(syscall.SIGTERM, 30*time.Second)
}

// blockConnectedIDs are the webhook-ids of the block.connected events after
// the given id, failing the test if any height appears twice.
func blockConnectedIDs(t *testing.T, base string, after int64) []string {
	t.Helper()
	var page api.EventsResponse
	whSend(t, "GET", fmt.Sprintf("%s/v1/events?after=%d&limit=1000", base, after), nil, &page, 200)
	var ids []string
	heights := map[int64]bool{}
	for _, ev := range page.Events {
		if ev.Type != events.BlockConnected {
			continue
		}
		var d struct {
			Height int64 `json:"height"`
		}
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatal(err)
		}
		if heights[d.Height] {
			t.Fatalf("block %d connected twice: two instances followed the chain", d.Height)
		}
		heights[d.Height] = true
		ids = append(ids, webhook.WebhookID(ev.ID))
	}
	return ids
}

// waitDelivered waits until every webhook-id in want reached the receiver,
// then requires each exactly once and nothing else.
func waitDelivered(t *testing.T, rc *countingReceiver, want []string) {
	t.Helper()
	waitUntil(t, nil, 30*time.Second, 50*time.Millisecond, "every event at the receiver", func() (bool, string) {
		got := rc.snapshot()
		missing := 0
		for _, id := range want {
			if got[id] == 0 {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("%d of %d not delivered", missing, len(want))
	})
	time.Sleep(500 * time.Millisecond) // a duplicate would show up now
	got := rc.snapshot()
	if len(got) != len(want) {
		t.Fatalf("the receiver got %d webhook-ids, want %d: %v", len(got), len(want), got)
	}
	for _, id := range want {
		if got[id] != 1 {
			t.Fatalf("%s delivered %d times, want once: %v", id, got[id], got)
		}
	}
}

//go:build unix

package main_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/api"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/follow"
	"github.com/coffer/coffer/internal/regtest"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// outageChain starts coffer's btcd with a 300-block chain of payments to a
// tracked key and a peer btcd holding a copy of it. btcd deletes its regtest
// chain whenever it starts, so a restarted node gets the chain back from the
// peer, as a real node recovering from a crash would from the network.
func outageChain(t *testing.T) (n, peer *regtest.Node, tracked [][]byte) {
	t.Helper()
	ctx := context.Background()
	n = regtest.StartT(t, regtest.Options{PreMine: 101})
	key, other := n.NewKey(), n.NewKey()
	for i := range 20 {
		if _, _, err := n.Fund(ctx, key.PkScript(), 100_000+int64(i)); err != nil {
			t.Fatal(err)
		}
		if i%4 == 3 {
			if _, err := n.SendFrom(ctx, key, []regtest.Output{{PkScript: other.PkScript(), Amount: 150_000}}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := n.Mine(ctx, 10); err != nil {
			t.Fatal(err)
		}
	}
	peer = regtest.StartT(t, regtest.Options{})
	// n connects to peer (not the other way round), so after a restart
	// n has no peers until restoreChain connects it again.
	if err := n.Connect(ctx, peer); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitSynced(ctx, peer); err != nil {
		t.Fatal(err)
	}
	return n, peer, [][]byte{key.PkScript(), n.MinerKey().PkScript()}
}

// restoreChain restarts the killed node n, lets it download the chain from
// peer and mines a few blocks on top; it returns the new tip height.
func restoreChain(t *testing.T, n, peer *regtest.Node, hold func(restarted time.Time)) int64 {
	t.Helper()
	ctx := context.Background()
	restarted := time.Now()
	if err := n.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if hold != nil {
		hold(restarted)
	}
	if err := n.Connect(ctx, peer); err != nil {
		t.Fatal(err)
	}
	if err := peer.WaitSynced(ctx, n); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Mine(ctx, 5); err != nil {
		t.Fatal(err)
	}
	tip, err := n.Client().GetBlockCount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return tip
}

// TestNodeOutageDuringSync kills coffer's node while coffer syncs from it:
// /readyz must turn 503 naming the node while /v1/status keeps answering,
// and once the node is back (with more blocks) coffer must catch up by
// itself, without a restart and without unwinding anything.
//
// Coffer reaches the node through a proxy in the test, closed while the
// restarted btcd downloads its chain again: to coffer the node is simply
// down and then back with its chain, as a node that keeps its chain across
// a crash would be (TestNodeReturnsBehind covers a node that does not).
func TestNodeOutageDuringSync(t *testing.T) {
	ctx := context.Background()
	n, peer, tracked := outageChain(t)
	proxy := startProxy(t, n.RPC().URL)

	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			dsn := storetest.NewDSN(t, engine)
			db := storetest.Open(t, dsn)
			if err := follow.TrackScripts(ctx, db, "e2e", tracked...); err != nil {
				t.Fatal(err)
			}
			tip, err := n.Client().GetBlockCount(ctx)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			listen := freeAddr(t)
			base := "http://" + listen
			rpc := n.RPC()
			p := startCoffer(t, dir, serveEnv(dir, dsn, listen, proxy.url(), rpc.User, rpc.Password,
				"COFFER_FOLLOW_PREFETCH=1", "COFFER_NODE_TIMEOUT=2s"), "serve")
			waitUntil(t, p, 60*time.Second, 2*time.Millisecond, "the sync to get going", func() (bool, string) {
				h := cursorHeight(t, db)
				return h >= tip/3, fmt.Sprintf("cursor at %d", h)
			})
			n.Kill()
			t.Logf("node killed with coffer at %d of %d", cursorHeight(t, db), tip)
			checkNodeDown(t, p, base)
			if h := cursorHeight(t, db); h >= tip {
				t.Fatalf("coffer reached the tip (%d) although the node was killed at %d", h, tip)
			}

			proxy.setOpen(false)
			nodeTip := restoreChain(t, n, peer, nil)
			proxy.setOpen(true)

			var ready api.ReadyResponse
			waitUntil(t, p, 60*time.Second, 100*time.Millisecond, "/readyz to recover", func() (bool, string) {
				code, body, err := getJSON(base+"/readyz", &ready)
				if err != nil {
					return false, err.Error()
				}
				return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
			})
			st := waitSynced(t, p, base, 30*time.Second)
			if st.Synced.Height != nodeTip {
				t.Errorf("after the outage: synced %d, node tip %d", st.Synced.Height, nodeTip)
			}
			// The error of the outage goes once a sync pass succeeds.
			waitUntil(t, p, 10*time.Second, 50*time.Millisecond, "last_error to clear", func() (bool, string) {
				st := status(t, base)
				return st.LastError == "" && st.Halted == "", fmt.Sprintf("last_error %q, halted %q", st.LastError, st.Halted)
			})
			p.stop(syscall.SIGTERM, 30*time.Second)
			checkNothingUnwound(t, db, nodeTip)
		})
	}
}

// TestNodeReturnsBehind restarts coffer's node so that it comes back behind
// coffer's cursor (btcd starts from the genesis block again, as a crashed
// node may come back without its last unflushed blocks) and only then
// downloads the chain from its peer. The node's chain is a prefix of what
// coffer has applied, so coffer must wait for it: neither halt (the gap is
// deeper than follow.max_reorg_depth) nor unwind blocks it will only apply
// again (a larger max_reorg_depth).
func TestNodeReturnsBehind(t *testing.T) {
	ctx := context.Background()
	n, peer, tracked := outageChain(t)
	for _, engine := range storetest.Engines {
		for _, maxDepth := range []string{"100", "1000"} {
			t.Run(engine+"/max_reorg_depth="+maxDepth, func(t *testing.T) {
				dsn := storetest.NewDSN(t, engine)
				db := storetest.Open(t, dsn)
				if err := follow.TrackScripts(ctx, db, "e2e", tracked...); err != nil {
					t.Fatal(err)
				}
				dir := t.TempDir()
				listen := freeAddr(t)
				base := "http://" + listen
				rpc := n.RPC()
				p := startCoffer(t, dir, serveEnv(dir, dsn, listen, rpc.URL, rpc.User, rpc.Password,
					"COFFER_NODE_TIMEOUT=2s", "COFFER_FOLLOW_MAX_REORG_DEPTH="+maxDepth), "serve")
				waitSynced(t, p, base, 60*time.Second)
				n.Kill()
				checkNodeDown(t, p, base)
				nodeTip := restoreChain(t, n, peer, func(restarted time.Time) {
					// Let coffer look at the node while it is behind.
					waitUntil(t, p, 30*time.Second, 50*time.Millisecond, "the follower to see the restarted node", func() (bool, string) {
						st := status(t, base)
						return st.UpdatedAt.After(restarted) && !strings.Contains(st.LastError, "unreachable"),
							fmt.Sprintf("follower view from %s, last_error %q", st.UpdatedAt, st.LastError)
					})
					st := status(t, base)
					t.Logf("node back at height %d; follower: synced %d, last_error %q, halted %q", st.Node.Height, st.Synced.Height, st.LastError, st.Halted)
				})
				st := waitSynced(t, p, base, 30*time.Second)
				if st.Synced.Height != nodeTip {
					t.Errorf("synced %d, node tip %d", st.Synced.Height, nodeTip)
				}
				p.stop(syscall.SIGTERM, 30*time.Second)
				checkNothingUnwound(t, db, nodeTip)
			})
		}
	}
}

// checkNodeDown waits for /readyz to fail naming the node and checks that
// /v1/status still answers, saying the node is unreachable.
func checkNodeDown(t *testing.T, p *proc, base string) {
	t.Helper()
	var ready api.ReadyResponse
	waitUntil(t, p, 30*time.Second, 50*time.Millisecond, "/readyz to report the node down", func() (bool, string) {
		code, body, err := getJSON(base+"/readyz", &ready)
		if err != nil {
			return false, err.Error()
		}
		return code == http.StatusServiceUnavailable, fmt.Sprintf("%d %s", code, body)
	})
	if ready.Status != "not_ready" || !anyContains(ready.Reasons, "node") {
		t.Errorf("/readyz with the node down: status %q, reasons %q; want not_ready naming the node", ready.Status, ready.Reasons)
	}
	st := status(t, base)
	if st.Node.Reachable || st.Node.Error == "" {
		t.Errorf("/v1/status with the node down: node %+v; want reachable=false and an error", st.Node)
	}
	t.Logf("node down: readyz reasons %q; status node.error %q, synced %d", ready.Reasons, st.Node.Error, st.Synced.Height)
}

// checkNothingUnwound requires db's event log to hold one block.connected
// per block up to tip and nothing a reorg or halt writes: the node was only
// ever down or behind, never on another branch.
func checkNothingUnwound(t *testing.T, db *store.DB, tip int64) {
	t.Helper()
	counts := map[string]int{}
	for _, e := range readEvents(t, db) {
		counts[e.Type]++
	}
	for _, typ := range []string{events.BlockDisconnected, events.ChainReorg, events.TxReorged, events.TxDropped, events.FollowerHalted} {
		if counts[typ] > 0 {
			t.Errorf("%d %s events, want none: the node never left coffer's chain", counts[typ], typ)
		}
	}
	if counts[events.BlockConnected] != int(tip)+1 {
		t.Errorf("%d block.connected events, want %d", counts[events.BlockConnected], tip+1)
	}
}

// rpcProxy forwards TCP connections to the node's RPC port while open and
// refuses them (accepts and closes at once) while closed.
type rpcProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	open  bool
	conns map[net.Conn]struct{}
}

func startProxy(t *testing.T, nodeURL string) *rpcProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &rpcProxy{ln: ln, target: strings.TrimPrefix(nodeURL, "http://"), open: true, conns: map[net.Conn]struct{}{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.setOpen(false)
	})
	return p
}

func (p *rpcProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *rpcProxy) forward(c net.Conn) {
	if !p.track(c) {
		c.Close()
		return
	}
	defer p.untrackClose(c)
	d, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(d) {
		d.Close()
		return
	}
	defer p.untrackClose(d)
	go func() {
		io.Copy(d, c)
		d.Close()
	}()
	io.Copy(c, d)
}

func (p *rpcProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open {
		p.conns[c] = struct{}{}
	}
	return p.open
}

func (p *rpcProxy) untrackClose(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// setOpen opens or closes the proxy; closing also cuts every connection.
func (p *rpcProxy) setOpen(open bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open = open
	if !open {
		for c := range p.conns {
			c.Close()
		}
	}
}

func anyContains(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

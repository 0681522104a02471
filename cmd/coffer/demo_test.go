//go:build unix

package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/api"
	"github.com/coffer/coffer/internal/events"
)

var (
	demoAPILine  = regexp.MustCompile(`API:\s+(http://\S+)`)
	demoNodeLine = regexp.MustCompile(`node:\s+btcd regtest, RPC (http://\S+)`)
	demoKeyLine  = regexp.MustCompile(`API key:\s+(coffer_\S+)`)
)

// TestDemoCommand runs `coffer demo`, watches its payments and blocks
// arrive as events, then stops it with SIGINT and requires a clean exit
// that takes its btcd along.
func TestDemoCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	listen := freeAddr(t)
	p := startCoffer(t, t.TempDir(), nil, "demo", "-dir", dir, "-listen", listen, "-every", "1s")

	var base, nodeURL string
	waitUntil(t, p, 90*time.Second, 50*time.Millisecond, "the demo to print its API address", func() (bool, string) {
		out := p.stdout.String()
		if m := demoAPILine.FindStringSubmatch(out); m != nil {
			base = m[1]
		}
		if m := demoNodeLine.FindStringSubmatch(out); m != nil {
			nodeURL = m[1]
		}
		if m := demoKeyLine.FindStringSubmatch(out); m != nil {
			apiKeys.Store(listen, m[1])
		}
		return base != "" && nodeURL != "", tailLines(out, 3)
	})
	if base != "http://"+listen {
		t.Errorf("demo prints API %s, asked for %s", base, listen)
	}
	node, err := url.Parse(nodeURL)
	if err != nil {
		t.Fatal(err)
	}
	btcdPid := findPid(t, "--datadir="+filepath.Join(dir, "node", "data"))

	st := waitSynced(t, p, base, 30*time.Second)
	if st.Coin != "btc" || st.Network != "regtest" || st.Synced.Height < 101 {
		t.Errorf("demo status: coin %q, network %q, synced %d (the demo mines 101 blocks first)", st.Coin, st.Network, st.Synced.Height)
	}
	// Payments and blocks the demo makes from now on must show up as events.
	var after int64
	for evs := listEvents(t, base, 0, 0); len(evs) > 0; evs = listEvents(t, base, after, 0) {
		after = evs[len(evs)-1].ID
	}
	from := after
	var blocks, seen int
	deadline := time.Now().Add(45 * time.Second)
	for blocks == 0 || seen == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("within 45s after event %d (synced height %d): %d new block.connected, %d tx.seen events; want both",
				from, st.Synced.Height, blocks, seen)
		}
		for _, e := range listEvents(t, base, after, 10) {
			after = e.ID
			switch e.Type {
			case events.BlockConnected:
				var d struct{ Height int64 }
				if err := json.Unmarshal(e.Data, &d); err != nil || d.Height <= st.Synced.Height {
					t.Errorf("block.connected event %d after sync to %d: %s", e.ID, st.Synced.Height, e.Data)
				}
				blocks++
			case events.TxSeen:
				seen++
			}
		}
	}
	t.Logf("events after id %d: %d block.connected, %d tx.seen", from, blocks, seen)

	start := time.Now()
	p.stop(os.Interrupt, 30*time.Second)
	t.Logf("demo exited 0 %s after SIGINT", time.Since(start).Round(time.Millisecond))
	if c, err := net.DialTimeout("tcp", node.Host, time.Second); err == nil {
		c.Close()
		t.Errorf("the demo's node RPC port %s still accepts connections after the demo exited", node.Host)
	}
	if btcdPid > 0 {
		if err := syscall.Kill(btcdPid, 0); err == nil {
			t.Errorf("the demo's btcd (pid %d) still runs after the demo exited", btcdPid)
		}
	}
}

// listEvents long-polls /v1/events for events after the given id.
func listEvents(t *testing.T, base string, after int64, wait int) []events.Event {
	t.Helper()
	var resp api.EventsResponse
	code, body, err := getJSON(fmt.Sprintf("%s/v1/events?after=%d&wait=%d", base, after, wait), &resp)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /v1/events: %d %s %v", code, body, err)
	}
	return resp.Events
}

// findPid returns the pid of the process whose command line contains arg,
// or 0 where /proc does not list processes.
func findPid(t *testing.T, arg string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Logf("cannot list processes (%v); checking only the node's port", err)
		return 0
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(arg)) {
			return pid
		}
	}
	t.Fatalf("no process with %q in its command line: the demo's btcd is not running", arg)
	return 0
}

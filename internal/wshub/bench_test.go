package wshub_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/wshub"
)

// fleetHello is what every benchmark client sends: a wallet token joining
// its wallet, so it receives block pushes and nothing else.
var fleetHello = []byte(`{"action":"join","id":"bench"}`)

const fleetWho = "wallet:bench"

// waiter is a fleet in this process or in a helper process.
type waiter interface {
	wait(ctx context.Context, id int64) (wshub.Arrival, error)
	close()
}

type localFleet struct{ f *wshub.Fleet }

func (l localFleet) wait(ctx context.Context, id int64) (wshub.Arrival, error) {
	return l.f.Wait(ctx, id)
}
func (l localFleet) close() { l.f.Close() }

// BenchmarkBlockToClients measures the time from appending a block.connected
// event (in a database transaction, as the follower does) to its "block"
// push having reached every one of N WebSocket clients. Metrics: ms-first
// and ms-last are the mean delays to the first and the last client, ms-max
// the worst ms-last. When the process may not open 2N file descriptors (the
// clients' ends and the server's) the clients run in a helper process.
//
//	go test -run '^$' -bench BlockToClients ./internal/wshub/
func BenchmarkBlockToClients(b *testing.B) {
	for _, engine := range storetest.Engines {
		for _, n := range []int{100, 1000, 10_000} {
			b.Run(fmt.Sprintf("%s/clients=%d", engine, n), func(b *testing.B) {
				benchBlock(b, engine, n)
			})
		}
	}
}

func benchBlock(b *testing.B, engine string, n int) {
	db := storetest.Open(b, storetest.NewDSN(b, engine))
	e := newEnv(b, db, wshub.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var w waiter
	if fdLimit() >= uint64(2*n+200) {
		f, err := wshub.DialFleet(ctx, e.url, http.Header{principalHeader: {fleetWho}}, n, 64, fleetHello)
		if err != nil {
			b.Fatal(err)
		}
		w = localFleet{f}
	} else {
		w = startFleetProcess(b, e.url, n)
	}
	defer w.close()
	if got := e.hub.Clients(); got != n {
		b.Fatalf("Clients() = %d, want %d", got, n)
	}
	var first, last []time.Duration
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		id := e.appendEvent(events.BlockConnected, "", map[string]any{"height": 1000 + i, "hash": fmt.Sprintf("%064x", i)})
		a, err := w.wait(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		first = append(first, a.First.Sub(t0))
		last = append(last, a.Last.Sub(t0))
	}
	b.ReportMetric(meanMS(first), "ms-first")
	b.ReportMetric(meanMS(last), "ms-last")
	b.ReportMetric(float64(slices.Max(last))/float64(time.Millisecond), "ms-max")
}

func meanMS(ds []time.Duration) float64 {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return float64(sum) / float64(len(ds)) / float64(time.Millisecond)
}

func fdLimit() uint64 {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return 1024
	}
	return lim.Cur
}

// processFleet talks to a fleet in a helper process: "wait <id>" on its
// stdin, "ok <id> <first unix ns> <last unix ns>" (or "err …") on its stdout.
type processFleet struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

func startFleetProcess(tb testing.TB, url string, n int) *processFleet {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFleetHelperProcess$")
	cmd.Env = append(os.Environ(), "WSHUB_FLEET_URL="+url, "WSHUB_FLEET_N="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &processFleet{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	if !p.out.Scan() || p.out.Text() != "ready" {
		p.close()
		tb.Fatalf("fleet process: %q %v", p.out.Text(), p.out.Err())
	}
	return p
}

func (p *processFleet) wait(ctx context.Context, id int64) (wshub.Arrival, error) {
	if _, err := fmt.Fprintf(p.stdin, "wait %d\n", id); err != nil {
		return wshub.Arrival{}, err
	}
	if !p.out.Scan() {
		return wshub.Arrival{}, fmt.Errorf("fleet process ended: %v", p.out.Err())
	}
	var got, first, last int64
	if _, err := fmt.Sscanf(p.out.Text(), "ok %d %d %d", &got, &first, &last); err != nil || got != id {
		return wshub.Arrival{}, fmt.Errorf("fleet process: %q", p.out.Text())
	}
	return wshub.Arrival{First: time.Unix(0, first), Last: time.Unix(0, last)}, nil
}

func (p *processFleet) close() {
	p.stdin.Close()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// TestFleetHelperProcess is the helper process of startFleetProcess; it
// does nothing in a normal test run.
func TestFleetHelperProcess(t *testing.T) {
	url := os.Getenv("WSHUB_FLEET_URL")
	if url == "" {
		t.Skip("helper process for BenchmarkBlockToClients")
	}
	n, _ := strconv.Atoi(os.Getenv("WSHUB_FLEET_N"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f, err := wshub.DialFleet(ctx, url, http.Header{principalHeader: {fleetWho}}, n, 64, fleetHello)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
	defer f.Close()
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		id, err := strconv.ParseInt(strings.TrimPrefix(in.Text(), "wait "), 10, 64)
		if err != nil {
			fmt.Println("err", err)
			continue
		}
		a, err := f.Wait(ctx, id)
		if err != nil {
			fmt.Println("err", err)
			continue
		}
		fmt.Printf("ok %d %d %d\n", id, a.First.UnixNano(), a.Last.UnixNano())
	}
}

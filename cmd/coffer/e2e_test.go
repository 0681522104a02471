//go:build unix

package main_test

// End-to-end tests of the real coffer binary: it is built once per test run
// and started as a subprocess, configured through COFFER_… variables only,
// with an environment that holds nothing else but a few basics.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/api"
	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/store"
)

var (
	binDir  string // temporary directory holding the built binary
	binOnce sync.Once
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "coffer-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cofferBin builds the coffer binary the first time a test asks for it.
func cofferBin(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		start := time.Now()
		p := filepath.Join(binDir, "coffer")
		cmd := exec.Command("go", "build", "-o", p, ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		binPath = p
		t.Logf("built %s in %s", p, time.Since(start).Round(time.Millisecond))
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// baseEnv is the environment every coffer process gets besides its COFFER_
// variables: enough to find programs, a home, a temp dir, and (for the demo,
// which may have to build btcd) the Go toolchain's settings.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH", k == "HOME", k == "TMPDIR", k == "XDG_CACHE_HOME", k == "COFFER_BTCD":
			env = append(env, kv)
		case strings.HasPrefix(k, "GO"):
			env = append(env, kv)
		}
	}
	return env
}

// proc is one running coffer process.
type proc struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{} // closed when the process has exited
}

// startCoffer runs the binary with args and env (KEY=VALUE, normally only
// COFFER_ variables) in dir. The process is SIGKILLed at the end of the test
// if it still runs; its output is logged when the test fails.
func startCoffer(t testing.TB, dir string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: strings.Join(args, " "), done: make(chan struct{})}
	p.cmd = exec.Command(cofferBin(t), args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(baseEnv(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = procAttr()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting coffer %s: %v", p.name, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("--- coffer %s (pid %d) stderr, access log left out ---\n%s", p.name, p.cmd.Process.Pid,
				tailLines(withoutAccessLog(p.stderr.String()), 40))
		}
	})
	return p
}

// runCoffer runs the binary to completion (at most timeout) and returns its
// exit code and output.
func runCoffer(t testing.TB, dir string, timeout time.Duration, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := startCoffer(t, dir, env, args...)
	code, ok := p.wait(timeout)
	if !ok {
		t.Fatalf("coffer %s did not exit within %s; stderr:\n%s", p.name, timeout, p.stderr.String())
	}
	return code, p.stdout.String(), p.stderr.String()
}

// wait waits up to timeout for the process to exit and returns its exit code
// (-1 for a signal) and whether it exited.
func (p *proc) wait(timeout time.Duration) (int, bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill SIGKILLs the process and waits for it to die.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// stop sends sig and requires a clean exit (code 0) within timeout.
func (p *proc) stop(sig os.Signal, timeout time.Duration) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signalling coffer %s: %v", p.name, err)
	}
	code, ok := p.wait(timeout)
	if !ok {
		p.t.Fatalf("coffer %s did not exit within %s of %v", p.name, timeout, sig)
	}
	if code != 0 {
		p.t.Fatalf("coffer %s exited with code %d after %v, want 0 (graceful shutdown); stderr:\n%s",
			p.name, code, sig, tailLines(withoutAccessLog(p.stderr.String()), 30))
	}
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// withoutAccessLog drops the API's per-request log lines, which the tests'
// polling would otherwise bury everything else under.
func withoutAccessLog(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, `msg="http request"`) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freeAddr returns a loopback host:port nothing listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// serveEnv is the environment of a `coffer serve` on dsn watching the node
// at rpcURL, listening on listen; extra entries (KEY=VALUE) are appended.
func serveEnv(dir, dsn, listen, rpcURL, user, password string, extra ...string) []string {
	if _, ok := apiKeys.Load(listen); !ok {
		createAPIKey(dsn, listen)
	}
	env := []string{
		"COFFER_DATA_DIR=" + dir,
		"COFFER_DATABASE_DSN=" + dsn,
		"COFFER_NODE_URL=" + rpcURL,
		"COFFER_NODE_USER=" + user,
		"COFFER_NODE_PASSWORD=" + password,
		"COFFER_API_LISTEN=" + listen,
		"COFFER_FOLLOW_POLL_INTERVAL=100ms",
		"COFFER_LOG_LEVEL=info",
	}
	return append(env, extra...)
}

var httpClient = &http.Client{Timeout: 10 * time.Second, Transport: keyTransport{}}

// apiKeys maps a listen address to the admin API key serveEnv made for the
// coffer serving there; keyTransport sends it with every request.
var apiKeys sync.Map

type keyTransport struct{}

func (keyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if key, ok := apiKeys.Load(r.URL.Host); ok && r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+key.(string))
	}
	return http.DefaultTransport.RoundTrip(r)
}

// createAPIKey migrates dsn and adds an admin API key for the coffer that
// will listen on listen.
func createAPIKey(dsn, listen string) {
	ctx := context.Background()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if _, err := db.Migrate(ctx); err != nil {
		panic(err)
	}
	key, _, err := auth.CreateAPIKey(ctx, db, auth.ScopeAdmin, "e2e")
	if err != nil {
		panic(err)
	}
	apiKeys.Store(listen, key)
}

// getJSON GETs url and decodes a JSON body into v (if not nil); it returns
// the status code and raw body.
func getJSON(url string, v any) (int, []byte, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			return resp.StatusCode, body, fmt.Errorf("decoding %s: %v: %s", url, err, body)
		}
	}
	return resp.StatusCode, body, nil
}

// waitUntil polls cond every interval until it returns true, failing the
// test (with what cond last said) after timeout or when p exits.
func waitUntil(t testing.TB, p *proc, timeout, interval time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if msg != "" {
			last = msg
		}
		if p != nil && p.exited() {
			t.Fatalf("waiting for %s: coffer %s exited (code %d); last: %s\nstderr:\n%s", what, p.name,
				p.cmd.ProcessState.ExitCode(), last, tailLines(withoutAccessLog(p.stderr.String()), 30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not after %s; last: %s", what, timeout, last)
		}
		time.Sleep(interval)
	}
}

// status fetches /v1/status, failing the test unless it answers 200.
func status(t testing.TB, base string) api.StatusResponse {
	t.Helper()
	var st api.StatusResponse
	code, body, err := getJSON(base+"/v1/status", &st)
	if err != nil {
		t.Fatalf("GET /v1/status: %v", err)
	}
	if code != http.StatusOK {
		t.Fatalf("GET /v1/status: %d %s", code, body)
	}
	return st
}

// waitSynced waits until /v1/status says the follower is at the node's
// height (and the node is reachable).
func waitSynced(t testing.TB, p *proc, base string, timeout time.Duration) api.StatusResponse {
	t.Helper()
	var st api.StatusResponse
	waitUntil(t, p, timeout, 50*time.Millisecond, "the follower to reach the node's tip", func() (bool, string) {
		code, body, err := getJSON(base+"/v1/status", &st)
		if err != nil || code != http.StatusOK {
			return false, fmt.Sprintf("status %d %s %v", code, body, err)
		}
		if st.Halted != "" {
			t.Fatalf("waiting for the follower to reach the node's tip (%d): it halted at %d: %s", st.Node.Height, st.Synced.Height, st.Halted)
		}
		return st.Node.Reachable && st.Synced.Height == st.Node.Height && st.Synced.Hash == st.Node.Hash,
			fmt.Sprintf("synced %d, node %d (reachable %v), last_error %q, halted %q",
				st.Synced.Height, st.Node.Height, st.Node.Reachable, st.LastError, st.Halted)
	})
	return st
}

// cursorHeight reads the follower's cursor from the database (-1: none).
func cursorHeight(t testing.TB, db *store.DB) int64 {
	t.Helper()
	h := int64(-1)
	err := db.QueryRowContext(context.Background(), `SELECT height FROM chain_cursor WHERE id = 1`).Scan(&h)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatalf("reading chain_cursor: %v", err)
	}
	return h
}

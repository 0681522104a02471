// Package regtest starts real regtest full nodes (btcd, Litecoin Core) for
// integration tests and for `coffer demo`, and drives them: mining, paying
// scripts from a tiny built-in wallet, and forcing reorgs.
package regtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/node"
)

// Kind says which node implementation to run.
type Kind int

const (
	KindBtcd      Kind = iota // btcd, built from the version go.mod pins
	KindLitecoind             // Litecoin Core's litecoind
)

func (k Kind) String() string {
	switch k {
	case KindBtcd:
		return "btcd"
	case KindLitecoind:
		return "litecoind"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Options configure Start.
type Options struct {
	Kind Kind
	// Dir keeps the node's data (and the harness keys) across runs. Empty
	// means a temporary directory that Stop removes. Only litecoind keeps
	// its chain: btcd wipes a regtest database whenever it starts.
	Dir string
	// Logf receives harness progress messages; nil discards them.
	Logf func(format string, args ...any)
	// CookieAuth makes litecoind write an auth cookie instead of taking a
	// user and password; RPC() then names the cookie file. btcd has no
	// cookie auth, so it is an error there.
	CookieAuth bool
	// PreMine mines this many blocks after start; 101 makes the first
	// coinbase spendable, so Fund works at once.
	PreMine int
	// NoBlockFilterIndex starts the node without BIP158 block filters,
	// which both kinds otherwise serve: litecoind runs without
	// -blockfilterindex=1 (getblockfilter then fails), btcd with
	// --nocfilters (getcfilter fails).
	NoBlockFilterIndex bool
}

// ErrNotInstalled is wrapped by the error Start returns when a node binary
// cannot be found.
var ErrNotInstalled = errors.New("node binary not installed")

type notInstalled struct{ msg string }

func (e *notInstalled) Error() string { return e.msg }
func (e *notInstalled) Unwrap() error { return ErrNotInstalled }

// errEarlyExit marks a node that died while starting (e.g. a port taken
// between picking and binding it), which is worth one more try.
var errEarlyExit = errors.New("node exited during startup")

// Node is one running regtest node plus the harness wallet that mines on it.
// Its methods are safe for concurrent use.
type Node struct {
	Kind Kind

	opts     Options
	dir      string
	temp     bool
	bin      string
	rpcPort  int
	p2pPort  int
	user     string
	password string
	chain    *chain.Params
	net      *chaincfg.Params
	client   *node.Client

	mu      sync.Mutex // process state
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool

	w wallet
}

// LitecoindPath finds litecoind: $COFFER_LITECOIND, then the Debian package's
// real binary (/usr/bin/litecoind there is a wrapper script), then $PATH.
func LitecoindPath() (string, error) {
	if p := os.Getenv("COFFER_LITECOIND"); p != "" {
		if !isFile(p) {
			return "", &notInstalled{"litecoind not installed: COFFER_LITECOIND=" + p + " is not a file"}
		}
		return p, nil
	}
	if p := "/usr/lib/litecoin/litecoind"; isFile(p) {
		return p, nil
	}
	if p, err := exec.LookPath("litecoind"); err == nil {
		return p, nil
	}
	return "", &notInstalled{"litecoind not installed: no /usr/lib/litecoin/litecoind, none in PATH, COFFER_LITECOIND unset"}
}

// Start launches a node and waits until its RPC answers. The node is killed
// when the calling process dies (Linux), but callers should still Stop it.
func Start(ctx context.Context, opts Options) (*Node, error) {
	n := &Node{Kind: opts.Kind, opts: opts}
	var err error
	if n.chain, err = chainParams(opts.Kind); err != nil {
		return nil, err
	}
	n.net = n.chain.Net
	switch opts.Kind {
	case KindBtcd:
		if opts.CookieAuth {
			return nil, errors.New("regtest: btcd has no cookie auth")
		}
		n.bin, err = BuildBtcd(ctx)
	case KindLitecoind:
		n.bin, err = LitecoindPath()
	default:
		return nil, fmt.Errorf("regtest: unknown node kind %d", opts.Kind)
	}
	if err != nil {
		return nil, err
	}

	if opts.Dir != "" {
		n.dir = opts.Dir
		err = os.MkdirAll(n.dir, 0o700)
	} else {
		n.dir, err = os.MkdirTemp("", "coffer-regtest-"+opts.Kind.String()+"-")
		n.temp = true
	}
	if err != nil {
		return nil, fmt.Errorf("regtest: %w", err)
	}
	fail := func(err error) (*Node, error) {
		if n.temp {
			os.RemoveAll(n.dir)
		}
		return nil, err
	}
	if err := n.w.init(n.dir, n.net); err != nil {
		return fail(err)
	}
	n.user, n.password = "coffer", randomHex(16)

	for attempt := 0; ; attempt++ {
		if n.rpcPort, err = freePort(); err == nil {
			n.p2pPort, err = freePort()
		}
		if err != nil {
			return fail(fmt.Errorf("regtest: picking ports: %w", err))
		}
		err = n.launch(ctx)
		if err == nil || !errors.Is(err, errEarlyExit) || attempt == 2 {
			break
		}
		n.logf("regtest: %s died at startup, retrying on other ports: %v", n.Kind, err)
	}
	if err != nil {
		return fail(err)
	}
	cfg := n.clientConfig(5 * time.Minute)
	// A retry covers litecoind closing an idle connection just as it is
	// reused (see -rpcservertimeout).
	cfg.Retries = 2
	n.client, err = node.New(cfg)
	if err != nil {
		n.Stop()
		return nil, err
	}
	if err := n.w.rescan(ctx, n); err != nil {
		n.Stop()
		return nil, err
	}
	if opts.PreMine > 0 {
		if _, err := n.Mine(ctx, opts.PreMine); err != nil {
			n.Stop()
			return nil, err
		}
	}
	return n, nil
}

// StartT starts a node for a test and stops it in t.Cleanup. It skips the
// test when litecoind is not installed.
func StartT(t testing.TB, opts Options) *Node {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	// Generous: the first btcd build compiles it from source.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n, err := Start(ctx, opts)
	if errors.Is(err, ErrNotInstalled) {
		t.Skip(err.Error())
	}
	if err != nil {
		t.Fatalf("starting %s: %v", opts.Kind, err)
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Errorf("stopping %s: %v", n.Kind, err)
		}
	})
	return n
}

func (n *Node) args() []string {
	rpc := strconv.Itoa(n.rpcPort)
	p2p := strconv.Itoa(n.p2pPort)
	if n.Kind == KindBtcd {
		a := []string{
			"--regtest", "--notls",
			"--rpcuser=" + n.user, "--rpcpass=" + n.password,
			"--rpclisten=127.0.0.1:" + rpc, "--listen=127.0.0.1:" + p2p,
			"--datadir=" + filepath.Join(n.dir, "data"), "--logdir=" + filepath.Join(n.dir, "logs"),
			"--miningaddr=" + n.w.btcdMiner.Address(),
			"--nobanning", "--txindex",
		}
		if n.opts.NoBlockFilterIndex {
			a = append(a, "--nocfilters")
		}
		return a
	}
	a := []string{
		"-regtest", "-server", "-datadir=" + n.dir,
		"-rpcbind=127.0.0.1", "-rpcallowip=127.0.0.1", "-rpcport=" + rpc,
		"-port=" + p2p, "-bind=127.0.0.1",
		"-fallbackfee=0.0002", "-txindex=1",
		"-persistmempool=0", // a restart forgets the mempool, as btcd does
		"-listenonion=0", "-dnsseed=0", "-discover=0", "-upnp=0",
		// One log: stdout goes to node.log, so no debug.log as well.
		"-printtoconsole=1", "-nodebuglogfile",
		// The harness wallet for the MWEB peg-in: a 1000-key pool takes
		// seconds to generate.
		"-keypool=1",
		// Shutdown waits for idle keep-alive RPC connections to time out,
		// and Go clients keep them open; 30s by default.
		"-rpcservertimeout=1",
	}
	if !n.opts.NoBlockFilterIndex {
		a = append(a, "-blockfilterindex=1")
	}
	if !n.opts.CookieAuth {
		a = append(a, "-rpcuser="+n.user, "-rpcpassword="+n.password)
	}
	return a
}

// launch starts the process on the chosen ports and waits for RPC.
func (n *Node) launch(ctx context.Context) error {
	logPath := filepath.Join(n.dir, "node.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("regtest: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(n.bin, n.args()...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if n.Kind == KindBtcd {
		// btcd creates ~/.btcd even when every path is given; keep it in ours.
		cmd.Env = append(os.Environ(), "HOME="+n.dir)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("regtest: starting %s: %w", n.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	n.mu.Lock()
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()

	if err := n.waitReady(ctx, exited); err != nil {
		killGroup(cmd.Process)
		<-exited
		return fmt.Errorf("%w\n--- %s (tail) ---\n%s", err, logPath, tail(logPath, 30))
	}
	n.logf("regtest: %s up (rpc %s, p2p %s, dir %s)", n.Kind, n.rpcURL(), n.P2PAddr(), n.dir)
	return nil
}

func (n *Node) waitReady(ctx context.Context, exited <-chan struct{}) error {
	probe, err := node.New(n.clientConfig(2 * time.Second))
	if err != nil {
		return err
	}
	deadline := time.After(2 * time.Minute)
	var last error
	for {
		_, err := probe.GetBlockchainInfo(ctx)
		if err == nil {
			return nil
		}
		// Not listening yet, still loading (-28), or a stale cookie from
		// the previous run: all resolve themselves shortly.
		var te *node.TransportError
		if !errors.As(err, &te) && !node.IsCode(err, node.CodeInWarmup) &&
			!(n.opts.CookieAuth && errors.Is(err, node.ErrUnauthorized)) {
			return fmt.Errorf("regtest: %s rpc: %w", n.Kind, err)
		}
		last = err
		select {
		case <-exited:
			return fmt.Errorf("regtest: %s: %w", n.Kind, errEarlyExit)
		case <-ctx.Done():
			return fmt.Errorf("regtest: waiting for %s: %w (last: %v)", n.Kind, ctx.Err(), last)
		case <-deadline:
			return fmt.Errorf("regtest: %s rpc not ready after 2m: %v", n.Kind, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (n *Node) rpcURL() string { return "http://127.0.0.1:" + strconv.Itoa(n.rpcPort) }

func (n *Node) clientConfig(timeout time.Duration) node.Config {
	c := n.RPC()
	c.Timeout = timeout
	c.Retries = 0
	return c
}

// RPC says how to reach the node: user and password, or with
// Options.CookieAuth the cookie file.
func (n *Node) RPC() node.Config {
	if n.opts.CookieAuth {
		return node.Config{URL: n.rpcURL(), CookieFile: n.CookieFile()}
	}
	return node.Config{URL: n.rpcURL(), User: n.user, Password: n.password}
}

// Client is the harness's own RPC client (long timeout, no retries).
func (n *Node) Client() *node.Client { return n.client }

// CookieFile is where litecoind writes its auth cookie ("" for btcd).
func (n *Node) CookieFile() string {
	if n.Kind != KindLitecoind {
		return ""
	}
	return filepath.Join(n.dir, "regtest", ".cookie")
}

// DataDir is the node's directory (data, node.log, harness keys).
func (n *Node) DataDir() string { return n.dir }

// P2PAddr is the node's peer-to-peer listen address.
func (n *Node) P2PAddr() string { return "127.0.0.1:" + strconv.Itoa(n.p2pPort) }

// Chain is the node's coin and network: address encoding, block parsing.
func (n *Node) Chain() *chain.Params { return n.chain }

// Stop shuts the node down gracefully (the stop RPC, SIGKILL after 30s) and
// removes its directory if it was temporary. Calling it again does nothing.
func (n *Node) Stop() error {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return nil
	}
	n.stopped = true
	n.mu.Unlock()
	err := n.shutdown(30 * time.Second)
	if n.temp {
		if rerr := os.RemoveAll(n.dir); rerr != nil && err == nil {
			err = rerr
		}
	}
	n.logf("regtest: %s stopped", n.Kind)
	return err
}

// Kill SIGKILLs the node, leaving its files as a crash would. Restart brings
// it back, but like a real crash both btcd and litecoind lose what they had
// not flushed, which on a young regtest chain is every block; use Restart
// alone for an outage that keeps the chain.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	killGroup(cmd.Process)
	<-exited
}

// Restart stops the node if it runs and starts it again on the same
// directory and ports, so clients keep working. litecoind keeps its chain;
// btcd deletes its regtest database at every start, so it comes back at
// the genesis block.
func (n *Node) Restart(ctx context.Context) error {
	n.mu.Lock()
	stopped := n.stopped
	n.mu.Unlock()
	if stopped {
		return errors.New("regtest: restart after Stop")
	}
	if err := n.shutdown(30 * time.Second); err != nil {
		return err
	}
	if err := n.launch(ctx); err != nil {
		return err
	}
	// The chain may have changed under the harness (btcd starts over, a
	// killed node loses unflushed blocks): rebuild its outputs from it.
	n.w.mu.Lock()
	n.w.reset()
	n.w.mu.Unlock()
	return n.w.rescan(ctx, n)
}

// Running reports whether the node process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// Pid is the node's process id (0 before start).
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

func (n *Node) shutdown(timeout time.Duration) error {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-exited:
		return nil
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := node.New(n.clientConfig(5 * time.Second))
	if err == nil {
		err = c.Call(ctx, "stop", nil)
	}
	if err != nil {
		n.logf("regtest: %s stop rpc: %v; killing it", n.Kind, err)
		killGroup(cmd.Process)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(timeout):
		killGroup(cmd.Process)
		<-exited
		return fmt.Errorf("regtest: %s ignored stop for %s; killed", n.Kind, timeout)
	}
}

func (n *Node) logf(format string, args ...any) {
	if n.opts.Logf != nil {
		n.opts.Logf(format, args...)
	}
}

// freePort asks the kernel for an unused loopback port. Another process may
// grab it before the node binds; Start retries when that happens.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

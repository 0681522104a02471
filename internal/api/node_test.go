package api_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/coffer/coffer/internal/node"
)

// minedBlocks is how far the shared regtest chain is mined, so heights and
// lags in the tests are not all zero.
const minedBlocks = 3

// The package's tests share one btcd regtest node (the btcd pinned in go.mod
// as a tool), started on first use and stopped by TestMain.
var shared struct {
	once   sync.Once
	client *node.Client
	cmd    *exec.Cmd
	exited chan struct{} // closed when btcd has exited
	dir    string
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	stopRegtest()
	os.Exit(code)
}

// regtestNode returns a client for the shared node, starting it if needed.
func regtestNode(t *testing.T) *node.Client {
	t.Helper()
	shared.once.Do(func() { shared.err = startRegtest() })
	if shared.err != nil {
		t.Fatalf("starting btcd regtest node: %v", shared.err)
	}
	return shared.client
}

func startRegtest() error {
	out, err := exec.Command("go", "tool", "-n", "btcd").Output()
	if err != nil {
		return fmt.Errorf("building btcd (go tool -n btcd): %w", err)
	}
	bin := strings.TrimSpace(string(out))
	dir, err := os.MkdirTemp("", "coffer-api-btcd-")
	if err != nil {
		return err
	}
	shared.dir = dir
	// An explicit empty config keeps btcd from reading or creating ~/.btcd.
	conf := filepath.Join(dir, "btcd.conf")
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		return err
	}
	miningAddr, err := newRegtestAddress()
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "btcd.out"))
	if err != nil {
		return err
	}
	defer logf.Close()
	rpc := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "--configfile="+conf, "--datadir="+filepath.Join(dir, "data"),
		"--logdir="+filepath.Join(dir, "log"), "--regtest", "--nolisten", "--notls",
		"--rpclisten="+rpc, "--rpcuser=coffer", "--rpcpass=coffer", "--miningaddr="+miningAddr)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	shared.cmd, shared.exited = cmd, make(chan struct{})
	exited := shared.exited
	go func() { cmd.Wait(); close(exited) }()

	client, err := node.New(node.Config{URL: "http://" + rpc, User: "coffer", Password: "coffer", Timeout: 5 * time.Second})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = client.GetBlockchainInfo(ctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-exited:
			return fmt.Errorf("btcd exited early; output:\n%s", tail(filepath.Join(dir, "btcd.out")))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("btcd RPC did not answer within 60s: %v; output:\n%s", err, tail(filepath.Join(dir, "btcd.out")))
		}
	}
	var hashes []string
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.Call(ctx, "generate", &hashes, minedBlocks); err != nil {
		return fmt.Errorf("mining %d blocks: %w", minedBlocks, err)
	}
	shared.client = client
	return nil
}

func stopRegtest() {
	if shared.cmd != nil {
		shared.cmd.Process.Signal(os.Interrupt) // lets btcd close its database cleanly
		select {
		case <-shared.exited:
		case <-time.After(15 * time.Second):
			shared.cmd.Process.Kill()
			<-shared.exited
		}
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
}

// newRegtestAddress makes a fresh P2PKH address for btcd's coinbase outputs;
// btcd refuses to mine without one.
func newRegtestAddress() (string, error) {
	key, err := btcec.NewPrivateKey()
	if err != nil {
		return "", err
	}
	addr, err := btcutil.NewAddressPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), &chaincfg.RegressionNetParams)
	if err != nil {
		return "", err
	}
	return addr.EncodeAddress(), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// downNode stands in for a node that cannot be reached: fault injection, the
// one place a real node cannot be made to fail on cue.
type downNode struct{}

func (downNode) GetBlockchainInfo(context.Context) (*node.BlockchainInfo, error) {
	return nil, &node.TransportError{Err: errors.New("dial tcp 127.0.0.1:18443: connect: connection refused")}
}

package api_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/regtest"
)

// minedBlocks is how far the shared regtest chain is mined, so heights and
// lags in the tests are not all zero.
const minedBlocks = 3

// The package's tests share one btcd regtest node, started on first use and
// stopped by TestMain.
var shared struct {
	once sync.Once
	node *regtest.Node
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.node != nil {
		shared.node.Stop()
	}
	os.Exit(code)
}

// regtestNode returns a client for the shared node, starting it if needed.
func regtestNode(t *testing.T) *node.Client {
	t.Helper()
	shared.once.Do(func() {
		shared.node, shared.err = regtest.Start(context.Background(), regtest.Options{PreMine: minedBlocks})
	})
	if shared.err != nil {
		t.Fatalf("starting btcd regtest node: %v", shared.err)
	}
	c, err := node.New(shared.node.RPC())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// downNode stands in for a node that cannot be reached: fault injection, the
// one place a real node cannot be made to fail on cue.
type downNode struct{}

func (downNode) GetBlockchainInfo(context.Context) (*node.BlockchainInfo, error) {
	return nil, &node.TransportError{Err: errors.New("dial tcp 127.0.0.1:18443: connect: connection refused")}
}

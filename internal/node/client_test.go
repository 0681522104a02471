package node_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/regtest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newClient(t *testing.T, cfg node.Config) *node.Client {
	t.Helper()
	c, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// unknownHash is a well-formed hash no regtest chain has.
const unknownHash = "00000000000000000000000000000000000000000000000000000000deadbeef"

// exerciseTyped runs every typed helper against a node with a few blocks
// and one funded, unmined transaction.
func exerciseTyped(t *testing.T, n *regtest.Node, c *node.Client) {
	ctx := ctxT(t)
	hashes, err := n.Mine(ctx, 101)
	if err != nil {
		t.Fatal(err)
	}
	key := n.NewKey()
	txid, vout, err := n.Fund(ctx, key.PkScript(), 250_000)
	if err != nil {
		t.Fatal(err)
	}

	info, err := c.GetBlockchainInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Chain != "regtest" || info.Blocks != 101 || info.BestBlockHash != hashes[100] {
		t.Fatalf("getblockchaininfo: %+v", info)
	}
	if h, err := c.GetBlockCount(ctx); err != nil || h != 101 {
		t.Fatalf("getblockcount: %d, %v", h, err)
	}
	if h, err := c.GetBestBlockHash(ctx); err != nil || h != hashes[100] {
		t.Fatalf("getbestblockhash: %s, %v", h, err)
	}
	if h, err := c.GetBlockHash(ctx, 50); err != nil || h != hashes[49] {
		t.Fatalf("getblockhash 50: %s, %v", h, err)
	}
	hdr, err := c.GetBlockHeader(ctx, hashes[100])
	if err != nil {
		t.Fatal(err)
	}
	if hdr.Hash != hashes[100] || hdr.Height != 101 || hdr.PreviousHash != hashes[99] || hdr.Confirmations != 1 || hdr.Time == 0 {
		t.Fatalf("getblockheader: %+v", hdr)
	}

	raw, err := c.GetRawBlock(ctx, hashes[100])
	if err != nil {
		t.Fatal(err)
	}
	blk, err := n.Chain().ParseBlock(raw)
	if err != nil {
		t.Fatal(err)
	}
	if blk.BlockHash().String() != hashes[100] {
		t.Fatalf("raw block hashes to %s, want %s", blk.BlockHash(), hashes[100])
	}
	// Mined transactions come from the tx index.
	cbid := blk.Transactions[0].TxHash().String()
	rawCB, err := c.GetRawTransaction(ctx, cbid)
	if err != nil {
		t.Fatal(err)
	}
	if tx, err := n.Chain().ParseTx(rawCB); err != nil || tx.TxHash().String() != cbid {
		t.Fatalf("coinbase %s: %v", cbid, err)
	}

	pool, err := c.GetRawMempool(ctx)
	if err != nil || len(pool) != 1 || pool[0] != txid {
		t.Fatalf("getrawmempool: %v, %v; want [%s]", pool, err, txid)
	}
	out, err := c.GetTxOut(ctx, txid, vout, true)
	if err != nil || out == nil || out.Confirmations != 0 || out.Value != 0.0025 || out.BestBlock != hashes[100] {
		t.Fatalf("gettxout mempool: %+v, %v", out, err)
	}
	if out, err := c.GetTxOut(ctx, txid, vout, false); err != nil || out != nil {
		t.Fatalf("gettxout without mempool: %+v, %v; want nil", out, err)
	}
	if out, err := c.GetTxOut(ctx, unknownHash, 0, true); err != nil || out != nil {
		t.Fatalf("gettxout unknown: %+v, %v; want nil", out, err)
	}

	rawTx, err := c.GetRawTransaction(ctx, txid)
	if err != nil {
		t.Fatal(err)
	}
	// Re-sending a transaction already in the mempool: Core answers with
	// the txid, btcd refuses it (code -26), so broadcasters must treat
	// that as success.
	resent, err := c.SendRawTransaction(ctx, rawTx)
	if n.Kind == regtest.KindBtcd {
		if !node.IsCode(err, node.CodeVerifyRejected) || !strings.Contains(err.Error(), "already have") {
			t.Fatalf("btcd duplicate send: %v; want code -26 already have", err)
		}
	} else if err != nil || resent != txid {
		t.Fatalf("litecoind duplicate send: %s, %v; want %s", resent, err, txid)
	}
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(rawTx)); err != nil {
		t.Fatal(err)
	}
	tx.TxIn[0].PreviousOutPoint.Hash[0] ^= 1 // spend an output nobody has
	var bad bytes.Buffer
	tx.Serialize(&bad)
	// Both nodes call missing inputs a verify error (-25).
	if _, err := c.SendRawTransaction(ctx, bad.Bytes()); !node.IsCode(err, -25) {
		t.Fatalf("tx with missing input: %v; want code -25", err)
	}

	// Node-side errors are typed.
	for name, call := range map[string]func() error{
		"getblockheader": func() error { _, err := c.GetBlockHeader(ctx, unknownHash); return err },
		"getblock":       func() error { _, err := c.GetRawBlock(ctx, unknownHash); return err },
	} {
		err := call()
		if !node.IsCode(err, node.CodeBlockNotFound) {
			t.Errorf("%s unknown hash: %v; want code %d", name, err, node.CodeBlockNotFound)
		}
	}
	if _, err := c.GetRawTransaction(ctx, unknownHash); !node.IsCode(err, node.CodeBlockNotFound) {
		t.Errorf("getrawtransaction unknown: %v; want code %d", err, node.CodeBlockNotFound)
	}
	if err := c.Call(ctx, "nosuchmethod", nil); !node.IsCode(err, node.CodeMethodNotFound) {
		t.Errorf("unknown method: %v; want code %d", err, node.CodeMethodNotFound)
	}
	// Out-of-range heights: btcd says -1, Core -8.
	if _, err := c.GetBlockHash(ctx, 1_000_000); !isRPC(err) {
		t.Errorf("getblockhash beyond tip: %v; want *RPCError", err)
	}

	// A wrong password is an authentication failure, not a node error.
	cfg := n.RPC()
	cfg.Password += "x"
	if _, err := newClient(t, cfg).GetBlockCount(ctx); !errors.Is(err, node.ErrUnauthorized) {
		t.Errorf("wrong password: %v; want ErrUnauthorized", err)
	}
}

func isRPC(err error) bool {
	var re *node.RPCError
	return errors.As(err, &re)
}

func TestBtcd(t *testing.T) {
	n := regtest.StartT(t, regtest.Options{})
	exerciseTyped(t, n, newClient(t, n.RPC()))
}

func TestLitecoind(t *testing.T) {
	n := regtest.StartT(t, regtest.Options{Kind: regtest.KindLitecoind})
	exerciseTyped(t, n, newClient(t, n.RPC()))
}

func TestLitecoindCookie(t *testing.T) {
	ctx := ctxT(t)
	n := regtest.StartT(t, regtest.Options{Kind: regtest.KindLitecoind, CookieAuth: true})
	cfg := n.RPC()
	if cfg.CookieFile == "" || cfg.User != "" {
		t.Fatalf("cookie auth config %+v", cfg)
	}
	c := newClient(t, cfg)
	if _, err := c.GetBlockCount(ctx); err != nil {
		t.Fatal(err)
	}

	// The node writes a new cookie when it restarts; the client re-reads it.
	old, err := os.ReadFile(cfg.CookieFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(cfg.CookieFile); bytes.Equal(now, old) {
		t.Fatal("cookie unchanged by restart")
	}
	if _, err := c.GetBlockCount(ctx); err != nil {
		t.Fatalf("after restart: %v", err)
	}

	// A stale cookie is an authentication failure.
	stale := filepath.Join(t.TempDir(), ".cookie")
	if err := os.WriteFile(stale, old, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newClient(t, node.Config{URL: cfg.URL, CookieFile: stale}).GetBlockCount(ctx); !errors.Is(err, node.ErrUnauthorized) {
		t.Fatalf("stale cookie: %v; want ErrUnauthorized", err)
	}
	// A missing cookie (node not started yet) reads as unreachable.
	_, err = newClient(t, node.Config{URL: cfg.URL, CookieFile: stale + "-none", Retries: 1}).GetBlockCount(ctx)
	var te *node.TransportError
	if !errors.As(err, &te) {
		t.Fatalf("missing cookie: %v; want *TransportError", err)
	}
}

func TestClosedPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	c := newClient(t, node.Config{URL: addr, Retries: 2, Timeout: time.Second})
	start := time.Now()
	_, err = c.GetBlockCount(ctxT(t))
	var te *node.TransportError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("closed port: %v; want *TransportError (connection refused)", err)
	}
	// Two retries back off 200ms then 400ms.
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Fatalf("gave up after %v; want the retries' backoff first", d)
	}
}

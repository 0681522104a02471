package node_test

import (
	"errors"
	"testing"

	"github.com/btcsuite/btcd/btcutil/gcs"
	"github.com/btcsuite/btcd/btcutil/gcs/builder"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/regtest"
)

// checkFilter decodes a filter as BIP158 serializes it (CompactSize N,
// then the coded set) and checks that it holds the coinbase's script.
func checkFilter(t *testing.T, n *regtest.Node, hash string, data []byte) {
	t.Helper()
	f, err := gcs.FromNBytes(builder.DefaultP, builder.DefaultM, data)
	if err != nil {
		t.Fatalf("filter %x: %v", data, err)
	}
	if f.N() == 0 {
		t.Fatalf("filter of block %s is empty", hash)
	}
	raw, err := n.Client().GetRawBlock(ctxT(t), hash)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := n.Chain().ParseBlock(raw)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := chainhash.NewHashFromStr(hash)
	ok, err := f.Match(builder.DeriveKey(h), blk.Transactions[0].TxOut[0].PkScript)
	if err != nil || !ok {
		t.Fatalf("filter of block %s misses its coinbase script: %v, %v", hash, ok, err)
	}
}

// noFilters asserts err means "no filters" and still carries the node's
// error with the given code.
func noFilters(t *testing.T, what string, err error, code int) {
	t.Helper()
	if !errors.Is(err, node.ErrNoFilters) || !node.IsCode(err, code) {
		t.Fatalf("%s: %v; want ErrNoFilters wrapping code %d", what, err, code)
	}
}

func TestBtcdFilters(t *testing.T) {
	ctx := ctxT(t)
	n := regtest.StartT(t, regtest.Options{PreMine: 3})
	c := n.Client()
	best, err := c.GetBestBlockHash(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data, err := c.GetCFilter(ctx, best)
	if err != nil {
		t.Fatal(err)
	}
	checkFilter(t, n, best, data)
	genesis, err := c.GetBlockHash(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetCFilter(ctx, genesis); err != nil {
		t.Fatalf("genesis filter: %v", err)
	}
	// btcd answers an unknown block with an empty string.
	if _, err := c.GetCFilter(ctx, unknownHash); !node.IsCode(err, node.CodeBlockNotFound) || errors.Is(err, node.ErrNoFilters) {
		t.Fatalf("unknown block: %v; want code %d", err, node.CodeBlockNotFound)
	}
	_, err = c.GetBlockFilter(ctx, best)
	noFilters(t, "btcd getblockfilter", err, node.CodeMethodNotFound)

	off := regtest.StartT(t, regtest.Options{NoBlockFilterIndex: true})
	genesis, err = off.Client().GetBlockHash(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = off.Client().GetCFilter(ctx, genesis)
	noFilters(t, "btcd --nocfilters getcfilter", err, node.CodeBlockNotFound)
}

func TestLitecoindFilters(t *testing.T) {
	ctx := ctxT(t)
	n := regtest.StartT(t, regtest.Options{Kind: regtest.KindLitecoind, PreMine: 3})
	c := n.Client()
	best, err := c.GetBestBlockHash(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data, err := c.GetBlockFilter(ctx, best)
	if err != nil {
		t.Fatal(err)
	}
	checkFilter(t, n, best, data)
	if _, err := c.GetBlockFilter(ctx, unknownHash); !node.IsCode(err, node.CodeBlockNotFound) || errors.Is(err, node.ErrNoFilters) {
		t.Fatalf("unknown block: %v; want code %d", err, node.CodeBlockNotFound)
	}
	_, err = c.GetCFilter(ctx, best)
	noFilters(t, "litecoind getcfilter", err, node.CodeMethodNotFound)

	off := regtest.StartT(t, regtest.Options{Kind: regtest.KindLitecoind, NoBlockFilterIndex: true})
	genesis, err := off.Client().GetBlockHash(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = off.Client().GetBlockFilter(ctx, genesis)
	noFilters(t, "litecoind without -blockfilterindex", err, -1)
}

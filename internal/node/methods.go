package node

import (
	"context"
	"encoding/hex"
	"fmt"
)

// BlockchainInfo is the subset of getblockchaininfo Coffer uses.
type BlockchainInfo struct {
	Chain         string `json:"chain"`
	Blocks        int64  `json:"blocks"`
	Headers       int64  `json:"headers"`
	BestBlockHash string `json:"bestblockhash"`
}

// BlockHeader is the subset of getblockheader (verbose) Coffer uses.
type BlockHeader struct {
	Hash          string `json:"hash"`
	Height        int64  `json:"height"`
	PreviousHash  string `json:"previousblockhash"`
	Time          int64  `json:"time"`
	Confirmations int64  `json:"confirmations"`
}

// GetBlockchainInfo returns the node's chain name and tip.
func (c *Client) GetBlockchainInfo(ctx context.Context) (*BlockchainInfo, error) {
	var info BlockchainInfo
	return &info, c.Call(ctx, "getblockchaininfo", &info)
}

// GetBlockCount returns the height of the node's best chain.
func (c *Client) GetBlockCount(ctx context.Context) (int64, error) {
	var n int64
	return n, c.Call(ctx, "getblockcount", &n)
}

// GetBestBlockHash returns the hash of the node's tip.
func (c *Client) GetBestBlockHash(ctx context.Context) (string, error) {
	var h string
	return h, c.Call(ctx, "getbestblockhash", &h)
}

// GetBlockHash returns the hash of the best-chain block at height.
func (c *Client) GetBlockHash(ctx context.Context, height int64) (string, error) {
	var h string
	return h, c.Call(ctx, "getblockhash", &h, height)
}

// GetBlockHeader returns a block's header fields.
func (c *Client) GetBlockHeader(ctx context.Context, hash string) (*BlockHeader, error) {
	var h BlockHeader
	return &h, c.Call(ctx, "getblockheader", &h, hash, true)
}

// GetRawBlock returns the serialized block (getblock verbosity 0).
func (c *Client) GetRawBlock(ctx context.Context, hash string) ([]byte, error) {
	return c.hexResult(ctx, "getblock", hash, 0)
}

// GetRawTransaction returns a serialized transaction from the mempool (or the
// chain, where the node indexes it).
func (c *Client) GetRawTransaction(ctx context.Context, txid string) ([]byte, error) {
	return c.hexResult(ctx, "getrawtransaction", txid, 0)
}

// GetRawMempool returns the txids in the node's mempool.
func (c *Client) GetRawMempool(ctx context.Context) ([]string, error) {
	var ids []string
	return ids, c.Call(ctx, "getrawmempool", &ids, false)
}

// TxOut is the subset of gettxout Coffer uses.
type TxOut struct {
	BestBlock     string  `json:"bestblock"`
	Confirmations int64   `json:"confirmations"`
	Value         float64 `json:"value"` // informational only; amounts come from parsed transactions
}

// GetTxOut reports an unspent output, or nil when it is spent or unknown.
// With includeMempool, outputs of mempool transactions are found too; Bitcoin
// Core also counts outputs spent by mempool transactions as spent, but btcd
// does not, so callers must not rely on that.
func (c *Client) GetTxOut(ctx context.Context, txid string, vout uint32, includeMempool bool) (*TxOut, error) {
	var out *TxOut
	return out, c.Call(ctx, "gettxout", &out, txid, vout, includeMempool)
}

// SendRawTransaction broadcasts a serialized transaction and returns its txid.
func (c *Client) SendRawTransaction(ctx context.Context, raw []byte) (string, error) {
	var txid string
	return txid, c.Call(ctx, "sendrawtransaction", &txid, hex.EncodeToString(raw))
}

func (c *Client) hexResult(ctx context.Context, method string, params ...any) ([]byte, error) {
	var s string
	if err := c.Call(ctx, method, &s, params...); err != nil {
		return nil, err
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("node rpc %s: result is not hex: %w", method, err)
	}
	return b, nil
}

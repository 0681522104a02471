// Package cfilter scans block ranges for a set of output scripts with
// BIP157/158 compact block filters, so that only blocks that may touch the
// scripts are downloaded.
//
// A basic filter (BIP158) holds every output script a block creates, except
// empty and OP_RETURN ones, and every script its inputs spend, so a match
// finds payments to and spends from the scripts alike. Matches can be false
// positives (about one in 784931 per script and block), never false
// negatives: a block whose filter does not match has nothing for the
// scripts. On Litecoin, filters cover the canonical transactions only (the
// HogEx included), not MWEB extension-block outputs, which have no scripts.
//
// btcd serves filters with getcfilter (on by default, --nocfilters turns
// them off), Bitcoin and Litecoin Core with getblockfilter when started with
// -blockfilterindex=1. Both return the same serialization: BIP158's
// CompactSize element count N followed by the Golomb-Rice coded set.
package cfilter

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/btcsuite/btcd/btcutil/gcs"
	"github.com/btcsuite/btcd/btcutil/gcs/builder"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/node"
)

// BIP158 basic filter parameters: false-positive rate 1/M per item, P bits
// of Golomb-Rice remainder.
const (
	P = builder.DefaultP // 19
	M = builder.DefaultM // 784931
)

// Filter is one block's decoded basic filter.
type Filter struct {
	f   *gcs.Filter
	key [gcs.KeySize]byte
}

// Decode reads a basic filter as nodes serialize it (N as CompactSize, then
// the coded set) for the block with the given hash (display hex, as RPC
// uses). The hash matters: BIP158 keys the filter's hashing with the first
// 16 bytes of the block hash in internal byte order.
func Decode(blockHash string, data []byte) (*Filter, error) {
	if len(blockHash) != 2*chainhash.HashSize {
		return nil, fmt.Errorf("cfilter: block hash %q is not %d hex digits", blockHash, 2*chainhash.HashSize)
	}
	h, err := chainhash.NewHashFromStr(blockHash)
	if err != nil {
		return nil, fmt.Errorf("cfilter: block hash %q: %w", blockHash, err)
	}
	f, err := gcs.FromNBytes(P, M, data)
	if err != nil {
		return nil, fmt.Errorf("cfilter: decoding filter of block %s: %w", blockHash, err)
	}
	// Every coded item takes at least P+1 bits (a unary 0 and the
	// remainder). A shorter body is corrupt, and would otherwise read as
	// "no match" once the decoder hits its end.
	body := len(data) - wire.VarIntSerializeSize(uint64(f.N()))
	if uint64(body)*8 < uint64(f.N())*(P+1) {
		return nil, fmt.Errorf("cfilter: filter of block %s is truncated: %d items in %d bytes", blockHash, f.N(), body)
	}
	return &Filter{f: f, key: builder.DeriveKey(h)}, nil
}

// N is the number of distinct scripts the filter holds.
func (f *Filter) N() uint32 { return f.f.N() }

// Match reports whether the block may create or spend an output with any of
// the scripts. Empty scripts never match (BIP158 leaves them out).
func (f *Filter) Match(scripts [][]byte) (bool, error) {
	if f.f.N() == 0 || len(scripts) == 0 {
		return false, nil
	}
	// ZipMatchAny compares full 64-bit values; gcs's HashMatchAny (which
	// MatchAny picks for large queries) truncates them to 32 bits and so
	// adds false positives.
	ok, err := f.f.ZipMatchAny(f.key, nonEmpty(scripts))
	if err != nil {
		return false, fmt.Errorf("cfilter: matching filter: %w", err)
	}
	return ok, nil
}

// nonEmpty drops empty scripts, copying only when there is one.
func nonEmpty(scripts [][]byte) [][]byte {
	for i, s := range scripts {
		if len(s) == 0 {
			out := append([][]byte(nil), scripts[:i]...)
			for _, s := range scripts[i+1:] {
				if len(s) > 0 {
					out = append(out, s)
				}
			}
			return out
		}
	}
	return scripts
}

// method is how a node serves filters.
type method int

const (
	methodUnknown     method = iota
	methodCFilter            // btcd: getcfilter
	methodBlockFilter        // Core: getblockfilter
	methodNone               // neither
)

// Source fetches basic filters from a node: btcd's getcfilter or Core's
// getblockfilter, whichever the node has, detected on first use and then
// remembered (make a new Source after the node's configuration changes).
// It is safe for concurrent use.
type Source struct {
	client *node.Client

	mu     sync.Mutex
	method method
	none   error // the node's answer when method is methodNone
}

// New returns a Source for client; it does not contact the node.
func New(client *node.Client) *Source { return &Source{client: client} }

// Supported reports whether the node serves basic filters, probing with the
// genesis block's filter (then the tip's, should the genesis one be
// missing). A node that says it has none gives false and no error; failures
// to ask (node down) are errors.
func (s *Source) Supported(ctx context.Context) (bool, error) {
	if s == nil || s.client == nil {
		return false, errors.New("cfilter: Source has no node client")
	}
	if m, _ := s.detected(); m != methodUnknown {
		return m != methodNone, nil
	}
	genesis, err := s.client.GetBlockHash(ctx, 0)
	if err != nil {
		return false, err
	}
	_, err = s.fetch(ctx, genesis)
	if err != nil && !errors.Is(err, node.ErrNoFilters) && ctx.Err() == nil {
		tip, terr := s.client.GetBestBlockHash(ctx)
		if terr != nil {
			return false, terr
		}
		_, err = s.fetch(ctx, tip)
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, node.ErrNoFilters):
		return false, nil
	}
	return false, err
}

func (s *Source) detected() (method, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.method, s.none
}

func (s *Source) settle(m method, none error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.method, s.none = m, none
}

// Filter fetches and decodes the basic filter of a block. A node without
// filters gives an error wrapping node.ErrNoFilters.
func (s *Source) Filter(ctx context.Context, blockHash string) (*Filter, error) {
	if s == nil || s.client == nil {
		return nil, errors.New("cfilter: Source has no node client")
	}
	data, err := s.fetch(ctx, blockHash)
	if err != nil {
		return nil, err
	}
	return Decode(blockHash, data)
}

// Match reports whether the block's filter matches any of scripts: false
// positives are possible (rarely), false negatives are not.
func (s *Source) Match(ctx context.Context, blockHash string, scripts [][]byte) (bool, error) {
	f, err := s.Filter(ctx, blockHash)
	if err != nil {
		return false, err
	}
	return f.Match(scripts)
}

// fetch returns the serialized filter with whichever method the node has,
// finding out which on first use: getcfilter, and getblockfilter when
// btcd's method is missing (or disabled). Only a definite "no filters" from
// both is remembered; other failures leave the method open.
func (s *Source) fetch(ctx context.Context, blockHash string) ([]byte, error) {
	m, none := s.detected()
	switch m {
	case methodCFilter:
		return s.client.GetCFilter(ctx, blockHash)
	case methodBlockFilter:
		return s.client.GetBlockFilter(ctx, blockHash)
	case methodNone:
		return nil, none
	}
	data, cfErr := s.client.GetCFilter(ctx, blockHash)
	if cfErr == nil {
		s.settle(methodCFilter, nil)
		return data, nil
	}
	if !errors.Is(cfErr, node.ErrNoFilters) {
		return nil, cfErr
	}
	data, err := s.client.GetBlockFilter(ctx, blockHash)
	if err == nil {
		s.settle(methodBlockFilter, nil)
		return data, nil
	}
	if errors.Is(err, node.ErrNoFilters) {
		// Keep btcd's "index disabled" over Core's "no such method".
		if !node.IsCode(cfErr, node.CodeMethodNotFound) {
			err = cfErr
		}
		s.settle(methodNone, err)
	}
	return nil, err
}

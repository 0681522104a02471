package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrNoFilters means the node does not serve BIP158 basic block filters:
// it lacks the method (-32601), or has it but runs without the filter index
// (Bitcoin/Litecoin Core without -blockfilterindex, btcd with --nocfilters).
// The node's *RPCError is wrapped too, so errors.As still finds it.
var ErrNoFilters = errors.New("node does not serve basic block filters")

type noFiltersError struct{ err error }

func (e *noFiltersError) Error() string   { return ErrNoFilters.Error() + ": " + e.err.Error() }
func (e *noFiltersError) Unwrap() []error { return []error{ErrNoFilters, e.err} }

// GetCFilter returns the BIP158 basic filter of a block from btcd
// (getcfilter <hash> 0). btcd hex-encodes the filter exactly as BIP158
// serializes it: N, the element count, as a CompactSize, then the
// Golomb-Rice coded set (gcs.FromNBytes reads this form); Core's
// getblockfilter uses the same encoding.
//
// btcd answers an unknown block with an empty result; that is returned as
// an *RPCError with CodeBlockNotFound, as Core reports an unknown block.
func (c *Client) GetCFilter(ctx context.Context, blockHash string) ([]byte, error) {
	var s string
	if err := c.Call(ctx, "getcfilter", &s, blockHash, 0); err != nil {
		var re *RPCError
		// btcd --nocfilters reuses -5 (block not found) for a missing index.
		if IsCode(err, CodeMethodNotFound) ||
			(errors.As(err, &re) && strings.Contains(re.Message, "CF index must be enabled")) {
			return nil, &noFiltersError{err}
		}
		return nil, err
	}
	if s == "" {
		return nil, &RPCError{Method: "getcfilter", Code: CodeBlockNotFound, Message: "no filter for block " + blockHash}
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("node rpc getcfilter: result is not hex: %w", err)
	}
	return b, nil
}

// GetBlockFilter returns the BIP158 basic filter of a block from Bitcoin or
// Litecoin Core (getblockfilter <hash> "basic"), serialized as GetCFilter
// describes. The node needs -blockfilterindex=1; without it the error is
// ErrNoFilters. The filter header the node also returns is dropped.
func (c *Client) GetBlockFilter(ctx context.Context, blockHash string) ([]byte, error) {
	var res struct {
		Filter string `json:"filter"`
		Header string `json:"header"`
	}
	if err := c.Call(ctx, "getblockfilter", &res, blockHash, "basic"); err != nil {
		var re *RPCError
		// Core: "Index is not enabled for filtertype basic" (-1).
		if IsCode(err, CodeMethodNotFound) ||
			(errors.As(err, &re) && strings.Contains(re.Message, "Index is not enabled")) {
			return nil, &noFiltersError{err}
		}
		return nil, err
	}
	if res.Filter == "" {
		return nil, fmt.Errorf("node rpc getblockfilter: empty filter for block %s", blockHash)
	}
	b, err := hex.DecodeString(res.Filter)
	if err != nil {
		return nil, fmt.Errorf("node rpc getblockfilter: filter is not hex: %w", err)
	}
	return b, nil
}

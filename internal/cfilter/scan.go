package cfilter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/node"
)

// DefaultConcurrency is how many heights a Scanner fetches at once when
// Concurrency is not set.
const DefaultConcurrency = 8

// Scanner walks a range of the node's best chain and hands the blocks that
// concern a script set to a callback, in height order.
type Scanner struct {
	Client *node.Client
	Params *chain.Params
	// Filters, when set and the node serves filters, limits downloads to
	// blocks whose filter matches. Nil, or a node without filters, means
	// every block is downloaded.
	Filters *Source
	// Concurrency is how many heights are fetched at once (block hash,
	// filter, block); the scan reads at most twice as many heights ahead
	// of the one being handled. Default DefaultConcurrency.
	Concurrency int

	// fetched, for tests, is told when a height's prefetch is over.
	fetched func(height int64)
}

// Stats says what a scan did.
type Stats struct {
	Heights int64 // heights visited (progress calls)
	Matched int64 // blocks handed to fn
	Skipped int64 // heights whose filter matched none of the scripts
	Fetched int64 // full blocks downloaded, Discarded ones included

	// LateMatches counts blocks that matched only scripts added after
	// their filter was fetched ahead: they were downloaded at their turn.
	LateMatches int64
	// Discarded counts blocks downloaded ahead on a match that no longer
	// held at their turn, the script set having lost scripts meanwhile.
	Discarded int64
	// FilterErrors counts heights whose filter could not be fetched or
	// decoded; their blocks were downloaded and handed to fn instead.
	FilterErrors int64
	// UsedFilters is false when Filters was nil or the node has none.
	UsedFilters bool
}

// ErrBlockMismatch is wrapped by the error Scan returns when the node sends
// a block other than the one asked for.
var ErrBlockMismatch = errors.New("cfilter: node returned a different block than requested")

// Scan visits heights from..to (inclusive) in order. With filters, want is
// called at each height's turn for the current script set, which may have
// grown since the last call (a wallet widening its gap window from fn), and
// fn gets the blocks whose filter matches it; without filters want is not
// called and fn gets every block. progress, if set, is called after each
// height, matched or not. A nil want is an empty script set.
//
// Hashes, filters and blocks are fetched ahead concurrently, but fn and
// progress run on the calling goroutine, one at a time, in height order.
// Filters fetched ahead are matched again against the script set current at
// their turn ("fetch ahead, match late"), so a script added by fn still
// finds later blocks. want must return scripts whose bytes are not changed
// afterwards; the slice itself may be replaced or appended to.
//
// Scan stops at the first error, from fn (returned as it is), the context
// or the node, and returns the stats so far. A filter that cannot be had
// for a height is not an error: its block is downloaded instead. Each block
// is checked to hash to the requested hash, but Scan does not follow
// reorgs: a reorg during the scan can mix branches, so fn should check that
// blocks connect (it gets each block's hash and the header's PrevBlock).
func (s *Scanner) Scan(ctx context.Context, from, to int64, want func() [][]byte,
	fn func(height int64, hash string, blk *wire.MsgBlock) error, progress func(int64)) (Stats, error) {
	var st Stats
	switch {
	case s.Client == nil:
		return st, errors.New("cfilter: Scanner has no node client")
	case s.Params == nil:
		return st, errors.New("cfilter: Scanner has no chain parameters")
	case fn == nil:
		return st, errors.New("cfilter: Scan without a block callback")
	case from < 0:
		return st, fmt.Errorf("cfilter: Scan from height %d", from)
	case to < from:
		return st, nil
	}
	if s.Filters != nil {
		ok, err := s.Filters.Supported(ctx)
		if err != nil {
			return st, err
		}
		st.UsedFilters = ok
	}
	if want == nil {
		want = func() [][]byte { return nil }
	}
	workers := s.Concurrency
	if workers <= 0 {
		workers = DefaultConcurrency
	}
	if span := to - from + 1; int64(workers) > span {
		workers = int(span)
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	var set scriptSet
	if st.UsedFilters {
		set.refresh(want())
	}
	order := make(chan *slot, 2*workers) // bounds the read-ahead
	jobs := make(chan *slot)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(jobs)
		defer close(order)
		for h := from; h <= to; h++ {
			sl := &slot{height: h, done: make(chan struct{})}
			select {
			case order <- sl:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- sl:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sl := range jobs {
				s.prefetch(ctx, sl, st.UsedFilters, &set)
				close(sl.done)
				if s.fetched != nil {
					s.fetched(sl.height)
				}
			}
		}()
	}

	for sl := range order {
		select {
		case <-sl.done:
		case <-ctx.Done():
			return st, ctx.Err()
		}
		if sl.err != nil {
			return st, sl.err
		}
		blk := sl.blk
		sl.blk = nil
		if blk != nil {
			st.Fetched++
		}
		if sl.filterErr != nil {
			st.FilterErrors++
		}
		if sl.filter != nil {
			version := set.refresh(want())
			match := sl.early
			if version != sl.version {
				var err error
				if match, err = sl.filter.Match(set.load().scripts); err != nil {
					st.FilterErrors++
					match = true
				}
			}
			if !match {
				if blk != nil {
					st.Discarded++
				}
				st.Skipped++
				st.Heights++
				if progress != nil {
					progress(sl.height)
				}
				continue
			}
			if blk == nil {
				var err error
				if blk, err = s.block(ctx, sl.height, sl.hash); err != nil {
					return st, err
				}
				st.Fetched++
				st.LateMatches++
			}
		}
		if err := fn(sl.height, sl.hash, blk); err != nil {
			return st, err
		}
		st.Matched++
		st.Heights++
		if progress != nil {
			progress(sl.height)
		}
	}
	// The producer stops early only when the context ends.
	return st, ctx.Err()
}

// slot is one height on its way through the pipeline. A worker fills it
// and closes done; only then does the consumer read it.
type slot struct {
	height int64
	done   chan struct{}

	hash      string
	filter    *Filter // nil without filters, or when it failed (filterErr)
	filterErr error
	version   uint64 // script set version the filter was matched against
	early     bool   // that match's result
	blk       *wire.MsgBlock
	err       error // the height cannot be handled
}

// prefetch gets a height's hash, its filter (matched against the latest
// script set) and, on a match or without filters, its block.
func (s *Scanner) prefetch(ctx context.Context, sl *slot, useFilters bool, set *scriptSet) {
	hash, err := s.Client.GetBlockHash(ctx, sl.height)
	if err != nil {
		sl.err = fmt.Errorf("cfilter: hash of block %d: %w", sl.height, err)
		return
	}
	sl.hash = hash
	if useFilters {
		f, err := s.Filters.Filter(ctx, hash)
		if err == nil {
			cur := set.load()
			match, merr := f.Match(cur.scripts)
			if merr == nil {
				sl.filter, sl.version, sl.early = f, cur.version, match
				if !match {
					return
				}
			} else {
				sl.filterErr = merr
			}
		} else {
			if ctx.Err() != nil {
				sl.err = err
				return
			}
			sl.filterErr = err
		}
	}
	sl.blk, sl.err = s.block(ctx, sl.height, hash)
}

// block downloads, parses and checks a block.
func (s *Scanner) block(ctx context.Context, height int64, hash string) (*wire.MsgBlock, error) {
	raw, err := s.Client.GetRawBlock(ctx, hash)
	if err != nil {
		return nil, fmt.Errorf("cfilter: block %d (%s): %w", height, hash, err)
	}
	blk, err := s.Params.ParseBlock(raw)
	if err != nil {
		return nil, fmt.Errorf("cfilter: block %d (%s): %w", height, hash, err)
	}
	if got := blk.BlockHash().String(); got != hash {
		return nil, fmt.Errorf("%w: asked for %s at height %d, got %s", ErrBlockMismatch, hash, height, got)
	}
	return blk, nil
}

// scriptSet is the consumer's latest copy of the caller's scripts, shared
// with the workers for matching filters ahead of time. Only the consumer
// goroutine calls refresh.
type scriptSet struct {
	cur atomic.Pointer[scripts]
}

type scripts struct {
	version uint64
	scripts [][]byte
}

func (s *scriptSet) load() *scripts {
	if p := s.cur.Load(); p != nil {
		return p
	}
	return &scripts{}
}

// refresh publishes a copy of list when it differs from the current one
// (another length, or any element another slice) and returns the version
// in force.
func (s *scriptSet) refresh(list [][]byte) uint64 {
	cur := s.load()
	if sameScripts(cur.scripts, list) {
		return cur.version
	}
	next := &scripts{version: cur.version + 1, scripts: append([][]byte(nil), list...)}
	s.cur.Store(next)
	return next.version
}

// sameScripts reports whether a and b hold the very same byte slices.
func sameScripts(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) || (len(a[i]) > 0 && &a[i][0] != &b[i][0]) {
			return false
		}
	}
	return true
}

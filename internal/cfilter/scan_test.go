package cfilter

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil/gcs/builder"
	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/regtest"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mine(t testing.TB, ctx context.Context, n *regtest.Node, count int) {
	t.Helper()
	if _, err := n.Mine(ctx, count); err != nil {
		t.Fatal(err)
	}
}

func height(t testing.TB, ctx context.Context, n *regtest.Node) int64 {
	t.Helper()
	h, err := n.Client().GetBlockCount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// scenario is a stretch of chain from..to in which script A is paid at
// height k and spent at j (without change back to A, so block j has A only
// as a spent prevout), and script B is paid at kb = k+3.
type scenario struct {
	n            *regtest.Node
	from, to     int64
	k, kb, j     int64
	scriptA, scB []byte
}

// spendAll is what SendFrom pays out of a 1,000,000 sat output so that the
// change (under the harness's 10,000 sat dust floor) goes to the fee.
const spendAll = 995_000

func newScenario(t *testing.T, ctx context.Context, n *regtest.Node, witness bool) *scenario {
	t.Helper()
	script := func(k *regtest.Key) []byte {
		if witness {
			return k.WitnessPkScript()
		}
		return k.PkScript()
	}
	a, b := n.NewKey(), n.NewKey()
	s := &scenario{n: n, scriptA: script(a), scB: script(b)}
	s.from = height(t, ctx, n) + 1
	mine(t, ctx, n, 3)
	if _, _, err := n.Fund(ctx, s.scriptA, 1_000_000); err != nil {
		t.Fatal(err)
	}
	mine(t, ctx, n, 1)
	s.k = height(t, ctx, n)
	mine(t, ctx, n, 2)
	if _, _, err := n.Fund(ctx, s.scB, 500_000); err != nil {
		t.Fatal(err)
	}
	mine(t, ctx, n, 1)
	s.kb = height(t, ctx, n)
	mine(t, ctx, n, 6)
	if _, err := n.SendFrom(ctx, a, []regtest.Output{{PkScript: n.NewKey().PkScript(), Amount: spendAll}}); err != nil {
		t.Fatal(err)
	}
	mine(t, ctx, n, 1)
	s.j = height(t, ctx, n)
	mine(t, ctx, n, 50-int(s.j-s.from+1))
	s.to = height(t, ctx, n)
	return s
}

func (s *scenario) hash(t testing.TB, ctx context.Context, h int64) string {
	t.Helper()
	hash, err := s.n.Client().GetBlockHash(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	return hash
}

// groundTruth scans every block without filters and reports where script
// is paid and where those outputs are spent.
func (s *scenario) groundTruth(t *testing.T, ctx context.Context, script []byte) (paid, spent []int64) {
	t.Helper()
	sc := &Scanner{Client: s.n.Client(), Params: s.n.Chain(), Concurrency: 3}
	outs := map[wire.OutPoint]bool{}
	var visited []int64
	st, err := sc.Scan(ctx, s.from, s.to, func() [][]byte {
		t.Error("want called without filters")
		return nil
	}, func(h int64, hash string, blk *wire.MsgBlock) error {
		visited = append(visited, h)
		if blk.BlockHash().String() != hash {
			t.Errorf("height %d: block %s, hash %s", h, blk.BlockHash(), hash)
		}
		for _, tx := range blk.Transactions {
			for _, in := range tx.TxIn {
				if outs[in.PreviousOutPoint] {
					spent = append(spent, h)
				}
			}
			for i, out := range tx.TxOut {
				if bytes.Equal(out.PkScript, script) {
					outs[wire.OutPoint{Hash: tx.TxHash(), Index: uint32(i)}] = true
					paid = append(paid, h)
				}
			}
		}
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	total := s.to - s.from + 1
	if st.UsedFilters || st.Heights != total || st.Matched != total || st.Fetched != total || st.Skipped != 0 {
		t.Fatalf("full-block scan stats %+v; want all %d blocks", st, total)
	}
	if !slices.Equal(visited, seq(s.from, s.to)) {
		t.Fatalf("full-block scan visited %v", visited)
	}
	return paid, spent
}

func seq(from, to int64) []int64 {
	var out []int64
	for h := from; h <= to; h++ {
		out = append(out, h)
	}
	return out
}

// scan runs a filtered scan for a fixed script set and checks the
// callbacks' order.
func (s *scenario) scan(t *testing.T, ctx context.Context, concurrency int, scripts ...[]byte) ([]int64, Stats) {
	t.Helper()
	sc := &Scanner{Client: s.n.Client(), Params: s.n.Chain(), Filters: New(s.n.Client()), Concurrency: concurrency}
	var got, progress []int64
	st, err := sc.Scan(ctx, s.from, s.to, func() [][]byte { return scripts },
		func(h int64, hash string, blk *wire.MsgBlock) error {
			got = append(got, h)
			if len(progress) != int(h-s.from) {
				t.Errorf("fn(%d) after progress %v", h, progress)
			}
			return nil
		}, func(h int64) { progress = append(progress, h) })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(progress, seq(s.from, s.to)) {
		t.Fatalf("progress %v", progress)
	}
	if !st.UsedFilters || st.Heights != s.to-s.from+1 || st.Matched != int64(len(got)) || st.Matched+st.Skipped != st.Heights {
		t.Fatalf("stats %+v for %d blocks delivered", st, len(got))
	}
	return got, st
}

// exercise runs the scanner checks common to btcd and litecoind.
func exercise(t *testing.T, ctx context.Context, s *scenario) {
	c := s.n.Client()
	src := New(c)
	if ok, err := src.Supported(ctx); err != nil || !ok {
		t.Fatalf("Supported: %v, %v", ok, err)
	}

	paid, spent := s.groundTruth(t, ctx, s.scriptA)
	if !slices.Equal(paid, []int64{s.k}) || !slices.Equal(spent, []int64{s.j}) {
		t.Fatalf("script A paid at %v, spent at %v; want %d, %d", paid, spent, s.k, s.j)
	}
	// Block j holds A only as the script its input spends.
	blkJ := s.block(t, ctx, s.j)
	for _, tx := range blkJ.Transactions {
		for _, out := range tx.TxOut {
			if bytes.Equal(out.PkScript, s.scriptA) {
				t.Fatal("spend paid change back to A")
			}
		}
	}

	// Direct matches, and the node's filters equal what gcs/builder makes
	// of the block and its prevouts.
	for _, c := range []struct {
		h    int64
		want bool
	}{{s.k, true}, {s.j, true}, {s.k - 1, false}, {s.kb, false}} {
		ok, err := src.Match(ctx, s.hash(t, ctx, c.h), [][]byte{s.scriptA})
		if err != nil || ok != c.want {
			t.Errorf("Match A at %d: %v, %v; want %v", c.h, ok, err, c.want)
		}
	}
	for _, h := range []int64{s.k, s.kb, s.j} {
		s.checkFilterBytes(t, ctx, src, h)
	}

	for _, conc := range []int{0, 1, 3} {
		got, st := s.scan(t, ctx, conc, s.scriptA)
		if !slices.Contains(got, s.k) || !slices.Contains(got, s.j) || len(got) > 4 {
			t.Fatalf("concurrency %d: filtered scan for A delivered %v; want %d and %d (and rarely a false positive)", conc, got, s.k, s.j)
		}
		if st.Fetched != st.Matched || st.LateMatches != 0 || st.Discarded != 0 || st.FilterErrors != 0 {
			t.Fatalf("concurrency %d: stats %+v", conc, st)
		}
		t.Logf("concurrency %d: delivered %v, stats %+v", conc, got, st)
	}
	if got, _ := s.scan(t, ctx, 0); len(got) != 0 {
		t.Fatalf("empty script set delivered %v", got)
	}
	if got, _ := s.scan(t, ctx, 0, s.scriptA, s.scB); !slices.Contains(got, s.kb) || !slices.Contains(got, s.k) {
		t.Fatalf("A and B delivered %v", got)
	}

	lateMatch(t, ctx, s)
	lateUnmatch(t, ctx, s)
}

func (s *scenario) block(t testing.TB, ctx context.Context, h int64) *wire.MsgBlock {
	t.Helper()
	raw, err := s.n.Client().GetRawBlock(ctx, s.hash(t, ctx, h))
	if err != nil {
		t.Fatal(err)
	}
	blk, err := s.n.Chain().ParseBlock(raw)
	if err != nil {
		t.Fatal(err)
	}
	return blk
}

// checkFilterBytes rebuilds block h's filter with gcs/builder from the
// block and the scripts its inputs spend, and compares it with the node's.
func (s *scenario) checkFilterBytes(t *testing.T, ctx context.Context, src *Source, h int64) {
	t.Helper()
	c := s.n.Client()
	blk := s.block(t, ctx, h)
	var prev [][]byte
	for _, tx := range blk.Transactions[1:] {
		for _, in := range tx.TxIn {
			var res struct {
				Vout []struct {
					N            uint32 `json:"n"`
					ScriptPubKey struct {
						Hex string `json:"hex"`
					} `json:"scriptPubKey"`
				} `json:"vout"`
			}
			if err := c.Call(ctx, "getrawtransaction", &res, in.PreviousOutPoint.Hash.String(), 1); err != nil {
				t.Fatal(err)
			}
			for _, o := range res.Vout {
				if o.N == in.PreviousOutPoint.Index {
					b, err := hex.DecodeString(o.ScriptPubKey.Hex)
					if err != nil {
						t.Fatal(err)
					}
					prev = append(prev, b)
				}
			}
		}
	}
	f, err := builder.BuildBasicFilter(blk, prev)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := f.NBytes()
	got, err := src.fetch(ctx, s.hash(t, ctx, h))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("filter of block %d: node %x, gcs/builder %x", h, got, want)
	}
}

// lateMatch: B joins the script set only when fn sees A's payment at k, by
// which time block kb's filter has been fetched and matched ahead against
// {A}. Matched again at its turn, it is found all the same.
func lateMatch(t *testing.T, ctx context.Context, s *scenario) {
	sc := &Scanner{Client: s.n.Client(), Params: s.n.Chain(), Filters: New(s.n.Client())}
	ahead := make(chan struct{})
	sc.fetched = func(h int64) {
		if h == s.kb {
			close(ahead)
		}
	}
	set := [][]byte{s.scriptA}
	var got []int64
	st, err := sc.Scan(ctx, s.from, s.to, func() [][]byte { return set },
		func(h int64, hash string, blk *wire.MsgBlock) error {
			got = append(got, h)
			if h == s.k {
				select {
				case <-ahead:
				case <-time.After(time.Minute):
					return errors.New("block kb not fetched ahead")
				}
				set = append(set, s.scB)
			}
			return nil
		}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got, s.k) || !slices.Contains(got, s.kb) || !slices.Contains(got, s.j) {
		t.Fatalf("growing set delivered %v; want %d, %d, %d", got, s.k, s.kb, s.j)
	}
	if st.LateMatches != 1 {
		t.Fatalf("stats %+v; want one late match (block %d)", st, s.kb)
	}
}

// lateUnmatch: the set loses B after kb was fetched ahead on a match;
// at its turn kb no longer matches, and its block is dropped.
func lateUnmatch(t *testing.T, ctx context.Context, s *scenario) {
	sc := &Scanner{Client: s.n.Client(), Params: s.n.Chain(), Filters: New(s.n.Client())}
	ahead := make(chan struct{})
	sc.fetched = func(h int64) {
		if h == s.kb {
			close(ahead)
		}
	}
	set := [][]byte{s.scriptA, s.scB}
	var got []int64
	st, err := sc.Scan(ctx, s.from, s.to, func() [][]byte { return set },
		func(h int64, hash string, blk *wire.MsgBlock) error {
			got = append(got, h)
			if h == s.k {
				<-ahead
				set = [][]byte{s.scriptA}
			}
			return nil
		}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(got, s.kb) || st.Discarded != 1 || st.Fetched != st.Matched+1 {
		t.Fatalf("shrinking set delivered %v, stats %+v; want %d dropped", got, st, s.kb)
	}
}

// noFilters checks a node without filters: Supported says so, Match fails
// with node.ErrNoFilters, and a Scanner given the Source reads every block.
func noFilters(t *testing.T, ctx context.Context, n *regtest.Node) {
	c := n.Client()
	src := New(c)
	if ok, err := src.Supported(ctx); err != nil || ok {
		t.Fatalf("Supported: %v, %v; want false", ok, err)
	}
	best, err := c.GetBestBlockHash(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Match(ctx, best, [][]byte{{1}}); !errors.Is(err, node.ErrNoFilters) {
		t.Fatalf("Match: %v; want ErrNoFilters", err)
	}
	tip := height(t, ctx, n)
	sc := &Scanner{Client: c, Params: n.Chain(), Filters: src}
	var got []int64
	st, err := sc.Scan(ctx, 1, tip, nil, func(h int64, _ string, _ *wire.MsgBlock) error {
		got = append(got, h)
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.UsedFilters || !slices.Equal(got, seq(1, tip)) {
		t.Fatalf("scan without filters: %v, %+v", got, st)
	}
}

func TestBtcd(t *testing.T) {
	ctx := ctxT(t)
	n := regtest.StartT(t, regtest.Options{PreMine: 101})
	exercise(t, ctx, newScenario(t, ctx, n, false))
}

func TestBtcdNoFilters(t *testing.T) {
	ctx := ctxT(t)
	n := regtest.StartT(t, regtest.Options{PreMine: 5, NoBlockFilterIndex: true})
	noFilters(t, ctx, n)
}

func TestLitecoind(t *testing.T) {
	ctx := ctxT(t)
	n := regtest.StartT(t, regtest.Options{Kind: regtest.KindLitecoind, PreMine: 101})
	// Past MWEB activation (432 on regtest): every block ends with a
	// HogEx transaction and carries an extension block.
	mine(t, ctx, n, int(440-height(t, ctx, n)))
	exercise(t, ctx, newScenario(t, ctx, n, true))
}

func TestLitecoindNoFilters(t *testing.T) {
	ctx := ctxT(t)
	n := regtest.StartT(t, regtest.Options{Kind: regtest.KindLitecoind, PreMine: 5, NoBlockFilterIndex: true})
	noFilters(t, ctx, n)
}

func TestScanArgs(t *testing.T) {
	ctx := ctxT(t)
	c, err := node.New(node.Config{URL: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	fn := func(int64, string, *wire.MsgBlock) error { return nil }
	for name, run := range map[string]func() error{
		"no client": func() error { _, err := (&Scanner{}).Scan(ctx, 0, 1, nil, fn, nil); return err },
		"no params": func() error { _, err := (&Scanner{Client: c}).Scan(ctx, 0, 1, nil, fn, nil); return err },
		"no fn": func() error {
			_, err := (&Scanner{Client: c, Params: regtestParams(t)}).Scan(ctx, 0, 1, nil, nil, nil)
			return err
		},
		"negative from": func() error {
			_, err := (&Scanner{Client: c, Params: regtestParams(t)}).Scan(ctx, -1, 1, nil, fn, nil)
			return err
		},
	} {
		if run() == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// An empty range asks the node nothing.
	if st, err := (&Scanner{Client: c, Params: regtestParams(t)}).Scan(ctx, 5, 4, nil, fn, nil); err != nil || st.Heights != 0 {
		t.Errorf("empty range: %+v, %v", st, err)
	}
	if _, err := (*Source)(nil).Supported(ctx); err == nil {
		t.Error("nil Source: Supported without error")
	}
}

func regtestParams(t testing.TB) *chain.Params {
	p, err := chain.Lookup(chain.BTC, chain.Regtest)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

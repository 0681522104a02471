package cfilter

import (
	"crypto/rand"
	"testing"

	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/regtest"
)

// BenchmarkScan scans 500 btcd blocks of about 45 kB (a transaction with
// 1000 P2WSH outputs each) for one script paid in 5 of them: with filters,
// and reading every block. Mainnet blocks are some 30 times larger, and
// their filters are not, so the gap there is wider.
func BenchmarkScan(b *testing.B) {
	ctx := ctxT(b)
	n := regtest.StartT(b, regtest.Options{PreMine: 101})
	watched := n.NewKey().PkScript()
	from := height(b, ctx, n) + 1
	const blocks = 500
	outs := make([]regtest.Output, 1000)
	for i := range blocks {
		for j := range outs {
			script := make([]byte, 34)
			script[1] = 32 // OP_0 <32 bytes>
			rand.Read(script[2:])
			outs[j] = regtest.Output{PkScript: script, Amount: 5_000}
		}
		if i%100 == 50 {
			outs[0].PkScript = watched
		}
		if _, err := n.SendMany(ctx, outs); err != nil {
			b.Fatal(err)
		}
		mine(b, ctx, n, 1)
	}
	to := from + blocks - 1
	for _, c := range []struct {
		name    string
		filters bool
	}{{"filters", true}, {"full", false}} {
		b.Run(c.name, func(b *testing.B) {
			sc := &Scanner{Client: n.Client(), Params: n.Chain()}
			if c.filters {
				sc.Filters = New(n.Client())
			}
			var st Stats
			for b.Loop() {
				var err error
				st, err = sc.Scan(ctx, from, to, func() [][]byte { return [][]byte{watched} },
					func(int64, string, *wire.MsgBlock) error { return nil }, nil)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(st.Fetched), "blocks/scan")
		})
	}
}

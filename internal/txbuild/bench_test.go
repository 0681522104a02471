package txbuild_test

import (
	"testing"

	"github.com/coffer/coffer/internal/txbuild"
)

// BenchmarkSelect builds a payment from 2,000 candidates of mixed types:
// sizing every candidate, branch and bound (bounded to 100,000 tries), and
// the PSBT.
func BenchmarkSelect(b *testing.B) {
	rng := seeded(99)
	kinds := []string{"wpkh", "tr", "sh-wpkh", "wsh"}
	var owners []*owner
	for i, k := range kinds {
		owners = append(owners, newOwner(b, k, uint32(i)))
	}
	var cands []txbuild.Input
	for i := range 2000 {
		cands = append(cands, owners[i%len(owners)].fund(b, 5_000+rng.Int64N(5_000_000), uint32(i)))
	}
	req := txbuild.Request{
		Outputs:    []txbuild.Output{{Script: newOwner(b, "tr", 50).pkScript, Value: 123_456_789}},
		Candidates: cands,
		FeeRate:    12,
		Change:     owners[0].change(),
	}
	b.ReportAllocs()
	for b.Loop() {
		req.Rand = seeded(1)
		if _, err := txbuild.Build(req); err != nil {
			b.Fatal(err)
		}
	}
}

package txbuild_test

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/btcsuite/btcd/wire"

	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/txbuild"
)

// Sizes at 1 sat/vB for all-wpkh transactions, worked out by hand: the
// fixed part with one P2WPKH payment is 10 bytes + 31-byte output + 2 WU
// segwit marker = 166 WU = 42 vB; each input 68 vB; a change output 31 vB.
const (
	fixed1Out = 42
	wpkhIn    = 68
	wpkhOut   = 31
)

type fixture struct {
	t      *testing.T
	wallet *owner
	change *owner
	dest   *owner
	n      uint32
}

func newFixture(t *testing.T) *fixture {
	return &fixture{t: t, wallet: newOwner(t, "wpkh", 1), change: newOwner(t, "wpkh", 2), dest: newOwner(t, "wpkh", 3)}
}

func (f *fixture) coins(values ...int64) []txbuild.Input {
	var out []txbuild.Input
	for _, v := range values {
		f.n++
		out = append(out, f.wallet.fund(f.t, v, f.n))
	}
	return out
}

func (f *fixture) request(pay int64, cands []txbuild.Input) txbuild.Request {
	return txbuild.Request{
		Outputs:    []txbuild.Output{{Script: f.dest.pkScript, Value: pay}},
		Candidates: cands,
		FeeRate:    1,
		Change:     f.change.change(),
		Params:     btcRegtest(f.t),
		Rand:       seeded(7),
	}
}

func (f *fixture) build(req txbuild.Request) *txbuild.Result {
	f.t.Helper()
	r, err := txbuild.Build(req)
	if err != nil {
		f.t.Fatal(err)
	}
	checkInvariants(f.t, req, r)
	return r
}

func values(ins []txbuild.Input) []int64 {
	var v []int64
	for _, in := range ins {
		v = append(v, in.Value)
	}
	slices.Sort(v)
	return v
}

func TestBnBFindsChangelessMatch(t *testing.T) {
	f := newFixture(t)
	cands := f.coins(1_000_000, 400_000, 300_000, 250_000)
	// 300,000 + 250,000 pays 549,500 plus 42+2*68 = 178 fee and leaves
	// 322, well inside the cost of change (31 + 68*10); no other subset
	// comes close.
	r := f.build(f.request(549_500, cands))
	if r.Algorithm != txbuild.AlgoBnB || r.ChangeIndex != -1 {
		t.Fatalf("algorithm %s change %d, want changeless bnb", r.Algorithm, r.ChangeIndex)
	}
	if got := values(r.Inputs); !slices.Equal(got, []int64{250_000, 300_000}) {
		t.Fatalf("selected %v", got)
	}
	if r.Fee != 500 || r.VSize != fixed1Out+2*wpkhIn {
		t.Fatalf("fee %d vsize %d", r.Fee, r.VSize)
	}
}

func TestBnBPrefersLessWaste(t *testing.T) {
	f := newFixture(t)
	// At 20 sat/vB against a long-term 10, each input wastes 680 sat, so
	// the single coin (excess 0) beats the pair of coins with the same sum.
	// Both the single coin and the pair match the target exactly.
	req := f.request(100_000-fixed1Out*20, f.coins(60_000+wpkhIn*20, 40_000+wpkhIn*20, 100_000+wpkhIn*20))
	req.FeeRate = 20
	r := f.build(req)
	if r.Algorithm != txbuild.AlgoBnB || len(r.Inputs) != 1 || r.Fee != (fixed1Out+wpkhIn)*20 {
		t.Fatalf("algorithm %s with %d inputs, fee %d", r.Algorithm, len(r.Inputs), r.Fee)
	}
	// Below the long-term rate spending more inputs now saves later, so
	// the pair wins.
	req = f.request(100_000-fixed1Out*5, f.coins(60_000+wpkhIn*5, 40_000+wpkhIn*5, 100_000+wpkhIn*5))
	req.FeeRate = 5
	if r = f.build(req); r.Algorithm != txbuild.AlgoBnB || len(r.Inputs) != 2 {
		t.Fatalf("algorithm %s with %d inputs", r.Algorithm, len(r.Inputs))
	}
}

func TestFallbackMakesChange(t *testing.T) {
	f := newFixture(t)
	cands := f.coins(1_000_000, 400_000, 300_000, 250_000)
	req := f.request(123_456, cands)
	r := f.build(req)
	if r.Algorithm != txbuild.AlgoWaste || r.ChangeIndex < 0 {
		t.Fatalf("algorithm %s change %d", r.Algorithm, r.ChangeIndex)
	}
	// With change the fee is exactly the rate times the size.
	if r.VSize != fixed1Out+wpkhIn+wpkhOut || r.Fee != r.VSize {
		t.Fatalf("vsize %d fee %d", r.VSize, r.Fee)
	}
	// Single coins all waste the same; the smallest moves least to change.
	if got := values(r.Inputs); !slices.Equal(got, []int64{250_000}) {
		t.Fatalf("selected %v", got)
	}
	if r.Outputs[r.ChangeIndex].Value != 250_000-123_456-r.Fee {
		t.Fatalf("change %d", r.Outputs[r.ChangeIndex].Value)
	}
}

func TestChangeDroppedWhenDust(t *testing.T) {
	f := newFixture(t)
	// Long-term rate 1: cost of change is 31+68 = 99, and change under
	// max(294 dust, 69) is dropped. Leaving 200 over the changeless fee is
	// too much for BnB and too little for change.
	req := f.request(100_000-(fixed1Out+wpkhIn)-200, f.coins(100_000))
	req.LongTermFeeRate = 1
	r := f.build(req)
	if r.Algorithm != txbuild.AlgoWaste || r.ChangeIndex != -1 || len(r.Outputs) != 1 {
		t.Fatalf("algorithm %s change %d outputs %d", r.Algorithm, r.ChangeIndex, len(r.Outputs))
	}
	if r.Fee != fixed1Out+wpkhIn+200 {
		t.Fatalf("fee %d", r.Fee)
	}
	// With 400 left over, change of 400-31 = 369 is worth keeping.
	req = f.request(100_000-(fixed1Out+wpkhIn)-400, f.coins(100_000))
	req.LongTermFeeRate = 1
	if r = f.build(req); r.ChangeIndex < 0 || r.Outputs[r.ChangeIndex].Value != 369 {
		t.Fatalf("change index %d in %+v", r.ChangeIndex, r.Outputs)
	}
}

func TestSendAll(t *testing.T) {
	f := newFixture(t)
	cands := f.coins(100_000, 50_000, 60) // 60 sat costs 68 to spend at 1 sat/vB
	req := txbuild.Request{SendAll: true, SendAllTo: f.dest.pkScript, Candidates: cands, FeeRate: 1, Params: btcRegtest(t)}
	r := f.build(req)
	if r.Algorithm != txbuild.AlgoSendAll || len(r.Inputs) != 2 || len(r.Outputs) != 1 || r.ChangeIndex != -1 {
		t.Fatalf("algorithm %s, %d inputs, %d outputs", r.Algorithm, len(r.Inputs), len(r.Outputs))
	}
	if r.VSize != fixed1Out+2*wpkhIn || r.Fee != r.VSize || r.Outputs[0].Value != 150_000-r.Fee {
		t.Fatalf("vsize %d fee %d sent %d", r.VSize, r.Fee, r.Outputs[0].Value)
	}

	// Include'd, the uneconomic coin is spent anyway.
	req.Include = []wire.OutPoint{cands[2].OutPoint}
	if r = f.build(req); len(r.Inputs) != 3 {
		t.Fatalf("%d inputs", len(r.Inputs))
	}

	// A fixed payment next to the send-all output.
	req.Include = nil
	req.Outputs = []txbuild.Output{{Script: f.change.pkScript, Value: 30_000}}
	r = f.build(req)
	if len(r.Outputs) != 2 || r.Outputs[0].Value != 30_000 || r.Outputs[1].Value != 150_000-30_000-r.Fee {
		t.Fatalf("outputs %+v fee %d", r.Outputs, r.Fee)
	}

	// Nothing worth sending.
	req.Outputs = nil
	req.Candidates = f.coins(300)
	var ife *txbuild.InsufficientFundsError
	if _, err := txbuild.Build(req); !errors.As(err, &ife) || ife.Have != 300 {
		t.Fatalf("err %v", err)
	}
}

func TestInclude(t *testing.T) {
	f := newFixture(t)
	cands := f.coins(1_000_000, 20_000, 700_000)
	req := f.request(500_000, cands)
	req.Include = []wire.OutPoint{cands[1].OutPoint, cands[1].OutPoint}
	r := f.build(req)
	if !slices.ContainsFunc(r.Inputs, func(in txbuild.Input) bool { return in.OutPoint == cands[1].OutPoint }) || len(r.Inputs) != 2 {
		t.Fatalf("inputs %v", values(r.Inputs))
	}

	// The Include'd coin alone covers it.
	req.Include = []wire.OutPoint{cands[0].OutPoint}
	if r = f.build(req); r.Algorithm != txbuild.AlgoManual || len(r.Inputs) != 1 || r.ChangeIndex < 0 {
		t.Fatalf("algorithm %s, %d inputs", r.Algorithm, len(r.Inputs))
	}

	req.Include = []wire.OutPoint{{Index: 9}}
	if _, err := txbuild.Build(req); !errors.Is(err, txbuild.ErrUnknownInput) {
		t.Fatalf("err %v", err)
	}
}

func TestInsufficientFunds(t *testing.T) {
	f := newFixture(t)
	_, err := txbuild.Build(f.request(50_000, f.coins(10_000, 20_000, 50)))
	var ife *txbuild.InsufficientFundsError
	if !errors.Is(err, txbuild.ErrInsufficientFunds) || !errors.As(err, &ife) {
		t.Fatalf("err %v", err)
	}
	// The 50 sat coin is not usable; the other two cost 68 each.
	if ife.Have != 30_000 || ife.Need != 50_000+fixed1Out+2*wpkhIn {
		t.Fatalf("need %d have %d", ife.Need, ife.Have)
	}
	if _, err := txbuild.Build(f.request(50_000, nil)); !errors.Is(err, txbuild.ErrInsufficientFunds) {
		t.Fatalf("no candidates: %v", err)
	}
}

func TestRequestErrors(t *testing.T) {
	f := newFixture(t)
	cands := f.coins(100_000)
	money := int64(21_000_000 * 100_000_000)
	cases := []struct {
		name string
		edit func(*txbuild.Request)
		want error
	}{
		{"dust", func(r *txbuild.Request) { r.Outputs[0].Value = 293 }, txbuild.ErrDust},
		{"zero", func(r *txbuild.Request) { r.Outputs[0].Value = 0 }, txbuild.ErrInvalidAmount},
		{"negative", func(r *txbuild.Request) { r.Outputs[0].Value = -5 }, txbuild.ErrInvalidAmount},
		{"above supply", func(r *txbuild.Request) { r.Outputs[0].Value = money + 1 }, txbuild.ErrInvalidAmount},
		{"sum overflows", func(r *txbuild.Request) {
			r.Outputs = []txbuild.Output{{Script: f.dest.pkScript, Value: math.MaxInt64}, {Script: f.dest.pkScript, Value: math.MaxInt64}}
		}, txbuild.ErrInvalidAmount},
		{"outputs above supply", func(r *txbuild.Request) {
			r.Outputs = []txbuild.Output{{Script: f.dest.pkScript, Value: money}, {Script: f.dest.pkScript, Value: money}}
		}, txbuild.ErrInvalidAmount},
		{"candidate overflow", func(r *txbuild.Request) {
			r.Candidates = f.coins(math.MaxInt64, math.MaxInt64)
		}, txbuild.ErrInvalidAmount},
		{"candidates above supply", func(r *txbuild.Request) {
			r.Candidates = f.coins(money, money)
		}, txbuild.ErrInvalidAmount},
		{"fee rate 0", func(r *txbuild.Request) { r.FeeRate = 0 }, txbuild.ErrFeeRate},
		{"fee rate too high", func(r *txbuild.Request) { r.FeeRate = 10_001 }, txbuild.ErrFeeRate},
		{"fee rate huge", func(r *txbuild.Request) { r.FeeRate = math.MaxInt64 }, txbuild.ErrFeeRate},
		{"kvB rate too low", func(r *txbuild.Request) { r.FeeRateKvB = 99 }, txbuild.ErrFeeRate},
		{"long-term negative", func(r *txbuild.Request) { r.LongTermFeeRate = -1 }, txbuild.ErrFeeRate},
		{"no outputs", func(r *txbuild.Request) { r.Outputs = nil }, txbuild.ErrNoOutputs},
		{"send-all without target", func(r *txbuild.Request) { r.SendAll = true }, txbuild.ErrNoOutputs},
		{"no change script", func(r *txbuild.Request) { r.Change = txbuild.ChangeSpec{} }, txbuild.ErrInvalidRequest},
		{"empty output script", func(r *txbuild.Request) { r.Outputs[0].Script = nil }, txbuild.ErrInvalidRequest},
		{"duplicate candidate", func(r *txbuild.Request) { r.Candidates = append(r.Candidates, r.Candidates[0]) }, txbuild.ErrInvalidRequest},
		{"unsupported script", func(r *txbuild.Request) { r.Candidates[0].PkScript = []byte{0x51} }, txbuild.ErrInvalidRequest},
		{"wrong redeem script", func(r *txbuild.Request) {
			o := newOwner(t, "sh-wpkh", 50)
			in := o.fund(t, 100_000, 50)
			in.RedeemScript = f.wallet.pkScript
			r.Candidates = []txbuild.Input{in}
		}, txbuild.ErrInvalidRequest},
		{"legacy without prev tx", func(r *txbuild.Request) {
			in := newOwner(t, "pkh", 51).fund(t, 100_000, 51)
			in.PrevTx = nil
			r.Candidates = []txbuild.Input{in}
		}, txbuild.ErrInvalidRequest},
		{"prev tx of another output", func(r *txbuild.Request) {
			in := newOwner(t, "pkh", 52).fund(t, 100_000, 52)
			in.PrevTx = f.wallet.fund(t, 100_000, 53).PrevTx
			r.Candidates = []txbuild.Input{in}
		}, txbuild.ErrInvalidRequest},
		{"prev tx amount differs", func(r *txbuild.Request) {
			in := newOwner(t, "pkh", 54).fund(t, 100_000, 54)
			in.Value = 100_001
			r.Candidates = []txbuild.Input{in}
		}, txbuild.ErrInvalidRequest},
		{"legacy prev tx garbage", func(r *txbuild.Request) {
			in := newOwner(t, "pkh", 56).fund(t, 100_000, 56)
			in.PrevTx = []byte{1, 2, 3}
			r.Candidates = []txbuild.Input{in}
		}, txbuild.ErrInvalidRequest},
		{"bad derivation key", func(r *txbuild.Request) { r.Candidates[0].Derivations[0].PubKey = []byte{2, 1} }, txbuild.ErrInvalidRequest},
		{"taproot without internal key", func(r *txbuild.Request) {
			in := newOwner(t, "tr", 55).fund(t, 100_000, 55)
			in.InternalKey = nil
			r.Candidates = []txbuild.Input{in}
		}, txbuild.ErrInvalidRequest},
		{"taproot internal key off the curve", func(r *txbuild.Request) {
			in := newOwner(t, "tr", 57).fund(t, 100_000, 57)
			in.InternalKey = bytes.Repeat([]byte{0xff}, 32)
			r.Candidates = []txbuild.Input{in}
		}, txbuild.ErrInvalidRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := f.request(50_000, slices.Clone(cands))
			req.Candidates[0].Derivations = slices.Clone(cands[0].Derivations)
			c.edit(&req)
			r, err := txbuild.Build(req)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v (result %v), want %v", err, r, c.want)
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	f := newFixture(t)
	var cands []txbuild.Input
	for range 1500 {
		cands = append(cands, f.coins(10_000)...)
	}
	req := txbuild.Request{SendAll: true, SendAllTo: f.dest.pkScript, Candidates: cands, FeeRate: 1}
	if _, err := txbuild.Build(req); !errors.Is(err, txbuild.ErrTxTooLarge) {
		t.Fatalf("err %v", err)
	}
}

func TestFeeRateKvB(t *testing.T) {
	f := newFixture(t)
	req := f.request(123_456, f.coins(1_000_000, 400_000))
	req.FeeRateKvB = 250 // 0.25 sat/vB
	r := f.build(req)
	if want := (r.VSize*250 + 999) / 1000; r.ChangeIndex < 0 || r.Fee != want {
		t.Fatalf("fee %d for %d vB, want %d", r.Fee, r.VSize, want)
	}
}

// TestRandomRequests checks the invariants over many random wallets.
func TestRandomRequests(t *testing.T) {
	rng := seeded(42)
	kinds := []string{"wpkh", "tr", "sh-wpkh", "pkh", "wsh"}
	for iter := range 150 {
		var cands []txbuild.Input
		for i := range 1 + rng.IntN(30) {
			o := newOwner(t, kinds[rng.IntN(len(kinds))], uint32(i))
			cands = append(cands, o.fund(t, 1000+rng.Int64N(2_000_000), uint32(iter*100+i)))
		}
		var outs []txbuild.Output
		for i := range 1 + rng.IntN(3) {
			outs = append(outs, txbuild.Output{Script: newOwner(t, kinds[i], 900).pkScript, Value: 1000 + rng.Int64N(800_000)})
		}
		req := txbuild.Request{
			Outputs: outs, Candidates: cands, FeeRate: 1 + rng.Int64N(60),
			LongTermFeeRate: 1 + rng.Int64N(30), Change: newOwner(t, kinds[rng.IntN(len(kinds))], 901).change(),
			LockTime: uint32(iter), Rand: seeded(uint64(iter)),
		}
		if rng.IntN(5) == 0 {
			req.Include = []wire.OutPoint{cands[rng.IntN(len(cands))].OutPoint}
		}
		r, err := txbuild.Build(req)
		if errors.Is(err, txbuild.ErrInsufficientFunds) {
			continue
		}
		if err != nil {
			t.Fatalf("iteration %d: %v", iter, err)
		}
		checkInvariants(t, req, r)
		req.Rand = seeded(uint64(iter))
		again, err := txbuild.Build(req)
		if err != nil || again.PSBT.UnsignedTx.TxHash() != r.PSBT.UnsignedTx.TxHash() {
			t.Fatalf("iteration %d: not deterministic for the same seed", iter)
		}
	}
}

func TestChangePositionVaries(t *testing.T) {
	f := newFixture(t)
	cands := f.coins(1_000_000)
	seen := map[int]bool{}
	for i := range 40 {
		req := f.request(100_000, cands)
		req.Outputs = append(req.Outputs, txbuild.Output{Script: f.wallet.pkScript, Value: 100_000})
		req.Rand = seeded(uint64(i))
		seen[f.build(req).ChangeIndex] = true
	}
	if len(seen) != 3 {
		t.Fatalf("change landed at %v, want all of 0..2", seen)
	}
}

func TestDustThreshold(t *testing.T) {
	ltc, err := chain.Lookup(chain.LTC, chain.Mainnet)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		kind string
		want int64
	}{{"pkh", 546}, {"wpkh", 294}, {"tr", 330}, {"wsh", 330}, {"sh-wpkh", 540}} {
		script := newOwner(t, c.kind, 1).pkScript
		if got := txbuild.DustThreshold(script, nil); got != c.want {
			t.Errorf("%s: %d, want %d", c.kind, got, c.want)
		}
		if got := txbuild.DustThreshold(script, ltc); got != 10*c.want {
			t.Errorf("ltc %s: %d, want %d", c.kind, got, 10*c.want)
		}
	}
	if got := txbuild.DustThreshold([]byte{0x6a, 1, 0}, nil); got != 0 {
		t.Errorf("OP_RETURN: %d", got)
	}
}

func TestInputWeight(t *testing.T) {
	for _, c := range []struct {
		kind  string
		vsize int64
	}{{"wpkh", 68}, {"sh-wpkh", 91}, {"pkh", 149}, {"tr", 58}, {"wsh", 105}} {
		w, err := txbuild.InputWeight(newOwner(t, c.kind, 1).fund(t, 1000, 1))
		if err != nil {
			t.Fatal(err)
		}
		if got := (w + 3) / 4; got != c.vsize {
			t.Errorf("%s: %d vB (%d WU), want %d", c.kind, got, w, c.vsize)
		}
	}
}

func TestAntiFeeSnipingLockTime(t *testing.T) {
	r := seeded(3)
	lower := 0
	for range 2000 {
		lt := txbuild.AntiFeeSnipingLockTime(850_000, r)
		if lt > 850_000 || lt < 850_000-99 {
			t.Fatalf("locktime %d", lt)
		}
		if lt < 850_000 {
			lower++
		}
	}
	// About one in ten, less the draws of zero blocks back.
	if lower < 120 || lower > 280 {
		t.Fatalf("%d of 2000 below the tip", lower)
	}
	if txbuild.AntiFeeSnipingLockTime(-1, nil) != 0 || txbuild.AntiFeeSnipingLockTime(600_000_000, nil) != 0 {
		t.Fatal("out-of-range heights must give 0")
	}
	if lt := txbuild.AntiFeeSnipingLockTime(5, nil); lt > 5 {
		t.Fatalf("locktime %d", lt)
	}
}

// A segwit input's previous transaction is only a courtesy to signers: one
// that cannot be parsed is left out, but one that contradicts the input is
// an error.
func TestSegwitPrevTx(t *testing.T) {
	f := newFixture(t)
	cands := f.coins(100_000)
	cands[0].PrevTx = []byte("not a transaction")
	r := f.build(f.request(50_000, cands))
	if r.PSBT.Inputs[0].NonWitnessUtxo != nil || r.PSBT.Inputs[0].WitnessUtxo == nil {
		t.Fatal("unparsable previous transaction should be left out")
	}
	cands[0].PrevTx = f.coins(100_000)[0].PrevTx
	if _, err := txbuild.Build(f.request(50_000, cands)); !errors.Is(err, txbuild.ErrInvalidRequest) {
		t.Fatalf("err %v", err)
	}
}

package node_test

import (
	"encoding/json"
	"errors"
	"math/big"
	"testing"

	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/regtest"
)

func TestParseAmount(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"0.0", 0},
		{"-0", 0},
		{"1", 100_000_000},
		{"0.00001", 1000},     // Core's minimum relay fee, BTC/kvB
		{"0.00012345", 12345}, // Core prints 8 decimals
		{"1e-05", 1000},       // btcd prints Go floats
		{"1.5E-5", 1500},
		{"2.1e+1", 2_100_000_000},
		{"0.000123454", 12345}, // rounds half away from zero
		{"0.000123455", 12346},
		{"0.0001234549999", 12345},
		{"-0.000123455", -12346},
		{"-1", -100_000_000}, // btcd's "no estimate"
		{"0.000000005", 1},
		{"0.000000004999", 0},
		{"0.0000000001", 0},
		{"1e-400", 0},
		{"0e999999999999", 0},
		{"0.29", 29_000_000}, // int64(0.29 * 1e8) is 28999999
		{"9999999999.99999999", 999_999_999_999_999_999},
	} {
		got, err := node.ParseAmount(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseAmount(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{
		"", "-", ".5", "5.", "01", "00.1", "+1", "1e", "1e+", "1.2.3", "0x10", "1_000", " 1", "1 ", "NaN", "Inf",
		"\"1\"", "1/2", "10000000000", "1e10", "1e400", "92233720368.54775807",
	} {
		if v, err := node.ParseAmount(bad); err == nil {
			t.Errorf("ParseAmount(%q) = %d; want an error", bad, v)
		}
	}
}

// FuzzParseAmount compares ParseAmount with exact rational arithmetic on
// every input that is a JSON number.
func FuzzParseAmount(f *testing.F) {
	for _, s := range []string{"0.00012345", "1e-05", "-0.000123455", "21000000", "0.5e-8", "123456789.123456789"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := node.ParseAmount(s)
		var n json.Number
		if json.Unmarshal([]byte(s), &n) != nil || string(n) != s {
			if err == nil {
				t.Fatalf("ParseAmount(%q) = %d for a non-number", s, got)
			}
			return
		}
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			return // exponent too large for big.Rat: skip
		}
		r.Mul(r, big.NewRat(100_000_000, 1))
		// Round half away from zero.
		num, den := new(big.Int).Abs(r.Num()), r.Denom()
		q, m := new(big.Int).QuoRem(num, den, new(big.Int))
		if m.Lsh(m, 1).Cmp(den) >= 0 {
			q.Add(q, big.NewInt(1))
		}
		if r.Sign() < 0 {
			q.Neg(q)
		}
		inRange := q.CmpAbs(big.NewInt(1_000_000_000_000_000_000)) < 0
		switch {
		case err != nil && inRange:
			t.Fatalf("ParseAmount(%q): %v; want %s", s, err, q)
		case err == nil && q.Cmp(big.NewInt(got)) != 0:
			t.Fatalf("ParseAmount(%q) = %d; want %s", s, got, q)
		}
	})
}

func TestEstimateFeeRateBtcd(t *testing.T) {
	ctx := ctxT(t)
	n := regtest.StartT(t, regtest.Options{PreMine: 101})
	c := n.Client()
	// A few blocks with transactions give btcd's estimator something to
	// watch; on regtest it still mostly has nothing to say.
	for range 3 {
		if _, _, err := n.Fund(ctx, n.NewKey().PkScript(), 100_000); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Mine(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	for _, target := range []int{1, 6, 1000} { // 1000: clamped to btcd's 25
		rate, err := c.EstimateFeeRate(ctx, target)
		switch {
		case errors.Is(err, node.ErrNoEstimate):
			t.Logf("target %d: %v", target, err)
		case err != nil:
			t.Fatalf("target %d: %v", target, err)
		case rate <= 0:
			t.Fatalf("target %d: rate %d with no error", target, rate)
		default:
			t.Logf("target %d: %d sat/kvB", target, rate)
		}
	}
	if _, err := c.EstimateFeeRate(ctx, 0); err == nil || errors.Is(err, node.ErrNoEstimate) {
		t.Fatalf("target 0: %v; want an argument error", err)
	}
}

func TestEstimateFeeRateLitecoind(t *testing.T) {
	ctx := ctxT(t)
	n := regtest.StartT(t, regtest.Options{Kind: regtest.KindLitecoind, PreMine: 3})
	c := n.Client()
	// A fresh regtest chain has no fee history.
	_, err := c.EstimateFeeRate(ctx, 6)
	if !errors.Is(err, node.ErrNoEstimate) {
		t.Fatalf("estimate on fresh regtest: %v; want ErrNoEstimate", err)
	}
	t.Log(err)
	// Core rejects targets beyond 1008 itself.
	if _, err := c.EstimateFeeRate(ctx, 5000); !node.IsCode(err, node.CodeInvalidParameter) {
		t.Fatalf("target 5000: %v; want code %d", err, node.CodeInvalidParameter)
	}
}

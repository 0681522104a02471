package descriptor

import (
	"errors"
	"testing"

	"github.com/coffer/coffer/internal/chain"
)

var sentinels = []error{ErrSyntax, ErrChecksum, ErrNetwork, ErrPrivateKey, ErrUnsupported, ErrScriptType, ErrIndex}

// checkErr fails unless err is an *Error wrapping exactly one sentinel.
func checkErr(t *testing.T, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %q (%T) is not a *descriptor.Error", err, err)
	}
	n := 0
	for _, s := range sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("error %q matches %d sentinels", err, n)
	}
}

// FuzzParse checks that no input panics, that every error is a typed one
// and that canonical strings round-trip. Some seeds are long multisig
// descriptors that are slow to minimize, so run it with a short
// -fuzzminimizetime, e.g.
//
//	go test ./internal/descriptor -run '^$' -fuzz FuzzParse -fuzztime 30s -fuzzminimizetime 2s
func FuzzParse(f *testing.F) {
	for _, v := range scriptVectors {
		f.Add(v.desc)
		f.Add(publicForm(f, v.desc))
	}
	for _, s := range []string{
		"raw(deadbeef)#89f8spxm", "raw(deedbeef)##9f8spxm", "raw(Ü)#00000000",
		"wpkh([73c5da0a/84h/0h/0h]" + xpub6ERA + "/<0;1>/*)",
		"tr([73c5da0a/86h/0h/0h]" + bip86Xpub + "/0/*)",
		"wsh(sortedmulti(2," + xpub6ERA + "/0/*," + xpub68NZ + "/<0;1>/*," + pubA34B + "))",
		"sh(wsh(multi(1," + xpub69H7 + "/1/2/*)))",
		"pkh([deadbeef/<0;1>]" + xpubTV2m + "/0)",
		"wpkh(" + xpubTV2m + "/<0;>/*)",
		"wpkh(" + xpub6ERA + "/0h/*)",
		"tr(" + pubA34B + ",pk(" + pubA34B + "))",
		"sh(multi(1," + pubA34BU + "," + pubA34B + "))",
		"multi(20," + pubA34B + ")",
		"wpkh(" + bip84Zpub + "/0/*)",
		"pk([deadbeef])", "pk()", "sh()", "(", ")", "#", "",
	} {
		f.Add(s)
	}
	mainnet := mustNet(f, chain.BTC, chain.Mainnet)
	regtest := mustNet(f, chain.BTC, chain.Regtest)
	f.Fuzz(func(t *testing.T, s string) {
		for _, net := range []*chain.Params{nil, mainnet, regtest} {
			d, err := Parse(s, net)
			if err != nil {
				checkErr(t, err)
				continue
			}
			again, err := Parse(d.String(), net)
			if err != nil {
				t.Fatalf("canonical form %q of %q does not parse: %v", d, s, err)
			}
			if again.String() != d.String() {
				t.Fatalf("round trip of %q: %q then %q", s, d, again)
			}
			ds, err := d.Expand()
			if err != nil {
				checkErr(t, err)
				continue
			}
			for _, e := range ds {
				for _, i := range []uint32{0, 1, 1 << 31} {
					if _, err := e.Derive(i); err != nil {
						checkErr(t, err)
					}
				}
				if _, err := e.Address(0, mainnet); err != nil {
					checkErr(t, err)
				}
			}
			if _, _, err := Pair(d); err != nil {
				checkErr(t, err)
			}
		}
	})
}

func FuzzFromExtendedKey(f *testing.F) {
	for _, k := range []string{bip84Zpub, bip86Xpub, "[73c5da0a/84h/0h/0h]" + bip84Zpub, xpubTV2m + "/0", "L4rK1yDtCWekvXuE6oXD9jCYfFNV2cWRpVuPLBcCU2z8TrisoyY1", "[", "]"} {
		for _, st := range []string{"", "wpkh", "tr", "pkh", "sh-wpkh", "x"} {
			f.Add(k, st)
		}
	}
	net := mustNet(f, chain.BTC, chain.Mainnet)
	f.Fuzz(func(t *testing.T, key, st string) {
		r, c, err := FromExtendedKey(key, st, net)
		if err != nil {
			checkErr(t, err)
			return
		}
		for _, d := range []*Descriptor{r, c} {
			if _, err := d.Address(0, net); err != nil {
				t.Fatalf("%q %q: %v", key, st, err)
			}
		}
	})
}

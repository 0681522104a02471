package descriptor

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/base58"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/coffer/coffer/internal/chain"
)

func mustNet(t testing.TB, c chain.Coin, n chain.Network) *chain.Params {
	t.Helper()
	p, err := chain.Lookup(c, n)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustParse(t testing.TB, s string, net *chain.Params) *Descriptor {
	t.Helper()
	d, err := Parse(s, net)
	if err != nil {
		t.Fatalf("Parse(%q): %v", s, err)
	}
	return d
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantErr checks that err matches kind and is an *Error.
func wantErr(t testing.TB, err, kind error, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("%s: error %q does not match %v", what, err, kind)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: error %q is not a *descriptor.Error", what, err)
	}
}

var (
	xprvRE = regexp.MustCompile(`xprv[1-9A-HJ-NP-Za-km-z]{100,}`)
	wifRE  = regexp.MustCompile(`\b[5KL][1-9A-HJ-NP-Za-km-z]{50,51}\b`)
)

// publicForm rewrites the private keys in a published test vector into
// their public counterparts, computed independently with hdkeychain and
// btcutil, so vectors written with xprv/WIF can check watch-only parsing.
func publicForm(t testing.TB, desc string) string {
	t.Helper()
	desc = xprvRE.ReplaceAllStringFunc(desc, func(s string) string {
		k, err := hdkeychain.NewKeyFromString(s)
		if err != nil {
			t.Fatalf("test vector xprv: %v", err)
		}
		pub, err := k.Neuter()
		if err != nil {
			t.Fatal(err)
		}
		return pub.String()
	})
	return wifRE.ReplaceAllStringFunc(desc, func(s string) string {
		w, err := btcutil.DecodeWIF(s)
		if err != nil {
			t.Fatalf("test vector WIF %s: %v", s, err)
		}
		return hex.EncodeToString(w.SerializePubKey())
	})
}

// reversion re-encodes an extended key with other version bytes, as
// SLIP-132 wallets do.
func reversion(t testing.TB, key string, version uint32) string {
	t.Helper()
	raw := base58.Decode(key)
	if len(raw) != 82 {
		t.Fatalf("not an extended key: %s", key)
	}
	payload := append([]byte(nil), raw[:78]...)
	binary.BigEndian.PutUint32(payload[:4], version)
	sum := chainhash.DoubleHashB(payload)[:4]
	return base58.Encode(append(payload, sum...))
}

func hardened(i uint32) uint32 { return i + hdkeychain.HardenedKeyStart }

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

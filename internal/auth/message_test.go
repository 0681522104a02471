package auth

import (
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/coffer/coffer/internal/chain"
)

func mustParams(t testing.TB, coin chain.Coin, net chain.Network) *chain.Params {
	t.Helper()
	p, err := chain.Lookup(coin, net)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSignMessageCoreVectors checks published vectors: the functional tests
// of Bitcoin Core (test/functional/rpc_signmessagewithprivkey.py) and Litecoin
// Core (test/functional/rpc_signmessage.py) sign this message with this key
// and require exactly these signatures; both nodes sign deterministically
// (RFC 6979), so SignMessage must reproduce them byte for byte.
func TestSignMessageCoreVectors(t *testing.T) {
	const (
		wifKey  = "cUeKHd5orzT3mz8P9pxyREHfsWtVfgsfDjiZZBcjUBAaGk1BTj7N"
		address = "mpLQjfK79b7CCV4VMJWEWAj5Mpx8Up5zxB" // its P2PKH address on testnet
		message = "This is just a test message"
	)
	wif, err := btcutil.DecodeWIF(wifKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []struct {
		coin chain.Coin
		sig  string
	}{
		{chain.BTC, "INbVnW4e6PeRmsv2Qgu8NuopvrVjkcxob+sX8OcZG0SALhWybUjzMLPdAsXI46YZGb0KQTRii+wWIQzRpG/U+S0="},
		{chain.LTC, "IGve8AOjIcu+a/nYW1PABSfmp2oQlEqLIOwPgNW5/Y5teggr8S0vy4SMdjL2Viv3iuBZjJbhvyBo0tv5m3H63b8="},
	} {
		t.Run(string(v.coin), func(t *testing.T) {
			params := mustParams(t, v.coin, chain.Regtest)
			if got := SignMessage(params, wif.PrivKey, message); got != v.sig {
				t.Errorf("SignMessage = %s\nwant          %s", got, v.sig)
			}
			pub, err := VerifySignedMessage(params, message, v.sig)
			if err != nil {
				t.Fatal(err)
			}
			if !pub.IsEqual(wif.PrivKey.PubKey()) {
				t.Fatal("recovered another key")
			}
			addr, err := btcutil.NewAddressPubKeyHash(btcutil.Hash160(pub.SerializeCompressed()), &chaincfg.TestNet3Params)
			if err != nil {
				t.Fatal(err)
			}
			if addr.EncodeAddress() != address {
				t.Errorf("recovered key's address = %s, want %s", addr.EncodeAddress(), address)
			}
			// Another message recovers some other key, not this one.
			if pub2, err := VerifySignedMessage(params, message+".", v.sig); err == nil && pub2.IsEqual(pub) {
				t.Error("signature verifies for another message")
			}
		})
	}
	// The magic differs: a Bitcoin signature is not a Litecoin one.
	btcSig := SignMessage(mustParams(t, chain.BTC, chain.Mainnet), wif.PrivKey, message)
	if pub, err := VerifySignedMessage(mustParams(t, chain.LTC, chain.Mainnet), message, btcSig); err == nil && pub.IsEqual(wif.PrivKey.PubKey()) {
		t.Error("Bitcoin signature verifies as a Litecoin one")
	}
}

// withHeader returns sig with its header byte replaced.
func withHeader(t *testing.T, sig string, h byte) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(b) != 65 {
		t.Fatalf("bad test signature %q", sig)
	}
	b[0] = h
	return base64.StdEncoding.EncodeToString(b)
}

// TestHeaderVariants: every header range (27–30 uncompressed P2PKH, 31–34
// P2PKH, 35–38 P2SH-P2WPKH, 39–42 P2WPKH) with the right recovery id
// recovers the same key; the wrong recovery id does not.
func TestHeaderVariants(t *testing.T) {
	params := mustParams(t, chain.BTC, chain.Regtest)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		var seed [32]byte
		for j := range seed {
			seed[j] = byte(r.Uint32())
		}
		priv, _ := btcec.PrivKeyFromBytes(seed[:])
		msg := strings.Repeat("m", i)
		sig := SignMessage(params, priv, msg)
		raw, _ := base64.StdEncoding.DecodeString(sig)
		if raw[0] < 31 || raw[0] > 34 {
			t.Fatalf("SignMessage header %d, want 31–34", raw[0])
		}
		recID := raw[0] - 31
		for _, base := range []byte{27, 31, 35, 39} {
			pub, err := VerifySignedMessage(params, msg, withHeader(t, sig, base+recID))
			if err != nil {
				t.Fatalf("header %d: %v", base+recID, err)
			}
			if !pub.IsEqual(priv.PubKey()) {
				t.Errorf("header %d recovered another key", base+recID)
			}
			wrong := base + (recID ^ 1)
			if pub, err := VerifySignedMessage(params, msg, withHeader(t, sig, wrong)); err == nil && pub.IsEqual(priv.PubKey()) {
				t.Errorf("header %d (wrong recovery id) recovered the key", wrong)
			}
		}
	}
}

func TestVerifySignedMessageRejects(t *testing.T) {
	params := mustParams(t, chain.BTC, chain.Regtest)
	priv, _ := btcec.PrivKeyFromBytes([]byte{1, 2, 3})
	good := SignMessage(params, priv, "hi")
	raw, _ := base64.StdEncoding.DecodeString(good)
	zeroR := append([]byte{raw[0]}, make([]byte, 64)...)
	copy(zeroR[33:], raw[33:])
	for name, sig := range map[string]string{
		"empty":      "",
		"not base64": "not base64!",
		"short":      base64.StdEncoding.EncodeToString(raw[:64]),
		"long":       base64.StdEncoding.EncodeToString(append(raw, 0)),
		"header 26":  withHeader(t, good, 26),
		"header 43":  withHeader(t, good, 43),
		"header 0":   withHeader(t, good, 0),
		"header 255": withHeader(t, good, 255),
		"zero r":     base64.StdEncoding.EncodeToString(zeroR),
		"all ones":   base64.StdEncoding.EncodeToString(append([]byte{31}, bytesOf(0xff, 64)...)),
		"huge":       strings.Repeat("A", 1<<20),
	} {
		if _, err := VerifySignedMessage(params, "hi", sig); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: error = %v, want ErrBadSignature", name, err)
		}
	}
	if _, err := VerifySignedMessage(nil, "hi", good); err == nil {
		t.Error("nil params accepted")
	}
	if _, err := VerifySignedMessage(&chain.Params{Coin: "doge"}, "hi", good); err == nil {
		t.Error("unknown coin accepted")
	}
	if SignMessage(nil, priv, "hi") != "" || SignMessage(params, nil, "hi") != "" {
		t.Error("SignMessage without params or key returned a signature")
	}
	// Random input never panics.
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		b := make([]byte, 65)
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		b[0] = 27 + byte(r.IntN(16))
		_, _ = VerifySignedMessage(params, "hi", base64.StdEncoding.EncodeToString(b))
	}
}

func bytesOf(v byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = v
	}
	return b
}

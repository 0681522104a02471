package descriptor

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/coffer/coffer/internal/chain"
)

// BIP 84 "Test vectors": account zpub → receive 0, receive 1, change 0.
func TestBIP84(t *testing.T) {
	mainnet := mustNet(t, chain.BTC, chain.Mainnet)
	recv, change, err := FromExtendedKey("[73c5da0a/84h/0h/0h]"+bip84Zpub, "", mainnet)
	if err != nil {
		t.Fatal(err)
	}
	if recv.ScriptType() != ScriptWPKH {
		t.Fatalf("script type %q", recv.ScriptType())
	}
	cases := []struct {
		d           *Descriptor
		index       uint32
		branch      uint32
		pubkey, adr string
	}{
		{recv, 0, 0, "0330d54fd0dd420a6e5f8d3624f5f3482cae350f79d5f0753bf5beef9c2d91af3c", "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"},
		{recv, 1, 0, "03e775fd51f0dfb8cd865d9ff1cca2a158cf651fe997fdc9fee9c1d3b5e995ea77", "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"},
		{change, 0, 1, "03025324888e429ab8e3dbaf1f7802648b9cd01e9b418485c5fa4c1b9b5700e1a6", "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el"},
	}
	for _, c := range cases {
		addr, err := c.d.Address(c.index, mainnet)
		if err != nil || addr != c.adr {
			t.Errorf("address %d/%d = %s, %v; want %s", c.branch, c.index, addr, err, c.adr)
		}
		ko, err := c.d.Derivations(c.index)
		if err != nil {
			t.Fatal(err)
		}
		want := KeyOrigin{
			Fingerprint: [4]byte{0x73, 0xc5, 0xda, 0x0a},
			Path:        []uint32{hardened(84), hardened(0), hardened(0), c.branch, c.index},
			PubKey:      unhex(t, c.pubkey),
		}
		if len(ko) != 1 || !reflect.DeepEqual(ko[0], want) {
			t.Errorf("derivation %d/%d = %+v\nwant %+v", c.branch, c.index, ko, want)
		}
	}
	if want := "wpkh([73c5da0a/84h/0h/0h]xpub6CatWdiZiodmUeTDp8LT5or8nmbKNcuyvz7WyksVFkKB4RHwCD3XyuvPEbvqAQY3rAPshWcMLoP2fMFMKHPJ4ZeZXYVUhLv1VMrjPC7PW6V/0/*)"; !strings.HasPrefix(recv.String(), want+"#") {
		t.Errorf("receive descriptor %s", recv)
	}
	// The same descriptor written with ' has the checksum Bitcoin Core
	// reports for it.
	sum, _ := Checksum("wpkh([73c5da0a/84'/0'/0']xpub6CatWdiZiodmUeTDp8LT5or8nmbKNcuyvz7WyksVFkKB4RHwCD3XyuvPEbvqAQY3rAPshWcMLoP2fMFMKHPJ4ZeZXYVUhLv1VMrjPC7PW6V/0/*)")
	if sum != "wc3n3van" {
		t.Errorf("checksum %s", sum)
	}
}

// BIP 86 "Test vectors": account xpub with tr → receive 0, 1, change 0.
func TestBIP86(t *testing.T) {
	mainnet := mustNet(t, chain.BTC, chain.Mainnet)
	d := mustParse(t, "tr([73c5da0a/86h/0h/0h]"+bip86Xpub+"/<0;1>/*)", mainnet)
	recv, change, err := Pair(d)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		d                              *Descriptor
		index                          uint32
		internal, output, script, addr string
	}{
		{recv, 0, "cc8a4bc64d897bddc5fbc2f670f7a8ba0b386779106cf1223c6fc5d7cd6fc115", "a60869f0dbcf1dc659c9cecbaf8050135ea9e8cdc487053f1dc6880949dc684c",
			"5120a60869f0dbcf1dc659c9cecbaf8050135ea9e8cdc487053f1dc6880949dc684c", "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"},
		{recv, 1, "83dfe85a3151d2517290da461fe2815591ef69f2b18a2ce63f01697a8b313145", "a82f29944d65b86ae6b5e5cc75e294ead6c59391a1edc5e016e3498c67fc7bbb",
			"5120a82f29944d65b86ae6b5e5cc75e294ead6c59391a1edc5e016e3498c67fc7bbb", "bc1p4qhjn9zdvkux4e44uhx8tc55attvtyu358kutcqkudyccelu0was9fqzwh"},
		{change, 0, "399f1b2f4393f29a18c937859c5dd8a77350103157eb880f02e8c08214277cef", "882d74e5d0572d5a816cef0041a96b6c1de832f6f9676d9605c44d5e9a97d3dc",
			"5120882d74e5d0572d5a816cef0041a96b6c1de832f6f9676d9605c44d5e9a97d3dc", "bc1p3qkhfews2uk44qtvauqyr2ttdsw7svhkl9nkm9s9c3x4ax5h60wqwruhk7"},
	}
	for _, c := range cases {
		out, err := c.d.Derive(c.index)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(out.InternalKey) != c.internal || hex.EncodeToString(out.Keys[0].PubKey) != c.internal {
			t.Errorf("internal key %x, derivation key %x; want %s", out.InternalKey, out.Keys[0].PubKey, c.internal)
		}
		if hex.EncodeToString(out.Script) != c.script || hex.EncodeToString(out.Script[2:]) != c.output {
			t.Errorf("script %x, want %s", out.Script, c.script)
		}
		if addr, err := c.d.Address(c.index, mainnet); err != nil || addr != c.addr {
			t.Errorf("address %s, %v; want %s", addr, err, c.addr)
		}
	}
	// The published m/86'/0'/0'/0/0 xpub, from the account xpub.
	k, _ := ParseExtendedKey(bip86Xpub, mainnet)
	child, err := k.Derive(0, 0)
	if err != nil || child.String() != "xpub6H3W6JmYJXN49h5TfcVjLC3onS6uPeUTTJoVvRC8oG9vsTn2J8LwigLzq5tHbrwAzH9DGo6ThGUdWsqce8dGfwHVBxSbixjDADGGdzF7t2B" {
		t.Errorf("m/86'/0'/0'/0/0 = %v, %v", child, err)
	}
	// FromExtendedKey gives the same descriptors.
	r2, c2, err := FromExtendedKey("[73c5da0a/86h/0h/0h]"+bip86Xpub, "tr", mainnet)
	if err != nil || r2.String() != recv.String() || c2.String() != change.String() {
		t.Errorf("FromExtendedKey: %v %v %v", r2, c2, err)
	}
}

// Every address must equal btcutil's own encoding of the derived key or
// script, and every script what txscript builds for that address.
func TestAddressesMatchBtcutil(t *testing.T) {
	xpub := bip86Xpub
	tpub := reversion(t, xpub, 0x043587cf)
	nets := []*chain.Params{
		mustNet(t, chain.BTC, chain.Mainnet), mustNet(t, chain.BTC, chain.Testnet), mustNet(t, chain.BTC, chain.Signet),
		mustNet(t, chain.BTC, chain.Regtest), mustNet(t, chain.LTC, chain.Mainnet), mustNet(t, chain.LTC, chain.Testnet),
		mustNet(t, chain.LTC, chain.Regtest),
	}
	for _, net := range nets {
		key := xpub
		if net.Network != chain.Mainnet {
			key = tpub
		}
		descs := []string{
			"pkh(" + key + "/0/*)",
			"sh(wpkh(" + key + "/0/*))",
			"wpkh(" + key + "/0/*)",
			"tr(" + key + "/0/*)",
			"wsh(sortedmulti(2," + key + "/0/*," + key + "/1/*," + key + "/2/*))",
			"sh(wsh(multi(1," + key + "/0/*," + key + "/1/*)))",
			"sh(sortedmulti(1," + key + "/0/*," + key + "/1/*))",
		}
		for _, s := range descs {
			d := mustParse(t, s, net)
			for i := uint32(0); i < 25; i++ {
				out, err := d.Derive(i)
				if err != nil {
					t.Fatal(err)
				}
				var addr btcutil.Address
				switch d.ScriptType() {
				case ScriptPKH:
					addr, err = btcutil.NewAddressPubKeyHash(btcutil.Hash160(out.Keys[0].PubKey), net.Net)
				case ScriptSHWPKH:
					if !bytes.Equal(out.RedeemScript[2:], btcutil.Hash160(out.Keys[0].PubKey)) {
						t.Fatalf("%s: redeem script %x", s, out.RedeemScript)
					}
					addr, err = btcutil.NewAddressScriptHash(out.RedeemScript, net.Net)
				case ScriptWPKH:
					addr, err = btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(out.Keys[0].PubKey), net.Net)
				case ScriptTR:
					internal, perr := schnorr.ParsePubKey(out.Keys[0].PubKey)
					if perr != nil {
						t.Fatal(perr)
					}
					outputKey := txscript.ComputeTaprootKeyNoScript(internal)
					addr, err = btcutil.NewAddressTaproot(schnorr.SerializePubKey(outputKey), net.Net)
				case ScriptWSH:
					h := sha256.Sum256(out.WitnessScript)
					addr, err = btcutil.NewAddressWitnessScriptHash(h[:], net.Net)
					checkMultisig(t, out.WitnessScript, out.Keys, true)
				case ScriptSHWSH:
					h := sha256.Sum256(out.WitnessScript)
					wsh, _ := txscript.NewScriptBuilder().AddOp(txscript.OP_0).AddData(h[:]).Script()
					if !bytes.Equal(out.RedeemScript, wsh) {
						t.Fatalf("%s: redeem script %x", s, out.RedeemScript)
					}
					addr, err = btcutil.NewAddressScriptHash(out.RedeemScript, net.Net)
					checkMultisig(t, out.WitnessScript, out.Keys, false)
				case ScriptSH:
					addr, err = btcutil.NewAddressScriptHash(out.RedeemScript, net.Net)
					checkMultisig(t, out.RedeemScript, out.Keys, true)
				}
				if err != nil {
					t.Fatal(err)
				}
				got, err := d.Address(i, net)
				if err != nil || got != addr.EncodeAddress() {
					t.Fatalf("%s on %s index %d: address %s, %v; btcutil says %s", s, net, i, got, err, addr.EncodeAddress())
				}
				script, err := txscript.PayToAddrScript(addr)
				if err != nil || !bytes.Equal(script, out.Script) {
					t.Fatalf("%s index %d: script %x, txscript says %x", s, i, out.Script, script)
				}
			}
		}
	}
}

// checkMultisig rebuilds a multisig script with txscript from the derived
// keys, sorted per BIP 67 when asked.
func checkMultisig(t *testing.T, script []byte, keys []KeyOrigin, sorted bool) {
	t.Helper()
	pubs := make([][]byte, len(keys))
	for i, k := range keys {
		pubs[i] = k.PubKey
	}
	if sorted {
		for i := range pubs {
			for j := i + 1; j < len(pubs); j++ {
				if bytes.Compare(pubs[j], pubs[i]) < 0 {
					pubs[i], pubs[j] = pubs[j], pubs[i]
				}
			}
		}
	}
	k := int64(script[0]) - (txscript.OP_1 - 1)
	b := txscript.NewScriptBuilder().AddInt64(k)
	for _, p := range pubs {
		b.AddData(p)
	}
	want, _ := b.AddInt64(int64(len(pubs))).AddOp(txscript.OP_CHECKMULTISIG).Script()
	if !bytes.Equal(script, want) {
		t.Fatalf("multisig script %x\nwant %x", script, want)
	}
}

func TestDerivationsMultisig(t *testing.T) {
	d := mustParse(t, "wsh(sortedmulti(2,[deadbeef/48h/0h/0h/2h]"+xpub6ERA+"/0/*,"+xpub68NZ+"/7/*,"+pubA34B+"))", nil)
	if m, n, ok := d.Multisig(); !ok || m != 2 || n != 3 {
		t.Fatalf("Multisig() = %d, %d, %v", m, n, ok)
	}
	ko, err := d.Derivations(5)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := ParseExtendedKey(xpub6ERA, nil)
	b, _ := ParseExtendedKey(xpub68NZ, nil)
	a5, _ := a.Derive(0, 5)
	b5, _ := b.Derive(7, 5)
	want := []KeyOrigin{
		{Fingerprint: [4]byte{0xde, 0xad, 0xbe, 0xef}, Path: []uint32{hardened(48), hardened(0), hardened(0), hardened(2), 0, 5}, PubKey: a5.PubKey()},
		// Without origin info the key's own fingerprint starts the path.
		{Fingerprint: b.Fingerprint(), Path: []uint32{7, 5}, PubKey: b5.PubKey()},
		{Fingerprint: fingerprint(unhex(t, pubA34B)), Path: []uint32{}, PubKey: unhex(t, pubA34B)},
	}
	if !reflect.DeepEqual(ko, want) {
		t.Fatalf("derivations\n got %+v\nwant %+v", ko, want)
	}
	out, _ := d.Derive(5)
	checkMultisig(t, out.WitnessScript, out.Keys, true)
	if out.RedeemScript != nil || out.InternalKey != nil {
		t.Fatal("wsh output has a redeem script or internal key")
	}
}

func TestPair(t *testing.T) {
	net := mustNet(t, chain.BTC, chain.Mainnet)
	r, c, err := Pair(mustParse(t, "wpkh([73c5da0a/84h/0h/0h]"+xpub6ERA+"/0/*)", net))
	if err != nil {
		t.Fatal(err)
	}
	want := mustParse(t, "wpkh([73c5da0a/84h/0h/0h]"+xpub6ERA+"/1/*)", net)
	if c.String() != want.String() || !strings.Contains(r.String(), "/0/*)") {
		t.Errorf("Pair(/0/*) = %s, %s", r, c)
	}

	r, c, err = Pair(mustParse(t, "wsh(sortedmulti(2,"+xpub6ERA+"/0/*,"+xpub68NZ+"/0/*,"+pubA34B+"))", net))
	if err != nil {
		t.Fatal(err)
	}
	want = mustParse(t, "wsh(sortedmulti(2,"+xpub6ERA+"/1/*,"+xpub68NZ+"/1/*,"+pubA34B+"))", net)
	if c.String() != want.String() || r.String() == c.String() {
		t.Errorf("Pair(multisig /0/*) = %s, %s", r, c)
	}
	s0, _ := c.Script(3)
	s1, _ := want.Script(3)
	if !bytes.Equal(s0, s1) {
		t.Error("change script differs from the parsed /1/* descriptor")
	}

	r, c, err = Pair(mustParse(t, "wpkh("+xpub6ERA+"/<0;1>/*)", net))
	if err != nil || r.String() != mustParse(t, "wpkh("+xpub6ERA+"/0/*)", net).String() ||
		c.String() != mustParse(t, "wpkh("+xpub6ERA+"/1/*)", net).String() {
		t.Errorf("Pair(<0;1>) = %v, %v, %v", r, c, err)
	}

	for _, s := range []string{
		"wpkh(" + xpub6ERA + "/1/*)",
		"wpkh(" + xpub6ERA + "/*)",
		"wpkh(" + xpub6ERA + "/0)",
		"wpkh(" + xpub6ERA + "/<0;1;2>/*)",
		"wsh(multi(1," + xpub6ERA + "/0/*," + xpub68NZ + "/5/*))",
	} {
		_, _, err := Pair(mustParse(t, s, net))
		wantErr(t, err, ErrUnsupported, s)
	}
}

func TestNetworks(t *testing.T) {
	btcMain := mustNet(t, chain.BTC, chain.Mainnet)
	btcReg := mustNet(t, chain.BTC, chain.Regtest)
	btcTest := mustNet(t, chain.BTC, chain.Testnet)
	ltcMain := mustNet(t, chain.LTC, chain.Mainnet)
	ltcTest := mustNet(t, chain.LTC, chain.Testnet)
	tpub := reversion(t, xpub6ERA, 0x043587cf)

	_, err := Parse("wpkh("+xpub6ERA+"/0/*)", btcReg)
	wantErr(t, err, ErrNetwork, "xpub on regtest")
	if !containsAll(err.Error(), "mainnet", "btc/regtest", "tpub") {
		t.Errorf("network error should name both networks: %v", err)
	}
	_, err = Parse("wpkh("+tpub+"/0/*)", btcMain)
	wantErr(t, err, ErrNetwork, "tpub on mainnet")
	if !containsAll(err.Error(), "testnet", "btc/mainnet", "xpub") {
		t.Errorf("network error should name both networks: %v", err)
	}
	_, _, err = FromExtendedKey(reversion(t, xpub6ERA, 0x045f1cf6), "", btcMain) // vpub
	wantErr(t, err, ErrNetwork, "vpub on mainnet")
	_, _, err = FromExtendedKey(bip84Zpub, "", btcTest)
	wantErr(t, err, ErrNetwork, "zpub on testnet")
	_, err = Parse("wsh(multi(1,"+xpub6ERA+"/0/*,"+tpub+"/0/*))", nil)
	wantErr(t, err, ErrNetwork, "mixed networks")

	// Addresses are checked against the network asked for.
	d := mustParse(t, "wpkh("+xpub6ERA+"/0/*)", nil)
	_, err = d.Address(0, btcReg)
	wantErr(t, err, ErrNetwork, "Address on regtest")
	_, err = d.Address(0, nil)
	wantErr(t, err, ErrNetwork, "Address without network")

	// tpub serves every test network, of both coins.
	for _, net := range []*chain.Params{btcTest, btcReg, mustNet(t, chain.BTC, chain.Signet), ltcTest} {
		if _, err := Parse("wpkh("+tpub+"/0/*)", net); err != nil {
			t.Errorf("tpub on %s: %v", net, err)
		}
	}

	// Litecoin: xpub as in Litecoin Core, and the Ltub/Mtub/ttub aliases.
	if a, err := mustParse(t, "wpkh("+xpub6ERA+"/0/*)", ltcMain).Address(0, ltcMain); err != nil || !strings.HasPrefix(a, "ltc1") {
		t.Errorf("ltc address %s, %v", a, err)
	}
	ltub := reversion(t, xpub6ERA, 0x019da462)
	d = mustParse(t, "wpkh("+ltub+"/0/*)", ltcMain)
	if d.String() != mustParse(t, "wpkh("+xpub6ERA+"/0/*)", ltcMain).String() {
		t.Errorf("Ltub descriptor not written as xpub: %s", d)
	}
	_, err = Parse("wpkh("+ltub+"/0/*)", btcMain)
	wantErr(t, err, ErrNetwork, "Ltub on btc")
	_, err = d.Address(0, btcMain)
	wantErr(t, err, ErrNetwork, "Ltub descriptor address on btc")
	r, _, err := FromExtendedKey(reversion(t, xpub6ERA, 0x01b26ef6), "", ltcMain) // Mtub
	if err != nil || r.ScriptType() != ScriptSHWPKH {
		t.Fatalf("Mtub: %v %v", r, err)
	}
	if a, err := r.Address(0, ltcMain); err != nil || !strings.HasPrefix(a, "M") {
		t.Errorf("Mtub address %s, %v", a, err)
	}
	if _, _, err := FromExtendedKey(reversion(t, xpub6ERA, 0x0436f6e1), "wpkh", ltcTest); err != nil { // ttub
		t.Errorf("ttub on ltc testnet: %v", err)
	}
	if _, _, err := FromExtendedKey(ltub, "pkh", ltcMain); err != nil {
		t.Errorf("Ltub: %v", err)
	}
}

func TestFromExtendedKeyErrors(t *testing.T) {
	net := mustNet(t, chain.BTC, chain.Mainnet)
	cases := []struct {
		key, st string
		kind    error
	}{
		{xpub6ERA, "", ErrScriptType},
		{xpub6ERA, "wsh", ErrScriptType},
		{bip84Zpub, "tr", ErrScriptType},
		{bip84Zpub, "wpkh", nil},
		{bip84Zpub + "/0/*", "", ErrSyntax},
		{"[73c5da0a/84h/0h/0h" + bip84Zpub, "", ErrSyntax},
		{"[73c5da0a/84H/0h/0h]" + bip84Zpub, "", ErrSyntax},
		{reversion(t, xpub6ERA, 0x02aa7ed3), "", ErrUnsupported}, // Zpub
		{"xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi", "wpkh", ErrPrivateKey},
		{"zprvAdG4iTXWBoARxkkzNpNh8r6Qag3irQB8PzEMkAFeTRXxHpbF9z4QgEvBRmfvqWvGp42t42nvgGpNgYSJA9iefm1yYNZKEm7z6qUWCroSQnE", "", ErrPrivateKey},
		{"L4rK1yDtCWekvXuE6oXD9jCYfFNV2cWRpVuPLBcCU2z8TrisoyY1", "wpkh", ErrPrivateKey},
		{"not a key", "wpkh", ErrSyntax},
	}
	for _, c := range cases {
		_, _, err := FromExtendedKey(c.key, c.st, net)
		if c.kind == nil {
			if err != nil {
				t.Errorf("%s %s: %v", c.key[:8], c.st, err)
			}
			continue
		}
		wantErr(t, err, c.kind, c.key[:8]+" "+c.st)
	}
	_, _, err := FromExtendedKey(bip84Zpub, "tr", net)
	if !strings.Contains(err.Error(), "xpub6CatWdiZiodm") {
		t.Errorf("conflict error should offer the xpub form: %v", err)
	}
}

func TestErrorsArePlaced(t *testing.T) {
	cases := []struct {
		desc string
		kind error
		pos  int
		msg  string
	}{
		{"wpkh(" + xpub6ERA + "/0h/*)", ErrUnsupported, 6 + len(xpub6ERA) + 1, "hardened"},
		{"  wpkh(" + xpub6ERA + "/0h/*)", ErrUnsupported, 8 + len(xpub6ERA) + 1, "hardened"},
		{"wpkh(" + xpub6ERA + "/*h)", ErrUnsupported, 6 + len(xpub6ERA) + 1, "hardened wildcard"},
		{"wpkh(" + xpub6ERA + "/*/0)", ErrSyntax, 6 + len(xpub6ERA) + 1, "last"},
		{"wpkh(" + xpub6ERA + "//0)", ErrSyntax, 6 + len(xpub6ERA) + 1, "empty"},
		{"wpkh(" + pubA34B + "", ErrSyntax, 6 + len(pubA34B), "ends"},
		{"wpkh(" + pubA34B + "))", ErrSyntax, 6 + len(pubA34B) + 1, "after the end"},
		{"wpk(" + pubA34B + ")", ErrSyntax, 1, "unknown script"},
		{"combo(" + pubA34B + ")", ErrUnsupported, 1, "combo"},
		{"addr(bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu)", ErrUnsupported, 1, "addr"},
		{"sh(wsh(pkh(" + pubA34B + "))))", ErrSyntax, 11 + len(pubA34B) + 3 + 1, "after the end"},
		{"wpkh(" + bip84Zpub + "/0/*)", ErrUnsupported, 6, "xpub6CatWdiZiodm"},
		{"", ErrSyntax, 0, "empty"},
		{"wpkh(" + strings.Repeat("0", 12000) + ")", ErrSyntax, 0, "the limit"},
		{"pkh(" + xpub6ERA + strings.Repeat("/0", 253) + ")", ErrSyntax, 5, "too deep"},
	}
	for _, c := range cases {
		_, err := Parse(c.desc, nil)
		wantErr(t, err, c.kind, c.msg)
		var e *Error
		errors.As(err, &e)
		if e.Pos != c.pos || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%.40s…: %v (pos %d, want %d and %q)", c.desc, err, e.Pos, c.pos, c.msg)
		}
	}
}

func TestIndexes(t *testing.T) {
	d := mustParse(t, "wpkh("+xpub6ERA+"/0/*)", nil)
	if _, err := d.Script(hardened(0) - 1); err != nil {
		t.Errorf("largest unhardened index: %v", err)
	}
	_, err := d.Script(hardened(0))
	wantErr(t, err, ErrIndex, "hardened index")
	fixed := mustParse(t, "wpkh("+xpub6ERA+"/0/5)", nil)
	if _, err := fixed.Script(0); err != nil {
		t.Error(err)
	}
	_, err = fixed.Script(1)
	wantErr(t, err, ErrIndex, "index on a fixed descriptor")
	_, err = mustParse(t, "pk("+pubA34B+")", nil).Address(0, mustNet(t, chain.BTC, chain.Mainnet))
	wantErr(t, err, ErrUnsupported, "pk() address")
}

// The cached branch key must give exactly what a full derivation from the
// account key gives.
func TestCachedDerivationMatchesFullPath(t *testing.T) {
	d := mustParse(t, "wpkh("+bip86Xpub+"/0/*)", nil)
	acct, _ := ParseExtendedKey(bip86Xpub, nil)
	for i := uint32(0); i < 2000; i += 97 {
		ko, err := d.Derivations(i)
		if err != nil {
			t.Fatal(err)
		}
		k, err := acct.Derive(0, i)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ko[0].PubKey, k.PubKey()) {
			t.Fatalf("index %d differs", i)
		}
	}
}

func TestScriptTypes(t *testing.T) {
	for desc, want := range map[string]ScriptType{
		"pk(" + pubA34B + ")":                     ScriptPK,
		"pkh(" + pubA34B + ")":                    ScriptPKH,
		"wpkh(" + pubA34B + ")":                   ScriptWPKH,
		"sh(wpkh(" + pubA34B + "))":               ScriptSHWPKH,
		"tr(" + pubA34B + ")":                     ScriptTR,
		"multi(1," + pubA34B + ")":                ScriptMulti,
		"sh(multi(1," + pubA34B + "))":            ScriptSH,
		"wsh(multi(1," + pubA34B + "))":           ScriptWSH,
		"sh(wsh(sortedmulti(1," + pubA34B + ")))": ScriptSHWSH,
		"sh(pkh(" + pubA34BU + "))":               ScriptSH,
	} {
		if got := mustParse(t, desc, nil).ScriptType(); got != want {
			t.Errorf("%s: %q, want %q", desc, got, want)
		}
	}
}

// A descriptor can be used from many goroutines at once.
func TestConcurrentUse(t *testing.T) {
	d := mustParse(t, "tr("+bip86Xpub+"/0/*)", nil)
	want, _ := d.Script(7)
	done := make(chan bool)
	for range 8 {
		go func() {
			ok := true
			for i := 0; i < 50; i++ {
				s, err := d.Script(7)
				ok = ok && err == nil && bytes.Equal(s, want)
			}
			done <- ok
		}()
	}
	for range 8 {
		if !<-done {
			t.Fatal("concurrent derivation differed")
		}
	}
}

func BenchmarkWPKHAddress(b *testing.B) {
	net := mustNet(b, chain.BTC, chain.Mainnet)
	d := mustParse(b, "wpkh("+bip86Xpub+"/0/*)", net)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := d.Address(uint32(i)%100000, net); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTRScript(b *testing.B) {
	d := mustParse(b, "tr("+bip86Xpub+"/0/*)", nil)
	for i := 0; b.Loop(); i++ {
		if _, err := d.Script(uint32(i) % 100000); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSortedMulti2of3(b *testing.B) {
	d := mustParse(b, "wsh(sortedmulti(2,"+xpub6ERA+"/0/*,"+xpub68NZ+"/0/*,"+bip86Xpub+"/0/*))", nil)
	for i := 0; b.Loop(); i++ {
		if _, err := d.Script(uint32(i) % 100000); err != nil {
			b.Fatal(err)
		}
	}
}

func TestZeroDescriptor(t *testing.T) {
	var d Descriptor
	_, err := d.Script(0)
	wantErr(t, err, ErrSyntax, "zero Script")
	_, err = d.Expand()
	wantErr(t, err, ErrSyntax, "zero Expand")
	_, _, err = Pair(&d)
	wantErr(t, err, ErrSyntax, "zero Pair")
	_, _, err = Pair(nil)
	wantErr(t, err, ErrSyntax, "nil Pair")
	if d.ScriptType() != "" || d.String() != "" || d.IsRange() || d.IsMultipath() {
		t.Error("zero Descriptor accessors")
	}
	if _, _, ok := d.Multisig(); ok {
		t.Error("zero Descriptor Multisig")
	}
	_, err = d.Address(0, mustNet(t, chain.BTC, chain.Mainnet))
	wantErr(t, err, ErrSyntax, "zero Address")
}

func TestThresholdMessages(t *testing.T) {
	for _, s := range []string{
		"multi(99999999999999999999," + pubA34B + ")",
		"multi(," + pubA34B + ")",
		"wsh(multi(21" + strings.Repeat(","+pubA34B, 21) + "))",
	} {
		_, err := Parse(s, nil)
		wantErr(t, err, ErrSyntax, s[:20])
	}
}

package chain

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/bech32"
	"github.com/btcsuite/btcd/txscript"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkVector decodes addr on p, compares its output script with script and
// maps the script back to the same address.
func checkVector(t *testing.T, p *Params, addr, script string) {
	t.Helper()
	got, err := p.AddressScript(addr)
	if err != nil {
		t.Errorf("%s: AddressScript(%s): %v", p, addr, err)
		return
	}
	if hex.EncodeToString(got) != script {
		t.Errorf("%s: AddressScript(%s) = %x, want %s", p, addr, got, script)
	}
	back, ok := p.ScriptAddress(got)
	if !ok || back != strings.ToLower(addr) && back != addr {
		t.Errorf("%s: ScriptAddress(%x) = %q, %v, want %s", p, got, back, ok, addr)
	}
}

func TestAddressVectors(t *testing.T) {
	tests := []struct {
		coin   Coin
		net    Network
		addr   string
		script string
	}{
		// Bitcoin: genesis coinbase key's address, BIP 173 and BIP 350 examples.
		{BTC, Mainnet, "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac"},
		{BTC, Mainnet, "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "0014751e76e8199196d454941c45d1b3a323f1433bd6"},
		{BTC, Mainnet, "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "0014751e76e8199196d454941c45d1b3a323f1433bd6"},
		{BTC, Mainnet, "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3", "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"},
		{BTC, Mainnet, "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0", "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"},
		// Litecoin: base58 vectors from Litecoin Core's key_io_valid.json.
		{LTC, Mainnet, "LT2KVaAy1ppRuxRgrS5RNU3vBsy7RibPeA", "76a914558dbca7118cd5894502767c7b2ffc21a22f54db88ac"},
		{LTC, Mainnet, "MHrYRxAiMNBTku3eoDHwhA1LQGDjUStZW2", "a9146d328a5b2a20d943a641c8d29b6cc3c2d2df85d387"},
		{LTC, Testnet, "mwXn5Vhicdav8Av3KMokx4YNuHoGRKxtWs", "76a914afa9e672141e283dfbcc1cf28f3793a856d3878488ac"},
		{LTC, Testnet, "QXaUgLHkZcbJb2j5XgMYzY8cF9YM48Y81Z", "a9147860667e60a6545e18e541984094b29c9c46991b87"},
		{LTC, Regtest, "mpWvR79tSrA5xeziB6mjNYWdaVRwBpgnUP", "76a91462b790654f809d32202587c6a43456ffc1965d8388ac"},
		{LTC, Regtest, "QgDNrG4nJpE4VV7PcFMFhkTgwAHWxWS7pj", "a914d71bee7a1395c10c9ca9a7f53ac086b53e74369d87"},
	}
	for _, tt := range tests {
		checkVector(t, mustLookup(t, tt.coin, tt.net), tt.addr, tt.script)
	}
}

// TestAddressRoundTrip encodes fixed hashes as every supported address type
// and decodes them back on each network.
func TestAddressRoundTrip(t *testing.T) {
	hash20 := bytes.Repeat([]byte{0x5a}, 20)
	hash32 := bytes.Repeat([]byte{0xa5}, 32)
	prefixes := map[string][]string{ // p2pkh, p2sh, segwit hrp + "1"
		"btc/mainnet": {"1", "3", "bc1"},
		"btc/regtest": {"", "2", "bcrt1"},
		"ltc/mainnet": {"L", "M", "ltc1"},
		"ltc/testnet": {"", "Q", "tltc1"},
		"ltc/regtest": {"", "Q", "rltc1"},
	}
	for name, want := range prefixes {
		coin, net, _ := strings.Cut(name, "/")
		p := mustLookup(t, Coin(coin), Network(net))
		var addrs []btcutil.Address
		for _, mk := range []func() (btcutil.Address, error){
			func() (btcutil.Address, error) { return btcutil.NewAddressPubKeyHash(hash20, p.Net) },
			func() (btcutil.Address, error) { return btcutil.NewAddressScriptHashFromHash(hash20, p.Net) },
			func() (btcutil.Address, error) { return btcutil.NewAddressWitnessPubKeyHash(hash20, p.Net) },
			func() (btcutil.Address, error) { return btcutil.NewAddressWitnessScriptHash(hash32, p.Net) },
			func() (btcutil.Address, error) { return btcutil.NewAddressTaproot(hash32, p.Net) },
		} {
			a, err := mk()
			if err != nil {
				t.Fatal(err)
			}
			addrs = append(addrs, a)
		}
		for i, a := range addrs {
			s := a.EncodeAddress()
			prefix := want[min(i, 2)]
			if !strings.HasPrefix(s, prefix) {
				t.Errorf("%s: %s does not start with %q", p, s, prefix)
			}
			got, err := p.DecodeAddress(s)
			if err != nil {
				t.Errorf("%s: DecodeAddress(%s): %v", p, s, err)
				continue
			}
			if got.EncodeAddress() != s || !bytes.Equal(got.ScriptAddress(), a.ScriptAddress()) {
				t.Errorf("%s: %s decoded to %s", p, s, got.EncodeAddress())
			}
			if got, err := p.DecodeAddress(strings.ToUpper(s)); i >= 2 && (err != nil || got.EncodeAddress() != s) {
				t.Errorf("%s: upper-case %s: %v", p, s, err)
			}
			script, err := txscript.PayToAddrScript(a)
			if err != nil {
				t.Fatal(err)
			}
			checkVector(t, p, s, hex.EncodeToString(script))
		}
	}
}

func TestDecodeAddressRejects(t *testing.T) {
	hash20 := bytes.Repeat([]byte{0x5a}, 20)
	btcMain := mustLookup(t, BTC, Mainnet)
	btcReg := mustLookup(t, BTC, Regtest)
	ltcMain := mustLookup(t, LTC, Mainnet)
	ltcTest := mustLookup(t, LTC, Testnet)
	ltcReg := mustLookup(t, LTC, Regtest)
	enc := func(p *Params, kind string) string {
		var a btcutil.Address
		var err error
		switch kind {
		case "p2pkh":
			a, err = btcutil.NewAddressPubKeyHash(hash20, p.Net)
		case "p2sh":
			a, err = btcutil.NewAddressScriptHashFromHash(hash20, p.Net)
		case "p2wpkh":
			a, err = btcutil.NewAddressWitnessPubKeyHash(hash20, p.Net)
		}
		if err != nil {
			t.Fatal(err)
		}
		return a.EncodeAddress()
	}
	// Segwit programs under the wrong checksum variant (BIP 350).
	wrongVariant := func(version byte, prog []byte) string {
		data, err := bech32.ConvertBits(prog, 8, 5, true)
		if err != nil {
			t.Fatal(err)
		}
		data = append([]byte{version}, data...)
		var s string
		if version == 0 {
			s, err = bech32.EncodeM("bc", data)
		} else {
			s, err = bech32.Encode("bc", data)
		}
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		p    *Params
		addr string
		want string
	}{
		{ltcMain, enc(btcMain, "p2pkh"), "not a valid ltc/mainnet address"},
		{ltcMain, enc(btcMain, "p2sh"), "not a valid ltc/mainnet address"}, // legacy 3... P2SH
		{ltcMain, enc(btcMain, "p2wpkh"), "another network"},
		{ltcMain, enc(ltcTest, "p2wpkh"), "not a valid"},
		{ltcMain, enc(ltcReg, "p2sh"), "not a valid"},
		{ltcReg, enc(ltcMain, "p2wpkh"), "not a valid"},
		{ltcReg, enc(btcReg, "p2wpkh"), "another network"},
		{btcMain, enc(ltcMain, "p2pkh"), "not a valid"},
		{btcMain, enc(ltcMain, "p2wpkh"), "not a valid"},
		{btcMain, enc(btcReg, "p2wpkh"), "another network"},
		{btcReg, enc(btcMain, "p2pkh"), "not a valid"},
		{btcMain, wrongVariant(0, hash20), "checksum variant"},
		{btcMain, wrongVariant(1, bytes.Repeat([]byte{1}, 32)), "checksum variant"},
		{btcMain, "bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "not a supported"}, // witness v2
		{btcMain, "", "not a valid"},
		{btcMain, "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb", "not a valid"}, // bad checksum
		{btcMain, "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798", "not a btc/mainnet address"},
		{ltcMain, "ltcmweb1qqxyzabc", "MWEB"},
		{ltcTest, "tmweb1qqxyzabc", "MWEB"},
	}
	for _, tt := range tests {
		a, err := tt.p.DecodeAddress(tt.addr)
		if err == nil {
			t.Errorf("%s: DecodeAddress(%q) = %v, want error", tt.p, tt.addr, a)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: DecodeAddress(%q) error %q, want it to mention %q", tt.p, tt.addr, err, tt.want)
		}
		if _, err := tt.p.AddressScript(tt.addr); err == nil {
			t.Errorf("%s: AddressScript(%q) succeeded", tt.p, tt.addr)
		}
	}
}

// Networks sharing version bytes accept each other's addresses; this pins
// the behaviour DecodeAddress documents.
func TestDecodeAddressSharedPrefixes(t *testing.T) {
	hash20 := bytes.Repeat([]byte{0x11}, 20)
	ltcTest := mustLookup(t, LTC, Testnet)
	ltcReg := mustLookup(t, LTC, Regtest)
	a, err := btcutil.NewAddressScriptHashFromHash(hash20, ltcTest.Net)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ltcReg.DecodeAddress(a.EncodeAddress()); err != nil {
		t.Errorf("ltc testnet P2SH on regtest: %v", err)
	}
	btcTestP2PKH, err := btcutil.NewAddressPubKeyHash(hash20, mustLookup(t, BTC, Testnet).Net)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ltcTest.DecodeAddress(btcTestP2PKH.EncodeAddress()); err != nil {
		t.Errorf("btc testnet P2PKH on ltc testnet: %v", err)
	}
}

func TestScriptAddressNonStandard(t *testing.T) {
	p := mustLookup(t, LTC, Mainnet)
	for _, s := range []string{
		"",
		"6a0401020304",                           // OP_RETURN
		"5820" + strings.Repeat("ab", 32),        // MWEB HogEx peg script (witness v8)
		"5920" + strings.Repeat("ab", 32),        // MWEB peg-in (witness v9)
		"2102" + strings.Repeat("11", 32) + "ac", // P2PK
		"512102" + strings.Repeat("11", 32) + "51ae", // bare 1-of-1 multisig
		"76a914" + strings.Repeat("11", 19) + "88ac", // short hash
	} {
		if a, ok := p.ScriptAddress(mustHex(t, s)); ok {
			t.Errorf("ScriptAddress(%s) = %s, want false", s, a)
		}
	}
}

// WIF and extended-key prefixes follow Litecoin Core's key_io_valid.json.
func TestLitecoinKeyPrefixes(t *testing.T) {
	for _, tt := range []struct {
		net Network
		wif string
	}{
		{Mainnet, "T5MZ5z9WqJxzVxYyVPecTJUSDkzDWrUYe1JuSX2AqJ9jKmLJrvTE"},
		{Testnet, "cQaeKQwuakynYD9iebyxsKiBKF8RT3G6zoqRNUDybMsAimANRypo"},
		{Regtest, "cSZsfcBGqQDBXuQeqAhDfqaoP54LhgiQvMkMctyrRuVR3BGQmbTU"},
	} {
		w, err := btcutil.DecodeWIF(tt.wif)
		if err != nil {
			t.Fatal(err)
		}
		if !w.IsForNet(mustLookup(t, LTC, tt.net).Net) {
			t.Errorf("ltc/%s: WIF %s not accepted", tt.net, tt.wif)
		}
	}
}

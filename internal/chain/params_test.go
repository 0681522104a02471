package chain

import (
	"strings"
	"testing"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/chaincfg"
)

func mustLookup(t testing.TB, coin Coin, net Network) *Params {
	t.Helper()
	p, err := Lookup(coin, net)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLookupSupported(t *testing.T) {
	tests := []struct {
		coin    Coin
		net     Network
		name    string // chaincfg name
		rpcPort int
		mweb    bool
	}{
		{BTC, Mainnet, "mainnet", 8332, false},
		{BTC, Testnet, "testnet3", 18332, false},
		{BTC, Signet, "signet", 38332, false},
		{BTC, Regtest, "regtest", 18443, false},
		{LTC, Mainnet, "litecoin-mainnet", 9332, true},
		{LTC, Testnet, "litecoin-testnet4", 19332, true},
		{LTC, Regtest, "litecoin-regtest", 19443, true},
	}
	for _, tt := range tests {
		p := mustLookup(t, tt.coin, tt.net)
		if p.Coin != tt.coin || p.Network != tt.net {
			t.Errorf("%s/%s: got %s", tt.coin, tt.net, p)
		}
		if p.Net.Name != tt.name {
			t.Errorf("%s: Net.Name = %q, want %q", p, p.Net.Name, tt.name)
		}
		if p.DefaultRPCPort != tt.rpcPort {
			t.Errorf("%s: DefaultRPCPort = %d, want %d", p, p.DefaultRPCPort, tt.rpcPort)
		}
		if p.HasMWEB != tt.mweb {
			t.Errorf("%s: HasMWEB = %v", p, p.HasMWEB)
		}
		if p.CoinbaseMaturity != 100 || int32(p.Net.CoinbaseMaturity) != p.CoinbaseMaturity {
			t.Errorf("%s: CoinbaseMaturity = %d, Net.CoinbaseMaturity = %d", p, p.CoinbaseMaturity, p.Net.CoinbaseMaturity)
		}
		if p.Decimals != 8 {
			t.Errorf("%s: Decimals = %d", p, p.Decimals)
		}
		if p.String() != string(tt.coin)+"/"+string(tt.net) {
			t.Errorf("String() = %q", p.String())
		}
	}
}

func TestLookupErrors(t *testing.T) {
	tests := []struct {
		coin Coin
		net  Network
		want []string
	}{
		{LTC, Signet, []string{"ltc", "signet", "mainnet, testnet, regtest"}},
		{"doge", Mainnet, []string{`"doge"`, "btc or ltc"}},
		{BTC, "testnet4", []string{`"testnet4"`}},
		{"BTC", Mainnet, []string{`"BTC"`}}, // Lookup wants canonical names
		{"", "", nil},
	}
	for _, tt := range tests {
		p, err := Lookup(tt.coin, tt.net)
		if err == nil {
			t.Errorf("Lookup(%q, %q) = %s, want error", tt.coin, tt.net, p)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Lookup(%q, %q) error %q does not mention %q", tt.coin, tt.net, err, w)
			}
		}
	}
}

func TestLookupReturnsCopy(t *testing.T) {
	p := mustLookup(t, LTC, Mainnet)
	p.DefaultRPCPort = 1
	p.HasMWEB = false
	if q := mustLookup(t, LTC, Mainnet); q.DefaultRPCPort != 9332 || !q.HasMWEB {
		t.Fatal("changing a Lookup result changed the table")
	}
}

func TestParseCoinNetwork(t *testing.T) {
	if c, err := ParseCoin(" LTC "); err != nil || c != LTC {
		t.Errorf("ParseCoin(LTC) = %q, %v", c, err)
	}
	if c, err := ParseCoin("btc"); err != nil || c != BTC {
		t.Errorf("ParseCoin(btc) = %q, %v", c, err)
	}
	if _, err := ParseCoin("bitcoin cash"); err == nil || !strings.Contains(err.Error(), "bitcoin cash") {
		t.Errorf("ParseCoin(bitcoin cash) error = %v", err)
	}
	for _, n := range []Network{Mainnet, Testnet, Signet, Regtest} {
		if got, err := ParseNetwork(strings.ToUpper(string(n))); err != nil || got != n {
			t.Errorf("ParseNetwork(%q) = %q, %v", n, got, err)
		}
	}
	if _, err := ParseNetwork("main"); err == nil || !strings.Contains(err.Error(), `"main"`) {
		t.Errorf("ParseNetwork(main) error = %v", err)
	}
}

// The Litecoin genesis blocks are rebuilt from their parameters; matching
// the published hashes checks both the construction and the constants.
func TestLitecoinGenesis(t *testing.T) {
	const merkle = "97ddfbbae6be97fd6cdf3e7ca13232a3afff2353e29badfab7f73011edd4ced9"
	for _, net := range []Network{Mainnet, Testnet, Regtest} {
		p := mustLookup(t, LTC, net)
		if got := p.Net.GenesisBlock.Header.MerkleRoot.String(); got != merkle {
			t.Errorf("%s: genesis merkle root %s, want %s", p, got, merkle)
		}
		if got := p.Net.GenesisBlock.BlockHash(); got != *p.Net.GenesisHash {
			t.Errorf("%s: genesis block hashes to %s, want %s", p, got, p.Net.GenesisHash)
		}
		if got := blockchain.BigToCompact(p.Net.PowLimit); got != p.Net.PowLimitBits {
			t.Errorf("%s: PowLimit compacts to %#x, PowLimitBits %#x", p, got, p.Net.PowLimitBits)
		}
	}
	want := map[Network]string{
		Mainnet: "12a765e31ffd4059bada1e25190f6e98c99d9714d334efa41a195a7e7e04bfe2",
		Testnet: "4966625a4b2851d9fdee139e56211a0d88575f59ed816ff5e6a63deb4e3e29a0",
		Regtest: "530827f38f93b43ed12af0b3ad25a288dc02ed74d6d7857862df51fc56c416f9",
	}
	for net, h := range want {
		if got := mustLookup(t, LTC, net).Net.GenesisHash.String(); got != h {
			t.Errorf("ltc/%s genesis %s, want %s", net, got, h)
		}
	}
}

func TestLitecoinConstants(t *testing.T) {
	main := mustLookup(t, LTC, Mainnet).Net
	test := mustLookup(t, LTC, Testnet).Net
	reg := mustLookup(t, LTC, Regtest).Net
	type consts struct {
		magic              uint32
		p2pkh, p2sh, wif   byte
		hrp                string
		xpub, xprv         [4]byte
		coinType           uint32
		defaultPeerPort    string
		subsidyHalvingSpan int32
	}
	xpub, xprv := [4]byte{0x04, 0x88, 0xb2, 0x1e}, [4]byte{0x04, 0x88, 0xad, 0xe4}
	tpub, tprv := [4]byte{0x04, 0x35, 0x87, 0xcf}, [4]byte{0x04, 0x35, 0x83, 0x94}
	for _, c := range []struct {
		p    *chaincfg.Params
		want consts
	}{
		{main, consts{0xdbb6c0fb, 0x30, 0x32, 0xb0, "ltc", xpub, xprv, 2, "9333", 840000}},
		{test, consts{0xf1c8d2fd, 0x6f, 0x3a, 0xef, "tltc", tpub, tprv, 1, "19335", 840000}},
		{reg, consts{0xdab5bffa, 0x6f, 0x3a, 0xef, "rltc", tpub, tprv, 1, "19444", 150}},
	} {
		got := consts{uint32(c.p.Net), c.p.PubKeyHashAddrID, c.p.ScriptHashAddrID, c.p.PrivateKeyID,
			c.p.Bech32HRPSegwit, c.p.HDPublicKeyID, c.p.HDPrivateKeyID, c.p.HDCoinType, c.p.DefaultPort,
			c.p.SubsidyReductionInterval}
		if got != c.want {
			t.Errorf("%s:\n got %+v\nwant %+v", c.p.Name, got, c.want)
		}
	}
}

// Litecoin parameters must stay out of btcd's global registry (regtest would
// collide with Bitcoin's magic); address decoding must not depend on it.
func TestLitecoinNotRegistered(t *testing.T) {
	for _, prefix := range []string{"ltc1", "tltc1", "rltc1"} {
		if chaincfg.IsBech32SegwitPrefix(prefix) {
			t.Errorf("%s is registered with chaincfg", prefix)
		}
	}
}

package keys_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"

	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/descriptor"
	"github.com/coffer/coffer/internal/keys"
)

// Test vectors from the BIP39 reference implementation
// (trezor/python-mnemonic vectors.json), passphrase "TREZOR". root is the
// BIP32 master key of the seed where the test checks it.
var trezorVectors = []struct{ entropy, mnemonic, seed, root string }{
	{"00000000000000000000000000000000",
		"abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
		"c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04",
		"xprv9s21ZrQH143K3h3fDYiay8mocZ3afhfULfb5GX8kCBdno77K4HiA15Tg23wpbeF1pLfs1c5SPmYHrEpTuuRhxMwvKDwqdKiGJS9XFKzUsAF"},
	{"7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f",
		"legal winner thank year wave sausage worth useful legal winner thank yellow",
		"2e8905819b8723fe2c1d161860e5ee1830318dbf49a83bd451cfb8440c28bd6fa457fe1296106559a3c80937a1c1069be3a3a5bd381ee6260e8d9739fce1f607",
		"xprv9s21ZrQH143K2gA81bYFHqU68xz1cX2APaSq5tt6MFSLeXnCKV1RVUJt9FWNTbrrryem4ZckN8k4Ls1H6nwdvDTvnV7zEXs2HgPezuVccsq"},
	{"ffffffffffffffffffffffffffffffff",
		"zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong",
		"ac27495480225222079d7be181583751e86f571027b0497b5b5d11218e0a8a13332572917f0f8e5a589620c6f15b11c61dee327651a14c34e18231052e48c069", ""},
	{"808080808080808080808080808080808080808080808080",
		"letter advice cage absurd amount doctor acoustic avoid letter advice cage absurd amount doctor acoustic avoid letter always",
		"107d7c02a5aa6f38c58083ff74f04c607c2d2c0ecc55501dadd72d025b751bc27fe913ffb796f841c49b1d33b610cf0e91d3aa239027f5e99fe4ce9e5088cd65", ""},
	{"0000000000000000000000000000000000000000000000000000000000000000",
		"abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art",
		"bda85446c68413707090a52022edd26a1c9462295029f2e60cd7c4f2bbd3097170af7a4d73245cafa9c3cca8d561a7c3de6f5d4a10be8ed2a5e608d68f92fcc8", ""},
	{"3e141609b97933b66a060dcddc71fad1d91677db872031e85f4c015c5e7e8982",
		"dignity pass list indicate nasty swamp pool script soccer toe leaf photo multiply desk host tomato cradle drill spread actor shine dismiss champion exotic",
		"ff7f3184df8696d8bef94b6c03114dbee0ef89ff938712301d27ed8336ca89ef9635da20af07d4175f2bf5f3de130f39c9d9e8dd0472489c19b1a020a940da67", ""},
}

func TestBIP39TrezorVectors(t *testing.T) {
	for _, v := range trezorVectors {
		if err := keys.ValidateMnemonic(v.mnemonic); err != nil {
			t.Errorf("%s…: %v", v.mnemonic[:20], err)
			continue
		}
		seed, err := keys.SeedFromMnemonic(v.mnemonic, "TREZOR")
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(seed); got != v.seed {
			t.Errorf("%s…: seed %s, want %s", v.mnemonic[:20], got, v.seed)
		}
		// Case and spacing do not change the seed.
		sloppy := "  " + strings.ToUpper(strings.ReplaceAll(v.mnemonic, " ", " \t "))
		if s2, err := keys.SeedFromMnemonic(sloppy, "TREZOR"); err != nil || !bytes.Equal(s2, seed) {
			t.Errorf("%s…: normalised mnemonic gives another seed (%v)", v.mnemonic[:20], err)
		}
		if keys.NormalizeMnemonic(sloppy) != v.mnemonic {
			t.Errorf("NormalizeMnemonic(%q) = %q", sloppy, keys.NormalizeMnemonic(sloppy))
		}
		if v.root != "" {
			root, err := hdkeychain.NewMaster(seed, &chaincfg.MainNetParams)
			if err != nil {
				t.Fatal(err)
			}
			if root.String() != v.root {
				t.Errorf("%s…: root %s, want %s", v.mnemonic[:20], root, v.root)
			}
		}
	}
	// The passphrase matters.
	a, _ := keys.SeedFromMnemonic(trezorVectors[0].mnemonic, "TREZOR")
	b, _ := keys.SeedFromMnemonic(trezorVectors[0].mnemonic, "")
	if bytes.Equal(a, b) {
		t.Error("the passphrase did not change the seed")
	}
}

func TestValidateMnemonicErrors(t *testing.T) {
	good := strings.Fields(trezorVectors[1].mnemonic)
	cases := []struct {
		name, mnemonic, msg string
	}{
		{"empty", "", "has 0 words"},
		{"11 words", strings.Join(good[:11], " "), "has 11 words"},
		{"13 words", strings.Join(append(slices.Clone(good), "abandon"), " "), "has 13 words"},
		{"unknown word", strings.Join(slices.Replace(slices.Clone(good), 4, 5, "wavey"), " "), "word 5 is not in the BIP39 English word list"},
		{"swapped words", strings.Join(slices.Replace(slices.Clone(good), 0, 2, good[1], good[0]), " "), "checksum"},
		{"wrong last word", strings.Join(slices.Replace(slices.Clone(good), 11, 12, "zoo"), " "), "checksum"},
	}
	for _, c := range cases {
		err := keys.ValidateMnemonic(c.mnemonic)
		if !errors.Is(err, keys.ErrMnemonic) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err = %v, want ErrMnemonic saying %q", c.name, err, c.msg)
			continue
		}
		for _, w := range []string{"wavey", "legal", "winner", "thank", "zoo"} {
			if strings.Contains(err.Error(), w) {
				t.Errorf("%s: error quotes a word: %v", c.name, err)
			}
		}
		if _, err := keys.SeedFromMnemonic(c.mnemonic, ""); !errors.Is(err, keys.ErrMnemonic) {
			t.Errorf("%s: SeedFromMnemonic accepted it", c.name)
		}
	}
}

func TestNewMnemonic(t *testing.T) {
	for _, words := range []int{12, 24} {
		a, err := keys.NewMnemonic(words)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := keys.NewMnemonic(words)
		if n := len(strings.Fields(a)); n != words || a == b || keys.NormalizeMnemonic(a) != a {
			t.Errorf("NewMnemonic(%d) gave %d words (distinct: %v, normalised: %v)", words, n, a != b, keys.NormalizeMnemonic(a) == a)
		}
		if err := keys.ValidateMnemonic(a); err != nil {
			t.Errorf("NewMnemonic(%d) is not valid: %v", words, err)
		}
	}
	for _, words := range []int{0, 11, 15, 18, 25} {
		if _, err := keys.NewMnemonic(words); !errors.Is(err, keys.ErrMnemonic) {
			t.Errorf("NewMnemonic(%d): err = %v", words, err)
		}
	}
}

func TestCoinType(t *testing.T) {
	for _, p := range chain.All() {
		if got := keys.CoinType(p); got != p.Net.HDCoinType {
			t.Errorf("%s: CoinType %d, chain params say %d", p, got, p.Net.HDCoinType)
		}
		want := map[string]uint32{"btc/mainnet": 0, "ltc/mainnet": 2}[p.String()]
		if p.Network != chain.Mainnet {
			want = 1
		}
		if got := keys.CoinType(p); got != want {
			t.Errorf("%s: CoinType %d, want %d", p, got, want)
		}
		if path := keys.AccountPath(p); !slices.Equal(path, []uint32{84 | 1<<31, want | 1<<31, 1 << 31}) {
			t.Errorf("%s: AccountPath %v", p, path)
		}
	}
}

// TestBIP84Vector checks the test vector of BIP 84 itself.
func TestBIP84Vector(t *testing.T) {
	mainnet, err := chain.Lookup(chain.BTC, chain.Mainnet)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := keys.SeedFromMnemonic("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about", "")
	if err != nil {
		t.Fatal(err)
	}
	acct, fp, err := keys.AccountKey(seed, mainnet)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(fp[:]) != "73c5da0a" {
		t.Errorf("master fingerprint %x, want 73c5da0a", fp)
	}
	// BIP 84 writes the account keys as zprv/zpub.
	const (
		zprv = "zprvAdG4iTXWBoARxkkzNpNh8r6Qag3irQB8PzEMkAFeTRXxHpbF9z4QgEvBRmfvqWvGp42t42nvgGpNgYSJA9iefm1yYNZKEm7z6qUWCroSQnE"
		zpub = "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31mGDtKsAYz2oz2AGutZYs"
	)
	imported, err := keys.ParseXprv(zprv, mainnet)
	if err != nil {
		t.Fatal(err)
	}
	if imported.String() != acct.String() || !strings.HasPrefix(acct.String(), "xprv") {
		t.Errorf("account key %s…, want the xprv form of the BIP 84 zprv", acct.String()[:12])
	}
	xpub, err := descriptor.ParseExtendedKey(zpub, mainnet)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := acct.Neuter()
	if err != nil {
		t.Fatal(err)
	}
	if pub.String() != xpub.String() {
		t.Errorf("account xpub %s, want %s", pub, xpub)
	}
	desc, err := keys.WatchDescriptor(acct, fp, mainnet)
	if err != nil {
		t.Fatal(err)
	}
	if want := "wpkh([73c5da0a/84h/0h/0h]" + xpub.String() + "/<0;1>/*)#"; !strings.HasPrefix(desc, want) {
		t.Errorf("descriptor %s, want %s…", desc, want)
	}
	d, err := descriptor.Parse(desc, mainnet)
	if err != nil {
		t.Fatal(err)
	}
	recv, change, err := descriptor.Pair(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		d     *descriptor.Descriptor
		index uint32
		addr  string
	}{
		{recv, 0, "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"},
		{recv, 1, "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"},
		{change, 0, "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el"},
	} {
		if got, err := c.d.Address(c.index, mainnet); err != nil || got != c.addr {
			t.Errorf("address %d: %s, %v; want %s", c.index, got, err, c.addr)
		}
	}
}

// TestWatchDescriptor: on every network the descriptor parses as written and
// derives, with the key origins a PSBT needs, exactly the scripts the
// private keys derive.
func TestWatchDescriptor(t *testing.T) {
	mnemonic, err := keys.NewMnemonic(12)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := keys.SeedFromMnemonic(mnemonic, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, net := range chain.All() {
		t.Run(net.String(), func(t *testing.T) {
			acct, fp, err := keys.AccountKey(seed, net)
			if err != nil {
				t.Fatal(err)
			}
			for _, other := range chain.All() {
				if (other.Network == chain.Mainnet) != (net.Network == chain.Mainnet) {
					if _, err := keys.WatchDescriptor(acct, fp, other); err == nil {
						t.Errorf("WatchDescriptor of a %s key for %s succeeded", net, other)
					}
				}
			}
			own, err := keys.KeyFingerprint(acct)
			if err != nil {
				t.Fatal(err)
			}
			for _, origin := range []bool{true, false} {
				masterFP, wantPrefix := fp, keys.AccountPath(net)
				if !origin { // as for an imported key
					masterFP, wantPrefix = own, nil
				}
				text, err := keys.WatchDescriptor(acct, masterFP, net)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(text, "prv") || strings.Contains(text, acct.String()) {
					t.Fatalf("descriptor %s holds the private key", text)
				}
				d, err := descriptor.Parse(text, net)
				if err != nil {
					t.Fatalf("descriptor.Parse(%s): %v", text, err)
				}
				if d.String() != text || d.ScriptType() != descriptor.ScriptWPKH || !d.IsMultipath() {
					t.Fatalf("parsed %s as %s (%s)", text, d.String(), d.ScriptType())
				}
				recv, change, err := descriptor.Pair(d)
				if err != nil {
					t.Fatal(err)
				}
				for branch, bd := range []*descriptor.Descriptor{recv, change} {
					for _, index := range []uint32{0, 1, 7, 1000} {
						out, err := bd.Derive(index)
						if err != nil {
							t.Fatal(err)
						}
						pub := privatePath(t, acct, uint32(branch), index)
						wantScript, err := txscript.NewScriptBuilder().AddOp(txscript.OP_0).AddData(btcutil.Hash160(pub)).Script()
						if err != nil {
							t.Fatal(err)
						}
						wantPath := append(slices.Clone(wantPrefix), uint32(branch), index)
						ko := out.Keys[0]
						if !bytes.Equal(out.Script, wantScript) || !bytes.Equal(ko.PubKey, pub) || ko.Fingerprint != masterFP || !slices.Equal(ko.Path, wantPath) {
							t.Fatalf("origin %v, %d/%d: descriptor derives %x [%x %v], private path %x [%x %v]",
								origin, branch, index, out.Script, ko.Fingerprint, ko.Path, wantScript, masterFP, wantPath)
						}
					}
				}
			}
		})
	}
}

// privatePath derives the public key at branch/index through the private
// key, as SignPSBT does.
func privatePath(t testing.TB, acct *hdkeychain.ExtendedKey, branch, index uint32) []byte {
	t.Helper()
	k, err := acct.Derive(branch)
	if err != nil {
		t.Fatal(err)
	}
	if k, err = k.Derive(index); err != nil {
		t.Fatal(err)
	}
	if !k.IsPrivate() {
		t.Fatal("derived a public key")
	}
	priv, err := k.ECPrivKey()
	if err != nil {
		t.Fatal(err)
	}
	return priv.PubKey().SerializeCompressed()
}

func TestParseXprv(t *testing.T) {
	reg := regtest(t)
	mainnet, err := chain.Lookup(chain.BTC, chain.Mainnet)
	if err != nil {
		t.Fatal(err)
	}
	ltc, err := chain.Lookup(chain.LTC, chain.Mainnet)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := keys.SeedFromMnemonic(trezorVectors[1].mnemonic, "")
	if err != nil {
		t.Fatal(err)
	}
	testAcct, _, err := keys.AccountKey(seed, reg)
	if err != nil {
		t.Fatal(err)
	}
	mainAcct, _, err := keys.AccountKey(seed, mainnet)
	if err != nil {
		t.Fatal(err)
	}
	withVersion := func(k *hdkeychain.ExtendedKey, v string) string {
		b, _ := hex.DecodeString(v)
		c, err := k.CloneWithVersion(b)
		if err != nil {
			t.Fatal(err)
		}
		return c.String()
	}
	tpub, err := testAcct.Neuter()
	if err != nil {
		t.Fatal(err)
	}
	root, err := hdkeychain.NewMaster(seed, reg.Net)
	if err != nil {
		t.Fatal(err)
	}
	coinLevel, err := root.Derive(84 | 1<<31)
	if err != nil {
		t.Fatal(err)
	}
	unhardened, err := testAcct.Derive(0)
	if err != nil {
		t.Fatal(err)
	}
	tprv := testAcct.String()

	// Accepted forms come back as the standard xprv/tprv.
	for _, c := range []struct {
		name, key string
		net       *chain.Params
		want      string
	}{
		{"tprv", tprv, reg, tprv},
		{"tprv with spaces", "  " + tprv + "\n", reg, tprv},
		{"vprv", withVersion(testAcct, "045f18bc"), reg, tprv},
		{"xprv", mainAcct.String(), mainnet, mainAcct.String()},
		{"zprv", withVersion(mainAcct, "04b2430c"), mainnet, mainAcct.String()},
		{"xprv on litecoin", mainAcct.String(), ltc, mainAcct.String()},
	} {
		k, err := keys.ParseXprv(c.key, c.net)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if k.String() != c.want || !k.IsPrivate() || !k.IsForNet(c.net.Net) {
			t.Errorf("%s: parsed as %s…", c.name, k.String()[:12])
		}
	}

	for _, c := range []struct {
		name, key string
		net       *chain.Params
		msg       string
	}{
		{"tpub", tpub.String(), reg, "extended public key"},
		{"xprv on regtest", mainAcct.String(), reg, "xprv is a key for mainnet, but the wallet is btc/regtest, which needs tprv"},
		{"tprv on mainnet", tprv, mainnet, "tprv is a key for test networks, but the wallet is btc/mainnet, which needs xprv"},
		{"uprv", withVersion(testAcct, "044a4e28"), reg, "uprv keys are for other script types"},
		{"Vprv", withVersion(testAcct, "02575048"), reg, "Vprv keys are for other script types"},
		{"unknown version", withVersion(testAcct, "01020304"), reg, "unknown extended key version 0x01020304"},
		{"master key", root.String(), reg, "depth 0"},
		{"coin-level key", coinLevel.String(), reg, "depth 1"},
		{"unhardened depth 4", unhardened.String(), reg, "depth 4"},
		{"typo", tprv[:50] + "x" + tprv[51:], reg, "check it for typos"},
		{"mnemonic", trezorVectors[1].mnemonic, reg, "not a valid extended key"},
		{"empty", "", reg, "not a valid extended key"},
	} {
		_, err := keys.ParseXprv(c.key, c.net)
		if !errors.Is(err, keys.ErrXprv) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err = %v, want ErrXprv saying %q", c.name, err, c.msg)
			continue
		}
		if c.key != "" && strings.Contains(err.Error(), strings.TrimSpace(c.key)[5:40]) {
			t.Errorf("%s: error quotes the key", c.name)
		}
	}
	// Parsing does not wipe what it returns.
	k, err := keys.ParseXprv(withVersion(testAcct, "045f18bc"), reg)
	if err != nil {
		t.Fatal(err)
	}
	if priv, err := k.ECPrivKey(); err != nil || len(bytes.Trim(priv.Serialize(), "\x00")) == 0 {
		t.Fatalf("parsed key is zero (%v)", err)
	}
}

package descriptor

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/coffer/coffer/internal/chain"
)

// BIP 32 test vectors 1 and 2: every step that is unhardened can be taken
// from the published parent xpub and must give the published child xpub.
func TestBIP32PublicDerivation(t *testing.T) {
	cases := []struct {
		name   string
		parent string
		path   []uint32
		child  string
	}{
		{"TV1 m/0H -> m/0H/1",
			"xpub68Gmy5EdvgibQVfPdqkBBCHxA5htiqg55crXYuXoQRKfDBFA1WEjWgP6LHhwBZeNK1VTsfTFUHCdrfp1bgwQ9xv5ski8PX9rL2dZXvgGDnw",
			[]uint32{1},
			"xpub6ASuArnXKPbfEwhqN6e3mwBcDTgzisQN1wXN9BJcM47sSikHjJf3UFHKkNAWbWMiGj7Wf5uMash7SyYq527Hqck2AxYysAA7xmALppuCkwQ"},
		{"TV1 m/0H/1/2H -> m/0H/1/2H/2",
			"xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5uJh7n7epu4trkrX7x7DogT5Uv6fcLW5",
			[]uint32{2},
			"xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZACTj37sR62cfN7fe5JnJ7dh8zL4fiyLHV"},
		{"TV1 m/0H/1/2H -> m/0H/1/2H/2/1000000000",
			"xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5uJh7n7epu4trkrX7x7DogT5Uv6fcLW5",
			[]uint32{2, 1000000000},
			"xpub6H1LXWLaKsWFhvm6RVpEL9P4KfRZSW7abD2ttkWP3SSQvnyA8FSVqNTEcYFgJS2UaFcxupHiYkro49S8yGasTvXEYBVPamhGW6cFJodrTHy"},
		{"TV2 m -> m/0",
			"xpub661MyMwAqRbcFW31YEwpkMuc5THy2PSt5bDMsktWQcFF8syAmRUapSCGu8ED9W6oDMSgv6Zz8idoc4a6mr8BDzTJY47LJhkJ8UB7WEGuduB",
			[]uint32{0},
			"xpub69H7F5d8KSRgmmdJg2KhpAK8SR3DjMwAdkxj3ZuxV27CprR9LgpeyGmXUbC6wb7ERfvrnKZjXoUmmDznezpbZb7ap6r1D3tgFxHmwMkQTPH"},
		{"TV2 m/0/2147483647H -> m/0/2147483647H/1",
			"xpub6ASAVgeehLbnwdqV6UKMHVzgqAG8Gr6riv3Fxxpj8ksbH9ebxaEyBLZ85ySDhKiLDBrQSARLq1uNRts8RuJiHjaDMBU4Zn9h8LZNnBC5y4a",
			[]uint32{1},
			"xpub6DF8uhdarytz3FWdA8TvFSvvAh8dP3283MY7p2V4SeE2wyWmG5mg5EwVvmdMVCQcoNJxGoWaU9DCWh89LojfZ537wTfunKau47EL2dhHKon"},
		{"TV2 m/0/2147483647H/1/2147483646H -> .../2",
			"xpub6ERApfZwUNrhLCkDtcHTcxd75RbzS1ed54G1LkBUHQVHQKqhMkhgbmJbZRkrgZw4koxb5JaHWkY4ALHY2grBGRjaDMzQLcgJvLJuZZvRcEL",
			[]uint32{2},
			"xpub6FnCn6nSzZAw5Tw7cgR9bi15UV96gLZhjDstkXXxvCLsUXBGXPdSnLFbdpq8p9HmGsApME5hQTZ3emM2rnY5agb9rXpVGyy3bdW6EEgAtqt"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			parent, err := ParseExtendedKey(c.parent, nil)
			if err != nil {
				t.Fatal(err)
			}
			child, err := parent.Derive(c.path...)
			if err != nil {
				t.Fatal(err)
			}
			if child.String() != c.child {
				t.Fatalf("derived %s\nwant    %s", child, c.child)
			}

			// The same through a descriptor: pk(parent/path) must yield the
			// published child's public key.
			var path strings.Builder
			for _, s := range c.path {
				path.WriteString("/" + itoa(s))
			}
			d := mustParse(t, "pk("+c.parent+path.String()+")", nil)
			ko, err := d.Derivations(0)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ParseExtendedKey(c.child, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ko[0].PubKey, want.PubKey()) {
				t.Fatalf("descriptor key %x, want %x", ko[0].PubKey, want.PubKey())
			}
		})
	}
}

func itoa(v uint32) string {
	var b strings.Builder
	writeStep(&b, v)
	return b.String()
}

func TestBIP32HardenedFromXpub(t *testing.T) {
	// TV2 m/0/2147483647H cannot be reached from m/0's xpub.
	k, err := ParseExtendedKey("xpub69H7F5d8KSRgmmdJg2KhpAK8SR3DjMwAdkxj3ZuxV27CprR9LgpeyGmXUbC6wb7ERfvrnKZjXoUmmDznezpbZb7ap6r1D3tgFxHmwMkQTPH", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.Derive(hardened(2147483647))
	wantErr(t, err, ErrUnsupported, "hardened Derive")
	_, err = Parse("pk(xpub69H7F5d8KSRgmmdJg2KhpAK8SR3DjMwAdkxj3ZuxV27CprR9LgpeyGmXUbC6wb7ERfvrnKZjXoUmmDznezpbZb7ap6r1D3tgFxHmwMkQTPH/2147483647h)", nil)
	wantErr(t, err, ErrUnsupported, "hardened step in descriptor")
}

// BIP 32 test vector 5: keys that must be rejected.
func TestBIP32InvalidKeys(t *testing.T) {
	cases := []struct {
		why  string
		key  string
		kind error
	}{
		{"pubkey version / prvkey mismatch", "xpub661MyMwAqRbcEYS8w7XLSVeEsBXy79zSzH1J8vCdxAZningWLdN3zgtU6LBpB85b3D2yc8sfvZU521AAwdZafEz7mnzBBsz4wKY5fTtTQBm", ErrSyntax},
		{"invalid pubkey prefix 04", "xpub661MyMwAqRbcEYS8w7XLSVeEsBXy79zSzH1J8vCdxAZningWLdN3zgtU6Txnt3siSujt9RCVYsx4qHZGc62TG4McvMGcAUjeuwZdduYEvFn", ErrSyntax},
		{"invalid pubkey prefix 01", "xpub661MyMwAqRbcEYS8w7XLSVeEsBXy79zSzH1J8vCdxAZningWLdN3zgtU6N8ZMMXctdiCjxTNq964yKkwrkBJJwpzZS4HS2fxvyYUA4q2Xe4", ErrSyntax},
		{"zero depth with non-zero parent fingerprint", "xpub661no6RGEX3uJkY4bNnPcw4URcQTrSibUZ4NqJEw5eBkv7ovTwgiT91XX27VbEXGENhYRCf7hyEbWrR3FewATdCEebj6znwMfQkhRYHRLpJ", ErrSyntax},
		{"zero depth with non-zero index", "xpub661MyMwAuDcm6CRQ5N4qiHKrJ39Xe1R1NyfouMKTTWcguwVcfrZJaNvhpebzGerh7gucBvzEQWRugZDuDXjNDRmXzSZe4c7mnTK97pTvGS8", ErrSyntax},
		// Unknown version with private key data (a zero byte, then zeros).
		{"unknown extended key version", "DMwo58pR1QLEFihHiXPVykYB6fJmsTeHvyTp7hRThAtCX8CvYzgPcn8XnmdfHGMQzT7ayAmfo4z3gY5KfbrZWZ6St24UVf2Qgo6oujFktLHdHY4", ErrPrivateKey},
		{"unknown extended key version", "DMwo58pR1QLEFihHiXPVykYB6fJmsTeHvyTp7hRThAtCX8CvYzgPcn8XnmdfHPmHJiEDXkTiJTVV9rHEBUem2mwVbbNfvT2MTcAqj3nesx8uBf9", ErrSyntax},
		{"invalid pubkey 020000…07", "xpub661MyMwAqRbcEYS8w7XLSVeEsBXy79zSzH1J8vCdxAZningWLdN3zgtU6Q5JXayek4PRsn35jii4veMimro1xefsM58PgBMrvdYre8QyULY", ErrSyntax},
		{"invalid checksum", "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHL", ErrSyntax},
	}
	for _, c := range cases {
		_, err := ParseExtendedKey(c.key, nil)
		wantErr(t, err, c.kind, c.why)
		_, err = Parse("wpkh("+c.key+"/0/*)", nil)
		wantErr(t, err, c.kind, c.why+" in a descriptor")
	}
}

// SLIP-132 "Bitcoin Test Vectors" (abandon … about, account 0): the same
// account under three version prefixes and the first receive address of
// each.
func TestSLIP132(t *testing.T) {
	mainnet := mustNet(t, chain.BTC, chain.Mainnet)
	cases := []struct {
		key, scriptType, addr string
		implied               ScriptType
	}{
		{"xpub6BosfCnifzxcFwrSzQiqu2DBVTshkCXacvNsWGYJVVhhawA7d4R5WSWGFNbi8Aw6ZRc1brxMyWMzG3DSSSSoekkudhUd9yLb6qx39T9nMdj", "pkh", "1LqBGSKuX5yYUonjxT5qGfpUsXKYYWeabA", ""},
		{"ypub6Ww3ibxVfGzLrAH1PNcjyAWenMTbbAosGNB6VvmSEgytSER9azLDWCxoJwW7Ke7icmizBMXrzBx9979FfaHxHcrArf3zbeJJJUZPf663zsP", "", "37VucYSaXLCAsxYyAPfbSi9eh4iEcbShgf", ScriptSHWPKH},
		{"zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31mGDtKsAYz2oz2AGutZYs", "", "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu", ScriptWPKH},
	}
	for _, c := range cases {
		k, err := ParseExtendedKey(c.key, mainnet)
		if err != nil {
			t.Fatal(err)
		}
		if k.ScriptType() != c.implied || !k.Mainnet() || k.Prefix() != c.key[:4] || k.Depth() != 3 {
			t.Errorf("%s: type %q mainnet %v prefix %q depth %d", c.key[:4], k.ScriptType(), k.Mainnet(), k.Prefix(), k.Depth())
		}
		if !strings.HasPrefix(k.String(), "xpub") {
			t.Errorf("%s: String() = %s, want the xpub form", c.key[:4], k)
		}
		recv, _, err := FromExtendedKey(c.key, c.scriptType, mainnet)
		if err != nil {
			t.Fatal(err)
		}
		addr, err := recv.Address(0, mainnet)
		if err != nil || addr != c.addr {
			t.Errorf("%s: first address %s, %v; want %s", c.key[:4], addr, err, c.addr)
		}
	}
}

// The zpub of BIP 84 must be the public half of the zprv published there;
// checked with hdkeychain alone after swapping the version bytes.
func TestBIP84AccountKeyMatchesPublishedZprv(t *testing.T) {
	const zprv = "zprvAdG4iTXWBoARxkkzNpNh8r6Qag3irQB8PzEMkAFeTRXxHpbF9z4QgEvBRmfvqWvGp42t42nvgGpNgYSJA9iefm1yYNZKEm7z6qUWCroSQnE"
	priv, err := hdkeychain.NewKeyFromString(reversion(t, zprv, 0x0488ade4))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := priv.Neuter()
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseExtendedKey(bip84Zpub, nil)
	if err != nil {
		t.Fatal(err)
	}
	if k.String() != pub.String() {
		t.Fatalf("zpub as xpub %s\nzprv neutered %s", k, pub)
	}
	// zprv itself is private.
	_, err = ParseExtendedKey(zprv, nil)
	wantErr(t, err, ErrPrivateKey, "zprv")
	if strings.Contains(err.Error(), zprv[4:20]) {
		t.Fatalf("error message leaks the private key: %v", err)
	}
}

// The master key of "abandon … about" (BIP 86 rootpub) has the well-known
// fingerprint 73c5da0a.
func TestFingerprint(t *testing.T) {
	k, err := ParseExtendedKey(bip86Root, nil)
	if err != nil {
		t.Fatal(err)
	}
	fp := k.Fingerprint()
	if hex.EncodeToString(fp[:]) != "73c5da0a" {
		t.Fatalf("fingerprint %x", fp)
	}
}

func TestParseScriptType(t *testing.T) {
	for in, want := range map[string]ScriptType{
		"pkh": ScriptPKH, "P2PKH": ScriptPKH, "sh-wpkh": ScriptSHWPKH, "p2sh-p2wpkh": ScriptSHWPKH,
		"wpkh": ScriptWPKH, " p2wpkh ": ScriptWPKH, "tr": ScriptTR, "p2tr": ScriptTR,
	} {
		got, err := ParseScriptType(in)
		if err != nil || got != want {
			t.Errorf("ParseScriptType(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "wsh", "segwit"} {
		_, err := ParseScriptType(in)
		wantErr(t, err, ErrScriptType, in)
	}
}

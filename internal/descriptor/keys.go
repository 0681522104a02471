package descriptor

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"strings"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/base58"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/coffer/coffer/internal/chain"
)

// ScriptType names the output script shapes Coffer's watch-only wallets use.
// The first four are what an extended key can be paired with; the rest only
// describe parsed descriptors.
type ScriptType string

// Script types.
const (
	ScriptPKH    ScriptType = "pkh"     // P2PKH (BIP 44)
	ScriptSHWPKH ScriptType = "sh-wpkh" // P2WPKH nested in P2SH (BIP 49)
	ScriptWPKH   ScriptType = "wpkh"    // P2WPKH (BIP 84)
	ScriptTR     ScriptType = "tr"      // P2TR key path only (BIP 86)

	ScriptPK    ScriptType = "pk"     // bare P2PK
	ScriptMulti ScriptType = "multi"  // bare multisig
	ScriptSH    ScriptType = "sh"     // P2SH of a non-segwit script
	ScriptWSH   ScriptType = "wsh"    // P2WSH
	ScriptSHWSH ScriptType = "sh-wsh" // P2WSH nested in P2SH
)

// ParseScriptType reads a script type for an extended key: pkh, sh-wpkh,
// wpkh or tr, case-insensitively, also under their common p2… names.
func ParseScriptType(s string) (ScriptType, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "pkh", "p2pkh":
		return ScriptPKH, nil
	case "sh-wpkh", "sh(wpkh)", "p2sh-p2wpkh", "p2wpkh-p2sh":
		return ScriptSHWPKH, nil
	case "wpkh", "p2wpkh":
		return ScriptWPKH, nil
	case "tr", "p2tr":
		return ScriptTR, nil
	case "":
		return "", errf(ErrScriptType, "no script type given (want pkh, sh-wpkh, wpkh or tr)")
	}
	return "", errf(ErrScriptType, "unknown script type %q (want pkh, sh-wpkh, wpkh or tr)", s)
}

// netClass says which networks an extended key version is for. Test
// networks (testnet, signet, regtest) share their version bytes.
type netClass uint8

const (
	netMain netClass = iota + 1
	netTest
)

func (c netClass) String() string {
	if c == netMain {
		return "mainnet"
	}
	return "testnet/signet/regtest"
}

func classOf(p *chain.Params) netClass {
	if p.Network == chain.Mainnet {
		return netMain
	}
	return netTest
}

// keyVersion describes one registered BIP 32 / SLIP-132 version.
type keyVersion struct {
	id      uint32
	prefix  string
	private bool
	class   netClass
	ltcOnly bool
	// implied is the script type a SLIP-132 version stands for; multisig
	// versions carry one that a single key cannot express.
	implied  ScriptType
	multisig bool
}

// slip132 reports whether the version stands for a script type, which a
// descriptor must spell out instead.
func (v *keyVersion) slip132() bool { return v.implied != "" || v.multisig }

// Version bytes from BIP 32 and SLIP-132. Litecoin Core itself uses the
// xpub/tpub bytes; Ltub, Mtub and ttub come from other Litecoin wallets.
var keyVersions = []keyVersion{
	{id: 0x0488b21e, prefix: "xpub", class: netMain},
	{id: 0x049d7cb2, prefix: "ypub", class: netMain, implied: ScriptSHWPKH},
	{id: 0x04b24746, prefix: "zpub", class: netMain, implied: ScriptWPKH},
	{id: 0x0295b43f, prefix: "Ypub", class: netMain, multisig: true},
	{id: 0x02aa7ed3, prefix: "Zpub", class: netMain, multisig: true},
	{id: 0x043587cf, prefix: "tpub", class: netTest},
	{id: 0x044a5262, prefix: "upub", class: netTest, implied: ScriptSHWPKH},
	{id: 0x045f1cf6, prefix: "vpub", class: netTest, implied: ScriptWPKH},
	{id: 0x024289ef, prefix: "Upub", class: netTest, multisig: true},
	{id: 0x02575483, prefix: "Vpub", class: netTest, multisig: true},
	{id: 0x019da462, prefix: "Ltub", class: netMain, ltcOnly: true},
	{id: 0x01b26ef6, prefix: "Mtub", class: netMain, ltcOnly: true, implied: ScriptSHWPKH},
	{id: 0x0436f6e1, prefix: "ttub", class: netTest, ltcOnly: true},

	{id: 0x0488ade4, prefix: "xprv", private: true, class: netMain},
	{id: 0x049d7878, prefix: "yprv", private: true, class: netMain},
	{id: 0x04b2430c, prefix: "zprv", private: true, class: netMain},
	{id: 0x0295b005, prefix: "Yprv", private: true, class: netMain},
	{id: 0x02aa7a99, prefix: "Zprv", private: true, class: netMain},
	{id: 0x04358394, prefix: "tprv", private: true, class: netTest},
	{id: 0x044a4e28, prefix: "uprv", private: true, class: netTest},
	{id: 0x045f18bc, prefix: "vprv", private: true, class: netTest},
	{id: 0x024285b5, prefix: "Uprv", private: true, class: netTest},
	{id: 0x02575048, prefix: "Vprv", private: true, class: netTest},
	{id: 0x019d9cfe, prefix: "Ltpv", private: true, class: netMain, ltcOnly: true},
	{id: 0x01b26792, prefix: "Mtpv", private: true, class: netMain, ltcOnly: true},
	{id: 0x0436ef7d, prefix: "ttpv", private: true, class: netTest, ltcOnly: true},
}

func lookupVersion(id uint32) *keyVersion {
	for i := range keyVersions {
		if keyVersions[i].id == id {
			return &keyVersions[i]
		}
	}
	return nil
}

// Standard versions everything is converted to, since hdkeychain and other
// descriptor software only know these.
var (
	xpubVersion = []byte{0x04, 0x88, 0xb2, 0x1e}
	tpubVersion = []byte{0x04, 0x35, 0x87, 0xcf}
)

func stdVersion(c netClass) []byte {
	if c == netMain {
		return xpubVersion
	}
	return tpubVersion
}

// standardPrefix is what a key of class c is written as in a descriptor.
func standardPrefix(c netClass) string {
	if c == netMain {
		return "xpub"
	}
	return "tpub"
}

// checkNet rejects a key version that net does not use. A nil net accepts
// every network.
func checkNet(v *keyVersion, net *chain.Params) error {
	if net == nil {
		return nil
	}
	if v.ltcOnly && net.Coin != chain.LTC {
		return errf(ErrNetwork, "%s is a Litecoin key version but the wallet is %s; use the %s form of the key",
			v.prefix, net, standardPrefix(v.class))
	}
	if want := classOf(net); v.class != want {
		return errf(ErrNetwork, "%s is a %s key but the wallet is %s, which needs %s keys",
			v.prefix, v.class, net, standardPrefix(want))
	}
	return nil
}

// Serialized extended key layout (BIP 32): version 4, depth 1, parent
// fingerprint 4, child number 4, chain code 32, key 33, checksum 4.
const extKeyLen = 82

// maxKeyText bounds what is fed to the quadratic base58 decoder; real
// extended keys are 111 characters.
const maxKeyText = 120

// decodeExtKey decodes a base58 public key string: an extended public key of
// any registered version (returned with standard xpub/tpub version bytes),
// or an error saying what is wrong. Errors never quote the input, which may
// be a private key.
func decodeExtKey(s string) (*hdkeychain.ExtendedKey, *keyVersion, error) {
	if len(s) > maxKeyText {
		return nil, nil, errf(ErrSyntax, "key is %d characters long, too long for an extended key", len(s))
	}
	raw := base58.Decode(s)
	if len(raw) != extKeyLen {
		if isWIF(raw) {
			return nil, nil, errf(ErrPrivateKey, "a WIF private key was given; Coffer is watch-only, give the public key or an xpub instead")
		}
		return nil, nil, errf(ErrSyntax, "not a valid public key or extended public key (xpub/tpub)")
	}
	payload := raw[:extKeyLen-4]
	if !checksumOK(payload, raw[extKeyLen-4:]) {
		return nil, nil, errf(ErrSyntax, "extended key checksum does not match; check the key for typos")
	}
	keyData := payload[45:78]
	ver := lookupVersion(binary.BigEndian.Uint32(payload[:4]))
	switch {
	case ver == nil && keyData[0] == 0x00:
		return nil, nil, errf(ErrPrivateKey, "an extended private key was given; Coffer is watch-only, give the extended public key instead")
	case ver == nil:
		return nil, nil, errf(ErrSyntax, "unknown extended key version 0x%08x (want xpub or tpub)", binary.BigEndian.Uint32(payload[:4]))
	case ver.private:
		return nil, nil, errf(ErrPrivateKey, "%s is an extended private key; Coffer is watch-only, give the matching extended public key instead", ver.prefix)
	}
	depth := payload[4]
	parentFP := payload[5:9]
	childNum := binary.BigEndian.Uint32(payload[9:13])
	chainCode := payload[13:45]
	if keyData[0] != 0x02 && keyData[0] != 0x03 {
		return nil, nil, errf(ErrSyntax, "%s key data is not a compressed public key", ver.prefix)
	}
	if _, err := btcec.ParsePubKey(keyData); err != nil {
		return nil, nil, errf(ErrSyntax, "%s key data is not a valid public key: %v", ver.prefix, err)
	}
	// A master key (depth 0) has no parent (BIP 32 test vector 5).
	if depth == 0 && (!bytes.Equal(parentFP, []byte{0, 0, 0, 0}) || childNum != 0) {
		return nil, nil, errf(ErrSyntax, "%s has depth 0 but a parent fingerprint or child number", ver.prefix)
	}
	k := hdkeychain.NewExtendedKey(stdVersion(ver.class), clone(keyData), clone(chainCode),
		clone(parentFP), depth, childNum, false)
	return k, ver, nil
}

// isWIF reports whether raw is a base58-decoded WIF private key: version,
// 32 key bytes, an optional 0x01 compression flag and a valid checksum.
func isWIF(raw []byte) bool {
	if len(raw) != 37 && !(len(raw) == 38 && raw[33] == 0x01) {
		return false
	}
	return checksumOK(raw[:len(raw)-4], raw[len(raw)-4:])
}

// checksumOK checks a base58check checksum: the first four bytes of
// SHA256(SHA256(payload)).
func checksumOK(payload, sum []byte) bool {
	h := sha256.Sum256(payload)
	h = sha256.Sum256(h[:])
	return bytes.Equal(h[:4], sum)
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// fingerprint is the BIP 32 key identifier prefix of a compressed pubkey.
func fingerprint(pub []byte) [4]byte {
	var fp [4]byte
	copy(fp[:], btcutil.Hash160(pub))
	return fp
}

// ExtendedKey is a watch-only BIP 32 extended public key.
type ExtendedKey struct {
	key *hdkeychain.ExtendedKey // always with xpub/tpub version bytes
	ver *keyVersion             // the version it was written with
}

// ParseExtendedKey parses an extended public key written with any registered
// version (xpub, ypub, zpub, tpub, upub, vpub; Ltub, Mtub, ttub for
// Litecoin) and checks it belongs to net. A nil net accepts any network.
func ParseExtendedKey(s string, net *chain.Params) (*ExtendedKey, error) {
	k, ver, err := decodeExtKey(strings.TrimSpace(s))
	if err != nil {
		return nil, err
	}
	if err := checkNet(ver, net); err != nil {
		return nil, err
	}
	return &ExtendedKey{key: k, ver: ver}, nil
}

// String returns the key with standard xpub or tpub version bytes, the form
// descriptors and hdkeychain use.
func (k *ExtendedKey) String() string { return k.key.String() }

// Prefix returns the version prefix the key was written with, e.g. "zpub".
func (k *ExtendedKey) Prefix() string { return k.ver.prefix }

// ScriptType returns the script type implied by a SLIP-132 version (ypub →
// sh-wpkh, zpub → wpkh), or "" for xpub/tpub and multisig versions.
func (k *ExtendedKey) ScriptType() ScriptType { return k.ver.implied }

// Mainnet reports whether this is a mainnet key rather than one for the test
// networks.
func (k *ExtendedKey) Mainnet() bool { return k.ver.class == netMain }

// Depth returns the number of derivation steps from the master key.
func (k *ExtendedKey) Depth() uint8 { return k.key.Depth() }

// PubKey returns the 33-byte compressed public key.
func (k *ExtendedKey) PubKey() []byte {
	pub, err := k.key.ECPubKey()
	if err != nil { // cannot happen: checked at parse and derivation
		return nil
	}
	return pub.SerializeCompressed()
}

// Fingerprint returns the BIP 32 fingerprint of this key (not of its
// parent): the first four bytes of HASH160 of the public key.
func (k *ExtendedKey) Fingerprint() [4]byte { return fingerprint(k.PubKey()) }

// Derive returns the descendant at the given unhardened path. Hardened steps
// need the private key and fail with ErrUnsupported.
func (k *ExtendedKey) Derive(path ...uint32) (*ExtendedKey, error) {
	cur := k.key
	for _, i := range path {
		if i >= hdkeychain.HardenedKeyStart {
			return nil, errf(ErrUnsupported, "hardened step %dh needs the private key; Coffer is watch-only", i-hdkeychain.HardenedKeyStart)
		}
		next, err := cur.Derive(i)
		if err != nil {
			return nil, errf(ErrIndex, "cannot derive child %d: %v", i, err)
		}
		cur = next
	}
	return &ExtendedKey{key: cur, ver: k.ver}, nil
}

package keys

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/tyler-smith/go-bip39"
	"golang.org/x/text/unicode/norm"

	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/descriptor"
)

// Errors for seeds and keys. Their messages never quote the input, which is
// secret.
var (
	ErrMnemonic = errors.New("keys: invalid mnemonic")
	ErrXprv     = errors.New("keys: invalid extended private key")
)

// hardened marks a hardened BIP 32 derivation step.
const hardened = hdkeychain.HardenedKeyStart

// BIP84Purpose is the first step of a BIP 84 (native segwit) path.
const BIP84Purpose = 84 + hardened

// NewMnemonic returns a new random BIP39 mnemonic of 12 or 24 English words
// (128 or 256 bits of entropy).
func NewMnemonic(words int) (string, error) {
	var bits int
	switch words {
	case 12:
		bits = 128
	case 24:
		bits = 256
	default:
		return "", fmt.Errorf("%w: %d words asked for; new mnemonics have 12 or 24", ErrMnemonic, words)
	}
	entropy, err := bip39.NewEntropy(bits)
	if err != nil {
		return "", fmt.Errorf("keys: generating entropy: %w", err)
	}
	defer clear(entropy)
	m, err := bip39.NewMnemonic(entropy)
	if err != nil {
		return "", fmt.Errorf("keys: encoding mnemonic: %w", err)
	}
	return m, nil
}

// NormalizeMnemonic returns m in the form Coffer stores and seeds from:
// lowercase words separated by single spaces.
func NormalizeMnemonic(m string) string {
	return strings.Join(strings.Fields(strings.ToLower(norm.NFKD.String(m))), " ")
}

// ValidateMnemonic checks that m (after NormalizeMnemonic) is a BIP39
// mnemonic of English words with a correct checksum. The error says which
// word is wrong by position, never by quoting it.
func ValidateMnemonic(m string) error {
	words := strings.Fields(NormalizeMnemonic(m))
	switch len(words) {
	case 12, 15, 18, 21, 24:
	default:
		return fmt.Errorf("%w: it has %d words; a BIP39 mnemonic has 12, 15, 18, 21 or 24", ErrMnemonic, len(words))
	}
	for i, w := range words {
		if _, ok := bip39.GetWordIndex(w); !ok {
			return fmt.Errorf("%w: word %d is not in the BIP39 English word list", ErrMnemonic, i+1)
		}
	}
	entropy, err := bip39.EntropyFromMnemonic(strings.Join(words, " "))
	if err != nil {
		return fmt.Errorf("%w: the checksum does not match; a word is wrong or out of order", ErrMnemonic)
	}
	clear(entropy)
	return nil
}

// SeedFromMnemonic returns the 64-byte BIP39 seed of mnemonic (normalised as
// NormalizeMnemonic does) and passphrase (NFKD-normalised, as BIP39 says;
// "" for none). The caller should clear the seed once done.
func SeedFromMnemonic(mnemonic, passphrase string) ([]byte, error) {
	if err := ValidateMnemonic(mnemonic); err != nil {
		return nil, err
	}
	return bip39.NewSeed(NormalizeMnemonic(mnemonic), norm.NFKD.String(passphrase)), nil
}

// CoinType returns the BIP 44 coin type of net: 0 for Bitcoin mainnet, 2 for
// Litecoin mainnet and 1 for every test network.
func CoinType(net *chain.Params) uint32 {
	switch {
	case net.Network != chain.Mainnet:
		return 1
	case net.Coin == chain.LTC:
		return 2
	}
	return 0
}

// AccountPath returns the BIP 84 path of account 0 on net: 84'/coin'/0',
// with the hardened bit set on every step.
func AccountPath(net *chain.Params) []uint32 {
	return []uint32{BIP84Purpose, CoinType(net) + hardened, hardened}
}

// KeyFingerprint returns the BIP 32 fingerprint of k: the first four bytes
// of HASH160 of its public key.
func KeyFingerprint(k *hdkeychain.ExtendedKey) ([4]byte, error) {
	var fp [4]byte
	pub, err := k.ECPubKey()
	if err != nil {
		return fp, err
	}
	copy(fp[:], btcutil.Hash160(pub.SerializeCompressed()))
	return fp, nil
}

// AccountKey derives the BIP 84 account key m/84'/coin'/0' of seed on net
// (see AccountPath) and returns it as an extended private key with net's
// version bytes, with the fingerprint of the master key that the account's
// key origin names. The caller should Zero the key once done.
func AccountKey(seed []byte, net *chain.Params) (xprv *hdkeychain.ExtendedKey, fingerprint [4]byte, err error) {
	master, err := hdkeychain.NewMaster(seed, net.Net)
	if err != nil {
		return nil, fingerprint, fmt.Errorf("keys: master key from seed: %w", err)
	}
	defer master.Zero()
	if fingerprint, err = KeyFingerprint(master); err != nil {
		return nil, fingerprint, err
	}
	k := master
	for _, step := range AccountPath(net) {
		next, err := k.Derive(step)
		if k != master {
			k.Zero()
		}
		if err != nil {
			// hdkeychain fails for about 1 in 2^127 paths.
			return nil, fingerprint, fmt.Errorf("keys: deriving the account key: %w", err)
		}
		k = next
	}
	return k, fingerprint, nil
}

// Extended private key versions (BIP 32, SLIP-132) ParseXprv knows.
var xprvVersions = map[uint32]struct {
	prefix  string
	mainnet bool
	accept  bool // a single-key BIP 84 account key may use it
}{
	0x0488ade4: {"xprv", true, true},
	0x04358394: {"tprv", false, true},
	0x04b2430c: {"zprv", true, true},
	0x045f18bc: {"vprv", false, true},
	0x049d7878: {"yprv", true, false},
	0x044a4e28: {"uprv", false, false},
	0x0295b005: {"Yprv", true, false},
	0x02aa7a99: {"Zprv", true, false},
	0x024285b5: {"Uprv", false, false},
	0x02575048: {"Vprv", false, false},
}

// ParseXprv parses an existing account-level extended private key for a
// custodial wallet on net: xprv (tprv on test networks), or zprv (vprv),
// which is returned with the standard version bytes. It must be at depth 3
// with a hardened last step, as m/84'/coin'/0' is. Extended public keys,
// keys of another network, and SLIP-132 versions for other script types are
// refused with errors that say so; errors never quote the key.
//
// The master fingerprint of an imported key is unknown: pass
// KeyFingerprint(key) as the fingerprint to WatchDescriptor and SignPSBT,
// which then describe and sign the account without key origin information.
func ParseXprv(s string, net *chain.Params) (*hdkeychain.ExtendedKey, error) {
	k, err := hdkeychain.NewKeyFromString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("%w: not a valid extended key (wrong length or checksum); check it for typos", ErrXprv)
	}
	if !k.IsPrivate() {
		return nil, fmt.Errorf("%w: this is an extended public key; a custodial wallet needs the account's extended private key (xprv or tprv)", ErrXprv)
	}
	fail := func(format string, args ...any) (*hdkeychain.ExtendedKey, error) {
		k.Zero()
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrXprv}, args...)...)
	}
	id := binary.BigEndian.Uint32(k.Version())
	v, ok := xprvVersions[id]
	want := "tprv"
	if net.Network == chain.Mainnet {
		want = "xprv"
	}
	switch {
	case !ok:
		return fail("unknown extended key version 0x%08x (want %s)", id, want)
	case !v.accept:
		return fail("%s keys are for other script types than BIP 84 native segwit, which custodial wallets use; give the key as %s", v.prefix, want)
	case v.mainnet != (net.Network == chain.Mainnet):
		return fail("%s is a key for %s, but the wallet is %s, which needs %s", v.prefix, netName(v.mainnet), net, want)
	case k.Depth() != 3 || k.ChildIndex() < hardened:
		return fail("the key is at depth %d; give the account-level key m/84'/coin'/account' (depth 3, hardened)", k.Depth())
	}
	if v.prefix == want {
		return k, nil
	}
	// The clone shares k's key bytes, so k must not be zeroed.
	return k.CloneWithVersion(net.Net.HDPrivateKeyID[:])
}

func netName(mainnet bool) string {
	if mainnet {
		return "mainnet"
	}
	return "test networks"
}

// WatchDescriptor returns the watch-only descriptor, with checksum, of the
// BIP 84 account key account (private or public) whose master key has
// fingerprint: wpkh([fingerprint/84h/coinh/0h]xpub…/<0;1>/*), receive
// addresses on branch 0 and change on branch 1, as descriptor.Parse and
// descriptor.Pair read it. A fingerprint equal to KeyFingerprint(account)
// means the origin is unknown (an imported key): the descriptor is then
// wpkh(xpub…/<0;1>/*).
func WatchDescriptor(account *hdkeychain.ExtendedKey, fingerprint [4]byte, net *chain.Params) (string, error) {
	if !account.IsForNet(net.Net) {
		return "", fmt.Errorf("keys: the account key is not for %s", net)
	}
	own, err := KeyFingerprint(account)
	if err != nil {
		return "", err
	}
	pub, err := account.Neuter()
	if err != nil {
		return "", err
	}
	body := "wpkh(" + pub.String() + "/<0;1>/*)"
	if own != fingerprint {
		if account.Depth() != 3 || account.ChildIndex() < hardened {
			return "", fmt.Errorf("keys: the account key is at depth %d, not at m/84'/coin'/account'", account.Depth())
		}
		body = fmt.Sprintf("wpkh([%x/84h/%dh/%dh]%s/<0;1>/*)", fingerprint, CoinType(net), account.ChildIndex()-hardened, pub.String())
	}
	sum, err := descriptor.Checksum(body)
	if err != nil {
		return "", err
	}
	return body + "#" + sum, nil
}

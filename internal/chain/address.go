package chain

import (
	"fmt"
	"strings"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/bech32"
	"github.com/btcsuite/btcd/txscript"
)

// mwebHRPs are the bech32 prefixes of Litecoin MWEB (stealth) addresses,
// which cannot be paid from the canonical chain Coffer works on.
var mwebHRPs = []string{"ltcmweb", "tmweb"}

// DecodeAddress parses a P2PKH, P2SH, P2WPKH, P2WSH or P2TR address and
// rejects addresses of any other network. Networks that share prefixes
// (Bitcoin testnet3 and signet; Litecoin testnet4 and regtest legacy
// addresses, and P2PKH of Bitcoin and Litecoin test networks) cannot be told
// apart from the string alone, so those are accepted on each other.
func (p *Params) DecodeAddress(s string) (btcutil.Address, error) {
	lower := strings.ToLower(s)
	if sep := strings.LastIndexByte(lower, '1'); sep > 0 {
		// btcutil only recognises bech32 prefixes of registered networks,
		// and the Litecoin ones are not registered, so segwit addresses of
		// this network are decoded here.
		if lower[:sep] == p.Net.Bech32HRPSegwit {
			return p.decodeSegwit(s)
		}
		if p.HasMWEB {
			for _, hrp := range mwebHRPs {
				if lower[:sep] == hrp {
					return nil, fmt.Errorf("chain: %q is an MWEB address, which Coffer cannot pay", s)
				}
			}
		}
	}
	addr, err := btcutil.DecodeAddress(s, p.Net)
	if err != nil {
		return nil, fmt.Errorf("chain: %q is not a valid %s address: %w", s, p, err)
	}
	switch addr.(type) {
	case *btcutil.AddressPubKeyHash, *btcutil.AddressScriptHash,
		*btcutil.AddressWitnessPubKeyHash, *btcutil.AddressWitnessScriptHash, *btcutil.AddressTaproot:
	default:
		// Notably a bare hex public key, which btcutil also accepts.
		return nil, fmt.Errorf("chain: %q is not a %s address", s, p)
	}
	if !addr.IsForNet(p.Net) {
		return nil, fmt.Errorf("chain: %q is an address of another network, not %s", s, p)
	}
	return addr, nil
}

// decodeSegwit decodes a bech32/bech32m address whose prefix is p's.
func (p *Params) decodeSegwit(s string) (btcutil.Address, error) {
	_, data, enc, err := bech32.DecodeGeneric(s)
	if err != nil {
		return nil, fmt.Errorf("chain: %q is not a valid %s address: %w", s, p, err)
	}
	if len(data) < 1 {
		return nil, fmt.Errorf("chain: %q is not a valid %s address: no witness version", s, p)
	}
	version := data[0]
	prog, err := bech32.ConvertBits(data[1:], 5, 8, false)
	if err != nil {
		return nil, fmt.Errorf("chain: %q is not a valid %s address: %w", s, p, err)
	}
	// BIP 350: version 0 uses the bech32 checksum, later versions bech32m.
	switch {
	case version == 0 && enc != bech32.Version0, version > 0 && enc != bech32.VersionM:
		return nil, fmt.Errorf("chain: %q is not a valid %s address: wrong checksum variant for witness version %d", s, p, version)
	}
	switch {
	case version == 0 && len(prog) == 20:
		return btcutil.NewAddressWitnessPubKeyHash(prog, p.Net)
	case version == 0 && len(prog) == 32:
		return btcutil.NewAddressWitnessScriptHash(prog, p.Net)
	case version == 1 && len(prog) == 32:
		return btcutil.NewAddressTaproot(prog, p.Net)
	}
	return nil, fmt.Errorf("chain: %q is not a supported %s address (witness version %d, %d-byte program)", s, p, version, len(prog))
}

// AddressScript returns the output script (scriptPubKey) paying address s.
func (p *Params) AddressScript(s string) ([]byte, error) {
	addr, err := p.DecodeAddress(s)
	if err != nil {
		return nil, err
	}
	script, err := txscript.PayToAddrScript(addr)
	if err != nil {
		return nil, fmt.Errorf("chain: script for %q: %w", s, err)
	}
	return script, nil
}

// ScriptAddress returns the address string of a P2PKH, P2SH, P2WPKH, P2WSH
// or P2TR output script, and false for any other script.
func (p *Params) ScriptAddress(pkScript []byte) (string, bool) {
	class, addrs, _, err := txscript.ExtractPkScriptAddrs(pkScript, p.Net)
	if err != nil || len(addrs) != 1 {
		return "", false
	}
	switch class {
	case txscript.PubKeyHashTy, txscript.ScriptHashTy,
		txscript.WitnessV0PubKeyHashTy, txscript.WitnessV0ScriptHashTy, txscript.WitnessV1TaprootTy:
		return addrs[0].EncodeAddress(), true
	}
	return "", false
}

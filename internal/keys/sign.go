package keys

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// ErrSign means a PSBT could not be signed; the message says which input
// and why.
var ErrSign = errors.New("keys: cannot sign")

// SignPSBT signs, with SIGHASH_ALL, every input of p that spends a P2WPKH
// output of the BIP 84 account key account whose master key has
// fingerprint, then finalises the inputs it signed; once every input is
// final, psbt.Extract gives the network transaction. It returns how many
// inputs it signed.
//
// An input is the account's when one of its Bip32Derivation entries names
// fingerprint and a path of the account: 84'/coin'/account'/branch/index,
// branch 0 (receive) or 1 (change). When fingerprint is the account key's
// own (an imported key, see ParseXprv) the path is just branch/index. Other
// inputs and inputs already final are left alone. An input that claims the
// account but whose derived key, script or previous output does not match
// fails the whole call, leaving p partly signed: the caller should discard
// it.
func SignPSBT(p *psbt.Packet, account *hdkeychain.ExtendedKey, fingerprint [4]byte) (signed int, err error) {
	if p == nil || p.UnsignedTx == nil || len(p.Inputs) != len(p.UnsignedTx.TxIn) {
		return 0, fmt.Errorf("%w: not a well-formed PSBT", ErrSign)
	}
	if account == nil || !account.IsPrivate() {
		return 0, fmt.Errorf("%w: the account key is not an extended private key", ErrSign)
	}
	own, err := KeyFingerprint(account)
	if err != nil {
		return 0, err
	}
	m := matcher{fp: binary.LittleEndian.Uint32(fingerprint[:]), bare: own == fingerprint}
	if !m.bare {
		if account.Depth() != 3 || account.ChildIndex() < hardened {
			return 0, fmt.Errorf("%w: the account key is at depth %d, not at m/84'/coin'/account'", ErrSign, account.Depth())
		}
		m.account = account.ChildIndex()
		m.mainnet = account.IsForNet(&chaincfg.MainNetParams)
	}

	// The PSBT and script code is third-party; whatever it does with a
	// malformed packet, the caller gets an error, not a crash.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: malformed PSBT: %v", ErrSign, r)
		}
	}()

	// BIP 143 signatures commit to the spent amount only, which signInput
	// takes from WitnessUtxo; the fetcher just needs an entry per input.
	tx := p.UnsignedTx
	fetcher := txscript.NewMultiPrevOutFetcher(nil)
	for i, in := range tx.TxIn {
		out := p.Inputs[i].WitnessUtxo
		if prev := p.Inputs[i].NonWitnessUtxo; out == nil && prev != nil && prev.TxHash() == in.PreviousOutPoint.Hash &&
			int64(in.PreviousOutPoint.Index) < int64(len(prev.TxOut)) {
			out = prev.TxOut[in.PreviousOutPoint.Index]
		}
		if out == nil {
			out = &wire.TxOut{}
		}
		fetcher.AddPrevOut(in.PreviousOutPoint, out)
	}
	hashes := txscript.NewTxSigHashes(tx, fetcher)

	branches := map[uint32]*hdkeychain.ExtendedKey{}
	defer func() {
		for _, k := range branches {
			k.Zero()
		}
	}()
	for i := range p.Inputs {
		pin := &p.Inputs[i]
		if len(pin.FinalScriptWitness) > 0 || len(pin.FinalScriptSig) > 0 {
			continue
		}
		for _, d := range pin.Bip32Derivation {
			branch, index, ok := m.match(d)
			if !ok {
				continue
			}
			if err := signInput(p, i, d, branch, index, account, branches, hashes); err != nil {
				return signed, err
			}
			signed++
			break // a P2WPKH input has one key
		}
	}
	return signed, nil
}

// matcher recognises the account's derivation paths.
type matcher struct {
	fp      uint32 // as psbt.Bip32Derivation holds it
	bare    bool   // paths are branch/index, without the account's origin
	account uint32 // the hardened account step
	mainnet bool
}

func (m *matcher) match(d *psbt.Bip32Derivation) (branch, index uint32, ok bool) {
	if d == nil || d.MasterKeyFingerprint != m.fp {
		return 0, 0, false
	}
	path := d.Bip32Path
	if !m.bare {
		if len(path) != 5 || path[0] != BIP84Purpose || path[2] != m.account || !m.coinOK(path[1]) {
			return 0, 0, false
		}
		path = path[3:]
	}
	if len(path) != 2 || path[0] > 1 || path[1] >= hardened {
		return 0, 0, false
	}
	return path[0], path[1], true
}

// coinOK accepts the coin types of the account key's network: 0' (Bitcoin)
// and 2' (Litecoin) on mainnet, 1' on test networks.
func (m *matcher) coinOK(step uint32) bool {
	if m.mainnet {
		return step == hardened || step == 2+hardened
	}
	return step == 1+hardened
}

// signInput signs input i with the key at branch/index and finalises it.
func signInput(p *psbt.Packet, i int, d *psbt.Bip32Derivation, branch, index uint32,
	account *hdkeychain.ExtendedKey, branches map[uint32]*hdkeychain.ExtendedKey, hashes *txscript.TxSigHashes) error {
	pin := &p.Inputs[i]
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: input %d: "+format, append([]any{ErrSign, i}, args...)...)
	}
	utxo := pin.WitnessUtxo
	if utxo == nil {
		return fail("no witness UTXO (the previous output being spent)")
	}
	op := p.UnsignedTx.TxIn[i].PreviousOutPoint
	if prev := pin.NonWitnessUtxo; prev != nil {
		if prev.TxHash() != op.Hash || int64(op.Index) >= int64(len(prev.TxOut)) ||
			prev.TxOut[op.Index].Value != utxo.Value || !bytes.Equal(prev.TxOut[op.Index].PkScript, utxo.PkScript) {
			return fail("the previous transaction does not match the witness UTXO")
		}
	}
	if len(pin.RedeemScript) > 0 || len(pin.WitnessScript) > 0 {
		return fail("only P2WPKH inputs can be signed, and this one has a redeem or witness script")
	}
	if pin.SighashType != 0 && pin.SighashType != txscript.SigHashAll {
		return fail("asks for sighash type %#x; only SIGHASH_ALL is signed", uint32(pin.SighashType))
	}

	bk := branches[branch]
	if bk == nil {
		var err error
		if bk, err = account.Derive(branch); err != nil {
			return fail("deriving branch %d: %v", branch, err)
		}
		branches[branch] = bk
	}
	child, err := bk.Derive(index)
	if err != nil {
		return fail("deriving key %d/%d: %v", branch, index, err)
	}
	defer child.Zero()
	pub, err := child.ECPubKey()
	if err != nil {
		return fail("%v", err)
	}
	pubBytes := pub.SerializeCompressed()
	if !bytes.Equal(pubBytes, d.PubKey) {
		return fail("the PSBT's public key for %d/%d is not the account's", branch, index)
	}
	program, err := txscript.NewScriptBuilder().AddOp(txscript.OP_0).AddData(btcutil.Hash160(pubBytes)).Script()
	if err != nil {
		return err
	}
	if !bytes.Equal(utxo.PkScript, program) {
		return fail("spends a script that is not the P2WPKH output of the account's key %d/%d", branch, index)
	}
	priv, err := child.ECPrivKey()
	if err != nil {
		return fail("%v", err)
	}
	defer priv.Zero()
	wit, err := txscript.WitnessSignature(p.UnsignedTx, hashes, i, utxo.Value, utxo.PkScript, txscript.SigHashAll, priv, true)
	if err != nil {
		return fail("signing: %v", err)
	}
	// A stale partial signature of this key (say for another amount) would
	// be finalised in place of the new one.
	sigs := pin.PartialSigs[:0]
	for _, ps := range pin.PartialSigs {
		if !bytes.Equal(ps.PubKey, pubBytes) {
			sigs = append(sigs, ps)
		}
	}
	pin.PartialSigs = append(sigs, &psbt.PartialSig{PubKey: pubBytes, Signature: wit[0]})
	if _, err := psbt.MaybeFinalize(p, i); err != nil {
		return fail("finalising: %v", err)
	}
	return nil
}

package txbuild

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/wire"
)

// EncodePSBT returns the base64 serialization of p.
func EncodePSBT(p *psbt.Packet) (string, error) {
	if p == nil {
		return "", errf(ErrBadPSBT, "no PSBT")
	}
	return p.B64Encode()
}

// DecodePSBT parses a base64 PSBT.
func DecodePSBT(s string) (*psbt.Packet, error) {
	p, err := psbt.NewFromRawBytes(bytes.NewReader([]byte(s)), true)
	if err != nil {
		return nil, errf(ErrBadPSBT, "%v", err)
	}
	return p, nil
}

// newPacket wraps the unsigned tx in a PSBT with what signers need: the
// previous outputs, the scripts, and the key origins of inputs and change.
func newPacket(tx *wire.MsgTx, ins []Input, spends []spend, changeIndex int, change *ChangeSpec) (*psbt.Packet, error) {
	p, err := psbt.NewFromUnsignedTx(tx)
	if err != nil {
		return nil, err
	}
	for i := range ins {
		if err := fillInput(&p.Inputs[i], &ins[i], spends[i].kind); err != nil {
			return nil, err
		}
	}
	if change != nil {
		out := &p.Outputs[changeIndex]
		out.RedeemScript = nonEmpty(change.RedeemScript)
		out.WitnessScript = nonEmpty(change.WitnessScript)
		if len(change.InternalKey) > 0 {
			if out.TaprootInternalKey, err = internalKey(change.InternalKey); err != nil {
				return nil, err
			}
			out.TaprootBip32Derivation, err = tapDerivations(change.Derivations)
		} else {
			out.Bip32Derivation, err = derivations(change.Derivations)
		}
		if err != nil {
			return nil, err
		}
	}
	return p, nil
}

func fillInput(pi *psbt.PInput, in *Input, k kind) error {
	legacy := k == kindPKH || k == kindSHMulti
	// Taproot signatures commit to every input amount, so the previous
	// transaction adds nothing there.
	if len(in.PrevTx) > 0 && k != kindTR {
		prev, err := prevTx(in)
		switch {
		case err == errUnparsable && !legacy:
			// Only a courtesy for segwit signers; a transaction btcd cannot
			// parse (a Litecoin MWEB one) is left out rather than failing.
		case err == errUnparsable:
			return fmt.Errorf("input %v: %w", in.OutPoint, err)
		case err != nil:
			return err
		default:
			pi.NonWitnessUtxo = prev
		}
	}
	if !legacy {
		pi.WitnessUtxo = wire.NewTxOut(in.Value, in.PkScript)
	}
	pi.RedeemScript = nonEmpty(in.RedeemScript)
	pi.WitnessScript = nonEmpty(in.WitnessScript)
	var err error
	if k == kindTR {
		if pi.TaprootInternalKey, err = internalKey(in.InternalKey); err != nil {
			return err
		}
		pi.TaprootBip32Derivation, err = tapDerivations(in.Derivations)
	} else {
		pi.Bip32Derivation, err = derivations(in.Derivations)
	}
	return err
}

// nonEmpty maps empty to nil: the PSBT encoder writes any non-nil field,
// and an empty script field would be wrong.
func nonEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return slices.Clone(b)
}

var errUnparsable = errf(ErrInvalidRequest, "PrevTx is not a transaction")

// prevTx parses in.PrevTx and checks that it holds the output being spent,
// so a wrong previous transaction cannot mislead a signer about amounts.
func prevTx(in *Input) (*wire.MsgTx, error) {
	tx := wire.NewMsgTx(2)
	r := bytes.NewReader(in.PrevTx)
	if err := tx.Deserialize(r); err != nil || r.Len() != 0 {
		return nil, errUnparsable
	}
	if tx.TxHash() != in.OutPoint.Hash {
		return nil, errf(ErrInvalidRequest, "input %v: PrevTx has txid %v", in.OutPoint, tx.TxHash())
	}
	idx := in.OutPoint.Index
	if int64(idx) >= int64(len(tx.TxOut)) || tx.TxOut[idx].Value != in.Value || !bytes.Equal(tx.TxOut[idx].PkScript, in.PkScript) {
		return nil, errf(ErrInvalidRequest, "input %v: PrevTx output does not match value and script", in.OutPoint)
	}
	return tx, nil
}

func internalKey(key []byte) ([]byte, error) {
	if _, err := schnorr.ParsePubKey(key); err != nil {
		return nil, errf(ErrInvalidRequest, "taproot internal key: %v", err)
	}
	return slices.Clone(key), nil
}

// fingerprint converts to the uint32 btcd's psbt package serializes in
// little-endian order, so the bytes come out as given.
func fingerprint(fp [4]byte) uint32 { return binary.LittleEndian.Uint32(fp[:]) }

func derivations(ds []Derivation) ([]*psbt.Bip32Derivation, error) {
	out := make([]*psbt.Bip32Derivation, 0, len(ds))
	for _, d := range ds {
		if _, err := btcec.ParsePubKey(d.PubKey); err != nil {
			return nil, errf(ErrInvalidRequest, "derivation public key: %v", err)
		}
		out = append(out, &psbt.Bip32Derivation{
			PubKey:               slices.Clone(d.PubKey),
			MasterKeyFingerprint: fingerprint(d.Fingerprint),
			Bip32Path:            slices.Clone(d.Path),
		})
	}
	slices.SortFunc(out, func(a, b *psbt.Bip32Derivation) int { return bytes.Compare(a.PubKey, b.PubKey) })
	for i := 1; i < len(out); i++ {
		if bytes.Equal(out[i-1].PubKey, out[i].PubKey) {
			return nil, errf(ErrInvalidRequest, "derivation for key %x given twice", out[i].PubKey)
		}
	}
	return out, nil
}

// tapDerivations returns key-path taproot derivations: x-only keys, no leaf
// hashes.
func tapDerivations(ds []Derivation) ([]*psbt.TaprootBip32Derivation, error) {
	out := make([]*psbt.TaprootBip32Derivation, 0, len(ds))
	for _, d := range ds {
		key := d.PubKey
		if len(key) == 33 {
			key = key[1:]
		}
		if _, err := schnorr.ParsePubKey(key); err != nil {
			return nil, errf(ErrInvalidRequest, "taproot derivation key: %v", err)
		}
		out = append(out, &psbt.TaprootBip32Derivation{
			XOnlyPubKey:          slices.Clone(key),
			LeafHashes:           [][]byte{},
			MasterKeyFingerprint: fingerprint(d.Fingerprint),
			Bip32Path:            slices.Clone(d.Path),
		})
	}
	slices.SortFunc(out, func(a, b *psbt.TaprootBip32Derivation) int { return bytes.Compare(a.XOnlyPubKey, b.XOnlyPubKey) })
	for i := 1; i < len(out); i++ {
		if bytes.Equal(out[i-1].XOnlyPubKey, out[i].XOnlyPubKey) {
			return nil, errf(ErrInvalidRequest, "derivation for key %x given twice", out[i].XOnlyPubKey)
		}
	}
	return out, nil
}

package txbuild

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// prevout is what the proposal says an input spends.
type prevout struct {
	out   *wire.TxOut
	pin   *psbt.PInput
	spend spend
}

// Check verifies signed against proposal, the unsigned PSBT that Build
// returned (or DecodePSBT of its stored base64), and returns the network
// transaction ready to broadcast.
//
// signed may be a PSBT (binary, base64 or hex) or a raw transaction (binary
// or hex). It must spend the same set of outpoints, in any order, and pay
// the same multiset of outputs (script and value). A PSBT is finalised
// first, using the proposal's own record of the previous outputs and scripts
// rather than the signer's. Every input's scripts are then run against the
// proposal's previous outputs, and every signature must use SIGHASH_ALL (or
// the taproot default), so nobody can alter the transaction afterwards.
func Check(proposal *psbt.Packet, signed []byte) (tx *wire.MsgTx, err error) {
	// The PSBT and script code is third-party and sees untrusted input;
	// whatever it does, the caller gets an error, not a crash.
	defer func() {
		if r := recover(); r != nil {
			tx, err = nil, errf(ErrBadPSBT, "rejected malformed data: %v", r)
		}
	}()

	prev, err := proposalPrevouts(proposal)
	if err != nil {
		return nil, err
	}
	pkt, raw, err := parseSigned(signed)
	if err != nil {
		return nil, err
	}
	if pkt != nil {
		if err := match(proposal.UnsignedTx, pkt.UnsignedTx); err != nil {
			return nil, err
		}
		if tx, err = finalize(pkt, prev); err != nil {
			return nil, err
		}
	} else {
		if err := match(proposal.UnsignedTx, raw); err != nil {
			return nil, err
		}
		for i, in := range raw.TxIn {
			if len(in.SignatureScript) == 0 && len(in.Witness) == 0 {
				return nil, errf(ErrNotSigned, "input %d has no signature", i)
			}
		}
		tx = raw
	}
	if err := verify(tx, prev); err != nil {
		return nil, err
	}
	return tx, nil
}

// proposalPrevouts indexes the proposal's inputs by outpoint.
func proposalPrevouts(p *psbt.Packet) (map[wire.OutPoint]*prevout, error) {
	if p == nil || p.UnsignedTx == nil || len(p.Inputs) != len(p.UnsignedTx.TxIn) {
		return nil, errf(ErrInvalidRequest, "proposal is not a PSBT built by txbuild")
	}
	m := make(map[wire.OutPoint]*prevout, len(p.Inputs))
	for i, in := range p.UnsignedTx.TxIn {
		pin := &p.Inputs[i]
		op := in.PreviousOutPoint
		out := pin.WitnessUtxo
		if out == nil && pin.NonWitnessUtxo != nil && pin.NonWitnessUtxo.TxHash() == op.Hash &&
			int64(op.Index) < int64(len(pin.NonWitnessUtxo.TxOut)) {
			out = pin.NonWitnessUtxo.TxOut[op.Index]
		}
		if out == nil {
			return nil, errf(ErrInvalidRequest, "proposal input %d has no previous output", i)
		}
		s, err := classify(out.PkScript, pin.RedeemScript, pin.WitnessScript, pin.TaprootInternalKey)
		if err != nil {
			return nil, fmt.Errorf("proposal input %d: %w", i, err)
		}
		if _, dup := m[op]; dup {
			return nil, errf(ErrInvalidRequest, "proposal spends %v twice", op)
		}
		m[op] = &prevout{out: out, pin: pin, spend: s}
	}
	return m, nil
}

// parseSigned reads a PSBT or a raw transaction, binary or text.
func parseSigned(b []byte) (*psbt.Packet, *wire.MsgTx, error) {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && len(b)%2 == 0 {
		if d, err := hex.DecodeString(string(b)); err == nil {
			b = d
		}
	}
	switch {
	case bytes.HasPrefix(b, []byte("psbt\xff")):
		p, err := psbt.NewFromRawBytes(bytes.NewReader(b), false)
		if err != nil {
			return nil, nil, errf(ErrBadPSBT, "%v", err)
		}
		return p, nil, nil
	case bytes.HasPrefix(b, []byte("cHNidP")): // base64 of the magic
		p, err := psbt.NewFromRawBytes(bytes.NewReader(b), true)
		if err != nil {
			return nil, nil, errf(ErrBadPSBT, "%v", err)
		}
		return p, nil, nil
	}
	tx := wire.NewMsgTx(2)
	r := bytes.NewReader(b)
	if err := tx.Deserialize(r); err != nil || r.Len() != 0 || len(tx.TxIn) == 0 {
		return nil, nil, errf(ErrBadPSBT, "neither a PSBT nor a transaction")
	}
	return nil, tx, nil
}

// match requires got to spend the outpoints of want (in any order) and pay
// the same outputs (in any order).
func match(want, got *wire.MsgTx) error {
	if len(got.TxIn) != len(want.TxIn) {
		return errf(ErrMismatch, "spends %d inputs, the proposal %d", len(got.TxIn), len(want.TxIn))
	}
	ins := make(map[wire.OutPoint]bool, len(want.TxIn))
	for _, in := range want.TxIn {
		ins[in.PreviousOutPoint] = true
	}
	for _, in := range got.TxIn {
		if !ins[in.PreviousOutPoint] {
			return errf(ErrMismatch, "spends %v, which the proposal does not (or twice)", in.PreviousOutPoint)
		}
		delete(ins, in.PreviousOutPoint)
	}

	if len(got.TxOut) != len(want.TxOut) {
		return errf(ErrMismatch, "has %d outputs, the proposal %d", len(got.TxOut), len(want.TxOut))
	}
	type key struct {
		script string
		value  int64
	}
	outs := make(map[key]int, len(want.TxOut))
	for _, o := range want.TxOut {
		outs[key{string(o.PkScript), o.Value}]++
	}
	for _, o := range got.TxOut {
		k := key{string(o.PkScript), o.Value}
		if outs[k] == 0 {
			return errf(ErrMismatch, "pays %d sat to script %x, which the proposal does not", o.Value, o.PkScript)
		}
		outs[k]--
	}
	return nil
}

// finalize completes every input of pkt and extracts the transaction.
func finalize(pkt *psbt.Packet, prev map[wire.OutPoint]*prevout) (*wire.MsgTx, error) {
	for i, in := range pkt.UnsignedTx.TxIn {
		pv := prev[in.PreviousOutPoint] // match made sure it exists
		pin := &pkt.Inputs[i]
		// Trust only our own record of what is spent.
		pin.WitnessUtxo, pin.NonWitnessUtxo = pv.pin.WitnessUtxo, pv.pin.NonWitnessUtxo
		pin.RedeemScript, pin.WitnessScript = pv.pin.RedeemScript, pv.pin.WitnessScript
		// Finalising then refuses partial signatures that are not
		// SIGHASH_ALL.
		pin.SighashType = 0
		trimMultisig(pin, pv.spend)
		if _, err := psbt.MaybeFinalize(pkt, i); err != nil {
			if err == psbt.ErrInvalidSigHashFlags {
				return nil, errf(ErrBadSignature, "input %d: signature is not SIGHASH_ALL", i)
			}
			return nil, errf(ErrNotSigned, "input %d: %v", i, err)
		}
	}
	tx := pkt.UnsignedTx.Copy()
	for i, pin := range pkt.Inputs {
		tx.TxIn[i].SignatureScript = pin.FinalScriptSig
		if pin.FinalScriptWitness != nil {
			w, err := parseWitness(pin.FinalScriptWitness)
			if err != nil {
				return nil, errf(ErrBadPSBT, "input %d: final witness: %v", i, err)
			}
			tx.TxIn[i].Witness = w
		}
	}
	return tx, nil
}

// trimMultisig keeps the first m signatures, in script order, when a signer
// supplied more than an m-of-n script takes; the finaliser wants exactly m.
func trimMultisig(pin *psbt.PInput, s spend) {
	script := pin.WitnessScript
	if s.kind == kindSHMulti {
		script = pin.RedeemScript
	}
	if (s.kind != kindWSH && s.kind != kindSHWSH && s.kind != kindSHMulti) || len(pin.PartialSigs) <= s.sigs {
		return
	}
	keys, err := txscript.PushedData(script)
	if err != nil {
		return
	}
	var kept []*psbt.PartialSig
	for _, k := range keys {
		for _, ps := range pin.PartialSigs {
			if len(kept) < s.sigs && bytes.Equal(ps.PubKey, k) {
				kept = append(kept, ps)
			}
		}
	}
	pin.PartialSigs = kept
}

// parseWitness decodes a serialized witness stack without trusting its
// counts: each item takes at least a byte, which bounds allocation.
func parseWitness(b []byte) (wire.TxWitness, error) {
	r := bytes.NewReader(b)
	n, err := wire.ReadVarInt(r, 0)
	if err != nil {
		return nil, err
	}
	if n > uint64(r.Len()) {
		return nil, fmt.Errorf("%d items in %d bytes", n, r.Len())
	}
	w := make(wire.TxWitness, n)
	for i := range w {
		if w[i], err = wire.ReadVarBytes(r, 0, uint32(len(b)), "witness item"); err != nil {
			return nil, err
		}
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%d trailing bytes", r.Len())
	}
	return w, nil
}

// verify runs every input's scripts against the proposal's previous outputs
// and checks that all signatures commit to the whole transaction.
func verify(tx *wire.MsgTx, prev map[wire.OutPoint]*prevout) error {
	outs := make(map[wire.OutPoint]*wire.TxOut, len(prev))
	for op, pv := range prev {
		outs[op] = pv.out
	}
	fetcher := txscript.NewMultiPrevOutFetcher(outs)
	hashes := txscript.NewTxSigHashes(tx, fetcher)
	for i, in := range tx.TxIn {
		pv := prev[in.PreviousOutPoint]
		vm, err := txscript.NewEngine(pv.out.PkScript, tx, i, txscript.StandardVerifyFlags, nil, hashes, pv.out.Value, fetcher)
		if err == nil {
			err = vm.Execute()
		}
		if err != nil {
			return errf(ErrBadSignature, "input %d: %v", i, err)
		}
		if err := sighashAll(in, pv.spend); err != nil {
			return errf(ErrBadSignature, "input %d: %v", i, err)
		}
	}
	return nil
}

// sighashAll checks the sighash type of each signature of a verified input.
// Its shape is known from the script type, since the scripts just passed.
func sighashAll(in *wire.TxIn, s spend) error {
	var sigs [][]byte
	switch s.kind {
	case kindTR:
		// Key path only: no script tree, and a larger witness would also
		// break the fee estimate.
		if len(in.Witness) != 1 {
			return fmt.Errorf("taproot input is not a key-path spend")
		}
		sig := in.Witness[0]
		if len(sig) == 64 || (len(sig) == 65 && sig[64] == byte(txscript.SigHashAll)) {
			return nil
		}
		return fmt.Errorf("taproot signature is not SIGHASH_DEFAULT or SIGHASH_ALL")
	case kindPKH, kindSHMulti:
		pushes, err := txscript.PushedData(in.SignatureScript)
		if err != nil || len(pushes) < 2 {
			return fmt.Errorf("unexpected scriptSig")
		}
		sigs = pushes[:1]
		if s.kind == kindSHMulti {
			sigs = pushes[1 : len(pushes)-1]
		}
	case kindWPKH, kindSHWPKH:
		sigs = in.Witness[:min(1, len(in.Witness))]
	case kindWSH, kindSHWSH:
		if len(in.Witness) < 2 {
			return fmt.Errorf("unexpected witness")
		}
		sigs = in.Witness[1 : len(in.Witness)-1]
	}
	if len(sigs) == 0 {
		return fmt.Errorf("no signature")
	}
	if i := slices.IndexFunc(sigs, func(sig []byte) bool {
		return len(sig) == 0 || sig[len(sig)-1] != byte(txscript.SigHashAll)
	}); i >= 0 {
		return fmt.Errorf("signature %d is not SIGHASH_ALL", i)
	}
	return nil
}

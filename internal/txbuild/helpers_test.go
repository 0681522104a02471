package txbuild_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/mempool"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/txbuild"
)

// This file is an independent signer and verifier: it builds scripts and
// signs PSBTs with btcd only, never with txbuild internals.

const hardened = 1 << 31

var testFingerprint = [4]byte{0xde, 0xad, 0xbe, 0xef}

type testKey struct {
	priv *btcec.PrivateKey
	pub  []byte // compressed
	path []uint32
}

func newKey(n uint32) *testKey {
	seed := sha256.Sum256(fmt.Appendf(nil, "coffer-txbuild-test-key-%d", n))
	priv, pub := btcec.PrivKeyFromBytes(seed[:])
	return &testKey{priv: priv, pub: pub.SerializeCompressed(), path: []uint32{84 | hardened, 1 | hardened, hardened, 0, n}}
}

// owner is one wallet output script with the keys that spend it.
type owner struct {
	kind                            string
	keys                            []*testKey
	pkScript, redeem, ws, internKey []byte
}

func mustScript(t testing.TB, b *txscript.ScriptBuilder) []byte {
	t.Helper()
	s, err := b.Script()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func p2wpkh(t testing.TB, pub []byte) []byte {
	return mustScript(t, txscript.NewScriptBuilder().AddOp(txscript.OP_0).AddData(btcutil.Hash160(pub)))
}

func p2sh(t testing.TB, redeem []byte) []byte {
	return mustScript(t, txscript.NewScriptBuilder().AddOp(txscript.OP_HASH160).AddData(btcutil.Hash160(redeem)).AddOp(txscript.OP_EQUAL))
}

func newOwner(t testing.TB, kind string, n uint32) *owner {
	t.Helper()
	o := &owner{kind: kind, keys: []*testKey{newKey(n)}}
	pub := o.keys[0].pub
	switch kind {
	case "pkh":
		o.pkScript = mustScript(t, txscript.NewScriptBuilder().AddOp(txscript.OP_DUP).AddOp(txscript.OP_HASH160).
			AddData(btcutil.Hash160(pub)).AddOp(txscript.OP_EQUALVERIFY).AddOp(txscript.OP_CHECKSIG))
	case "wpkh":
		o.pkScript = p2wpkh(t, pub)
	case "sh-wpkh":
		o.redeem = p2wpkh(t, pub)
		o.pkScript = p2sh(t, o.redeem)
	case "tr":
		pk, err := btcec.ParsePubKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		o.internKey = schnorr.SerializePubKey(pk)
		out := txscript.ComputeTaprootKeyNoScript(pk)
		o.pkScript = mustScript(t, txscript.NewScriptBuilder().AddOp(txscript.OP_1).AddData(schnorr.SerializePubKey(out)))
	case "wsh", "sh-wsh", "sh-multi":
		// 2-of-3 sortedmulti.
		o.keys = append(o.keys, newKey(n+10_000), newKey(n+20_000))
		pubs := [][]byte{o.keys[0].pub, o.keys[1].pub, o.keys[2].pub}
		slices.SortFunc(pubs, bytes.Compare)
		b := txscript.NewScriptBuilder().AddOp(txscript.OP_2)
		for _, p := range pubs {
			b.AddData(p)
		}
		ms := mustScript(t, b.AddOp(txscript.OP_3).AddOp(txscript.OP_CHECKMULTISIG))
		if kind == "sh-multi" {
			o.redeem = ms
			o.pkScript = p2sh(t, ms)
			break
		}
		o.ws = ms
		h := sha256.Sum256(ms)
		wsh := mustScript(t, txscript.NewScriptBuilder().AddOp(txscript.OP_0).AddData(h[:]))
		if kind == "sh-wsh" {
			o.redeem = wsh
			o.pkScript = p2sh(t, wsh)
		} else {
			o.pkScript = wsh
		}
	default:
		t.Fatalf("unknown kind %q", kind)
	}
	return o
}

func (o *owner) derivations() []txbuild.Derivation {
	var ds []txbuild.Derivation
	for _, k := range o.keys {
		ds = append(ds, txbuild.Derivation{Fingerprint: testFingerprint, Path: k.path, PubKey: k.pub})
	}
	return ds
}

func (o *owner) change() txbuild.ChangeSpec {
	return txbuild.ChangeSpec{Script: o.pkScript, Derivations: o.derivations(), RedeemScript: o.redeem, WitnessScript: o.ws, InternalKey: o.internKey}
}

// fund makes a previous transaction paying value to o at output 1 (output 0
// goes elsewhere) and returns the candidate spending it.
func (o *owner) fund(t testing.TB, value int64, n uint32) txbuild.Input {
	t.Helper()
	prev := wire.NewMsgTx(2)
	prev.AddTxIn(&wire.TxIn{PreviousOutPoint: wire.OutPoint{Hash: chainhash.HashH(binary.BigEndian.AppendUint32(nil, n)), Index: 0}, SignatureScript: []byte{txscript.OP_TRUE}})
	prev.AddTxOut(wire.NewTxOut(1234, []byte{txscript.OP_TRUE}))
	prev.AddTxOut(wire.NewTxOut(value, o.pkScript))
	var buf bytes.Buffer
	if err := prev.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	return txbuild.Input{
		OutPoint:      wire.OutPoint{Hash: prev.TxHash(), Index: 1},
		Value:         value,
		PkScript:      o.pkScript,
		RedeemScript:  o.redeem,
		WitnessScript: o.ws,
		InternalKey:   o.internKey,
		PrevTx:        buf.Bytes(),
		Derivations:   o.derivations(),
		Confirmations: 6,
	}
}

// keyring finds private keys by compressed or x-only public key.
type keyring map[string]*btcec.PrivateKey

func (r keyring) add(owners ...*owner) keyring {
	for _, o := range owners {
		for _, k := range o.keys {
			r[hex.EncodeToString(k.pub)] = k.priv
			r[hex.EncodeToString(k.pub[1:])] = k.priv
		}
	}
	return r
}

type signOpts struct {
	maxSigs     int                  // per input; 0 means as many as the script needs (2 for multisig)
	wrongAmount bool                 // sign for a different amount, making the signature invalid
	hashType    txscript.SigHashType // 0 means SIGHASH_ALL (SIGHASH_DEFAULT for taproot)
}

// prevOuts reads the previous outputs from a PSBT, as a signer does.
func prevOuts(t testing.TB, p *psbt.Packet) map[wire.OutPoint]*wire.TxOut {
	t.Helper()
	m := map[wire.OutPoint]*wire.TxOut{}
	for i, in := range p.Inputs {
		op := p.UnsignedTx.TxIn[i].PreviousOutPoint
		switch {
		case in.WitnessUtxo != nil:
			m[op] = in.WitnessUtxo
		case in.NonWitnessUtxo != nil:
			if in.NonWitnessUtxo.TxHash() != op.Hash {
				t.Fatalf("input %d: non-witness utxo has the wrong txid", i)
			}
			m[op] = in.NonWitnessUtxo.TxOut[op.Index]
		default:
			t.Fatalf("input %d has no utxo", i)
		}
	}
	return m
}

// signPSBT signs every input it has keys for, finding them through the
// PSBT's derivation fields, and returns the base64 PSBT.
func signPSBT(t testing.TB, b64 string, ring keyring, opts signOpts) string {
	t.Helper()
	p, err := psbt.NewFromRawBytes(strings.NewReader(b64), true)
	if err != nil {
		t.Fatal(err)
	}
	tx := p.UnsignedTx
	outs := prevOuts(t, p)
	hashes := txscript.NewTxSigHashes(tx, txscript.NewMultiPrevOutFetcher(outs))
	u, err := psbt.NewUpdater(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := range p.Inputs {
		in := &p.Inputs[i]
		utxo := outs[tx.TxIn[i].PreviousOutPoint]
		amt := utxo.Value
		if opts.wrongAmount {
			amt++
		}
		if len(in.TaprootInternalKey) > 0 {
			for _, d := range in.TaprootBip32Derivation {
				key := ring[hex.EncodeToString(d.XOnlyPubKey)]
				if key == nil {
					continue
				}
				sigHashes := hashes
				if opts.wrongAmount {
					wrong := *utxo
					wrong.Value = amt
					m := map[wire.OutPoint]*wire.TxOut{}
					for op, o := range outs {
						m[op] = o
					}
					m[tx.TxIn[i].PreviousOutPoint] = &wrong
					sigHashes = txscript.NewTxSigHashes(tx, txscript.NewMultiPrevOutFetcher(m))
				}
				sig, err := txscript.RawTxInTaprootSignature(tx, sigHashes, i, amt, utxo.PkScript, nil, opts.hashType, key)
				if err != nil {
					t.Fatal(err)
				}
				in.TaprootKeySpendSig = sig
			}
			continue
		}
		hashType := opts.hashType
		if hashType == 0 {
			hashType = txscript.SigHashAll
		}
		n := 0
		for _, d := range in.Bip32Derivation {
			key := ring[hex.EncodeToString(d.PubKey)]
			if key == nil || (opts.maxSigs > 0 && n == opts.maxSigs) || (opts.maxSigs == 0 && n == 2) {
				continue
			}
			var sig []byte
			switch {
			case in.WitnessUtxo == nil: // legacy
				script := utxo.PkScript
				if in.RedeemScript != nil {
					script = in.RedeemScript
				}
				sig, err = txscript.RawTxInSignature(tx, i, script, hashType, key)
			default:
				script := utxo.PkScript
				switch {
				case in.WitnessScript != nil:
					script = in.WitnessScript
				case in.RedeemScript != nil:
					script = in.RedeemScript
				}
				sig, err = txscript.RawTxInWitnessSignature(tx, hashes, i, amt, script, hashType, key)
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := u.Sign(i, sig, d.PubKey, nil, nil); err != nil {
				t.Fatalf("input %d: sign: %v", i, err)
			}
			n++
		}
	}
	out, err := p.B64Encode()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// verifyTx runs every input through the script engine with the given
// previous outputs.
func verifyTx(t testing.TB, tx *wire.MsgTx, outs map[wire.OutPoint]*wire.TxOut) {
	t.Helper()
	fetcher := txscript.NewMultiPrevOutFetcher(outs)
	hashes := txscript.NewTxSigHashes(tx, fetcher)
	for i, in := range tx.TxIn {
		prev := outs[in.PreviousOutPoint]
		if prev == nil {
			t.Fatalf("input %d spends unknown %v", i, in.PreviousOutPoint)
		}
		vm, err := txscript.NewEngine(prev.PkScript, tx, i, txscript.StandardVerifyFlags, nil, hashes, prev.Value, fetcher)
		if err != nil {
			t.Fatalf("input %d: %v", i, err)
		}
		if err := vm.Execute(); err != nil {
			t.Fatalf("input %d: script failed: %v", i, err)
		}
	}
}

func realVSize(tx *wire.MsgTx) int64 { return mempool.GetTxVirtualSize(btcutil.NewTx(tx)) }

func resultPrevOuts(r *txbuild.Result) map[wire.OutPoint]*wire.TxOut {
	m := map[wire.OutPoint]*wire.TxOut{}
	for _, in := range r.Inputs {
		m[in.OutPoint] = wire.NewTxOut(in.Value, in.PkScript)
	}
	return m
}

func sumInputs(ins []txbuild.Input) int64 {
	var s int64
	for _, in := range ins {
		s += in.Value
	}
	return s
}

func sumOutputs(outs []txbuild.Output) int64 {
	var s int64
	for _, o := range outs {
		s += o.Value
	}
	return s
}

// checkInvariants asserts what every result must satisfy.
func checkInvariants(t testing.TB, req txbuild.Request, r *txbuild.Result) {
	t.Helper()
	rate := req.FeeRate * 1000
	if req.FeeRateKvB != 0 {
		rate = req.FeeRateKvB
	}
	if got := sumInputs(r.Inputs) - sumOutputs(r.Outputs); got != r.Fee {
		t.Fatalf("fee %d, but inputs minus outputs is %d", r.Fee, got)
	}
	if need := (r.VSize*rate + 999) / 1000; r.Fee < need {
		t.Fatalf("fee %d below %d sat/kvB x %d vB = %d", r.Fee, rate, r.VSize, need)
	}
	tx := r.PSBT.UnsignedTx
	if tx.Version != 2 || tx.LockTime != req.LockTime || len(tx.TxIn) != len(r.Inputs) || len(tx.TxOut) != len(r.Outputs) {
		t.Fatalf("unsigned tx does not match result: version %d locktime %d, %d/%d inputs, %d/%d outputs",
			tx.Version, tx.LockTime, len(tx.TxIn), len(r.Inputs), len(tx.TxOut), len(r.Outputs))
	}
	for i, in := range tx.TxIn {
		if in.PreviousOutPoint != r.Inputs[i].OutPoint {
			t.Fatalf("input %d order differs", i)
		}
		want := uint32(0xfffffffd)
		if req.NoRBF {
			want = 0xfffffffe
		}
		if in.Sequence != want {
			t.Fatalf("input %d sequence %#x, want %#x", i, in.Sequence, want)
		}
	}
	for i, o := range tx.TxOut {
		if o.Value != r.Outputs[i].Value || !bytes.Equal(o.PkScript, r.Outputs[i].Script) {
			t.Fatalf("output %d differs", i)
		}
		if o.Value < txbuild.DustThreshold(o.PkScript, req.Params) {
			t.Fatalf("output %d of %d is dust", i, o.Value)
		}
	}
	if r.ChangeIndex >= 0 && !bytes.Equal(r.Outputs[r.ChangeIndex].Script, req.Change.Script) {
		t.Fatalf("change index %d does not point at the change script", r.ChangeIndex)
	}
}

func btcRegtest(t testing.TB) *chain.Params {
	t.Helper()
	p, err := chain.Lookup(chain.BTC, chain.Regtest)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func seeded(n uint64) *rand.Rand { return rand.New(rand.NewPCG(n, n^0x5eed)) }

package txbuild_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/coffer/coffer/internal/txbuild"
)

// proposal builds a two-input payment with change from owners of kind.
func proposal(t testing.TB, kind string) (*txbuild.Result, keyring) {
	t.Helper()
	o := newOwner(t, kind, 1)
	r, err := txbuild.Build(txbuild.Request{
		Outputs:    []txbuild.Output{{Script: newOwner(t, "tr", 9).pkScript, Value: 120_000}},
		Candidates: []txbuild.Input{o.fund(t, 80_000, 1), o.fund(t, 70_000, 2)},
		FeeRate:    2,
		Change:     newOwner(t, "wpkh", 2).change(),
		Params:     btcRegtest(t),
		Rand:       seeded(1),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Inputs) != 2 || r.ChangeIndex < 0 {
		t.Fatalf("%d inputs, change %d", len(r.Inputs), r.ChangeIndex)
	}
	return r, keyring{}.add(o)
}

func encodeTx(t *testing.T, tx *wire.MsgTx) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := tx.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// signedTx returns the proposal signed and finalised by Check.
func signedTx(t *testing.T, r *txbuild.Result, ring keyring) *wire.MsgTx {
	t.Helper()
	b64, _ := r.Base64()
	tx, err := r.Check([]byte(signPSBT(t, b64, ring, signOpts{})))
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

func TestCheckAcceptsEncodings(t *testing.T) {
	r, ring := proposal(t, "wpkh")
	b64, _ := r.Base64()
	signed := signPSBT(t, b64, ring, signOpts{})
	rawPSBT, _ := base64.StdEncoding.DecodeString(signed)
	tx := signedTx(t, r, ring)
	rawTx := encodeTx(t, tx)

	// The stored proposal, decoded again, serves as well as the Result.
	stored, err := txbuild.DecodePSBT(b64)
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string][]byte{
		"base64 psbt": []byte(signed + "\n"),
		"binary psbt": rawPSBT,
		"hex psbt":    []byte(hex.EncodeToString(rawPSBT)),
		"raw tx":      rawTx,
		"hex raw tx":  []byte(hex.EncodeToString(rawTx)),
	} {
		got, err := txbuild.Check(stored, in)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		verifyTx(t, got, resultPrevOuts(r))
	}
}

// A signer may reorder inputs and outputs before signing; the same set is
// still the same payment.
func TestCheckAcceptsReorderedPSBT(t *testing.T) {
	r, ring := proposal(t, "tr")
	b64, _ := r.Base64()
	p, err := psbt.NewFromRawBytes(strings.NewReader(b64), true)
	if err != nil {
		t.Fatal(err)
	}
	tx := p.UnsignedTx
	tx.TxIn[0], tx.TxIn[1] = tx.TxIn[1], tx.TxIn[0]
	p.Inputs[0], p.Inputs[1] = p.Inputs[1], p.Inputs[0]
	tx.TxOut[0], tx.TxOut[1] = tx.TxOut[1], tx.TxOut[0]
	p.Outputs[0], p.Outputs[1] = p.Outputs[1], p.Outputs[0]
	reordered, _ := p.B64Encode()
	got, err := r.Check([]byte(signPSBT(t, reordered, ring, signOpts{})))
	if err != nil {
		t.Fatal(err)
	}
	if got.TxIn[0].PreviousOutPoint != r.Inputs[1].OutPoint {
		t.Fatal("Check did not keep the signer's order")
	}
	verifyTx(t, got, resultPrevOuts(r))
}

func TestCheckRejects(t *testing.T) {
	r, ring := proposal(t, "wpkh")
	good := signedTx(t, r, ring)
	extra := newOwner(t, "wpkh", 77).fund(t, 5000, 77)

	cases := map[string]struct {
		edit func(tx *wire.MsgTx)
		want error
	}{
		"extra input": {func(tx *wire.MsgTx) {
			tx.AddTxIn(&wire.TxIn{PreviousOutPoint: extra.OutPoint, Witness: wire.TxWitness{{1}}})
		}, txbuild.ErrMismatch},
		"input swapped":  {func(tx *wire.MsgTx) { tx.TxIn[0].PreviousOutPoint = extra.OutPoint }, txbuild.ErrMismatch},
		"input twice":    {func(tx *wire.MsgTx) { tx.TxIn[0].PreviousOutPoint = tx.TxIn[1].PreviousOutPoint }, txbuild.ErrMismatch},
		"dropped output": {func(tx *wire.MsgTx) { tx.TxOut = tx.TxOut[:1] }, txbuild.ErrMismatch},
		"extra output": {func(tx *wire.MsgTx) {
			tx.AddTxOut(wire.NewTxOut(1000, tx.TxOut[0].PkScript))
		}, txbuild.ErrMismatch},
		"changed amount":    {func(tx *wire.MsgTx) { tx.TxOut[0].Value-- }, txbuild.ErrMismatch},
		"changed script":    {func(tx *wire.MsgTx) { tx.TxOut[1].PkScript = extra.PkScript }, txbuild.ErrMismatch},
		"missing signature": {func(tx *wire.MsgTx) { tx.TxIn[1].Witness = nil }, txbuild.ErrNotSigned},
		"outputs reordered": {func(tx *wire.MsgTx) {
			tx.TxOut[0], tx.TxOut[1] = tx.TxOut[1], tx.TxOut[0]
		}, txbuild.ErrBadSignature}, // same outputs, but the signatures no longer match
		"witness swapped": {func(tx *wire.MsgTx) {
			tx.TxIn[0].Witness, tx.TxIn[1].Witness = tx.TxIn[1].Witness, tx.TxIn[0].Witness
		}, txbuild.ErrBadSignature},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			tx := good.Copy()
			c.edit(tx)
			if _, err := r.Check(encodeTx(t, tx)); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestCheckRejectsPSBTs(t *testing.T) {
	r, ring := proposal(t, "wpkh")
	b64, _ := r.Base64()

	t.Run("unsigned", func(t *testing.T) {
		if _, err := r.Check([]byte(b64)); !errors.Is(err, txbuild.ErrNotSigned) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		for _, in := range []string{"", "hello", "cHNidP8BAHECAAAAAQ==", "psbt\xff\x00", "00", strings.Repeat("ab", 40)} {
			if _, err := r.Check([]byte(in)); !errors.Is(err, txbuild.ErrBadPSBT) {
				t.Fatalf("%q: got %v", in, err)
			}
		}
		raw, _ := base64.StdEncoding.DecodeString(b64)
		if _, err := r.Check(raw[:len(raw)-10]); !errors.Is(err, txbuild.ErrBadPSBT) {
			t.Fatalf("truncated: got %v", err)
		}
	})
	t.Run("changed amount", func(t *testing.T) {
		p, _ := psbt.NewFromRawBytes(strings.NewReader(signPSBT(t, b64, ring, signOpts{})), true)
		p.UnsignedTx.TxOut[0].Value += 1000
		s, _ := p.B64Encode()
		if _, err := r.Check([]byte(s)); !errors.Is(err, txbuild.ErrMismatch) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("wrong signature", func(t *testing.T) {
		for _, kind := range []string{"wpkh", "tr", "wsh"} {
			r, ring := proposal(t, kind)
			b64, _ := r.Base64()
			if _, err := r.Check([]byte(signPSBT(t, b64, ring, signOpts{wrongAmount: true}))); !errors.Is(err, txbuild.ErrBadSignature) {
				t.Fatalf("%s: got %v", kind, err)
			}
		}
	})
	t.Run("signer lies about the amount", func(t *testing.T) {
		// A signer that signs for its own idea of the input amount is
		// caught, because Check uses the proposal's previous outputs.
		p, _ := psbt.NewFromRawBytes(strings.NewReader(b64), true)
		p.Inputs[0].WitnessUtxo.Value++
		p.Inputs[0].NonWitnessUtxo = nil
		lied, _ := p.B64Encode()
		if _, err := r.Check([]byte(signPSBT(t, lied, ring, signOpts{}))); !errors.Is(err, txbuild.ErrBadSignature) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("sighash none", func(t *testing.T) {
		signed := signPSBT(t, b64, ring, signOpts{hashType: txscript.SigHashNone})
		if _, err := r.Check([]byte(signed)); !errors.Is(err, txbuild.ErrBadSignature) {
			t.Fatalf("psbt: got %v", err)
		}
		// The same signatures in a raw transaction pass the script
		// engine, so only the sighash check stops them.
		p, _ := psbt.NewFromRawBytes(strings.NewReader(signed), true)
		tx := p.UnsignedTx.Copy()
		for i, in := range p.Inputs {
			tx.TxIn[i].Witness = wire.TxWitness{in.PartialSigs[0].Signature, in.PartialSigs[0].PubKey}
		}
		verifyTx(t, tx, resultPrevOuts(r))
		if _, err := r.Check(encodeTx(t, tx)); !errors.Is(err, txbuild.ErrBadSignature) {
			t.Fatalf("raw: got %v", err)
		}
	})
	t.Run("taproot sighash single", func(t *testing.T) {
		r, ring := proposal(t, "tr")
		b64, _ := r.Base64()
		if _, err := r.Check([]byte(signPSBT(t, b64, ring, signOpts{hashType: txscript.SigHashSingle}))); !errors.Is(err, txbuild.ErrBadSignature) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("nil proposal", func(t *testing.T) {
		if _, err := txbuild.Check(nil, []byte(b64)); !errors.Is(err, txbuild.ErrInvalidRequest) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestCheckMultisig(t *testing.T) {
	for _, kind := range []string{"wsh", "sh-wsh", "sh-multi"} {
		t.Run(kind, func(t *testing.T) {
			r, ring := proposal(t, kind)
			b64, _ := r.Base64()
			// One of two signatures is not enough.
			if _, err := r.Check([]byte(signPSBT(t, b64, ring, signOpts{maxSigs: 1}))); !errors.Is(err, txbuild.ErrNotSigned) {
				t.Fatalf("one signature: got %v", err)
			}
			// All three signers signed: Check keeps two.
			tx, err := r.Check([]byte(signPSBT(t, b64, ring, signOpts{maxSigs: 3})))
			if err != nil {
				t.Fatalf("three signatures: %v", err)
			}
			verifyTx(t, tx, resultPrevOuts(r))
		})
	}
}

package txbuild_test

import (
	"bytes"
	"testing"

	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/wire"

	"github.com/coffer/coffer/internal/txbuild"
)

var allKinds = []string{"wpkh", "sh-wpkh", "pkh", "tr", "wsh", "sh-wsh", "sh-multi"}

// signAndCheck signs r's PSBT with an independent signer, runs Check, and
// verifies the returned transaction and the size estimate.
func signAndCheck(t *testing.T, r *txbuild.Result, ring keyring) *wire.MsgTx {
	t.Helper()
	b64, err := r.Base64()
	if err != nil {
		t.Fatal(err)
	}
	signed := signPSBT(t, b64, ring, signOpts{})
	tx, err := r.Check([]byte(signed))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	verifyTx(t, tx, resultPrevOuts(r))
	real := realVSize(tx)
	if real > r.VSize {
		t.Fatalf("real vsize %d exceeds estimate %d", real, r.VSize)
	}
	// Pessimism comes from ECDSA signatures one byte shorter than the
	// worst case (a vbyte at most per input) and the taproot sighash byte.
	if slack := r.VSize - real; slack > min(r.VSize/50+4, int64(len(r.Inputs))+1) {
		t.Fatalf("estimate %d is %d vB above the real %d", r.VSize, slack, real)
	}
	return tx
}

func TestSignAndCheckEachType(t *testing.T) {
	for _, kind := range allKinds {
		t.Run(kind, func(t *testing.T) {
			o := newOwner(t, kind, 1)
			change := newOwner(t, kind, 2)
			dest := newOwner(t, "wpkh", 3)
			req := txbuild.Request{
				Outputs:    []txbuild.Output{{Script: dest.pkScript, Value: 150_000}},
				Candidates: []txbuild.Input{o.fund(t, 100_000, 1), o.fund(t, 90_000, 2), o.fund(t, 30_000, 3)},
				FeeRate:    7,
				Change:     change.change(),
				LockTime:   800_000,
				Params:     btcRegtest(t),
				Rand:       seeded(1),
			}
			r, err := txbuild.Build(req)
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, req, r)
			if len(r.Inputs) < 2 {
				t.Fatalf("expected at least two inputs, got %d", len(r.Inputs))
			}
			tx := signAndCheck(t, r, keyring{}.add(o))
			if tx.LockTime != 800_000 || tx.TxIn[0].Sequence != 0xfffffffd {
				t.Fatalf("locktime %d sequence %#x", tx.LockTime, tx.TxIn[0].Sequence)
			}
		})
	}
}

// TestSignAndCheckMixed spends one input of every type in one transaction.
func TestSignAndCheckMixed(t *testing.T) {
	var cands []txbuild.Input
	var include []wire.OutPoint
	ring := keyring{}
	for i, kind := range allKinds {
		o := newOwner(t, kind, uint32(100+i))
		ring.add(o)
		in := o.fund(t, int64(50_000+i*1000), uint32(100+i))
		cands = append(cands, in)
		include = append(include, in.OutPoint)
	}
	for _, changeKind := range []string{"wpkh", "tr", "wsh"} {
		t.Run("change-"+changeKind, func(t *testing.T) {
			change := newOwner(t, changeKind, 200)
			req := txbuild.Request{
				Outputs:    []txbuild.Output{{Script: newOwner(t, "tr", 300).pkScript, Value: 100_000}},
				Candidates: cands,
				Include:    include,
				FeeRate:    3,
				Change:     change.change(),
				Params:     btcRegtest(t),
				NoRBF:      true,
				Rand:       seeded(2),
			}
			r, err := txbuild.Build(req)
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, req, r)
			if len(r.Inputs) != len(allKinds) || r.Algorithm != txbuild.AlgoManual || r.ChangeIndex < 0 {
				t.Fatalf("got %d inputs, algorithm %s, change %d", len(r.Inputs), r.Algorithm, r.ChangeIndex)
			}
			out := r.PSBT.Outputs[r.ChangeIndex]
			switch changeKind {
			case "tr":
				if !bytes.Equal(out.TaprootInternalKey, change.internKey) || len(out.TaprootBip32Derivation) != 1 ||
					len(out.TaprootBip32Derivation[0].XOnlyPubKey) != 32 {
					t.Fatalf("taproot change output fields missing: %+v", out)
				}
			case "wsh":
				if !bytes.Equal(out.WitnessScript, change.ws) || len(out.Bip32Derivation) != 3 {
					t.Fatalf("wsh change output fields missing: %+v", out)
				}
			default:
				if len(out.Bip32Derivation) != 1 || !bytes.Equal(out.Bip32Derivation[0].PubKey, change.keys[0].pub) {
					t.Fatalf("change derivation missing: %+v", out)
				}
			}
			tx := signAndCheck(t, r, ring)
			if tx.TxIn[0].Sequence != 0xfffffffe {
				t.Fatalf("NoRBF sequence %#x", tx.TxIn[0].Sequence)
			}
		})
	}
}

// TestPSBTFields checks what a hardware signer relies on.
func TestPSBTFields(t *testing.T) {
	owners := map[string]*owner{}
	var cands []txbuild.Input
	var include []wire.OutPoint
	for i, kind := range allKinds {
		o := newOwner(t, kind, uint32(400+i))
		owners[kind] = o
		in := o.fund(t, 40_000, uint32(400+i))
		cands = append(cands, in)
		include = append(include, in.OutPoint)
	}
	r, err := txbuild.Build(txbuild.Request{
		Outputs:    []txbuild.Output{{Script: owners["wpkh"].pkScript, Value: 10_000}},
		Candidates: cands, Include: include, FeeRate: 1,
		Change: owners["wpkh"].change(), Params: btcRegtest(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Round-trip through the wire format, as a signer would see it.
	b64, err := txbuild.EncodePSBT(r.PSBT)
	if err != nil {
		t.Fatal(err)
	}
	p, err := txbuild.DecodePSBT(b64)
	if err != nil {
		t.Fatal(err)
	}
	for i, in := range r.Inputs {
		pi := p.Inputs[i]
		var kind string
		for k, o := range owners {
			if bytes.Equal(o.pkScript, in.PkScript) {
				kind = k
			}
		}
		legacy := kind == "pkh" || kind == "sh-multi"
		if (pi.WitnessUtxo == nil) != legacy {
			t.Errorf("%s: witness utxo presence wrong", kind)
		}
		if (pi.NonWitnessUtxo == nil) != (kind == "tr") {
			t.Errorf("%s: non-witness utxo presence wrong", kind)
		}
		if kind == "tr" {
			if !bytes.Equal(pi.TaprootInternalKey, owners["tr"].internKey) || len(pi.TaprootBip32Derivation) != 1 ||
				len(pi.TaprootBip32Derivation[0].LeafHashes) != 0 || len(pi.Bip32Derivation) != 0 {
				t.Errorf("tr fields wrong: %+v", pi)
			}
			continue
		}
		if !bytes.Equal(pi.RedeemScript, owners[kind].redeem) || !bytes.Equal(pi.WitnessScript, owners[kind].ws) {
			t.Errorf("%s: scripts wrong", kind)
		}
		if len(pi.Bip32Derivation) != len(owners[kind].keys) {
			t.Fatalf("%s: %d derivations", kind, len(pi.Bip32Derivation))
		}
		for j, d := range pi.Bip32Derivation {
			if j > 0 && bytes.Compare(pi.Bip32Derivation[j-1].PubKey, d.PubKey) >= 0 {
				t.Errorf("%s: derivations not sorted by key", kind)
			}
			if len(d.Bip32Path) != 5 || d.Bip32Path[0] != 84|hardened {
				t.Errorf("%s: path %v", kind, d.Bip32Path)
			}
		}
	}
	// The fingerprint must appear in serialization order followed by the
	// path, exactly as BIP 174 lays out the derivation value.
	var raw bytes.Buffer
	if err := p.Serialize(&raw); err != nil {
		t.Fatal(err)
	}
	want := append(testFingerprint[:], 0x54, 0, 0, 0x80) // deadbeef, 84'
	if !bytes.Contains(raw.Bytes(), want) {
		t.Fatal("fingerprint not serialized in the given byte order")
	}
	if _, err := psbt.NewFromRawBytes(&raw, false); err != nil {
		t.Fatal(err)
	}
}

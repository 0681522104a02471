package keys_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/descriptor"
	"github.com/coffer/coffer/internal/keys"
	"github.com/coffer/coffer/internal/txbuild"
)

// wallet is a custodial account with its watch-only descriptors, as a
// wallet built on this package would hold it.
type wallet struct {
	net             *chain.Params
	acct            *hdkeychain.ExtendedKey
	fp              [4]byte
	recv, change    *descriptor.Descriptor
	fundingCounter  uint32
	fundedOutpoints []wire.OutPoint
}

func newWallet(t *testing.T, net *chain.Params, imported bool) *wallet {
	t.Helper()
	mnemonic, err := keys.NewMnemonic(12)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := keys.SeedFromMnemonic(mnemonic, "")
	if err != nil {
		t.Fatal(err)
	}
	acct, fp, err := keys.AccountKey(seed, net)
	if err != nil {
		t.Fatal(err)
	}
	if imported {
		if acct, err = keys.ParseXprv(acct.String(), net); err != nil {
			t.Fatal(err)
		}
		if fp, err = keys.KeyFingerprint(acct); err != nil {
			t.Fatal(err)
		}
	}
	text, err := keys.WatchDescriptor(acct, fp, net)
	if err != nil {
		t.Fatal(err)
	}
	d, err := descriptor.Parse(text, net)
	if err != nil {
		t.Fatal(err)
	}
	w := &wallet{net: net, acct: acct, fp: fp}
	if w.recv, w.change, err = descriptor.Pair(d); err != nil {
		t.Fatal(err)
	}
	return w
}

func derivations(kos []descriptor.KeyOrigin) []txbuild.Derivation {
	var out []txbuild.Derivation
	for _, ko := range kos {
		out = append(out, txbuild.Derivation{Fingerprint: ko.Fingerprint, Path: ko.Path, PubKey: ko.PubKey})
	}
	return out
}

// fund returns a spendable output of value paying d at index, created by a
// made-up previous transaction.
func (w *wallet) fund(t *testing.T, d *descriptor.Descriptor, index uint32, value int64) txbuild.Input {
	t.Helper()
	out, err := d.Derive(index)
	if err != nil {
		t.Fatal(err)
	}
	w.fundingCounter++
	prev := wire.NewMsgTx(2)
	prev.AddTxIn(&wire.TxIn{PreviousOutPoint: wire.OutPoint{Hash: chainhash.HashH(binary.BigEndian.AppendUint32([]byte(w.net.String()), w.fundingCounter))}})
	prev.AddTxOut(wire.NewTxOut(5000, []byte{txscript.OP_TRUE}))
	prev.AddTxOut(wire.NewTxOut(value, out.Script))
	var buf bytes.Buffer
	if err := prev.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	op := wire.OutPoint{Hash: prev.TxHash(), Index: 1}
	w.fundedOutpoints = append(w.fundedOutpoints, op)
	return txbuild.Input{OutPoint: op, Value: value, PkScript: out.Script, PrevTx: buf.Bytes(),
		Derivations: derivations(out.Keys), Confirmations: 3}
}

// build makes a proposal spending every candidate, with change back to the
// wallet.
func (w *wallet) build(t *testing.T, cands []txbuild.Input, dest []byte) *txbuild.Result {
	t.Helper()
	change, err := w.change.Derive(3)
	if err != nil {
		t.Fatal(err)
	}
	var include []wire.OutPoint
	var total int64
	for _, c := range cands {
		include = append(include, c.OutPoint)
		total += c.Value
	}
	r, err := txbuild.Build(txbuild.Request{
		Outputs:    []txbuild.Output{{Script: dest, Value: total / 2}},
		Candidates: cands,
		Include:    include,
		FeeRate:    5,
		Change:     txbuild.ChangeSpec{Script: change.Script, Derivations: derivations(change.Keys)},
		Params:     w.net,
		Rand:       rand.New(rand.NewPCG(1, 2)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// proposalCopy decodes the proposal afresh, as a signer receives it.
func proposalCopy(t *testing.T, r *txbuild.Result) *psbt.Packet {
	t.Helper()
	b64, err := r.Base64()
	if err != nil {
		t.Fatal(err)
	}
	p, err := txbuild.DecodePSBT(b64)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func destScript(t *testing.T) []byte {
	t.Helper()
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := txscript.NewScriptBuilder().AddOp(txscript.OP_0).AddData(btcutil.Hash160(priv.PubKey().SerializeCompressed())).Script()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// verify runs every input of tx through the script engine.
func verify(t *testing.T, tx *wire.MsgTx, r *txbuild.Result) {
	t.Helper()
	prev := map[wire.OutPoint]*wire.TxOut{}
	for _, in := range r.Inputs {
		prev[in.OutPoint] = wire.NewTxOut(in.Value, in.PkScript)
	}
	fetcher := txscript.NewMultiPrevOutFetcher(prev)
	hashes := txscript.NewTxSigHashes(tx, fetcher)
	for i, in := range tx.TxIn {
		out := prev[in.PreviousOutPoint]
		vm, err := txscript.NewEngine(out.PkScript, tx, i, txscript.StandardVerifyFlags, nil, hashes, out.Value, fetcher)
		if err != nil {
			t.Fatal(err)
		}
		if err := vm.Execute(); err != nil {
			t.Fatalf("input %d: %v", i, err)
		}
	}
}

func TestSignPSBT(t *testing.T) {
	for _, id := range []string{"btc/regtest", "btc/mainnet", "btc/signet", "ltc/mainnet", "ltc/testnet"} {
		coin, network, _ := strings.Cut(id, "/")
		net, err := chain.Lookup(chain.Coin(coin), chain.Network(network))
		if err != nil {
			t.Fatal(err)
		}
		for _, imported := range []bool{false, true} {
			name := id
			if imported {
				name += "/imported"
			}
			t.Run(name, func(t *testing.T) {
				w := newWallet(t, net, imported)
				cands := []txbuild.Input{
					w.fund(t, w.recv, 0, 40_000),
					w.fund(t, w.recv, 5, 25_000),
					w.fund(t, w.change, 2, 61_000),
				}
				r := w.build(t, cands, destScript(t))
				p := proposalCopy(t, r)
				n, err := keys.SignPSBT(p, w.acct, w.fp)
				if err != nil || n != len(cands) {
					t.Fatalf("SignPSBT = %d, %v; want %d inputs signed", n, err, len(cands))
				}
				tx, err := psbt.Extract(p)
				if err != nil {
					t.Fatalf("Extract: %v", err)
				}
				verify(t, tx, r)

				// Coffer's own check of a signed proposal accepts it, as a PSBT
				// and as the raw transaction.
				b64, err := p.B64Encode()
				if err != nil {
					t.Fatal(err)
				}
				checked, err := r.Check([]byte(b64))
				if err != nil {
					t.Fatalf("Check(signed PSBT): %v", err)
				}
				if checked.TxHash() != tx.TxHash() {
					t.Fatal("Check returned another transaction")
				}
				var raw bytes.Buffer
				if err := tx.Serialize(&raw); err != nil {
					t.Fatal(err)
				}
				if _, err := r.Check(raw.Bytes()); err != nil {
					t.Fatalf("Check(raw tx): %v", err)
				}

				// Signing again changes nothing: every input is final.
				if n, err := keys.SignPSBT(p, w.acct, w.fp); err != nil || n != 0 {
					t.Fatalf("second SignPSBT = %d, %v", n, err)
				}
			})
		}
	}
}

// TestSignPSBTLeavesOthersAlone: inputs of another account, or of the same
// master fingerprint on another path, are not signed.
func TestSignPSBTLeavesOthersAlone(t *testing.T) {
	net := regtest(t)
	w := newWallet(t, net, false)
	other := newWallet(t, net, false)
	mine := w.fund(t, w.recv, 1, 50_000)
	theirs := other.fund(t, other.recv, 1, 50_000)
	// Same master fingerprint, but account 1: not this account.
	acct1 := w.fund(t, w.recv, 2, 30_000)
	acct1.Derivations[0].Path[2] = 1 | 1<<31

	r := w.build(t, []txbuild.Input{mine, theirs, acct1}, destScript(t))
	p := proposalCopy(t, r)
	n, err := keys.SignPSBT(p, w.acct, w.fp)
	if err != nil || n != 1 {
		t.Fatalf("SignPSBT = %d, %v; want 1", n, err)
	}
	for i, in := range p.UnsignedTx.TxIn {
		final := len(p.Inputs[i].FinalScriptWitness) > 0
		if final != (in.PreviousOutPoint == mine.OutPoint) {
			t.Errorf("input %d (%v): final %v", i, in.PreviousOutPoint, final)
		}
	}
	if _, err := psbt.Extract(p); err == nil {
		t.Fatal("Extract succeeded with unsigned inputs")
	}
	// The other wallet completes it.
	if n, err := keys.SignPSBT(p, other.acct, other.fp); err != nil || n != 1 {
		t.Fatalf("other SignPSBT = %d, %v", n, err)
	}
	// A wrong fingerprint signs nothing.
	if n, err := keys.SignPSBT(proposalCopy(t, r), w.acct, [4]byte{1, 2, 3, 4}); err != nil || n != 0 {
		t.Fatalf("SignPSBT with another fingerprint = %d, %v", n, err)
	}
}

// TestSignPSBTRefuses: an input that claims the account but does not add up
// fails the call.
func TestSignPSBTRefuses(t *testing.T) {
	net := regtest(t)
	w := newWallet(t, net, false)
	r := w.build(t, []txbuild.Input{w.fund(t, w.recv, 0, 40_000), w.fund(t, w.recv, 1, 40_000)}, destScript(t))
	other := newWallet(t, net, false)
	otherOut, err := other.recv.Derive(0)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name   string
		tamper func(p *psbt.Packet)
		msg    string
	}{
		{"wrong public key", func(p *psbt.Packet) {
			p.Inputs[1].Bip32Derivation[0].PubKey = otherOut.Keys[0].PubKey
		}, "input 1: the PSBT's public key for 0/"},
		{"wrong index", func(p *psbt.Packet) {
			d := p.Inputs[0].Bip32Derivation[0]
			d.Bip32Path[4] += 100
		}, "input 0: the PSBT's public key"},
		{"foreign script", func(p *psbt.Packet) {
			p.Inputs[0].WitnessUtxo.PkScript = otherOut.Script
			p.Inputs[0].NonWitnessUtxo = nil
		}, "input 0: spends a script that is not the P2WPKH output"},
		{"amount differs from previous tx", func(p *psbt.Packet) {
			p.Inputs[1].WitnessUtxo.Value += 1000
		}, "input 1: the previous transaction does not match"},
		{"no utxo", func(p *psbt.Packet) {
			p.Inputs[0].WitnessUtxo = nil
		}, "input 0: no witness UTXO"},
		{"sighash single", func(p *psbt.Packet) {
			p.Inputs[0].SighashType = txscript.SigHashSingle
		}, "only SIGHASH_ALL"},
		{"witness script", func(p *psbt.Packet) {
			p.Inputs[0].WitnessScript = []byte{txscript.OP_TRUE}
		}, "only P2WPKH inputs"},
	} {
		p := proposalCopy(t, r)
		c.tamper(p)
		_, err := keys.SignPSBT(p, w.acct, w.fp)
		if !errors.Is(err, keys.ErrSign) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err = %v, want ErrSign saying %q", c.name, err, c.msg)
		}
	}

	pub, err := w.acct.Neuter()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.SignPSBT(proposalCopy(t, r), pub, w.fp); !errors.Is(err, keys.ErrSign) {
		t.Errorf("signing with an xpub: %v", err)
	}
	if _, err := keys.SignPSBT(&psbt.Packet{}, w.acct, w.fp); !errors.Is(err, keys.ErrSign) {
		t.Errorf("signing an empty packet: %v", err)
	}
}

// TestSignPSBTReplacesStalePartialSig: a partial signature already present
// for the account's key is replaced, not finalised in place of a fresh one.
func TestSignPSBTReplacesStalePartialSig(t *testing.T) {
	net := regtest(t)
	w := newWallet(t, net, false)
	in := w.fund(t, w.recv, 0, 40_000)
	r := w.build(t, []txbuild.Input{in}, destScript(t))
	p := proposalCopy(t, r)
	// A syntactically valid signature over something else.
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	stale, err := txscript.RawTxInSignature(p.UnsignedTx, 0, in.PkScript, txscript.SigHashAll, priv)
	if err != nil {
		t.Fatal(err)
	}
	p.Inputs[0].PartialSigs = []*psbt.PartialSig{{PubKey: in.Derivations[0].PubKey, Signature: stale}}
	if n, err := keys.SignPSBT(p, w.acct, w.fp); err != nil || n != 1 {
		t.Fatalf("SignPSBT = %d, %v", n, err)
	}
	tx, err := psbt.Extract(p)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, tx, r)
}

package txbuild

import (
	"bytes"
	"crypto/sha256"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"

	"github.com/coffer/coffer/internal/chain"
)

// Sizes in bytes. Weight counts non-witness bytes 4 times and witness bytes
// once; vsize is weight/4 rounded up.
const (
	// A low-S DER signature is at most 71 bytes, plus the sighash byte.
	// Signers that grind for low R produce 71 in total, so this is at most
	// one byte pessimistic.
	ecdsaSigLen = 72
	// Key-path Schnorr signature; 64 with the default sighash, 65 if a
	// signer spells out SIGHASH_ALL. Counting 65 costs a quarter vbyte.
	schnorrSigLen = 65
	pubKeyLen     = 33
	// Outpoint (32+4) and sequence (4) of every input.
	inputFixedLen = 40
	// Version and locktime.
	txFixedLen = 8

	// MaxStandardWeight is the largest transaction nodes relay.
	MaxStandardWeight = 400_000
)

// Money supply caps, used to reject absurd amounts before any arithmetic can
// overflow: no real sum of outputs or inputs exceeds them.
const (
	maxMoneyBTC = 21_000_000 * 100_000_000
	maxMoneyLTC = 84_000_000 * 100_000_000
)

// Dust relay fee rates in sat/kvB (DUST_RELAY_TX_FEE in each node's policy).
const (
	dustRelayBTC = 3_000
	dustRelayLTC = 30_000
)

// kind is a spendable script shape.
type kind int

const (
	kindPKH     kind = iota + 1 // pkh()
	kindSHWPKH                  // sh(wpkh())
	kindWPKH                    // wpkh()
	kindTR                      // tr(KEY), key path
	kindWSH                     // wsh(multi())
	kindSHWSH                   // sh(wsh(multi()))
	kindSHMulti                 // sh(multi())
)

// spend is the size of an input once signed.
type spend struct {
	kind      kind
	scriptSig int64 // bytes of the final scriptSig
	witness   int64 // bytes of the serialized witness stack; 0 for legacy
	sigs      int   // signatures required (for checking sighash types)
}

func (s spend) segwit() bool { return s.witness > 0 }

// weight of the signed input. A legacy input in a segwit transaction still
// carries an empty witness (one byte); counting it always keeps per-input
// estimates an upper bound.
func (s spend) weight() int64 {
	w := 4 * (inputFixedLen + varIntLen(s.scriptSig) + s.scriptSig)
	if s.witness == 0 {
		return w + 1
	}
	return w + s.witness
}

// InputWeight returns the estimated weight of in once signed, in weight
// units: 272 (68 vB) for wpkh, 364 (91 vB) for sh(wpkh), 231 (58 vB) for tr,
// and 593 for pkh (148 vB plus the empty witness it has in a segwit tx).
func InputWeight(in Input) (int64, error) {
	s, err := classify(in.PkScript, in.RedeemScript, in.WitnessScript, in.InternalKey)
	if err != nil {
		return 0, err
	}
	return s.weight(), nil
}

// classify works out how an output script is spent and how big the signed
// input is, from the script and the extra scripts or key that go with it.
// It checks that the extra scripts hash to the output script.
func classify(pkScript, redeem, witnessScript, internalKey []byte) (spend, error) {
	if len(pkScript) == 0 {
		return spend{}, errf(ErrInvalidRequest, "empty output script")
	}
	for _, s := range [][]byte{pkScript, redeem, witnessScript} {
		if len(s) > txscript.MaxScriptSize {
			return spend{}, errf(ErrInvalidRequest, "script of %d bytes exceeds %d", len(s), txscript.MaxScriptSize)
		}
	}
	unexpected := func(what string) error {
		return errf(ErrInvalidRequest, "%s given for a %s output", what, txscript.GetScriptClass(pkScript))
	}
	switch txscript.GetScriptClass(pkScript) {
	case txscript.PubKeyHashTy:
		if len(redeem)+len(witnessScript)+len(internalKey) > 0 {
			return spend{}, unexpected("redeem/witness script or internal key")
		}
		return spend{kind: kindPKH, scriptSig: pushLen(ecdsaSigLen) + pushLen(pubKeyLen), sigs: 1}, nil

	case txscript.WitnessV0PubKeyHashTy:
		if len(redeem)+len(witnessScript)+len(internalKey) > 0 {
			return spend{}, unexpected("redeem/witness script or internal key")
		}
		return spend{kind: kindWPKH, witness: stackLen(ecdsaSigLen, pubKeyLen), sigs: 1}, nil

	case txscript.WitnessV1TaprootTy:
		if len(redeem)+len(witnessScript) > 0 {
			return spend{}, unexpected("redeem/witness script")
		}
		// The key itself is checked when it goes into the PSBT: parsing
		// it here would dominate selection among thousands of candidates.
		if len(internalKey) != 32 {
			return spend{}, errf(ErrInvalidRequest, "taproot output needs its 32-byte x-only internal key")
		}
		return spend{kind: kindTR, witness: stackLen(schnorrSigLen), sigs: 1}, nil

	case txscript.WitnessV0ScriptHashTy:
		if len(redeem)+len(internalKey) > 0 {
			return spend{}, unexpected("redeem script or internal key")
		}
		m, err := wshMultisig(pkScript, witnessScript)
		if err != nil {
			return spend{}, err
		}
		return spend{kind: kindWSH, witness: multisigStackLen(m, witnessScript), sigs: m}, nil

	case txscript.ScriptHashTy:
		if len(internalKey) > 0 {
			return spend{}, unexpected("internal key")
		}
		if len(redeem) == 0 || !bytes.Equal(pkScript[2:22], btcutil.Hash160(redeem)) {
			return spend{}, errf(ErrInvalidRequest, "P2SH output needs the redeem script it commits to")
		}
		scriptSig := pushLen(int64(len(redeem)))
		switch txscript.GetScriptClass(redeem) {
		case txscript.WitnessV0PubKeyHashTy:
			if len(witnessScript) > 0 {
				return spend{}, unexpected("witness script")
			}
			return spend{kind: kindSHWPKH, scriptSig: scriptSig, witness: stackLen(ecdsaSigLen, pubKeyLen), sigs: 1}, nil
		case txscript.WitnessV0ScriptHashTy:
			m, err := wshMultisig(redeem, witnessScript)
			if err != nil {
				return spend{}, err
			}
			return spend{kind: kindSHWSH, scriptSig: scriptSig, witness: multisigStackLen(m, witnessScript), sigs: m}, nil
		case txscript.MultiSigTy:
			if len(witnessScript) > 0 {
				return spend{}, unexpected("witness script")
			}
			_, m, err := txscript.CalcMultiSigStats(redeem)
			if err != nil {
				return spend{}, errf(ErrInvalidRequest, "redeem script: %v", err)
			}
			// OP_0 for CHECKMULTISIG's extra pop, the signatures, the script.
			sig := 1 + int64(m)*pushLen(ecdsaSigLen) + scriptSig
			return spend{kind: kindSHMulti, scriptSig: sig, sigs: m}, nil
		}
		return spend{}, errf(ErrInvalidRequest, "unsupported P2SH redeem script type %s", txscript.GetScriptClass(redeem))
	}
	return spend{}, errf(ErrInvalidRequest, "unsupported output script type %s", txscript.GetScriptClass(pkScript))
}

// wshMultisig checks that witnessScript is a multisig script whose hash is
// the program of the P2WSH script program, and returns its threshold.
func wshMultisig(program, witnessScript []byte) (int, error) {
	h := sha256.Sum256(witnessScript)
	if len(witnessScript) == 0 || !bytes.Equal(program[2:], h[:]) {
		return 0, errf(ErrInvalidRequest, "P2WSH output needs the witness script it commits to")
	}
	if txscript.GetScriptClass(witnessScript) != txscript.MultiSigTy {
		return 0, errf(ErrInvalidRequest, "only multisig witness scripts are supported")
	}
	_, m, err := txscript.CalcMultiSigStats(witnessScript)
	if err != nil {
		return 0, errf(ErrInvalidRequest, "witness script: %v", err)
	}
	return m, nil
}

// multisigStackLen is the witness of an m-of-n CHECKMULTISIG spend: an empty
// item for the extra pop, m signatures, the script.
func multisigStackLen(m int, witnessScript []byte) int64 {
	items := make([]int64, 0, m+2)
	items = append(items, 0)
	for range m {
		items = append(items, ecdsaSigLen)
	}
	return stackLen(append(items, int64(len(witnessScript)))...)
}

// stackLen is the serialized size of a witness stack with items of the
// given lengths.
func stackLen(items ...int64) int64 {
	n := varIntLen(int64(len(items)))
	for _, l := range items {
		n += varIntLen(l) + l
	}
	return n
}

// pushLen is the size of a minimal data push of n bytes.
func pushLen(n int64) int64 {
	switch {
	case n < txscript.OP_PUSHDATA1:
		return 1 + n
	case n <= 0xff:
		return 2 + n
	case n <= 0xffff:
		return 3 + n
	}
	return 5 + n
}

func varIntLen(n int64) int64 {
	switch {
	case n < 0xfd:
		return 1
	case n <= 0xffff:
		return 3
	case n <= 0xffffffff:
		return 5
	}
	return 9
}

// outputLen is the serialized size of an output paying script.
func outputLen(script []byte) int64 {
	return 8 + varIntLen(int64(len(script))) + int64(len(script))
}

// txWeight is the exact weight of a transaction with these signed inputs
// and outputs, given the size estimates of the inputs.
func txWeight(ins []spend, outs []Output) int64 {
	base := txFixedLen + varIntLen(int64(len(ins))) + varIntLen(int64(len(outs)))
	var wit int64
	segwit := false
	for _, o := range outs {
		base += outputLen(o.Script)
	}
	for _, s := range ins {
		base += inputFixedLen + varIntLen(s.scriptSig) + s.scriptSig
		if s.segwit() {
			segwit = true
			wit += s.witness
		} else {
			wit++ // empty witness of a legacy input
		}
	}
	if !segwit {
		return 4 * base
	}
	return 4*base + 2 + wit // 2: marker and flag
}

// vsize rounds weight up to virtual bytes.
func vsize(weight int64) int64 { return (weight + 3) / 4 }

// feeFor is the fee for vbytes at rate sat/kvB, rounded up. Callers keep
// vbytes below MaxStandardWeight-ish sizes and rates below maxFeeRateKvB, so
// the product cannot overflow.
func feeFor(vbytes, rateKvB int64) int64 {
	return (vbytes*rateKvB + 999) / 1000
}

// DustThreshold returns the smallest value an output paying script may have
// to be relayed, following Bitcoin Core's GetDustThreshold: the cost, at the
// coin's dust relay fee rate, of the output plus a typical input spending
// it. Unspendable (OP_RETURN) outputs have no threshold. A nil p means
// Bitcoin.
func DustThreshold(script []byte, p *chain.Params) int64 {
	if (len(script) > 0 && script[0] == txscript.OP_RETURN) || len(script) > txscript.MaxScriptSize {
		return 0
	}
	size := outputLen(script)
	if txscript.IsWitnessProgram(script) {
		size += 32 + 4 + 1 + 107/4 + 4 // witness discount on the signature
	} else {
		size += 32 + 4 + 1 + 107 + 4
	}
	return size * dustRelayRate(p) / 1000
}

func dustRelayRate(p *chain.Params) int64 {
	if p != nil && p.Coin == chain.LTC {
		return dustRelayLTC
	}
	return dustRelayBTC
}

func maxMoney(p *chain.Params) int64 {
	if p != nil && p.Coin == chain.LTC {
		return maxMoneyLTC
	}
	return maxMoneyBTC
}

// txidLess orders outpoints by txid as displayed (reversed bytes), then
// output index, so input order carries no information about the wallet.
func txidLess(a, b *chainhash.Hash, ai, bi uint32) bool {
	for i := chainhash.HashSize - 1; i >= 0; i-- {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return ai < bi
}

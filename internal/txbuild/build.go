package txbuild

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/coffer/coffer/internal/chain"
)

// Input is a wallet output that may be spent.
type Input struct {
	OutPoint      wire.OutPoint
	Value         int64 // satoshis
	PkScript      []byte
	RedeemScript  []byte // sh(...) inputs
	WitnessScript []byte // wsh(multi) and sh(wsh(multi)) inputs
	InternalKey   []byte // tr: the 32-byte x-only internal key
	// PrevTx is the serialized transaction that created the output. It is
	// required for legacy (pkh, sh(multi)) inputs and, when given, also
	// added for segwit v0 inputs because hardware signers want it. It must
	// hold the output with this Value and PkScript.
	PrevTx        []byte
	Derivations   []Derivation
	Confirmations int64 // informational; selection does not use it
}

// Derivation is the BIP 32 origin of a key. Its fields match
// descriptor.KeyOrigin, so one converts to the other directly.
type Derivation struct {
	Fingerprint [4]byte  // master key fingerprint, in serialization order
	Path        []uint32 // full path; hardened steps have bit 31 set
	PubKey      []byte   // 33-byte key; for tr, 32-byte x-only or 33-byte
}

// Output is a payment.
type Output struct {
	Script []byte
	Value  int64
}

// ChangeSpec describes the wallet's change output.
type ChangeSpec struct {
	Script        []byte
	Derivations   []Derivation
	RedeemScript  []byte
	WitnessScript []byte
	InternalKey   []byte
}

// Request is everything Build needs.
type Request struct {
	Outputs []Output // payments, in the order given
	// SendAll spends every candidate with a positive effective value (and
	// every Include'd one) and pays what is left after Outputs and the fee
	// to SendAllTo, which becomes the last output.
	SendAll   bool
	SendAllTo []byte
	// Candidates are the spendable outputs, already filtered by the caller
	// (confirmations, reservations).
	Candidates []Input
	// Include lists candidates that must be spent, even if they cost more
	// in fees than they are worth.
	Include []wire.OutPoint

	FeeRate int64 // sat/vB, 1 to 10,000
	// FeeRateKvB, when non-zero, replaces FeeRate with a rate in sat per
	// 1000 vbytes (100 to 10,000,000), for sub-sat/vB fees.
	FeeRateKvB int64
	// LongTermFeeRate (sat/vB) prices the future spend of change for the
	// waste metric; 0 means 10.
	LongTermFeeRate int64

	Change   ChangeSpec // required unless SendAll
	LockTime uint32     // see AntiFeeSnipingLockTime
	NoRBF    bool       // don't signal replaceability
	Params   *chain.Params
	// Rand places the change output; nil uses a random seed.
	Rand *rand.Rand
}

// Result is an unsigned transaction ready for signing.
type Result struct {
	PSBT        *psbt.Packet
	Inputs      []Input  // spent, in transaction order
	Outputs     []Output // in transaction order, change included
	ChangeIndex int      // index of the change in Outputs, -1 if none
	Fee         int64
	VSize       int64  // estimated vsize once signed (an upper bound)
	Algorithm   string // AlgoBnB, AlgoWaste, AlgoSendAll or AlgoManual
}

// Selection algorithms reported in Result.Algorithm.
const (
	AlgoBnB     = "bnb"      // changeless exact match
	AlgoWaste   = "waste"    // least-waste fallback, usually with change
	AlgoSendAll = "send_all" // everything to one output
	AlgoManual  = "manual"   // the Include'd inputs alone paid for it
)

// Fee rate limits, in sat/kvB.
const (
	minFeeRateKvB   = 100        // 0.1 sat/vB via FeeRateKvB
	maxFeeRateKvB   = 10_000_000 // 10,000 sat/vB
	defaultLongTerm = 10_000     // 10 sat/vB
)

// Input sequences. Both keep the locktime in force (anti-fee-sniping).
const (
	sequenceRBF   = wire.MaxTxInSequenceNum - 2 // signals BIP 125 replaceability
	sequenceNoRBF = wire.MaxTxInSequenceNum - 1
)

// Base64 returns the PSBT encoded for transport.
func (r *Result) Base64() (string, error) { return EncodePSBT(r.PSBT) }

// Check verifies a signed version of this proposal; see Check.
func (r *Result) Check(signed []byte) (*wire.MsgTx, error) { return Check(r.PSBT, signed) }

// AntiFeeSnipingLockTime returns the locktime for a transaction built at tip
// height, as Bitcoin Core does: the tip height, and one time in ten a random
// height up to 99 blocks lower, so wallets using it don't stand out. r nil
// uses a random seed.
func AntiFeeSnipingLockTime(tipHeight int64, r *rand.Rand) uint32 {
	// Heights from 500,000,000 on would be read as timestamps.
	if tipHeight <= 0 || tipHeight >= 500_000_000 {
		return 0
	}
	if intN(r, 10) == 0 {
		tipHeight = max(0, tipHeight-int64(intN(r, 100)))
	}
	return uint32(tipHeight)
}

func intN(r *rand.Rand, n int) int {
	if r == nil {
		return rand.IntN(n)
	}
	return r.IntN(n)
}

// Build selects inputs for req and returns the unsigned transaction.
func Build(req Request) (*Result, error) {
	p, err := newPlan(&req)
	if err != nil {
		return nil, err
	}
	var (
		chosen []int
		algo   string
	)
	if req.SendAll {
		chosen, algo = p.sendAllCoins(), AlgoSendAll
	} else {
		chosen, algo, err = p.selectCoins()
	}
	if err != nil {
		return nil, err
	}
	return p.finish(chosen, algo)
}

// coin is a candidate with its size and fee worked out.
type coin struct {
	in     *Input
	spend  spend
	fee    int64 // cost of spending it at the fee rate
	waste  int64 // fee minus the cost at the long-term rate
	ev     int64 // effective value: value minus fee
	preset bool  // Include'd
}

// plan is a validated request.
type plan struct {
	req      *Request
	rate     int64 // sat/kvB
	longTerm int64 // sat/kvB
	money    int64 // money supply cap
	paySum   int64
	coins    []coin
	presets  []int // indexes into coins

	// Change costs, unused for send-all.
	changeOut    Output
	changeFee    int64 // adding the change output now
	costOfChange int64 // changeFee plus spending the change later
	changeMin    int64 // smaller change is dropped into the fee
	// baseFee pays for everything but the inputs (and change): version,
	// locktime, counts, segwit marker and payment outputs.
	baseFee int64
}

func newPlan(req *Request) (*plan, error) {
	p := &plan{req: req, money: maxMoney(req.Params)}
	if err := p.setRates(); err != nil {
		return nil, err
	}
	if len(req.Outputs) == 0 && !req.SendAll {
		return nil, errf(ErrNoOutputs, "no outputs to pay")
	}
	if req.SendAll && len(req.SendAllTo) == 0 {
		return nil, errf(ErrNoOutputs, "send-all needs a destination script")
	}
	if len(req.SendAllTo) > txscript.MaxScriptSize {
		return nil, errf(ErrInvalidRequest, "send-all script of %d bytes", len(req.SendAllTo))
	}
	for i, o := range req.Outputs {
		if err := p.checkOutput(o); err != nil {
			return nil, fmt.Errorf("output %d: %w", i, err)
		}
		p.paySum += o.Value // both below money, so no overflow
		if p.paySum > p.money {
			return nil, errf(ErrInvalidAmount, "outputs total more than the money supply")
		}
	}
	if err := p.setCoins(); err != nil {
		return nil, err
	}
	if !req.SendAll {
		if err := p.setChange(); err != nil {
			return nil, err
		}
	}
	// Non-input part of the transaction, pessimistic on the input count
	// varint and on the segwit marker.
	outs := req.Outputs
	if req.SendAll {
		outs = append(slices.Clip(outs), Output{Script: req.SendAllTo})
	}
	base := 4*(txFixedLen+varIntLen(int64(len(p.coins)))+varIntLen(int64(len(outs)))) + 2
	for _, o := range outs {
		base += 4 * outputLen(o.Script)
	}
	if base > MaxStandardWeight {
		return nil, errf(ErrTxTooLarge, "the outputs alone weigh %d WU, over %d", base, MaxStandardWeight)
	}
	p.baseFee = feeFor(vsize(base), p.rate)
	return p, nil
}

func (p *plan) setRates() error {
	req := p.req
	switch {
	case req.FeeRateKvB != 0:
		if req.FeeRateKvB < minFeeRateKvB || req.FeeRateKvB > maxFeeRateKvB {
			return errf(ErrFeeRate, "fee rate %d sat/kvB is outside %d to %d", req.FeeRateKvB, minFeeRateKvB, maxFeeRateKvB)
		}
		p.rate = req.FeeRateKvB
	case req.FeeRate < 1 || req.FeeRate > maxFeeRateKvB/1000:
		return errf(ErrFeeRate, "fee rate %d sat/vB is outside 1 to %d", req.FeeRate, maxFeeRateKvB/1000)
	default:
		p.rate = req.FeeRate * 1000
	}
	switch {
	case req.LongTermFeeRate == 0:
		p.longTerm = defaultLongTerm
	case req.LongTermFeeRate < 0 || req.LongTermFeeRate > maxFeeRateKvB/1000:
		return errf(ErrFeeRate, "long-term fee rate %d sat/vB is outside 1 to %d", req.LongTermFeeRate, maxFeeRateKvB/1000)
	default:
		p.longTerm = req.LongTermFeeRate * 1000
	}
	return nil
}

func (p *plan) checkOutput(o Output) error {
	switch {
	case len(o.Script) == 0 || len(o.Script) > txscript.MaxScriptSize:
		return errf(ErrInvalidRequest, "output script of %d bytes", len(o.Script))
	case o.Value <= 0:
		return errf(ErrInvalidAmount, "amount %d is not positive", o.Value)
	case o.Value > p.money:
		return errf(ErrInvalidAmount, "amount %d exceeds the money supply", o.Value)
	}
	if d := DustThreshold(o.Script, p.req.Params); o.Value < d {
		return errf(ErrDust, "amount %d is below the dust limit of %d for this address type", o.Value, d)
	}
	return nil
}

func (p *plan) setCoins() error {
	req := p.req
	p.coins = make([]coin, len(req.Candidates))
	index := make(map[wire.OutPoint]int, len(req.Candidates))
	var total int64
	for i := range req.Candidates {
		in := &req.Candidates[i]
		if _, dup := index[in.OutPoint]; dup {
			return errf(ErrInvalidRequest, "candidate %v listed twice", in.OutPoint)
		}
		index[in.OutPoint] = i
		if in.Value <= 0 || in.Value > p.money {
			return errf(ErrInvalidAmount, "candidate %v has value %d", in.OutPoint, in.Value)
		}
		if total += in.Value; total > p.money {
			return errf(ErrInvalidAmount, "candidates total more than the money supply")
		}
		s, err := classify(in.PkScript, in.RedeemScript, in.WitnessScript, in.InternalKey)
		if err != nil {
			return fmt.Errorf("candidate %v: %w", in.OutPoint, err)
		}
		if !s.segwit() && len(in.PrevTx) == 0 {
			return errf(ErrInvalidRequest, "candidate %v is a legacy output and needs PrevTx", in.OutPoint)
		}
		fee := feeFor(vsize(s.weight()), p.rate)
		p.coins[i] = coin{
			in:    in,
			spend: s,
			fee:   fee,
			waste: fee - feeFor(vsize(s.weight()), p.longTerm),
			ev:    in.Value - fee,
		}
	}
	for _, op := range req.Include {
		i, ok := index[op]
		if !ok {
			return errf(ErrUnknownInput, "%v is not a spendable output of this wallet", op)
		}
		if !p.coins[i].preset {
			p.coins[i].preset = true
			p.presets = append(p.presets, i)
		}
	}
	return nil
}

func (p *plan) setChange() error {
	c := p.req.Change
	if len(c.Script) == 0 {
		return errf(ErrInvalidRequest, "no change script")
	}
	s, err := classify(c.Script, c.RedeemScript, c.WitnessScript, c.InternalKey)
	if err != nil {
		return fmt.Errorf("change: %w", err)
	}
	p.changeOut = Output{Script: c.Script}
	// The change output may also grow the output count varint.
	n := int64(len(p.req.Outputs))
	w := 4 * (outputLen(c.Script) + varIntLen(n+1) - varIntLen(n))
	p.changeFee = feeFor(vsize(w), p.rate)
	spendLater := feeFor(vsize(s.weight()), p.longTerm)
	p.costOfChange = p.changeFee + spendLater
	// Like Core: change worth less than it costs to spend (or dust) is
	// not worth creating.
	p.changeMin = max(DustThreshold(c.Script, p.req.Params), spendLater+1)
	return nil
}

// finish orders the chosen coins, decides on change, and builds the PSBT.
func (p *plan) finish(chosen []int, algo string) (*Result, error) {
	slices.SortFunc(chosen, func(a, b int) int {
		x, y := &p.coins[a].in.OutPoint, &p.coins[b].in.OutPoint
		switch {
		case txidLess(&x.Hash, &y.Hash, x.Index, y.Index):
			return -1
		case txidLess(&y.Hash, &x.Hash, y.Index, x.Index):
			return 1
		}
		return 0
	})
	ins := make([]Input, len(chosen))
	spends := make([]spend, len(chosen))
	var inSum int64
	for i, c := range chosen {
		ins[i], spends[i] = *p.coins[c].in, p.coins[c].spend
		inSum += ins[i].Value // candidates total at most the money supply
	}

	outs := slices.Clone(p.req.Outputs)
	changeIndex := -1
	if p.req.SendAll {
		outs = append(outs, Output{Script: p.req.SendAllTo})
		w := txWeight(spends, outs)
		if w > MaxStandardWeight {
			return nil, errf(ErrTxTooLarge, "spending all %d inputs weighs %d WU, over %d", len(ins), w, MaxStandardWeight)
		}
		fee := feeFor(vsize(w), p.rate)
		rest := inSum - p.paySum - fee
		if d := DustThreshold(p.req.SendAllTo, p.req.Params); rest < max(d, 1) {
			return nil, &InsufficientFundsError{Need: p.paySum + fee + max(d, 1), Have: inSum}
		}
		outs[len(outs)-1].Value = rest
	} else {
		// Change is added unless BnB found a changeless match, or it would
		// be worth less than it costs to spend.
		withChange := append(slices.Clone(outs), p.changeOut)
		change := inSum - p.paySum - feeFor(vsize(txWeight(spends, withChange)), p.rate)
		if algo != AlgoBnB && change >= p.changeMin {
			changeIndex = p.randIntN(len(outs) + 1)
			outs = slices.Insert(outs, changeIndex, Output{Script: p.changeOut.Script, Value: change})
		}
	}

	w := txWeight(spends, outs)
	if w > MaxStandardWeight {
		return nil, errf(ErrTxTooLarge, "%d inputs weigh %d WU, over %d", len(ins), w, MaxStandardWeight)
	}
	var outSum int64
	for _, o := range outs {
		outSum += o.Value
	}
	fee := inSum - outSum
	// Selection works with per-input upper bounds, so this holds; checking
	// it keeps a bug from ever producing an underpaying transaction.
	if need := feeFor(vsize(w), p.rate); fee < need {
		return nil, fmt.Errorf("txbuild: internal error: fee %d below required %d", fee, need)
	}

	tx := wire.NewMsgTx(2)
	tx.LockTime = p.req.LockTime
	seq := uint32(sequenceRBF)
	if p.req.NoRBF {
		seq = sequenceNoRBF
	}
	for i := range ins {
		tx.AddTxIn(&wire.TxIn{PreviousOutPoint: ins[i].OutPoint, Sequence: seq})
	}
	for _, o := range outs {
		tx.AddTxOut(wire.NewTxOut(o.Value, o.Script))
	}
	var change *ChangeSpec
	if changeIndex >= 0 {
		change = &p.req.Change
	}
	packet, err := newPacket(tx, ins, spends, changeIndex, change)
	if err != nil {
		return nil, err
	}
	return &Result{
		PSBT:        packet,
		Inputs:      ins,
		Outputs:     outs,
		ChangeIndex: changeIndex,
		Fee:         fee,
		VSize:       vsize(w),
		Algorithm:   algo,
	}, nil
}

func (p *plan) randIntN(n int) int {
	if p.req.Rand == nil {
		return rand.IntN(n)
	}
	return p.req.Rand.IntN(n)
}

// insufficient reports what spending every usable coin would need and give.
func (p *plan) insufficient(usable []int) error {
	need, have := p.paySum+p.baseFee, int64(0)
	for _, i := range usable {
		need += p.coins[i].fee
		have += p.coins[i].in.Value
	}
	if need < 0 { // cannot happen with capped values; never report nonsense
		need = math.MaxInt64
	}
	return &InsufficientFundsError{Need: need, Have: have}
}

package wallet

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/txbuild"
)

// Proposal statuses.
const (
	ProposalOpen      = "open"
	ProposalSent      = "sent"
	ProposalCancelled = "cancelled"
	ProposalExpired   = "expired"
	ProposalFailed    = "failed"
)

// PaymentRequest is one output of a proposal.
type PaymentRequest struct {
	Address string        `json:"address"`
	Amount  amount.Amount `json:"amount"`
}

// ProposalRequest asks for an unsigned transaction.
type ProposalRequest struct {
	Outputs    []PaymentRequest
	SendAllTo  string // spend every selected input to this address, less the fee
	FeeRate    int64  // sat/vB; 0 means use ConfTarget
	ConfTarget int    // blocks; used when FeeRate is 0 (default 6)
	Include    []string
	Exclude    []string
	MinConf    *int64 // default 1
	NoRBF      bool
}

// Proposal is an unsigned transaction that reserves its inputs until it is
// sent, cancelled or expires.
type Proposal struct {
	ID        string           `json:"id"`
	WalletID  string           `json:"wallet_id"`
	Status    string           `json:"status"`
	PSBT      string           `json:"psbt"` // base64 PSBT (v0)
	Txid      string           `json:"txid"` // of the transaction once sent, else of the unsigned one
	Fee       amount.Amount    `json:"fee"`
	FeeRate   int64            `json:"fee_rate"` // sat/vB
	VSize     int64            `json:"vsize,omitempty"`
	Algorithm string           `json:"algorithm,omitempty"`
	Inputs    []ProposalInput  `json:"inputs"`
	Outputs   []ProposalOutput `json:"outputs"`
	Error     string           `json:"error,omitempty"`
	CreatedAt time.Time        `json:"created_at"`
	ExpiresAt time.Time        `json:"expires_at"`
}

// ProposalInput is an input the proposal spends.
type ProposalInput struct {
	Txid    string        `json:"txid"`
	Vout    uint32        `json:"vout"`
	Amount  amount.Amount `json:"amount"`
	Address string        `json:"address"`
}

// ProposalOutput is an output; Change marks the wallet's change.
type ProposalOutput struct {
	Address string        `json:"address"`
	Amount  amount.Amount `json:"amount"`
	Change  bool          `json:"change"`
	Index   *uint32       `json:"index,omitempty"` // change index
}

// maxFeeRate bounds fee rates (sat/vB) to catch unit mistakes.
const maxFeeRate = 10_000

// Propose builds a proposal and reserves its inputs.
func (s *Service) Propose(ctx context.Context, walletID string, req ProposalRequest) (*Proposal, error) {
	w, err := s.Get(ctx, walletID)
	if err != nil {
		return nil, err
	}
	if w.Status != StatusReady {
		return nil, errorf(ErrConflict, "wallet is %s; proposals need a ready wallet (its history recovered)", w.Status)
	}
	breq, err := s.buildRequest(ctx, req)
	if err != nil {
		return nil, err
	}
	minConf := int64(1)
	if req.MinConf != nil {
		if *req.MinConf < 0 {
			return nil, errorf(ErrInvalid, "min_conf must not be negative")
		}
		minConf = *req.MinConf
	}
	exclude := map[wire.OutPoint]bool{}
	for _, s := range req.Exclude {
		op, err := parseOutpoint(s)
		if err != nil {
			return nil, err
		}
		exclude[op] = true
	}
	d, err := s.descsOf(ctx, s.db, walletID)
	if err != nil {
		return nil, err
	}
	// Another proposal may take an input between selection and
	// reservation; then select again.
	for attempt := 0; ; attempt++ {
		p, err := s.proposeOnce(ctx, walletID, d, breq, minConf, exclude)
		if !errors.Is(err, errReserved) {
			return p, err
		}
		if attempt == 50 {
			return nil, errorf(ErrConflict, "inputs kept being reserved by concurrent proposals; try again")
		}
	}
}

var errReserved = errors.New("input reserved meanwhile")

// buildRequest validates outputs and the fee rate.
func (s *Service) buildRequest(ctx context.Context, req ProposalRequest) (txbuild.Request, error) {
	var b txbuild.Request
	switch {
	case req.SendAllTo != "" && len(req.Outputs) > 0:
		return b, errorf(ErrInvalid, "give outputs or send_all_to, not both")
	case req.SendAllTo == "" && len(req.Outputs) == 0:
		return b, errorf(ErrInvalid, "outputs must list at least one payment (or give send_all_to)")
	case len(req.Outputs) > 1000:
		return b, errorf(ErrInvalid, "at most 1000 outputs per proposal")
	}
	for i, o := range req.Outputs {
		script, err := s.AddressScript(o.Address)
		if err != nil {
			return b, fmt.Errorf("outputs[%d]: %w", i, err)
		}
		if o.Amount <= 0 {
			return b, errorf(ErrInvalidAmount, "outputs[%d]: amount must be a positive number of satoshis, got %s", i, o.Amount)
		}
		b.Outputs = append(b.Outputs, txbuild.Output{Script: script, Value: int64(o.Amount)})
	}
	if req.SendAllTo != "" {
		script, err := s.AddressScript(req.SendAllTo)
		if err != nil {
			return b, fmt.Errorf("send_all_to: %w", err)
		}
		b.SendAll, b.SendAllTo = true, script
	}
	for _, in := range req.Include {
		op, err := parseOutpoint(in)
		if err != nil {
			return b, err
		}
		b.Include = append(b.Include, op)
	}
	switch {
	case req.FeeRate < 0 || req.FeeRate > maxFeeRate:
		return b, errorf(ErrInvalid, "fee_rate must be between 1 and %d sat/vB", maxFeeRate)
	case req.FeeRate > 0:
		b.FeeRate = req.FeeRate
	default:
		target := req.ConfTarget
		if target == 0 {
			target = 6
		}
		if target < 1 || target > 1008 {
			return b, errorf(ErrInvalid, "conf_target must be between 1 and 1008 blocks")
		}
		b.FeeRate = s.EstimateFeeRate(ctx, target)
	}
	b.NoRBF = req.NoRBF
	b.Params = s.params
	return b, nil
}

// EstimateFeeRate asks the node (sat/vB, rounded up), falling back to the
// configured rate when it has no estimate.
func (s *Service) EstimateFeeRate(ctx context.Context, target int) int64 {
	perKvB, err := s.node.EstimateFeeRate(ctx, target)
	if err != nil || perKvB <= 0 {
		if err != nil && !errors.Is(err, node.ErrNoEstimate) {
			s.log.Warn("wallet: fee estimate failed; using the fallback rate", "err", err, "fallback", s.cfg.FallbackFeeRate)
		}
		return s.cfg.FallbackFeeRate
	}
	return max(1, (perKvB+999)/1000)
}

func parseOutpoint(s string) (wire.OutPoint, error) {
	txid, vout, ok := strings.Cut(s, ":")
	bad := errorf(ErrInvalid, "%q is not an outpoint; write it txid:vout", s)
	if !ok || len(txid) != 64 {
		return wire.OutPoint{}, bad
	}
	h, err := chainhash.NewHashFromStr(txid)
	if err != nil {
		return wire.OutPoint{}, bad
	}
	n, err := strconv.ParseUint(vout, 10, 32)
	if err != nil {
		return wire.OutPoint{}, bad
	}
	return wire.OutPoint{Hash: *h, Index: uint32(n)}, nil
}

func (s *Service) proposeOnce(ctx context.Context, walletID string, d *walletDescs, breq txbuild.Request, minConf int64, exclude map[wire.OutPoint]bool) (*Proposal, error) {
	tip, err := tipHeight(ctx, s.db)
	if err != nil {
		return nil, err
	}
	all, err := s.utxos(ctx, s.db, walletID, tip)
	if err != nil {
		return nil, err
	}
	breq.Candidates = breq.Candidates[:0]
	for _, u := range all {
		h, _ := chainhash.NewHashFromStr(u.Txid)
		op := wire.OutPoint{Hash: *h, Index: u.Vout}
		if u.Reserved || u.Immature || u.Confirmations < minConf || exclude[op] {
			continue
		}
		in, err := s.input(ctx, d, u, op)
		if err != nil {
			return nil, err
		}
		breq.Candidates = append(breq.Candidates, in)
	}
	change, err := s.changeAddress(ctx, walletID, d)
	if err != nil {
		return nil, err
	}
	breq.Change = change.spec
	breq.LockTime = txbuild.AntiFeeSnipingLockTime(tip, nil)
	res, err := txbuild.Build(breq)
	if err != nil {
		return nil, buildError(err)
	}
	encoded, err := txbuild.EncodePSBT(res.PSBT)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	p := &Proposal{
		ID: newID("prop_"), WalletID: walletID, Status: ProposalOpen, PSBT: encoded,
		Txid: res.PSBT.UnsignedTx.TxHash().String(), Fee: amount.Amount(res.Fee), FeeRate: breq.FeeRate,
		CreatedAt: now.UTC().Truncate(time.Second),
		ExpiresAt: now.Add(s.cfg.ProposalTTL).UTC().Truncate(time.Second),
	}
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO wallet_proposals (id, wallet_id, status, psbt, fee, fee_rate, txid, created_at, expires_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8)`, p.ID, walletID, p.Status, p.PSBT, res.Fee, breq.FeeRate, p.Txid,
			p.CreatedAt.Unix(), p.ExpiresAt.Unix()); err != nil {
			return err
		}
		for _, in := range res.Inputs {
			var reserved int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM wallet_reservations WHERE txid = $1 AND vout = $2`,
				in.OutPoint.Hash.String(), in.OutPoint.Index).Scan(&reserved); err != nil {
				return err
			}
			if reserved > 0 {
				return errReserved
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO wallet_reservations (txid, vout, proposal_id, expires_at) VALUES ($1, $2, $3, $4)`,
				in.OutPoint.Hash.String(), in.OutPoint.Index, p.ID, p.ExpiresAt.Unix()); err != nil {
				if store.IsUniqueViolation(err) {
					return errReserved
				}
				return err
			}
		}
		if res.ChangeIndex >= 0 {
			_, err := tx.ExecContext(ctx, `UPDATE wallet_addresses SET reserved_at = $4 WHERE wallet_id = $1 AND branch = $2 AND idx = $3`,
				walletID, 1, change.index, now.Unix())
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Described the same way as a proposal read back later.
	got, err := s.GetProposal(ctx, walletID, p.ID)
	if err != nil {
		return nil, err
	}
	got.VSize, got.Algorithm = res.VSize, res.Algorithm
	return got, nil
}

// buildError maps the builder's errors to API errors.
func buildError(err error) error {
	switch {
	case errors.Is(err, txbuild.ErrInsufficientFunds):
		return errorf(ErrInsufficientFunds, "%v", err)
	case errors.Is(err, txbuild.ErrDust):
		return errorf(ErrDust, "%v", err)
	case errors.Is(err, txbuild.ErrInvalidAmount):
		return errorf(ErrInvalidAmount, "%v", err)
	case errors.Is(err, txbuild.ErrFeeRate), errors.Is(err, txbuild.ErrNoOutputs), errors.Is(err, txbuild.ErrUnknownInput):
		return errorf(ErrInvalid, "%v", err)
	case errors.Is(err, txbuild.ErrTxTooLarge):
		return errorf(ErrInvalid, "%v; pay fewer outputs or consolidate inputs first", err)
	}
	return err
}

// input describes a wallet UTXO for the builder and the signer.
func (s *Service) input(ctx context.Context, d *walletDescs, u UTXO, op wire.OutPoint) (txbuild.Input, error) {
	branch := 0
	if u.Branch == "change" {
		branch = 1
	}
	out, err := d.branch[branch].Derive(u.Index)
	if err != nil {
		return txbuild.Input{}, err
	}
	in := txbuild.Input{
		OutPoint: op, Value: int64(u.Amount), PkScript: out.Script, RedeemScript: out.RedeemScript,
		WitnessScript: out.WitnessScript, InternalKey: out.InternalKey, Confirmations: u.Confirmations,
	}
	for _, k := range out.Keys {
		in.Derivations = append(in.Derivations, txbuild.Derivation{PubKey: k.PubKey, Fingerprint: k.Fingerprint, Path: k.Path})
	}
	// Signers of non-segwit inputs need the whole previous transaction;
	// segwit v0 signers (hardware wallets) want it too.
	if out.InternalKey == nil {
		if err := s.db.QueryRowContext(ctx, `SELECT raw FROM txs WHERE txid = $1`, u.Txid).Scan(&in.PrevTx); err != nil {
			return txbuild.Input{}, err
		}
	}
	return in, nil
}

type changeAddr struct {
	index uint32
	spec  txbuild.ChangeSpec
}

// changeAddress picks the wallet's next change address: the lowest one
// neither used nor given to another proposal.
func (s *Service) changeAddress(ctx context.Context, walletID string, d *walletDescs) (*changeAddr, error) {
	for {
		var idx uint32
		err := s.db.QueryRowContext(ctx, `SELECT idx FROM wallet_addresses WHERE wallet_id = $1 AND branch = 1 AND NOT used
			AND reserved_at IS NULL ORDER BY idx LIMIT 1`, walletID).Scan(&idx)
		if errors.Is(err, sql.ErrNoRows) {
			var top int64
			if err := s.db.QueryRowContext(ctx, `SELECT MAX(idx) FROM wallet_addresses WHERE wallet_id = $1 AND branch = 1`, walletID).Scan(&top); err != nil {
				return nil, err
			}
			if _, err := s.ensureWindow(ctx, walletID, 1, top); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if _, err := s.ensureWindow(ctx, walletID, 1, int64(idx)); err != nil {
			return nil, err
		}
		out, err := d.branch[1].Derive(idx)
		if err != nil {
			return nil, err
		}
		c := &changeAddr{index: idx, spec: txbuild.ChangeSpec{Script: out.Script, RedeemScript: out.RedeemScript,
			WitnessScript: out.WitnessScript, InternalKey: out.InternalKey}}
		for _, k := range out.Keys {
			c.spec.Derivations = append(c.spec.Derivations, txbuild.Derivation{PubKey: k.PubKey, Fingerprint: k.Fingerprint, Path: k.Path})
		}
		return c, nil
	}
}

// GetProposal returns a proposal of the wallet.
func (s *Service) GetProposal(ctx context.Context, walletID, id string) (*Proposal, error) {
	var p Proposal
	var created, expires int64
	err := s.db.QueryRowContext(ctx, `SELECT id, wallet_id, status, psbt, txid, fee, fee_rate, error, created_at, expires_at
		FROM wallet_proposals WHERE id = $1 AND wallet_id = $2`, id, walletID).
		Scan(&p.ID, &p.WalletID, &p.Status, &p.PSBT, &p.Txid, &p.Fee, &p.FeeRate, &p.Error, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(ErrNotFound, "wallet %s has no proposal %q", walletID, id)
	}
	if err != nil {
		return nil, err
	}
	p.CreatedAt, p.ExpiresAt = time.Unix(created, 0).UTC(), time.Unix(expires, 0).UTC()
	packet, err := txbuild.DecodePSBT(p.PSBT)
	if err != nil {
		return nil, err
	}
	for i, in := range packet.UnsignedTx.TxIn {
		pi := ProposalInput{Txid: in.PreviousOutPoint.Hash.String(), Vout: in.PreviousOutPoint.Index}
		if wu := packet.Inputs[i].WitnessUtxo; wu != nil {
			pi.Amount = amount.Amount(wu.Value)
			pi.Address, _ = s.params.ScriptAddress(wu.PkScript)
		} else if prev := packet.Inputs[i].NonWitnessUtxo; prev != nil && int(in.PreviousOutPoint.Index) < len(prev.TxOut) {
			o := prev.TxOut[in.PreviousOutPoint.Index]
			pi.Amount = amount.Amount(o.Value)
			pi.Address, _ = s.params.ScriptAddress(o.PkScript)
		}
		p.Inputs = append(p.Inputs, pi)
	}
	for _, o := range packet.UnsignedTx.TxOut {
		po := ProposalOutput{Amount: amount.Amount(o.Value)}
		po.Address, _ = s.params.ScriptAddress(o.PkScript)
		var idx uint32
		err := s.db.QueryRowContext(ctx, `SELECT idx FROM wallet_addresses WHERE wallet_id = $1 AND branch = 1 AND script = $2`,
			walletID, o.PkScript).Scan(&idx)
		if err == nil {
			po.Change, po.Index = true, &idx
		} else if !errors.Is(err, sql.ErrNoRows) {
			return nil, err
		}
		p.Outputs = append(p.Outputs, po)
	}
	return &p, nil
}

// CancelProposal releases an open proposal's inputs.
func (s *Service) CancelProposal(ctx context.Context, walletID, id string) (*Proposal, error) {
	if err := s.closeProposal(ctx, walletID, id, ProposalCancelled, ""); err != nil {
		return nil, err
	}
	return s.GetProposal(ctx, walletID, id)
}

// closeProposal moves an open proposal to status and frees its inputs.
func (s *Service) closeProposal(ctx context.Context, walletID, id, status, reason string) error {
	return s.db.InTx(ctx, func(tx *store.Tx) error {
		var cur string
		err := tx.QueryRowContext(ctx, `SELECT status FROM wallet_proposals WHERE id = $1 AND wallet_id = $2`, id, walletID).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return errorf(ErrNotFound, "wallet %s has no proposal %q", walletID, id)
		}
		if err != nil {
			return err
		}
		if cur != ProposalOpen {
			return errorf(ErrProposalClosed, "proposal %s is %s, not open", id, cur)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE wallet_proposals SET status = $2, error = $3, updated_at = $4 WHERE id = $1`,
			id, status, reason, time.Now().Unix()); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM wallet_reservations WHERE proposal_id = $1`, id)
		return err
	})
}

// ExpireProposals closes open proposals whose time ran out and returns how
// many it closed.
func (s *Service) ExpireProposals(ctx context.Context, now time.Time) (int, error) {
	var n int64
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM wallet_reservations WHERE proposal_id IN
			(SELECT id FROM wallet_proposals WHERE status = $1 AND expires_at <= $2)`, ProposalOpen, now.Unix()); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE wallet_proposals SET status = $1, updated_at = $3 WHERE status = $2 AND expires_at <= $3`,
			ProposalExpired, ProposalOpen, now.Unix())
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return int(n), err
}

// Send checks that signed (a PSBT or a raw transaction, as bytes) is the
// proposal signed, broadcasts it and records it as a mempool transaction.
// When the node rejects it, the proposal fails and its inputs are freed.
func (s *Service) Send(ctx context.Context, walletID, id string, signed []byte) (*Proposal, error) {
	p, err := s.GetProposal(ctx, walletID, id)
	if err != nil {
		return nil, err
	}
	if p.Status != ProposalOpen {
		return nil, errorf(ErrProposalClosed, "proposal %s is %s, not open", id, p.Status)
	}
	if !p.ExpiresAt.After(time.Now()) {
		return nil, errorf(ErrProposalClosed, "proposal %s expired at %s; make a new one", id, p.ExpiresAt.Format(time.RFC3339))
	}
	packet, err := txbuild.DecodePSBT(p.PSBT)
	if err != nil {
		return nil, err
	}
	final, err := txbuild.Check(packet, signed)
	switch {
	case errors.Is(err, txbuild.ErrNotSigned):
		return nil, errorf(ErrNotSigned, "%v", err)
	case err != nil: // mismatch, bad signature, not a PSBT or transaction
		return nil, errorf(ErrMismatch, "%v", err)
	}
	if err := s.Broadcast(ctx, final); err != nil {
		if errors.Is(err, ErrRejected) {
			if cerr := s.closeProposal(ctx, walletID, id, ProposalFailed, err.Error()); cerr != nil {
				return nil, cerr
			}
			return nil, errorf(ErrRejected, "%v; the proposal's inputs are released", err)
		}
		return nil, errorf(ErrNodeUnavailable, "%v; the proposal stays open, send it again", err)
	}
	if err := s.MarkProposalSent(ctx, id, final.TxHash().String()); err != nil {
		return nil, err
	}
	return s.GetProposal(ctx, walletID, id)
}

// alreadyKnown reports a rejection that means the node already has the
// transaction (a repeated send).
// Broadcast sends a signed transaction to the node and records it as in the
// mempool at once. A transaction the node already has counts as sent, so
// broadcasting again is harmless. A rejection is ErrRejected with the node's
// reason; a node that does not answer is ErrNodeUnavailable.
func (s *Service) Broadcast(ctx context.Context, final *wire.MsgTx) error {
	raw, err := serialize(final)
	if err != nil {
		return err
	}
	if _, err := s.node.SendRawTransaction(ctx, raw); err != nil {
		var rpcErr *node.RPCError
		if !errors.As(err, &rpcErr) {
			return errorf(ErrNodeUnavailable, "broadcast failed, the node did not answer: %v", err)
		}
		if !alreadyKnown(rpcErr) {
			return errorf(ErrRejected, "the node rejected the transaction: %s (code %d)", rpcErr.Message, rpcErr.Code)
		}
		if rpcErr.Code == node.CodeAlreadyInChain {
			// Mined already: recording it as in the mempool would undo
			// its confirmation. The follower records it from its block.
			return nil
		}
	}
	if err := s.follower.AddMempoolTx(ctx, final); err != nil {
		s.log.Warn("wallet: recording the sent transaction failed; the follower will find it in the mempool",
			"txid", final.TxHash().String(), "err", err)
	}
	return nil
}

// MarkProposalSent records that proposal id went out as txid and frees its
// reservations (its inputs are now spent in the mempool).
func (s *Service) MarkProposalSent(ctx context.Context, id, txid string) error {
	return s.db.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE wallet_proposals SET status = $2, txid = $3, updated_at = $4 WHERE id = $1`,
			id, ProposalSent, txid, time.Now().Unix()); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM wallet_reservations WHERE proposal_id = $1`, id)
		return err
	})
}

func alreadyKnown(e *node.RPCError) bool {
	m := strings.ToLower(e.Message)
	return strings.Contains(m, "already have transaction") || strings.Contains(m, "txn-already-in-mempool") ||
		strings.Contains(m, "txn-already-known") || e.Code == node.CodeAlreadyInChain
}

func serialize(tx *wire.MsgTx) ([]byte, error) {
	var b bytes.Buffer
	err := tx.Serialize(&b)
	return b.Bytes(), err
}

// newID returns prefix + 24 random hex digits.
func newID(prefix string) string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return prefix + hex.EncodeToString(b[:])
}

package api

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/fault"
	"github.com/coffer/coffer/internal/wallet"
)

// maxBody bounds request bodies; a signed PSBT of many inputs is the largest.
const maxBody = 4 << 20

// readJSON decodes the request body into v, rejecting unknown fields and
// trailing data, and answers 400 itself when it fails.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("the body holds more than one JSON value")
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		msg := "request body is not valid JSON for this endpoint: " + err.Error()
		if errors.As(err, &tooBig) {
			msg = fmt.Sprintf("request body is larger than %d bytes", maxBody)
		}
		if errors.Is(err, io.EOF) {
			msg = "request body is empty; send a JSON object"
		}
		writeError(w, http.StatusBadRequest, CodeInvalidJSON, msg)
		return false
	}
	return true
}

// writeServiceError answers with a service error's code and status, or 500
// for anything unexpected (logged with the request id).
func (s *Server) writeServiceError(w http.ResponseWriter, r *http.Request, err error) {
	if e, ok := fault.As(err); ok {
		writeError(w, e.Status, e.Code, e.Msg)
		return
	}
	if r.Context().Err() != nil {
		return // the caller hung up
	}
	id := RequestID(r.Context())
	s.log.Error("request failed", "request_id", id, "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, CodeInternal, "internal error (request id "+id+")")
}

func (s *Server) wallets(w http.ResponseWriter) bool {
	if s.d.Wallets == nil {
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "the wallet service is not running on this server")
		return false
	}
	return true
}

// RegisterWalletRequest is the body of POST /v1/wallets.
type RegisterWalletRequest struct {
	Descriptor string          `json:"descriptor,omitempty"`
	XPub       string          `json:"xpub,omitempty"`
	ScriptType string          `json:"script_type,omitempty"`
	Label      string          `json:"label,omitempty"`
	Birthday   json.RawMessage `json:"birthday,omitempty"` // a height (number) or a date ("2024-05-01" or RFC 3339)
	GapLimit   int             `json:"gap_limit,omitempty"`
}

func (s *Server) handleRegisterWallet(w http.ResponseWriter, r *http.Request) {
	if !s.wallets(w) {
		return
	}
	var req RegisterWalletRequest
	if !readJSON(w, r, &req) {
		return
	}
	wr := wallet.RegisterRequest{Descriptor: req.Descriptor, XPub: req.XPub, ScriptType: req.ScriptType,
		Label: req.Label, GapLimit: req.GapLimit}
	if err := parseBirthday(req.Birthday, &wr); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, err.Error())
		return
	}
	wal, created, err := s.d.Wallets.Register(r.Context(), wr)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, wal)
}

func parseBirthday(raw json.RawMessage, req *wallet.RegisterRequest) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var h int64
	if err := json.Unmarshal(raw, &h); err == nil {
		req.BirthdayHeight = &h
		return nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return errors.New("birthday must be a block height (number) or a date (\"2024-05-01\" or RFC 3339)")
	}
	for _, layout := range []string{time.DateOnly, time.RFC3339} {
		if t, err := time.Parse(layout, s); err == nil {
			req.BirthdayTime = &t
			return nil
		}
	}
	return fmt.Errorf("birthday %q is not a date like \"2024-05-01\" or \"2024-05-01T12:00:00Z\"", s)
}

// WalletList is the body of GET /v1/wallets.
type WalletList struct {
	Wallets []*wallet.Wallet `json:"wallets"`
}

func (s *Server) handleListWallets(w http.ResponseWriter, r *http.Request) {
	if !s.wallets(w) {
		return
	}
	ws, err := s.d.Wallets.List(r.Context())
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	if ws == nil {
		ws = []*wallet.Wallet{}
	}
	writeJSON(w, http.StatusOK, WalletList{Wallets: ws})
}

func (s *Server) handleGetWallet(w http.ResponseWriter, r *http.Request) {
	if !s.wallets(w) {
		return
	}
	wal, err := s.d.Wallets.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wal)
}

// AddressList is the body of GET /v1/wallets/{id}/addresses.
type AddressList struct {
	Addresses []wallet.Address `json:"addresses"`
}

func (s *Server) handleAddresses(w http.ResponseWriter, r *http.Request) {
	if !s.wallets(w) {
		return
	}
	branch, err := wallet.ParseBranch(r.URL.Query().Get("branch"))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	as, err := s.d.Wallets.Addresses(r.Context(), r.PathValue("id"), branch)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, AddressList{Addresses: as})
}

func (s *Server) handleNextAddress(w http.ResponseWriter, r *http.Request) {
	if !s.wallets(w) {
		return
	}
	a, err := s.d.Wallets.NextAddress(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// CheckAddressesRequest is the body of POST /v1/wallets/{id}/addresses/check.
type CheckAddressesRequest struct {
	Addresses []string `json:"addresses"`
}

// CheckAddressesResponse answers it, in request order.
type CheckAddressesResponse struct {
	Addresses []wallet.AddressCheck `json:"addresses"`
}

func (s *Server) handleCheckAddresses(w http.ResponseWriter, r *http.Request) {
	if !s.wallets(w) {
		return
	}
	var req CheckAddressesRequest
	if !readJSON(w, r, &req) {
		return
	}
	res, err := s.d.Wallets.CheckAddresses(r.Context(), r.PathValue("id"), req.Addresses)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, CheckAddressesResponse{Addresses: res})
}

func (s *Server) handleBalance(w http.ResponseWriter, r *http.Request) {
	if !s.wallets(w) {
		return
	}
	b, err := s.d.Wallets.Balance(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, b)
}

// UTXOList is the body of GET /v1/wallets/{id}/utxos.
type UTXOList struct {
	UTXOs []wallet.UTXO `json:"utxos"`
	Total amount.Amount `json:"total"`
}

func (s *Server) handleUTXOs(w http.ResponseWriter, r *http.Request) {
	if !s.wallets(w) {
		return
	}
	q := r.URL.Query()
	var f wallet.UTXOFilter
	var err error
	if f.MinConf, err = intParam(q, "min_conf", 0, 0, -1, "a non-negative integer"); err == nil {
		var lo, hi int64
		if lo, err = intParam(q, "min_amount", 0, 0, -1, "a non-negative integer of satoshis"); err == nil {
			if hi, err = intParam(q, "max_amount", 0, 0, -1, "a non-negative integer of satoshis"); err == nil {
				f.MinAmount, f.MaxAmount = amount.Amount(lo), amount.Amount(hi)
				if f.IncludeReserved, err = boolParam(q, "include_reserved"); err == nil {
					f.IncludeImmature, err = boolParam(q, "include_immature")
				}
			}
		}
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, err.Error())
		return
	}
	us, err := s.d.Wallets.UTXOs(r.Context(), r.PathValue("id"), f)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	var total amount.Amount
	for _, u := range us {
		if total, err = amount.Add(total, u.Amount); err != nil {
			s.writeServiceError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, UTXOList{UTXOs: us, Total: total})
}

func boolParam(q map[string][]string, name string) (bool, error) {
	v, ok := q[name]
	if !ok {
		return false, nil
	}
	switch strings.ToLower(v[len(v)-1]) {
	case "true", "1", "yes", "":
		return true, nil
	case "false", "0", "no":
		return false, nil
	}
	return false, fmt.Errorf("%s must be true or false, got %q", name, v[len(v)-1])
}

func (s *Server) handleTransactions(w http.ResponseWriter, r *http.Request) {
	if !s.wallets(w) {
		return
	}
	q := r.URL.Query()
	limit, err := intParam(q, "limit", 50, 1, wallet.MaxPageSize, fmt.Sprintf("an integer from 1 to %d", wallet.MaxPageSize))
	var details bool
	if err == nil {
		details, err = boolParam(q, "details")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, err.Error())
		return
	}
	page, err := s.d.Wallets.Transactions(r.Context(), r.PathValue("id"), q.Get("cursor"), int(limit), details)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Server) handleTransaction(w http.ResponseWriter, r *http.Request) {
	if !s.wallets(w) {
		return
	}
	t, err := s.d.Wallets.Transaction(r.Context(), r.PathValue("id"), r.PathValue("txid"))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

// ProposalRequest is the body of POST /v1/wallets/{id}/proposals.
type ProposalRequest struct {
	Outputs    []wallet.PaymentRequest `json:"outputs,omitempty"`
	SendAllTo  string                  `json:"send_all_to,omitempty"`
	FeeRate    int64                   `json:"fee_rate,omitempty"`    // sat/vB
	ConfTarget int                     `json:"conf_target,omitempty"` // blocks, when fee_rate is absent
	Include    []string                `json:"include_inputs,omitempty"`
	Exclude    []string                `json:"exclude_inputs,omitempty"`
	MinConf    *int64                  `json:"min_conf,omitempty"`
	RBF        *bool                   `json:"rbf,omitempty"` // default true
}

func (s *Server) handleCreateProposal(w http.ResponseWriter, r *http.Request) {
	if !s.wallets(w) {
		return
	}
	var req ProposalRequest
	if !readJSON(w, r, &req) {
		return
	}
	p, err := s.d.Wallets.Propose(r.Context(), r.PathValue("id"), wallet.ProposalRequest{
		Outputs: req.Outputs, SendAllTo: req.SendAllTo, FeeRate: req.FeeRate, ConfTarget: req.ConfTarget,
		Include: req.Include, Exclude: req.Exclude, MinConf: req.MinConf, NoRBF: req.RBF != nil && !*req.RBF,
	})
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, p)
}

func (s *Server) handleGetProposal(w http.ResponseWriter, r *http.Request) {
	if !s.wallets(w) {
		return
	}
	p, err := s.d.Wallets.GetProposal(r.Context(), r.PathValue("id"), r.PathValue("pid"))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) handleCancelProposal(w http.ResponseWriter, r *http.Request) {
	if !s.wallets(w) {
		return
	}
	p, err := s.d.Wallets.CancelProposal(r.Context(), r.PathValue("id"), r.PathValue("pid"))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// SendProposalRequest is the body of POST …/proposals/{pid}/send: the signed
// PSBT (base64) or the signed raw transaction (hex).
type SendProposalRequest struct {
	PSBT  string `json:"psbt,omitempty"`
	RawTx string `json:"raw_tx,omitempty"`
}

func (s *Server) handleSendProposal(w http.ResponseWriter, r *http.Request) {
	if !s.wallets(w) {
		return
	}
	var req SendProposalRequest
	if !readJSON(w, r, &req) {
		return
	}
	var signed []byte
	var err error
	switch {
	case (req.PSBT == "") == (req.RawTx == ""):
		err = errors.New("give exactly one of psbt (base64) and raw_tx (hex)")
	case req.PSBT != "":
		if signed, err = base64.StdEncoding.DecodeString(strings.TrimSpace(req.PSBT)); err != nil {
			err = errors.New("psbt is not valid base64")
		}
	default:
		if signed, err = hex.DecodeString(strings.TrimSpace(req.RawTx)); err != nil {
			err = errors.New("raw_tx is not valid hex")
		}
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, err.Error())
		return
	}
	p, err := s.d.Wallets.Send(r.Context(), r.PathValue("id"), r.PathValue("pid"), signed)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

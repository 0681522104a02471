package api

// The custodial routes: custodial wallets, their accounts and deposit
// addresses, deposits, internal transfers, withdrawals, batches and the
// audit, over the ledger service (internal/ledger). Operator API keys only:
// wallet tokens are for watch-only wallets and are refused here.

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/fault"
	"github.com/coffer/coffer/internal/ledger"
)

// Bounds of the custodial routes' inputs.
const (
	defaultCustodyLimit = 100
	maxCustodyLimit     = 1000
	// maxRequestAmount bounds every amount a request names, far above any
	// coin's supply, so sums of a request's amounts (and an amount plus the
	// configured withdrawal fee) cannot overflow.
	maxRequestAmount = amount.Amount(1 << 62)
	maxBumpFeeRate   = 10_000 // sat/vB, as for proposals
)

var (
	accountKinds       = []string{ledger.KindCustomer, ledger.KindHot, ledger.KindFees, ledger.KindImports, ledger.KindInflight}
	depositStatuses    = []string{ledger.DepositPending, ledger.DepositCredited, ledger.DepositProcessed, ledger.DepositRemoved}
	withdrawalStatuses = []string{ledger.WithdrawalQueued, ledger.WithdrawalSigned, ledger.WithdrawalBroadcast, ledger.WithdrawalConfirmed,
		ledger.WithdrawalCancelled, ledger.WithdrawalFailed, ledger.WithdrawalInternal}
)

// custody answers 503 when the server runs without the custodial ledger,
// and 400 when a path or query value holds a NUL character, which
// PostgreSQL can neither store nor compare (it would be a 500).
func (s *Server) custody(w http.ResponseWriter, r *http.Request) bool {
	if s.d.Custody == nil {
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "the custodial ledger is not running on this server")
		return false
	}
	return noNUL(w, r)
}

// noNUL answers 400 when the request's path or a query value holds a NUL
// character, which PostgreSQL can neither store nor compare.
func noNUL(w http.ResponseWriter, r *http.Request) bool {
	bad := strings.ContainsRune(r.URL.Path, 0)
	for _, vs := range r.URL.Query() {
		for _, v := range vs {
			bad = bad || strings.ContainsRune(v, 0)
		}
	}
	if bad {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, "path and query values must not contain NUL characters")
		return false
	}
	return true
}

// readText is readJSON for the custodial bodies, whose strings reach the
// database: a NUL character (\u0000) anywhere in them is refused.
func readText(w http.ResponseWriter, r *http.Request, v any) bool {
	if !readJSON(w, r, v) {
		return false
	}
	if hasNUL(reflect.ValueOf(v)) {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, "text in the request must not contain NUL characters (\\u0000)")
		return false
	}
	return true
}

// hasNUL reports whether a string anywhere in v holds a NUL character.
func hasNUL(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		return strings.ContainsRune(v.String(), 0)
	case reflect.Pointer, reflect.Interface:
		return !v.IsNil() && hasNUL(v.Elem())
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if hasNUL(v.Index(i)) {
				return true
			}
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if hasNUL(v.Field(i)) {
				return true
			}
		}
	}
	return false
}

// ledgerKey is the request's Idempotency-Key scoped to the principal that
// sent it, as the ledger stores it with the transfer or withdrawal it makes
// (in the same database transaction), so that a retry after the key's
// answer was lost, or after it expired, cannot move money twice. The scope
// keeps two API keys' Idempotency-Keys apart in the ledger's unique column,
// as the idempotency layer keeps them apart in its own table. "" without a
// key.
func ledgerKey(r *http.Request) string {
	k := idempotencyKey(r)
	scope := idempotencyScope(requestPrincipal(r))
	if k == "" || scope == "" {
		return ""
	}
	return scope + "/" + k // scopes are "key:<hex id>": no "/" in them
}

// limitParam reads the limit query parameter of the custodial lists.
func limitParam(q url.Values) (int, error) {
	n, err := intParam(q, "limit", defaultCustodyLimit, 1, maxCustodyLimit, fmt.Sprintf("an integer from 1 to %d", maxCustodyLimit))
	return int(n), err
}

// oneOf checks an optional enumerated query value.
func oneOf(name, v string, allowed []string) error {
	if v == "" || slices.Contains(allowed, v) {
		return nil
	}
	return fmt.Errorf("%s must be one of %v, got %q", name, allowed, v)
}

// checkAmount refuses an amount no request may name: beyond ±maxRequestAmount.
func checkAmount(what string, a amount.Amount) error {
	if a > maxRequestAmount || a < -maxRequestAmount {
		return fault.Errorf(ledger.ErrInvalidAmount, "%s %s is out of range", what, a)
	}
	return nil
}

// ── Custodial wallets ────────────────────────────────────────────────────

// CreateCustodyWalletRequest is the body of POST /v1/custody/wallets. With
// neither mnemonic nor xprv Coffer generates a seed of words words.
type CreateCustodyWalletRequest struct {
	Label          string `json:"label,omitempty"`
	Words          int    `json:"words,omitempty"` // 12 or 24 (default)
	ReturnMnemonic bool   `json:"return_mnemonic,omitempty"`
	Mnemonic       string `json:"mnemonic,omitempty"`
	Xprv           string `json:"xprv,omitempty"`
	BirthdayHeight *int64 `json:"birthday_height,omitempty"`
}

// CustodyWalletList is the body of GET /v1/custody/wallets.
type CustodyWalletList struct {
	Wallets []*ledger.CustodyWallet `json:"wallets"`
}

func (s *Server) handleCreateCustodyWallet(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	var req CreateCustodyWalletRequest
	if !readText(w, r, &req) {
		return
	}
	// The idempotency layer stores the answer to replay it, and this answer
	// would hold the mnemonic: never store a secret.
	if req.ReturnMnemonic && idempotencyKey(r) != "" {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter,
			"return_mnemonic cannot be combined with an Idempotency-Key: the answer would be stored to be replayed, and the mnemonic is never stored in plain text")
		return
	}
	if req.Words != 0 && req.Words != 12 && req.Words != 24 {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, fmt.Sprintf("words must be 12 or 24, got %d", req.Words))
		return
	}
	cw, err := s.d.Custody.CreateWallet(r.Context(), ledger.CreateWalletRequest{
		Label: req.Label, Words: req.Words, ReturnMnemonic: req.ReturnMnemonic,
		Mnemonic: req.Mnemonic, Xprv: req.Xprv, BirthdayHeight: req.BirthdayHeight,
	})
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, cw)
}

func (s *Server) handleListCustodyWallets(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	ws, err := s.d.Custody.ListWallets(r.Context())
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	if ws == nil {
		ws = []*ledger.CustodyWallet{}
	}
	writeJSON(w, http.StatusOK, CustodyWalletList{Wallets: ws})
}

func (s *Server) handleGetCustodyWallet(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	cw, err := s.d.Custody.GetWallet(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, cw)
}

// ── Accounts ─────────────────────────────────────────────────────────────

// CreateAccountRequest is the body of POST /v1/custody/wallets/{id}/accounts.
type CreateAccountRequest struct {
	Name       string `json:"name"`
	ExternalID string `json:"external_id,omitempty"` // unique per wallet
}

// AccountList is the body of GET /v1/custody/wallets/{id}/accounts.
type AccountList struct {
	Accounts []*ledger.Account `json:"accounts"`
	// NextAfter is the after value for the next page; absent when this
	// page is not full (the last one).
	NextAfter string `json:"next_after,omitempty"`
}

func (s *Server) handleCreateAccount(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	var req CreateAccountRequest
	if !readText(w, r, &req) {
		return
	}
	a, err := s.d.Custody.CreateAccount(r.Context(), r.PathValue("id"), ledger.CreateAccountRequest{Name: req.Name, ExternalID: req.ExternalID})
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, a)
}

func (s *Server) handleListAccounts(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	q := r.URL.Query()
	f := ledger.AccountFilter{Kind: q.Get("kind"), ExternalID: q.Get("external_id"), After: q.Get("after")}
	err := oneOf("kind", f.Kind, accountKinds)
	if err == nil {
		f.Limit, err = limitParam(q)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, err.Error())
		return
	}
	as, err := s.d.Custody.ListAccounts(r.Context(), r.PathValue("id"), f)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	page := AccountList{Accounts: as}
	if page.Accounts == nil {
		page.Accounts = []*ledger.Account{}
	}
	if n := len(as); n == f.Limit {
		page.NextAfter = as[n-1].ID
	}
	writeJSON(w, http.StatusOK, page)
}

// walletAccount loads the account {aid} of the custodial wallet {id}; an
// account of another wallet is not found here.
func (s *Server) walletAccount(w http.ResponseWriter, r *http.Request) (*ledger.Account, bool) {
	walletID, id := r.PathValue("id"), r.PathValue("aid")
	a, err := s.d.Custody.GetAccount(r.Context(), id)
	if err == nil && a.WalletID != walletID {
		err = fault.Errorf(ledger.ErrNotFound, "custodial wallet %s has no account %s", walletID, id)
	}
	if err != nil {
		s.writeServiceError(w, r, err)
		return nil, false
	}
	return a, true
}

func (s *Server) handleGetAccount(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	if a, ok := s.walletAccount(w, r); ok {
		writeJSON(w, http.StatusOK, a)
	}
}

// DepositAddressList is the body of GET …/accounts/{aid}/addresses.
type DepositAddressList struct {
	Addresses []ledger.DepositAddress `json:"addresses"`
}

func (s *Server) handleNewDepositAddress(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	a, ok := s.walletAccount(w, r)
	if !ok {
		return
	}
	d, err := s.d.Custody.NewDepositAddress(r.Context(), a.ID)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, d)
}

func (s *Server) handleDepositAddresses(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	a, ok := s.walletAccount(w, r)
	if !ok {
		return
	}
	ds, err := s.d.Custody.DepositAddresses(r.Context(), a.ID)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	if ds == nil {
		ds = []ledger.DepositAddress{}
	}
	writeJSON(w, http.StatusOK, DepositAddressList{Addresses: ds})
}

// EntryPage is the body of GET …/accounts/{aid}/entries.
type EntryPage struct {
	Entries []ledger.Entry `json:"entries"`
	// NextBefore is the before value for the next (older) page; absent
	// when this page is not full (the last one).
	NextBefore int64 `json:"next_before,omitempty"`
}

func (s *Server) handleEntries(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	q := r.URL.Query()
	before, err := intParam(q, "before", 0, 0, -1, "a non-negative integer (an entry id)")
	var limit int
	if err == nil {
		limit, err = limitParam(q)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, err.Error())
		return
	}
	a, ok := s.walletAccount(w, r)
	if !ok {
		return
	}
	es, err := s.d.Custody.Entries(r.Context(), a.ID, before, limit)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	page := EntryPage{Entries: es}
	if page.Entries == nil {
		page.Entries = []ledger.Entry{}
	}
	if n := len(es); n == limit {
		page.NextBefore = es[n-1].ID
	}
	writeJSON(w, http.StatusOK, page)
}

// ── Deposits ─────────────────────────────────────────────────────────────

// DepositList is the body of GET /v1/deposits.
type DepositList struct {
	Deposits  []*ledger.Deposit `json:"deposits"`
	NextAfter string            `json:"next_after,omitempty"` // absent on the last page
}

func (s *Server) handleListDeposits(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	q := r.URL.Query()
	f := ledger.DepositFilter{WalletID: q.Get("wallet_id"), AccountID: q.Get("account_id"), Status: q.Get("status"), After: q.Get("after")}
	err := oneOf("status", f.Status, depositStatuses)
	if err == nil {
		f.Limit, err = limitParam(q)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, err.Error())
		return
	}
	ds, err := s.d.Custody.ListDeposits(r.Context(), f)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	page := DepositList{Deposits: ds}
	if page.Deposits == nil {
		page.Deposits = []*ledger.Deposit{}
	}
	if n := len(ds); n == f.Limit {
		page.NextAfter = ds[n-1].ID
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Server) handleGetDeposit(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	d, err := s.d.Custody.GetDeposit(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) handleAckDeposit(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	d, err := s.d.Custody.AckDeposit(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// ── Transfers ────────────────────────────────────────────────────────────

// TransferRequest is the body of POST /v1/transfers: from, to and amount for
// a transfer between two accounts, or legs for a multi-leg one.
type TransferRequest struct {
	From   string         `json:"from,omitempty"`
	To     string         `json:"to,omitempty"`
	Amount *amount.Amount `json:"amount,omitempty"`
	Legs   []ledger.Leg   `json:"legs,omitempty"`
	Memo   string         `json:"memo,omitempty"`
}

// TransferBatchRequest is the body of POST /v1/transfers/batch.
type TransferBatchRequest struct {
	Transfers []ledger.TransferRequest `json:"transfers"`
}

// TransferBatchResponse answers it: the transfers made, in request order.
type TransferBatchResponse struct {
	Transfers []*ledger.Transfer `json:"transfers"`
}

// transferOut fills in the postings of a transfer that has none.
func transferOut(t *ledger.Transfer) *ledger.Transfer {
	if t != nil && t.Postings == nil {
		t.Postings = []ledger.Posting{}
	}
	return t
}

func (s *Server) handleTransfer(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	var req TransferRequest
	if !readText(w, r, &req) {
		return
	}
	var t *ledger.Transfer
	var err error
	if req.Legs != nil {
		if req.From != "" || req.To != "" || req.Amount != nil {
			writeError(w, http.StatusBadRequest, CodeInvalidParameter, "give from, to and amount for a transfer, or legs for a multi-leg one, not both")
			return
		}
		if err := checkLegs(req.Legs); err != nil {
			s.writeServiceError(w, r, err)
			return
		}
		t, err = s.d.Custody.TransferLegs(r.Context(), ledger.LegsRequest{Legs: req.Legs, Memo: req.Memo}, ledgerKey(r))
	} else {
		tr := ledger.TransferRequest{From: req.From, To: req.To, Memo: req.Memo}
		if req.Amount != nil {
			tr.Amount = *req.Amount
		}
		if err := checkTransfer("", tr, req.Amount != nil); err != nil {
			s.writeServiceError(w, r, err)
			return
		}
		t, err = s.d.Custody.Transfer(r.Context(), tr, ledgerKey(r))
	}
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, transferOut(t))
}

// checkTransfer checks what the ledger leaves to the edge: the fields are
// there and the amount is in range. what prefixes messages ("transfer 3: ").
func checkTransfer(what string, t ledger.TransferRequest, hasAmount bool) error {
	switch {
	case t.From == "" || t.To == "" || !hasAmount:
		if what == "" {
			return fault.Errorf(ledger.ErrInvalid, "from, to and amount are required (or legs, for a multi-leg transfer)")
		}
		return fault.Errorf(ledger.ErrInvalid, "%sfrom, to and amount are required", what)
	case t.Amount <= 0:
		return fault.Errorf(ledger.ErrInvalidAmount, "%samount must be a positive number of satoshis, got %s", what, t.Amount)
	}
	return checkAmount(what+"amount", t.Amount)
}

// checkLegs refuses legs whose amounts could overflow the ledger's sums.
func checkLegs(legs []ledger.Leg) error {
	if len(legs) < 2 || len(legs) > ledger.MaxLegs {
		return fault.Errorf(ledger.ErrInvalid, "a multi-leg transfer has 2 to %d legs, not %d", ledger.MaxLegs, len(legs))
	}
	var abs amount.Amount
	seen := make(map[string]int, len(legs))
	for i, l := range legs {
		if l.Account == "" {
			return fault.Errorf(ledger.ErrInvalid, "leg %d: account is required", i)
		}
		// Two legs of one account would be netted, possibly to nothing.
		if j, dup := seen[l.Account]; dup {
			return fault.Errorf(ledger.ErrSameAccount, "legs %d and %d name the same account %s; give one leg per account", j, i, l.Account)
		}
		seen[l.Account] = i
		if l.Amount == 0 {
			return fault.Errorf(ledger.ErrInvalidAmount, "leg %d: amount must not be zero", i)
		}
		if err := checkAmount(fmt.Sprintf("leg %d: amount", i), l.Amount); err != nil {
			return err
		}
		var err error
		if abs, err = amount.Add(abs, max(l.Amount, -l.Amount)); err != nil {
			return fault.Errorf(ledger.ErrInvalidAmount, "the legs' amounts are too large")
		}
	}
	return nil
}

func (s *Server) handleTransferBatch(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	var req TransferBatchRequest
	if !readText(w, r, &req) {
		return
	}
	if n := len(req.Transfers); n == 0 || n > ledger.MaxBatchTransfers {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter,
			fmt.Sprintf("transfers must hold 1 to %d transfers, got %d", ledger.MaxBatchTransfers, n))
		return
	}
	for i, t := range req.Transfers {
		// A missing amount decodes as 0, which checkTransfer refuses.
		if err := checkTransfer(fmt.Sprintf("transfer %d: ", i), t, true); err != nil {
			s.writeServiceError(w, r, err)
			return
		}
	}
	ts, err := s.d.Custody.TransferBatch(r.Context(), req.Transfers, ledgerKey(r))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	for _, t := range ts {
		transferOut(t)
	}
	writeJSON(w, http.StatusCreated, TransferBatchResponse{Transfers: ts})
}

func (s *Server) handleGetTransfer(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	t, err := s.d.Custody.GetTransfer(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, transferOut(t))
}

// ── Withdrawals ──────────────────────────────────────────────────────────

// WithdrawalList is the body of GET /v1/withdrawals.
type WithdrawalList struct {
	Withdrawals []*ledger.Withdrawal `json:"withdrawals"`
	NextAfter   string               `json:"next_after,omitempty"` // absent on the last page
}

func (s *Server) handleRequestWithdrawal(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	var req ledger.WithdrawalRequest
	if !readText(w, r, &req) {
		return
	}
	if req.Account == "" || req.Address == "" {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, "account, address and amount are required")
		return
	}
	if err := checkAmount("amount", req.Amount); err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	wd, err := s.d.Custody.RequestWithdrawal(r.Context(), req, ledgerKey(r))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, wd)
}

func (s *Server) handleListWithdrawals(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	q := r.URL.Query()
	f := ledger.WithdrawalFilter{WalletID: q.Get("wallet_id"), AccountID: q.Get("account_id"), Status: q.Get("status"),
		BatchID: q.Get("batch_id"), After: q.Get("after")}
	err := oneOf("status", f.Status, withdrawalStatuses)
	if err == nil {
		f.Limit, err = limitParam(q)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, err.Error())
		return
	}
	ws, err := s.d.Custody.ListWithdrawals(r.Context(), f)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	page := WithdrawalList{Withdrawals: ws}
	if page.Withdrawals == nil {
		page.Withdrawals = []*ledger.Withdrawal{}
	}
	if n := len(ws); n == f.Limit {
		page.NextAfter = ws[n-1].ID
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Server) handleGetWithdrawal(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	wd, err := s.d.Custody.GetWithdrawal(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wd)
}

func (s *Server) handleCancelWithdrawal(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	wd, err := s.d.Custody.CancelWithdrawal(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wd)
}

// ── Batches ──────────────────────────────────────────────────────────────

// CustodyBatch is a withdrawal batch as the API shows it: ledger.Batch with
// its fee as an amount string, like every amount of the API.
type CustodyBatch struct {
	ID            string        `json:"id"`
	WalletID      string        `json:"wallet_id"`
	Status        string        `json:"status"`
	Txid          string        `json:"txid"`
	Fee           amount.Amount `json:"fee"`
	FeeRate       int64         `json:"fee_rate"`
	Txids         []string      `json:"txids"`
	ConfirmedTxid *string       `json:"confirmed_txid"`
	Error         string        `json:"error,omitempty"`
	BroadcastAt   *time.Time    `json:"broadcast_at"`
	CreatedAt     time.Time     `json:"created_at"`
	UpdatedAt     time.Time     `json:"updated_at"`
}

func batchOut(b *ledger.Batch) CustodyBatch {
	out := CustodyBatch{ID: b.ID, WalletID: b.WalletID, Status: b.Status, Txid: b.Txid, Fee: amount.Amount(b.Fee),
		FeeRate: b.FeeRate, Txids: b.Versions, ConfirmedTxid: b.ConfirmedTxid, Error: b.Error,
		BroadcastAt: b.BroadcastAt, CreatedAt: b.CreatedAt, UpdatedAt: b.UpdatedAt}
	if out.Txids == nil {
		out.Txids = []string{}
	}
	return out
}

// BumpBatchRequest is the body of POST /v1/custody/batches/{id}/bump.
type BumpBatchRequest struct {
	FeeRate int64 `json:"fee_rate"` // sat/vB
}

func (s *Server) handleGetBatch(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	b, err := s.d.Custody.GetBatch(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, batchOut(b))
}

func (s *Server) handleBumpBatch(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	var req BumpBatchRequest
	if !readText(w, r, &req) {
		return
	}
	if req.FeeRate < 1 || req.FeeRate > maxBumpFeeRate {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, fmt.Sprintf("fee_rate must be from 1 to %d sat/vB, got %d", maxBumpFeeRate, req.FeeRate))
		return
	}
	b, err := s.d.Custody.BumpBatch(r.Context(), r.PathValue("id"), req.FeeRate)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, batchOut(b))
}

// ── Audit ────────────────────────────────────────────────────────────────

func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	if !s.custody(w, r) {
		return
	}
	rep, err := s.d.Custody.Audit(r.Context())
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

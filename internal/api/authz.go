package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/wallet"
)

type principalKey struct{}

// accessScopes is the API key scope each route access level needs.
var accessScopes = map[access]auth.Scope{readAccess: auth.ScopeRead, writeAccess: auth.ScopeWrite, adminAccess: auth.ScopeAdmin}

// authorize checks the request's credential against the route and answers
// 401 or 403 itself when it falls short.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, rt route) bool {
	if rt.access == public {
		return true
	}
	p, err := auth.Authenticate(r.Context(), s.d.DB, r)
	if err != nil {
		code := auth.Code(err)
		status := auth.HTTPStatus(err)
		if status < 400 || status >= 500 {
			if r.Context().Err() == nil {
				s.log.Error("authenticating request", "request_id", RequestID(r.Context()), "err", err)
			}
			writeError(w, http.StatusInternalServerError, CodeInternal, "checking credentials failed (request id "+RequestID(r.Context())+")")
			return false
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="coffer"`)
		writeError(w, status, code, err.Error())
		return false
	}
	need := accessScopes[rt.access]
	switch {
	case p.Kind == auth.KindWalletToken && !rt.wallet && !rt.tokens:
		writeError(w, http.StatusForbidden, CodeForbidden, "a wallet token may only be used on its own wallet's routes (/v1/wallets/{id}/…)")
		return false
	case rt.wallet && !p.AllowWallet(r.PathValue("id")):
		writeError(w, http.StatusForbidden, CodeForbidden, "this token is for another wallet")
		return false
	case !p.Allows(need):
		msg := "this API key's scope is " + string(p.Scope) + "; the request needs " + string(need)
		if p.Kind == auth.KindWalletToken {
			msg = "this wallet token is read-only; the request changes the wallet"
		}
		writeError(w, http.StatusForbidden, CodeForbidden, msg)
		return false
	}
	*r = *r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
	return true
}

// TokenRequest is the body of POST /v1/auth/token: a signature, in the
// Bitcoin signed-message format, by the key of the wallet's first receive
// address (any cosigner's for multisig) over the challenge
// "Coffer wallet token\nwallet: <id>\ntimestamp: <unix seconds>".
type TokenRequest struct {
	WalletID  string `json:"wallet_id"`
	Timestamp int64  `json:"timestamp"`
	Signature string `json:"signature"` // base64, 65 bytes
	ReadOnly  bool   `json:"read_only,omitempty"`
}

// TokenResponse carries the token; send it as "Authorization: Bearer …".
type TokenResponse struct {
	Token     string    `json:"token"`
	WalletID  string    `json:"wallet_id"`
	ReadOnly  bool      `json:"read_only"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *Server) handleAuthToken(w http.ResponseWriter, r *http.Request) {
	if !s.wallets(w) {
		return
	}
	var req TokenRequest
	if !readJSON(w, r, &req) {
		return
	}
	keys, err := s.d.Wallets.AuthKeys(r.Context(), req.WalletID)
	if errors.Is(err, wallet.ErrNotFound) {
		// Answer an unknown wallet exactly as a wrong signature, so the
		// endpoint does not tell which wallet ids exist.
		keys, err = nil, nil
	}
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	token, expires, err := auth.IssueWalletToken(r.Context(), s.d.DB, auth.TokenRequest{
		WalletID: req.WalletID, Timestamp: req.Timestamp, Signature: req.Signature, ReadOnly: req.ReadOnly,
		AcceptKeys: keys, Params: s.d.Wallets.Params(), Now: time.Now(),
	})
	if err != nil {
		status := auth.HTTPStatus(err)
		if status < 400 || status >= 500 {
			s.writeServiceError(w, r, err)
			return
		}
		writeError(w, status, auth.Code(err), err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, TokenResponse{Token: token, WalletID: req.WalletID, ReadOnly: req.ReadOnly, ExpiresAt: expires.UTC()})
}

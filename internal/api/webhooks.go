package api

// The webhook routes: endpoints that receive the event log, signed as the
// Standard Webhooks specification says, their deliveries and redelivery,
// over the webhook service (internal/webhook). Admin API keys only: an
// endpoint receives every event, of every wallet, so managing endpoints is
// an operator's job. Wallet tokens are refused.
//
// The endpoint's URL is answered as stored, with any user:password or query
// token it holds: only admin keys can read it. The answers of POST and of a
// PATCH that rotates the secret carry the new secret, once, with
// Cache-Control: no-store. Sent with an Idempotency-Key, such an answer is
// stored (as the idempotency layer stores every answer) and replayed to a
// retry with the same key for 24 hours, so a client whose answer was lost
// still gets its secret; the secret is in the same database in plain text
// anyway (signing needs it).

import (
	"net/http"
	"strconv"

	"github.com/coffer/coffer/internal/webhook"
)

var deliveryStatuses = []string{webhook.StatusPending, webhook.StatusSucceeded, webhook.StatusFailed}

// WebhookList is the body of GET /v1/webhooks.
type WebhookList struct {
	Webhooks []*webhook.Endpoint `json:"webhooks"`
}

// WebhookDeliveryPage is the body of GET /v1/webhooks/{id}/deliveries.
type WebhookDeliveryPage struct {
	Deliveries []*webhook.Delivery `json:"deliveries"`
	// NextBefore is the before of the next (older) page; absent when this
	// page is not full.
	NextBefore int64 `json:"next_before,omitempty"`
}

// webhooks answers 503 when the server runs without the webhook service,
// and 400 when a path or query value holds a NUL character, which
// PostgreSQL can neither store nor compare (it would be a 500).
func (s *Server) webhooks(w http.ResponseWriter, r *http.Request) bool {
	if s.d.Webhooks == nil {
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "webhook delivery is not running on this server")
		return false
	}
	return noNUL(w, r)
}

func (s *Server) handleCreateWebhook(w http.ResponseWriter, r *http.Request) {
	if !s.webhooks(w, r) {
		return
	}
	var req webhook.EndpointRequest
	if !readText(w, r, &req) {
		return
	}
	e, err := s.d.Webhooks.Create(r.Context(), req)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store") // the answer holds the secret
	writeJSON(w, http.StatusCreated, e)
}

func (s *Server) handleListWebhooks(w http.ResponseWriter, r *http.Request) {
	if !s.webhooks(w, r) {
		return
	}
	es, err := s.d.Webhooks.List(r.Context())
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	if es == nil {
		es = []*webhook.Endpoint{}
	}
	writeJSON(w, http.StatusOK, WebhookList{Webhooks: es})
}

func (s *Server) handleGetWebhook(w http.ResponseWriter, r *http.Request) {
	if !s.webhooks(w, r) {
		return
	}
	e, err := s.d.Webhooks.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

func (s *Server) handleUpdateWebhook(w http.ResponseWriter, r *http.Request) {
	if !s.webhooks(w, r) {
		return
	}
	var req webhook.EndpointUpdate
	if !readText(w, r, &req) {
		return
	}
	e, err := s.d.Webhooks.Update(r.Context(), r.PathValue("id"), req)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	if e.Secret != "" {
		w.Header().Set("Cache-Control", "no-store") // the answer holds the new secret
	}
	writeJSON(w, http.StatusOK, e)
}

// handleDeleteWebhook answers 204: the endpoint, its secrets, its
// deliveries and their attempts are gone.
func (s *Server) handleDeleteWebhook(w http.ResponseWriter, r *http.Request) {
	if !s.webhooks(w, r) {
		return
	}
	if err := s.d.Webhooks.Delete(r.Context(), r.PathValue("id")); err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleWebhookDeliveries(w http.ResponseWriter, r *http.Request) {
	if !s.webhooks(w, r) {
		return
	}
	q := r.URL.Query()
	f := webhook.DeliveryFilter{Status: q.Get("status")}
	err := oneOf("status", f.Status, deliveryStatuses)
	if err == nil {
		f.Before, err = intParam(q, "before", 0, 1, -1, "a delivery id, a positive integer")
	}
	if err == nil {
		f.Limit, err = limitParam(q)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, err.Error())
		return
	}
	ds, err := s.d.Webhooks.Deliveries(r.Context(), r.PathValue("id"), f)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	page := WebhookDeliveryPage{Deliveries: ds}
	if page.Deliveries == nil {
		page.Deliveries = []*webhook.Delivery{}
	}
	if n := len(ds); n == f.Limit {
		page.NextBefore = ds[n-1].ID
	}
	writeJSON(w, http.StatusOK, page)
}

// handleRedeliver answers 202: the delivery is queued (or, if one of the
// event was still pending, made due at once) and sent in its turn.
func (s *Server) handleRedeliver(w http.ResponseWriter, r *http.Request) {
	if !s.webhooks(w, r) {
		return
	}
	id, did := r.PathValue("id"), r.PathValue("did")
	n, err := strconv.ParseInt(did, 10, 64)
	if err != nil || n < 1 {
		writeError(w, http.StatusNotFound, CodeNotFound, "no delivery "+strconv.Quote(did)+" of webhook endpoint "+id+": delivery ids are positive integers")
		return
	}
	d, err := s.d.Webhooks.Redeliver(r.Context(), id, n)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, d)
}

package api

import (
	"encoding/json"
	"net/http"
)

// Error codes are part of the API contract: clients branch on them, so they
// never change once published. Messages are for people and may change.
const (
	CodeInvalidParameter = "invalid_parameter"
	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeInternal         = "internal"
	CodeInvalidJSON      = "invalid_json"
	CodeUnavailable      = "unavailable"
	CodeUnauthenticated  = "unauthenticated"
	CodeForbidden        = "forbidden"
)

// Error is the body of every failed request, wrapped as {"error": Error}.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ErrorResponse is the envelope around Error.
type ErrorResponse struct {
	Error Error `json:"error"`
}

// writeError answers with the standard error envelope.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, ErrorResponse{Error: Error{Code: code, Message: msg}})
}

// writeJSON encodes v before touching the response, so an encoding failure
// can still become a clean 500 instead of a truncated 200.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"encoding the response failed"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

package api

import "net/http"

// handleWS upgrades to the WebSocket event stream. The hub checks, per
// wallet joined, that the credential covers it.
func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	if s.d.Hub == nil {
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "WebSocket subscriptions are not running on this server")
		return
	}
	s.d.Hub.ServeWS(w, r, requestPrincipal(r))
}

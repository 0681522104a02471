package api

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/node"
)

// HealthResponse is the body of GET /healthz.
type HealthResponse struct {
	Status string `json:"status"` // always "ok"
}

// ReadyResponse is the body of GET /readyz.
type ReadyResponse struct {
	Status       string   `json:"status"`            // "ready" or "not_ready"
	Reasons      []string `json:"reasons,omitempty"` // why not ready, one line each
	NodeHeight   *int64   `json:"node_height,omitempty"`
	SyncedHeight int64    `json:"synced_height"`
	Lag          *int64   `json:"lag,omitempty"` // absent when the node did not answer
}

// StatusResponse is the body of GET /v1/status.
type StatusResponse struct {
	Version   string       `json:"version"`
	Coin      string       `json:"coin"`
	Network   string       `json:"network"`
	Node      NodeStatus   `json:"node"`
	Synced    SyncedStatus `json:"synced"`
	Lag       int64        `json:"lag"` // node height − synced height
	LastError string       `json:"last_error"`
	Halted    string       `json:"halted"`
	// Leader is whether this instance follows the chain and pays
	// withdrawals; the others serve the API only and read synced from the
	// database.
	Leader    bool      `json:"leader"`
	UpdatedAt time.Time `json:"updated_at,omitzero"` // when the follower last refreshed its view
}

// NodeStatus describes the full node. Height and hash come from the node
// itself when it answers, else from the follower's last view.
type NodeStatus struct {
	Reachable   bool   `json:"reachable"`
	Height      int64  `json:"height"`
	Hash        string `json:"hash"`
	MempoolSize int    `json:"mempool_size"`
	Error       string `json:"error,omitempty"` // why the node did not answer
}

// SyncedStatus is the last block the follower applied.
type SyncedStatus struct {
	Height int64  `json:"height"`
	Hash   string `json:"hash"`
}

// EventsResponse is the body of GET /v1/events.
type EventsResponse struct {
	Events []events.Event `json:"events"`
	// NextAfter is the after value for the next request: the last id
	// returned, or the given after when nothing was.
	NextAfter int64 `json:"next_after"`
}

//go:embed openapi.json
var openAPIDoc []byte

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, HealthResponse{Status: "ok"})
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	// The two probes are independent, so run them side by side: the
	// answer then takes the longer timeout, not the sum.
	var (
		wg      sync.WaitGroup
		dbErr   error
		info    *node.BlockchainInfo
		nodeErr error
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		c, cancel := context.WithTimeout(ctx, dbCheckTimeout)
		defer cancel()
		dbErr = s.d.DB.Ping(c)
	}()
	go func() {
		defer wg.Done()
		info, nodeErr = s.nodeInfo(ctx)
	}()
	wg.Wait()
	chain := s.d.Chain()

	resp := ReadyResponse{Status: "ready", SyncedHeight: chain.SyncedHeight}
	if dbErr != nil {
		resp.Reasons = append(resp.Reasons, "database unreachable: "+dbErr.Error())
	}
	if nodeErr != nil {
		resp.Reasons = append(resp.Reasons, nodeDownReason(nodeErr))
	}
	if chain.Halted != "" {
		resp.Reasons = append(resp.Reasons, "follower halted: "+chain.Halted)
	}
	// Lag is judged only against the node's live height: the follower's
	// remembered height could be stale and produce a misleading reason.
	if info != nil {
		lag := info.Blocks - chain.SyncedHeight
		resp.NodeHeight, resp.Lag = &info.Blocks, &lag
		switch {
		case lag > s.d.ReadyLag:
			resp.Reasons = append(resp.Reasons, fmt.Sprintf("sync lag %d blocks exceeds %d", lag, s.d.ReadyLag))
		case lag < 0 && chain.SyncedHeight >= 0:
			// The node lost blocks (a crash) or is resyncing: new blocks and
			// mempool changes cannot be seen until it catches up.
			resp.Reasons = append(resp.Reasons, fmt.Sprintf("node is behind: at height %d, synced height %d", info.Blocks, chain.SyncedHeight))
		}
	}
	if len(resp.Reasons) > 0 {
		resp.Status = "not_ready"
		writeJSON(w, http.StatusServiceUnavailable, resp)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	chain := s.d.Chain()
	resp := StatusResponse{
		Version: s.d.Version, Coin: s.d.Coin, Network: s.d.Network,
		Node: NodeStatus{
			Height: chain.NodeHeight, Hash: chain.NodeHash, MempoolSize: chain.MempoolSize,
		},
		Synced:    SyncedStatus{Height: chain.SyncedHeight, Hash: chain.SyncedHash},
		LastError: chain.LastError,
		Halted:    chain.Halted,
		Leader:    s.d.Leader(),
		UpdatedAt: chain.UpdatedAt,
	}
	if info, err := s.nodeInfo(r.Context()); err != nil {
		resp.Node.Error = err.Error()
	} else {
		resp.Node.Reachable, resp.Node.Height, resp.Node.Hash = true, info.Blocks, info.BestBlockHash
	}
	resp.Lag = resp.Node.Height - resp.Synced.Height
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	after, limit, wait, err := eventsQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, err.Error())
		return
	}
	evs, err := s.d.Events.Wait(r.Context(), after, limit, wait)
	if err != nil {
		if r.Context().Err() == nil { // a caller hanging up is not a server fault
			s.log.Error("reading events", "request_id", RequestID(r.Context()), "after", after, "err", err)
		}
		writeError(w, http.StatusInternalServerError, CodeInternal, "reading events failed")
		return
	}
	resp := EventsResponse{Events: evs, NextAfter: after}
	if resp.Events == nil {
		resp.Events = []events.Event{}
	}
	if n := len(evs); n > 0 {
		resp.NextAfter = evs[n-1].ID
	}
	writeJSON(w, http.StatusOK, resp)
}

// eventsQuery validates after, limit and wait, applying their defaults.
func eventsQuery(q url.Values) (after int64, limit int, wait time.Duration, err error) {
	if after, err = intParam(q, "after", 0, 0, -1, "a non-negative integer"); err != nil {
		return
	}
	n, err := intParam(q, "limit", defaultEventLimit, 1, events.MaxLimit,
		fmt.Sprintf("an integer from 1 to %d", events.MaxLimit))
	if err != nil {
		return
	}
	secs, err := intParam(q, "wait", 0, 0, maxWaitSeconds,
		fmt.Sprintf("a whole number of seconds from 0 to %d", maxWaitSeconds))
	return after, int(n), time.Duration(secs) * time.Second, err
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	s.metrics.handler.ServeHTTP(w, r)
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPIDoc)
}

// nodeInfo asks the node for its tip within the probe timeout.
func (s *Server) nodeInfo(ctx context.Context) (*node.BlockchainInfo, error) {
	if s.d.Node == nil {
		return nil, errors.New("no node client configured")
	}
	ctx, cancel := context.WithTimeout(ctx, nodeCheckTimeout)
	defer cancel()
	info, err := s.d.Node.GetBlockchainInfo(ctx)
	if err == nil && info == nil {
		err = errors.New("empty getblockchaininfo answer")
	}
	return info, err
}

// nodeDownReason avoids "node unreachable: node unreachable: …" since the
// node client's transport errors already carry that prefix.
func nodeDownReason(err error) string {
	const prefix = "node unreachable: "
	return prefix + strings.TrimPrefix(err.Error(), prefix)
}

// intParam reads an optional integer query parameter in [min, max] (max < 0:
// unbounded), naming the parameter and the rejected value in its error.
func intParam(q url.Values, name string, def, min, max int64, want string) (int64, error) {
	vals, ok := q[name]
	if !ok {
		return def, nil
	}
	if len(vals) > 1 {
		return 0, fmt.Errorf("%s must be given at most once, got %d values", name, len(vals))
	}
	n, err := strconv.ParseInt(vals[0], 10, 64)
	if err != nil || n < min || (max >= 0 && n > max) {
		return 0, fmt.Errorf("%s must be %s, got %q", name, want, vals[0])
	}
	return n, nil
}

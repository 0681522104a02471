// Package node is a JSON-RPC client for bitcoind-compatible full nodes. It
// speaks the dialect shared by btcd, Bitcoin Core and its forks (Litecoin
// Core), retries transport failures with backoff and returns node-side
// failures as typed *RPCError values.
package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// Config says how to reach a node.
type Config struct {
	URL        string        // e.g. http://127.0.0.1:18443
	User       string        // RPC user; ignored when CookieFile is set
	Password   string        // RPC password
	CookieFile string        // path of the node's .cookie file (user:password)
	Timeout    time.Duration // per request; default 30s
	Retries    int           // extra attempts on transport errors; default 3
}

// ErrUnauthorized means the node rejected the credentials. It is never retried:
// a wrong password does not fix itself.
var ErrUnauthorized = errors.New("node rejected the RPC credentials (check rpc user/password or cookie file)")

// RPCError is an error the node returned for a request it understood.
type RPCError struct {
	Method  string
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *RPCError) Error() string {
	return fmt.Sprintf("node rpc %s: %s (code %d)", e.Method, e.Message, e.Code)
}

// Well-known RPC error codes shared by bitcoind and btcd.
const (
	CodeMethodNotFound   = -32601
	CodeInvalidParameter = -8
	CodeBlockNotFound    = -5 // also "no such transaction"
	CodeVerifyRejected   = -26
	CodeAlreadyInChain   = -27
	CodeInWarmup         = -28
)

// IsCode reports whether err is an *RPCError with the given code.
func IsCode(err error, code int) bool {
	var re *RPCError
	return errors.As(err, &re) && re.Code == code
}

// TransportError wraps a failure to talk to the node at all (refused
// connection, timeout, bad HTTP status). Callers can tell "node down" from
// "node said no" with errors.As.
type TransportError struct{ Err error }

func (e *TransportError) Error() string { return "node unreachable: " + e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

// Client is safe for concurrent use.
type Client struct {
	cfg  Config
	http *http.Client
	id   atomic.Uint64
}

// New returns a client; it does not contact the node.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("node url is empty")
	}
	if !strings.HasPrefix(cfg.URL, "http://") && !strings.HasPrefix(cfg.URL, "https://") {
		cfg.URL = "http://" + cfg.URL
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     60 * time.Second,
	}
	return &Client{cfg: cfg, http: &http.Client{Transport: tr, Timeout: cfg.Timeout}}, nil
}

// URL is the node's RPC address.
func (c *Client) URL() string { return c.cfg.URL }

func (c *Client) credentials() (string, string, error) {
	if c.cfg.CookieFile == "" {
		return c.cfg.User, c.cfg.Password, nil
	}
	// Re-read on every call: the node rewrites the cookie when it restarts.
	b, err := os.ReadFile(c.cfg.CookieFile)
	if err != nil {
		return "", "", &TransportError{fmt.Errorf("reading cookie file: %w", err)}
	}
	user, pass, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	if !ok {
		return "", "", fmt.Errorf("cookie file %s is not user:password", c.cfg.CookieFile)
	}
	return user, pass, nil
}

type request struct {
	JSONRPC string `json:"jsonrpc"`
	ID      uint64 `json:"id"`
	Method  string `json:"method"`
	Params  []any  `json:"params"`
}

type response struct {
	Result json.RawMessage `json:"result"`
	Error  *RPCError       `json:"error"`
}

// Call invokes method with params and decodes the result into out (which may
// be nil). Transport errors are retried with exponential backoff; RPC errors
// and authentication failures are returned at once.
func (c *Client) Call(ctx context.Context, method string, out any, params ...any) error {
	if params == nil {
		params = []any{}
	}
	backoff := 200 * time.Millisecond
	var err error
	for attempt := 0; ; attempt++ {
		err = c.call(ctx, method, out, params)
		var te *TransportError
		if err == nil || !errors.As(err, &te) || attempt >= c.cfg.Retries || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

func (c *Client) call(ctx context.Context, method string, out any, params []any) error {
	body, err := json.Marshal(request{JSONRPC: "1.0", ID: c.id.Add(1), Method: method, Params: params})
	if err != nil {
		return err
	}
	user, pass, err := c.credentials()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(user, pass)
	resp, err := c.http.Do(req)
	if err != nil {
		return &TransportError{err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return &TransportError{err}
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return ErrUnauthorized
	}
	var r response
	if err := json.Unmarshal(data, &r); err != nil {
		// bitcoind answers RPC errors with HTTP 500 and a JSON body, so only a
		// body that is not JSON-RPC counts as a transport problem.
		return &TransportError{fmt.Errorf("%s: HTTP %d: %s", method, resp.StatusCode, snippet(data))}
	}
	if r.Error != nil {
		r.Error.Method = method
		return r.Error
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(r.Result, out); err != nil {
		return fmt.Errorf("node rpc %s: decoding result: %w", method, err)
	}
	return nil
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/store"
)

// Idempotency keys (Stripe's scheme). A mutating request (POST, PUT, PATCH,
// DELETE) on a route that needs a credential may carry an Idempotency-Key
// header. The first request with a key runs and its answer is stored; a
// retry with the same key and the same request gets the stored answer back,
// byte for byte, with Idempotent-Replayed: true, and changes nothing. Keys
// belong to the principal that sent them (an API key, or a wallet for wallet
// tokens) and expire after IdempotencyKeyRetention.
//
// Stored answers are the 2xx, 3xx and 4xx ones, except those that describe a
// passing state rather than the request: 401, 403, 408, 429 and a 409 whose
// code is conflict (retry) or idempotency_*. Those, 5xx answers, panics and
// requests whose client left before an answer was written delete the key,
// so the client may retry with it.

// Headers of the scheme.
const (
	IdempotencyKeyHeader     = "Idempotency-Key"
	IdempotentReplayedHeader = "Idempotent-Replayed"
)

// Error codes of the scheme.
const (
	CodeIdempotencyKeyRequired = "idempotency_key_required"
	CodeIdempotencyKeyReused   = "idempotency_key_reused"
	CodeIdempotencyInProgress  = "idempotency_in_progress"
)

// IdempotencyKeyRetention is how long a key and its answer are kept. An
// older key counts as unused; PruneIdempotencyKeys deletes it.
const IdempotencyKeyRetention = 24 * time.Hour

const (
	// defaultIdempotencyLease is how long a request holds its key. A retry
	// after the lease has run out takes the key over and runs again; the
	// domain code behind a route must then be idempotent on its own.
	defaultIdempotencyLease = 60 * time.Second
	maxIdempotencyKeyLen    = 255
	// codeRetryConflict is the code of a 409 that asks for a retry
	// (wallet.ErrConflict: the wallet is still syncing, inputs were taken).
	codeRetryConflict = "conflict"
	// maxStoredResponse bounds a stored answer; a larger one is not stored.
	maxStoredResponse = 8 << 20
	// idempotencyDBTimeout bounds the bookkeeping after the handler, which
	// runs even when the client has left.
	idempotencyDBTimeout = 10 * time.Second
)

// idempotencyMode is how a route treats the Idempotency-Key header. The
// zero value honours a key on mutating routes that need a credential and
// does nothing on the others.
type idempotencyMode int

const (
	idempotencyOptional idempotencyMode = iota // a key is honoured when sent
	idempotencyRequired                        // a request without a key is refused (idempotency_key_required)
	idempotencyOff                             // the header is ignored
)

// idempotencyConfig are the server's idempotency settings; the zero value
// means the defaults. Tests set them.
type idempotencyConfig struct {
	now   func() time.Time
	lease time.Duration
}

func (c idempotencyConfig) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// leaseSeconds is the lease in whole seconds, at least one, so a takeover
// always moves locked_until forward (see claimIdempotencyKey).
func (c idempotencyConfig) leaseSeconds() int64 {
	l := c.lease
	if l <= 0 {
		l = defaultIdempotencyLease
	}
	return max(1, int64((l+time.Second-1)/time.Second))
}

// usesIdempotency reports whether the route honours Idempotency-Key.
func (rt route) usesIdempotency() bool {
	if rt.access == public || rt.idempotency == idempotencyOff {
		return false
	}
	switch rt.method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

type idempotencyKeyCtx struct{}

// idempotencyKey is the request's Idempotency-Key, or "" when it has none or
// its route does not use one. Domain code can store it with the change it
// makes (in the same transaction) to stay idempotent past the key's lease.
func idempotencyKey(r *http.Request) string {
	k, _ := r.Context().Value(idempotencyKeyCtx{}).(string)
	return k
}

// requestPrincipal is the principal authorize attached to the request, or
// nil on a public route.
func requestPrincipal(r *http.Request) *auth.Principal {
	p, _ := r.Context().Value(principalKey{}).(*auth.Principal)
	return p
}

// idempotencyScope names whose keys a principal uses: an API key's own, or
// the wallet's for wallet tokens (every token of a wallet shares them).
func idempotencyScope(p *auth.Principal) string {
	switch {
	case p == nil:
		return ""
	case p.Kind == auth.KindAPIKey && p.KeyID != "":
		return "key:" + p.KeyID
	case p.Kind == auth.KindWalletToken && p.WalletID != "":
		return "wallet:" + p.WalletID
	}
	return ""
}

// checkIdempotencyKey returns what is wrong with a key, or "".
func checkIdempotencyKey(k string) string {
	if k == "" || len(k) > maxIdempotencyKeyLen {
		return fmt.Sprintf("Idempotency-Key must be 1 to %d characters long, got %d; a UUID is a good choice", maxIdempotencyKeyLen, len(k))
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return fmt.Sprintf("Idempotency-Key must be printable ASCII; character %d is not", i+1)
		}
	}
	return ""
}

// requestFingerprint identifies a request: the hex SHA-256 of its method,
// path with query, and body. A retry must have the same one.
func requestFingerprint(method, uri string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(method + " " + uri + "\n"))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// idempotent runs the route's handler under the request's Idempotency-Key.
// It is called after authorize.
func (s *Server) idempotent(rt route, w http.ResponseWriter, r *http.Request) {
	if !rt.usesIdempotency() {
		rt.handle(s, w, r)
		return
	}
	values := r.Header.Values(IdempotencyKeyHeader)
	switch {
	case len(values) == 0 && rt.idempotency == idempotencyRequired:
		writeError(w, http.StatusBadRequest, CodeIdempotencyKeyRequired,
			"this request needs an Idempotency-Key header (1 to 255 printable ASCII characters, such as a UUID), so that retrying it cannot repeat it")
		return
	case len(values) == 0:
		rt.handle(s, w, r)
		return
	case len(values) > 1:
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, "send one Idempotency-Key header, not several")
		return
	}
	key := values[0]
	if msg := checkIdempotencyKey(key); msg != "" {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, msg)
		return
	}
	scope := idempotencyScope(requestPrincipal(r))
	if scope == "" { // authorize attaches a principal to every route that gets here
		s.log.Error("idempotency: request has no principal", "request_id", RequestID(r.Context()), "path", r.URL.Path)
		writeError(w, http.StatusInternalServerError, CodeInternal, "internal error (request id "+RequestID(r.Context())+")")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		msg := "reading the request body failed: " + err.Error()
		if errors.As(err, &tooBig) {
			msg = fmt.Sprintf("request body is larger than %d bytes", maxBody)
		}
		writeError(w, http.StatusBadRequest, CodeInvalidJSON, msg)
		return
	}
	req := idemRequest{
		scope: scope, key: key, method: r.Method, path: r.URL.Path,
		fingerprint: requestFingerprint(r.Method, r.URL.RequestURI(), body),
	}
	claim, err := claimIdempotencyKey(r.Context(), s.d.DB, req, s.idem.clock(), s.idem.leaseSeconds())
	if err != nil {
		if r.Context().Err() != nil {
			return // the caller hung up
		}
		id := RequestID(r.Context())
		s.log.Error("idempotency: claiming key", "request_id", id, "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, CodeInternal, "internal error (request id "+id+")")
		return
	}
	switch claim.outcome {
	case claimReplay:
		h := w.Header()
		if claim.stored.contentType != "" {
			h.Set("Content-Type", claim.stored.contentType)
			h.Set("X-Content-Type-Options", "nosniff")
		}
		if claim.stored.location != "" {
			h.Set("Location", claim.stored.location)
		}
		h.Set(IdempotentReplayedHeader, "true")
		w.WriteHeader(claim.stored.status)
		w.Write(claim.stored.body)
		return
	case claimInProgress:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusConflict, CodeIdempotencyInProgress,
			"a request with this Idempotency-Key is still being processed; retry shortly")
		return
	case claimMismatch:
		writeError(w, http.StatusConflict, CodeIdempotencyKeyReused, fmt.Sprintf(
			"this Idempotency-Key was already used for a different request (first for %s %s, with other parameters or body); use a new key for a new request",
			claim.stored.method, claim.stored.path))
		return
	}

	rec := &idemRecorder{ResponseWriter: w}
	r2 := r.WithContext(context.WithValue(r.Context(), idempotencyKeyCtx{}, key))
	r2.Body = io.NopCloser(bytes.NewReader(body))
	finished := false
	defer func() {
		if !finished { // the handler panicked: let the client retry with the key
			s.settleIdempotencyKey(r, req, claim.lockedUntil, nil)
		}
	}()
	rt.handle(s, rec, r2)
	finished = true
	if !rec.wrote && r.Context().Err() != nil {
		rec = nil // the caller left before an answer: nothing to keep
	}
	s.settleIdempotencyKey(r, req, claim.lockedUntil, rec)
}

// settleIdempotencyKey stores the handler's answer under the key, or deletes
// the key when the answer is nil or not one to keep. Either happens only
// while the request still holds the key's lease.
func (s *Server) settleIdempotencyKey(r *http.Request, req idemRequest, lockedUntil int64, rec *idemRecorder) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), idempotencyDBTimeout)
	defer cancel()
	var (
		held bool
		err  error
		what = "storing the answer"
	)
	if ans, ok := rec.answer(); ok {
		held, err = completeIdempotencyKey(ctx, s.d.DB, req, lockedUntil, ans)
	} else {
		what = "releasing the key"
		held, err = releaseIdempotencyKey(ctx, s.d.DB, req, lockedUntil)
	}
	switch {
	case err != nil:
		// The key stays in progress until its lease runs out; then a retry
		// runs the request again.
		s.log.Error("idempotency: "+what, "request_id", RequestID(r.Context()), "method", r.Method, "path", r.URL.Path, "err", err)
	case !held:
		s.log.Warn("idempotency: the request outlived its lease and another took the key over; its answer is not stored",
			"request_id", RequestID(r.Context()), "method", r.Method, "path", r.URL.Path)
	}
}

// idemRecorder passes a handler's answer on to the client and keeps a copy.
type idemRecorder struct {
	http.ResponseWriter
	wrote       bool
	status      int
	contentType string
	location    string
	body        bytes.Buffer
	tooBig      bool
}

func (w *idemRecorder) WriteHeader(status int) {
	if !w.wrote && status >= 200 { // 1xx answers are not the final one
		w.wrote, w.status = true, status
		w.contentType = w.Header().Get("Content-Type")
		w.location = w.Header().Get("Location")
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *idemRecorder) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if !w.tooBig {
		if w.body.Len()+len(b) > maxStoredResponse {
			w.tooBig = true
			w.body = bytes.Buffer{}
		} else {
			w.body.Write(b)
		}
	}
	return w.ResponseWriter.Write(b)
}

// Flush is forwarded so streaming handlers keep working behind the recorder.
func (w *idemRecorder) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *idemRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// idemAnswer is a stored answer.
type idemAnswer struct {
	status      int
	contentType string
	location    string
	body        []byte
}

// answer is the recorded answer and whether it is one to keep.
func (w *idemRecorder) answer() (idemAnswer, bool) {
	if w == nil || w.tooBig {
		return idemAnswer{}, false
	}
	a := idemAnswer{status: w.status, contentType: w.contentType, location: w.location, body: w.body.Bytes()}
	if !w.wrote { // net/http answers 200 with no body
		a.status = http.StatusOK
	}
	if a.body == nil {
		a.body = []byte{} // NULL is reserved for keys in progress
	}
	if a.contentType == "" && len(a.body) > 0 { // what net/http sent
		a.contentType = http.DetectContentType(a.body)
	}
	return a, keepAnswer(a.status, a.body)
}

// keepAnswer reports whether an answer is final for its request, and so
// replayed to retries. 5xx answers, 401 and 403 (the credential, not the
// request), 408 and 429 (try again later) and 409 conflicts that ask for a
// retry are not.
func keepAnswer(status int, body []byte) bool {
	switch {
	case status >= 500, status == http.StatusUnauthorized, status == http.StatusForbidden,
		status == http.StatusRequestTimeout, status == http.StatusTooManyRequests:
		return false
	case status == http.StatusConflict:
		var e ErrorResponse
		if json.Unmarshal(body, &e) != nil {
			return true
		}
		return e.Error.Code != codeRetryConflict && !strings.HasPrefix(e.Error.Code, "idempotency_")
	}
	return true
}

// Storage: table idempotency_keys (migration 0006). Times are unix seconds.

// idemRequest is a request under a key.
type idemRequest struct {
	scope, key, method, path, fingerprint string
}

type claimOutcome int

const (
	claimTaken      claimOutcome = iota // the request holds the key: run it
	claimReplay                         // the key has a stored answer to the same request
	claimInProgress                     // another request with the key holds its lease
	claimMismatch                       // the key was used for a different request
)

type idemClaim struct {
	outcome     claimOutcome
	lockedUntil int64 // claimTaken: the lease's end, which also fences the holder's later writes
	stored      struct {
		method, path string
		idemAnswer
	}
}

// claimIdempotencyKey looks the key up and takes it (a new key, an expired
// one, or one whose lease has run out) or says why not. A takeover sets
// locked_until to now+lease, later than the old value (which is ≤ now), so
// the previous holder's complete or release, conditioned on its own
// locked_until, matches nothing.
func claimIdempotencyKey(ctx context.Context, db *store.DB, req idemRequest, now time.Time, leaseSeconds int64) (idemClaim, error) {
	nowUnix := now.Unix()
	lockedUntil := nowUnix + leaseSeconds
	expired := now.Add(-IdempotencyKeyRetention).Unix()
	var c idemClaim
	for attempt := 1; ; attempt++ {
		err := db.InTx(ctx, func(tx *store.Tx) error {
			c = idemClaim{}
			var (
				fingerprint, state string
				status             sql.NullInt64
				createdAt, until   int64
			)
			err := tx.QueryRowContext(ctx, `SELECT method, path, fingerprint, state, status, content_type, location, body, created_at, locked_until
				FROM idempotency_keys WHERE principal = $1 AND key = $2`, req.scope, req.key).
				Scan(&c.stored.method, &c.stored.path, &fingerprint, &state, &status, &c.stored.contentType,
					&c.stored.location, &c.stored.body, &createdAt, &until)
			live := state == "in_progress" && until > nowUnix
			switch {
			case errors.Is(err, sql.ErrNoRows):
				c.outcome, c.lockedUntil = claimTaken, lockedUntil
				_, err = tx.ExecContext(ctx, `INSERT INTO idempotency_keys
					(principal, key, method, path, fingerprint, state, created_at, locked_until)
					VALUES ($1, $2, $3, $4, $5, 'in_progress', $6, $7)`,
					req.scope, req.key, req.method, req.path, req.fingerprint, nowUnix, lockedUntil)
				return err
			case err != nil:
				return err
			case createdAt < expired && !live: // past retention: a fresh key
				c.outcome, c.lockedUntil = claimTaken, lockedUntil
				_, err = tx.ExecContext(ctx, `UPDATE idempotency_keys SET method = $3, path = $4, fingerprint = $5,
					state = 'in_progress', status = NULL, content_type = '', location = '', body = NULL,
					created_at = $6, locked_until = $7
					WHERE principal = $1 AND key = $2`,
					req.scope, req.key, req.method, req.path, req.fingerprint, nowUnix, lockedUntil)
				return err
			case fingerprint != req.fingerprint:
				c.outcome = claimMismatch
			case state == "done":
				c.outcome = claimReplay
				c.stored.status = int(status.Int64)
			case live:
				c.outcome = claimInProgress
			default: // the holder's lease ran out: take the key over
				c.outcome, c.lockedUntil = claimTaken, lockedUntil
				_, err = tx.ExecContext(ctx, `UPDATE idempotency_keys SET locked_until = $3
					WHERE principal = $1 AND key = $2 AND state = 'in_progress' AND locked_until = $4`,
					req.scope, req.key, lockedUntil, until)
				return err
			}
			return nil
		})
		// A unique violation means a concurrent request inserted the key
		// first: look again.
		if err != nil && store.IsUniqueViolation(err) && attempt < 5 {
			continue
		}
		return c, err
	}
}

// completeIdempotencyKey stores the answer and reports whether the request
// still held the key.
func completeIdempotencyKey(ctx context.Context, db *store.DB, req idemRequest, lockedUntil int64, a idemAnswer) (bool, error) {
	return execHeld(ctx, db, `UPDATE idempotency_keys SET state = 'done', status = $4, content_type = $5, location = $6, body = $7
		WHERE principal = $1 AND key = $2 AND state = 'in_progress' AND locked_until = $3`,
		req.scope, req.key, lockedUntil, a.status, a.contentType, a.location, a.body)
}

// releaseIdempotencyKey deletes the key and reports whether the request
// still held it.
func releaseIdempotencyKey(ctx context.Context, db *store.DB, req idemRequest, lockedUntil int64) (bool, error) {
	return execHeld(ctx, db, `DELETE FROM idempotency_keys
		WHERE principal = $1 AND key = $2 AND state = 'in_progress' AND locked_until = $3`,
		req.scope, req.key, lockedUntil)
}

func execHeld(ctx context.Context, db *store.DB, q string, args ...any) (bool, error) {
	var n int64
	err := db.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n > 0, err
}

// PruneIdempotencyKeys deletes the idempotency keys first used before
// olderThan (normally now − IdempotencyKeyRetention), except ones a request
// is still running under, and returns how many it deleted. Expired keys
// already count as unused; pruning only reclaims their space.
func PruneIdempotencyKeys(ctx context.Context, db *store.DB, olderThan time.Time) (int64, error) {
	var n int64
	err := db.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM idempotency_keys
			WHERE created_at < $1 AND NOT (state = 'in_progress' AND locked_until > $2)`,
			olderThan.Unix(), time.Now().Unix())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

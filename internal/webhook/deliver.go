package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
)

const (
	fanOutBatch = 500              // events fanned out per transaction
	fanOutWait  = 30 * time.Second // one long-poll of the event log
	burst       = 100              // deliveries a worker sends before giving its slot back
	retryPause  = time.Second      // after a database error in a loop
	insertRows  = 200              // delivery rows per INSERT statement
)

// Run fans events out to deliveries and sends them until ctx ends; then it
// aborts the attempts in flight (they are not counted and are retried at
// once by the next instance to run), waits for its workers and returns nil.
// Run may be called by one goroutine at a time.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("webhook: Run is already running")
	}
	defer s.running.Store(false)
	var wg sync.WaitGroup
	wg.Go(func() { s.fanOutLoop(ctx) })
	s.scheduleLoop(ctx)
	wg.Wait()
	return nil
}

// ---- fan-out ----

var errCursorMoved = errors.New("webhook: the dispatch cursor moved (another instance fanned these events out)")

func (s *Service) fanOutLoop(ctx context.Context) {
	for ctx.Err() == nil {
		if err := s.fanOut(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("webhook fan-out failed; retrying", "err", err)
			sleep(ctx, retryPause)
		}
	}
}

// fanOut queues the deliveries of the next batch of events, waiting for
// events when there are none.
func (s *Service) fanOut(ctx context.Context) error {
	cur, err := s.cursor(ctx)
	if err != nil {
		return err
	}
	evs, err := s.events.Wait(ctx, cur, fanOutBatch, fanOutWait)
	if err != nil || len(evs) == 0 {
		return err
	}
	queued := 0
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		queued = 0
		now := time.Now()
		res, err := tx.ExecContext(ctx, `UPDATE webhook_cursor SET last_event_id = $1, updated_at = $2
			WHERE id = 1 AND last_event_id = $3`, evs[len(evs)-1].ID, now.Unix(), cur)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return errCursorMoved
		}
		eps, err := enabledEndpoints(ctx, tx)
		if err != nil {
			return err
		}
		var rows [][2]any // endpoint id, event id
		for _, ev := range evs {
			for _, ep := range eps {
				if ev.ID > ep.after && (ep.wallet == "" || ep.wallet == ev.WalletID) && matchType(ep.types, ev.Type) {
					rows = append(rows, [2]any{ep.id, ev.ID})
				}
			}
		}
		queued = len(rows)
		return insertDeliveries(ctx, tx, rows, "event", now.Add(s.cfg.Schedule[0]).UnixMilli(), now.Unix())
	})
	if errors.Is(err, errCursorMoved) {
		return nil
	}
	if err == nil && queued > 0 {
		s.wakeUp()
	}
	return err
}

// cursor returns the last event fanned out. If the row is missing (the
// migration creates it; an operator may have deleted it) it is made again
// where no event can be missed: after the newest event already queued, or
// the oldest endpoint's starting point if that is later, or at the end of
// the log when there are no endpoints. Events fanned out twice are queued
// once (the unique key).
func (s *Service) cursor(ctx context.Context) (int64, error) {
	var cur int64
	err := s.db.QueryRowContext(ctx, `SELECT last_event_id FROM webhook_cursor WHERE id = 1`).Scan(&cur)
	if !errors.Is(err, sql.ErrNoRows) {
		return cur, err
	}
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		var queued, after sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MAX(event_id) FROM webhook_deliveries WHERE origin = 'event'`).Scan(&queued); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT MIN(after_event_id) FROM webhook_endpoints`).Scan(&after); err != nil {
			return err
		}
		last, err := lastEventID(ctx, tx)
		if err != nil {
			return err
		}
		start := last
		if after.Valid {
			start = max(after.Int64, queued.Int64)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO webhook_cursor (id, last_event_id, updated_at) VALUES (1, $1, $2)
			ON CONFLICT (id) DO NOTHING`, start, time.Now().Unix())
		return err
	})
	if err != nil {
		return 0, err
	}
	err = s.db.QueryRowContext(ctx, `SELECT last_event_id FROM webhook_cursor WHERE id = 1`).Scan(&cur)
	return cur, err
}

type fanOutEndpoint struct {
	id, wallet string
	types      []string
	after      int64
}

func enabledEndpoints(ctx context.Context, q querier) ([]fanOutEndpoint, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, COALESCE(wallet_id, ''), event_types, after_event_id
		FROM webhook_endpoints WHERE enabled ORDER BY id`)
	return store.Collect(rows, err, func(row interface{ Scan(...any) error }) (fanOutEndpoint, error) {
		var e fanOutEndpoint
		var types string
		if err := row.Scan(&e.id, &e.wallet, &types, &e.after); err != nil {
			return e, err
		}
		if err := json.Unmarshal([]byte(types), &e.types); err != nil {
			return e, fmt.Errorf("webhook: endpoint %s: event_types: %w", e.id, err)
		}
		return e, nil
	})
}

// insertDeliveries adds pending deliveries, a few hundred rows per
// statement. An (endpoint, event) pair already queued by the dispatcher is
// skipped.
func insertDeliveries(ctx context.Context, tx *store.Tx, rows [][2]any, origin string, nextMS, now int64) error {
	for len(rows) > 0 {
		n := min(len(rows), insertRows)
		var b strings.Builder
		b.WriteString(`INSERT INTO webhook_deliveries (endpoint_id, event_id, origin, status, attempts, next_attempt_ms,
			created_at, updated_at) VALUES `)
		args := []any{origin, nextMS, now}
		for i, r := range rows[:n] {
			if i > 0 {
				b.WriteString(", ")
			}
			args = append(args, r[0], r[1])
			fmt.Fprintf(&b, "($%d, $%d, $1, 'pending', 0, $2, $3, $3)", len(args)-1, len(args))
		}
		b.WriteString(` ON CONFLICT DO NOTHING`)
		if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// ---- scheduling ----

// head is an endpoint's oldest pending delivery.
type head struct {
	endpoint    string
	nextMS      int64
	lockedUntil int64
}

// scheduleLoop starts a worker for every enabled endpoint whose oldest
// pending delivery is due, at most MaxConcurrency at a time and one per
// endpoint, and sleeps until the next is due, a worker ends or new work is
// queued here. When ctx ends it waits for its workers.
func (s *Service) scheduleLoop(ctx context.Context) {
	busy := map[string]bool{}
	done := make(chan string)
	defer func() {
		for len(busy) > 0 {
			delete(busy, <-done)
		}
	}()
	for {
		wait := s.cfg.PollInterval
		heads, err := s.heads(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Error("webhook: reading the delivery queue failed", "err", err)
		}
		now := time.Now().UnixMilli()
		for _, h := range heads {
			if busy[h.endpoint] {
				continue
			}
			due := h.nextMS
			if h.lockedUntil >= due {
				due = h.lockedUntil + 1 // leased by another instance, or one that died
			}
			if due > now {
				wait = min(wait, time.Duration(due-now)*time.Millisecond)
				continue
			}
			if len(busy) >= s.cfg.MaxConcurrency {
				continue // a worker ending wakes us
			}
			busy[h.endpoint] = true
			go func(ep string) {
				s.work(ctx, ep)
				done <- ep
			}(h.endpoint)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case ep := <-done:
			delete(busy, ep)
		case <-s.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// heads returns the oldest pending delivery of every enabled endpoint.
func (s *Service) heads(ctx context.Context) ([]head, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT d.endpoint_id, d.next_attempt_ms, COALESCE(d.locked_until_ms, 0)
		FROM (SELECT endpoint_id, MIN(id) AS id FROM webhook_deliveries WHERE status = 'pending' GROUP BY endpoint_id) h
		JOIN webhook_deliveries d ON d.id = h.id
		JOIN webhook_endpoints e ON e.id = d.endpoint_id
		WHERE e.enabled`)
	return store.Collect(rows, err, func(row interface{ Scan(...any) error }) (head, error) {
		var h head
		err := row.Scan(&h.endpoint, &h.nextMS, &h.lockedUntil)
		return h, err
	})
}

// ---- one endpoint ----

// claim is a leased delivery, ready to send.
type claim struct {
	delivery, event int64
	attempt         int    // the number of the attempt about to be made, from 1
	endpoint, url   string // url: the command's path for the script hook
	eventType       string
	wallet          string // the event's wallet id; "" if none
	secrets         [][]byte
	body            []byte
}

// work sends an endpoint's due deliveries in order until none is due, up to
// burst of them. The result of one attempt is recorded in the transaction
// that claims the next.
func (s *Service) work(ctx context.Context, endpoint string) {
	c, err := s.claim(ctx, endpoint)
	for i := 0; ; i++ {
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("webhook: claiming a delivery failed", "endpoint", endpoint, "err", err)
				sleep(ctx, retryPause) // keep the slot: no tight loop while the database is away
			}
			return
		}
		if c == nil {
			return // nothing due, or another instance holds it
		}
		res := s.send(ctx, c)
		if !res.ok && ctx.Err() != nil {
			// Shutting down: the attempt was cut short by us, not by the
			// receiver. Do not count it; let the next instance retry now.
			s.release(c)
			return
		}
		s.attempts.Add(1)
		if res.ok {
			s.succeeded.Add(1)
		}
		next := i+1 < burst && ctx.Err() == nil
		var status string
		status, c, err = s.record(context.WithoutCancel(ctx), c, res, next)
		if errors.Is(err, errLeaseLost) {
			s.leaseLost.Add(1)
			s.log.Warn("webhook: an attempt's result is not recorded: its delivery was deleted or its lease passed to another instance",
				"endpoint", endpoint)
			return
		}
		if err != nil {
			s.log.Error("webhook: recording an attempt failed; it will be retried when the lease ends",
				"endpoint", endpoint, "err", err)
			sleep(ctx, retryPause)
			return
		}
		if status == StatusPending {
			return // the next attempt is due later
		}
	}
}

// claim leases the endpoint's oldest pending delivery if it is due and not
// leased, and loads what sending it needs. It returns nil when there is
// nothing to claim.
func (s *Service) claim(ctx context.Context, endpoint string) (*claim, error) {
	var c *claim
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		var err error
		c, err = s.claimIn(ctx, tx, endpoint)
		return err
	})
	return c, err
}

// claimIn is claim inside tx.
func (s *Service) claimIn(ctx context.Context, tx *store.Tx, endpoint string) (*claim, error) {
	now := time.Now().UnixMilli()
	var id, event int64
	var attempts int
	err := tx.QueryRowContext(ctx, `UPDATE webhook_deliveries SET locked_by = $1, locked_until_ms = $2
		WHERE id = (SELECT MIN(id) FROM webhook_deliveries WHERE endpoint_id = $3 AND status = 'pending')
		  AND next_attempt_ms <= $4 AND (locked_until_ms IS NULL OR locked_until_ms < $4)
		  AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $3 AND enabled)
		RETURNING id, event_id, attempts`,
		s.cfg.Instance, now+(s.attemptTimeout(endpoint)+s.cfg.LeaseMargin).Milliseconds(), endpoint, now).Scan(&id, &event, &attempts)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	c := &claim{delivery: id, event: event, attempt: attempts + 1, endpoint: endpoint}
	if err := tx.QueryRowContext(ctx, `SELECT url FROM webhook_endpoints WHERE id = $1`, endpoint).Scan(&c.url); err != nil {
		return nil, err
	}
	if c.secrets, err = activeSecrets(ctx, tx, endpoint, time.Now().Unix()); err != nil {
		return nil, err
	}
	var ev events.Event
	var data string
	if err := tx.QueryRowContext(ctx, `SELECT id, type, COALESCE(wallet_id, ''), data, created_at FROM events WHERE id = $1`,
		event).Scan(&ev.ID, &ev.Type, &ev.WalletID, &data, &ev.CreatedAt); err != nil {
		return nil, fmt.Errorf("webhook: loading event %d: %w", event, err)
	}
	ev.Data = json.RawMessage(data)
	c.eventType, c.wallet = ev.Type, ev.WalletID
	if c.body, err = json.Marshal(ev); err != nil {
		return nil, err
	}
	return c, nil
}

// activeSecrets returns the keys of the endpoint's secrets that sign now,
// newest first.
func activeSecrets(ctx context.Context, q querier, endpoint string, now int64) ([][]byte, error) {
	rows, err := q.QueryContext(ctx, `SELECT secret FROM webhook_secrets WHERE endpoint_id = $1
		AND (expires_at IS NULL OR expires_at > $2)
		ORDER BY CASE WHEN expires_at IS NULL THEN 0 ELSE 1 END, created_at DESC, expires_at DESC, secret`, endpoint, now)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var sec string
		if err := rows.Scan(&sec); err != nil {
			return nil, err
		}
		key, err := secretKey(sec)
		if err != nil {
			return nil, fmt.Errorf("webhook: endpoint %s has a malformed secret: %w", endpoint, err)
		}
		out = append(out, key)
	}
	return out, rows.Err()
}

func secretKey(secret string) ([]byte, error) {
	return base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
}

// WebhookID is the webhook-id header of an event's deliveries: the same for
// every attempt and redelivery, so receivers can dedupe on it.
func WebhookID(eventID int64) string { return "evt_" + strconv.FormatInt(eventID, 10) }

// Sign returns the webhook-signature header value for a message: one
// "v1,<base64 HMAC-SHA256>" per key over "id.timestamp.body", space-separated.
func Sign(keys [][]byte, msgID string, timestamp int64, body []byte) string {
	signed := msgID + "." + strconv.FormatInt(timestamp, 10) + "."
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		m := hmac.New(sha256.New, k)
		m.Write([]byte(signed))
		m.Write(body)
		parts = append(parts, "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	}
	return strings.Join(parts, " ")
}

// result is the outcome of one attempt.
type result struct {
	ok       bool
	at       time.Time
	code     int    // 0: no answer
	err      string // why it failed
	latency  time.Duration
	response string // the start of the body
}

// send makes one attempt.
func (s *Service) send(ctx context.Context, c *claim) result {
	if c.endpoint == ScriptEndpointID {
		return s.runScript(ctx, c)
	}
	start := time.Now()
	r := result{at: start}
	actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, c.url, bytes.NewReader(c.body))
	if err != nil {
		r.err = "bad request: " + err.Error()
		return r
	}
	id := WebhookID(c.event)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Coffer-Webhooks/1")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(start.Unix(), 10))
	req.Header.Set("webhook-signature", Sign(c.secrets, id, start.Unix(), c.body))
	resp, err := s.client.Do(req)
	if err != nil {
		r.latency = time.Since(start)
		switch {
		case ctx.Err() != nil:
			r.err = "cancelled: Coffer is shutting down"
		case errors.Is(err, context.DeadlineExceeded) || actx.Err() != nil:
			r.err = fmt.Sprintf("timeout: no answer within %s", s.cfg.Timeout)
		default:
			r.err = describeError(err)
		}
		return r
	}
	snippet, rerr := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSnippet))
	if rerr == nil {
		// Read a little more so the connection can be reused.
		_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	}
	resp.Body.Close()
	r.latency = time.Since(start)
	r.code = resp.StatusCode
	r.response = cleanText(snippet, MaxResponseSnippet)
	switch {
	case rerr != nil && actx.Err() != nil:
		r.err = fmt.Sprintf("timeout: the answer's body did not arrive within %s", s.cfg.Timeout)
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		r.ok = true
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		r.err = fmt.Sprintf("HTTP %d: redirects are not followed", resp.StatusCode)
	default:
		r.err = fmt.Sprintf("HTTP %d", resp.StatusCode)
	}
	return r
}

// describeError shortens a client error (the url.Error wrapper repeats the
// URL, which the endpoint already shows).
func describeError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return "connection: " + cleanText([]byte(err.Error()), 500)
}

// cleanText makes b storable text: valid UTF-8 without NULs, at most n bytes.
func cleanText(b []byte, n int) string {
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "")
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

var errLeaseLost = errors.New("webhook: lease lost")

// record stores an attempt's result, releases the lease and sets what
// happens next; it returns the delivery's new status. A failure also marks
// the endpoint failing and, once it has failed for DisableAfter, disables
// it and writes an alert event in the same transaction. When claimNext is
// set and the delivery is finished, it also claims the endpoint's next
// delivery in that transaction and returns it.
func (s *Service) record(ctx context.Context, c *claim, r result, claimNext bool) (string, *claim, error) {
	status := ""
	disabled := false
	var next *claim
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		disabled, next = false, nil
		if err := s.recordIn(ctx, tx, c, r, &status, &disabled); err != nil {
			return err
		}
		if !claimNext || status == StatusPending || disabled {
			return nil
		}
		var err error
		next, err = s.claimIn(ctx, tx, c.endpoint)
		return err
	})
	if err != nil {
		return "", nil, err
	}
	if status == StatusFailed {
		s.failed.Add(1)
	}
	if disabled {
		s.disabled.Add(1)
		s.log.Warn("webhook endpoint disabled: failing too long", "endpoint", c.endpoint)
	}
	return status, next, nil
}

// recordIn is the body of record's transaction.
// It sets *status to the delivery's new status and *disabled when it
// disabled the endpoint.
func (s *Service) recordIn(ctx context.Context, tx *store.Tx, c *claim, r result, status *string, disabled *bool) error {
	now := time.Now()
	var next sql.NullInt64
	switch {
	case r.ok:
		*status = StatusSucceeded
	case c.attempt < len(s.cfg.Schedule):
		*status = StatusPending
		next = sql.NullInt64{Int64: now.Add(s.cfg.Schedule[c.attempt]).UnixMilli(), Valid: true}
	default:
		*status = StatusFailed
	}
	code := sql.NullInt64{Int64: int64(r.code), Valid: r.code != 0}
	res, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET attempts = $1, status = $2, next_attempt_ms = $3,
		locked_by = NULL, locked_until_ms = NULL, last_attempt_at = $4, last_status_code = $5, last_error = $6,
		last_latency_ms = $7, updated_at = $8
		WHERE id = $9 AND locked_by = $10 AND attempts = $11 AND status = 'pending'`,
		c.attempt, *status, next, r.at.Unix(), code, r.err, r.latency.Milliseconds(), now.Unix(),
		c.delivery, s.cfg.Instance, c.attempt-1)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return errLeaseLost
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_attempts (delivery_id, attempt, instance, attempted_at,
		succeeded, status_code, error, latency_ms, response) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		c.delivery, c.attempt, s.cfg.Instance, r.at.Unix(), r.ok, code, r.err, r.latency.Milliseconds(), r.response); err != nil {
		return err
	}
	if r.ok {
		_, err := tx.ExecContext(ctx, `UPDATE webhook_endpoints SET failing_since = NULL
			WHERE id = $1 AND failing_since IS NOT NULL`, c.endpoint)
		return err
	}
	var enabled bool
	var since sql.NullInt64
	var rawURL string
	err = tx.QueryRowContext(ctx, `SELECT enabled, failing_since, url FROM webhook_endpoints WHERE id = $1`,
		c.endpoint).Scan(&enabled, &since, &rawURL)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // deleted meanwhile (its deliveries too, so we cannot get here)
	}
	if err != nil {
		return err
	}
	if !since.Valid {
		_, err := tx.ExecContext(ctx, `UPDATE webhook_endpoints SET failing_since = $1 WHERE id = $2`, r.at.Unix(), c.endpoint)
		return err
	}
	if !enabled || s.cfg.DisableAfter < 0 || r.at.UnixMilli()-since.Int64*1000 < s.cfg.DisableAfter.Milliseconds() {
		return nil
	}
	failingFor := r.at.Sub(unixTime(since.Int64)).Round(time.Second)
	reason := fmt.Sprintf("disabled by Coffer on %s: deliveries had failed for %s without a success (last: %s)",
		now.UTC().Format(time.RFC3339), failingFor, r.err)
	if _, err := tx.ExecContext(ctx, `UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $1, updated_at = $2
		WHERE id = $3`, reason, now.Unix(), c.endpoint); err != nil {
		return err
	}
	shown := rawURL
	if u, err := url.Parse(rawURL); err == nil {
		shown = u.Redacted()
	}
	_, err = s.events.Append(ctx, tx, EventAlert, "", map[string]any{
		"kind": AlertKindDisabled,
		"message": fmt.Sprintf("webhook endpoint %s (%s) was disabled: its deliveries have failed for %s without a success; last error: %s. Fix the receiver and re-enable it (PATCH /v1/webhooks/%s {\"enabled\": true}); its queue resumes where it stopped",
			c.endpoint, shown, failingFor, r.err, c.endpoint),
		"endpoint_id":   c.endpoint,
		"url":           shown,
		"failing_since": since.Int64,
		"last_error":    r.err,
	})
	*disabled = err == nil
	return err
}

// release gives up the lease of an attempt that shutdown interrupted.
func (s *Service) release(c *claim) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET locked_by = NULL, locked_until_ms = NULL
			WHERE id = $1 AND locked_by = $2 AND attempts = $3`, c.delivery, s.cfg.Instance, c.attempt-1)
		return err
	})
	if err != nil {
		s.log.Warn("webhook: releasing a lease at shutdown failed; another instance retries when it ends",
			"delivery", c.delivery, "err", err)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

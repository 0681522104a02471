package webhook

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/coffer/coffer/internal/store"
)

// Delivery statuses.
const (
	StatusPending   = "pending"   // waiting for its turn or its next attempt
	StatusSucceeded = "succeeded" // answered with a 2xx
	StatusFailed    = "failed"    // every attempt of the schedule failed
)

// Delivery is one event queued for one endpoint, with its attempts.
type Delivery struct {
	ID         int64  `json:"id"`
	EndpointID string `json:"endpoint_id"`
	EventID    int64  `json:"event_id"`
	EventType  string `json:"event_type"`
	// WebhookID is the webhook-id header sent: the same for every attempt
	// and every redelivery of the event.
	WebhookID string `json:"webhook_id"`
	// Redelivery is true for a delivery queued by Redeliver.
	Redelivery     bool       `json:"redelivery"`
	Status         string     `json:"status"`
	AttemptCount   int        `json:"attempt_count"`
	LastStatusCode int        `json:"last_status_code,omitempty"`
	LastError      string     `json:"last_error,omitempty"`
	LastLatencyMS  *int64     `json:"last_latency_ms,omitempty"`
	LastAttemptAt  *time.Time `json:"last_attempt_at,omitempty"`
	// NextAttemptAt is when a pending delivery is due. It is sent then if
	// it is its endpoint's oldest pending delivery and the endpoint is
	// enabled; otherwise it waits for its turn.
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	Attempts      []Attempt  `json:"attempts"`
}

// Attempt is one try of a delivery.
type Attempt struct {
	Attempt     int       `json:"attempt"` // from 1
	AttemptedAt time.Time `json:"attempted_at"`
	Instance    string    `json:"instance"` // the Coffer instance that made it
	Succeeded   bool      `json:"succeeded"`
	StatusCode  int       `json:"status_code,omitempty"` // absent when no answer came
	Error       string    `json:"error,omitempty"`
	LatencyMS   int64     `json:"latency_ms"`
	Response    string    `json:"response,omitempty"` // the start of the answer's body, at most 1 KiB
}

// DeliveryFilter narrows Deliveries.
type DeliveryFilter struct {
	Status string // pending, succeeded or failed; empty: all
	Before int64  // cursor: deliveries with a smaller id; 0: from the newest
	Limit  int    // default 100, at most 1000
}

const deliveryCols = `d.id, d.endpoint_id, d.event_id, ev.type, d.origin, d.status, d.attempts, d.next_attempt_ms,
	d.last_attempt_at, d.last_status_code, d.last_error, d.last_latency_ms, d.created_at, d.updated_at`

func scanDelivery(row interface{ Scan(...any) error }) (*Delivery, error) {
	var d Delivery
	var origin string
	var next, lastAt, code, latency sql.NullInt64
	var created, updated int64
	if err := row.Scan(&d.ID, &d.EndpointID, &d.EventID, &d.EventType, &origin, &d.Status, &d.AttemptCount, &next,
		&lastAt, &code, &d.LastError, &latency, &created, &updated); err != nil {
		return nil, err
	}
	d.WebhookID = WebhookID(d.EventID)
	d.Redelivery = origin == "redeliver"
	if next.Valid {
		t := time.UnixMilli(next.Int64).UTC()
		d.NextAttemptAt = &t
	}
	d.LastAttemptAt = optTime(lastAt)
	d.LastStatusCode = int(code.Int64)
	if latency.Valid {
		d.LastLatencyMS = &latency.Int64
	}
	d.CreatedAt, d.UpdatedAt = unixTime(created), unixTime(updated)
	d.Attempts = []Attempt{}
	return &d, nil
}

// Deliveries pages an endpoint's deliveries, newest first, each with its
// attempts. The next page is Before the last id returned.
func (s *Service) Deliveries(ctx context.Context, endpointID string, f DeliveryFilter) ([]*Delivery, error) {
	if f.Limit == 0 {
		f.Limit = 100
	}
	if f.Limit < 1 || f.Limit > MaxDeliveriesLimit {
		return nil, errorf(ErrInvalid, "limit must be between 1 and %d", MaxDeliveriesLimit)
	}
	if f.Before < 0 {
		return nil, errorf(ErrInvalid, "before must not be negative")
	}
	switch f.Status {
	case "", StatusPending, StatusSucceeded, StatusFailed:
	default:
		return nil, errorf(ErrInvalid, "status must be pending, succeeded or failed, got %q", f.Status)
	}
	if _, err := s.Get(ctx, endpointID); err != nil {
		return nil, err
	}
	q := `SELECT ` + deliveryCols + ` FROM webhook_deliveries d JOIN events ev ON ev.id = d.event_id WHERE d.endpoint_id = $1`
	args := []any{endpointID}
	if f.Before > 0 {
		args = append(args, f.Before)
		q += ` AND d.id < $` + itoa(len(args))
	}
	if f.Status != "" {
		args = append(args, f.Status)
		q += ` AND d.status = $` + itoa(len(args))
	}
	args = append(args, f.Limit)
	q += ` ORDER BY d.id DESC LIMIT $` + itoa(len(args))
	rows, err := s.db.QueryContext(ctx, q, args...)
	out, err := store.Collect(rows, err, scanDelivery)
	if err != nil {
		return nil, err
	}
	return out, s.fillAttempts(ctx, out)
}

// GetDelivery returns one delivery of an endpoint with its attempts.
func (s *Service) GetDelivery(ctx context.Context, endpointID string, deliveryID int64) (*Delivery, error) {
	d, err := scanDelivery(s.db.QueryRowContext(ctx, `SELECT `+deliveryCols+` FROM webhook_deliveries d
		JOIN events ev ON ev.id = d.event_id WHERE d.id = $1 AND d.endpoint_id = $2`, deliveryID, endpointID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(ErrNotFound, "no delivery %d of webhook endpoint %s", deliveryID, endpointID)
	}
	if err != nil {
		return nil, err
	}
	return d, s.fillAttempts(ctx, []*Delivery{d})
}

func (s *Service) fillAttempts(ctx context.Context, ds []*Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	byID := map[int64]*Delivery{}
	ph := make([]string, len(ds))
	args := make([]any, len(ds))
	for i, d := range ds {
		byID[d.ID] = d
		ph[i] = "$" + itoa(i+1)
		args[i] = d.ID
	}
	rows, err := s.db.QueryContext(ctx, `SELECT delivery_id, attempt, instance, attempted_at, succeeded, status_code,
		error, latency_ms, response FROM webhook_attempts WHERE delivery_id IN (`+strings.Join(ph, ", ")+`)
		ORDER BY delivery_id, attempt`, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, at int64
		var a Attempt
		var code sql.NullInt64
		if err := rows.Scan(&id, &a.Attempt, &a.Instance, &at, &a.Succeeded, &code, &a.Error, &a.LatencyMS, &a.Response); err != nil {
			return err
		}
		a.AttemptedAt = unixTime(at)
		a.StatusCode = int(code.Int64)
		if d := byID[id]; d != nil {
			d.Attempts = append(d.Attempts, a)
		}
	}
	return rows.Err()
}

// Redeliver sends a delivery's event to the endpoint again, with the same
// webhook-id. If a delivery of that event to the endpoint is still pending,
// it is made due at once and returned (no second copy is queued); otherwise
// a new pending delivery is queued behind the endpoint's other pending ones
// (at once if there are none), with a full retry schedule, and returned.
// Redelivery works while the endpoint is disabled, but nothing is sent until
// it is enabled.
func (s *Service) Redeliver(ctx context.Context, endpointID string, deliveryID int64) (*Delivery, error) {
	var id int64
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		var event int64
		err := tx.QueryRowContext(ctx, `SELECT event_id FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2`,
			deliveryID, endpointID).Scan(&event)
		if errors.Is(err, sql.ErrNoRows) {
			return errorf(ErrNotFound, "no delivery %d of webhook endpoint %s", deliveryID, endpointID)
		}
		if err != nil {
			return err
		}
		now := time.Now()
		var pending sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MIN(id) FROM webhook_deliveries
			WHERE endpoint_id = $1 AND event_id = $2 AND status = 'pending'`, endpointID, event).Scan(&pending); err != nil {
			return err
		}
		if pending.Valid {
			id = pending.Int64
			_, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET next_attempt_ms = $1, updated_at = $2
				WHERE id = $3 AND next_attempt_ms > $1`, now.UnixMilli(), now.Unix(), id)
			return err
		}
		return tx.QueryRowContext(ctx, `INSERT INTO webhook_deliveries (endpoint_id, event_id, origin, status, attempts,
			next_attempt_ms, created_at, updated_at) VALUES ($1, $2, 'redeliver', 'pending', 0, $3, $4, $4) RETURNING id`,
			endpointID, event, now.UnixMilli(), now.Unix()).Scan(&id)
	})
	if err != nil {
		return nil, err
	}
	s.wakeUp()
	return s.GetDelivery(ctx, endpointID, id)
}

// Prune deletes finished deliveries (succeeded or failed) last updated
// before olderThan, with their attempts, and returns how many deliveries it
// deleted. Pending deliveries are never pruned.
func (s *Service) Prune(ctx context.Context, olderThan time.Time) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.db.InTx(ctx, func(tx *store.Tx) error {
			const batch = `SELECT id FROM webhook_deliveries WHERE status <> 'pending' AND updated_at < $1 ORDER BY id LIMIT 5000`
			if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_attempts WHERE delivery_id IN (`+batch+`)`, olderThan.Unix()); err != nil {
				return err
			}
			res, err := tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE id IN (`+batch+`)`, olderThan.Unix())
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

// Package events is Coffer's event log: one append-only table whose ids
// increase in commit order, written in the same transaction as the change an
// event reports, and read by every deliverer from an id onwards.
package events

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/coffer/coffer/internal/store"
)

// Event types written by the chain follower.
const (
	BlockConnected    = "block.connected"
	BlockDisconnected = "block.disconnected"
	ChainReorg        = "chain.reorg"
	TxSeen            = "tx.seen"
	TxConfirmed       = "tx.confirmed"
	TxReorged         = "tx.reorged"
	TxReplaced        = "tx.replaced"
	TxConflicted      = "tx.conflicted"
	TxDropped         = "tx.dropped"
	FollowerHalted    = "alert.follower_halted"
)

// Event is one entry of the log.
type Event struct {
	ID        int64           `json:"id"`
	Type      string          `json:"type"`
	WalletID  string          `json:"wallet_id,omitempty"`
	Data      json.RawMessage `json:"data"`
	CreatedAt int64           `json:"created_at"` // unix seconds
}

// MaxLimit caps how many events one read returns.
const MaxLimit = 1000

// pollFallback bounds how long a waiter sleeps without a local wake-up, so
// events written by another process (another instance on the same
// PostgreSQL) still reach it.
const pollFallback = time.Second

// Log reads and appends events and wakes waiters when new ones commit.
type Log struct {
	db *store.DB

	mu     sync.Mutex
	notify chan struct{} // closed and replaced on every commit with events
}

// NewLog returns the event log stored in db.
func NewLog(db *store.DB) *Log {
	return &Log{db: db, notify: make(chan struct{})}
}

// eventsLockKey serialises event writers on PostgreSQL from id allocation to
// commit, so ids become visible in increasing order and a reader resuming
// "after id N" can never skip an event that commits late.
const eventsLockKey = 7316002

// Append writes an event inside tx. data is marshalled to JSON. Waiters are
// woken after tx commits.
func (l *Log) Append(ctx context.Context, tx *store.Tx, typ, walletID string, data any) (int64, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return 0, fmt.Errorf("events: encoding %s: %w", typ, err)
	}
	if err := tx.LockOrdered(ctx, eventsLockKey); err != nil {
		return 0, err
	}
	var wallet sql.NullString
	if walletID != "" {
		wallet = sql.NullString{String: walletID, Valid: true}
	}
	var id int64
	err = tx.QueryRowContext(ctx,
		`INSERT INTO events (type, wallet_id, data, created_at) VALUES ($1, $2, $3, $4) RETURNING id`,
		typ, wallet, string(b), time.Now().Unix()).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("events: appending %s: %w", typ, err)
	}
	tx.AfterCommit(l.wake)
	return id, nil
}

func (l *Log) wake() {
	l.mu.Lock()
	close(l.notify)
	l.notify = make(chan struct{})
	l.mu.Unlock()
}

func (l *Log) waitChan() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.notify
}

// List returns up to limit events with id > after, oldest first.
func (l *Log) List(ctx context.Context, after int64, limit int) ([]Event, error) {
	if limit <= 0 || limit > MaxLimit {
		limit = MaxLimit
	}
	rows, err := l.db.QueryContext(ctx,
		`SELECT id, type, COALESCE(wallet_id, ''), data, created_at FROM events WHERE id > $1 ORDER BY id LIMIT $2`,
		after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Event{}
	for rows.Next() {
		var e Event
		var data string
		if err := rows.Scan(&e.ID, &e.Type, &e.WalletID, &data, &e.CreatedAt); err != nil {
			return nil, err
		}
		e.Data = json.RawMessage(data)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Wait is List that, when nothing is there yet, waits up to wait for events to
// arrive. It returns an empty slice when the wait ends without any.
func (l *Log) Wait(ctx context.Context, after int64, limit int, wait time.Duration) ([]Event, error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		ch := l.waitChan() // taken before the read, so a commit in between still wakes us
		evs, err := l.List(ctx, after, limit)
		if err != nil || len(evs) > 0 || wait <= 0 {
			return evs, err
		}
		select {
		case <-ctx.Done():
			return evs, nil
		case <-deadline.C:
			return evs, nil
		case <-ch:
		case <-time.After(pollFallback):
		}
	}
}

// LastID returns the id of the newest event, or 0.
func (l *Log) LastID(ctx context.Context) (int64, error) {
	var id int64
	err := l.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM events`).Scan(&id)
	return id, err
}

// Package store owns Coffer's SQL database: opening SQLite or PostgreSQL behind
// one type, applying versioned migrations, and running every write in a
// SERIALIZABLE transaction that is retried on conflicts.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // registers the "sqlite" database/sql driver
)

// Dialect names a supported database engine.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DefaultMaxAttempts bounds how often InTx runs a transaction that keeps
// conflicting before it gives up with ErrConflictUnresolved.
const DefaultMaxAttempts = 8

// ErrConflictUnresolved is returned by InTx when a transaction still conflicted
// with concurrent writers after every allowed attempt.
var ErrConflictUnresolved = errors.New("store: could not resolve conflict with concurrent writers")

// Stats are counters exported as metrics.
type Stats struct {
	Attempts uint64 // transaction attempts, including first tries
	Retries  uint64 // attempts repeated after a conflict
	GiveUps  uint64 // transactions abandoned with ErrConflictUnresolved
}

// DB is a database handle shared by all of Coffer.
type DB struct {
	sql         *sql.DB
	dialect     Dialect
	MaxAttempts int

	attempts, retries, giveUps atomic.Uint64
}

// Open connects to dsn. A DSN starting with postgres:// or postgresql:// opens
// PostgreSQL; anything else is a SQLite file path (created with its directory).
func Open(ctx context.Context, dsn string) (*DB, error) {
	var db *DB
	var file string // the SQLite database file, for error messages
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		sqldb, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, err
		}
		sqldb.SetMaxOpenConns(20)
		sqldb.SetMaxIdleConns(10)
		db = &DB{sql: sqldb, dialect: Postgres}
	} else {
		path := strings.TrimPrefix(dsn, "sqlite://")
		if path == "" {
			return nil, errors.New("store: empty database path")
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("store: creating database directory: %w", err)
		}
		// WAL lets readers run beside the single writer; BEGIN IMMEDIATE takes
		// the write lock up front so two writers queue on busy_timeout instead
		// of deadlocking on a lock upgrade.
		q := url.Values{}
		for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(NORMAL)", "foreign_keys(1)"} {
			q.Add("_pragma", p)
		}
		q.Set("_txlock", "immediate")
		sqldb, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
		if err != nil {
			return nil, err
		}
		sqldb.SetMaxOpenConns(8)
		db = &DB{sql: sqldb, dialect: SQLite}
		file = path
	}
	db.MaxAttempts = DefaultMaxAttempts
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.sql.PingContext(pctx); err != nil {
		db.sql.Close()
		if file != "" { // name the file; a PostgreSQL DSN may hold a password
			return nil, fmt.Errorf("store: connecting to sqlite database %s: %w", file, err)
		}
		return nil, fmt.Errorf("store: connecting to %s database: %w", db.dialect, err)
	}
	return db, nil
}

// Dialect reports the engine behind db.
func (db *DB) Dialect() Dialect { return db.dialect }

// Close closes every connection.
func (db *DB) Close() error { return db.sql.Close() }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.sql.PingContext(ctx) }

// Stats returns the transaction counters.
func (db *DB) Stats() Stats {
	return Stats{Attempts: db.attempts.Load(), Retries: db.retries.Load(), GiveUps: db.giveUps.Load()}
}

// QueryContext runs a read outside any transaction.
func (db *DB) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return db.sql.QueryContext(ctx, q, args...)
}

// QueryRowContext runs a single-row read outside any transaction.
func (db *DB) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return db.sql.QueryRowContext(ctx, q, args...)
}

// Tx is a transaction handed to InTx callbacks. Queries use $1, $2 …
// placeholders on both engines.
type Tx struct {
	*sql.Tx
	dialect     Dialect
	afterCommit []func()
	locks       map[int64]bool // advisory locks taken in this transaction
}

// LockOrdered takes the PostgreSQL transaction-scoped advisory lock key, once
// per transaction, and holds it until commit. Writers that append rows read
// back by "id above the last seen" take it so ids become visible in
// increasing order. SQLite already runs one writer at a time: a no-op there.
func (tx *Tx) LockOrdered(ctx context.Context, key int64) error {
	if tx.dialect != Postgres || tx.locks[key] {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, key); err != nil {
		return err
	}
	if tx.locks == nil {
		tx.locks = map[int64]bool{}
	}
	tx.locks[key] = true
	return nil
}

// Dialect reports the engine behind tx.
func (tx *Tx) Dialect() Dialect { return tx.dialect }

// AfterCommit registers f to run once the transaction has committed; it is
// the place for side effects such as waking long-pollers. f does not run if
// the transaction rolls back or is retried.
func (tx *Tx) AfterCommit(f func()) { tx.afterCommit = append(tx.afterCommit, f) }

// InTx runs fn in a SERIALIZABLE transaction and commits it. When the database
// reports a serialization failure, deadlock or busy lock, the transaction is
// rolled back and fn runs again, up to MaxAttempts times; then
// ErrConflictUnresolved is returned. Any other error from fn or the database is
// returned at once. fn must not have side effects outside tx.
func (db *DB) InTx(ctx context.Context, fn func(*Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := db.runTx(ctx, fn)
		if err == nil || !IsConflict(err) {
			return err
		}
		if attempt >= db.MaxAttempts {
			db.giveUps.Add(1)
			return fmt.Errorf("%w (%d attempts): %v", ErrConflictUnresolved, attempt, err)
		}
		db.retries.Add(1)
		// Jittered backoff so the conflicting writers do not collide again.
		delay := time.Duration(attempt*attempt) * time.Millisecond * time.Duration(1+time.Now().UnixNano()%5)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// InTxOnce runs fn in one SERIALIZABLE transaction without retrying: for steps
// that must not repeat. A conflict is returned as an error that IsConflict
// recognises.
func (db *DB) InTxOnce(ctx context.Context, fn func(*Tx) error) error {
	return db.runTx(ctx, fn)
}

func (db *DB) runTx(ctx context.Context, fn func(*Tx) error) (err error) {
	db.attempts.Add(1)
	var opts *sql.TxOptions
	if db.dialect == Postgres {
		opts = &sql.TxOptions{Isolation: sql.LevelSerializable}
	}
	stx, err := db.sql.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	tx := &Tx{Tx: stx, dialect: db.dialect}
	returned := false
	defer func() {
		// fn panicked (the panic goes on after this) or called runtime.Goexit,
		// as t.Fatal does: never leave the transaction holding its connection
		// and locks.
		if !returned {
			_ = stx.Rollback()
		}
	}()
	err = fn(tx)
	returned = true
	if err != nil {
		_ = stx.Rollback()
		return err
	}
	if err := stx.Commit(); err != nil {
		return err
	}
	for _, f := range tx.afterCommit {
		f()
	}
	return nil
}

// Collect reads every row of a query with scan and closes the rows: pass it
// a QueryContext's two results. It returns an empty, non-nil slice when
// there are no rows, so lists encode as [] in JSON.
func Collect[T any](rows *sql.Rows, err error, scan func(interface{ Scan(...any) error }) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

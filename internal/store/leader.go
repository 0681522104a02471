package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"sync"
	"time"
)

// ErrLockHeld is returned by LeaderLock when another session holds the lock.
var ErrLockHeld = errors.New("store: lock held by another session")

// leaderCheckTimeout bounds each check that the lock's connection is alive;
// a check that hangs (a half-open connection) counts as losing the lock.
const leaderCheckTimeout = 5 * time.Second

// LeaderLock tries once to take the PostgreSQL session-level advisory lock
// key on a connection of its own, set aside from the pool for as long as the
// lock is held. It returns ErrLockHeld at once when another session holds it.
//
// While held, the connection is checked every checkEvery (1 s when not
// positive); lost is closed when a check fails — the database restarted, the
// session was terminated or the network broke — after which the server has
// released the lock or soon will, and the caller must stop acting as leader.
// release gives the lock up by closing the connection (ending the session
// releases every lock it holds); it is safe to call more than once and after
// the lock was lost.
//
// On SQLite, which only one process uses, the lock is always granted and
// never lost.
func (db *DB) LeaderLock(ctx context.Context, key int64, checkEvery time.Duration) (release func(), lost <-chan struct{}, err error) {
	if db.dialect != Postgres {
		return func() {}, nil, nil
	}
	if checkEvery <= 0 {
		checkEvery = time.Second
	}
	conn, err := db.sql.Conn(ctx)
	if err != nil {
		return nil, nil, err
	}
	// discard closes the session rather than handing the connection back
	// to the pool, which would keep the lock held by an idle connection.
	discard := func() {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		_ = conn.Close()
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
		discard()
		return nil, nil, err
	}
	if !ok {
		_ = conn.Close() // holds no lock: back to the pool
		return nil, nil, ErrLockHeld
	}

	lostCh := make(chan struct{})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(checkEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			cctx, cancel := context.WithTimeout(context.Background(), leaderCheckTimeout)
			_, err := conn.ExecContext(cctx, `SELECT 1`)
			cancel()
			if err != nil {
				close(lostCh)
				return
			}
		}
	}()
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(stop)
			<-done
			discard()
		})
	}
	return release, lostCh, nil
}

package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

const testLeaderKey = 7316999

// TestLeaderLockSQLite: SQLite has one process, which always leads.
func TestLeaderLockSQLite(t *testing.T) {
	db := storetest.Open(t, storetest.NewSQLiteDSN(t))
	for range 2 {
		release, lost, err := db.LeaderLock(context.Background(), testLeaderKey, 0)
		if err != nil || lost != nil {
			t.Fatalf("LeaderLock on SQLite: lost %v, err %v; want granted, never lost", lost, err)
		}
		release()
	}
}

// TestLeaderLockPostgres: one session at a time holds the lock; releasing it
// lets another take it; a session the server ends reports the loss, and the
// lock is free again.
func TestLeaderLockPostgres(t *testing.T) {
	dsn := storetest.NewPostgresDSN(t)
	a, b := storetest.Open(t, dsn), storetest.Open(t, dsn)
	ctx := context.Background()

	releaseA, lostA, err := a.LeaderLock(ctx, testLeaderKey, 50*time.Millisecond)
	if err != nil {
		t.Fatalf("first LeaderLock: %v", err)
	}
	if _, _, err := b.LeaderLock(ctx, testLeaderKey, 0); !errors.Is(err, store.ErrLockHeld) {
		t.Fatalf("second LeaderLock while held: %v, want ErrLockHeld", err)
	}
	// The same process asking again on another connection is refused too:
	// the lock belongs to the session, not the process.
	if _, _, err := a.LeaderLock(ctx, testLeaderKey, 0); !errors.Is(err, store.ErrLockHeld) {
		t.Fatalf("LeaderLock again from the holder's pool: %v, want ErrLockHeld", err)
	}
	// The pool goes on working beside the held connection.
	if err := a.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lostA:
		t.Fatal("lock reported lost while the session is fine")
	case <-time.After(200 * time.Millisecond):
	}
	releaseA()
	releaseA() // harmless

	releaseB, lostB, err := b.LeaderLock(ctx, testLeaderKey, 50*time.Millisecond)
	if err != nil {
		t.Fatalf("LeaderLock after release: %v", err)
	}
	defer releaseB()

	// The server ends the holder's session (as a restart would).
	var n int
	if err := a.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND objid = $1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		testLeaderKey).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("terminated %d sessions holding the lock, want 1", n)
	}
	select {
	case <-lostB:
	case <-time.After(patience):
		t.Fatal("the holder's session ended but lost was not closed")
	}
	releaseB()
	releaseA2, _, err := a.LeaderLock(ctx, testLeaderKey, 0)
	if err != nil {
		t.Fatalf("LeaderLock after the holder's session ended: %v", err)
	}
	releaseA2()
}

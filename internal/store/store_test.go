package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// patience bounds every wait on another goroutine, so that a broken
// coordination fails the test instead of hanging it.
const patience = 10 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openPostgres returns a fresh migrated PostgreSQL database and its DSN, or
// skips the test (saying why) when COFFER_TEST_POSTGRES is not set.
func openPostgres(t *testing.T) (*store.DB, string) {
	t.Helper()
	dsn := storetest.NewPostgresDSN(t)
	return storetest.Open(t, dsn), dsn
}

// createScratch makes the tables the tests play with: one counter row (id 1,
// value start) and a log whose rows show which writes landed.
func createScratch(t *testing.T, db *store.DB, start int64) {
	t.Helper()
	ctx := testContext(t)
	err := db.InTx(ctx, func(tx *store.Tx) error {
		for _, q := range []string{
			`CREATE TABLE scratch_counter (id INTEGER PRIMARY KEY, n BIGINT NOT NULL)`,
			`CREATE TABLE scratch_log (note TEXT PRIMARY KEY)`,
		} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO scratch_counter (id, n) VALUES (1, $1)`, start)
		return err
	})
	if err != nil {
		t.Fatalf("creating scratch tables: %v", err)
	}
}

func counter(t *testing.T, db *store.DB) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRowContext(testContext(t), `SELECT n FROM scratch_counter WHERE id = 1`).Scan(&n); err != nil {
		t.Fatalf("reading counter: %v", err)
	}
	return n
}

func logNotes(t *testing.T, db *store.DB) []string {
	t.Helper()
	rows, err := db.QueryContext(testContext(t), `SELECT note FROM scratch_log ORDER BY note`)
	if err != nil {
		t.Fatalf("reading log: %v", err)
	}
	defer rows.Close()
	var notes []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		notes = append(notes, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return notes
}

// increment is a read-modify-write of the counter, the shape that conflicts.
func increment(ctx context.Context, tx *store.Tx) error {
	var n int64
	if err := tx.QueryRowContext(ctx, `SELECT n FROM scratch_counter WHERE id = 1`).Scan(&n); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE scratch_counter SET n = $1 WHERE id = 1`, n+1)
	return err
}

func statsSince(db *store.DB, before store.Stats) store.Stats {
	now := db.Stats()
	return store.Stats{
		Attempts: now.Attempts - before.Attempts,
		Retries:  now.Retries - before.Retries,
		GiveUps:  now.GiveUps - before.GiveUps,
	}
}

func sqlState(err error) string {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code
	}
	return ""
}

// barrier releases its waiters once n parties have arrived.
type barrier struct {
	mu      sync.Mutex
	missing int
	open    chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{missing: n, open: make(chan struct{})} }

func (b *barrier) arrive() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.missing--
	if b.missing == 0 {
		close(b.open)
	}
}

func (b *barrier) wait(ctx context.Context) error {
	select {
	case <-b.open:
		return nil
	case <-time.After(patience):
		return errors.New("barrier: the other transaction never arrived")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestInTxRetriesSerializationFailurePostgres is resolver case (a): two
// transactions both read the counter before either writes it, so PostgreSQL
// aborts the second writer with 40001; InTx runs it again and both increments
// land. It also shows AfterCommit runs once per committed transaction and not
// for the aborted attempt.
func TestInTxRetriesSerializationFailurePostgres(t *testing.T) {
	db, _ := openPostgres(t)
	ctx := testContext(t)
	const start = 41
	createScratch(t, db, start)
	before := db.Stats()

	var (
		runs         atomic.Int64
		afterCommits atomic.Int64
		mu           sync.Mutex
		codes        []string // SQLSTATEs of the writes the database refused
		seen         []int64  // counter as read back from outside, in AfterCommit
	)
	bothRead := newBarrier(2)
	worker := func() error {
		first := true
		return db.InTx(ctx, func(tx *store.Tx) error {
			runs.Add(1)
			var n int64
			if err := tx.QueryRowContext(ctx, `SELECT n FROM scratch_counter WHERE id = 1`).Scan(&n); err != nil {
				return err
			}
			if first { // only the first attempts meet; a retry goes straight on
				first = false
				bothRead.arrive()
				if err := bothRead.wait(ctx); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `UPDATE scratch_counter SET n = $1 WHERE id = 1`, n+1); err != nil {
				mu.Lock()
				codes = append(codes, sqlState(err))
				mu.Unlock()
				return err
			}
			tx.AfterCommit(func() {
				afterCommits.Add(1)
				// Committed means visible to everyone else.
				var now int64
				if err := db.QueryRowContext(ctx, `SELECT n FROM scratch_counter WHERE id = 1`).Scan(&now); err != nil {
					now = -1
				}
				mu.Lock()
				seen = append(seen, now-(n+1))
				mu.Unlock()
			})
			return nil
		})
	}
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- worker() }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("InTx: %v", err)
		}
	}

	if got := counter(t, db); got != start+2 {
		t.Errorf("counter = %d, want %d: an increment was lost", got, start+2)
	}
	st := statsSince(db, before)
	if st.Retries < 1 {
		t.Errorf("Stats().Retries grew by %d, want >= 1 (no conflict was resolved)", st.Retries)
	}
	if st.GiveUps != 0 {
		t.Errorf("Stats().GiveUps grew by %d, want 0", st.GiveUps)
	}
	if st.Attempts != 2+st.Retries {
		t.Errorf("Attempts grew by %d, want 2 first tries + %d retries", st.Attempts, st.Retries)
	}
	if got := runs.Load(); got != int64(st.Attempts) {
		t.Errorf("callback ran %d times, Attempts grew by %d", got, st.Attempts)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(codes) == 0 || slices.ContainsFunc(codes, func(c string) bool { return c != "40001" }) {
		t.Errorf("refused writes had SQLSTATEs %q, want at least one and all 40001", codes)
	}
	// Case 4: AfterCommit ran for each committed transaction exactly once and
	// never for the attempt PostgreSQL aborted.
	if got := afterCommits.Load(); got != 2 {
		t.Errorf("AfterCommit ran %d times for 2 committed transactions (%d attempts)", got, st.Attempts)
	}
	for _, d := range seen {
		if d < 0 {
			t.Errorf("AfterCommit ran before its write was visible outside the transaction (seen %v)", seen)
		}
	}
}

// TestInTxRetriesWriteSkewPostgres shows the transactions really are
// SERIALIZABLE (not merely REPEATABLE READ): the classic write skew, where each
// transaction reads both rows and changes a different one, is refused by
// PostgreSQL (at write or commit time) and resolved by retrying, so the
// invariant "someone stays on call" holds.
func TestInTxRetriesWriteSkewPostgres(t *testing.T) {
	db, _ := openPostgres(t)
	ctx := testContext(t)
	err := db.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE scratch_oncall (doctor TEXT PRIMARY KEY, on_call BOOLEAN NOT NULL)`); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO scratch_oncall VALUES ('alice', true), ('bob', true)`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	before := db.Stats()

	bothRead, bothWrote := newBarrier(2), newBarrier(2)
	goOffCall := func(me string) error {
		first := true
		return db.InTx(ctx, func(tx *store.Tx) error {
			isFirst := first
			first = false
			var onCall int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM scratch_oncall WHERE on_call`).Scan(&onCall); err != nil {
				return err
			}
			if isFirst {
				bothRead.arrive()
				if err := bothRead.wait(ctx); err != nil {
					return err
				}
			}
			var err error
			if onCall >= 2 {
				_, err = tx.ExecContext(ctx, `UPDATE scratch_oncall SET on_call = false WHERE doctor = $1`, me)
			}
			if isFirst {
				bothWrote.arrive() // both write before either commits
				if err == nil {
					err = bothWrote.wait(ctx)
				}
			}
			return err
		})
	}
	errs := make(chan error, 2)
	for _, who := range []string{"alice", "bob"} {
		go func() { errs <- goOffCall(who) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("InTx: %v", err)
		}
	}
	var onCall int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM scratch_oncall WHERE on_call`).Scan(&onCall); err != nil {
		t.Fatal(err)
	}
	if onCall != 1 {
		t.Errorf("%d doctors on call, want exactly 1 (write skew was not prevented)", onCall)
	}
	if st := statsSince(db, before); st.Retries < 1 || st.GiveUps != 0 {
		t.Errorf("stats grew by %+v, want >= 1 retry and no give-up", st)
	}
}

// TestInTxReturnsOrdinaryErrorsAtOnce is resolver case (b): an error that is
// not a conflict ends InTx after one run of the callback, unchanged and
// rolled back, without retrying or being reported as ErrConflictUnresolved.
func TestInTxReturnsOrdinaryErrorsAtOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := testContext(t)
		createScratch(t, db, 0)
		if err := db.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO scratch_log (note) VALUES ('taken')`)
			return err
		}); err != nil {
			t.Fatal(err)
		}

		errBoom := errors.New("boom")
		cases := []struct {
			name  string
			fn    func(tx *store.Tx) error
			check func(t *testing.T, err error)
		}{
			{
				name: "plain error",
				fn:   func(*store.Tx) error { return errBoom },
				check: func(t *testing.T, err error) {
					if !errors.Is(err, errBoom) {
						t.Errorf("err = %v, want the callback's error", err)
					}
				},
			},
			{
				name: "unique violation",
				fn: func(tx *store.Tx) error {
					_, err := tx.ExecContext(ctx, `INSERT INTO scratch_log (note) VALUES ('taken')`)
					return err
				},
				check: func(t *testing.T, err error) {
					if !store.IsUniqueViolation(err) {
						t.Errorf("err = %v, want a unique violation", err)
					}
				},
			},
		}
		for _, c := range cases {
			t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
				before := db.Stats()
				runs, afterCommits := 0, 0
				err := db.InTx(ctx, func(tx *store.Tx) error {
					runs++
					tx.AfterCommit(func() { afterCommits++ })
					// A write that must vanish with the rollback.
					if _, err := tx.ExecContext(ctx, `UPDATE scratch_counter SET n = n + 1 WHERE id = 1`); err != nil {
						return err
					}
					return c.fn(tx)
				})
				if err == nil {
					t.Fatal("InTx succeeded, want the callback's error")
				}
				c.check(t, err)
				if errors.Is(err, store.ErrConflictUnresolved) || store.IsConflict(err) {
					t.Errorf("ordinary error reported as a conflict: %v", err)
				}
				if runs != 1 {
					t.Errorf("callback ran %d times, want 1", runs)
				}
				if st := statsSince(db, before); st != (store.Stats{Attempts: 1}) {
					t.Errorf("stats grew by %+v, want exactly one attempt", st)
				}
				if afterCommits != 0 {
					t.Errorf("AfterCommit ran %d times for a rolled-back transaction", afterCommits)
				}
				if got := counter(t, db); got != 0 {
					t.Errorf("counter = %d: the failed transaction's write landed", got)
				}
			})
		}
	})
}

// conflictor commits, once per round, a competing update of the counter
// between a victim transaction's read and its write, so the victim's write
// always meets a row changed since its snapshot.
type conflictor struct {
	read  chan struct{} // victim → conflictor: I have read, go
	wrote chan error    // conflictor → victim: competing update committed
	done  chan error    // the conflictor's outcome once it stops
}

func startConflictor(ctx context.Context, other *store.DB, rounds int) *conflictor {
	c := &conflictor{read: make(chan struct{}), wrote: make(chan error), done: make(chan error, 1)}
	go func() {
		for i := 1; i <= rounds; i++ {
			select {
			case <-c.read:
			case <-time.After(patience):
				c.done <- fmt.Errorf("conflictor round %d: the victim never came", i)
				return
			}
			err := other.InTxOnce(ctx, func(tx *store.Tx) error {
				_, err := tx.ExecContext(ctx, `UPDATE scratch_counter SET n = n + 1 WHERE id = 1`)
				return err
			})
			c.wrote <- err // the victim is waiting for this
			if err != nil {
				c.done <- fmt.Errorf("conflictor round %d: %w", i, err)
				return
			}
		}
		c.done <- nil
	}()
	return c
}

// interfere is called by the victim between its read and its write; it
// returns once a conflicting transaction has committed.
func (c *conflictor) interfere() error {
	select {
	case c.read <- struct{}{}:
	case <-time.After(patience):
		return errors.New("victim: no conflictor round left")
	}
	select {
	case err := <-c.wrote:
		if err != nil {
			return fmt.Errorf("victim: conflicting writer failed: %w", err)
		}
		return nil
	case <-time.After(patience):
		return errors.New("victim: conflicting writer did not finish")
	}
}

func (c *conflictor) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-c.done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(patience):
		t.Error("conflictor did not finish")
	}
}

// victim logs a note, reads the counter, lets c commit a competing update,
// then writes counter+1000: PostgreSQL refuses that write with 40001.
func victim(ctx context.Context, c *conflictor, runs, afterCommits *int, codes *[]string) func(*store.Tx) error {
	return func(tx *store.Tx) error {
		*runs++
		tx.AfterCommit(func() { *afterCommits++ })
		if _, err := tx.ExecContext(ctx, `INSERT INTO scratch_log (note) VALUES ($1)`, fmt.Sprintf("victim attempt %d", *runs)); err != nil {
			return err
		}
		var n int64
		if err := tx.QueryRowContext(ctx, `SELECT n FROM scratch_counter WHERE id = 1`).Scan(&n); err != nil {
			return err
		}
		if err := c.interfere(); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE scratch_counter SET n = $1 WHERE id = 1`, n+1000)
		if err != nil {
			*codes = append(*codes, sqlState(err))
		}
		return err
	}
}

// TestInTxGivesUpAfterMaxAttemptsPostgres is resolver case (c): a conflict
// that recurs on every attempt makes InTx give up after MaxAttempts runs with
// ErrConflictUnresolved, and none of the victim's writes land.
func TestInTxGivesUpAfterMaxAttemptsPostgres(t *testing.T) {
	db, dsn := openPostgres(t)
	other := storetest.Open(t, dsn) // a second handle, so db's stats are the victim's alone
	ctx := testContext(t)
	const start, maxAttempts = 7, 3
	createScratch(t, db, start)
	db.MaxAttempts = maxAttempts
	before := db.Stats()

	c := startConflictor(ctx, other, maxAttempts)
	var runs, afterCommits int
	var codes []string
	err := db.InTx(ctx, victim(ctx, c, &runs, &afterCommits, &codes))
	c.wait(t)

	if !errors.Is(err, store.ErrConflictUnresolved) {
		t.Fatalf("InTx = %v, want ErrConflictUnresolved", err)
	}
	if runs != maxAttempts {
		t.Errorf("callback ran %d times, want MaxAttempts = %d", runs, maxAttempts)
	}
	if want := slices.Repeat([]string{"40001"}, maxAttempts); !slices.Equal(codes, want) {
		t.Errorf("refused writes had SQLSTATEs %q, want %q", codes, want)
	}
	if st := statsSince(db, before); st != (store.Stats{Attempts: maxAttempts, Retries: maxAttempts - 1, GiveUps: 1}) {
		t.Errorf("stats grew by %+v, want %d attempts, %d retries, 1 give-up", st, maxAttempts, maxAttempts-1)
	}
	if afterCommits != 0 {
		t.Errorf("AfterCommit ran %d times though nothing committed", afterCommits)
	}
	if got := counter(t, db); got != start+maxAttempts {
		t.Errorf("counter = %d, want %d (only the conflicting writer's increments)", got, start+maxAttempts)
	}
	if notes := logNotes(t, db); len(notes) != 0 {
		t.Errorf("victim's writes landed: %q", notes)
	}
}

// TestInTxOnceDoesNotRetryPostgres: InTxOnce hands the first conflict back to
// the caller, recognisable by IsConflict, after a single run.
func TestInTxOnceDoesNotRetryPostgres(t *testing.T) {
	db, dsn := openPostgres(t)
	other := storetest.Open(t, dsn)
	ctx := testContext(t)
	const start = 100
	createScratch(t, db, start)
	before := db.Stats()

	c := startConflictor(ctx, other, 1)
	var runs, afterCommits int
	var codes []string
	err := db.InTxOnce(ctx, victim(ctx, c, &runs, &afterCommits, &codes))
	c.wait(t)

	if !store.IsConflict(err) {
		t.Fatalf("InTxOnce = %v, want a conflict", err)
	}
	if sqlState(err) != "40001" {
		t.Errorf("SQLSTATE %q, want 40001", sqlState(err))
	}
	if errors.Is(err, store.ErrConflictUnresolved) {
		t.Errorf("InTxOnce reported ErrConflictUnresolved: %v", err)
	}
	if runs != 1 {
		t.Errorf("callback ran %d times, want 1", runs)
	}
	if st := statsSince(db, before); st != (store.Stats{Attempts: 1}) {
		t.Errorf("stats grew by %+v, want one attempt and no retry", st)
	}
	if afterCommits != 0 {
		t.Errorf("AfterCommit ran %d times", afterCommits)
	}
	if got := counter(t, db); got != start+1 {
		t.Errorf("counter = %d, want %d", got, start+1)
	}
	if notes := logNotes(t, db); len(notes) != 0 {
		t.Errorf("victim's writes landed: %q", notes)
	}
}

// TestSQLiteConcurrentIncrements: many writers on one row through InTx all
// land; the busy timeout and BEGIN IMMEDIATE queue them instead of failing.
func TestSQLiteConcurrentIncrements(t *testing.T) {
	db := storetest.Open(t, storetest.NewSQLiteDSN(t))
	ctx := testContext(t)
	createScratch(t, db, 0)
	before := db.Stats()

	const workers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				if err := db.InTx(ctx, func(tx *store.Tx) error { return increment(ctx, tx) }); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("InTx: %v", err)
	}
	if got := counter(t, db); got != workers*each {
		t.Errorf("counter = %d, want %d", got, workers*each)
	}
	st := statsSince(db, before)
	if st.GiveUps != 0 || st.Attempts-st.Retries != workers*each {
		t.Errorf("stats grew by %+v, want %d first tries and no give-up", st, workers*each)
	}
}

// TestIsConflictSQLiteBusy: a writer that finds the database locked, with no
// busy timeout to wait it out, gets SQLITE_BUSY, and IsConflict says so.
func TestIsConflictSQLiteBusy(t *testing.T) {
	path := storetest.NewSQLiteDSN(t)
	db := storetest.Open(t, path)
	ctx := testContext(t)
	createScratch(t, db, 0)

	// A second handle on the same file that does not wait for locks.
	impatient, err := sql.Open("sqlite", "file:"+path+"?"+url.Values{
		"_pragma": {"busy_timeout(0)"}, "_txlock": {"immediate"},
	}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer impatient.Close()

	locked, release, held := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		held <- db.InTxOnce(ctx, func(tx *store.Tx) error {
			if err := increment(ctx, tx); err != nil {
				return err
			}
			close(locked)
			<-release
			return nil
		})
	}()
	select {
	case <-locked:
	case err := <-held:
		t.Fatalf("holding the write lock: %v", err)
	}

	_, err = impatient.BeginTx(ctx, nil)
	if err == nil {
		t.Error("BEGIN IMMEDIATE succeeded while another connection held the write lock")
	} else {
		var se *sqlite.Error
		if !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY {
			t.Errorf("BEGIN IMMEDIATE = %v, want SQLITE_BUSY", err)
		}
		if !store.IsConflict(err) || !store.IsConflict(fmt.Errorf("wrapped: %w", err)) {
			t.Errorf("IsConflict(%v) = false, want true", err)
		}
	}
	_, err = impatient.ExecContext(ctx, `UPDATE scratch_counter SET n = 99 WHERE id = 1`)
	if !store.IsConflict(err) {
		t.Errorf("autocommit write under a held lock = %v, want a conflict", err)
	}

	close(release)
	if err := <-held; err != nil {
		t.Fatalf("lock holder: %v", err)
	}
	if _, err := impatient.ExecContext(ctx, `UPDATE scratch_counter SET n = n + 1 WHERE id = 1`); err != nil {
		t.Errorf("write after the lock was released: %v", err)
	}
	if got := counter(t, db); got != 2 {
		t.Errorf("counter = %d, want 2", got)
	}
}

// TestIsConflictClassification covers the error codes without a database.
func TestIsConflictClassification(t *testing.T) {
	for _, c := range []struct {
		err              error
		conflict, unique bool
	}{
		{nil, false, false},
		{errors.New("boom"), false, false},
		{context.Canceled, false, false},
		{store.ErrConflictUnresolved, false, false},
		{&pgconn.PgError{Code: "40001"}, true, false},
		{&pgconn.PgError{Code: "40P01"}, true, false},
		{fmt.Errorf("outer: %w", &pgconn.PgError{Code: "40001"}), true, false},
		{&pgconn.PgError{Code: "23505"}, false, true},
		{&pgconn.PgError{Code: "25P02"}, false, false},
	} {
		if got := store.IsConflict(c.err); got != c.conflict {
			t.Errorf("IsConflict(%v) = %v, want %v", c.err, got, c.conflict)
		}
		if got := store.IsUniqueViolation(c.err); got != c.unique {
			t.Errorf("IsUniqueViolation(%v) = %v, want %v", c.err, got, c.unique)
		}
	}
}

// TestAfterCommit: hooks run in order, after the commit is visible to other
// connections, and not when the transaction rolls back.
func TestAfterCommit(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := testContext(t)
		createScratch(t, db, 0)

		var calls []string
		err := db.InTx(ctx, func(tx *store.Tx) error {
			for _, name := range []string{"first", "second"} {
				tx.AfterCommit(func() {
					var n int64
					if err := db.QueryRowContext(ctx, `SELECT n FROM scratch_counter WHERE id = 1`).Scan(&n); err != nil {
						t.Errorf("AfterCommit reading: %v", err)
					}
					calls = append(calls, fmt.Sprintf("%s saw %d", name, n))
				})
			}
			if err := increment(ctx, tx); err != nil {
				return err
			}
			if len(calls) != 0 {
				t.Errorf("AfterCommit ran before the callback returned: %q", calls)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"first saw 1", "second saw 1"}; !slices.Equal(calls, want) {
			t.Errorf("AfterCommit calls %q, want %q", calls, want)
		}

		calls = nil
		err = db.InTx(ctx, func(tx *store.Tx) error {
			tx.AfterCommit(func() { calls = append(calls, "rolled back") })
			if err := increment(ctx, tx); err != nil {
				return err
			}
			return errors.New("changed my mind")
		})
		if err == nil {
			t.Fatal("InTx succeeded, want the callback's error")
		}
		if len(calls) != 0 {
			t.Errorf("AfterCommit ran on rollback: %q", calls)
		}
		if got := counter(t, db); got != 1 {
			t.Errorf("counter = %d, want 1", got)
		}
	})
}

// TestInTxPanicRollsBack: a panic in the callback rolls the transaction back,
// releases its connection and locks, and reaches the caller unchanged.
func TestInTxPanicRollsBack(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := testContext(t)
		createScratch(t, db, 0)
		before := db.Stats()

		errBoom := errors.New("boom")
		afterCommits := 0
		got := func() (p any) {
			defer func() { p = recover() }()
			_ = db.InTx(ctx, func(tx *store.Tx) error {
				tx.AfterCommit(func() { afterCommits++ })
				if err := increment(ctx, tx); err != nil {
					t.Errorf("increment: %v", err)
				}
				panic(errBoom)
			})
			return nil
		}()
		if got != errBoom {
			t.Fatalf("recovered %v, want the callback's panic value", got)
		}
		if afterCommits != 0 {
			t.Errorf("AfterCommit ran after a panic")
		}
		if st := statsSince(db, before); st != (store.Stats{Attempts: 1}) {
			t.Errorf("stats grew by %+v, want one attempt", st)
		}
		checkReleased(t, db, 0)
	})
}

// TestInTxGoexitRollsBack: a callback that leaves through runtime.Goexit (as
// t.Fatal does) must not strand its transaction holding locks.
func TestInTxGoexitRollsBack(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := testContext(t)
		createScratch(t, db, 0)

		exited := make(chan struct{})
		go func() {
			defer close(exited)
			_ = db.InTx(ctx, func(tx *store.Tx) error {
				if err := increment(ctx, tx); err != nil {
					t.Errorf("increment: %v", err)
				}
				runtime.Goexit()
				return nil
			})
			t.Error("InTx returned after Goexit")
		}()
		<-exited
		checkReleased(t, db, 0)
	})
}

// checkReleased asserts the counter is still want and that a new write of the
// same row goes through promptly, i.e. nothing holds its lock.
func checkReleased(t *testing.T, db *store.DB, want int64) {
	t.Helper()
	if got := counter(t, db); got != want {
		t.Errorf("counter = %d, want %d: the abandoned write landed", got, want)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := db.InTx(ctx, func(tx *store.Tx) error { return increment(ctx, tx) }); err != nil {
		t.Fatalf("next write after %v: %v (the abandoned transaction still holds its lock?)", time.Since(start), err)
	}
	if got := counter(t, db); got != want+1 {
		t.Errorf("counter = %d, want %d", got, want+1)
	}
}

// TestMigrate: a second Migrate applies nothing, SchemaVersion is the newest
// migration, and schema_migrations records each migration once by name.
func TestMigrate(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) { // Each has migrated once
		ctx := testContext(t)
		migs, err := store.Migrations(db.Dialect())
		if err != nil {
			t.Fatal(err)
		}
		if len(migs) == 0 {
			t.Fatal("no migrations")
		}
		again, err := db.Migrate(ctx)
		if err != nil {
			t.Fatalf("second Migrate: %v", err)
		}
		if len(again) != 0 {
			t.Errorf("second Migrate applied %v, want nothing", again)
		}
		v, err := db.SchemaVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := migs[len(migs)-1].Version; v != want {
			t.Errorf("SchemaVersion = %d, want %d", v, want)
		}
		checkRecorded(t, db, migs)
	})
}

func checkRecorded(t *testing.T, db *store.DB, migs []store.Migration) {
	t.Helper()
	rows, err := db.QueryContext(testContext(t), `SELECT version, name FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got, want []string
	for rows.Next() {
		var v int
		var name string
		if err := rows.Scan(&v, &name); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%04d_%s", v, name))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, m := range migs {
		want = append(want, fmt.Sprintf("%04d_%s", m.Version, m.Name))
	}
	if !slices.Equal(got, want) {
		t.Errorf("schema_migrations holds %q, want %q", got, want)
	}
}

// TestMigrateConcurrent: several instances migrating one fresh database at
// once all succeed and each migration is applied exactly once.
func TestMigrateConcurrent(t *testing.T) {
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			dsn := storetest.NewDSN(t, engine)
			ctx := testContext(t)
			const instances = 6
			dbs := make([]*store.DB, instances)
			for i := range dbs {
				db, err := store.Open(ctx, dsn)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				dbs[i] = db
			}
			applied := make([][]int, instances)
			errs := make([]error, instances)
			var wg sync.WaitGroup
			for i, db := range dbs {
				wg.Go(func() { applied[i], errs[i] = db.Migrate(ctx) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("instance %d: Migrate: %v", i, err)
				}
			}
			migs, err := store.Migrations(dbs[0].Dialect())
			if err != nil {
				t.Fatal(err)
			}
			var all, want []int
			for _, a := range applied {
				all = append(all, a...)
			}
			slices.Sort(all)
			for _, m := range migs {
				want = append(want, m.Version)
			}
			if !slices.Equal(all, want) {
				t.Errorf("instances applied %v between them, want each of %v once", applied, want)
			}
			checkRecorded(t, dbs[0], migs)
		})
	}
}

// TestMigrationsInStep: both dialects have the same migrations, numbered in
// order, creating the same tables and indexes.
func TestMigrationsInStep(t *testing.T) {
	pg, err := store.Migrations(store.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	lite, err := store.Migrations(store.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	if len(pg) == 0 {
		t.Fatal("no PostgreSQL migrations")
	}
	if len(pg) != len(lite) {
		t.Fatalf("%d PostgreSQL migrations, %d SQLite ones", len(pg), len(lite))
	}
	objects := regexp.MustCompile(`(?i)\bCREATE\s+(?:UNIQUE\s+)?(TABLE|INDEX)\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)`)
	names := func(sql string) []string {
		var out []string
		for _, m := range objects.FindAllStringSubmatch(sql, -1) {
			out = append(out, strings.ToLower(m[1]+" "+m[2]))
		}
		slices.Sort(out)
		return out
	}
	for i := range pg {
		p, l := pg[i], lite[i]
		if p.Version != l.Version || p.Name != l.Name {
			t.Errorf("migration %d: PostgreSQL has %04d_%s, SQLite has %04d_%s", i, p.Version, p.Name, l.Version, l.Name)
		}
		if p.Version <= 0 || (i > 0 && p.Version <= pg[i-1].Version) {
			t.Errorf("migration %04d_%s: versions must be positive and strictly increasing", p.Version, p.Name)
		}
		if pn, ln := names(p.SQL), names(l.SQL); !slices.Equal(pn, ln) {
			t.Errorf("migration %04d_%s creates %q on PostgreSQL but %q on SQLite", p.Version, p.Name, pn, ln)
		}
	}
	if _, err := store.Migrations("oracle"); err == nil {
		t.Error("Migrations of an unknown dialect succeeded")
	}
}

// TestOpenPostgresUnreachable: a PostgreSQL DSN nobody answers fails Open
// promptly, with an error that names the engine.
func TestOpenPostgresUnreachable(t *testing.T) {
	start := time.Now()
	db, err := store.Open(testContext(t), "postgres://coffer@127.0.0.1:1/coffer?sslmode=disable&connect_timeout=5")
	if err == nil {
		db.Close()
		t.Fatal("Open of a closed port succeeded")
	}
	if !strings.Contains(err.Error(), "postgres") {
		t.Errorf("error %q does not mention postgres", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("Open took %v to fail", d)
	}
}

// TestOpenSQLiteUnwritable: a database path that cannot be created fails Open
// with an error saying what the store was doing and where.
func TestOpenSQLiteUnwritable(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, path string, wantIn ...string) {
		t.Helper()
		db, err := store.Open(ctx, path)
		if err == nil {
			db.Close()
			t.Fatalf("Open(%q) succeeded", path)
		}
		t.Logf("Open(%q): %v", path, err)
		for _, w := range wantIn {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
	}
	t.Run("parent_is_a_file", func(t *testing.T) {
		check(t, filepath.Join(notDir, "sub", "coffer.db"), "store:", notDir)
	})
	t.Run("path_is_a_directory", func(t *testing.T) {
		check(t, dir, "store:", "sqlite", dir)
	})
	t.Run("read_only_directory", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("running as root: directory permissions are not enforced")
		}
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		check(t, filepath.Join(ro, "coffer.db"), "store:", "sqlite", ro)
	})
	t.Run("empty", func(t *testing.T) {
		check(t, "", "store:")
	})
}

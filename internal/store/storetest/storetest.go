// Package storetest gives tests fresh, migrated databases: SQLite always and
// PostgreSQL when COFFER_TEST_POSTGRES names a server (for example
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable).
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/store"
)

// EnvPostgres names the environment variable holding the PostgreSQL DSN.
const EnvPostgres = "COFFER_TEST_POSTGRES"

// Engines are the database engines every storage test runs on.
var Engines = []string{"sqlite", "postgres"}

// NewDSN returns a fresh database of the named engine for the test.
func NewDSN(t testing.TB, engine string) string {
	if engine == "postgres" {
		return NewPostgresDSN(t)
	}
	return NewSQLiteDSN(t)
}

// Each runs f once per engine as a subtest with a fresh migrated database.
// Without COFFER_TEST_POSTGRES the PostgreSQL half reports itself skipped.
func Each(t *testing.T, f func(t *testing.T, db *store.DB)) {
	for _, engine := range Engines {
		t.Run(engine, func(t *testing.T) {
			f(t, Open(t, NewDSN(t, engine)))
		})
	}
}

// Open opens and migrates dsn and closes it when the test ends.
func Open(t testing.TB, dsn string) *store.DB {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

// NewSQLiteDSN returns the path of a new SQLite database in the test's temp dir.
func NewSQLiteDSN(t testing.TB) string { return filepath.Join(t.TempDir(), "coffer.db") }

// NewPostgresDSN creates an empty PostgreSQL database for the test, dropped
// when it ends, and returns its DSN. It skips the test, saying why, when
// COFFER_TEST_POSTGRES is not set.
func NewPostgresDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvPostgres)
	if base == "" {
		t.Skipf("PostgreSQL part skipped: %s is not set", EnvPostgres)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", EnvPostgres, err)
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	b := make([]byte, 6)
	rand.Read(b)
	name := "coffer_test_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		a, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer a.Close()
		a.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	})
	u.Path = "/" + name
	return u.String()
}

// Place is one piece of what a database holds: a cell ("table.column") or,
// for SQLite, one of its files.
type Place struct {
	Where string
	Data  []byte
}

// Dump reads everything db holds, for tests that look for what must never
// be stored: every cell of every table as bytes (other values as text),
// and for SQLite the database file, its write-ahead log and journal byte
// for byte. cells counts the cells read per table.
func Dump(t testing.TB, db *store.DB) (places []Place, cells map[string]int) {
	t.Helper()
	ctx := context.Background()
	q := `SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`
	if db.Dialect() == store.Postgres {
		q = `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name`
	}
	rows, err := db.QueryContext(ctx, q)
	tables, err := store.Collect(rows, err, func(r interface{ Scan(...any) error }) (string, error) {
		var name string
		return name, r.Scan(&name)
	})
	if err != nil {
		t.Fatal(err)
	}
	cells = map[string]int{}
	for _, table := range tables {
		rows, err := db.QueryContext(ctx, `SELECT * FROM "`+strings.ReplaceAll(table, `"`, `""`)+`"`)
		if err != nil {
			t.Fatal(err)
		}
		cols, err := rows.Columns()
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for i, v := range vals {
				var b []byte
				switch v := v.(type) {
				case []byte:
					b = v
				case string:
					b = []byte(v)
				case nil:
				default:
					b = fmt.Append(nil, v)
				}
				places = append(places, Place{Where: table + "." + cols[i], Data: b})
				cells[table]++
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	if db.Dialect() == store.SQLite {
		var seq int
		var name, file string
		if err := db.QueryRowContext(ctx, `PRAGMA database_list`).Scan(&seq, &name, &file); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{file, file + "-wal", file + "-shm", file + "-journal"} {
			data, err := os.ReadFile(f)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			places = append(places, Place{Where: filepath.Base(f), Data: data})
		}
	}
	return places, cells
}

// Package storetest gives tests fresh, migrated databases: SQLite always and
// PostgreSQL when COFFER_TEST_POSTGRES names a server (for example
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable).
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
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

package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/coffer/coffer/internal/store/storetest"
)

// TestBenchLedgerSmoke runs coffer bench ledger with tiny counts: every
// path on SQLite, and on PostgreSQL with pgbench when COFFER_TEST_POSTGRES
// is set (pgbench's cases skip themselves without pgbench on PATH). The
// benchmark checks the books after every case and fails if they do not
// balance.
func TestBenchLedgerSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the ledger benchmark for a few seconds")
	}
	args := []string{"-duration", "300ms", "-accounts", "20", "-clients", "2", "-batch", "10"}
	engines := []string{"sqlite"}
	if dsn := os.Getenv(storetest.EnvPostgres); dsn != "" {
		args = append(args, "-pg", dsn)
		engines = append(engines, "postgres")
	} else {
		t.Logf("PostgreSQL and pgbench cases skipped: %s is not set", storetest.EnvPostgres)
	}
	var stdout, stderr bytes.Buffer
	if err := benchLedger(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("bench ledger: %v\nstderr:\n%s", err, stderr.String())
	}
	out := stdout.String()
	t.Logf("output:\n%s", out)
	if !bytes.Contains(stdout.Bytes(), []byte("books balanced after every case")) {
		t.Error("the report does not say the books balanced")
	}
	for _, engine := range engines {
		paths := []string{"go", "api", "go-batch", "api-batch"}
		if engine == "postgres" {
			paths = append(paths, "pgbench")
		}
		for _, p := range paths {
			for _, dist := range ledgerDists {
				re := regexp.MustCompile(`(?m)^\s*` + engine + `\s+` + p + `\s+2\s+` + dist + `\s+(\S+)`)
				m := re.FindStringSubmatch(out)
				switch {
				case m == nil:
					t.Errorf("no row for %s/%s/2/%s", engine, p, dist)
				case m[1] == "skipped":
					t.Logf("%s/%s/2/%s skipped (the report says why)", engine, p, dist)
				default:
					if n, err := strconv.Atoi(m[1]); err != nil || n <= 0 {
						t.Errorf("%s/%s/2/%s made %s transfers", engine, p, dist, m[1])
					}
				}
			}
		}
	}
}

func TestBenchLedgerCaseFilters(t *testing.T) {
	c := ledgerCase{engine: "postgres", path: "go-batch", clients: 16, dist: "hot"}
	for filter, want := range map[string]bool{
		"": true, "postgres": true, "batch": true, "go-batch/hot": true, "16/postgres": true,
		"go": false, "sqlite": false, "go-batch/uniform": false, "1": false, "api,hot": true,
	} {
		fs, err := parseCaseFilters(filter)
		if err != nil {
			t.Fatalf("%q: %v", filter, err)
		}
		got := len(fs) == 0
		for _, f := range fs {
			got = got || c.matches(f)
		}
		if got != want {
			t.Errorf("-cases %q matches %s: %v, want %v", filter, c, got, want)
		}
	}
	if _, err := parseCaseFilters("go/warm"); err == nil {
		t.Error("-cases go/warm: no error for an unknown word")
	}
}

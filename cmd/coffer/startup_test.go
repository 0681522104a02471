//go:build unix

package main_test

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/regtest"
	"github.com/coffer/coffer/internal/store/storetest"
)

// startupTimeout bounds every run that must fail at start: a hang is a bug.
const startupTimeout = 60 * time.Second

// TestStartupFailures runs `coffer serve` with one thing wrong at a time and
// requires it to exit non-zero at once with a message naming the problem.
func TestStartupFailures(t *testing.T) {
	t.Run("config", func(t *testing.T) {
		dir := t.TempDir()
		yamlPath := filepath.Join(dir, "coffer.yaml")
		if err := os.WriteFile(yamlPath, []byte("follow:\n  prefetch: 4\n  prefetchh: 2\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		base := []string{"COFFER_DATA_DIR=" + dir, "COFFER_NODE_RETRIES=0"}
		cases := []struct {
			name string
			env  []string
			args []string
			want []string // each must appear in stderr
		}{
			{"max_reorg_depth 0", []string{"COFFER_FOLLOW_MAX_REORG_DEPTH=0"}, nil, []string{"follow.max_reorg_depth"}},
			{"coin eth", []string{"COFFER_CHAIN_COIN=eth"}, nil, []string{"chain.coin", "eth"}},
			{"bad duration", []string{"COFFER_NODE_TIMEOUT=soon"}, nil, []string{"node.timeout", "soon"}},
			{"not an integer", []string{"COFFER_FOLLOW_PREFETCH=many"}, nil, []string{"follow.prefetch", "many"}},
			{"misspelt variable", []string{"COFFER_FOLLOW_PREFECH=2"}, nil, []string{"COFFER_FOLLOW_PREFECH"}},
			{"unknown yaml key", nil, []string{"-config", yamlPath}, []string{"prefetchh", yamlPath}},
			{"missing config file", nil, []string{"-config", filepath.Join(dir, "nope.yaml")}, []string{"nope.yaml"}},
			{"config file from COFFER_CONFIG", []string{"COFFER_CONFIG=" + yamlPath}, nil, []string{"prefetchh"}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				env := append(append([]string{}, base...), c.env...)
				expectStartFailure(t, dir, env, append([]string{"serve"}, c.args...), c.want...)
			})
		}
	})

	t.Run("node", func(t *testing.T) {
		n := regtest.StartT(t, regtest.Options{})
		rpc := n.RPC()
		for _, engine := range storetest.Engines {
			t.Run(engine, func(t *testing.T) {
				dir := t.TempDir()
				dsn := storetest.NewDSN(t, engine)
				env := func(extra ...string) []string {
					return serveEnv(dir, dsn, freeAddr(t), rpc.URL, rpc.User, rpc.Password, append([]string{"COFFER_NODE_RETRIES=0"}, extra...)...)
				}
				t.Run("wrong password", func(t *testing.T) {
					stderr := expectStartFailure(t, dir, env("COFFER_NODE_PASSWORD=wrong"+rpc.Password), []string{"serve"},
						"credentials", "password", "node.url")
					if strings.Contains(stderr, rpc.Password) {
						t.Errorf("stderr shows the RPC password:\n%s", stderr)
					}
				})
				t.Run("unreachable", func(t *testing.T) {
					closed := "http://" + freeAddr(t)
					expectStartFailure(t, dir, env("COFFER_NODE_URL="+closed), []string{"serve"}, "unreachable", closed)
				})
				t.Run("wrong network", func(t *testing.T) {
					expectStartFailure(t, dir, env("COFFER_CHAIN_NETWORK=testnet"), []string{"serve"},
						`"regtest"`, "chain.network", `"testnet"`)
				})
				t.Run("listen address taken", func(t *testing.T) {
					l, err := net.Listen("tcp", "127.0.0.1:0")
					if err != nil {
						t.Fatal(err)
					}
					defer l.Close()
					expectStartFailure(t, dir, env("COFFER_API_LISTEN="+l.Addr().String()), []string{"serve"},
						"api.listen", l.Addr().String())
				})
			})
		}
	})
}

// expectStartFailure runs coffer with args and requires a non-zero exit
// within startupTimeout and every string of want in its stderr, which it
// returns.
func expectStartFailure(t *testing.T, dir string, env, args []string, want ...string) string {
	t.Helper()
	start := time.Now()
	code, _, stderr := runCoffer(t, dir, startupTimeout, env, args...)
	if code == 0 {
		t.Fatalf("coffer %s exited 0, want a failure; stderr:\n%s", strings.Join(args, " "), stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr does not mention %q:\n%s", w, stderr)
		}
	}
	t.Logf("exit %d after %s: %s", code, time.Since(start).Round(time.Millisecond), lastLine(stderr))
	return stderr
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestVersion runs `coffer version`.
func TestVersion(t *testing.T) {
	code, stdout, stderr := runCoffer(t, t.TempDir(), startupTimeout, nil, "version")
	if code != 0 || !strings.HasPrefix(stdout, "coffer ") {
		t.Fatalf("coffer version: exit %d, stdout %q, stderr %q; want exit 0 and \"coffer <version>\"", code, stdout, stderr)
	}
}

var migrateLine = regexp.MustCompile(`applied (\d+) migration\(s\); schema version (\d+) \((\w+)\)`)

// TestMigrate runs `coffer migrate` twice on a fresh database: the first run
// applies the schema and prints its version, the second applies nothing.
func TestMigrate(t *testing.T) {
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			dir := t.TempDir()
			dsn := storetest.NewDSN(t, engine)
			if engine == "sqlite" {
				dsn = filepath.Join(dir, "fresh", "coffer.db") // a directory that does not exist yet
			}
			env := []string{"COFFER_DATA_DIR=" + dir, "COFFER_DATABASE_DSN=" + dsn}
			var version string
			for run, wantApplied := range []string{"", "0"} {
				code, stdout, stderr := runCoffer(t, dir, startupTimeout, env, "migrate")
				if code != 0 {
					t.Fatalf("migrate run %d: exit %d; stderr:\n%s", run+1, code, stderr)
				}
				m := migrateLine.FindStringSubmatch(stdout)
				if m == nil {
					t.Fatalf("migrate run %d printed %q; want \"applied N migration(s); schema version V (%s)\"", run+1, stdout, engine)
				}
				applied, v, dialect := m[1], m[2], m[3]
				if dialect != engine {
					t.Errorf("migrate run %d names dialect %q, want %q", run+1, dialect, engine)
				}
				switch run {
				case 0:
					if applied == "0" || v == "0" {
						t.Errorf("first migrate on a fresh database: %q", stdout)
					}
					version = v
				default:
					if applied != wantApplied || v != version {
						t.Errorf("second migrate: %q; want 0 applied and schema version %s", stdout, version)
					}
				}
				t.Logf("run %d: %s", run+1, strings.TrimSpace(stdout))
			}
			if engine == "sqlite" {
				if _, err := os.Stat(dsn); err != nil {
					t.Errorf("migrate made no database file: %v", err)
				}
			}
		})
	}
}

package webhook_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/webhook"
)

// writeScript writes an executable /bin/sh script into dir.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func lines(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// The script fails its first runs; every matching event is then run once
// successfully, in log order, with the environment documented.
func TestScriptHookRetriesInOrderExactlyOnce(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		dir := t.TempDir()
		const fails = 3
		script := writeScript(t, dir, "hook.sh", fmt.Sprintf(`
n=$(cat '%[1]s/count' 2>/dev/null || echo 0)
n=$((n+1))
echo $n > '%[1]s/count'
if [ "$n" -le %[2]d ]; then echo "failing run $n" >&2; exit 3; fi
body=$(cat)
[ "$body" = "$COFFER_EVENT_JSON" ] || { echo "COFFER_EVENT_JSON differs from stdin" >&2; exit 9; }
echo "$COFFER_EVENT_ID $COFFER_EVENT_TYPE $COFFER_EVENT_WALLET_ID $COFFER_WEBHOOK_ID $body" >> '%[1]s/out'
`, dir, fails))
		cfg := fastConfig()
		cfg.Script = webhook.Script{Command: script, EventTypes: []string{"deposit.*"}, Timeout: 5 * time.Second}
		svc := e.service(cfg)
		if err := svc.SyncScript(context.Background()); err != nil {
			t.Fatal(err)
		}
		e.addWallet(t, "w1")
		var want []int64
		for i := range 6 {
			want = append(want, e.appendEvent(t, "deposit.credited", "w1", map[string]int{"n": i}))
			e.appendEvent(t, "tx.seen", "", map[string]int{"n": i}) // filtered out
		}
		start(t, svc)
		out := filepath.Join(dir, "out")
		waitUntil(t, 20*time.Second, "every event run", func() bool { return len(lines(out)) >= len(want) })
		e.waitDrained(t)
		got := lines(out)
		if len(got) != len(want) {
			t.Fatalf("%d successful runs, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
		}
		for i, l := range got {
			f := strings.SplitN(l, " ", 5)
			id := strconv.FormatInt(want[i], 10)
			if len(f) != 5 || f[0] != id || f[1] != "deposit.credited" || f[2] != "w1" || f[3] != "evt_"+id ||
				!strings.Contains(f[4], `"id":`+id) || !strings.Contains(f[4], `"type":"deposit.credited"`) {
				t.Fatalf("run %d: %q, want event %s", i, l, id)
			}
		}
		if n := len(lines(filepath.Join(dir, "count"))); n != 1 {
			t.Fatalf("count file has %d lines", n)
		}
		// The attempts log: the first delivery failed fails times with the
		// exit code and standard error, then succeeded.
		ds, err := svc.Deliveries(context.Background(), webhook.ScriptEndpointID, webhook.DeliveryFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var first *webhook.Delivery
		for i := range ds {
			if ds[i].EventID == want[0] {
				first = ds[i]
			}
		}
		if first == nil || first.Status != webhook.StatusSucceeded || len(first.Attempts) != fails+1 {
			t.Fatalf("first delivery: %+v", first)
		}
		for _, a := range first.Attempts {
			if a.Attempt <= fails && (a.Succeeded || a.StatusCode != 3 || a.Error != "exit status 3" ||
				a.Response != "failing run "+strconv.Itoa(a.Attempt)+"\n") {
				t.Fatalf("failed attempt %+v", a)
			}
			if a.Attempt == fails+1 && (!a.Succeeded || a.StatusCode != 0 || a.Error != "") {
				t.Fatalf("last attempt %+v", a)
			}
		}
		if n := e.count(t, `SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1`, webhook.ScriptEndpointID); n != len(want) {
			t.Fatalf("%d deliveries, want %d", n, len(want))
		}
	})
}

// A run past the timeout has its process group killed, and is retried.
func TestScriptHookTimeout(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		dir := t.TempDir()
		script := writeScript(t, dir, "hook.sh", fmt.Sprintf(`
if [ ! -e '%[1]s/ran' ]; then
  touch '%[1]s/ran'
  sleep 60 &
  echo $! > '%[1]s/child'
  wait
fi
cat > /dev/null
echo "$COFFER_EVENT_ID" >> '%[1]s/out'
`, dir))
		cfg := fastConfig()
		cfg.Script = webhook.Script{Command: script, Timeout: 500 * time.Millisecond}
		svc := e.service(cfg)
		if err := svc.SyncScript(context.Background()); err != nil {
			t.Fatal(err)
		}
		id := e.appendEvent(t, "block.connected", "", map[string]int{"height": 1})
		start(t, svc)
		out := filepath.Join(dir, "out")
		waitUntil(t, 20*time.Second, "the retried run", func() bool { return len(lines(out)) >= 1 })
		e.waitDrained(t)
		if got := lines(out); len(got) != 1 || got[0] != strconv.FormatInt(id, 10) {
			t.Fatalf("runs %q", got)
		}
		ds, err := svc.Deliveries(context.Background(), webhook.ScriptEndpointID, webhook.DeliveryFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 1 || len(ds[0].Attempts) != 2 || ds[0].Attempts[0].Succeeded ||
			!strings.Contains(ds[0].Attempts[0].Error, "timeout") || ds[0].Attempts[0].StatusCode != 0 ||
			!ds[0].Attempts[1].Succeeded || ds[0].Attempts[0].LatencyMS > 3000 {
			t.Fatalf("deliveries %+v", ds)
		}
		// The background child went with the process group.
		pid := strings.TrimSpace(strings.Join(lines(filepath.Join(dir, "child")), ""))
		if pid == "" {
			t.Fatal("no child pid")
		}
		waitUntil(t, 5*time.Second, "the child killed", func() bool {
			st, err := os.ReadFile("/proc/" + pid + "/stat")
			if err != nil {
				return true // gone (or no /proc: nothing to check)
			}
			// A zombie left to an init that does not reap is dead too.
			_, rest, _ := strings.Cut(string(st), ") ")
			return strings.HasPrefix(rest, "Z")
		})
	})
}

func TestScriptHookConfiguration(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		dir := t.TempDir()
		notExec := filepath.Join(dir, "plain.sh")
		os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
		for _, c := range []struct{ cmd, want string }{
			{notExec, "is not executable"},
			{"hook.sh", "must be an absolute path"},
			{filepath.Join(dir, "missing"), "no such file"},
			{dir, "not a regular file"},
		} {
			cfg := fastConfig()
			cfg.Script.Command = c.cmd
			err := e.service(cfg).SyncScript(ctx)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "hooks.command") {
				t.Errorf("command %q: error %v, want %q", c.cmd, err, c.want)
			}
		}
		script := writeScript(t, dir, "ok.sh", "exit 0\n")
		cfg := fastConfig()
		cfg.Script = webhook.Script{Command: script, EventTypes: []string{"Bad"}}
		if err := e.service(cfg).SyncScript(ctx); err == nil || !strings.Contains(err.Error(), "hooks.event_types") {
			t.Errorf("bad event type: %v", err)
		}
		if n := e.count(t, `SELECT COUNT(*) FROM webhook_endpoints`); n != 0 {
			t.Fatalf("%d endpoints after refused configurations", n)
		}

		cfg.Script.EventTypes = []string{"tx.*"}
		svc := e.service(cfg)
		if err := svc.SyncScript(ctx); err != nil {
			t.Fatal(err)
		}
		ep, err := svc.Get(ctx, webhook.ScriptEndpointID)
		if err != nil || ep.URL != script || !ep.Enabled || len(ep.EventTypes) != 1 || len(ep.Secrets) != 0 {
			t.Fatalf("endpoint %+v, %v", ep, err)
		}
		url := "http://example.com/"
		for _, u := range []webhook.EndpointUpdate{{URL: &url}, {EventTypes: &[]string{}}, {RotateSecret: true}} {
			if _, err := svc.Update(ctx, webhook.ScriptEndpointID, u); !errors.Is(err, webhook.ErrInvalid) {
				t.Errorf("update %+v: %v", u, err)
			}
		}
		if err := svc.Delete(ctx, webhook.ScriptEndpointID); !errors.Is(err, webhook.ErrInvalid) {
			t.Errorf("delete: %v", err)
		}

		// Unset: disabled, kept. Set again: enabled again.
		off := e.service(fastConfig())
		if err := off.SyncScript(ctx); err != nil {
			t.Fatal(err)
		}
		if ep, err := off.Get(ctx, webhook.ScriptEndpointID); err != nil || ep.Enabled || ep.DisabledReason == "" {
			t.Fatalf("after unsetting: %+v, %v", ep, err)
		}
		if err := svc.SyncScript(ctx); err != nil {
			t.Fatal(err)
		}
		if ep, err := svc.Get(ctx, webhook.ScriptEndpointID); err != nil || !ep.Enabled || ep.DisabledReason != "" {
			t.Fatalf("after setting again: %+v, %v", ep, err)
		}
		// Disabled by hand: a restart leaves it disabled.
		no := false
		if _, err := svc.Update(ctx, webhook.ScriptEndpointID, webhook.EndpointUpdate{Enabled: &no}); err != nil {
			t.Fatal(err)
		}
		if err := svc.SyncScript(ctx); err != nil {
			t.Fatal(err)
		}
		if ep, err := svc.Get(ctx, webhook.ScriptEndpointID); err != nil || ep.Enabled {
			t.Fatalf("disabled by hand, after a restart: %+v, %v", ep, err)
		}
	})
}

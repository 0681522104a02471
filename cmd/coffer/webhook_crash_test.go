//go:build unix

package main_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/api"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/regtest"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/webhook"
)

// TestWebhookCrash SIGKILLs `coffer serve` while webhook deliveries are
// pending — the receiver is down, answering 500, and one attempt is in
// flight (the receiver holds the request) — mines more blocks while Coffer
// is dead, brings the receiver up and restarts Coffer. The receiver, which
// checks every request's Standard Webhooks signature with its own HMAC
// code, must then get every block.connected event the log holds after the
// endpoint was created, in log order, each webhook-id once: the retries
// lived in the database, the dead process's lease on the in-flight attempt
// ran out (webhooks.timeout is short) and the new process took it over, and
// the blocks mined while Coffer was down were fanned out after the restart.
func TestWebhookCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("TestWebhookCrash runs a regtest btcd and SIGKILLs coffer serve with webhook deliveries pending; skipped in -short mode")
	}
	n := regtest.StartT(t, regtest.Options{})
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) { webhookCrash(t, n, engine) })
	}
}

// whCrashReceiver is a webhook receiver written from the Standard Webhooks
// specification, not from Coffer's signing code.
type whCrashReceiver struct {
	mu       sync.Mutex
	secret   string
	up       bool          // false: answer 500
	hold     bool          // the next request while down is held until its client goes away
	held     chan struct{} // receives once a request is held
	requests int           // every request that verified
	accepted []string      // webhook-ids answered 2xx, in arrival order
	bad      []string      // requests that failed verification
}

func (rc *whCrashReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	rc.mu.Lock()
	if err == nil {
		err = whCrashVerify(rc.secret, r.Header, body, time.Now())
	}
	if err != nil {
		rc.bad = append(rc.bad, err.Error())
		rc.mu.Unlock()
		http.Error(w, "verification failed", http.StatusBadRequest)
		return
	}
	rc.requests++
	if !rc.up {
		hold := rc.hold
		rc.hold = false
		rc.mu.Unlock()
		if hold {
			rc.held <- struct{}{}
			<-r.Context().Done() // until Coffer dies
		}
		http.Error(w, "receiver down", http.StatusInternalServerError)
		return
	}
	rc.accepted = append(rc.accepted, r.Header.Get("webhook-id"))
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// whCrashVerify checks the signature over "<webhook-id>.<webhook-timestamp>.<body>"
// keyed with the base64-decoded part of the secret after whsec_, the
// timestamp against the clock (5 minutes either way), and that the body is
// the event the webhook-id names.
func whCrashVerify(secret string, h http.Header, body []byte, now time.Time) error {
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || id == "" {
		return fmt.Errorf("webhook-id %q, webhook-timestamp %q", id, ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("stale webhook-timestamp %s", ts)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	ok := false
	for _, s := range strings.Fields(h.Get("webhook-signature")) {
		if v, sig, _ := strings.Cut(s, ","); v == "v1" && hmac.Equal([]byte(sig), []byte(want)) {
			ok = true
		}
	}
	if !ok {
		return errors.New("no signature matches")
	}
	var ev events.Event
	if err := json.Unmarshal(body, &ev); err != nil || "evt_"+strconv.FormatInt(ev.ID, 10) != id {
		return fmt.Errorf("body %s does not match webhook-id %s (%v)", body, id, err)
	}
	return nil
}

func (rc *whCrashReceiver) state() (requests int, accepted, bad []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.requests, slices.Clone(rc.accepted), slices.Clone(rc.bad)
}

// whSend sends a JSON request to a coffer's API with its admin key and
// decodes the answer into out unless it is nil.
func whSend(t *testing.T, method, url string, body, out any, want int) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s, want %d", method, url, resp.StatusCode, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decoding %s: %v", method, url, b, err)
		}
	}
}

func webhookCrash(t *testing.T, n *regtest.Node, engine string) {
	start := time.Now()
	ctx := context.Background()
	rc := &whCrashReceiver{held: make(chan struct{}, 1)}
	recv := httptest.NewServer(rc)
	t.Cleanup(recv.Close)

	dir := t.TempDir()
	dsn := storetest.NewDSN(t, engine)
	db := storetest.Open(t, dsn)
	rpc := n.RPC()
	listen := freeAddr(t)
	base := "http://" + listen
	// Retries every second, for well over the lease of an attempt in flight
	// when Coffer dies (webhooks.timeout + 10 s).
	schedule := "0s,300ms" + strings.Repeat(",1s", 40)
	env := serveEnv(dir, dsn, listen, rpc.URL, rpc.User, rpc.Password,
		"COFFER_WEBHOOKS_TIMEOUT=1s", "COFFER_WEBHOOKS_SCHEDULE="+schedule, "COFFER_LOG_LEVEL=warn")

	p := startCoffer(t, dir, env, "serve")
	waitSynced(t, p, base, 60*time.Second)
	var ep webhook.Endpoint
	whSend(t, "POST", base+"/v1/webhooks", map[string]any{"url": recv.URL + "/coffer", "event_types": []string{"block.connected"}}, &ep, 201)
	rc.mu.Lock()
	rc.secret = ep.Secret
	rc.mu.Unlock()
	var after int64
	if err := db.QueryRowContext(ctx, `SELECT after_event_id FROM webhook_endpoints WHERE id = $1`, ep.ID).Scan(&after); err != nil {
		t.Fatal(err)
	}

	// Five blocks while the receiver is down: five pending deliveries, the
	// first retried.
	if _, err := n.Mine(ctx, 5); err != nil {
		t.Fatal(err)
	}
	deliveries := func() []*webhook.Delivery {
		var page api.WebhookDeliveryPage
		whSend(t, "GET", base+"/v1/webhooks/"+ep.ID+"/deliveries?limit=1000", nil, &page, 200)
		return page.Deliveries
	}
	waitUntil(t, p, 30*time.Second, 20*time.Millisecond, "five pending deliveries, the oldest tried twice", func() (bool, string) {
		ds := deliveries()
		if len(ds) != 5 {
			return false, fmt.Sprintf("%d deliveries", len(ds))
		}
		oldest := ds[len(ds)-1]
		return oldest.AttemptCount >= 2, fmt.Sprintf("oldest tried %d times", oldest.AttemptCount)
	})
	for _, d := range deliveries() {
		if d.Status != webhook.StatusPending {
			t.Fatalf("delivery %d is %s before the kill, want pending", d.ID, d.Status)
		}
	}

	// Kill -9 while the receiver holds an attempt.
	rc.mu.Lock()
	rc.hold = true
	rc.mu.Unlock()
	select {
	case <-rc.held:
	case <-time.After(10 * time.Second):
		t.Fatal("no attempt reached the receiver within 10 s")
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.wait(10 * time.Second); !ok {
		t.Fatal("coffer serve did not die of SIGKILL")
	}
	killed := time.Now()
	requests, accepted, _ := rc.state()
	t.Logf("%s: killed coffer serve with an attempt in flight after %d failed attempts; %d accepted", engine, requests, len(accepted))
	if len(accepted) != 0 {
		t.Fatalf("the receiver accepted %v while down", accepted)
	}

	// Three more blocks while Coffer is dead; then the receiver comes up
	// and Coffer restarts.
	if _, err := n.Mine(ctx, 3); err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	rc.up = true
	rc.mu.Unlock()
	p = startCoffer(t, dir, env, "serve")
	waitSynced(t, p, base, 60*time.Second)

	var page api.EventsResponse
	whSend(t, "GET", fmt.Sprintf("%s/v1/events?after=%d&limit=1000", base, after), nil, &page, 200)
	var want []string
	for _, ev := range page.Events {
		if ev.Type == events.BlockConnected {
			want = append(want, webhook.WebhookID(ev.ID))
		}
	}
	if len(want) != 8 {
		t.Fatalf("the log holds %d block.connected events after the endpoint's creation, want 8: %v", len(want), want)
	}
	var got []string
	waitUntil(t, p, 60*time.Second, 50*time.Millisecond, "every event at the receiver", func() (bool, string) {
		_, accepted, bad := rc.state()
		if len(bad) > 0 {
			t.Fatalf("the receiver refused deliveries: %q", bad)
		}
		got = uniq(accepted)
		return len(got) >= len(want), fmt.Sprintf("%d of %d delivered", len(got), len(want))
	})
	delivered := time.Now()
	// Anything late would show up now.
	waitUntil(t, p, 10*time.Second, 50*time.Millisecond, "every delivery to be recorded", func() (bool, string) {
		pending := 0
		for _, d := range deliveries() {
			if d.Status != webhook.StatusSucceeded {
				pending++
			}
		}
		return pending == 0, fmt.Sprintf("%d not succeeded", pending)
	})
	_, accepted, _ = rc.state()
	if got = uniq(accepted); !slices.Equal(got, want) {
		t.Fatalf("the receiver got %v (deduplicated), want %v: every event once, in log order", got, want)
	}
	if dups := len(accepted) - len(got); dups > 0 {
		t.Logf("%s: %d duplicate deliveries (at-least-once), deduplicated on webhook-id", engine, dups)
	}

	// The oldest delivery's log: failed attempts by the killed instance,
	// the success by the new one.
	ds := deliveries()
	oldest := ds[len(ds)-1]
	instances := map[string]bool{}
	for _, a := range oldest.Attempts {
		instances[a.Instance] = true
	}
	last := oldest.Attempts[len(oldest.Attempts)-1]
	if len(ds) != 8 || oldest.WebhookID != want[0] || oldest.Attempts[0].StatusCode != 500 || !last.Succeeded || len(instances) != 2 {
		t.Fatalf("%d deliveries; the oldest: %+v", len(ds), oldest)
	}
	t.Logf("%s: all %d events delivered %s after the kill; the oldest took %d recorded attempts over 2 instances; total %s",
		engine, len(want), delivered.Sub(killed).Round(time.Millisecond), oldest.AttemptCount, time.Since(start).Round(time.Millisecond))
	p.stop(syscall.SIGTERM, 30*time.Second)
}

// uniq keeps the first occurrence of each string, in order.
func uniq(ss []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

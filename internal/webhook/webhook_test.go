package webhook_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coffer/coffer/internal/fault"
	"github.com/coffer/coffer/internal/webhook"
)

// TestSpecTestVector: the signing code and the test's receiver both agree
// with the Standard Webhooks specification's published example.
func TestSpecTestVector(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	const want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	body := []byte(`{"test": 2432232314}`)
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if got := webhook.Sign([][]byte{key}, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body); got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	h := http.Header{}
	h.Set("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set("webhook-timestamp", "1614265330")
	h.Set("webhook-signature", "v1,bm90IGl0 "+want) // an entry that does not match first
	if err := verifyStandardWebhook([]string{secret}, h, body, time.Unix(1614265330, 0)); err != nil {
		t.Fatalf("receiver rejects the spec's example: %v", err)
	}
}

// TestSignaturesVerify: every delivery verifies with a receiver written from
// the spec; a tampered body, another id or a stale timestamp does not; after
// a rotation either secret verifies until the overlap ends.
func TestSignaturesVerify(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		svc := e.service(fastConfig())
		rcv := newReceiver(t)
		ep := mustCreate(t, svc, webhook.EndpointRequest{URL: rcv.url(), Description: "verify"})
		if !strings.HasPrefix(ep.ID, "whk_") || !strings.HasPrefix(ep.Secret, "whsec_") {
			t.Fatalf("id %q, secret %q", ep.ID, ep.Secret)
		}
		if key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(ep.Secret, "whsec_")); err != nil || len(key) < 24 || len(key) > 64 {
			t.Fatalf("secret is not base64 of 24–64 bytes: %v, %d bytes", err, len(key))
		}
		s1 := ep.Secret
		rcv.setSecrets(s1)
		start(t, svc)
		ids := []int64{
			e.appendEvent(t, "block.connected", "", map[string]any{"height": 101}),
			e.appendEvent(t, "tx.seen", "w1", map[string]any{"txid": "ab", "note": "ünïcødé ✓"}),
			e.appendEvent(t, "alert", "", map[string]any{"kind": "test", "message": `quotes " and \ backslash`}),
		}
		if got := rcv.waitFirstSeen(t, 3, 10*time.Second); !slices.Equal(got, ids) {
			t.Fatalf("received %v, want %v", got, ids)
		}
		_, reqs, _ := rcv.snapshot()
		// The body is the event exactly as GET /v1/events shows it.
		listed, err := e.log.List(ctx, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range reqs {
			want, _ := json.Marshal(listed[i])
			if string(r.body) != string(want) {
				t.Errorf("body %s, want %s", r.body, want)
			}
		}

		r := reqs[1]
		now := time.Now()
		if err := verifyStandardWebhook([]string{s1}, r.header, r.body, now); err != nil {
			t.Fatalf("captured delivery does not verify: %v", err)
		}
		tampered := slices.Clone(r.body)
		tampered[len(tampered)-2] ^= 1
		if err := verifyStandardWebhook([]string{s1}, r.header, tampered, now); !errors.Is(err, errNoMatch) {
			t.Errorf("tampered body: %v, want no match", err)
		}
		other := r.header.Clone()
		other.Set("webhook-id", "evt_999999")
		if err := verifyStandardWebhook([]string{s1}, other, r.body, now); !errors.Is(err, errNoMatch) {
			t.Errorf("another webhook-id: %v, want no match", err)
		}
		if err := verifyStandardWebhook([]string{s1}, r.header, r.body, now.Add(6*time.Minute)); !errors.Is(err, errStale) {
			t.Errorf("replayed 6 minutes later: %v, want stale", err)
		}
		old := r.header.Clone()
		old.Set("webhook-timestamp", "1614265330")
		if err := verifyStandardWebhook([]string{s1}, old, r.body, now); !errors.Is(err, errStale) {
			t.Errorf("old timestamp: %v, want stale", err)
		}

		// Rotation: the new secret is shown once; both sign during the overlap.
		rot, err := svc.Update(ctx, ep.ID, webhook.EndpointUpdate{RotateSecret: true})
		if err != nil {
			t.Fatal(err)
		}
		s2 := rot.Secret
		if s2 == "" || s2 == s1 || len(rot.Secrets) != 2 || rot.Secrets[0].ExpiresAt != nil || rot.Secrets[1].ExpiresAt == nil {
			t.Fatalf("after rotation: secret %q, secrets %+v", s2, rot.Secrets)
		}
		if exp := *rot.Secrets[1].ExpiresAt; exp.Before(now.Add(23*time.Hour)) || exp.After(now.Add(25*time.Hour)) {
			t.Errorf("old secret expires at %s, want in about 24 h", exp)
		}
		if got, _ := svc.Get(ctx, ep.ID); got.Secret != "" {
			t.Error("Get shows the secret")
		}
		id4 := e.appendEvent(t, "tx.seen", "", map[string]any{})
		rcv.waitFirstSeen(t, 4, 10*time.Second) // verified with the old secret alone
		_, reqs, _ = rcv.snapshot()
		r = reqs[len(reqs)-1]
		if r.event.ID != id4 || len(strings.Fields(r.header.Get("webhook-signature"))) != 2 {
			t.Fatalf("event %d signed %q, want 2 signatures", r.event.ID, r.header.Get("webhook-signature"))
		}
		for _, s := range []string{s1, s2} {
			if err := verifyStandardWebhook([]string{s}, r.header, r.body, time.Now()); err != nil {
				t.Errorf("during the overlap a secret does not verify: %v", err)
			}
		}
		if err := verifyStandardWebhook([]string{"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 32))}, r.header, r.body, time.Now()); !errors.Is(err, errNoMatch) {
			t.Errorf("an unrelated secret: %v", err)
		}

		// A rotation without overlap: only the newest secret signs.
		noOverlap := fastConfig()
		noOverlap.SecretOverlap = -1
		rot, err = e.service(noOverlap).Update(ctx, ep.ID, webhook.EndpointUpdate{RotateSecret: true})
		if err != nil {
			t.Fatal(err)
		}
		s3 := rot.Secret
		if len(rot.Secrets) != 1 {
			t.Fatalf("secrets after a rotation without overlap: %+v", rot.Secrets)
		}
		rcv.setSecrets(s3)
		e.appendEvent(t, "tx.seen", "", map[string]any{})
		rcv.waitFirstSeen(t, 5, 10*time.Second)
		_, reqs, _ = rcv.snapshot()
		r = reqs[len(reqs)-1]
		if err := verifyStandardWebhook([]string{s2, s1}, r.header, r.body, time.Now()); !errors.Is(err, errNoMatch) {
			t.Errorf("a rotated-out secret still verifies: %v", err)
		}
	})
}

// TestRetriesInOrderExactlyOnce: a receiver that fails its first attempts
// (500s and dropped connections) still gets every event, in log order, and
// acknowledges each webhook-id once.
func TestRetriesInOrderExactlyOnce(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		svc := e.service(fastConfig())
		rcv := newReceiver(t)
		ep := mustCreate(t, svc, webhook.EndpointRequest{URL: rcv.url()})
		rcv.setSecrets(ep.Secret)
		const down = 6
		rcv.setPolicy(func(r *request) int {
			if r.n > down {
				return 0
			}
			if r.n%2 == 0 {
				return -1 // drop the connection
			}
			return 500
		})
		start(t, svc)
		ids := e.appendN(t, 12, "deposit.credited")
		first := rcv.waitFirstSeen(t, len(ids), 20*time.Second)
		if !slices.Equal(first, ids) || !increasing(first) {
			t.Fatalf("first-seen order %v, want %v", first, ids)
		}
		hits, acked := rcv.counts()
		for _, id := range ids {
			if acked[id] != 1 {
				t.Errorf("event %d acknowledged %d times", id, acked[id])
			}
		}
		if hits[ids[0]] != down+1 {
			t.Errorf("first event tried %d times, want %d", hits[ids[0]], down+1)
		}
		// The queue waited: no later event was sent before the first succeeded.
		_, reqs, _ := rcv.snapshot()
		for _, r := range reqs[:down+1] {
			if r.event.ID != ids[0] {
				t.Fatalf("event %d sent while event %d was failing", r.event.ID, ids[0])
			}
		}
		e.waitDrained(t)
		ds, err := svc.Deliveries(ctx, ep.ID, webhook.DeliveryFilter{Status: webhook.StatusSucceeded})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != len(ids) {
			t.Fatalf("%d succeeded deliveries, want %d", len(ds), len(ids))
		}
		d := ds[len(ds)-1] // the oldest
		if d.EventID != ids[0] || d.AttemptCount != down+1 || len(d.Attempts) != down+1 || d.WebhookID != "evt_"+strconv.FormatInt(ids[0], 10) {
			t.Fatalf("first delivery %+v", d)
		}
		for i, a := range d.Attempts {
			switch {
			case a.Attempt != i+1:
				t.Errorf("attempt %d numbered %d", i+1, a.Attempt)
			case i < down && a.Succeeded:
				t.Errorf("attempt %d succeeded", i+1)
			case i < down && i%2 == 0 && a.StatusCode != 500:
				t.Errorf("attempt %d: %+v, want a 500", i+1, a)
			case i < down && i%2 == 1 && (a.StatusCode != 0 || !strings.HasPrefix(a.Error, "connection")):
				t.Errorf("attempt %d: %+v, want a connection error", i+1, a)
			case i == down && (!a.Succeeded || a.StatusCode != 200 || a.Response == ""):
				t.Errorf("last attempt %+v", a)
			}
		}
		if d.LastStatusCode != 200 || d.LastLatencyMS == nil || d.NextAttemptAt != nil || d.LastError != "" {
			t.Errorf("delivery summary %+v", d)
		}
		if got, _ := svc.Get(ctx, ep.ID); got.FailingSince != nil {
			t.Errorf("failing_since %v after a success", got.FailingSince)
		}
	})
}

// TestRestartResumes: deliveries pending when the dispatcher stops are sent by
// a new one over the same database, none lost and none twice; a lease left by
// an instance that died is honoured until it ends and then taken over.
func TestRestartResumes(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		cfg := fastConfig()
		cfg.Instance = "first"
		svc := e.service(cfg)
		rcv := newReceiver(t)
		ep := mustCreate(t, svc, webhook.EndpointRequest{URL: rcv.url()})
		rcv.setSecrets(ep.Secret)
		var up atomic.Bool
		rcv.setPolicy(func(*request) int {
			if up.Load() {
				return 0
			}
			return 503
		})
		stop := start(t, svc)
		ids := e.appendN(t, 10, "withdrawal.queued")
		waitUntil(t, 10*time.Second, "retries", func() bool { _, reqs, _ := rcv.snapshot(); return len(reqs) >= 3 })
		stop()
		if n := e.count(t, `SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'pending'`, ep.ID); n != len(ids) {
			t.Fatalf("%d pending deliveries after stopping, want %d", n, len(ids))
		}
		if n := e.count(t, `SELECT COUNT(*) FROM webhook_deliveries WHERE locked_by IS NOT NULL`); n != 0 {
			t.Fatalf("%d leases left by a clean stop", n)
		}
		// A process that died mid-attempt leaves its lease on the head.
		leaseEnd := time.Now().Add(400 * time.Millisecond)
		if n := e.exec(t, `UPDATE webhook_deliveries SET locked_by = 'dead', locked_until_ms = $1, next_attempt_ms = 0
			WHERE id = (SELECT MIN(id) FROM webhook_deliveries WHERE endpoint_id = $2 AND status = 'pending')`,
			leaseEnd.UnixMilli(), ep.ID); n != 1 {
			t.Fatalf("lease planted on %d rows", n)
		}
		_, before, _ := rcv.snapshot()
		up.Store(true)

		// A new process: new handle, new log, new service.
		e2 := e.reopen(t)
		cfg.Instance = "second"
		svc2 := e2.service(cfg)
		start(t, svc2)
		more := e2.appendN(t, 2, "withdrawal.signed")
		all := append(slices.Clone(ids), more...)
		first := rcv.waitFirstSeen(t, len(all), 20*time.Second)
		if !slices.Equal(first, all) {
			t.Fatalf("first-seen %v, want %v", first, all)
		}
		_, acked := rcv.counts()
		for _, id := range all {
			if acked[id] != 1 {
				t.Errorf("event %d acknowledged %d times", id, acked[id])
			}
		}
		_, reqs, _ := rcv.snapshot()
		if r := reqs[len(before)]; r.at.Before(leaseEnd) {
			t.Errorf("the new instance sent at %s, inside the dead instance's lease (until %s)", r.at, leaseEnd)
		}
		var inst string
		if err := e.db.QueryRowContext(ctx, `SELECT instance FROM webhook_attempts WHERE succeeded ORDER BY id LIMIT 1`).Scan(&inst); err != nil || inst != "second" {
			t.Errorf("first success by %q (%v), want the second instance", inst, err)
		}
	})
}

// TestHangingEndpointDoesNotDelayOthers: while one endpoint's receiver hangs,
// another endpoint receives all its events.
func TestHangingEndpointDoesNotDelayOthers(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		cfg := fastConfig()
		cfg.Timeout = 20 * time.Second
		cfg.MaxConcurrency = 2
		svc := e.service(cfg)

		var started, finished atomic.Int32
		release := make(chan struct{})
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			started.Add(1)
			select {
			case <-release:
			case <-r.Context().Done():
			}
			finished.Add(1)
		}))
		t.Cleanup(slow.Close)
		t.Cleanup(func() { close(release) }) // runs first: let the handler end before Close waits for it
		mustCreate(t, svc, webhook.EndpointRequest{URL: slow.URL, Description: "hangs"})
		fast := newReceiver(t)
		ep := mustCreate(t, svc, webhook.EndpointRequest{URL: fast.url()})
		fast.setSecrets(ep.Secret)
		start(t, svc)
		ids := e.appendN(t, 5, "tx.seen")
		waitUntil(t, 10*time.Second, "the slow endpoint to hang", func() bool { return started.Load() == 1 })
		// More events while it hangs: they must not wait for it.
		ids = append(ids, e.appendN(t, 20, "tx.seen")...)
		got := fast.waitFirstSeen(t, len(ids), 15*time.Second)
		if !slices.Equal(got, ids) {
			t.Fatalf("fast endpoint got %v, want %v", got, ids)
		}
		if s, f := started.Load(), finished.Load(); s != 1 || f != 0 {
			t.Fatalf("slow endpoint: %d requests started, %d finished; want 1 still hanging", s, f)
		}
	})
}

// TestTwoInstancesEachAttemptOnce: two services with their own database
// handles and instance ids share the database; every attempt is made once
// (each receiver fails the first attempt of every event and sees exactly two).
func TestTwoInstancesEachAttemptOnce(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e2 := e.reopen(t)
		cfgA, cfgB := fastConfig(), fastConfig()
		cfgA.Instance, cfgB.Instance = "instance-a", "instance-b"
		a, b := e.service(cfgA), e2.service(cfgB)
		var rcvs []*receiver
		for i := range 3 {
			r := newReceiver(t)
			ep := mustCreate(t, []*webhook.Service{a, b}[i%2], webhook.EndpointRequest{URL: r.url()})
			r.setSecrets(ep.Secret)
			seen := map[string]bool{}
			r.setPolicy(func(req *request) int { // called under the receiver's lock
				id := req.header.Get("webhook-id")
				if !seen[id] {
					seen[id] = true
					return 500
				}
				return 0
			})
			rcvs = append(rcvs, r)
		}
		start(t, a)
		start(t, b)
		const n = 30
		var ids []int64
		for i := range n {
			// Write through both handles, so both logs wake.
			ids = append(ids, []*env{e, e2}[i%2].appendEvent(t, "tx.confirmed", "", map[string]int{"i": i}))
		}
		for _, r := range rcvs {
			if got := r.waitFirstSeen(t, n, 30*time.Second); !slices.Equal(got, ids) {
				t.Fatalf("first-seen %v, want %v", got, ids)
			}
			hits, _ := r.counts()
			for _, id := range ids {
				if hits[id] != 2 {
					t.Errorf("event %d: %d attempts reached the receiver, want 2", id, hits[id])
				}
			}
		}
		e.waitDrained(t)
		if got := e.count(t, `SELECT COUNT(*) FROM webhook_deliveries`); got != 3*n {
			t.Errorf("%d deliveries, want %d", got, 3*n)
		}
		if got := e.count(t, `SELECT COUNT(*) FROM webhook_attempts`); got != 3*n*2 {
			t.Errorf("%d attempts logged, want %d", got, 3*n*2)
		}
		rows, err := e.db.QueryContext(ctx, `SELECT instance, COUNT(*) FROM webhook_attempts GROUP BY instance ORDER BY instance`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var inst string
			var c int
			rows.Scan(&inst, &c)
			t.Logf("%s made %d attempts", inst, c)
		}
	})
}

// TestAutoDisable: an endpoint failing for DisableAfter is disabled with a
// reason and an alert event; nothing is sent or queued while it is disabled;
// re-enabling it resumes its queue.
func TestAutoDisable(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		cfg := fastConfig()
		cfg.DisableAfter = time.Second
		cfg.Schedule = slices.Repeat([]time.Duration{100 * time.Millisecond}, 100)
		cfg.Schedule[0] = 0
		svc := e.service(cfg)
		rcv := newReceiver(t)
		ep := mustCreate(t, svc, webhook.EndpointRequest{URL: rcv.url() + "?token=x"})
		rcv.setSecrets(ep.Secret)
		var up atomic.Bool
		rcv.setPolicy(func(*request) int {
			if up.Load() {
				return 0
			}
			return 500
		})
		watcher := newReceiver(t)
		w := mustCreate(t, svc, webhook.EndpointRequest{URL: watcher.url(), EventTypes: []string{"alert*"}})
		watcher.setSecrets(w.Secret)
		start(t, svc)
		e1 := e.appendEvent(t, "deposit.credited", "", map[string]any{})
		waitUntil(t, 15*time.Second, "the endpoint to be disabled", func() bool {
			got, err := svc.Get(ctx, ep.ID)
			return err == nil && !got.Enabled
		})
		got, _ := svc.Get(ctx, ep.ID)
		if !strings.Contains(got.DisabledReason, "failed") || got.FailingSince == nil {
			t.Errorf("disabled endpoint: %+v", got)
		}
		// The alert is in the log, and delivered to the endpoint watching alerts.
		alerts := watcher.waitFirstSeen(t, 1, 10*time.Second)
		evs, err := e.log.List(ctx, alerts[0]-1, 1)
		if err != nil || len(evs) != 1 || evs[0].Type != "alert" {
			t.Fatalf("alert event: %+v %v", evs, err)
		}
		var data map[string]any
		json.Unmarshal(evs[0].Data, &data)
		if data["kind"] != "webhook_disabled" || data["endpoint_id"] != ep.ID || !strings.Contains(data["message"].(string), ep.ID) {
			t.Errorf("alert data %v", data)
		}
		if svc.Stats().Disabled != 1 {
			t.Errorf("stats %+v", svc.Stats())
		}
		// Disabled: no attempts, and events are not queued for it.
		_, before, _ := rcv.snapshot()
		e2 := e.appendEvent(t, "deposit.credited", "", map[string]any{})
		waitUntil(t, 10*time.Second, "the fan-out of the event", func() bool {
			return e.count(t, `SELECT COUNT(*) FROM webhook_cursor WHERE last_event_id >= $1`, e2) == 1
		})
		time.Sleep(300 * time.Millisecond)
		if _, after, _ := rcv.snapshot(); len(after) != len(before) {
			t.Errorf("%d attempts while disabled", len(after)-len(before))
		}
		if n := e.count(t, `SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1`, ep.ID); n != 1 {
			t.Errorf("%d deliveries queued for the disabled endpoint, want the 1 from before", n)
		}
		// Re-enabled: the queue resumes with the event it was stuck on.
		up.Store(true)
		enabled := true
		got, err = svc.Update(ctx, ep.ID, webhook.EndpointUpdate{Enabled: &enabled})
		if err != nil || !got.Enabled || got.DisabledReason != "" || got.FailingSince != nil {
			t.Fatalf("re-enabled: %+v %v", got, err)
		}
		e3 := e.appendEvent(t, "deposit.credited", "", map[string]any{})
		if first := rcv.waitFirstSeen(t, 2, 10*time.Second); !slices.Equal(first, []int64{e1, e3}) {
			t.Fatalf("after re-enabling got %v, want %v", first, []int64{e1, e3})
		}
	})
}

// TestRedeliver: a failed delivery lets the queue move on and can be
// redelivered; a succeeded one too; a pending one is made due at once.
// Deliveries pages newest first.
func TestRedeliver(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		cfg := fastConfig()
		cfg.Schedule = []time.Duration{0, 10 * time.Millisecond, 10 * time.Millisecond}
		svc := e.service(cfg)
		rcv := newReceiver(t)
		ep := mustCreate(t, svc, webhook.EndpointRequest{URL: rcv.url()})
		rcv.setSecrets(ep.Secret)
		// Events of type transfer.failing fail while failing is set.
		var failing, failAll atomic.Bool
		failing.Store(true)
		rcv.setPolicy(func(r *request) int {
			if failAll.Load() || failing.Load() && r.event.Type == "transfer.failing" {
				return 500
			}
			return 0
		})
		stop := start(t, svc)
		e1 := e.appendEvent(t, "transfer.created", "", map[string]any{})
		e2 := e.appendEvent(t, "transfer.failing", "", map[string]any{})
		e3 := e.appendEvent(t, "transfer.created", "", map[string]any{})
		if first := rcv.waitFirstSeen(t, 2, 10*time.Second); !slices.Equal(first, []int64{e1, e3}) {
			t.Fatalf("got %v, want e1, e3", first)
		}
		failed, err := svc.Deliveries(ctx, ep.ID, webhook.DeliveryFilter{Status: webhook.StatusFailed})
		if err != nil || len(failed) != 1 {
			t.Fatalf("failed deliveries %v %v", failed, err)
		}
		d2 := failed[0]
		if d2.EventID != e2 || d2.AttemptCount != 3 || len(d2.Attempts) != 3 || d2.LastStatusCode != 500 || d2.NextAttemptAt != nil {
			t.Fatalf("failed delivery %+v", d2)
		}
		if svc.Stats().Failed != 1 {
			t.Errorf("stats %+v", svc.Stats())
		}

		failing.Store(false)
		re, err := svc.Redeliver(ctx, ep.ID, d2.ID)
		if err != nil {
			t.Fatal(err)
		}
		if re.ID == d2.ID || !re.Redelivery || re.EventID != e2 || re.WebhookID != d2.WebhookID {
			t.Fatalf("redelivery %+v of %+v", re, d2)
		}
		if first := rcv.waitFirstSeen(t, 3, 10*time.Second); first[2] != e2 {
			t.Fatalf("got %v, want e2 last", first)
		}
		// Redeliver a succeeded one: the receiver sees the same webhook-id again.
		all, _ := svc.Deliveries(ctx, ep.ID, webhook.DeliveryFilter{})
		d1 := all[len(all)-1]
		if d1.EventID != e1 || d1.Status != webhook.StatusSucceeded {
			t.Fatalf("oldest delivery %+v", d1)
		}
		if _, err := svc.Redeliver(ctx, ep.ID, d1.ID); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 10*time.Second, "the redelivery of e1", func() bool { _, acked := rcv.counts(); return acked[e1] == 2 })
		hits, _ := rcv.counts()
		if hits[e2] != 4 {
			t.Errorf("e2 reached the receiver %d times, want 3 failed + 1", hits[e2])
		}

		// Paging, newest first.
		e.waitDrained(t)
		all, _ = svc.Deliveries(ctx, ep.ID, webhook.DeliveryFilter{})
		if len(all) != 5 {
			t.Fatalf("%d deliveries, want 5", len(all))
		}
		page1, _ := svc.Deliveries(ctx, ep.ID, webhook.DeliveryFilter{Limit: 2})
		page2, _ := svc.Deliveries(ctx, ep.ID, webhook.DeliveryFilter{Before: page1[1].ID, Limit: 10})
		var ids []int64
		for _, d := range append(page1, page2...) {
			ids = append(ids, d.ID)
		}
		if len(ids) != 5 || !slices.IsSortedFunc(ids, func(a, b int64) int { return int(b - a) }) || !all[0].Redelivery {
			t.Errorf("paged ids %v; newest %+v", ids, all[0])
		}

		// Errors.
		if _, err := svc.Redeliver(ctx, ep.ID, 999999); !errors.Is(err, webhook.ErrNotFound) {
			t.Errorf("unknown delivery: %v", err)
		}
		other := mustCreate(t, svc, webhook.EndpointRequest{URL: rcv.url()})
		if _, err := svc.Redeliver(ctx, other.ID, d1.ID); !errors.Is(err, webhook.ErrNotFound) {
			t.Errorf("another endpoint's delivery: %v", err)
		}
		if err := svc.Delete(ctx, other.ID); err != nil {
			t.Fatal(err)
		}
		stop()

		// A pending delivery waiting for a late retry is made due at once.
		cfg.Schedule = []time.Duration{0, time.Hour}
		svc = e.service(cfg)
		start(t, svc)
		failAll.Store(true)
		e4 := e.appendEvent(t, "transfer.created", "", map[string]any{})
		var d4 *webhook.Delivery
		waitUntil(t, 10*time.Second, "a first failed attempt", func() bool {
			ds, _ := svc.Deliveries(ctx, ep.ID, webhook.DeliveryFilter{Status: webhook.StatusPending})
			if len(ds) == 1 && ds[0].AttemptCount == 1 {
				d4 = ds[0]
			}
			return d4 != nil
		})
		if d4.EventID != e4 || d4.NextAttemptAt == nil || time.Until(*d4.NextAttemptAt) < 50*time.Minute {
			t.Fatalf("pending delivery %+v", d4)
		}
		failAll.Store(false)
		re, err = svc.Redeliver(ctx, ep.ID, d4.ID)
		if err != nil || re.ID != d4.ID {
			t.Fatalf("redeliver of a pending delivery returned %+v, %v; want the same delivery", re, err)
		}
		waitUntil(t, 10*time.Second, "e4 delivered", func() bool {
			d, err := svc.GetDelivery(ctx, ep.ID, d4.ID)
			return err == nil && d.Status != webhook.StatusPending
		})
		d4, _ = svc.GetDelivery(ctx, ep.ID, d4.ID)
		if _, acked := rcv.counts(); d4.Status != webhook.StatusSucceeded || d4.AttemptCount != 2 || acked[e4] != 1 {
			t.Errorf("after redeliver: %+v", d4)
		}

		// Prune: finished deliveries older than the cut-off go, with their attempts.
		if n, err := svc.Prune(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
			t.Errorf("Prune of nothing old: %d, %v", n, err)
		}
		finished := e.count(t, `SELECT COUNT(*) FROM webhook_deliveries WHERE status <> 'pending'`)
		if n, err := svc.Prune(ctx, time.Now().Add(time.Hour)); err != nil || n != int64(finished) || finished != 6 {
			t.Errorf("Prune deleted %d of %d finished deliveries: %v", n, finished, err)
		}
		if n := e.count(t, `SELECT COUNT(*) FROM webhook_attempts`); n != 0 {
			t.Errorf("%d attempts left after pruning", n)
		}
	})
}

// TestFilters: type patterns and the wallet filter select events; an
// endpoint gets no event from before its creation; a filter change applies
// to later events.
func TestFilters(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.addWallet(t, "w1")
		e.addWallet(t, "w2")
		svc := e.service(fastConfig())
		pre := e.appendEvent(t, "deposit.credited", "w1", map[string]any{})
		type sub struct {
			req  webhook.EndpointRequest
			rcv  *receiver
			ep   *webhook.Endpoint
			want []int
		}
		subs := []*sub{
			{req: webhook.EndpointRequest{}, want: []int{0, 1, 2, 3, 4, 5, 6, 7}},
			{req: webhook.EndpointRequest{EventTypes: []string{"deposit.*"}}, want: []int{0, 1}},
			{req: webhook.EndpointRequest{WalletID: "w1"}, want: []int{0, 7}},
			{req: webhook.EndpointRequest{EventTypes: []string{"tx.seen", "alert*", "tx.seen"}, WalletID: "w2"}, want: []int{3, 4}},
			{req: webhook.EndpointRequest{EventTypes: []string{"block.connected", "*"}}, want: []int{0, 1, 2, 3, 4, 5, 6, 7}},
		}
		for _, s := range subs {
			s.rcv = newReceiver(t)
			s.req.URL = s.rcv.url()
			s.ep = mustCreate(t, svc, s.req)
			s.rcv.setSecrets(s.ep.Secret)
		}
		if got := subs[3].ep.EventTypes; !slices.Equal(got, []string{"tx.seen", "alert*"}) {
			t.Errorf("event_types stored as %q", got)
		}
		if got := subs[4].ep.EventTypes; got == nil || len(got) != 0 {
			t.Errorf(`"*" stored as %q, want [] (every type)`, got)
		}
		e.exec(t, `DELETE FROM webhook_cursor`) // a lost cursor is made again without missing events
		start(t, svc)
		evs := []struct{ typ, wallet string }{
			{"deposit.pending", "w1"},
			{"deposit.credited", "w2"},
			{"tx.seen", ""},
			{"tx.seen", "w2"},
			{"alert", "w2"},
			{"alert.follower_halted", ""},
			{"block.connected", ""},
			{"depositx.other", "w1"},
		}
		var ids []int64
		for _, ev := range evs {
			ids = append(ids, e.appendEvent(t, ev.typ, ev.wallet, map[string]any{}))
		}
		for _, s := range subs {
			s.rcv.waitFirstSeen(t, len(s.want), 10*time.Second)
		}
		waitUntil(t, 10*time.Second, "the queue to drain", func() bool {
			return e.count(t, `SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'`) == 0 &&
				e.count(t, `SELECT COUNT(*) FROM webhook_cursor WHERE last_event_id >= $1`, ids[len(ids)-1]) == 1
		})
		for i, s := range subs {
			var want []int64
			for _, j := range s.want {
				want = append(want, ids[j])
			}
			first, _, _ := s.rcv.snapshot()
			if !slices.Equal(first, want) {
				t.Errorf("endpoint %d (%+v) got %v, want %v", i, s.req, first, want)
			}
			if slices.Contains(first, pre) {
				t.Errorf("endpoint %d got an event from before its creation", i)
			}
		}
		// Change a filter: later events follow the new one.
		types, wallet := []string{"block.*"}, ""
		if _, err := svc.Update(ctx, subs[2].ep.ID, webhook.EndpointUpdate{EventTypes: &types, WalletID: &wallet}); err != nil {
			t.Fatal(err)
		}
		b := e.appendEvent(t, "block.connected", "", map[string]any{})
		if got := subs[2].rcv.waitFirstSeen(t, 3, 10*time.Second); got[2] != b {
			t.Errorf("after the filter change got %v", got)
		}
	})
}

// TestFailureKinds: a redirect is not followed and fails; a long answer is
// kept to 1 KiB of valid text; no answer within the timeout fails.
func TestFailureKinds(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		cfg := fastConfig()
		cfg.Schedule = []time.Duration{0}
		cfg.Timeout = 300 * time.Millisecond
		svc := e.service(cfg)
		var targetHits atomic.Int32
		target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { targetHits.Add(1) }))
		t.Cleanup(target.Close)
		redirect := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusFound))
		t.Cleanup(redirect.Close)
		long := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			w.Write([]byte("\xff\x00"))
			w.Write([]byte(strings.Repeat("é", 4000)))
		}))
		t.Cleanup(long.Close)
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body) // so the server notices the client hanging up
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}))
		t.Cleanup(slow.Close)
		eps := []*webhook.Endpoint{
			mustCreate(t, svc, webhook.EndpointRequest{URL: redirect.URL}),
			mustCreate(t, svc, webhook.EndpointRequest{URL: long.URL}),
			mustCreate(t, svc, webhook.EndpointRequest{URL: slow.URL}),
		}
		start(t, svc)
		e.appendEvent(t, "tx.seen", "", map[string]any{})
		waitUntil(t, 10*time.Second, "three failed deliveries", func() bool {
			return e.count(t, `SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'failed'`) == 3
		})
		attempt := func(ep *webhook.Endpoint) webhook.Attempt {
			ds, err := svc.Deliveries(ctx, ep.ID, webhook.DeliveryFilter{})
			if err != nil || len(ds) != 1 || len(ds[0].Attempts) != 1 {
				t.Fatalf("deliveries %+v %v", ds, err)
			}
			return ds[0].Attempts[0]
		}
		if a := attempt(eps[0]); a.Succeeded || a.StatusCode != 302 || !strings.Contains(a.Error, "redirect") || targetHits.Load() != 0 {
			t.Errorf("redirect: %+v, target hit %d times", a, targetHits.Load())
		}
		if a := attempt(eps[1]); a.StatusCode != 500 || len(a.Response) > webhook.MaxResponseSnippet || len(a.Response) < 1000 ||
			!utf8.ValidString(a.Response) || strings.ContainsRune(a.Response, 0) {
			t.Errorf("long answer kept as %d bytes: %q", len(a.Response), a.Response[:min(20, len(a.Response))])
		}
		if a := attempt(eps[2]); a.StatusCode != 0 || !strings.HasPrefix(a.Error, "timeout") {
			t.Errorf("timeout: %+v", a)
		}
	})
}

// TestEndpointManagement: validation, Get/List/Update/Delete, not found.
func TestEndpointManagement(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		svc := e.service(webhook.Config{})
		e.addWallet(t, "w1")
		isInvalid := func(err error) bool {
			f, ok := fault.As(err)
			return ok && f.Code == "invalid_parameter" && f.Status == 400
		}
		bad := []webhook.EndpointRequest{
			{URL: ""},
			{URL: "ftp://example.com/x"},
			{URL: "http://"},
			{URL: "example.com/hook"},
			{URL: "http://example.com/a b"},
			{URL: "https://example.com/#frag"},
			{URL: "https://example.com/", EventTypes: []string{"Deposit.*"}},
			{URL: "https://example.com/", EventTypes: []string{"a*b"}},
			{URL: "https://example.com/", EventTypes: []string{""}},
			{URL: "https://example.com/", WalletID: "nope"},
			{URL: "https://example.com/", Description: strings.Repeat("x", 501)},
		}
		for _, r := range bad {
			if _, err := svc.Create(ctx, r); !isInvalid(err) {
				t.Errorf("Create(%+v) = %v, want invalid_parameter", r, err)
			}
		}
		off := false
		ep, err := svc.Create(ctx, webhook.EndpointRequest{URL: "https://user:pw@example.com/hook?x=1", EventTypes: []string{"deposit.*"},
			WalletID: "w1", Description: "ops", Enabled: &off})
		if err != nil {
			t.Fatal(err)
		}
		if ep.Enabled || ep.WalletID != "w1" || len(ep.Secrets) != 1 || ep.Secrets[0].ExpiresAt != nil || ep.CreatedAt.IsZero() {
			t.Errorf("created %+v", ep)
		}
		got, err := svc.Get(ctx, ep.ID)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(got)
		var m map[string]any
		json.Unmarshal(b, &m)
		for _, k := range []string{"id", "url", "event_types", "wallet_id", "description", "enabled", "secrets", "created_at", "updated_at"} {
			if _, ok := m[k]; !ok {
				t.Errorf("JSON lacks %s: %s", k, b)
			}
		}
		if _, ok := m["secret"]; ok {
			t.Errorf("Get shows the secret: %s", b)
		}
		desc := "changed"
		up, err := svc.Update(ctx, ep.ID, webhook.EndpointUpdate{Description: &desc})
		if err != nil || up.Description != desc || up.URL != ep.URL || !slices.Equal(up.EventTypes, ep.EventTypes) || up.WalletID != "w1" || up.Secret != "" {
			t.Errorf("partial update: %+v %v", up, err)
		}
		badURL, unknown := "gopher://x", "w9"
		if _, err := svc.Update(ctx, ep.ID, webhook.EndpointUpdate{URL: &badURL}); !isInvalid(err) {
			t.Errorf("bad url update: %v", err)
		}
		if _, err := svc.Update(ctx, ep.ID, webhook.EndpointUpdate{WalletID: &unknown}); !isInvalid(err) {
			t.Errorf("unknown wallet update: %v", err)
		}
		if _, err := svc.Update(ctx, "whk_nope", webhook.EndpointUpdate{Description: &desc}); !errors.Is(err, webhook.ErrNotFound) {
			t.Errorf("update unknown: %v", err)
		}
		second := mustCreate(t, svc, webhook.EndpointRequest{URL: "http://127.0.0.1:1/"})
		list, err := svc.List(ctx)
		if err != nil || len(list) != 2 || list[0].ID == list[1].ID || len(list[0].Secrets) != 1 || len(list[1].Secrets) != 1 ||
			!slices.Contains([]string{ep.ID, second.ID}, list[0].ID) || !slices.Contains([]string{ep.ID, second.ID}, list[1].ID) {
			t.Fatalf("list %+v %v", list, err)
		}
		if _, err := svc.Deliveries(ctx, ep.ID, webhook.DeliveryFilter{Limit: 1001}); !isInvalid(err) {
			t.Errorf("limit 1001: %v", err)
		}
		if _, err := svc.Deliveries(ctx, ep.ID, webhook.DeliveryFilter{Status: "done"}); !isInvalid(err) {
			t.Errorf("bad status: %v", err)
		}
		if err := svc.Delete(ctx, ep.ID); err != nil {
			t.Fatal(err)
		}
		for _, err := range []error{
			func() error { _, err := svc.Get(ctx, ep.ID); return err }(),
			svc.Delete(ctx, ep.ID),
			func() error { _, err := svc.Deliveries(ctx, ep.ID, webhook.DeliveryFilter{}); return err }(),
			func() error { _, err := svc.GetDelivery(ctx, ep.ID, 1); return err }(),
		} {
			if f, ok := fault.As(err); !ok || f.Code != "not_found" || f.Status != 404 {
				t.Errorf("after delete: %v, want not_found", err)
			}
		}
		if n := e.count(t, `SELECT COUNT(*) FROM webhook_secrets WHERE endpoint_id = $1`, ep.ID); n != 0 {
			t.Errorf("%d secrets left", n)
		}
	})
}

package wshub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/wshub"
)

func TestPingJoinLeaveAndErrors(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, wshub.Config{})

		key := e.dial("key")
		key.send(map[string]any{"action": "ping"})
		key.expect("pong")
		key.send(map[string]any{"action": "join", "id": "wallet-b"})
		if m := key.expect("joined"); m.ID != "wallet-b" {
			t.Fatalf("joined %q", m.ID)
		}

		a := e.dial("wallet:wallet-a")
		a.send(map[string]any{"action": "join", "id": "wallet-a"})
		if m := a.expect("joined"); m.ID != "wallet-a" {
			t.Fatalf("joined %q", m.ID)
		}
		a.send(map[string]any{"action": "join", "id": "wallet-b"})
		if m := a.expect("error"); m.Code != "forbidden" || !strings.Contains(m.Message, "wallet-b") {
			t.Fatalf("join of another wallet: %s", m.raw)
		}
		// The refused join changed nothing: B's events do not reach A.
		e.appendEvent(events.TxSeen, "wallet-b", txData("bb01", "mempool", 5))
		if m := key.expect("new-tx"); m.WalletID != "wallet-b" {
			t.Fatalf("key client: %s", m.raw)
		}
		a.quiet(300 * time.Millisecond)

		a.send(map[string]any{"action": "leave", "id": "wallet-a"})
		if m := a.expect("left"); m.ID != "wallet-a" {
			t.Fatalf("left %q", m.ID)
		}
		e.appendEvent(events.TxSeen, "wallet-a", txData("aa01", "mempool", 5))
		a.quiet(300 * time.Millisecond)

		// Bad messages get invalid_message and the connection stays open.
		for _, bad := range []string{`{"action":`, `[1,2]`, `"ping"`, `{"action":"dance"}`, `{}`,
			`{"action":"join"}`, `{"action":"subscribe","types":["a*b"]}`, `{"action":"subscribe","after":-1}`} {
			a.sendRaw(bad)
			if m := a.expect("error"); m.Code != "invalid_message" {
				t.Fatalf("%s: %s", bad, m.raw)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.ws.Write(ctx, websocket.MessageBinary, []byte{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		if m := a.expect("error"); m.Code != "invalid_message" {
			t.Fatalf("binary: %s", m.raw)
		}
		a.send(map[string]any{"action": "ping"})
		a.expect("pong")
		if n := e.hub.Clients(); n != 2 {
			t.Fatalf("Clients() = %d, want 2", n)
		}
	})
}

func TestMessageSizeLimit(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, wshub.Config{MaxMessageSize: 1024})
		c := e.dial("key")
		c.sendRaw(`{"action":"ping","pad":"` + strings.Repeat("x", 2000) + `"}`)
		if code := websocket.CloseStatus(c.closeErr()); code != websocket.StatusMessageTooBig {
			t.Fatalf("close status %d, want 1009", code)
		}
	})
}

func TestUnauthenticated(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, wshub.Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, resp, err := websocket.Dial(ctx, e.url, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("dial without principal: %v %v", resp, err)
		}
	})
}

// A wallet token's connection: new-tx when a transaction first touches the
// wallet, update-tx on later changes, balance and block pushes, and nothing
// of other wallets.
func TestWalletPushes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, wshub.Config{})
		a := e.dial("wallet:wallet-a")
		a.send(map[string]any{"action": "join", "id": "wallet-a"})
		a.expect("joined")

		seen := e.appendEvent(events.TxSeen, "wallet-a", txData("aa01", "mempool", 5000))
		e.appendEvent(events.TxSeen, "wallet-b", txData("bb01", "mempool", 7000))
		e.appendEvent(events.TxSeen, "", map[string]any{"txid": "aa01", "status": "mempool"}) // the follower's global event
		m := a.expect("new-tx")
		var d struct {
			Txid     string `json:"txid"`
			Status   string `json:"status"`
			Received int64  `json:"received"`
		}
		if err := json.Unmarshal(m.Data, &d); err != nil {
			t.Fatal(err)
		}
		if m.EventID != seen || m.WalletID != "wallet-a" || m.EventType != "tx.seen" || d.Txid != "aa01" || d.Status != "mempool" || d.Received != 5000 {
			t.Fatalf("new-tx: %s", m.raw)
		}
		conf := e.appendEvent(events.TxConfirmed, "wallet-a", txData("aa01", "confirmed", 5000))
		if m := a.expect("update-tx"); m.EventID != conf || !strings.Contains(string(m.Data), `"status":"confirmed"`) {
			t.Fatalf("update-tx: %s", m.raw)
		}
		bal := e.appendEvent("balance.changed", "wallet-a", map[string]any{"confirmed": 5000, "unconfirmed": 0})
		if m := a.expect("balance"); m.EventID != bal || m.WalletID != "wallet-a" {
			t.Fatalf("balance: %s", m.raw)
		}
		e.appendEvent("balance.changed", "wallet-b", map[string]any{"confirmed": 7000})
		blk := e.appendEvent(events.BlockConnected, "", map[string]any{"height": 101, "hash": "00ab"})
		if m := a.expect("block"); m.EventID != blk || !strings.Contains(string(m.Data), `"height":101`) {
			t.Fatalf("block: %s", m.raw)
		}
		// A transaction first seen in a block: its tx.confirmed is new-tx.
		first := e.appendEvent(events.TxConfirmed, "wallet-a", txData("aa02", "confirmed", 1))
		if m := a.expect("new-tx"); m.EventID != first || m.EventType != "tx.confirmed" {
			t.Fatalf("tx first seen in a block: %s", m.raw)
		}
		// Its repeats, one per block with more confirmations, are updates.
		for n := 2; n <= 3; n++ {
			data := txData("aa02", "confirmed", 1)
			data["confirmations"] = n
			again := e.appendEvent(events.TxConfirmed, "wallet-a", data)
			if m := a.expect("update-tx"); m.EventID != again || !strings.Contains(string(m.Data), fmt.Sprintf(`"confirmations":%d`, n)) {
				t.Fatalf("repeated tx.confirmed: %s", m.raw)
			}
		}
		// A dropped transaction that comes back to the mempool is an update.
		e.appendEvent(events.TxSeen, "wallet-a", txData("aa03", "mempool", 2))
		a.expect("new-tx")
		e.appendEvent(events.TxDropped, "wallet-a", txData("aa03", "dropped", 2))
		a.expect("update-tx")
		back := e.appendEvent(events.TxSeen, "wallet-a", txData("aa03", "mempool", 2))
		if m := a.expect("update-tx"); m.EventID != back {
			t.Fatalf("re-entry: %s", m.raw)
		}
		// Another wallet's transaction with the same txid is new for it.
		e.appendEvent(events.TxSeen, "wallet-b", txData("aa01", "mempool", 1))
		a.quiet(300 * time.Millisecond)

		// Subscribing: the wallet token sees its wallet's events and global
		// chain events only.
		a.send(map[string]any{"action": "subscribe"})
		a.expect("subscribed")
		e.appendEvent("deposit.pending", "wallet-b", map[string]any{"n": 1})
		e.appendEvent("alert", "", map[string]any{"n": 2})
		e.appendEvent(events.TxSeen, "", map[string]any{"txid": "cc"})
		dep := e.appendEvent("deposit.pending", "wallet-a", map[string]any{"n": 3})
		dis := e.appendEvent(events.BlockDisconnected, "", map[string]any{"height": 101})
		if m := a.expect("event"); m.Event == nil || m.Event.ID != dep || m.Event.Type != "deposit.pending" || m.Event.WalletID != "wallet-a" {
			t.Fatalf("event: %s", m.raw)
		}
		if m := a.expect("event"); m.Event.ID != dis {
			t.Fatalf("event: %s", m.raw)
		}
		a.quiet(300 * time.Millisecond)
	})
}

// The classification of a wallet's transactions does not depend on when the
// client connected: a replay from the start gives the same answers.
func TestReplayClassifiesTheSame(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, wshub.Config{})
		e.appendEvent(events.TxSeen, "w", txData("t1", "mempool", 1))
		e.appendEvent(events.TxConfirmed, "w", txData("t2", "confirmed", 1))
		e.appendEvent(events.TxConfirmed, "w", txData("t1", "confirmed", 1))
		e.appendEvent(events.TxReorged, "w", txData("t2", "mempool", 1))
		e.appendEvent(events.TxSeen, "other", txData("t3", "mempool", 1))
		last := e.appendEvent(events.TxConfirmed, "w", txData("t3", "confirmed", 1))
		// Connect once the shared reader has passed them, so that they come
		// from the replay only.
		waitFor(t, "the shared reader", 5*time.Second, func() bool { return e.hub.Stats().Position == last })
		want := []string{"new-tx", "new-tx", "update-tx", "update-tx", "new-tx"}
		for round := range 2 { // the second time the memo answers
			c := e.dial("key")
			c.send(map[string]any{"action": "join", "id": "w"})
			c.expect("joined")
			c.send(map[string]any{"action": "subscribe", "types": []string{"none"}, "after": 0})
			c.expect("subscribed")
			var got []string
			for m := c.recv(); m.Type != "live"; m = c.recv() {
				got = append(got, m.Type)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("round %d: %v, want %v", round, got, want)
			}
		}
		// t1 and t2 via their first events, t3 for wallet w: three lookups,
		// all in the first round.
		if n := e.hub.Stats().TxLookups; n != 3 {
			t.Fatalf("%d log lookups, want 3", n)
		}
	})
}

// Reconnecting with "after" delivers exactly what was missed, in order, and
// then the live events; events appended during the replay are neither lost
// nor doubled at the switch to the shared stream.
func TestReconnectAfter(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, wshub.Config{ReplayPage: 3})
		types := []string{"deposit.*", "block.connected"}
		matches := func(typ string) bool { return strings.HasPrefix(typ, "deposit.") || typ == "block.connected" }
		kinds := []string{"deposit.pending", "withdrawal.queued", "block.connected", "deposit.credited", "transfer.created"}
		var appended []int64 // matching ids, in order
		var mu sync.Mutex
		add := func(i int) {
			typ, wallet := kinds[i%len(kinds)], "custody"
			if strings.HasPrefix(typ, "block.") {
				wallet = ""
			}
			id := e.appendEvent(typ, wallet, map[string]any{"n": i})
			if matches(typ) {
				mu.Lock()
				appended = append(appended, id)
				mu.Unlock()
			}
		}

		c := e.dial("key")
		c.send(map[string]any{"action": "subscribe", "types": types})
		c.expect("subscribed")
		for i := range 5 {
			add(i)
		}
		var last int64
		for range 3 { // deposit.pending, block.connected, deposit.credited
			m := c.expect("event")
			if m.Event.ID != appended[0] && m.Event.ID <= last {
				t.Fatalf("out of order: %s", m.raw)
			}
			last = m.Event.ID
			if m.Event.Type == "block.connected" {
				c.expect("block")
			}
		}
		if last != appended[2] {
			t.Fatalf("last %d, want %d", last, appended[2])
		}
		c.ws.Close(websocket.StatusNormalClosure, "")
		waitFor(t, "the server to notice the disconnect", 5*time.Second, func() bool { return e.hub.Clients() == 0 })

		for i := 5; i < 25; i++ { // missed while away
			add(i)
		}
		// Reconnect, and keep appending while the replay runs.
		c = e.dial("key")
		c.send(map[string]any{"action": "subscribe", "types": types, "after": last})
		if m := c.expect("subscribed"); m.After == nil || *m.After != last {
			t.Fatalf("subscribed: %s", m.raw)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 25; i < 125; i++ {
				add(i)
			}
		}()
		<-done
		for i := 125; i < 130; i++ { // live ones, after the replay has surely ended
			add(i)
		}
		mu.Lock()
		want := append([]int64(nil), appended[3:]...)
		mu.Unlock()
		var got []int64
		for len(got) < len(want) {
			m := c.recv()
			switch m.Type {
			case "event":
				got = append(got, m.Event.ID)
			case "block", "live":
			default:
				t.Fatalf("unexpected %s", m.raw)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("after reconnect got %v\nwant %v", got, want)
		}
		c.quiet(300 * time.Millisecond) // nothing twice
	})
}

// A client that never reads is disconnected with a reason once its queue is
// full, while another client keeps receiving everything.
func TestSlowClientIsDisconnected(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, wshub.Config{QueueSize: 8, WriteTimeout: time.Minute})
		slow := e.dialNoRead("key")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := slow.ws.Write(ctx, websocket.MessageText, []byte(`{"action":"subscribe"}`)); err != nil {
			t.Fatal(err)
		}
		fast := e.dial("key")
		fast.send(map[string]any{"action": "subscribe"})
		fast.expect("subscribed")
		waitFor(t, "both subscriptions", 5*time.Second, func() bool { return e.hub.Stats().Received == 2 })

		// Events come no faster than the fast client reads them; the slow
		// one's socket buffers fill up, then its queue.
		pad := strings.Repeat("x", 64<<10)
		n := 0
		for e.hub.Stats().SlowDisconnects == 0 {
			if n++; n == 5000 {
				t.Fatal("the slow client was never disconnected")
			}
			id := e.appendEvent("deposit.pending", "custody", map[string]any{"pad": pad})
			if m := fast.expect("event"); m.Event.ID != id {
				t.Fatalf("fast client got %d, want %d", m.Event.ID, id)
			}
		}
		t.Logf("slow client disconnected after %d events", n)
		// The fast client keeps going.
		id := e.appendEvent("deposit.credited", "custody", map[string]any{})
		if m := fast.expect("event"); m.Event.ID != id {
			t.Fatalf("fast client got %d, want %d", m.Event.ID, id)
		}
		fast.roundTrip()

		// The slow client, reading at last, finds the close reason after
		// what was already in flight.
		slow.startReading()
		err := slow.closeErr()
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "too slow: 8 messages queued" {
			t.Fatalf("slow client closed with %v", err)
		}
		waitFor(t, "the slow client to go", 5*time.Second, func() bool { return e.hub.Clients() == 1 })
	})
}

// A client that does not answer pings is closed; one that does stays.
func TestPingTimeout(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, wshub.Config{PingInterval: 100 * time.Millisecond, PongTimeout: 100 * time.Millisecond})
		deaf := e.dialNoRead("key") // never reads, so never answers a ping
		alive := e.dial("key")
		waitFor(t, "a ping timeout", 5*time.Second, func() bool { return e.hub.Stats().PingTimeouts >= 1 })
		waitFor(t, "the deaf client to go", 15*time.Second, func() bool { return e.hub.Clients() == 1 })
		time.Sleep(300 * time.Millisecond)
		alive.send(map[string]any{"action": "ping"})
		alive.expect("pong")
		_ = deaf
	})
}

// Run's end closes every connection with 1001.
func TestShutdownClosesClients(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		log := events.NewLog(db)
		hub := wshub.New(log, db, wshub.Config{}, testLogger())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- hub.Run(ctx) }()
		srv := newServer(t, hub)
		c := dialURL(t, srv, "key")
		c.startReading()
		c.send(map[string]any{"action": "ping"})
		c.expect("pong")
		cancel()
		if code := websocket.CloseStatus(c.closeErr()); code != websocket.StatusGoingAway {
			t.Fatalf("close status %d, want 1001", code)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := hub.Run(context.Background()); !errors.Is(err, wshub.ErrRunning) {
			t.Fatalf("second Run: %v", err)
		}
	})
}

// Two hubs (two "coffer serve" instances) on one database: each serves its
// own clients, and an event written through one instance reaches the other's
// clients through the log.
func TestTwoInstancesOneDatabase(t *testing.T) {
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			dsn := storetest.NewDSN(t, engine)
			db1 := storetest.Open(t, dsn)
			db2 := storetest.Open(t, dsn)
			e1 := newEnv(t, db1, wshub.Config{})
			e2 := newEnv(t, db2, wshub.Config{})
			c1, c2 := e1.dial("key"), e2.dial("key")
			for _, c := range []*client{c1, c2} {
				c.send(map[string]any{"action": "subscribe", "types": []string{"block.connected"}})
				c.expect("subscribed")
			}
			start := time.Now()
			id := e1.appendEvent(events.BlockConnected, "", map[string]any{"height": 7})
			for i, c := range []*client{c1, c2} {
				if m := c.expect("event"); m.Event.ID != id {
					t.Fatalf("instance %d: %s", i+1, m.raw)
				}
				c.expect("block")
			}
			t.Logf("reached the other instance's client in %v", time.Since(start))
			if e1.hub.Clients() != 1 || e2.hub.Clients() != 1 {
				t.Fatal("each instance should count its own client")
			}
		})
	}
}

func newServer(t testing.TB, hub *wshub.Hub) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hub.ServeWS(w, r, principalFor(r.Header.Get(principalHeader)))
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// 1,000 concurrent connections all receive a block event.
func TestThousandClients(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: opens 1,000 WebSocket connections")
	}
	const n = 1000
	needFDs(t, 2*n+200)
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, wshub.Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		start := time.Now()
		f, err := wshub.DialFleet(ctx, e.url, http.Header{principalHeader: {"wallet:w1"}}, n, 64,
			[]byte(`{"action":"join","id":"w1"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		t.Logf("%d clients connected in %v", n, time.Since(start))
		if got := e.hub.Clients(); got != n {
			t.Fatalf("Clients() = %d", got)
		}
		t0 := time.Now()
		id := e.appendEvent(events.BlockConnected, "", map[string]any{"height": 500, "hash": "00ff"})
		a, err := f.Wait(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("block %d reached all %d clients %v after the append (first after %v)", id, n, a.Last.Sub(t0), a.First.Sub(t0))
	})
}

// A second subscribe with "after" during a replay takes over: after its
// reply come exactly the events after its position, once each.
func TestResubscribeDuringReplay(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, wshub.Config{ReplayPage: 20})
		var ids []int64
		for i := range 300 {
			ids = append(ids, e.appendEvent("deposit.pending", "custody", map[string]any{"n": i}))
		}
		c := e.dial("key")
		c.send(map[string]any{"action": "subscribe", "after": 0})
		c.send(map[string]any{"action": "subscribe", "types": []string{"deposit.*"}, "after": ids[149]})
		for {
			m := c.recv()
			if m.Type == "subscribed" && m.After != nil && *m.After == ids[149] {
				break
			}
		}
		for _, want := range ids[150:] {
			if m := c.expect("event"); m.Event.ID != want {
				t.Fatalf("got %d, want %d", m.Event.ID, want)
			}
		}
		if m := c.expect("live"); *m.After != ids[299] {
			t.Fatalf("live: %s", m.raw)
		}
		c.quiet(200 * time.Millisecond)
	})
}

// A wallet token's replay holds its wallet's events and chain events only.
func TestReplayVisibility(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, wshub.Config{})
		var want []int64
		want = append(want, e.appendEvent("deposit.pending", "wallet-a", map[string]any{}))
		e.appendEvent("deposit.pending", "wallet-b", map[string]any{})
		want = append(want, e.appendEvent(events.BlockConnected, "", map[string]any{"height": 1}))
		e.appendEvent(events.TxSeen, "", map[string]any{"txid": "ff"})
		e.appendEvent("alert", "", map[string]any{})
		want = append(want, e.appendEvent(events.ChainReorg, "", map[string]any{}))
		want = append(want, e.appendEvent("balance.changed", "wallet-a", map[string]any{}))
		c := e.dial("wallet:wallet-a")
		c.send(map[string]any{"action": "subscribe", "after": 0})
		c.expect("subscribed")
		var got []int64
		for m := c.recv(); m.Type != "live"; m = c.recv() {
			switch m.Type {
			case "event":
				got = append(got, m.Event.ID)
			case "block": // block.connected, for a subscribed connection
			default:
				t.Fatalf("unexpected %s", m.raw)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("replayed %v, want %v", got, want)
		}
	})
}

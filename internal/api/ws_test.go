package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/coder/websocket"

	"github.com/coffer/coffer/internal/api"
	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/wshub"
)

// TestWebSocketRoute checks /v1/ws through the whole middleware chain:
// credentials are required, an API key and a wallet token may connect, a
// token may not join another wallet, and events reach the socket.
func TestWebSocketRoute(t *testing.T) {
	db := storetest.Open(t, storetest.NewSQLiteDSN(t))
	log := events.NewLog(db)
	hub := wshub.New(log, db, wshub.Config{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	done := make(chan error, 1)
	go func() { done <- hub.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	f := newFixture(t, api.Deps{DB: db, Events: log, Hub: hub})
	// The fixture keeps its own database for its key; this test's key and
	// events live in db, which the server reads.
	key, _, err := auth.CreateAPIKey(ctx, db, auth.ScopeRead, "ws test")
	if err != nil {
		t.Fatal(err)
	}
	wsURL := "ws" + strings.TrimPrefix(f.ts.URL, "http") + "/v1/ws"

	if _, resp, err := websocket.Dial(ctx, wsURL, nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("dial without a credential: %v, %v; want 401", resp, err)
	}

	dial := func(cred string) *websocket.Conn {
		t.Helper()
		c, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + cred}}})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { c.CloseNow() })
		return c
	}
	send := func(c *websocket.Conn, msg string) {
		t.Helper()
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(c *websocket.Conn) map[string]any {
		t.Helper()
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		return m
	}

	op := dial(key)
	send(op, `{"action":"ping"}`)
	if m := recv(op); m["type"] != "pong" {
		t.Fatalf("ping answered %v", m)
	}
	send(op, `{"action":"subscribe","types":["block.connected"],"after":0}`)
	if m := recv(op); m["type"] != "subscribed" {
		t.Fatalf("subscribe answered %v", m)
	}
	ids := appendEvents(t, &fixture{db: db, log: log}, 1)
	for {
		m := recv(op)
		if m["type"] != "event" {
			continue // "live", "block"
		}
		ev, _ := m["event"].(map[string]any)
		if ev["id"] != float64(ids[0]) {
			t.Fatalf("event %v, want id %d", ev, ids[0])
		}
		break
	}

	// A wallet token of wallet A may connect and join A, not B.
	walletA, walletB := strings.Repeat("a", 64), strings.Repeat("b", 64)
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	params, err := chain.Lookup(chain.BTC, chain.Regtest)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	token, _, err := auth.IssueWalletToken(ctx, db, auth.TokenRequest{
		WalletID: walletA, Timestamp: now.Unix(), Params: params, Now: now,
		Signature:  auth.SignMessage(params, priv, auth.Challenge(walletA, now)),
		AcceptKeys: [][]byte{priv.PubKey().SerializeCompressed()},
	})
	if err != nil {
		t.Fatal(err)
	}
	wc := dial(token)
	send(wc, `{"action":"join","id":"`+walletA+`"}`)
	if m := recv(wc); m["type"] != "joined" {
		t.Fatalf("join of the token's wallet answered %v", m)
	}
	send(wc, `{"action":"join","id":"`+walletB+`"}`)
	if m := recv(wc); m["type"] != "error" || m["code"] != "forbidden" {
		t.Fatalf("join of another wallet answered %v", m)
	}
}

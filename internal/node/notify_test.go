package node_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/regtest"
)

// TestNotifyBtcd: btcd pushes a notification when a block is mined.
func TestNotifyBtcd(t *testing.T) {
	n := regtest.StartT(t, regtest.Options{})
	c, err := node.New(n.RPC())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got := make(chan string, 16)
	done := make(chan error, 1)
	go func() { done <- c.Notify(ctx, func(m string) { got <- m }) }()
	// The subscription is registered asynchronously; mine until one arrives.
	for {
		if _, err := n.Mine(ctx, 1); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m == "" {
				t.Fatal("empty notification method")
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Notify after cancel: %v", err)
			}
			return
		case err := <-done:
			t.Fatalf("Notify ended: %v", err)
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no notification after mining")
		}
	}
}

// TestNotifyUnsupported: Litecoin Core has no WebSocket endpoint, which
// Notify reports as ErrNoNotifications so callers poll instead.
func TestNotifyUnsupported(t *testing.T) {
	n := regtest.StartT(t, regtest.Options{Kind: regtest.KindLitecoind})
	c, err := node.New(n.RPC())
	if err != nil {
		t.Fatal(err)
	}
	err = c.Notify(context.Background(), func(string) {})
	if !errors.Is(err, node.ErrNoNotifications) {
		t.Fatalf("Notify on litecoind: %v", err)
	}
}

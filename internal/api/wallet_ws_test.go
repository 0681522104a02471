package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// TestWalletWebSocket follows a real payment over /v1/ws: a client joins
// a wallet, the node pays it (new-tx, in the mempool) and a block confirms
// it (update-tx, confirmed).
func TestWalletWebSocket(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newWalletEnv(t, db)
		s := newSigner(t, 0x51+byte(len(t.Name())))
		acct := []uint32{84 + h, 1 + h, 0 + h}
		w := e.register(map[string]any{"descriptor": "wpkh(" + s.account(t, acct...) + "/<0;1>/*)"})

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		url := "ws" + strings.TrimPrefix(e.ts.URL, "http") + "/v1/ws"
		c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + e.key}}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"action":"join","id":"`+w.ID+`"}`)); err != nil {
			t.Fatal(err)
		}
		type push struct {
			Type     string `json:"type"`
			WalletID string `json:"wallet_id"`
			Data     struct {
				Txid   string `json:"txid"`
				Status string `json:"status"`
			} `json:"data"`
		}
		// next returns the next push of one of the wanted types.
		next := func(types ...string) push {
			t.Helper()
			for {
				_, b, err := c.Read(ctx)
				if err != nil {
					t.Fatalf("waiting for %v: %v", types, err)
				}
				var p push
				if err := json.Unmarshal(b, &p); err != nil {
					t.Fatalf("%s: %v", b, err)
				}
				for _, want := range types {
					if p.Type == want {
						return p
					}
				}
			}
		}
		if p := next("joined", "error"); p.Type != "joined" {
			t.Fatalf("join answered %+v", p)
		}

		txid := e.fund(s.wpkhScript(t, append(acct, 0, 0)...), 40_000)
		p := next("new-tx", "update-tx")
		if p.Type != "new-tx" || p.WalletID != w.ID || p.Data.Txid != txid || p.Data.Status != "mempool" {
			t.Fatalf("after the payment: %+v, want new-tx %s in the mempool", p, txid)
		}
		e.mine(1)
		p = next("new-tx", "update-tx")
		if p.Type != "update-tx" || p.Data.Txid != txid || p.Data.Status != "confirmed" {
			t.Fatalf("after the block: %+v, want update-tx %s confirmed", p, txid)
		}
	})
}

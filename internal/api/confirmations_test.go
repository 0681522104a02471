package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/wallet"
)

// TestTxConfirmedRepeats: a received transaction's tx.confirmed is written
// once per block, wallet-scoped and global, with confirmations 1, 2, … up to
// follow.confirmations_max (6 by default) and not beyond; each repeat carries
// the wallet's amounts and the block height.
func TestTxConfirmedRepeats(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newWalletEnv(t, db)
		acct := []uint32{84 + h, 1 + h, 0 + h}
		s := newSigner(t, byte(0xb0+len(t.Name())))
		w := e.register(map[string]any{"descriptor": "wpkh(" + s.account(t, acct...) + "/<0;1>/*)", "birthday": 440})
		txid := e.fund(s.wpkhScript(t, append(acct, 0, 0)...), 70_000)
		e.mine(1)
		var tx wallet.Tx
		e.must(http.StatusOK, "GET", "/v1/wallets/"+w.ID+"/transactions/"+txid, nil, &tx)
		if tx.Status != "confirmed" || tx.Height == nil {
			t.Fatalf("after one block: %+v", tx)
		}
		height := *tx.Height
		// One block at a time, then several at once: the follower applies
		// each separately either way.
		for range 3 {
			e.mine(1)
		}
		e.mine(5)

		var walletConfs, globalConfs []int64
		after := int64(0)
		for {
			var page EventsResponse
			e.must(http.StatusOK, "GET", fmt.Sprintf("/v1/events?after=%d&limit=1000", after), nil, &page)
			for _, ev := range page.Events {
				if ev.Type != events.TxConfirmed {
					continue
				}
				var d struct {
					Txid          string `json:"txid"`
					Status        string `json:"status"`
					Received      string `json:"received"`
					Net           string `json:"net"`
					BlockHeight   int64  `json:"block_height"`
					Confirmations int64  `json:"confirmations"`
				}
				if err := json.Unmarshal(ev.Data, &d); err != nil {
					t.Fatal(err)
				}
				if d.Txid != txid {
					continue
				}
				if d.Status != "confirmed" || d.BlockHeight != height || d.Confirmations < 1 {
					t.Errorf("event %d: %s", ev.ID, ev.Data)
				}
				switch ev.WalletID {
				case w.ID:
					if d.Received != "70000" || d.Net != "70000" {
						t.Errorf("event %d amounts: %s", ev.ID, ev.Data)
					}
					walletConfs = append(walletConfs, d.Confirmations)
				case "":
					globalConfs = append(globalConfs, d.Confirmations)
				default:
					t.Errorf("event %d of another wallet: %+v", ev.ID, ev)
				}
			}
			if len(page.Events) == 0 {
				break
			}
			after = page.NextAfter
		}
		want := []int64{1, 2, 3, 4, 5, 6}
		if !slices.Equal(walletConfs, want) {
			t.Errorf("wallet tx.confirmed confirmations %v, want %v", walletConfs, want)
		}
		if !slices.Equal(globalConfs, want) {
			t.Errorf("global tx.confirmed confirmations %v, want %v", globalConfs, want)
		}
	})
}

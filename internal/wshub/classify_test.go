package wshub

import (
	"context"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// The backward walk of the log pages through a wallet's events, finds a
// transaction's earlier event several pages back, and stops at the time the
// transaction was first seen instead of reading the wallet's whole history.
func TestClassifierPages(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		log := events.NewLog(db)
		add := func(typ, wallet string, data map[string]any) events.Event {
			var id int64
			err := db.InTx(ctx, func(tx *store.Tx) error {
				var err error
				id, err = log.Append(ctx, tx, typ, wallet, data)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			evs, err := log.List(ctx, id-1, 1)
			if err != nil || len(evs) != 1 {
				t.Fatal(evs, err)
			}
			return evs[0]
		}
		addTx := func(txid string, firstSeen int64) {
			err := db.InTx(ctx, func(tx *store.Tx) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO txs (txid, status, coinbase, raw, first_seen_at, updated_at)
					VALUES ($1, 'mempool', FALSE, $2, $3, $3)`, txid, []byte{0}, firstSeen)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		now := time.Now().Unix()
		addTx("t_old", now-3600)
		seen := add(events.TxSeen, "w", map[string]any{"txid": "t_old"})
		for i := range 23 {
			add("balance.changed", "w", map[string]any{"i": i})
			add(events.TxSeen, "w", map[string]any{"txid": "fillerX", "i": i})
		}
		conf := add(events.TxConfirmed, "w", map[string]any{"txid": "t_old"})
		// A transaction first seen "in the future" (beyond clockSlack): its
		// earlier event, pages back, is out of bounds and not looked for.
		addTx("t_new", now+3600)
		add(events.TxSeen, "w", map[string]any{"txid": "t_new"})
		for i := range 30 {
			add("balance.changed", "w", map[string]any{"i": i})
		}
		late := add(events.TxConfirmed, "w", map[string]any{"txid": "t_new"})
		// LIKE's wildcards in a txid are escaped: filler_ is not fillerX.
		wild := add(events.TxSeen, "w", map[string]any{"txid": "filler_"})

		cases := []struct {
			name string
			ev   events.Event
			new  bool
		}{
			{"first event", seen, true},
			{"earlier event 47 events back", conf, false},
			{"stopped by first_seen_at", late, true},
			{"wildcard in the txid", wild, true},
		}
		for _, tc := range cases {
			c := newClassifier(db, 100)
			c.page = 5
			it := newItem(tc.ev)
			if err := c.classify(ctx, it); err != nil {
				t.Fatal(err)
			}
			want := TypeUpdateTx
			if tc.new {
				want = TypeNewTx
			}
			if it.kind != want {
				t.Errorf("%s: %s, want %s", tc.name, it.kind, want)
			}
		}
	})
}

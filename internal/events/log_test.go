package events_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

func appendOne(t *testing.T, db *store.DB, log *events.Log, typ string) int64 {
	t.Helper()
	var id int64
	err := db.InTx(context.Background(), func(tx *store.Tx) error {
		var err error
		id, err = log.Append(context.Background(), tx, typ, "w1", map[string]any{"n": 1})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestAppendListAndRollback(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		log := events.NewLog(db)
		a := appendOne(t, db, log, events.BlockConnected)
		// A rolled-back transaction leaves no event behind.
		boom := errors.New("boom")
		err := db.InTx(ctx, func(tx *store.Tx) error {
			if _, err := log.Append(ctx, tx, events.TxSeen, "", map[string]any{}); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		b := appendOne(t, db, log, events.TxSeen)
		if b <= a {
			t.Fatalf("ids not increasing: %d then %d", a, b)
		}
		evs, err := log.List(ctx, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 2 || evs[0].ID != a || evs[1].ID != b || evs[0].WalletID != "w1" || string(evs[0].Data) != `{"n":1}` {
			t.Fatalf("events: %+v", evs)
		}
		if evs, _ := log.List(ctx, a, 10); len(evs) != 1 || evs[0].ID != b {
			t.Fatalf("after=%d: %+v", a, evs)
		}
		if last, _ := log.LastID(ctx); last != b {
			t.Fatalf("LastID %d, want %d", last, b)
		}
	})
}

func TestWaitWakesOnCommit(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		log := events.NewLog(db)
		got := make(chan []events.Event, 1)
		go func() {
			evs, _ := log.Wait(ctx, 0, 10, 30*time.Second)
			got <- evs
		}()
		time.Sleep(100 * time.Millisecond)
		id := appendOne(t, db, log, events.BlockConnected)
		select {
		case evs := <-got:
			if len(evs) != 1 || evs[0].ID != id {
				t.Fatalf("woke with %+v", evs)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Wait did not wake on commit")
		}
		// An empty wait returns empty at its deadline.
		evs, err := log.Wait(ctx, id, 10, 50*time.Millisecond)
		if err != nil || len(evs) != 0 {
			t.Fatalf("empty wait: %v %v", evs, err)
		}
	})
}

// TestReadersNeverSkipEvents: with many concurrent writers, a reader that
// resumes from the last id it saw must eventually see every event exactly
// once. On PostgreSQL this needs ids to become visible in commit order.
func TestReadersNeverSkipEvents(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		log := events.NewLog(db)
		const writers, each = 4, 40
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					err := db.InTx(ctx, func(tx *store.Tx) error {
						_, err := log.Append(ctx, tx, events.TxSeen, "", map[string]int{"w": w, "i": i})
						if err == nil && i%3 == 0 {
							time.Sleep(time.Millisecond) // hold the transaction open a little
						}
						return err
					})
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		seen := map[int64]bool{}
		var after int64
		for finished := false; ; {
			select {
			case <-done:
				finished = true
			default:
			}
			evs, err := log.List(ctx, after, 7)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs {
				if seen[e.ID] {
					t.Fatalf("event %d twice", e.ID)
				}
				seen[e.ID] = true
				after = e.ID
			}
			if finished && len(evs) == 0 {
				break
			}
		}
		if len(seen) != writers*each {
			t.Fatalf("reader saw %d of %d events", len(seen), writers*each)
		}
	})
}

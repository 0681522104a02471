package webhook_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/webhook"
)

// BenchmarkDeliver measures deliveries per second to a loopback receiver that
// answers 200 at once: b.N events are in the log before the service starts;
// the clock runs from Run until every endpoint has received all of them
// (fan-out, lease, send, record). Endpoints are worked in parallel; each
// endpoint's deliveries go out one at a time, in order.
func BenchmarkDeliver(b *testing.B) {
	for _, engine := range storetest.Engines {
		for _, endpoints := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/endpoints=%d", engine, endpoints), func(b *testing.B) {
				benchDeliver(b, engine, endpoints)
			})
		}
	}
}

func benchDeliver(b *testing.B, engine string, endpoints int) {
	ctx := context.Background()
	db := storetest.Open(b, storetest.NewDSN(b, engine))
	log := events.NewLog(db)
	var got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got.Add(1)
	}))
	defer srv.Close()
	svc := webhook.New(db, log, webhook.Config{}, slog.New(slog.DiscardHandler))
	for range endpoints {
		if _, err := svc.Create(ctx, webhook.EndpointRequest{URL: srv.URL}); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < b.N; {
		err := db.InTx(ctx, func(tx *store.Tx) error {
			for j := i; j < min(b.N, i+500); j++ {
				if _, err := log.Append(ctx, tx, "tx.seen", "", map[string]any{"txid": "00", "n": j}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		i = min(b.N, i+500)
	}
	want := int64(b.N * endpoints)
	b.ResetTimer()
	start := time.Now()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { svc.Run(runCtx); close(done) }()
	for got.Load() < want {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(want)/elapsed.Seconds(), "deliveries/s")
	st := db.Stats()
	b.ReportMetric(float64(st.Retries)/float64(want), "tx-retries/delivery")
}

package api

import (
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/coffer/coffer/internal/webhook"
)

// metrics live in a registry of their own so that several servers in one
// process (tests, or an embedding program) never collide on registration.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	handler  http.Handler
}

func newMetrics(reg *prometheus.Registry, d Deps, log *slog.Logger) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coffer_http_requests_total",
			Help: "HTTP requests answered, by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "coffer_http_request_duration_seconds",
			Help: "Time taken to answer HTTP requests, by route.",
			// Reaches 60 s because event long-polls legitimately take that long.
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route"}),
	}
	chainGauge := func(name, help string, v func(ChainStatus) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return v(d.Chain()) })
	}
	counter := func(name, help string, v func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v()) })
	}
	hooks := func() webhook.Stats {
		if d.Webhooks == nil {
			return webhook.Stats{}
		}
		return d.Webhooks.Stats()
	}
	reg.MustRegister(
		m.requests, m.duration,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		chainGauge("coffer_synced_height", "Height of the last block the follower applied (-1 before the first).",
			func(c ChainStatus) float64 { return float64(c.SyncedHeight) }),
		chainGauge("coffer_node_height", "Height of the node's best chain as last seen by the follower.",
			func(c ChainStatus) float64 { return float64(c.NodeHeight) }),
		chainGauge("coffer_node_reachable", "1 when the follower's last call to the node succeeded.",
			func(c ChainStatus) float64 { return boolFloat(c.NodeReachable) }),
		chainGauge("coffer_follower_halted", "1 when the follower has stopped and needs an operator.",
			func(c ChainStatus) float64 { return boolFloat(c.Halted != "") }),
		chainGauge("coffer_mempool_transactions", "Transactions in the node's mempool as last seen by the follower.",
			func(c ChainStatus) float64 { return float64(c.MempoolSize) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "coffer_leader",
			Help: "1 while this instance leads: follows the chain and pays withdrawals."},
			func() float64 { return boolFloat(d.Leader()) }),
		counter("coffer_blocks_applied_total", "Blocks the follower connected.",
			func() uint64 { return d.Counters().BlocksApplied }),
		counter("coffer_blocks_disconnected_total", "Blocks the follower disconnected in reorgs.",
			func() uint64 { return d.Counters().BlocksDisconnected }),
		counter("coffer_reorgs_total", "Chain reorganisations the follower handled.",
			func() uint64 { return d.Counters().Reorgs }),
		counter("coffer_db_tx_attempts_total", "Database transaction attempts, first tries included.",
			func() uint64 { return d.DB.Stats().Attempts }),
		counter("coffer_db_tx_retries_total", "Database transactions repeated after a serialization conflict.",
			func() uint64 { return d.DB.Stats().Retries }),
		counter("coffer_db_tx_giveups_total", "Database transactions abandoned after too many conflicts.",
			func() uint64 { return d.DB.Stats().GiveUps }),
		counter("coffer_webhook_attempts_total", "Webhook delivery attempts this instance made.",
			func() uint64 { return hooks().Attempts }),
		counter("coffer_webhook_attempts_succeeded_total", "Webhook delivery attempts answered with a 2xx.",
			func() uint64 { return hooks().Succeeded }),
		counter("coffer_webhook_deliveries_failed_total", "Webhook deliveries that used up the retry schedule (status failed).",
			func() uint64 { return hooks().Failed }),
		counter("coffer_webhook_endpoints_disabled_total", "Webhook endpoints this instance disabled for failing too long.",
			func() uint64 { return hooks().Disabled }),
		counter("coffer_webhook_leases_lost_total", "Webhook attempts whose result was not recorded: the lease had passed to another instance or the delivery was deleted.",
			func() uint64 { return hooks().LeaseLost }),
	)
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError),
		Registry: reg,
	})
	return m
}

func (m *metrics) observe(route string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

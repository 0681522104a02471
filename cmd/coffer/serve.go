package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer/coffer/internal/api"
	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/config"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/follow"
	"github.com/coffer/coffer/internal/keys"
	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/wallet"
	"github.com/coffer/coffer/internal/webhook"
	"github.com/coffer/coffer/internal/wshub"
)

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, _, err := loadConfig("serve", args, stderr)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, newLogger(cfg.Log, stderr), nil)
}

func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, _, err := loadConfig("migrate", args, stderr)
	if err != nil {
		return err
	}
	db, err := store.Open(ctx, cfg.Database.DSN)
	if err != nil {
		return err
	}
	defer db.Close()
	applied, err := db.Migrate(ctx)
	if err != nil {
		return err
	}
	v, err := db.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "applied %d migration(s); schema version %d (%s)\n", len(applied), v, db.Dialect())
	return nil
}

// nodeChainNames maps a configured network to the chain names nodes report
// in getblockchaininfo (Bitcoin Core and Litecoin Core say main/test; btcd
// says mainnet/testnet3). Bitcoin's testnet means testnet3: a Bitcoin Core
// node on testnet4 reports "testnet4" and is refused.
var nodeChainNames = map[string][]string{
	"mainnet": {"main", "mainnet"},
	"testnet": {"test", "testnet3"},
	"signet":  {"signet"},
	"regtest": {"regtest"},
}

// checkNode makes sure the configured node answers and is on the configured
// network; a wrong password or address stops Coffer at start with a clear
// message instead of retrying forever.
func checkNode(ctx context.Context, client *node.Client, network string) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	info, err := client.GetBlockchainInfo(cctx)
	if err != nil {
		return fmt.Errorf("node at %s (node.url): %w", client.URL(), err)
	}
	for _, n := range nodeChainNames[network] {
		if info.Chain == n {
			return nil
		}
	}
	return fmt.Errorf("node at %s is on chain %q but chain.network is %q", client.URL(), info.Chain, network)
}

// serve runs the API server, and the follower, wallet service and batcher
// while this instance leads (see lead), until ctx ends. ready, if not
// nil, receives the listening address once the server accepts connections.
func serve(ctx context.Context, cfg config.Config, logger *slog.Logger, ready chan<- string) error {
	params, err := chain.Lookup(chain.Coin(cfg.Chain.Coin), chain.Network(cfg.Chain.Network))
	if err != nil {
		return err
	}
	db, err := store.Open(ctx, cfg.Database.DSN)
	if err != nil {
		return err
	}
	defer db.Close()
	db.MaxAttempts = cfg.Database.MaxAttempts
	if applied, err := db.Migrate(ctx); err != nil {
		return err
	} else if len(applied) > 0 {
		logger.Info("applied database migrations", "versions", applied)
	}
	client, err := node.New(node.Config{URL: cfg.Node.URL, User: cfg.Node.User, Password: cfg.Node.Password,
		CookieFile: cfg.Node.CookieFile, Timeout: cfg.Node.Timeout.D(), Retries: cfg.Node.Retries})
	if err != nil {
		return err
	}
	if err := checkNode(ctx, client, cfg.Chain.Network); err != nil {
		return err
	}

	log := events.NewLog(db)
	follower := follow.New(db, client, params, log, follow.Config{
		StartHeight: cfg.Follow.StartHeight, MaxReorgDepth: cfg.Follow.MaxReorgDepth,
		PollInterval: cfg.Follow.PollInterval.D(), Prefetch: cfg.Follow.Prefetch,
		ConfirmationsMax: cfg.Follow.ConfirmationsMax,
	}, logger)
	walletCfg := walletConfig(cfg.Wallets)
	walletCfg.ConfirmationsMax = cfg.Follow.ConfirmationsMax
	wallets := wallet.New(db, params, log, client, follower, walletCfg, logger)
	custody, err := newCustody(ctx, cfg, db, params, log, wallets, client, follower, logger)
	if err != nil {
		return err
	}
	follower.SetWatcher(follow.Watchers{wallets, custody})
	hub := wshub.New(log, db, wshub.Config{}, logger)
	hooks := webhook.New(db, log, webhookConfig(cfg.Webhooks, cfg.Hooks), logger)
	if err := hooks.SyncScript(ctx); err != nil {
		return fmt.Errorf("script hook: %w", err)
	}
	if cfg.Hooks.Command != "" {
		logger.Info("script hook configured", "command", cfg.Hooks.Command, "event_types", []string(cfg.Hooks.EventTypes),
			"endpoint", webhook.ScriptEndpointID)
	}
	leaderState := &leadership{}
	standby := &standbyView{db: db, node: client}
	handler := api.NewServer(api.Deps{
		DB: db, Events: log, Node: client, Version: Version(),
		Coin: cfg.Chain.Coin, Network: cfg.Chain.Network, ReadyLag: cfg.Follow.ReadyLag, Logger: logger,
		Chain: func() api.ChainStatus { return leaderState.chainStatus(follower, standby) }, Counters: follower.Counters,
		Leader: leaderState.leading.Load, Wallets: wallets, Custody: custody, Hub: hub, Webhooks: hooks,
	})

	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("api.listen %s: %w", cfg.API.Listen, err)
	}
	// Requests derive from baseCtx, which ends when shutdown starts, so
	// long-polls return at once instead of holding shutdown up.
	baseCtx, endRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer endRequests()
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return baseCtx }}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	logger.Info("coffer serving", "addr", ln.Addr().String(), "coin", cfg.Chain.Coin, "network", cfg.Chain.Network,
		"database", string(db.Dialect()), "node", client.URL(), "version", Version())
	if ready != nil {
		ready <- ln.Addr().String()
	}

	followCtx, stopFollow := context.WithCancel(ctx)
	leaderDone := make(chan struct{})
	go func() {
		lead(followCtx, db, logger, leaderState, standby, cfg.Follow.PollInterval.D(), func(ctx context.Context) {
			runLeaderServices(ctx, follower, wallets, custody, logger)
		})
		close(leaderDone)
	}()
	go prune(followCtx, db, hooks, logger)
	hooksDone := make(chan struct{})
	go func() {
		if err := hooks.Run(followCtx); err != nil {
			logger.Error("webhook delivery stopped", "err", err)
		}
		close(hooksDone)
	}()
	hubDone := make(chan struct{})
	go func() {
		if err := hub.Run(followCtx); err != nil {
			logger.Error("WebSocket hub stopped", "err", err)
		}
		close(hubDone)
	}()

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		stopFollow()
		<-leaderDone
		<-hooksDone
		<-hubDone
		return fmt.Errorf("http server: %w", err)
	}
	logger.Info("shutting down")
	stopFollow()
	<-leaderDone // the leader's services stop and the lock is released
	<-hooksDone  // attempts in flight are cut short and their leases released
	<-hubDone    // closes every WebSocket, which Shutdown does not wait for
	endRequests()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.API.ShutdownTimeout.D())
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// leaderLockKey is the PostgreSQL advisory lock the leading instance holds
// for as long as it follows the chain and pays withdrawals. Advisory locks are
// per database, so instances on different databases never contend. (7316001
// serialises migrations; 7316002 and 7316003 order event and script ids.)
const leaderLockKey = 7316004

// leaderRetry is how often an instance that does not lead tries to take the
// lock; leaderCheck is how often the leader checks that the lock's
// connection is alive. A dead leader's session ends with its process, so
// another instance takes over within about leaderRetry.
var (
	leaderRetry = 2 * time.Second
	leaderCheck = time.Second
)

// leadership records whether this instance leads.
type leadership struct {
	leading atomic.Bool
	mu      sync.Mutex
	since   time.Time // when this instance last started leading
}

func (l *leadership) set(leading bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if leading {
		l.since = time.Now()
	}
	l.leading.Store(leading)
}

// chainStatus is the follower's own view while this instance leads and the
// follower has refreshed it since; otherwise (another instance leads, or
// this one has only just taken over) it is the standby view read from the
// database and the node.
func (l *leadership) chainStatus(f *follow.Follower, standby *standbyView) follow.Status {
	l.mu.Lock()
	leading, since := l.leading.Load(), l.since
	l.mu.Unlock()
	if leading {
		if st := f.Status(); !st.UpdatedAt.Before(since) {
			return st
		}
	}
	return standby.status()
}

// lead runs leaderWork while this instance holds the leader lock, until ctx
// ends. Without the lock it retries every leaderRetry, keeping the standby
// view fresh meanwhile; when the lock's connection breaks it stops
// leaderWork (cancelling its context and waiting for it) and goes back to
// trying. On SQLite the lock is always granted.
func lead(ctx context.Context, db *store.DB, logger *slog.Logger, state *leadership, standby *standbyView,
	pollInterval time.Duration, leaderWork func(context.Context)) {
	announcedStandby := false
	for ctx.Err() == nil {
		release, lost, err := db.LeaderLock(ctx, leaderLockKey, leaderCheck)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, store.ErrLockHeld) {
				if !announcedStandby {
					logger.Info("another instance leads; serving the API only", "retry_every", leaderRetry)
					announcedStandby = true
				}
			} else {
				logger.Warn("taking the leader lock failed; retrying", "err", err, "retry_in", leaderRetry)
			}
			standby.runFor(ctx, leaderRetry, pollInterval)
			continue
		}
		announcedStandby = false
		logger.Info("leading: following the chain and paying withdrawals")
		state.set(true)
		workCtx, stopWork := context.WithCancel(ctx)
		workDone := make(chan struct{})
		go func() { leaderWork(workCtx); close(workDone) }()
		select {
		case <-ctx.Done():
		case <-lost:
			logger.Error("lost the leader lock (database connection broke); stopping the follower and the batcher")
		}
		state.set(false)
		stopWork()
		<-workDone
		release()
		if ctx.Err() == nil {
			logger.Info("no longer leading; serving the API only until the lock is taken again")
		}
	}
}

// runLeaderServices runs the services only the leader may run — the chain
// follower, the wallet service (history recovery, proposal expiry) and the
// custodial batcher — until ctx ends. A halted follower keeps the rest (and
// the API) up so operators can see why; /readyz reports it.
func runLeaderServices(ctx context.Context, follower *follow.Follower, wallets *wallet.Service, custody *ledger.Service,
	logger *slog.Logger) {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := follower.Run(ctx); err != nil {
			logger.Error("follower stopped; API stays up and /readyz reports it", "err", err)
		}
	}()
	go func() { defer wg.Done(); wallets.Run(ctx) }()
	go func() { defer wg.Done(); custody.Run(ctx) }()
	wg.Wait()
}

// standbyView is the chain status of an instance that does not lead: the
// synced block comes from the database (chain_cursor, which the leader
// moves) and the node's tip from the node itself, so /v1/status, /readyz
// and the chain metrics mean the same on every instance. The mempool size
// and halted reason are only known to the leader and read as 0 and "".
type standbyView struct {
	db   *store.DB
	node *node.Client
	mu   sync.Mutex
	st   follow.Status
	set  bool
}

func (v *standbyView) status() follow.Status {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.set {
		return follow.Status{SyncedHeight: -1}
	}
	return v.st
}

// runFor refreshes the view every interval for d, or until ctx ends.
func (v *standbyView) runFor(ctx context.Context, d, interval time.Duration) {
	end := time.Now().Add(d)
	for {
		v.refresh(ctx)
		wait := min(interval, time.Until(end))
		if wait <= 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (v *standbyView) refresh(ctx context.Context) {
	v.mu.Lock()
	st := v.st
	if !v.set {
		st.SyncedHeight = -1
	}
	v.mu.Unlock()
	st.LastError, st.MempoolSize = "", 0
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	var h int64
	var hash string
	err := v.db.QueryRowContext(dctx, `SELECT height, hash FROM chain_cursor WHERE id = 1`).Scan(&h, &hash)
	cancel()
	switch {
	case errors.Is(err, sql.ErrNoRows):
		st.SyncedHeight, st.SyncedHash = -1, ""
	case err != nil:
		st.LastError = "reading the chain cursor: " + err.Error()
	default:
		st.SyncedHeight, st.SyncedHash = h, hash
	}
	nctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	info, err := v.node.GetBlockchainInfo(nctx)
	cancel()
	if err != nil {
		st.NodeReachable = false
		if st.LastError == "" {
			st.LastError = "asking node for its tip: " + err.Error()
		}
	} else {
		st.NodeReachable, st.NodeHeight, st.NodeHash = true, info.Blocks, info.BestBlockHash
	}
	if ctx.Err() != nil {
		return
	}
	st.UpdatedAt = time.Now()
	v.mu.Lock()
	v.st, v.set = st, true
	v.mu.Unlock()
}

// newCustody builds the custodial ledger. Without a master key it still
// follows existing custodial wallets' deposits, but cannot create wallets or
// sign withdrawals; a master key that cannot be read stops the start.
func newCustody(ctx context.Context, cfg config.Config, db *store.DB, params *chain.Params, log *events.Log,
	wallets *wallet.Service, client *node.Client, follower *follow.Follower, logger *slog.Logger) (*ledger.Service, error) {
	var ks *keys.Store
	if p := configuredKeys(cfg.Custody); p != nil {
		if _, _, err := p.Keys(ctx); err != nil {
			return nil, fmt.Errorf("custody master key: %w", err)
		}
		ks = keys.New(db, p)
	} else {
		logger.Warn("custodial wallets are off: set custody.master_key_file or custody.master_key_env to hold keys")
	}
	return ledger.New(db, params, log, wallets, ks, client, follower, ledgerConfig(cfg.Custody), logger), nil
}

// configuredKeys is the configured master key source, or nil.
func configuredKeys(c config.Custody) keys.Provider {
	switch {
	case c.MasterKeyFile != "":
		return keys.FileProvider(c.MasterKeyFile)
	case c.MasterKeyEnv != "":
		return keys.EnvProvider(c.MasterKeyEnv)
	}
	return nil
}

// webhookConfig is the webhook service's configuration. The configuration
// file's 0s means "never" for disable_after and "at once" for
// secret_overlap, which the service spells as a negative duration (its zero
// means the default). The hooks section is the script hook.
func webhookConfig(c config.Webhooks, h config.Hooks) webhook.Config {
	wc := webhook.Config{Timeout: c.Timeout.D(), DisableAfter: c.DisableAfter.D(), SecretOverlap: c.SecretOverlap.D(),
		MaxConcurrency: c.MaxConcurrency,
		Script:         webhook.Script{Command: h.Command, EventTypes: h.EventTypes, Timeout: h.Timeout.D()}}
	for _, d := range c.Schedule {
		wc.Schedule = append(wc.Schedule, d.D())
	}
	if wc.DisableAfter == 0 {
		wc.DisableAfter = -1
	}
	if wc.SecretOverlap == 0 {
		wc.SecretOverlap = -1
	}
	return wc
}

// pruneEvery is how often expired wallet tokens, used challenges, old
// idempotency keys and old webhook deliveries are deleted.
const pruneEvery = 10 * time.Minute

// webhookDeliveryRetention is how long finished (succeeded or failed)
// webhook deliveries and their attempts are kept after their last change.
const webhookDeliveryRetention = 30 * 24 * time.Hour

// prune deletes expired credentials, idempotency keys and finished webhook
// deliveries older than webhookDeliveryRetention until ctx ends. The first
// two are already ignored once expired; pruning only keeps tables small.
// Pending deliveries are never pruned.
func prune(ctx context.Context, db *store.DB, hooks *webhook.Service, logger *slog.Logger) {
	for {
		if _, err := auth.PruneExpired(ctx, db, time.Now()); err != nil && ctx.Err() == nil {
			logger.Warn("pruning expired wallet tokens failed", "err", err)
		}
		if _, err := api.PruneIdempotencyKeys(ctx, db, time.Now().Add(-api.IdempotencyKeyRetention)); err != nil && ctx.Err() == nil {
			logger.Warn("pruning old idempotency keys failed", "err", err)
		}
		if _, err := hooks.Prune(ctx, time.Now().Add(-webhookDeliveryRetention)); err != nil && ctx.Err() == nil {
			logger.Warn("pruning old webhook deliveries failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pruneEvery):
		}
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
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

// serve runs the API server and the follower until ctx ends. ready, if not
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
	handler := api.NewServer(api.Deps{
		DB: db, Events: log, Node: client, Version: Version(),
		Coin: cfg.Chain.Coin, Network: cfg.Chain.Network, ReadyLag: cfg.Follow.ReadyLag, Logger: logger,
		Chain: follower.Status, Counters: follower.Counters, Wallets: wallets, Custody: custody, Hub: hub,
		Webhooks: hooks,
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
	followDone := make(chan error, 1)
	go func() { followDone <- follower.Run(followCtx) }()
	walletsDone := make(chan struct{})
	go func() { wallets.Run(followCtx); close(walletsDone) }()
	custodyDone := make(chan struct{})
	go func() { custody.Run(followCtx); close(custodyDone) }()
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

	followerRunning := true
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		stopFollow()
		<-followDone
		<-walletsDone
		<-custodyDone
		<-hooksDone
		<-hubDone
		return fmt.Errorf("http server: %w", err)
	case err := <-followDone:
		// A halted follower keeps the API up so operators can see why;
		// /readyz reports it.
		followerRunning = false
		if err != nil {
			logger.Error("follower stopped; API stays up and /readyz reports it", "err", err)
		}
		<-ctx.Done()
	}
	logger.Info("shutting down")
	stopFollow()
	if followerRunning {
		<-followDone
	}
	<-walletsDone
	<-custodyDone
	<-hooksDone // attempts in flight are cut short and their leases released
	<-hubDone   // closes every WebSocket, which Shutdown does not wait for
	endRequests()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.API.ShutdownTimeout.D())
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
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

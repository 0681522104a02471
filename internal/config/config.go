// Package config loads Coffer's configuration: one YAML file, then COFFER_…
// environment variables, then validation. Every problem names the key.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration. Field yaml tags are the keys; the
// environment variable for a key is COFFER_ plus the key path upper-cased with
// dots as underscores (database.dsn → COFFER_DATABASE_DSN).
type Config struct {
	DataDir  string   `yaml:"data_dir"`
	Database Database `yaml:"database"`
	Chain    Chain    `yaml:"chain"`
	Node     Node     `yaml:"node"`
	Follow   Follow   `yaml:"follow"`
	Wallets  Wallets  `yaml:"wallets"`
	Custody  Custody  `yaml:"custody"`
	Webhooks Webhooks `yaml:"webhooks"`
	Hooks    Hooks    `yaml:"hooks"`
	API      API      `yaml:"api"`
	Log      Log      `yaml:"log"`
}

// Database selects the store.
type Database struct {
	// DSN is a postgres:// URL, or a SQLite file path; empty means
	// <data_dir>/coffer.db.
	DSN         string `yaml:"dsn"`
	MaxAttempts int    `yaml:"max_attempts"` // serializable-transaction attempts
}

// Chain selects the coin and network.
type Chain struct {
	Coin    string `yaml:"coin"`    // btc | ltc
	Network string `yaml:"network"` // mainnet | testnet | signet | regtest
}

// Node says how to reach the full node's JSON-RPC.
type Node struct {
	URL        string   `yaml:"url"`
	User       string   `yaml:"user"`
	Password   string   `yaml:"password"`
	CookieFile string   `yaml:"cookie_file"`
	Timeout    Duration `yaml:"timeout"`
	Retries    int      `yaml:"retries"`
}

// Follow tunes the chain follower.
type Follow struct {
	StartHeight   int64    `yaml:"start_height"`
	MaxReorgDepth int64    `yaml:"max_reorg_depth"`
	PollInterval  Duration `yaml:"poll_interval"`
	Prefetch      int      `yaml:"prefetch"`
	ReadyLag      int64    `yaml:"ready_lag"` // /readyz fails beyond this many blocks behind
	// ConfirmationsMax: tx.confirmed is repeated once per block up to this
	// many confirmations.
	ConfirmationsMax int64 `yaml:"confirmations_max"`
}

// Wallets tunes the watch-only wallet service.
type Wallets struct {
	GapLimit        int      `yaml:"gap_limit"`         // default gap limit of new wallets
	ProposalTTL     Duration `yaml:"proposal_ttl"`      // how long a proposal reserves its inputs
	FallbackFeeRate int64    `yaml:"fallback_fee_rate"` // sat/vB when the node has no estimate
	FullBlocks      bool     `yaml:"full_blocks"`       // recover history from full blocks even when filters exist
}

// Custody tunes custodial wallets and the ledger.
type Custody struct {
	// MasterKeyFile holds the master keys (hex, one per line, the first is
	// current) that wrap the seeds' data keys; MasterKeyEnv names an
	// environment variable holding them (comma-separated) instead. With
	// neither, custodial wallets are off.
	MasterKeyFile      string   `yaml:"master_key_file"`
	MasterKeyEnv       string   `yaml:"master_key_env"`
	Confirmations      int64    `yaml:"confirmations"`       // a deposit is credited at this many
	TrackConfirmations int64    `yaml:"track_confirmations"` // deposits' confirmations are counted up to this
	BatchInterval      Duration `yaml:"batch_interval"`      // how often queued withdrawals are paid
	BatchMaxCount      int      `yaml:"batch_max_count"`     // pay at once when this many are queued; outputs per batch
	BatchMaxSum        int64    `yaml:"batch_max_sum"`       // pay at once when this many satoshis are queued (0: off)
	BumpAfter          Duration `yaml:"bump_after"`          // fee-bump a batch unconfirmed this long (0: never)
	WithdrawalFee      int64    `yaml:"withdrawal_fee"`      // satoshis charged per withdrawal to the customer
	// FeePayer says who pays the network fee of withdrawal batches: the
	// service (the fees account) or the customer (each withdrawal its even
	// share, at most MaxNetworkFeeShare, which is held at request).
	FeePayer           string `yaml:"fee_payer"`
	MaxNetworkFeeShare int64  `yaml:"max_network_fee_share"`
}

// Webhooks tunes webhook delivery.
type Webhooks struct {
	Timeout        Duration `yaml:"timeout"`         // a 2xx within this is success
	DisableAfter   Duration `yaml:"disable_after"`   // disable an endpoint failing this long without a success (0: never)
	SecretOverlap  Duration `yaml:"secret_overlap"`  // the previous secret keeps signing this long after a rotation
	MaxConcurrency int      `yaml:"max_concurrency"` // endpoints sent to at once by one instance
	// Schedule is the delay before each attempt of a delivery (its length is
	// the number of attempts); empty means the built-in schedule: 0s, 5s,
	// 5m, 30m, 2h, 5h, 10h, 10h. Written as a YAML list or, as the
	// environment variable takes it, a comma-separated string ("0s,5s,5m").
	Schedule Durations `yaml:"schedule"`
}

// Limits of the webhooks section.
const (
	maxWebhookTimeout       = 10 * time.Minute
	maxWebhookSecretOverlap = 30 * 24 * time.Hour
	maxWebhookAttempts      = 100
	maxWebhookRetryDelay    = 7 * 24 * time.Hour
)

// Hooks configures the script hook: a command run per event, retried on the
// webhook schedule.
type Hooks struct {
	// Command is the absolute path of an executable run (with no shell and
	// no arguments) per event; empty: no script hook.
	Command string `yaml:"command"`
	// EventTypes filters by type like a webhook endpoint's event_types
	// ("deposit.*", "tx.confirmed"); empty: every type. Written as a YAML
	// list or, as the environment variable takes it, a comma-separated
	// string.
	EventTypes Strings  `yaml:"event_types"`
	Timeout    Duration `yaml:"timeout"` // a run that has not exited by then is killed and fails
}

// Limits of the hooks section.
const (
	maxHookTimeout    = time.Hour
	maxHookEventTypes = 100
)

// API configures the HTTP server.
type API struct {
	Listen          string   `yaml:"listen"`
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// Log configures structured logging.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

// Duration is a time.Duration written as "1s", "250ms", "5m".
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("%q is not a duration like 1s or 250ms", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Durations is a list of durations: a YAML sequence ([0s, 5s, 5m]) or a
// comma-separated string ("0s,5s,5m"), as environment variables give it.
type Durations []Duration

// UnmarshalYAML reads a sequence of durations or a comma-separated string.
func (ds *Durations) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		v, err := parseDurations(n.Value)
		if err != nil {
			return err
		}
		*ds = v
		return nil
	}
	var list []Duration
	if err := n.Decode(&list); err != nil {
		return err
	}
	*ds = list
	return nil
}

// parseDurations parses a comma-separated list of durations; an empty (or
// blank) string is an empty list.
func parseDurations(s string) (Durations, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var ds Durations
	for _, part := range strings.Split(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("%q is not a comma-separated list of durations like 0s,5s,5m (%q is not a duration)", s, part)
		}
		ds = append(ds, Duration(d))
	}
	return ds, nil
}

// Strings is a list of strings: a YAML sequence or a comma-separated string,
// as environment variables give it. Items are trimmed; empty ones dropped.
type Strings []string

// UnmarshalYAML reads a sequence of strings or a comma-separated string.
func (ss *Strings) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*ss = parseStrings(n.Value)
		return nil
	}
	var list []string
	if err := n.Decode(&list); err != nil {
		return err
	}
	*ss = list
	return nil
}

// parseStrings splits a comma-separated list; a blank string is no list.
func parseStrings(s string) Strings {
	var out Strings
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// Default returns the embedded defaults: BTC regtest with SQLite in ./coffer-data
// and a local btcd.
func Default() Config {
	return Config{
		DataDir:  "./coffer-data",
		Database: Database{MaxAttempts: 8},
		Chain:    Chain{Coin: "btc", Network: "regtest"},
		Node: Node{URL: "http://127.0.0.1:18334", User: "coffer", Password: "coffer",
			Timeout: Duration(30 * time.Second), Retries: 3},
		Follow: Follow{MaxReorgDepth: 100, PollInterval: Duration(time.Second), Prefetch: 8, ReadyLag: 2,
			ConfirmationsMax: 6},
		Wallets: Wallets{GapLimit: 20, ProposalTTL: Duration(15 * time.Minute), FallbackFeeRate: 10},
		Custody: Custody{Confirmations: 6, TrackConfirmations: 100, BatchInterval: Duration(time.Minute),
			BatchMaxCount: 250, BumpAfter: Duration(2 * time.Hour), FeePayer: "service", MaxNetworkFeeShare: 10_000},
		Webhooks: Webhooks{Timeout: Duration(15 * time.Second), DisableAfter: Duration(5 * 24 * time.Hour),
			SecretOverlap: Duration(24 * time.Hour), MaxConcurrency: 32},
		Hooks: Hooks{Timeout: Duration(30 * time.Second)},
		API:   API{Listen: "127.0.0.1:8080", ShutdownTimeout: Duration(15 * time.Second)},
		Log:   Log{Level: "info", Format: "text"},
	}
}

// Load reads path (if not empty) over the defaults, applies COFFER_…
// environment overrides from environ (os.Environ() form), and validates.
func Load(path string, environ []string) (Config, error) {
	cfg := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true) // a misspelt key is an error, not a silent default
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) /* empty file */ {
			return cfg, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	if err := applyEnv(&cfg, environ); err != nil {
		return cfg, err
	}
	if cfg.Database.DSN == "" {
		cfg.Database.DSN = filepath.Join(cfg.DataDir, "coffer.db")
	}
	return cfg, cfg.Validate()
}

// applyEnv sets every field that has a COFFER_ variable in environ.
func applyEnv(cfg *Config, environ []string) error {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "COFFER_") {
			env[k] = v
		}
	}
	known := map[string]bool{}
	err := walk(reflect.ValueOf(cfg).Elem(), "", func(key string, v reflect.Value) error {
		name := EnvName(key)
		known[name] = true
		s, ok := env[name]
		if !ok {
			return nil
		}
		if err := setField(v, s); err != nil {
			return fmt.Errorf("config: %s (from %s): %v", key, name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for name := range env {
		if !known[name] && !notConfigKeys[name] && !strings.HasPrefix(name, "COFFER_TEST_") {
			return fmt.Errorf("config: environment variable %s matches no configuration key", name)
		}
	}
	return nil
}

// notConfigKeys are COFFER_ variables read elsewhere, not configuration keys:
// the config file path and the test harness's node binaries.
var notConfigKeys = map[string]bool{"COFFER_CONFIG": true, "COFFER_BTCD": true, "COFFER_LITECOIND": true}

// EnvName is the environment variable that overrides key.
func EnvName(key string) string {
	return "COFFER_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func walk(v reflect.Value, prefix string, fn func(key string, v reflect.Value) error) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		key := t.Field(i).Tag.Get("yaml")
		if prefix != "" {
			key = prefix + "." + key
		}
		f := v.Field(i)
		if f.Kind() == reflect.Struct {
			if err := walk(f, key, fn); err != nil {
				return err
			}
			continue
		}
		if err := fn(key, f); err != nil {
			return err
		}
	}
	return nil
}

func setField(v reflect.Value, s string) error {
	if v.Type() == reflect.TypeOf(Durations(nil)) {
		ds, err := parseDurations(s)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(ds))
		return nil
	}
	if v.Type() == reflect.TypeOf(Strings(nil)) {
		v.Set(reflect.ValueOf(parseStrings(s)))
		return nil
	}
	if v.Type() == reflect.TypeOf(Duration(0)) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration like 1s or 250ms", s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		v.SetInt(n)
	default:
		return fmt.Errorf("unsupported kind %s", v.Kind())
	}
	return nil
}

// Validate checks every value and returns the first problem, naming its key.
func (c Config) Validate() error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...))
	}
	switch c.Chain.Coin {
	case "btc", "ltc":
	default:
		return bad("chain.coin", "must be btc or ltc, got %q", c.Chain.Coin)
	}
	switch c.Chain.Network {
	case "mainnet", "testnet", "regtest":
	case "signet":
		if c.Chain.Coin != "btc" {
			return bad("chain.network", "signet exists only for btc")
		}
	default:
		return bad("chain.network", "must be mainnet, testnet, signet or regtest, got %q", c.Chain.Network)
	}
	if c.DataDir == "" {
		return bad("data_dir", "must not be empty")
	}
	if c.Database.MaxAttempts < 1 || c.Database.MaxAttempts > 100 {
		return bad("database.max_attempts", "must be between 1 and 100, got %d", c.Database.MaxAttempts)
	}
	if c.Node.URL == "" {
		return bad("node.url", "must not be empty")
	}
	if !strings.HasPrefix(c.Node.URL, "http://") && !strings.HasPrefix(c.Node.URL, "https://") {
		return bad("node.url", "must start with http:// or https://, got %q", c.Node.URL)
	}
	if c.Node.CookieFile == "" && c.Node.User == "" {
		return bad("node.user", "set node.user and node.password, or node.cookie_file")
	}
	if c.Node.Timeout.D() <= 0 {
		return bad("node.timeout", "must be positive, got %s", c.Node.Timeout.D())
	}
	if c.Node.Retries < 0 || c.Node.Retries > 20 {
		return bad("node.retries", "must be between 0 and 20, got %d", c.Node.Retries)
	}
	if c.Follow.StartHeight < 0 {
		return bad("follow.start_height", "must not be negative, got %d", c.Follow.StartHeight)
	}
	if c.Follow.MaxReorgDepth < 1 {
		return bad("follow.max_reorg_depth", "must be at least 1, got %d", c.Follow.MaxReorgDepth)
	}
	if c.Follow.PollInterval.D() < 10*time.Millisecond {
		return bad("follow.poll_interval", "must be at least 10ms, got %s", c.Follow.PollInterval.D())
	}
	if c.Follow.Prefetch < 1 || c.Follow.Prefetch > 256 {
		return bad("follow.prefetch", "must be between 1 and 256, got %d", c.Follow.Prefetch)
	}
	if c.Custody.MasterKeyFile != "" && c.Custody.MasterKeyEnv != "" {
		return bad("custody.master_key_file", "set master_key_file or master_key_env, not both")
	}
	if c.Custody.Confirmations < 1 || c.Custody.Confirmations > 1000 {
		return bad("custody.confirmations", "must be between 1 and 1000, got %d", c.Custody.Confirmations)
	}
	if c.Custody.TrackConfirmations < c.Custody.Confirmations || c.Custody.TrackConfirmations > 10000 {
		return bad("custody.track_confirmations", "must be between custody.confirmations and 10000, got %d", c.Custody.TrackConfirmations)
	}
	if c.Custody.BatchInterval.D() < time.Second {
		return bad("custody.batch_interval", "must be at least 1s, got %s", c.Custody.BatchInterval.D())
	}
	if c.Custody.BatchMaxCount < 1 || c.Custody.BatchMaxCount > 2000 {
		return bad("custody.batch_max_count", "must be between 1 and 2000, got %d", c.Custody.BatchMaxCount)
	}
	if c.Custody.FeePayer != "service" && c.Custody.FeePayer != "customer" {
		return bad("custody.fee_payer", "must be service or customer, got %q", c.Custody.FeePayer)
	}
	if c.Custody.MaxNetworkFeeShare < 0 {
		return bad("custody.max_network_fee_share", "must not be negative, got %d", c.Custody.MaxNetworkFeeShare)
	}
	if c.Custody.BatchMaxSum < 0 || c.Custody.WithdrawalFee < 0 || c.Custody.BumpAfter < 0 {
		return bad("custody", "batch_max_sum, withdrawal_fee and bump_after must not be negative")
	}
	if c.Wallets.GapLimit < 1 || c.Wallets.GapLimit > 1000 {
		return bad("wallets.gap_limit", "must be between 1 and 1000, got %d", c.Wallets.GapLimit)
	}
	if c.Wallets.ProposalTTL.D() < time.Minute {
		return bad("wallets.proposal_ttl", "must be at least 1m, got %s", c.Wallets.ProposalTTL.D())
	}
	if c.Wallets.FallbackFeeRate < 1 || c.Wallets.FallbackFeeRate > 10000 {
		return bad("wallets.fallback_fee_rate", "must be between 1 and 10000 sat/vB, got %d", c.Wallets.FallbackFeeRate)
	}
	if c.Follow.ReadyLag < 0 {
		return bad("follow.ready_lag", "must not be negative, got %d", c.Follow.ReadyLag)
	}
	if c.Follow.ConfirmationsMax < 1 || c.Follow.ConfirmationsMax > 1000 {
		return bad("follow.confirmations_max", "must be between 1 and 1000, got %d", c.Follow.ConfirmationsMax)
	}
	if d := c.Webhooks.Timeout.D(); d < 100*time.Millisecond || d > maxWebhookTimeout {
		return bad("webhooks.timeout", "must be between 100ms and %s, got %s", maxWebhookTimeout, d)
	}
	if d := c.Webhooks.DisableAfter.D(); d < 0 {
		return bad("webhooks.disable_after", "must not be negative (0s: never disable), got %s", d)
	}
	if d := c.Webhooks.SecretOverlap.D(); d < 0 || d > maxWebhookSecretOverlap {
		return bad("webhooks.secret_overlap", "must be between 0s and %s, got %s", maxWebhookSecretOverlap, d)
	}
	if n := c.Webhooks.MaxConcurrency; n < 1 || n > 1000 {
		return bad("webhooks.max_concurrency", "must be between 1 and 1000, got %d", n)
	}
	if n := len(c.Webhooks.Schedule); n > maxWebhookAttempts {
		return bad("webhooks.schedule", "may hold at most %d delays (one per attempt), got %d", maxWebhookAttempts, n)
	}
	for i, d := range c.Webhooks.Schedule {
		if d < 0 || d.D() > maxWebhookRetryDelay {
			return bad("webhooks.schedule", "delay %d must be between 0s and %s, got %s", i+1, maxWebhookRetryDelay, d.D())
		}
	}
	if err := c.Hooks.validate(); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.API.Listen); err != nil {
		return bad("api.listen", "must be host:port, got %q", c.API.Listen)
	}
	if c.API.ShutdownTimeout.D() <= 0 {
		return bad("api.shutdown_timeout", "must be positive")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return bad("log.format", "must be text or json, got %q", c.Log.Format)
	}
	return nil
}

// validate checks the hooks section. The command must exist and be
// executable when the configuration is loaded, so a typo stops coffer serve
// at start instead of failing every event.
func (h Hooks) validate() error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("config: hooks.%s: %s", key, fmt.Sprintf(format, args...))
	}
	if d := h.Timeout.D(); d < 100*time.Millisecond || d > maxHookTimeout {
		return bad("timeout", "must be between 100ms and %s, got %s", maxHookTimeout, d)
	}
	if len(h.EventTypes) > maxHookEventTypes {
		return bad("event_types", "may hold at most %d patterns, got %d", maxHookEventTypes, len(h.EventTypes))
	}
	for _, p := range h.EventTypes {
		if !validTypePattern(p) {
			return bad("event_types", "%q is not an event type or a prefix ending in *: use lowercase letters, digits, '.', '_' and '-', like deposit.credited or deposit.*", p)
		}
	}
	if h.Command == "" {
		return nil
	}
	if !filepath.IsAbs(h.Command) {
		return bad("command", "must be an absolute path (it is run without a shell or PATH lookup), got %q", h.Command)
	}
	fi, err := os.Stat(h.Command)
	switch {
	case err != nil:
		return bad("command", "%v", err)
	case !fi.Mode().IsRegular():
		return bad("command", "%s is not a regular file", h.Command)
	case fi.Mode().Perm()&0o111 == 0:
		return bad("command", "%s is not executable (mode %s): chmod +x it", h.Command, fi.Mode().Perm())
	}
	return nil
}

// validTypePattern is the webhook package's event type pattern syntax: a
// type, or a prefix ending in "*".
func validTypePattern(p string) bool {
	if p == "" || len(p) > 100 {
		return false
	}
	for _, c := range strings.TrimSuffix(p, "*") {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

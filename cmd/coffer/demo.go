package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/config"
	"github.com/coffer/coffer/internal/keys"
	"github.com/coffer/coffer/internal/regtest"
	"github.com/coffer/coffer/internal/wallet"
)

// demoMarker marks a directory the demo created, so it only ever deletes its own.
const demoMarker = ".coffer-demo"

// resetDemoDir empties dir for a fresh demo. btcd does not keep a regtest
// chain across restarts, so an old database would no longer match the new
// chain; starting clean keeps every run identical.
func resetDemoDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		if _, err := os.Stat(filepath.Join(dir, demoMarker)); err != nil {
			return fmt.Errorf("%s exists and was not made by coffer demo; choose another -dir", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, demoMarker), []byte("created by coffer demo; deleted by the next run\n"), 0o600)
}

// cmdDemo runs a regtest btcd and Coffer on SQLite in one directory, makes a
// payment and a block every few seconds so there is something to watch, and
// stops everything on Ctrl-C. Every run starts a fresh chain in dir.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "./coffer-demo", "directory for the node's chain and Coffer's database")
	listen := fs.String("listen", "127.0.0.1:8080", "API listen address")
	every := fs.Duration("every", 10*time.Second, "interval between demo payments and blocks (0 disables)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	say := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }
	if err := resetDemoDir(abs); err != nil {
		return err
	}

	say("Starting a regtest btcd in %s (the first run builds btcd, about a minute)…", filepath.Join(abs, "node"))
	n, err := regtest.Start(ctx, regtest.Options{Kind: regtest.KindBtcd, Dir: filepath.Join(abs, "node")})
	if err != nil {
		return fmt.Errorf("starting regtest btcd: %w", err)
	}
	defer func() {
		say("Stopping the regtest node…")
		n.Stop()
	}()
	height, err := n.Client().GetBlockCount(ctx)
	if err != nil {
		return err
	}
	// 440 blocks: coins to spend, and segwit active (btcd's regtest turns it
	// on at 432), which custodial wallets' native segwit addresses need.
	if height < demoHeight {
		say("Mining %d blocks so the demo has spendable coins and segwit…", demoHeight-height)
		if _, err := n.Mine(ctx, int(demoHeight-height)); err != nil {
			return err
		}
	}

	cfg := config.Default()
	cfg.DataDir = abs
	cfg.Database.DSN = filepath.Join(abs, "coffer.db")
	rpc := n.RPC()
	cfg.Node.URL, cfg.Node.User, cfg.Node.Password = rpc.URL, rpc.User, rpc.Password
	cfg.API.Listen = *listen
	// A master key for the custodial wallet, and short waits so deposits
	// are credited and withdrawals paid while you watch.
	cfg.Custody.MasterKeyFile = filepath.Join(abs, "master.key")
	if err := writeDemoMasterKey(cfg.Custody.MasterKeyFile); err != nil {
		return err
	}
	cfg.Custody.Confirmations, cfg.Custody.TrackConfirmations = 2, 6
	cfg.Custody.BatchInterval = config.Duration(15 * time.Second)
	if err := cfg.Validate(); err != nil {
		return err
	}

	db, err := openKeysDB(ctx, cfg)
	if err != nil {
		return err
	}
	apiKey, _, err := auth.CreateAPIKey(ctx, db, auth.ScopeAdmin, "demo")
	db.Close()
	if err != nil {
		return err
	}

	ready := make(chan string, 1)
	serveErr := make(chan error, 1)
	go func() {
		serveErr <- serve(ctx, cfg, newLogger(config.Log{Level: "warn", Format: "text"}, stderr), ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-serveErr:
		return err
	}
	url := "http://" + addr
	// A watch-only wallet of a fresh demo key: Coffer watches it, the demo
	// pays it.
	desc, err := demoDescriptor()
	if err != nil {
		return err
	}
	var w wallet.Wallet
	if err := demoPost(ctx, url+"/v1/wallets", apiKey, map[string]any{"descriptor": desc, "label": "demo"}, &w); err != nil {
		return fmt.Errorf("registering the demo wallet: %w", err)
	}
	cust, err := demoCustody(ctx, url, apiKey)
	if err != nil {
		return fmt.Errorf("setting up the demo custodial wallet: %w", err)
	}
	say("")
	say("Coffer demo is running.")
	say("  API:       %s", url)
	say("  API key:   %s (admin; every /v1 request needs it)", apiKey)
	say("  node:      btcd regtest, RPC %s", rpc.URL)
	say("  database:  %s (SQLite)", cfg.Database.DSN)
	say("  wallet:    %s (watch-only, %s)", w.ID, desc)
	say("             every %s the demo alternately pays it and mines a block", *every)
	say("  custody:   %s (custodial; seed encrypted under %s)", cust.wallet, cfg.Custody.MasterKeyFile)
	say("             accounts alice %s and bob %s; the demo pays alice's deposit", cust.alice, cust.bob)
	say("             address %s too (credited at 2 confirmations)", cust.address)
	say("")
	say("Try:")
	say("  export COFFER_KEY=%s", apiKey)
	say("  curl -s -H \"Authorization: Bearer $COFFER_KEY\" %s/v1/status", url)
	say("  curl -s -H \"Authorization: Bearer $COFFER_KEY\" '%s/v1/events?after=0&limit=5'", url)
	say("  curl -s -H \"Authorization: Bearer $COFFER_KEY\" '%s/v1/events?after=0&wait=30'   # long-poll", url)
	say("  curl -s -H \"Authorization: Bearer $COFFER_KEY\" %s/v1/wallets/%s/balance", url, w.ID)
	say("  curl -s -H \"Authorization: Bearer $COFFER_KEY\" %s/v1/wallets/%s/transactions", url, w.ID)
	say("  curl -s -H \"Authorization: Bearer $COFFER_KEY\" %s/v1/custody/wallets/%s/accounts/%s", url, cust.wallet, cust.alice)
	say("  curl -s -H \"Authorization: Bearer $COFFER_KEY\" '%s/v1/deposits?account_id=%s'", url, cust.alice)
	say("  curl -s -H \"Authorization: Bearer $COFFER_KEY\" -H 'Idempotency-Key: demo-1' %s/v1/transfers \\", url)
	say("       -d '{\"from\":\"%s\",\"to\":\"%s\",\"amount\":\"50000\"}'", cust.alice, cust.bob)
	say("  curl -s -H \"Authorization: Bearer $COFFER_KEY\" -H 'Idempotency-Key: demo-2' %s/v1/withdrawals \\", url)
	say("       -d '{\"account\":\"%s\",\"address\":\"%s\",\"amount\":\"20000\"}'", cust.bob, cust.payout)
	say("  curl -s -H \"Authorization: Bearer $COFFER_KEY\" %s/v1/audit", url)
	say("  curl -s %s/readyz", url)
	say("")
	say("Press Ctrl-C to stop.")

	var tick <-chan time.Time
	pay := false
	if *every > 0 {
		t := time.NewTicker(*every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return <-serveErr
		case err := <-serveErr:
			return err
		case <-tick:
			// Alternate: a payment that waits in the mempool, then the block
			// that confirms it, so both stages show in the event log.
			if pay = !pay; pay {
				var a wallet.Address
				err := demoPost(ctx, url+"/v1/wallets/"+w.ID+"/addresses/next", apiKey, nil, &a)
				var script []byte
				if err == nil {
					script, err = n.Chain().AddressScript(a.Address)
				}
				if err == nil {
					_, _, err = n.Fund(ctx, script, 50_000)
				}
				if err == nil {
					_, _, err = n.Fund(ctx, cust.script, 100_000)
				}
				if err != nil {
					say("demo payment failed: %v", err)
				}
			} else if _, err := n.Mine(ctx, 1); err != nil {
				say("demo mining failed: %v", err)
			}
		}
	}
}

// demoHeight is how many blocks the demo's chain starts with.
const demoHeight = 440

// writeDemoMasterKey writes a fresh custody master key, readable only by
// the user, as the key file custody.master_key_file names.
func writeDemoMasterKey(path string) error {
	line, err := keys.GenerateMasterKey()
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(line+"\n"), 0o600)
}

// demoCustodial is the demo's custodial wallet: two accounts, alice's
// deposit address (and its script, which the demo pays) and an outside
// address to withdraw to.
type demoCustodial struct {
	wallet, alice, bob, address, payout string
	script                              []byte
}

// demoCustody creates the custodial wallet and its accounts over the API.
func demoCustody(ctx context.Context, url, key string) (*demoCustodial, error) {
	var w struct{ ID string }
	if err := demoPost(ctx, url+"/v1/custody/wallets", key, map[string]any{"label": "demo custody"}, &w); err != nil {
		return nil, err
	}
	c := &demoCustodial{wallet: w.ID}
	for _, a := range []struct {
		name string
		id   *string
	}{{"alice", &c.alice}, {"bob", &c.bob}} {
		var acc struct{ ID string }
		if err := demoPost(ctx, url+"/v1/custody/wallets/"+w.ID+"/accounts", key, map[string]any{"name": a.name}, &acc); err != nil {
			return nil, err
		}
		*a.id = acc.ID
	}
	var addr struct{ Address string }
	if err := demoPost(ctx, url+"/v1/custody/wallets/"+w.ID+"/accounts/"+c.alice+"/addresses", key, nil, &addr); err != nil {
		return nil, err
	}
	c.address = addr.Address
	params, err := chain.Lookup(chain.BTC, chain.Regtest)
	if err != nil {
		return nil, err
	}
	if c.script, err = params.AddressScript(addr.Address); err != nil {
		return nil, err
	}
	// Somewhere outside Coffer to withdraw to.
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		return nil, err
	}
	payout, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(priv.PubKey().SerializeCompressed()), &chaincfg.RegressionNetParams)
	if err != nil {
		return nil, err
	}
	c.payout = payout.EncodeAddress()
	return c, nil
}

// demoDescriptor makes a fresh random P2PKH watch-only wallet and returns
// its descriptor.
func demoDescriptor() (string, error) {
	seed, err := hdkeychain.GenerateSeed(hdkeychain.RecommendedSeedLen)
	if err != nil {
		return "", err
	}
	k, err := hdkeychain.NewMaster(seed, &chaincfg.RegressionNetParams)
	if err != nil {
		return "", err
	}
	for _, step := range []uint32{44, 1, 0} {
		if k, err = k.Derive(hdkeychain.HardenedKeyStart + step); err != nil {
			return "", err
		}
	}
	pub, err := k.Neuter()
	if err != nil {
		return "", err
	}
	return "pkh(" + pub.String() + "/<0;1>/*)", nil
}

// demoPost posts body as JSON with the API key and decodes the answer.
func demoPost(ctx context.Context, url, key string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	if body == nil {
		b = nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, answer)
	}
	return json.Unmarshal(answer, out)
}

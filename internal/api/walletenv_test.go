package api

// A live environment for wallet tests: a regtest btcd shared by the package,
// and per test a database, follower, wallet service and API server. The
// signer below holds private keys and signs PSBTs with btcd's psbt and
// txscript packages only; it shares no code with Coffer's builder.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/follow"
	"github.com/coffer/coffer/internal/regtest"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/wallet"
	"github.com/coffer/coffer/internal/wshub"
)

var (
	sharedNodeOnce sync.Once
	sharedNode     *regtest.Node
	sharedNodeErr  error
)

// walletNode returns the package's btcd, started once, with segwit active
// (btcd regtest activates it at height 432).
func walletNode(t *testing.T) *regtest.Node {
	t.Helper()
	if testing.Short() {
		t.Skip("wallet end-to-end tests need a regtest btcd; skipped in -short mode")
	}
	sharedNodeOnce.Do(func() {
		sharedNode, sharedNodeErr = regtest.Start(context.Background(), regtest.Options{Kind: regtest.KindBtcd, PreMine: 440})
	})
	if sharedNodeErr != nil {
		t.Fatalf("starting btcd: %v", sharedNodeErr)
	}
	return sharedNode
}

// walletEnv is Coffer's wallet stack over one database, served over HTTP.
type walletEnv struct {
	t       *testing.T
	node    *regtest.Node
	db      *store.DB
	wallets *wallet.Service
	srv     *Server
	ts      *httptest.Server
	key     string // admin API key
}

func newWalletEnv(t *testing.T, db *store.DB) *walletEnv {
	t.Helper()
	n := walletNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	log := events.NewLog(db)
	f := follow.New(db, n.Client(), n.Chain(), log, follow.Config{PollInterval: 50 * time.Millisecond}, logger)
	ws := wallet.New(db, n.Chain(), log, n.Client(), f, wallet.Config{ProposalTTL: time.Hour}, logger)
	f.SetWatcher(ws)
	hub := wshub.New(log, db, wshub.Config{}, logger)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); f.Run(ctx) }()
	go func() { defer wg.Done(); ws.Run(ctx) }()
	go func() { defer wg.Done(); hub.Run(ctx) }()
	srv := NewServer(Deps{DB: db, Events: log, Node: n.Client(), Chain: f.Status, Wallets: ws, Hub: hub, Logger: logger,
		Coin: "btc", Network: "regtest"})
	ts := httptest.NewServer(srv)
	key, _, err := auth.CreateAPIKey(ctx, db, auth.ScopeAdmin, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ts.Close()
		cancel()
		wg.Wait()
	})
	e := &walletEnv{t: t, node: n, db: db, wallets: ws, srv: srv, ts: ts, key: key}
	e.waitTip()
	return e
}

// call sends a request with the admin key (credential "", or "-" for none,
// or the given bearer credential), checks the answer against the OpenAPI
// document (wiDo) and decodes a 2xx body into out.
func (e *walletEnv) call(method, path, credential string, body, out any) (int, []byte) {
	e.t.Helper()
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			e.t.Fatal(err)
		}
	}
	switch credential {
	case "":
		credential = e.key
	case "-":
		credential = ""
	}
	r := wiDo(e, method, path, bearer(credential), raw)
	if out != nil && r.status < 300 {
		if err := json.Unmarshal(r.body, out); err != nil {
			e.t.Fatalf("%s %s: decoding %s: %v", method, path, r.body, err)
		}
	}
	return r.status, r.body
}

// must is call that fails the test unless the status is want.
func (e *walletEnv) must(want int, method, path string, body, out any) {
	e.t.Helper()
	if code, b := e.call(method, path, "", body, out); code != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, code, want, b)
	}
}

// waitTip waits until the follower has applied the node's tip.
func (e *walletEnv) waitTip() {
	e.t.Helper()
	want, err := e.node.Client().GetBlockCount(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	e.eventually(60*time.Second, "the follower to reach the node's tip", func() (bool, string) {
		var h int64 = -1
		e.db.QueryRowContext(context.Background(), `SELECT height FROM chain_cursor WHERE id = 1`).Scan(&h)
		return h >= want, fmt.Sprintf("at %d, node at %d", h, want)
	})
}

func (e *walletEnv) eventually(timeout time.Duration, what string, cond func() (bool, string)) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mine mines count blocks and waits for the follower to apply them.
func (e *walletEnv) mine(count int) {
	e.t.Helper()
	if _, err := e.node.Mine(context.Background(), count); err != nil {
		e.t.Fatal(err)
	}
	e.waitTip()
}

// register registers a wallet and waits until it is ready.
func (e *walletEnv) register(req map[string]any) *wallet.Wallet {
	e.t.Helper()
	var w wallet.Wallet
	e.must(http.StatusCreated, "POST", "/v1/wallets", req, &w)
	e.eventually(60*time.Second, "wallet "+w.ID+" to be ready", func() (bool, string) {
		e.must(http.StatusOK, "GET", "/v1/wallets/"+w.ID, nil, &w)
		return w.Status == wallet.StatusReady, w.Status + " " + w.Error
	})
	return &w
}

func (e *walletEnv) balance(id string) wallet.Balance {
	e.t.Helper()
	var b wallet.Balance
	e.must(http.StatusOK, "GET", "/v1/wallets/"+id+"/balance", nil, &b)
	return b
}

func (e *walletEnv) history(id string) []wallet.Tx {
	e.t.Helper()
	var all []wallet.Tx
	cursor := ""
	for {
		var page wallet.TxPage
		e.must(http.StatusOK, "GET", "/v1/wallets/"+id+"/transactions?limit=3&cursor="+cursor, nil, &page)
		all = append(all, page.Transactions...)
		if page.Next == "" {
			return all
		}
		cursor = page.Next
	}
}

// fund pays script from the node's harness wallet.
func (e *walletEnv) fund(script []byte, amount int64) string {
	e.t.Helper()
	txid, _, err := e.node.Fund(context.Background(), script, amount)
	if err != nil {
		e.t.Fatal(err)
	}
	return txid
}

// signer is an independent HD signer: a BIP32 master key held in the test.
type signer struct {
	master *hdkeychain.ExtendedKey
	fp     uint32 // master fingerprint as btcd's psbt stores it
	fpHex  string
	net    *chaincfg.Params
}

func newSigner(t *testing.T, seedByte byte) *signer {
	t.Helper()
	net := &chaincfg.RegressionNetParams
	seed := bytes.Repeat([]byte{seedByte}, 32)
	m, err := hdkeychain.NewMaster(seed, net)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := m.ECPubKey()
	if err != nil {
		t.Fatal(err)
	}
	fp := btcutil.Hash160(pub.SerializeCompressed())[:4]
	return &signer{master: m, fp: binary.LittleEndian.Uint32(fp), fpHex: fmt.Sprintf("%x", fp), net: net}
}

const h = hdkeychain.HardenedKeyStart

func (s *signer) derive(t *testing.T, path ...uint32) *hdkeychain.ExtendedKey {
	t.Helper()
	k := s.master
	for _, step := range path {
		var err error
		if k, err = k.Derive(step); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

// account returns "[fp/a'/b'/c']tpub…" for the account at path.
func (s *signer) account(t *testing.T, path ...uint32) string {
	t.Helper()
	acct, err := s.derive(t, path...).Neuter()
	if err != nil {
		t.Fatal(err)
	}
	var origin strings.Builder
	origin.WriteString(s.fpHex)
	for _, step := range path {
		fmt.Fprintf(&origin, "/%dh", step-h)
	}
	return "[" + origin.String() + "]" + acct.String()
}

// pubKey is the public key at path.
func (s *signer) pubKey(t *testing.T, path ...uint32) *btcec.PublicKey {
	t.Helper()
	pub, err := s.derive(t, path...).ECPubKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// wpkhScript is the P2WPKH script of the key at path.
func (s *signer) wpkhScript(t *testing.T, path ...uint32) []byte {
	t.Helper()
	addr, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(s.pubKey(t, path...).SerializeCompressed()), s.net)
	if err != nil {
		t.Fatal(err)
	}
	script, err := txscript.PayToAddrScript(addr)
	if err != nil {
		t.Fatal(err)
	}
	return script
}

// sign adds this signer's signature to every segwit v0 input of the PSBT
// that names one of its keys in a BIP32 derivation.
func (s *signer) sign(t *testing.T, b64 string) string {
	t.Helper()
	p, err := psbt.NewFromRawBytes(strings.NewReader(b64), true)
	if err != nil {
		t.Fatalf("signer: parsing PSBT: %v", err)
	}
	prevOuts := txscript.NewMultiPrevOutFetcher(nil)
	for i, in := range p.UnsignedTx.TxIn {
		if p.Inputs[i].WitnessUtxo == nil {
			t.Fatalf("signer: input %d has no witness UTXO", i)
		}
		prevOuts.AddPrevOut(in.PreviousOutPoint, p.Inputs[i].WitnessUtxo)
	}
	hashes := txscript.NewTxSigHashes(p.UnsignedTx, prevOuts)
	u, err := psbt.NewUpdater(p)
	if err != nil {
		t.Fatal(err)
	}
	signed := 0
	for i := range p.Inputs {
		in := p.Inputs[i]
		for _, d := range in.Bip32Derivation {
			if d.MasterKeyFingerprint != s.fp {
				continue
			}
			k := s.derive(t, d.Bip32Path...)
			priv, err := k.ECPrivKey()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(priv.PubKey().SerializeCompressed(), d.PubKey) {
				t.Fatalf("signer: input %d: derivation %v gives another key than the PSBT names", i, d.Bip32Path)
			}
			script := in.WitnessScript
			if script == nil { // P2WPKH signs against the P2PKH script of the key
				pkh, _ := btcutil.NewAddressPubKeyHash(btcutil.Hash160(d.PubKey), s.net)
				script, _ = txscript.PayToAddrScript(pkh)
			}
			sig, err := txscript.RawTxInWitnessSignature(p.UnsignedTx, hashes, i, in.WitnessUtxo.Value, script, txscript.SigHashAll, priv)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := u.Sign(i, sig, d.PubKey, in.RedeemScript, in.WitnessScript); err != nil {
				t.Fatalf("signer: adding signature to input %d: %v", i, err)
			}
			signed++
		}
	}
	if signed == 0 {
		t.Fatal("signer: no input names this signer's keys")
	}
	var buf bytes.Buffer
	if err := p.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

// nodeTx fetches a transaction from the node.
func nodeTx(t *testing.T, n *regtest.Node, txid string) *wire.MsgTx {
	t.Helper()
	raw, err := n.Client().GetRawTransaction(context.Background(), txid)
	if err != nil {
		t.Fatalf("node does not know %s: %v", txid, err)
	}
	tx, err := n.Chain().ParseTx(raw)
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

package regtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/node"
)

// FeeRate is what every harness transaction pays, in satoshis per virtual
// byte of a conservative size estimate. Both btcd and Litecoin Core relay
// from 1 sat/vB, so 2 leaves room without making fees noticeable.
const FeeRate = 2

// changeDust is the smallest change output worth creating. Litecoin Core's
// dust limit is 10x Bitcoin's (5460 litoshi for P2PKH), so stay above both.
const changeDust = 10_000

// Key is a secp256k1 key held by the harness. Outputs the harness creates
// for its scripts are tracked, so SendFrom can spend them.
type Key struct {
	PrivKey *btcec.PrivateKey
	PubKey  *btcec.PublicKey
	net     *chaincfg.Params
	own     bool // harness funds (mining, change) rather than a test's key
}

func (k *Key) pkh() *btcutil.AddressPubKeyHash {
	a, err := btcutil.NewAddressPubKeyHash(btcutil.Hash160(k.PubKey.SerializeCompressed()), k.net)
	if err != nil {
		panic(err) // a 20-byte hash is always valid
	}
	return a
}

func (k *Key) wpkh() *btcutil.AddressWitnessPubKeyHash {
	a, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(k.PubKey.SerializeCompressed()), k.net)
	if err != nil {
		panic(err)
	}
	return a
}

// PkScript is the key's P2PKH output script.
func (k *Key) PkScript() []byte { return mustScript(k.pkh()) }

// WitnessPkScript is the key's P2WPKH output script. Spending it needs
// segwit active (btcd regtest: from block 432; litecoind: always).
func (k *Key) WitnessPkScript() []byte { return mustScript(k.wpkh()) }

// Address is the key's P2PKH address on the node's network.
func (k *Key) Address() string { return k.pkh().EncodeAddress() }

// WitnessAddress is the key's P2WPKH (bech32) address on the node's network.
func (k *Key) WitnessAddress() string { return k.wpkh().EncodeAddress() }

// WIF is the private key in wallet import format.
func (k *Key) WIF() string {
	w, err := btcutil.NewWIF(k.PrivKey, k.net, true)
	if err != nil {
		panic(err)
	}
	return w.String()
}

func mustScript(a btcutil.Address) []byte {
	s, err := txscript.PayToAddrScript(a)
	if err != nil {
		panic(err)
	}
	return s
}

// Output is one payment: an output script and an amount in satoshis.
type Output struct {
	PkScript []byte
	Amount   int64
}

type utxo struct {
	op       wire.OutPoint
	amount   int64
	pkScript []byte
	key      *Key
	coinbase bool
	seq      uint64 // creation order: older coinbases mature first
}

// wallet tracks outputs the harness can sign for. It is only a cache of
// candidates: every output is checked with gettxout before it is spent, so
// reorgs and mined outside spends cannot make it build invalid transactions.
// (btcd's gettxout misses spends still in the mempool; Core's does not.)
type wallet struct {
	mu        sync.Mutex
	net       *chaincfg.Params
	keyFile   string
	keys      map[string]*Key // by output script (P2PKH and P2WPKH)
	own       []*Key
	btcdMiner *Key // btcd's --miningaddr, fixed for the process
	miner     *Key // where generatetoaddress pays (litecoind)
	utxos     map[wire.OutPoint]*utxo
	pending   map[wire.OutPoint]bool // spent by harness txs not yet mined
	seq       uint64
}

// init loads the harness keys kept in dir (so a persistent demo chain's
// coinbases stay spendable) or creates the first one.
func (w *wallet) init(dir string, net *chaincfg.Params) error {
	w.net = net
	w.keyFile = filepath.Join(dir, "harness-keys")
	w.keys = map[string]*Key{}
	w.reset()
	f, err := os.Open(w.keyFile)
	if err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			b, err := hex.DecodeString(line)
			if err != nil || len(b) != 32 {
				f.Close()
				return fmt.Errorf("regtest: bad key in %s", w.keyFile)
			}
			priv, pub := btcec.PrivKeyFromBytes(b)
			w.addKey(&Key{PrivKey: priv, PubKey: pub, net: net, own: true})
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if len(w.own) == 0 {
		if _, err := w.newOwnKey(); err != nil {
			return err
		}
	}
	w.btcdMiner = w.own[0]
	return nil
}

// reset forgets all outputs, before a rescan.
func (w *wallet) reset() {
	w.utxos = map[wire.OutPoint]*utxo{}
	w.pending = map[wire.OutPoint]bool{}
}

func (w *wallet) addKey(k *Key) {
	w.keys[string(k.PkScript())] = k
	w.keys[string(k.WitnessPkScript())] = k
	if k.own {
		w.own = append(w.own, k)
		w.miner = k
	}
}

// newOwnKey makes a harness key, saves it and makes it the mining key.
func (w *wallet) newOwnKey() (*Key, error) {
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(w.keyFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("regtest: saving harness key: %w", err)
	}
	_, err = fmt.Fprintln(f, hex.EncodeToString(priv.Serialize()))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("regtest: saving harness key: %w", err)
	}
	k := &Key{PrivKey: priv, PubKey: priv.PubKey(), net: w.net, own: true}
	w.addKey(k)
	return k, nil
}

func (w *wallet) add(op wire.OutPoint, out *wire.TxOut, coinbase bool) bool {
	k := w.keys[string(out.PkScript)]
	if k == nil {
		return false
	}
	w.seq++
	w.utxos[op] = &utxo{op: op, amount: out.Value, pkScript: out.PkScript, key: k, coinbase: coinbase, seq: w.seq}
	return true
}

// rescan rebuilds the candidate set from a chain mined in an earlier run.
func (w *wallet) rescan(ctx context.Context, n *Node) error {
	height, err := n.client.GetBlockCount(ctx)
	if err != nil || height == 0 {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for h := int64(1); h <= height; h++ {
		hash, err := n.client.GetBlockHash(ctx, h)
		if err != nil {
			return err
		}
		if err := n.addBlock(ctx, hash); err != nil {
			return err
		}
	}
	n.logf("regtest: rescanned %d blocks, %d spendable candidates", height, len(w.utxos))
	return nil
}

// addBlock tracks a block's outputs that pay harness keys, whoever made
// them, and forgets the outputs its transactions spend.
func (n *Node) addBlock(ctx context.Context, hash string) error {
	raw, err := n.client.GetRawBlock(ctx, hash)
	if err != nil {
		return err
	}
	blk, err := n.chain.ParseBlock(raw)
	if err != nil {
		return fmt.Errorf("regtest: block %s: %w", hash, err)
	}
	for i, tx := range blk.Transactions {
		n.w.addTx(tx, i == 0)
	}
	return nil
}

// addTx records tx's effect on the harness's outputs.
func (w *wallet) addTx(tx *wire.MsgTx, coinbase bool) int {
	if !coinbase {
		for _, in := range tx.TxIn {
			delete(w.utxos, in.PreviousOutPoint)
			delete(w.pending, in.PreviousOutPoint)
		}
	}
	h := tx.TxHash()
	found := 0
	for i, out := range tx.TxOut {
		op := wire.OutPoint{Hash: h, Index: uint32(i)}
		// Already spent by a harness transaction still in the mempool.
		if w.pending[op] {
			continue
		}
		if w.add(op, out, coinbase) {
			found++
		}
	}
	return found
}

// NewKey makes a key whose outputs the harness tracks when it pays them, so
// tests can later spend from it with SendFrom.
func (n *Node) NewKey() *Key {
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		panic(err) // crypto/rand failing is not recoverable
	}
	return n.AddKey(priv)
}

// AddKey registers an existing private key (e.g. one a test derived from a
// wallet seed) so outputs the harness creates or TrackTx finds for it can
// be spent with SendFrom.
func (n *Node) AddKey(priv *btcec.PrivateKey) *Key {
	k := &Key{PrivKey: priv, PubKey: priv.PubKey(), net: n.net}
	n.w.mu.Lock()
	defer n.w.mu.Unlock()
	if old := n.w.keys[string(k.PkScript())]; old != nil {
		return old
	}
	n.w.addKey(k)
	return k
}

// MinerKey is the key the next blocks' coinbase pays.
func (n *Node) MinerKey() *Key {
	n.w.mu.Lock()
	defer n.w.mu.Unlock()
	if n.Kind == KindBtcd {
		return n.w.btcdMiner
	}
	return n.w.miner
}

// Fund pays amount satoshis to pkScript from harness funds. The payment is
// output 0 of the returned transaction; it is in the mempool, not mined.
func (n *Node) Fund(ctx context.Context, pkScript []byte, amount int64) (txid string, vout uint32, err error) {
	tx, err := n.send(ctx, nil, []Output{{PkScript: pkScript, Amount: amount}})
	if err != nil {
		return "", 0, err
	}
	return tx.TxHash().String(), 0, nil
}

// SendMany pays several outputs (in order, change last) from harness funds.
func (n *Node) SendMany(ctx context.Context, outputs []Output) (txid string, err error) {
	tx, err := n.send(ctx, nil, outputs)
	if err != nil {
		return "", err
	}
	return tx.TxHash().String(), nil
}

// SendFrom pays outputs by spending outputs the harness tracks for key; the
// fee comes from them too and change returns to the script of the first
// input spent.
func (n *Node) SendFrom(ctx context.Context, key *Key, outputs []Output) (txid string, err error) {
	if key == nil {
		return "", errors.New("regtest: SendFrom: nil key")
	}
	tx, err := n.send(ctx, key, outputs)
	if err != nil {
		return "", err
	}
	return tx.TxHash().String(), nil
}

// TrackTx records the outputs of a transaction (mempool or chain) that pay
// harness keys, e.g. a payment that the code under test made to a key from
// NewKey, before it is mined (Mine picks up mined ones by itself). It
// returns how many outputs it found.
func (n *Node) TrackTx(ctx context.Context, txid string) (int, error) {
	raw, err := n.client.GetRawTransaction(ctx, txid)
	if err != nil {
		return 0, err
	}
	tx, err := n.chain.ParseTx(raw)
	if err != nil {
		return 0, fmt.Errorf("regtest: tx %s: %w", txid, err)
	}
	n.w.mu.Lock()
	defer n.w.mu.Unlock()
	coinbase := len(tx.TxIn) == 1 && tx.TxIn[0].PreviousOutPoint.Index == wire.MaxPrevOutIndex
	return n.w.addTx(tx, coinbase), nil
}

// send builds, signs and broadcasts a transaction paying outs from the
// harness's own outputs (from == nil) or from one key's.
func (n *Node) send(ctx context.Context, from *Key, outs []Output) (*wire.MsgTx, error) {
	var target int64
	for _, o := range outs {
		if o.Amount < 0 || len(o.PkScript) == 0 {
			return nil, fmt.Errorf("regtest: bad output (amount %d, script %x)", o.Amount, o.PkScript)
		}
		target += o.Amount
	}
	if len(outs) == 0 {
		return nil, errors.New("regtest: no outputs")
	}

	n.w.mu.Lock()
	defer n.w.mu.Unlock()
	var cands []*utxo
	for _, u := range n.w.utxos {
		if (from == nil && u.key.own) || (from != nil && u.key == from) {
			cands = append(cands, u)
		}
	}
	// Confirmed coinbases first, oldest first: they never chain unconfirmed
	// transactions (Litecoin Core limits chains to 25).
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].coinbase != cands[j].coinbase {
			return cands[i].coinbase
		}
		return cands[i].seq < cands[j].seq
	})

	var picked []*utxo
	var in, fee int64
	immatureSeen := false
	for _, u := range cands {
		if u.coinbase && immatureSeen {
			continue // later coinbases are younger still
		}
		out, err := n.client.GetTxOut(ctx, u.op.Hash.String(), u.op.Index, true)
		if err != nil {
			return nil, err
		}
		if out == nil { // spent, or gone with a reorg
			delete(n.w.utxos, u.op)
			continue
		}
		if u.coinbase && out.Confirmations < int64(n.net.CoinbaseMaturity) {
			immatureSeen = true
			continue
		}
		picked = append(picked, u)
		in += u.amount
		fee = FeeRate * estimateVSize(picked, outs, true)
		if in >= target+fee {
			break
		}
	}
	if in < target+fee {
		who := "harness"
		if from != nil {
			who = "key " + from.Address()
		}
		return nil, fmt.Errorf("regtest: %s has %d spendable sat, need %d + fee %d (mine more blocks?)", who, in, target, fee)
	}

	tx := wire.NewMsgTx(2)
	prev := txscript.NewMultiPrevOutFetcher(nil)
	for _, u := range picked {
		// Sequence below 0xfffffffe signals BIP125, so tests can replace.
		tx.AddTxIn(&wire.TxIn{PreviousOutPoint: u.op, Sequence: wire.MaxTxInSequenceNum - 2})
		prev.AddPrevOut(u.op, wire.NewTxOut(u.amount, u.pkScript))
	}
	for _, o := range outs {
		tx.AddTxOut(wire.NewTxOut(o.Amount, o.PkScript))
	}
	if change := in - target - fee; change >= changeDust {
		changeScript := picked[0].pkScript
		if from == nil {
			changeScript = n.w.own[0].PkScript()
		}
		tx.AddTxOut(wire.NewTxOut(change, changeScript))
	}

	hashes := txscript.NewTxSigHashes(tx, prev)
	for i, u := range picked {
		var err error
		switch {
		case txscript.IsPayToWitnessPubKeyHash(u.pkScript):
			tx.TxIn[i].Witness, err = txscript.WitnessSignature(tx, hashes, i, u.amount, u.pkScript, txscript.SigHashAll, u.key.PrivKey, true)
		case txscript.IsPayToPubKeyHash(u.pkScript):
			tx.TxIn[i].SignatureScript, err = txscript.SignatureScript(tx, i, u.pkScript, txscript.SigHashAll, u.key.PrivKey, true)
		default:
			err = fmt.Errorf("cannot sign script %x", u.pkScript)
		}
		if err != nil {
			return nil, fmt.Errorf("regtest: signing input %d: %w", i, err)
		}
		// Verify locally: a signing bug then reads as one, not as a node
		// rejection.
		vm, err := txscript.NewEngine(u.pkScript, tx, i, txscript.StandardVerifyFlags, nil, hashes, u.amount, prev)
		if err == nil {
			err = vm.Execute()
		}
		if err != nil {
			return nil, fmt.Errorf("regtest: input %d does not verify: %w", i, err)
		}
	}

	var buf bytes.Buffer
	if err := tx.Serialize(&buf); err != nil {
		return nil, err
	}
	if _, err := n.client.SendRawTransaction(ctx, buf.Bytes()); err != nil {
		return nil, err
	}
	n.w.addTx(tx, false)
	for _, u := range picked {
		n.w.pending[u.op] = true
	}
	return tx, nil
}

// estimateVSize over-estimates the virtual size of a transaction spending
// ins to outs (plus a P2PKH change output when change is set), using the
// largest DER signature, so the real fee rate never falls below FeeRate.
func estimateVSize(ins []*utxo, outs []Output, change bool) int64 {
	base := int64(4 + 4 + 3 + 3) // version, locktime, in and out counts
	var witness int64
	for _, u := range ins {
		base += 32 + 4 + 4 // outpoint, sequence
		if txscript.IsPayToWitnessPubKeyHash(u.pkScript) {
			base++                         // empty scriptSig
			witness += 1 + 1 + 73 + 1 + 33 // items, sig, pubkey
		} else {
			base += 1 + 1 + 73 + 1 + 33
		}
	}
	for _, o := range outs {
		base += 8 + 3 + int64(len(o.PkScript))
	}
	if change {
		base += 8 + 1 + 25
	}
	if witness > 0 {
		witness += 2 // marker and flag
	}
	return base + (witness+3)/4
}

// Balance sums the harness's candidate outputs for key (nil: the harness's
// own funds), immature coinbases included. It does not ask the node.
func (n *Node) Balance(key *Key) int64 {
	n.w.mu.Lock()
	defer n.w.mu.Unlock()
	var sum int64
	for _, u := range n.w.utxos {
		if (key == nil && u.key.own) || u.key == key {
			sum += u.amount
		}
	}
	return sum
}

// Mine mines count blocks paying the coinbase to the harness and returns
// their hashes. On litecoind it also makes the MWEB peg-in that the first
// MWEB block (height 432 on regtest) cannot be mined without.
func (n *Node) Mine(ctx context.Context, count int) ([]string, error) {
	n.w.mu.Lock()
	defer n.w.mu.Unlock()
	var all []string
	pegged := false
	for len(all) < count {
		chunk := min(count-len(all), 100)
		var hashes []string
		var err error
		if n.Kind == KindBtcd {
			err = n.client.Call(ctx, "generate", &hashes, chunk)
		} else {
			var before int64
			before, err = n.client.GetBlockCount(ctx)
			if err == nil {
				err = n.client.Call(ctx, "generatetoaddress", &hashes, chunk, n.w.miner.Address())
			}
			if err != nil && !pegged && isMWEBWithoutPegIn(err) {
				pegged = true
				hashes, err = n.hashesAbove(ctx, before)
				if err == nil {
					err = n.pegIn(ctx)
				}
			}
		}
		for _, h := range hashes {
			if cerr := n.addBlock(ctx, h); cerr != nil && err == nil {
				err = cerr
			}
		}
		all = append(all, hashes...)
		if err != nil {
			return all, err
		}
	}
	return all, nil
}

// isMWEBWithoutPegIn recognises Litecoin Core refusing the first MWEB
// block: its HogEx would have no inputs unless some transaction pegs in.
func isMWEBWithoutPegIn(err error) bool {
	var re *node.RPCError
	return errors.As(err, &re) && strings.Contains(re.Message, "bad-txns-vin-empty")
}

func (n *Node) hashesAbove(ctx context.Context, height int64) ([]string, error) {
	tip, err := n.client.GetBlockCount(ctx)
	if err != nil {
		return nil, err
	}
	var hs []string
	for h := height + 1; h <= tip; h++ {
		hash, err := n.client.GetBlockHash(ctx, h)
		if err != nil {
			return nil, err
		}
		hs = append(hs, hash)
	}
	return hs, nil
}

// pegIn moves 1 LTC into MWEB through litecoind's own wallet, since building
// MWEB outputs needs its confidential-transaction machinery. The wallet
// imports the harness keys to fund it from harness coinbases; the harness
// sees those coins spent when the block is mined.
func (n *Node) pegIn(ctx context.Context) error {
	const name = "coffer-harness"
	cfg := n.clientConfig(2 * time.Minute)
	wc, err := node.New(node.Config{URL: cfg.URL + "/wallet/" + name, User: cfg.User, Password: cfg.Password, CookieFile: cfg.CookieFile, Timeout: cfg.Timeout})
	if err != nil {
		return err
	}
	if err := n.client.Call(ctx, "loadwallet", nil, name); err != nil {
		if cerr := n.client.Call(ctx, "createwallet", nil, name); cerr != nil &&
			!strings.Contains(err.Error(), "already loaded") {
			return fmt.Errorf("regtest: mweb peg-in wallet: %v; %w", err, cerr)
		}
	}
	for _, k := range n.w.own {
		if err := wc.Call(ctx, "importprivkey", nil, k.WIF(), "", false); err != nil {
			return fmt.Errorf("regtest: mweb peg-in: %w", err)
		}
	}
	if err := wc.Call(ctx, "rescanblockchain", nil); err != nil {
		return fmt.Errorf("regtest: mweb peg-in: %w", err)
	}
	var addr, txid string
	if err := wc.Call(ctx, "getnewaddress", &addr, "", "mweb"); err != nil {
		return fmt.Errorf("regtest: mweb peg-in: %w", err)
	}
	if err := wc.Call(ctx, "sendtoaddress", &txid, addr, 1); err != nil {
		return fmt.Errorf("regtest: mweb peg-in: %w", err)
	}
	n.logf("regtest: pegged 1 LTC into MWEB (%s) to activate it", txid)
	return nil
}

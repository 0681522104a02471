package wallet_test

// Benchmarks of the wallet service's read paths on large synthetic wallets
// written straight into the database (a regtest chain with that much
// history would take hours to build). They run on SQLite, and on PostgreSQL
// when COFFER_TEST_POSTGRES is set. `coffer bench wallet` measures the same
// and history recovery on a real node.
//
//	go test ./internal/wallet -run X -bench . -benchtime 5x

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/descriptor"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/wallet"
)

// BenchmarkUTXOs200k lists the unspent outputs of a wallet holding 200,000
// of them (the goal is under a second).
func BenchmarkUTXOs200k(b *testing.B) {
	if testing.Short() {
		b.Skip("writes a wallet with 200,000 UTXOs (about half a minute per database); skipped in -short mode")
	}
	for _, engine := range storetest.Engines {
		b.Run(engine, func(b *testing.B) {
			ctx := context.Background()
			db := storetest.Open(b, storetest.NewDSN(b, engine))
			svc, sw := benchWallet(b, db, 1, 200_000, 0)
			bal, err := svc.Balance(ctx, sw.id)
			if err != nil || int64(bal.Confirmed) != sw.balance {
				b.Fatalf("balance %+v (%v), want %d confirmed", bal, err, sw.balance)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				us, err := svc.UTXOs(ctx, sw.id, wallet.UTXOFilter{})
				if err != nil {
					b.Fatal(err)
				}
				if len(us) != sw.utxos {
					b.Fatalf("%d UTXOs, want %d", len(us), sw.utxos)
				}
			}
		})
	}
}

// BenchmarkHistoryPage100k fetches 50-transaction history pages of a
// wallet with 100,000 transactions: the newest page, and pages at random
// depths (keyset cursors collected by walking the whole history first). It
// reports the p50 and p99 latency; the goal is a p50 under 20 ms.
func BenchmarkHistoryPage100k(b *testing.B) {
	if testing.Short() {
		b.Skip("writes a wallet with 100,000 transactions (about 10 s per database); skipped in -short mode")
	}
	const pageSize = 50
	for _, engine := range storetest.Engines {
		b.Run(engine, func(b *testing.B) {
			ctx := context.Background()
			db := storetest.Open(b, storetest.NewDSN(b, engine))
			svc, sw := benchWallet(b, db, 2, 0, 100_000)
			var cursors []string
			seen := 0
			for cursor := ""; ; {
				page, err := svc.Transactions(ctx, sw.id, cursor, pageSize, false)
				if err != nil {
					b.Fatal(err)
				}
				seen += len(page.Transactions)
				if cursor = page.Next; cursor == "" {
					break
				}
				cursors = append(cursors, cursor)
			}
			if seen != sw.txs {
				b.Fatalf("walked %d transactions, want %d", seen, sw.txs)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			rng.Shuffle(len(cursors), func(i, j int) { cursors[i], cursors[j] = cursors[j], cursors[i] })
			for _, c := range []struct {
				name    string
				cursors []string
			}{{"newest", []string{""}}, {"random", cursors}} {
				b.Run(c.name, func(b *testing.B) {
					var lat []time.Duration
					b.ResetTimer()
					for i := 0; b.Loop(); i++ {
						t0 := time.Now()
						page, err := svc.Transactions(ctx, sw.id, c.cursors[i%len(c.cursors)], pageSize, false)
						lat = append(lat, time.Since(t0))
						if err != nil {
							b.Fatal(err)
						}
						if len(page.Transactions) == 0 {
							b.Fatal("an empty page")
						}
					}
					slices.Sort(lat)
					at := func(q float64) float64 {
						return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))]) / float64(time.Millisecond)
					}
					b.ReportMetric(at(0.5), "p50-ms")
					b.ReportMetric(at(0.99), "p99-ms")
				})
			}
		})
	}
}

// benchSynth is a synthetic wallet in the database.
type benchSynth struct {
	id      string
	txs     int   // transactions in its history
	utxos   int   // unspent outputs
	balance int64 // their sum
}

// benchWallet registers the BIP84 account's wallet and writes its history
// straight into db (the timer is stopped meanwhile): confirmed
// transactions, one to six per block, each paying one output to one of
// 3,000 of its addresses (2,400 receive, 600 change); every tenth
// transaction spends the wallet's output of the ninth before it. It stops
// when the wallet has wantUTXOs unspent outputs, or wantTxs transactions.
// The transactions are serialized for real and have their own txids.
func benchWallet(b *testing.B, db *store.DB, account uint32, wantUTXOs, wantTxs int) (*wallet.Service, *benchSynth) {
	b.Helper()
	b.StopTimer()
	defer b.StartTimer()
	ctx := context.Background()
	params, err := chain.Lookup(chain.BTC, chain.Regtest)
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	svc := wallet.New(db, params, events.NewLog(db), nil, nil, wallet.Config{}, logger)

	// The account's keys from hdkeychain; the wallet's own derivations
	// (descriptor package) must agree with them.
	seed := sha256.Sum256([]byte("coffer wallet benchmark"))
	master, err := hdkeychain.NewMaster(seed[:], &chaincfg.RegressionNetParams)
	if err != nil {
		b.Fatal(err)
	}
	mpub, err := master.ECPubKey()
	if err != nil {
		b.Fatal(err)
	}
	k := master
	for _, step := range []uint32{84, 1, account} {
		if k, err = k.Derive(hdkeychain.HardenedKeyStart + step); err != nil {
			b.Fatal(err)
		}
	}
	acct, err := k.Neuter()
	if err != nil {
		b.Fatal(err)
	}
	desc := fmt.Sprintf("wpkh([%x/84h/1h/%dh]%s/<0;1>/*)", btcutil.Hash160(mpub.SerializeCompressed())[:4], account, acct)
	parsed, err := descriptor.Parse(desc, params)
	if err != nil {
		b.Fatal(err)
	}
	recv, chg, err := descriptor.Pair(parsed)
	if err != nil {
		b.Fatal(err)
	}
	zero := int64(0)
	w, _, err := svc.Register(ctx, wallet.RegisterRequest{Descriptor: desc, BirthdayHeight: &zero})
	if err != nil {
		b.Fatal(err)
	}
	sw := &benchSynth{id: w.ID}
	now := time.Now().Unix()
	var scripts [][]byte
	var addrRows, trackRows [][]any
	for branch, count := range []int{2400, 600} {
		bk, err := acct.Derive(uint32(branch))
		if err != nil {
			b.Fatal(err)
		}
		d := []*descriptor.Descriptor{recv, chg}[branch]
		for i := range uint32(count) {
			ck, err := bk.Derive(i)
			if err != nil {
				b.Fatal(err)
			}
			pub, err := ck.ECPubKey()
			if err != nil {
				b.Fatal(err)
			}
			script := append([]byte{0x00, 0x14}, btcutil.Hash160(pub.SerializeCompressed())...)
			if i < 20 { // the ones Register derived
				if theirs, err := d.Script(i); err != nil || !bytes.Equal(theirs, script) {
					b.Fatalf("descriptor derives %x at %d/%d, hdkeychain %x (%v)", theirs, branch, i, script, err)
				}
			}
			addr, ok := params.ScriptAddress(script)
			if !ok {
				b.Fatalf("no address for %x", script)
			}
			scripts = append(scripts, script)
			addrRows = append(addrRows, []any{w.ID, branch, int64(i), script, addr, true})
			trackRows = append(trackRows, []any{script, "wallet:" + w.ID, now})
		}
	}
	err = db.InTx(ctx, func(tx *store.Tx) error {
		if err := benchInsert(ctx, tx, "wallet_addresses", "wallet_id, branch, idx, script, address, used", " ON CONFLICT DO NOTHING", addrRows); err != nil {
			return err
		}
		if err := benchInsert(ctx, tx, "tracked_scripts", "script, owner, created_at", " ON CONFLICT DO NOTHING", trackRows); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE wallet_addresses SET used = TRUE WHERE wallet_id = $1`, w.ID)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(uint64(account), uint64(wantUTXOs+wantTxs)))
	p2wpkh := func() []byte {
		s := []byte{0x00, 0x14}
		s = binary.LittleEndian.AppendUint64(s, rng.Uint64())
		s = binary.LittleEndian.AppendUint64(s, rng.Uint64())
		return binary.LittleEndian.AppendUint32(s, rng.Uint32())
	}
	blockHash := func(h int64) string {
		return chainhash.DoubleHashH(binary.LittleEndian.AppendUint64([]byte("block"), uint64(h))).String()
	}
	blockTime := func(h int64) int64 { return 1_600_000_000 + 600*h }
	var blockRows, txRows, outRows, spendRows, wtxRows [][]any
	addBlock := func(h, txCount int64) {
		blockRows = append(blockRows, []any{h, blockHash(h), blockHash(h - 1), blockTime(h), txCount, now})
	}
	flush := func() {
		err := db.InTx(ctx, func(tx *store.Tx) error {
			for _, t := range []struct {
				table, cols string
				rows        [][]any
			}{
				{"chain_blocks", "height, hash, prev_hash, time, tx_count, applied_at", blockRows},
				{"txs", "txid, status, block_height, block_hash, block_pos, coinbase, raw, first_seen_at, updated_at", txRows},
				{"tx_outputs", "txid, vout, script, amount", outRows},
				{"tx_spends", "txid, vin, prev_txid, prev_vout", spendRows},
				{"wallet_txs", "wallet_id, txid, status, sort_height, sort_pos, received, sent, fee, updated_at", wtxRows},
			} {
				if err := benchInsert(ctx, tx, t.table, t.cols, "", t.rows); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		blockRows, txRows, outRows, spendRows, wtxRows = nil, nil, nil, nil, nil
	}

	addBlock(0, 1)
	height, inBlock, pos, perBlock := int64(1), int64(0), int64(0), 1+rng.Int64N(6)
	var headHash chainhash.Hash // the output the next spend spends
	var headAmount int64
	for i := 0; (wantUTXOs > 0 && sw.utxos < wantUTXOs) || (wantTxs > 0 && sw.txs < wantTxs); i++ {
		if inBlock == perBlock {
			addBlock(height, pos+1+rng.Int64N(100))
			height, inBlock, pos, perBlock = height+1, 0, 0, 1+rng.Int64N(6)
		}
		inBlock++
		pos += 1 + rng.Int64N(20)
		spend := i%10 == 9
		prev := wire.OutPoint{Hash: headHash}
		if !spend {
			for j := 0; j < len(prev.Hash); j += 8 {
				binary.LittleEndian.PutUint64(prev.Hash[j:], rng.Uint64())
			}
			prev.Index = rng.Uint32N(4)
		}
		msg := wire.NewMsgTx(2)
		msg.AddTxIn(&wire.TxIn{PreviousOutPoint: prev, Sequence: wire.MaxTxInSequenceNum - 2,
			Witness: wire.TxWitness{bytes.Repeat([]byte{0x30}, 72), bytes.Repeat([]byte{0x02}, 33)}})
		amount := 10_000 + rng.Int64N(1_000_000)
		var script []byte
		if spend {
			amount = headAmount
			msg.AddTxOut(wire.NewTxOut(amount-1_000, p2wpkh()))
		} else {
			script = scripts[rng.IntN(len(scripts))]
			msg.AddTxOut(wire.NewTxOut(amount, script))
			msg.AddTxOut(wire.NewTxOut(1_000_000+rng.Int64N(100_000_000), p2wpkh()))
		}
		var raw bytes.Buffer
		if err := msg.Serialize(&raw); err != nil {
			b.Fatal(err)
		}
		hash := msg.TxHash()
		txid := hash.String()
		txRows = append(txRows, []any{txid, "confirmed", height, blockHash(height), pos, false, raw.Bytes(), blockTime(height), now})
		if spend {
			spendRows = append(spendRows, []any{txid, 0, prev.Hash.String(), 0})
			wtxRows = append(wtxRows, []any{w.ID, txid, "confirmed", height, pos, 0, amount, 1_000, now})
			sw.utxos--
			sw.balance -= amount
		} else {
			outRows = append(outRows, []any{txid, 0, script, amount})
			wtxRows = append(wtxRows, []any{w.ID, txid, "confirmed", height, pos, amount, 0, nil, now})
			sw.utxos++
			sw.balance += amount
			if i%10 == 0 {
				headHash, headAmount = hash, amount
			}
		}
		sw.txs++
		if len(txRows) == 10_000 {
			flush()
		}
	}
	addBlock(height, pos+1)
	tip := height + 5
	for h := height + 1; h <= tip; h++ {
		addBlock(h, 1)
	}
	flush()
	err = db.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO chain_cursor (id, height, hash, updated_at) VALUES (1, $1, $2, $3)`,
			tip, blockHash(tip), now); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE wallets SET status = $2, scan_height = $3, scan_target = $3 WHERE id = $1`,
			w.ID, wallet.StatusReady, tip)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	// Autovacuum would have analysed tables this size long before a wallet
	// grew to them.
	if db.Dialect() == store.Postgres {
		if err := db.InTx(ctx, func(tx *store.Tx) error { _, err := tx.ExecContext(ctx, `ANALYZE`); return err }); err != nil {
			b.Fatal(err)
		}
	}
	return svc, sw
}

// benchInsert writes rows into table with multi-row INSERTs.
func benchInsert(ctx context.Context, tx *store.Tx, table, cols, suffix string, rows [][]any) error {
	for len(rows) > 0 {
		batch := rows[:min(len(rows), 10_000/len(rows[0]))]
		rows = rows[len(batch):]
		var q strings.Builder
		fmt.Fprintf(&q, "INSERT INTO %s (%s) VALUES ", table, cols)
		args := make([]any, 0, len(batch)*len(batch[0]))
		for i, r := range batch {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteByte('(')
			for j, v := range r {
				if j > 0 {
					q.WriteString(", ")
				}
				args = append(args, v)
				if tx.Dialect() == store.SQLite {
					q.WriteByte('?') // SQLite looks "$n" names up one by one: quadratic here
				} else {
					fmt.Fprintf(&q, "$%d", len(args))
				}
			}
			q.WriteByte(')')
		}
		q.WriteString(suffix)
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return fmt.Errorf("inserting into %s: %w", table, err)
		}
	}
	return nil
}

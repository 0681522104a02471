package follow

import (
	"context"
	"encoding/binary"
	"log/slog"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// BenchmarkConnectBlock times the database side of Sync without a node:
// applying one block of 100 transactions in which one in ten pays a tracked
// script and one in ten spends a tracked output of the block before. The
// PostgreSQL half runs when COFFER_TEST_POSTGRES is set. `coffer bench sync`
// measures the whole path on a real node.
func BenchmarkConnectBlock(b *testing.B) {
	for _, engine := range storetest.Engines {
		b.Run(engine, func(b *testing.B) {
			benchConnect(b, storetest.Open(b, storetest.NewDSN(b, engine)), 100)
		})
	}
}

func benchConnect(b *testing.B, db *store.DB, txsPerBlock int) {
	ctx := context.Background()
	params, err := chain.Lookup(chain.BTC, chain.Regtest)
	if err != nil {
		b.Fatal(err)
	}
	p2wpkh := func(fill byte) []byte {
		s := make([]byte, 22)
		s[0], s[1] = 0x00, 0x14
		for i := 2; i < len(s); i++ {
			s[i] = fill
		}
		return s
	}
	tracked, other := p2wpkh(1), p2wpkh(2)
	f := New(db, nil, params, events.NewLog(db), Config{}, slog.New(slog.DiscardHandler))
	if err := f.loadIndex(ctx); err != nil {
		b.Fatal(err)
	}
	if err := f.Track(ctx, "bench", tracked); err != nil {
		b.Fatal(err)
	}

	var (
		prev      chainhash.Hash
		height    int64
		serial    uint32          // makes every untracked input, so every txid, unique
		spendable []wire.OutPoint // tracked outputs of the previous block
	)
	b.ReportAllocs()
	for b.Loop() {
		blk := &wire.MsgBlock{Header: wire.BlockHeader{
			Version: 4, PrevBlock: prev, Timestamp: time.Unix(1_600_000_000+height, 0), Bits: 0x207fffff,
		}}
		coinbase := wire.NewMsgTx(1)
		coinbase.AddTxIn(&wire.TxIn{
			PreviousOutPoint: wire.OutPoint{Index: wire.MaxPrevOutIndex},
			SignatureScript:  binary.LittleEndian.AppendUint64([]byte{8}, uint64(height)),
			Sequence:         wire.MaxTxInSequenceNum,
		})
		coinbase.AddTxOut(wire.NewTxOut(50_0000_0000, other))
		blk.AddTransaction(coinbase)
		var next []wire.OutPoint
		for i := 1; i < txsPerBlock; i++ {
			in := wire.OutPoint{Index: serial}
			serial++
			if i%10 == 5 && len(spendable) > 0 {
				in, spendable = spendable[0], spendable[1:]
			}
			tx := wire.NewMsgTx(2)
			tx.AddTxIn(wire.NewTxIn(&in, nil, nil))
			script := other
			if i%10 == 0 {
				script = tracked
			}
			tx.AddTxOut(wire.NewTxOut(10_000, script))
			tx.AddTxOut(wire.NewTxOut(90_000, other))
			if i%10 == 0 {
				next = append(next, wire.OutPoint{Hash: tx.TxHash(), Index: 0})
			}
			blk.AddTransaction(tx)
		}
		hash := blk.BlockHash()
		if err := f.connect(ctx, fetchedBlock{height: height, hash: hash.String(), msg: blk}); err != nil {
			b.Fatal(err)
		}
		prev, spendable = hash, next
		height++
	}
	b.ReportMetric(float64(b.N*txsPerBlock)/b.Elapsed().Seconds(), "tx/s")
}

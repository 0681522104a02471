package chain

import (
	"bytes"
	"testing"

	"github.com/btcsuite/btcd/wire"
)

// FuzzParseBlock feeds arbitrary bytes to both coins' block and transaction
// parsers. Besides not panicking, anything btcd accepts as a Bitcoin block
// or transaction must parse identically as Litecoin, whose format is a
// superset.
func FuzzParseBlock(f *testing.F) {
	btc := mustLookup(f, BTC, Regtest)
	ltc := mustLookup(f, LTC, Regtest)

	btcBlock := serialize(f, testBlock(testCoinbase(), testSegwitTx()))
	hdr := testBlock(testCoinbase()).Header
	hogExTxs := [][]byte{
		ltcTxBytes(f, testCoinbase(), 0, nil),
		ltcTxBytes(f, testSegwitTx(), 0x01, nil),
		ltcTxBytes(f, testHogEx(), 0x08, []byte{0x00}),
	}
	hogExBlock := ltcBlockBytes(f, hdr, hogExTxs, mwebBlockTrailer)
	mwebTx := ltcTxBytes(f, testHogEx(), 0x08, []byte{0x01, 0xaa})
	for _, seed := range [][]byte{
		btcBlock,
		btcBlock[:len(btcBlock)/2],
		hogExBlock,
		hogExBlock[:len(hogExBlock)-len(mwebBlockTrailer)-2],
		ltcBlockBytes(f, hdr, [][]byte{hogExTxs[0], mwebTx}, nil),
		readHexFile(f, "ltc_regtest_mweb_block.hex"),
		serialize(f, testSegwitTx()),
		ltcTxBytes(f, testHogEx(), 0x09, []byte{0x00}),
		mwebTx,
		nil,
	} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, raw []byte) {
		btcBlk, btcErr := btc.ParseBlock(raw)
		ltcBlk, ltcErr := ltc.ParseBlock(raw)
		if btcErr == nil {
			if ltcErr != nil {
				t.Fatalf("btc parses the block, ltc fails: %v", ltcErr)
			}
			if ltcBlk.BlockHash() != btcBlk.BlockHash() {
				t.Fatal("block hashes differ")
			}
			sameTxs(t, ltcBlk.Transactions, btcBlk.Transactions)
		}
		if ltcErr == nil {
			for _, tx := range ltcBlk.Transactions {
				// What the parser returns must be re-encodable.
				var b bytes.Buffer
				if err := tx.SerializeNoWitness(&b); err != nil {
					t.Fatal(err)
				}
			}
		}

		btcTx, btcErr := btc.ParseTx(raw)
		ltcTx, ltcErr := ltc.ParseTx(raw)
		if btcErr == nil {
			if ltcErr != nil {
				t.Fatalf("btc parses the tx, ltc fails: %v", ltcErr)
			}
			sameTxs(t, []*wire.MsgTx{ltcTx}, []*wire.MsgTx{btcTx})
		}
	})
}

func sameTxs(t *testing.T, got, want []*wire.MsgTx) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d transactions, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].TxHash() != want[i].TxHash() || got[i].WitnessHash() != want[i].WitnessHash() {
			t.Fatalf("tx %d hashes differ", i)
		}
	}
}

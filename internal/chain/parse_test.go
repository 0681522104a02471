package chain

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

func testHash(b byte) chainhash.Hash {
	var h chainhash.Hash
	for i := range h {
		h[i] = b + byte(i)
	}
	return h
}

func testCoinbase() *wire.MsgTx {
	tx := wire.NewMsgTx(1)
	tx.AddTxIn(&wire.TxIn{
		PreviousOutPoint: wire.OutPoint{Index: wire.MaxPrevOutIndex},
		SignatureScript:  []byte{0x03, 0x01, 0x02, 0x03},
		Sequence:         wire.MaxTxInSequenceNum,
	})
	tx.AddTxOut(wire.NewTxOut(50e8, append([]byte{0x00, 0x14}, bytes.Repeat([]byte{0x11}, 20)...)))
	return tx
}

// testSegwitTx spends two outputs, one with a witness and one without.
func testSegwitTx() *wire.MsgTx {
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(&wire.TxIn{
		PreviousOutPoint: wire.OutPoint{Hash: testHash(1), Index: 3},
		Witness:          wire.TxWitness{bytes.Repeat([]byte{0x30}, 71), bytes.Repeat([]byte{0x02}, 33)},
		Sequence:         0xfffffffd,
	})
	tx.AddTxIn(&wire.TxIn{
		PreviousOutPoint: wire.OutPoint{Hash: testHash(2), Index: 0},
		SignatureScript:  []byte{0x51},
		Sequence:         0xffffffff,
	})
	tx.AddTxOut(wire.NewTxOut(12345, append([]byte{0x00, 0x14}, bytes.Repeat([]byte{0x22}, 20)...)))
	tx.AddTxOut(wire.NewTxOut(0, []byte{0x6a, 0x01, 0x00}))
	tx.LockTime = 700000
	return tx
}

// testHogEx is shaped like a Litecoin integration transaction: it spends the
// previous one and pays the MWEB peg script (witness version 8).
func testHogEx() *wire.MsgTx {
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(&wire.TxIn{PreviousOutPoint: wire.OutPoint{Hash: testHash(3)}, Sequence: 0xffffffff})
	tx.AddTxOut(wire.NewTxOut(5e8, append([]byte{0x58, 0x20}, bytes.Repeat([]byte{0x33}, 32)...)))
	return tx
}

func testBlock(txs ...*wire.MsgTx) *wire.MsgBlock {
	blk := &wire.MsgBlock{Header: wire.BlockHeader{
		Version:   0x20000000,
		PrevBlock: testHash(9),
		Timestamp: time.Unix(1700000000, 0),
		Bits:      0x207fffff,
		Nonce:     7,
	}}
	for _, tx := range txs {
		blk.AddTransaction(tx)
	}
	var utxs []*btcutil.Tx
	for _, tx := range txs {
		utxs = append(utxs, btcutil.NewTx(tx))
	}
	blk.Header.MerkleRoot = blockchain.CalcMerkleRoot(utxs, false)
	return blk
}

func serialize(t testing.TB, v interface{ Serialize(w io.Writer) error }) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := v.Serialize(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// ltcTxBytes writes tx in Litecoin's serialization with the given flags;
// mweb goes verbatim where the MWEB transaction belongs (flag 0x08).
func ltcTxBytes(t testing.TB, tx *wire.MsgTx, flags byte, mweb []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	le := binary.LittleEndian
	b.Write(le.AppendUint32(nil, uint32(tx.Version)))
	if flags != 0 {
		b.Write([]byte{0x00, flags})
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(wire.WriteVarInt(&b, 0, uint64(len(tx.TxIn))))
	for _, in := range tx.TxIn {
		b.Write(in.PreviousOutPoint.Hash[:])
		b.Write(le.AppendUint32(nil, in.PreviousOutPoint.Index))
		must(wire.WriteVarBytes(&b, 0, in.SignatureScript))
		b.Write(le.AppendUint32(nil, in.Sequence))
	}
	must(wire.WriteVarInt(&b, 0, uint64(len(tx.TxOut))))
	for _, out := range tx.TxOut {
		b.Write(le.AppendUint64(nil, uint64(out.Value)))
		must(wire.WriteVarBytes(&b, 0, out.PkScript))
	}
	if flags&0x01 != 0 {
		for _, in := range tx.TxIn {
			must(wire.WriteVarInt(&b, 0, uint64(len(in.Witness))))
			for _, item := range in.Witness {
				must(wire.WriteVarBytes(&b, 0, item))
			}
		}
	}
	if flags&0x08 != 0 {
		b.Write(mweb)
	}
	b.Write(le.AppendUint32(nil, tx.LockTime))
	return b.Bytes()
}

// ltcBlockBytes concatenates a header, the transaction count, the given
// serialized transactions and any trailing extension data.
func ltcBlockBytes(t testing.TB, hdr wire.BlockHeader, txs [][]byte, trailer []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := hdr.Serialize(&b); err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteVarInt(&b, 0, uint64(len(txs))); err != nil {
		t.Fatal(err)
	}
	for _, tx := range txs {
		b.Write(tx)
	}
	b.Write(trailer)
	return b.Bytes()
}

// mwebBlockTrailer stands in for the serialized MWEB block: present flag
// then bytes the parser must not look at.
var mwebBlockTrailer = append([]byte{0x01}, bytes.Repeat([]byte{0xfe, 0xff, 0x00, 0x08}, 40)...)

func readHexFile(t testing.TB, name string) []byte {
	t.Helper()
	s, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return mustHex(t, strings.ToLower(strings.TrimSpace(string(s))))
}

func checkSameTxs(t *testing.T, what string, got, want []*wire.MsgTx) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d transactions, want %d", what, len(got), len(want))
	}
	for i := range want {
		if got[i].TxHash() != want[i].TxHash() {
			t.Errorf("%s: tx %d hash %s, want %s", what, i, got[i].TxHash(), want[i].TxHash())
		}
		if got[i].WitnessHash() != want[i].WitnessHash() {
			t.Errorf("%s: tx %d witness hash %s, want %s", what, i, got[i].WitnessHash(), want[i].WitnessHash())
		}
	}
}

func TestParseBTC(t *testing.T) {
	p := mustLookup(t, BTC, Regtest)
	blk := testBlock(testCoinbase(), testSegwitTx())
	raw := serialize(t, blk)

	got, err := p.ParseBlock(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.BlockHash() != blk.BlockHash() {
		t.Errorf("block hash %s, want %s", got.BlockHash(), blk.BlockHash())
	}
	checkSameTxs(t, "btc block", got.Transactions, blk.Transactions)
	if !bytes.Equal(serialize(t, got), raw) {
		t.Error("re-serialized block differs")
	}

	tx, err := p.ParseTx(serialize(t, testSegwitTx()))
	if err != nil {
		t.Fatal(err)
	}
	checkSameTxs(t, "btc tx", []*wire.MsgTx{tx}, []*wire.MsgTx{testSegwitTx()})

	if _, err := p.ParseBlock(append(raw, 0)); err == nil || !strings.Contains(err.Error(), "unexpected bytes") {
		t.Errorf("trailing byte: %v", err)
	}
	if _, err := p.ParseTx(append(serialize(t, testSegwitTx()), 0)); err == nil {
		t.Error("trailing byte after tx accepted")
	}
}

// Blocks and transactions without MWEB data are serialized exactly as in
// Bitcoin, so the Litecoin parser must agree with btcd on them.
func TestParseLTCPlain(t *testing.T) {
	p := mustLookup(t, LTC, Mainnet)
	blk := testBlock(testCoinbase(), testSegwitTx())
	got, err := p.ParseBlock(serialize(t, blk))
	if err != nil {
		t.Fatal(err)
	}
	if got.Header != blk.Header {
		t.Errorf("header %+v, want %+v", got.Header, blk.Header)
	}
	checkSameTxs(t, "ltc plain block", got.Transactions, blk.Transactions)

	for _, tx := range []*wire.MsgTx{testCoinbase(), testSegwitTx()} {
		got, err := p.ParseTx(serialize(t, tx))
		if err != nil {
			t.Fatal(err)
		}
		checkSameTxs(t, "ltc plain tx", []*wire.MsgTx{got}, []*wire.MsgTx{tx})
		if !bytes.Equal(serialize(t, got), serialize(t, tx)) {
			t.Error("re-serialized tx differs")
		}
	}
}

func TestParseLTCHogExBlock(t *testing.T) {
	p := mustLookup(t, LTC, Regtest)
	want := testBlock(testCoinbase(), testSegwitTx(), testHogEx())
	txs := [][]byte{
		ltcTxBytes(t, testCoinbase(), 0, nil),
		ltcTxBytes(t, testSegwitTx(), 0x01, nil),
		ltcTxBytes(t, testHogEx(), 0x08, []byte{0x00}),
	}
	raw := ltcBlockBytes(t, want.Header, txs, mwebBlockTrailer)

	got, err := p.ParseBlock(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.BlockHash() != want.BlockHash() {
		t.Errorf("block hash %s, want %s", got.BlockHash(), want.BlockHash())
	}
	checkSameTxs(t, "hogex block", got.Transactions, want.Transactions)

	// Without the MWEB block (or with an absent one) it parses the same.
	for _, trailer := range [][]byte{nil, {0x00}} {
		if _, err := p.ParseBlock(ltcBlockBytes(t, want.Header, txs, trailer)); err != nil {
			t.Errorf("trailer %x: %v", trailer, err)
		}
	}
	// Trailing data is only allowed after a final HogEx in a block of two
	// or more transactions, as Litecoin Core writes it.
	for name, raw := range map[string][]byte{
		"no hogex":       ltcBlockBytes(t, want.Header, txs[:2], mwebBlockTrailer),
		"hogex not last": ltcBlockBytes(t, want.Header, [][]byte{txs[0], txs[2], txs[1]}, mwebBlockTrailer),
		"hogex alone":    ltcBlockBytes(t, want.Header, txs[2:], mwebBlockTrailer),
	} {
		if _, err := p.ParseBlock(raw); err == nil || !strings.Contains(err.Error(), "unexpected bytes") {
			t.Errorf("%s: err = %v, want unexpected bytes", name, err)
		}
	}
}

func TestParseLTCTxFlags(t *testing.T) {
	p := mustLookup(t, LTC, Testnet)
	hogEx := testHogEx()
	hogEx.TxIn[0].Witness = wire.TxWitness{{0x01, 0x02}}
	for _, tc := range []struct {
		name  string
		tx    *wire.MsgTx
		flags byte
		mweb  []byte
	}{
		{"witness", testSegwitTx(), 0x01, nil},
		{"hogex", testHogEx(), 0x08, []byte{0x00}},
		{"witness+hogex", hogEx, 0x09, []byte{0x00}},
		{"absent mweb tx written as 2", testHogEx(), 0x08, []byte{0x02}}, // Core treats any byte but 1 as absent
	} {
		got, err := p.ParseTx(ltcTxBytes(t, tc.tx, tc.flags, tc.mweb))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		checkSameTxs(t, tc.name, []*wire.MsgTx{got}, []*wire.MsgTx{tc.tx})
	}
}

// TestParseLTCLiteralHogEx decodes bytes written out by hand from the
// format description, so the test does not share ltcTxBytes' assumptions.
func TestParseLTCLiteralHogEx(t *testing.T) {
	raw := mustHex(t, ""+
		"02000000"+ // version 2
		"0008"+ // marker, flags: MWEB
		"01"+ // one input
		strings.Repeat("11", 32)+"05000000"+ // outpoint
		"00"+ // empty scriptSig
		"ffffffff"+ // sequence
		"01"+ // one output
		"00e1f50500000000"+ // 1 LTC
		"22"+"5820"+strings.Repeat("44", 32)+ // OP_8 <32 bytes>
		"00"+ // no MWEB transaction
		"00000000") // locktime
	want := wire.NewMsgTx(2)
	var prev chainhash.Hash
	copy(prev[:], bytes.Repeat([]byte{0x11}, 32))
	want.AddTxIn(&wire.TxIn{PreviousOutPoint: wire.OutPoint{Hash: prev, Index: 5}, Sequence: 0xffffffff})
	want.AddTxOut(wire.NewTxOut(1e8, mustHex(t, "5820"+strings.Repeat("44", 32))))

	got, err := mustLookup(t, LTC, Mainnet).ParseTx(raw)
	if err != nil {
		t.Fatal(err)
	}
	checkSameTxs(t, "literal hogex", []*wire.MsgTx{got}, []*wire.MsgTx{want})
	if got.TxOut[0].Value != 1e8 || got.TxIn[0].PreviousOutPoint.Index != 5 {
		t.Errorf("decoded %+v %+v", got.TxIn[0], got.TxOut[0])
	}
}

// TestParseLTCRegtestBlock uses a block mined by a Litecoin regtest node
// (published as test data of the NLitecoin project): coinbase, a peg-in
// transaction and the HogEx, followed by the MWEB block. The merkle root and
// the segwit commitment in the coinbase were computed by Litecoin Core, so
// they check the txids and witness data the parser produces.
func TestParseLTCRegtestBlock(t *testing.T) {
	blk, err := mustLookup(t, LTC, Regtest).ParseBlock(readHexFile(t, "ltc_regtest_mweb_block.hex"))
	if err != nil {
		t.Fatal(err)
	}
	if len(blk.Transactions) != 3 {
		t.Fatalf("%d transactions, want 3", len(blk.Transactions))
	}
	ublk := btcutil.NewBlock(blk)
	if root := blockchain.CalcMerkleRoot(ublk.Transactions(), false); root != blk.Header.MerkleRoot {
		t.Errorf("merkle root of parsed txids %s, header says %s", root, blk.Header.MerkleRoot)
	}
	if err := blockchain.ValidateWitnessCommitment(ublk); err != nil {
		t.Errorf("witness commitment: %v", err)
	}
	hogEx := blk.Transactions[2]
	if len(hogEx.TxOut) != 1 || hogEx.TxOut[0].PkScript[0] != txscriptOP8 {
		t.Errorf("last transaction is not the HogEx: %+v", hogEx)
	}
	if hogEx.TxIn[0].PreviousOutPoint.Index != 0 || hogEx.TxIn[0].PreviousOutPoint.Hash.IsEqual(&chainhash.Hash{}) {
		t.Errorf("HogEx input %v", hogEx.TxIn[0].PreviousOutPoint)
	}
}

const txscriptOP8 = 0x58

func TestParseLTCMWEBTx(t *testing.T) {
	p := mustLookup(t, LTC, Mainnet)
	withMWEB := ltcTxBytes(t, testHogEx(), 0x08, append([]byte{0x01}, bytes.Repeat([]byte{0xab}, 50)...))
	mwebOnly := ltcTxBytes(t, wire.NewMsgTx(2), 0x08, append([]byte{0x01}, bytes.Repeat([]byte{0xab}, 50)...))
	realPegIn := readHexFile(t, "ltc_pegin_tx.hex") // peg-in as relayed before mining (NLitecoin test data)
	for name, raw := range map[string][]byte{"hand-built": withMWEB, "mweb-only": mwebOnly, "peg-in": realPegIn} {
		if _, err := p.ParseTx(raw); err != ErrMWEBTx {
			t.Errorf("%s: err = %v, want ErrMWEBTx", name, err)
		}
	}

	hdr := testBlock(testCoinbase()).Header
	raw := ltcBlockBytes(t, hdr, [][]byte{ltcTxBytes(t, testCoinbase(), 0, nil), withMWEB}, nil)
	_, err := p.ParseBlock(raw)
	if !errors.Is(err, ErrMWEBTx) || !strings.Contains(err.Error(), "transaction 1") {
		t.Errorf("block with MWEB tx: err = %v", err)
	}
}

func TestParseMalformed(t *testing.T) {
	btc := mustLookup(t, BTC, Mainnet)
	ltc := mustLookup(t, LTC, Mainnet)
	hogExBlock := ltcBlockBytes(t, testBlock(testCoinbase()).Header, [][]byte{
		ltcTxBytes(t, testCoinbase(), 0, nil),
		ltcTxBytes(t, testSegwitTx(), 0x01, nil),
		ltcTxBytes(t, testHogEx(), 0x08, []byte{0x00}),
	}, nil)
	btcBlock := serialize(t, testBlock(testCoinbase(), testSegwitTx()))

	// Every strict prefix of a valid encoding must fail cleanly.
	for name, c := range map[string]struct {
		p   *Params
		raw []byte
	}{
		"btc block": {btc, btcBlock},
		"ltc block": {ltc, btcBlock},
		"ltc hogex": {ltc, hogExBlock},
	} {
		for n := range len(c.raw) {
			if _, err := c.p.ParseBlock(c.raw[:n]); err == nil {
				t.Errorf("%s truncated to %d bytes: no error", name, n)
			}
		}
	}
	segwit := ltcTxBytes(t, testSegwitTx(), 0x01, nil)
	hogEx := ltcTxBytes(t, testHogEx(), 0x09, []byte{0x00})
	for _, raw := range [][]byte{segwit, hogEx} {
		for n := range len(raw) {
			if _, err := ltc.ParseTx(raw[:n]); err == nil {
				t.Errorf("ltc tx truncated to %d bytes: no error", n)
			}
			if _, err := btc.ParseTx(raw[:n]); err == nil {
				t.Errorf("btc tx truncated to %d bytes: no error", n)
			}
		}
	}

	header := serialize(t, &testBlock(testCoinbase()).Header)
	for name, raw := range map[string][]byte{
		"garbage":           bytes.Repeat([]byte{0xff}, 200),
		"no transactions":   append(append([]byte{}, header...), 0x00),
		"huge tx count":     append(append([]byte{}, header...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),
		"tx count too big":  append(append([]byte{}, header...), 0xfe, 0x00, 0x00, 0x01, 0x00),
		"non-canonical cnt": append(append([]byte{}, header...), 0xfd, 0x01, 0x00),
	} {
		for _, p := range []*Params{btc, ltc} {
			if _, err := p.ParseBlock(raw); err == nil {
				t.Errorf("%s: %s parsed", p, name)
			}
		}
	}

	// Litecoin-specific bad encodings.
	badFlags := append([]byte{}, segwit...)
	badFlags[5] = 0x02
	zeroFlags := append([]byte{}, segwit...)
	zeroFlags[5] = 0x00
	noOutputs := testHogEx()
	noOutputs.TxOut = nil
	for name, raw := range map[string][]byte{
		"unknown flag":      badFlags,
		"zero flags":        zeroFlags,
		"hogex, no outputs": ltcTxBytes(t, noOutputs, 0x08, []byte{0x00}),
		"huge input count":  append([]byte{2, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0x0f}, make([]byte, 64)...),
		"huge script":       append([]byte{2, 0, 0, 0, 1}, append(make([]byte, 36), 0xfe, 0xff, 0xff, 0xff, 0x00)...),
		"huge witness": append(append([]byte{2, 0, 0, 0, 0, 1, 1}, make([]byte, 36)...),
			0, 0, 0, 0, 0, // empty script, sequence
			0,                            // no outputs
			0xfe, 0xff, 0xff, 0xff, 0x00, // witness item count
			0, 0, 0, 0),
	} {
		if _, err := ltc.ParseTx(raw); err == nil {
			t.Errorf("%s parsed", name)
		}
	}
}

package cfilter

import (
	"bytes"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcutil/gcs"
	"github.com/btcsuite/btcd/btcutil/gcs/builder"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

const testHash = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"

// buildFilter serializes a basic filter of items for block hash as nodes
// do, with gcs's own builder: an independent path from Decode.
func buildFilter(t testing.TB, hash string, items [][]byte) []byte {
	t.Helper()
	h, err := chainhash.NewHashFromStr(hash)
	if err != nil {
		t.Fatal(err)
	}
	f, err := builder.WithKeyHash(h).AddEntries(items).Build()
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.NBytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func scriptN(i int) []byte {
	return append([]byte{0x76, 0xa9, 0x14}, bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 10)...)
}

func TestDecodeMatch(t *testing.T) {
	var in, out [][]byte
	for i := range 200 {
		in = append(in, scriptN(i))
		out = append(out, scriptN(10_000+i))
	}
	f, err := Decode(testHash, buildFilter(t, testHash, in))
	if err != nil {
		t.Fatal(err)
	}
	if f.N() != 200 {
		t.Fatalf("N = %d, want 200", f.N())
	}
	for i, s := range in {
		// Alone, among non-members, and among more items than the
		// filter holds (where gcs would switch to HashMatchAny).
		for _, q := range [][][]byte{{s}, append(out[:5:5], s), append(append([][]byte(nil), out...), s)} {
			if ok, err := f.Match(q); err != nil || !ok {
				t.Fatalf("member %d in query of %d: %v, %v", i, len(q), ok, err)
			}
		}
	}
	// A false positive among 200 non-members has odds of 200/784931, and
	// the items are fixed, so this is deterministic.
	if ok, err := f.Match(out); err != nil || ok {
		t.Fatalf("non-members: %v, %v", ok, err)
	}
	if ok, err := f.Match(nil); err != nil || ok {
		t.Fatalf("empty query: %v, %v", ok, err)
	}
	if ok, err := f.Match([][]byte{{}, nil}); err != nil || ok {
		t.Fatalf("empty scripts: %v, %v", ok, err)
	}
	if ok, err := f.Match([][]byte{{}, in[7], nil}); err != nil || !ok {
		t.Fatalf("member among empty scripts: %v, %v", ok, err)
	}

	// The key comes from the block hash: the same bytes under another
	// hash do not match.
	other, err := Decode(strings.Repeat("11", 32), buildFilter(t, testHash, in))
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := other.Match(in[:20]); ok {
		t.Fatal("filter matched under another block's key")
	}

	// BIP158 fixes M = 784931: a filter built with another M (such as
	// 784314) does not match, so the constant is load-bearing.
	h, _ := chainhash.NewHashFromStr(testHash)
	wrongM, err := gcs.BuildGCSFilter(P, 784314, builder.DeriveKey(h), in)
	if err != nil {
		t.Fatal(err)
	}
	wb, _ := wrongM.NBytes()
	wf, err := Decode(testHash, wb)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := wf.Match(in[:20]); ok {
		t.Fatal("filter with M=784314 matched as if BIP158")
	}
}

func TestDecodeEmptyFilter(t *testing.T) {
	f, err := Decode(testHash, []byte{0})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := f.Match([][]byte{scriptN(1)}); err != nil || ok {
		t.Fatalf("empty filter: %v, %v", ok, err)
	}
}

func TestDecodeBad(t *testing.T) {
	good := buildFilter(t, testHash, [][]byte{scriptN(1), scriptN(2), scriptN(3)})
	for name, c := range map[string]struct {
		hash string
		data []byte
	}{
		"no data":         {testHash, nil},
		"short hash":      {testHash[:62], good},
		"long hash":       {testHash + "00", good},
		"hash not hex":    {strings.Repeat("zz", 32), good},
		"truncated":       {testHash, good[:len(good)-3]},
		"huge N":          {testHash, []byte{0xfe, 0xff, 0xff, 0xff, 0xff, 1, 2, 3}},
		"non-canonical N": {testHash, append([]byte{0xfd, 3, 0}, good[1:]...)},
		"N beyond uint32": {testHash, []byte{0xff, 0, 0, 0, 0, 1, 0, 0, 0}},
	} {
		if _, err := Decode(c.hash, c.data); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// FuzzDecode: arbitrary filter bytes never panic, in Decode or Match.
func FuzzDecode(f *testing.F) {
	f.Add(buildFilter(f, testHash, [][]byte{scriptN(1), scriptN(2)}), []byte{0x76})
	f.Add([]byte{0}, []byte{})
	f.Add([]byte{3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, scriptN(5))
	f.Fuzz(func(t *testing.T, data, script []byte) {
		flt, err := Decode(testHash, data)
		if err != nil {
			return
		}
		_, _ = flt.Match([][]byte{script, scriptN(1), scriptN(2)})
		_, _ = flt.Match([][]byte{script})
	})
}

// TestBuilderAgrees: a filter built from a block by gcs/builder (as btcd
// does) matches that block's output and prevout scripts through Decode.
func TestBuilderAgrees(t *testing.T) {
	blk := wire.NewMsgBlock(&wire.BlockHeader{Version: 1})
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(&wire.TxIn{})
	tx.AddTxOut(wire.NewTxOut(1, scriptN(1)))
	tx.AddTxOut(wire.NewTxOut(0, []byte{0x6a, 1, 2})) // OP_RETURN: left out
	blk.AddTransaction(tx)
	built, err := builder.BuildBasicFilter(blk, [][]byte{scriptN(2)})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := built.NBytes()
	hash := blk.BlockHash().String()
	f, err := Decode(hash, data)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range [][]byte{scriptN(1), scriptN(2)} {
		if ok, err := f.Match([][]byte{s}); err != nil || !ok {
			t.Errorf("script %d: %v, %v", i, ok, err)
		}
	}
	if f.N() != 2 {
		t.Errorf("N = %d, want 2 (OP_RETURN excluded)", f.N())
	}
}

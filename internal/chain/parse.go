package chain

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/btcsuite/btcd/wire"
)

// ErrMWEBTx reports a Litecoin transaction carrying an MWEB payload. Such
// transactions only exist outside blocks: the node relays them and returns
// them from getrawtransaction while unconfirmed, but consensus forbids MWEB
// data in a block's transaction list (the extension block holds it), so a
// mined peg-in shows up in its block as a plain transaction. Callers reading
// the mempool can skip transactions failing with this error. The parser
// cannot skip the payload itself: it sits before the locktime and decoding it
// would mean implementing the MWEB transaction format.
var ErrMWEBTx = errors.New("chain: litecoin transaction carries MWEB data")

// Smallest possible encodings, used to reject counts that cannot fit in the
// bytes left before anything is allocated for them.
const (
	minTxInSize  = 32 + 4 + 1 + 4 // outpoint, empty script, sequence
	minTxOutSize = 8 + 1          // value, empty script
	minTxSize    = 4 + 1 + 1 + 4  // version, no inputs, no outputs, locktime
)

// Litecoin extended-serialization flag bits.
const (
	ltcFlagWitness = 0x01
	ltcFlagMWEB    = 0x08
)

// ParseBlock decodes a block as returned by getblock with verbosity 0.
//
// Litecoin blocks are decoded with their MWEB parts: the integration
// (HogEx) transaction that ends each block since MWEB activation is returned
// like any other transaction, and the MWEB extension block after it is
// ignored. Transaction hashes (TxHash) match the node's txids.
func (p *Params) ParseBlock(raw []byte) (*wire.MsgBlock, error) {
	var (
		blk *wire.MsgBlock
		err error
	)
	switch p.Coin {
	case BTC:
		blk, err = parseBTCBlock(raw)
	case LTC:
		blk, err = parseLTCBlock(raw)
	default:
		err = errUnsupportedCoin
	}
	if err != nil {
		return nil, fmt.Errorf("chain: parsing %s block: %w", p.Coin, err)
	}
	return blk, nil
}

// ParseTx decodes a transaction as returned by getrawtransaction. For
// Litecoin it returns ErrMWEBTx (unwrapped) for transactions with an MWEB
// payload.
func (p *Params) ParseTx(raw []byte) (*wire.MsgTx, error) {
	var (
		tx  *wire.MsgTx
		err error
	)
	r := bytes.NewReader(raw)
	switch p.Coin {
	case BTC:
		tx = new(wire.MsgTx)
		err = tx.Deserialize(r)
	case LTC:
		tx, _, err = readLTCTx(r)
		if errors.Is(err, ErrMWEBTx) {
			return nil, ErrMWEBTx
		}
	default:
		err = errUnsupportedCoin
	}
	if err == nil && r.Len() != 0 {
		err = fmt.Errorf("%d unexpected bytes after the transaction", r.Len())
	}
	if err != nil {
		return nil, fmt.Errorf("chain: parsing %s transaction: %w", p.Coin, err)
	}
	return tx, nil
}

func parseBTCBlock(raw []byte) (*wire.MsgBlock, error) {
	r := bytes.NewReader(raw)
	var blk wire.MsgBlock
	if err := blk.Deserialize(r); err != nil {
		return nil, err
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%d unexpected bytes after the last transaction", r.Len())
	}
	if len(blk.Transactions) == 0 {
		return nil, errors.New("block has no transactions")
	}
	return &blk, nil
}

func parseLTCBlock(raw []byte) (*wire.MsgBlock, error) {
	r := bytes.NewReader(raw)
	var blk wire.MsgBlock
	if err := blk.Header.Deserialize(r); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	n, err := readCount(r, minTxSize, "transaction")
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, errors.New("block has no transactions")
	}
	blk.Transactions = make([]*wire.MsgTx, n)
	var hogEx bool
	for i := range blk.Transactions {
		blk.Transactions[i], hogEx, err = readLTCTx(r)
		if err != nil {
			return nil, fmt.Errorf("transaction %d: %w", i, err)
		}
	}
	// Litecoin Core appends the MWEB block after a final HogEx in blocks of
	// two or more transactions; Coffer has no use for it. Anything after the
	// transactions otherwise means the bytes were misread.
	if r.Len() != 0 && !(n >= 2 && hogEx) {
		return nil, fmt.Errorf("%d unexpected bytes after the last transaction", r.Len())
	}
	return &blk, nil
}

// readLTCTx reads one transaction in Litecoin's serialization and reports
// whether it is a HogEx (MWEB flag with no MWEB payload). The result holds
// only canonical data, so its TxHash is Litecoin's txid.
func readLTCTx(r *bytes.Reader) (*wire.MsgTx, bool, error) {
	version, err := readUint32(r)
	if err != nil {
		return nil, false, fmt.Errorf("version: %w", err)
	}
	tx := &wire.MsgTx{Version: int32(version)}

	// A zero where the input count belongs is the extended-format marker,
	// followed by the flags byte.
	var flags byte
	marker, err := r.ReadByte()
	if err != nil {
		return nil, false, fmt.Errorf("input count: %w", io.ErrUnexpectedEOF)
	}
	if marker == 0 {
		if flags, err = r.ReadByte(); err != nil {
			return nil, false, fmt.Errorf("flags: %w", io.ErrUnexpectedEOF)
		}
		if flags == 0 || flags&^(ltcFlagWitness|ltcFlagMWEB) != 0 {
			return nil, false, fmt.Errorf("unknown serialization flags %#04x", flags)
		}
	} else if err := r.UnreadByte(); err != nil {
		return nil, false, err
	}

	if tx.TxIn, err = readTxIns(r); err != nil {
		return nil, false, err
	}
	if tx.TxOut, err = readTxOuts(r); err != nil {
		return nil, false, err
	}
	if flags&ltcFlagWitness != 0 {
		for i, in := range tx.TxIn {
			if in.Witness, err = readWitness(r); err != nil {
				return nil, false, fmt.Errorf("witness of input %d: %w", i, err)
			}
		}
	}
	var hogEx bool
	if flags&ltcFlagMWEB != 0 {
		// The MWEB transaction is an optional pointer: 1 means present,
		// any other byte means absent (as Litecoin Core reads it).
		present, err := r.ReadByte()
		if err != nil {
			return nil, false, fmt.Errorf("mweb transaction: %w", io.ErrUnexpectedEOF)
		}
		if present == 1 {
			return nil, false, ErrMWEBTx
		}
		if len(tx.TxOut) == 0 {
			return nil, false, errors.New("mweb integration transaction without outputs")
		}
		hogEx = true
	}
	if tx.LockTime, err = readUint32(r); err != nil {
		return nil, false, fmt.Errorf("locktime: %w", err)
	}
	return tx, hogEx, nil
}

func readTxIns(r *bytes.Reader) ([]*wire.TxIn, error) {
	n, err := readCount(r, minTxInSize, "input")
	if err != nil {
		return nil, err
	}
	ins := make([]wire.TxIn, n) // one allocation for all inputs
	out := make([]*wire.TxIn, n)
	for i := range ins {
		in := &ins[i]
		if _, err := io.ReadFull(r, in.PreviousOutPoint.Hash[:]); err != nil {
			return nil, fmt.Errorf("input %d: %w", i, io.ErrUnexpectedEOF)
		}
		if in.PreviousOutPoint.Index, err = readUint32(r); err != nil {
			return nil, fmt.Errorf("input %d: %w", i, err)
		}
		if in.SignatureScript, err = readBytes(r, "signature script"); err != nil {
			return nil, fmt.Errorf("input %d: %w", i, err)
		}
		if in.Sequence, err = readUint32(r); err != nil {
			return nil, fmt.Errorf("input %d: %w", i, err)
		}
		out[i] = in
	}
	return out, nil
}

func readTxOuts(r *bytes.Reader) ([]*wire.TxOut, error) {
	n, err := readCount(r, minTxOutSize, "output")
	if err != nil {
		return nil, err
	}
	outs := make([]wire.TxOut, n)
	res := make([]*wire.TxOut, n)
	for i := range outs {
		o := &outs[i]
		var buf [8]byte
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return nil, fmt.Errorf("output %d: %w", i, io.ErrUnexpectedEOF)
		}
		o.Value = int64(binary.LittleEndian.Uint64(buf[:]))
		if o.PkScript, err = readBytes(r, "output script"); err != nil {
			return nil, fmt.Errorf("output %d: %w", i, err)
		}
		res[i] = o
	}
	return res, nil
}

func readWitness(r *bytes.Reader) (wire.TxWitness, error) {
	n, err := readCount(r, 1, "witness item")
	if err != nil || n == 0 {
		return nil, err
	}
	w := make(wire.TxWitness, n)
	for i := range w {
		if w[i], err = readBytes(r, "witness item"); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// readCount reads a compact-size count of elements at least minSize bytes
// long each, refusing counts the remaining input cannot hold so that garbage
// cannot make us allocate more than a small multiple of its own size.
func readCount(r *bytes.Reader, minSize int, what string) (int, error) {
	n, err := wire.ReadVarInt(r, 0)
	if err != nil {
		return 0, fmt.Errorf("%s count: %w", what, err)
	}
	if n > uint64(r.Len()/minSize) {
		return 0, fmt.Errorf("%s count %d does not fit in the %d bytes left", what, n, r.Len())
	}
	return int(n), nil
}

// readBytes reads a compact-size-prefixed byte string no longer than the
// remaining input.
func readBytes(r *bytes.Reader, what string) ([]byte, error) {
	limit := uint32(min(r.Len(), math.MaxUint32))
	b, err := wire.ReadVarBytes(r, 0, limit, what)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return b, err
}

func readUint32(r *bytes.Reader) (uint32, error) {
	var buf [4]byte
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return 0, io.ErrUnexpectedEOF
	}
	return binary.LittleEndian.Uint32(buf[:]), nil
}

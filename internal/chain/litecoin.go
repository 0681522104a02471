package chain

import (
	"encoding/hex"
	"math/big"
	"time"

	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// Litecoin network parameters, taken from Litecoin Core's chainparams.cpp.
//
// They are deliberately not passed to chaincfg.Register: Litecoin regtest
// uses the same message magic as Bitcoin regtest (Register would fail), and
// registering would change how btcutil decodes addresses process-wide. The
// address code in this package works from these values directly instead.

// ltcGenesisCoinbaseText is the message in Litecoin's genesis coinbase; the
// apostrophe is U+2019, as in Litecoin Core.
const ltcGenesisCoinbaseText = "NY Times 05/Oct/2011 Steve Jobs, Apple\u2019s Visionary, Dies at 56"

const ltcGenesisPubKey = "040184710fa689ad5023690c80f3a49c8f13f8d45b8c857fbcbc8bc4a8e4d3eb4b10f4d4604fa08dce601aaf0f470216fe1b51850b4acf21b179c45070ac7b03a9"

// ltcGenesisBlock rebuilds a Litecoin genesis block. All three networks share
// the coinbase and differ only in time, nonce and bits; tests check the
// result against the published hashes.
func ltcGenesisBlock(timestamp, nonce, bits uint32) *wire.MsgBlock {
	// scriptSig: push(0x1d00ffff as a script number), push(4), push(text).
	sigScript := []byte{0x04, 0xff, 0xff, 0x00, 0x1d, 0x01, 0x04, byte(len(ltcGenesisCoinbaseText))}
	sigScript = append(sigScript, ltcGenesisCoinbaseText...)

	pubKey, err := hex.DecodeString(ltcGenesisPubKey)
	if err != nil {
		panic(err)
	}
	pkScript := append([]byte{byte(len(pubKey))}, pubKey...)
	pkScript = append(pkScript, 0xac) // OP_CHECKSIG

	coinbase := wire.NewMsgTx(1)
	coinbase.AddTxIn(&wire.TxIn{
		PreviousOutPoint: wire.OutPoint{Index: wire.MaxPrevOutIndex},
		SignatureScript:  sigScript,
		Sequence:         wire.MaxTxInSequenceNum,
	})
	coinbase.AddTxOut(wire.NewTxOut(50*1e8, pkScript))

	return &wire.MsgBlock{
		Header: wire.BlockHeader{
			Version:    1,
			MerkleRoot: coinbase.TxHash(), // a single transaction is its own root
			Timestamp:  time.Unix(int64(timestamp), 0),
			Bits:       bits,
			Nonce:      nonce,
		},
		Transactions: []*wire.MsgTx{coinbase},
	}
}

func mustHash(s string) *chainhash.Hash {
	h, err := chainhash.NewHashFromStr(s)
	if err != nil {
		panic(err)
	}
	return h
}

// powLimit returns 2^bits - 1.
func powLimit(bits uint) *big.Int {
	return new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), bits), big.NewInt(1))
}

var ltcMainNetParams = chaincfg.Params{
	Name:        "litecoin-mainnet",
	Net:         wire.BitcoinNet(0xdbb6c0fb),
	DefaultPort: "9333",

	GenesisBlock: ltcGenesisBlock(1317972665, 2084524493, 0x1e0ffff0),
	GenesisHash:  mustHash("12a765e31ffd4059bada1e25190f6e98c99d9714d334efa41a195a7e7e04bfe2"),

	PowLimit:                 powLimit(236),
	PowLimitBits:             0x1e0fffff,
	CoinbaseMaturity:         100,
	SubsidyReductionInterval: 840000,
	TargetTimespan:           84 * time.Hour, // 3.5 days
	TargetTimePerBlock:       150 * time.Second,

	Bech32HRPSegwit:  "ltc",
	PubKeyHashAddrID: 0x30, // L...
	ScriptHashAddrID: 0x32, // M...
	PrivateKeyID:     0xb0,
	HDPrivateKeyID:   [4]byte{0x04, 0x88, 0xad, 0xe4}, // xprv, as Litecoin Core
	HDPublicKeyID:    [4]byte{0x04, 0x88, 0xb2, 0x1e}, // xpub
	HDCoinType:       2,
}

var ltcTestNet4Params = chaincfg.Params{
	Name:        "litecoin-testnet4",
	Net:         wire.BitcoinNet(0xf1c8d2fd),
	DefaultPort: "19335",

	GenesisBlock: ltcGenesisBlock(1486949366, 293345, 0x1e0ffff0),
	GenesisHash:  mustHash("4966625a4b2851d9fdee139e56211a0d88575f59ed816ff5e6a63deb4e3e29a0"),

	PowLimit:                 powLimit(236),
	PowLimitBits:             0x1e0fffff,
	CoinbaseMaturity:         100,
	SubsidyReductionInterval: 840000,
	TargetTimespan:           84 * time.Hour,
	TargetTimePerBlock:       150 * time.Second,
	ReduceMinDifficulty:      true,
	MinDiffReductionTime:     300 * time.Second, // twice the block time

	Bech32HRPSegwit:  "tltc",
	PubKeyHashAddrID: 0x6f, // m... or n..., same byte as Bitcoin testnet
	ScriptHashAddrID: 0x3a, // Q...
	PrivateKeyID:     0xef,
	HDPrivateKeyID:   [4]byte{0x04, 0x35, 0x83, 0x94}, // tprv
	HDPublicKeyID:    [4]byte{0x04, 0x35, 0x87, 0xcf}, // tpub
	HDCoinType:       1,
}

var ltcRegTestParams = chaincfg.Params{
	Name:        "litecoin-regtest",
	Net:         wire.BitcoinNet(0xdab5bffa), // same magic as Bitcoin regtest
	DefaultPort: "19444",

	GenesisBlock: ltcGenesisBlock(1296688602, 0, 0x207fffff),
	GenesisHash:  mustHash("530827f38f93b43ed12af0b3ad25a288dc02ed74d6d7857862df51fc56c416f9"),

	PowLimit:                 powLimit(255),
	PowLimitBits:             0x207fffff,
	PoWNoRetargeting:         true,
	CoinbaseMaturity:         100,
	SubsidyReductionInterval: 150,
	TargetTimespan:           84 * time.Hour,
	TargetTimePerBlock:       150 * time.Second,
	ReduceMinDifficulty:      true,
	MinDiffReductionTime:     300 * time.Second,

	Bech32HRPSegwit:  "rltc",
	PubKeyHashAddrID: 0x6f,
	ScriptHashAddrID: 0x3a,
	PrivateKeyID:     0xef,
	HDPrivateKeyID:   [4]byte{0x04, 0x35, 0x83, 0x94},
	HDPublicKeyID:    [4]byte{0x04, 0x35, 0x87, 0xcf},
	HDCoinType:       1,
}

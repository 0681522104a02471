package regtest

import "github.com/btcsuite/btcd/chaincfg"

// netParams gives the address encoding for a node kind.
//
// TODO: switch the Litecoin case to chain.Lookup(chain.LTC, chain.Regtest)
// once internal/chain lands; this local copy only exists to unblock tests.
func netParams(k Kind) *chaincfg.Params {
	if k != KindLitecoind {
		return &chaincfg.RegressionNetParams
	}
	p := chaincfg.RegressionNetParams
	p.Name = "ltc-regtest"
	p.PubKeyHashAddrID = 0x6f
	p.ScriptHashAddrID = 0x3a
	p.PrivateKeyID = 0xef
	p.Bech32HRPSegwit = "rltc"
	return &p
}

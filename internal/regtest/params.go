package regtest

import "github.com/coffer/coffer/internal/chain"

// chainParams gives the network parameters for a node kind.
func chainParams(k Kind) (*chain.Params, error) {
	if k == KindLitecoind {
		return chain.Lookup(chain.LTC, chain.Regtest)
	}
	return chain.Lookup(chain.BTC, chain.Regtest)
}

// Package chain holds the per-coin, per-network constants Coffer needs and
// the coin-specific parts of address handling and block/transaction parsing.
package chain

import (
	"errors"
	"fmt"
	"strings"

	"github.com/btcsuite/btcd/chaincfg"
)

// Coin names a supported currency. The values are the lowercase tickers used
// in the configuration file.
type Coin string

// Supported coins.
const (
	BTC Coin = "btc"
	LTC Coin = "ltc"
)

// Network names a chain of a coin.
type Network string

// Supported networks. Testnet means testnet3 for BTC and testnet4 for LTC,
// the test chains each node selects with -testnet.
const (
	Mainnet Network = "mainnet"
	Testnet Network = "testnet"
	Signet  Network = "signet"
	Regtest Network = "regtest"
)

// Params describes one coin on one network.
type Params struct {
	Coin    Coin
	Network Network

	// Net is what btcd and btcutil need for address encoding and block
	// parsing. It is shared between all callers: treat it as read-only.
	Net *chaincfg.Params

	DefaultRPCPort   int
	CoinbaseMaturity int32 // confirmations before a coinbase output can be spent
	Decimals         int   // base units per coin = 10^Decimals

	// HasMWEB marks Litecoin, whose blocks and transactions may carry
	// MimbleWimble extension-block data (LIP-0002/0003).
	HasMWEB bool
}

// String returns "coin/network", e.g. "btc/mainnet".
func (p *Params) String() string {
	return string(p.Coin) + "/" + string(p.Network)
}

// all lists every supported combination. Lookup hands out copies so callers
// cannot alter the table.
var all = []Params{
	{Coin: BTC, Network: Mainnet, Net: &chaincfg.MainNetParams, DefaultRPCPort: 8332},
	{Coin: BTC, Network: Testnet, Net: &chaincfg.TestNet3Params, DefaultRPCPort: 18332},
	{Coin: BTC, Network: Signet, Net: &chaincfg.SigNetParams, DefaultRPCPort: 38332},
	{Coin: BTC, Network: Regtest, Net: &chaincfg.RegressionNetParams, DefaultRPCPort: 18443},
	{Coin: LTC, Network: Mainnet, Net: &ltcMainNetParams, DefaultRPCPort: 9332, HasMWEB: true},
	{Coin: LTC, Network: Testnet, Net: &ltcTestNet4Params, DefaultRPCPort: 19332, HasMWEB: true},
	{Coin: LTC, Network: Regtest, Net: &ltcRegTestParams, DefaultRPCPort: 19443, HasMWEB: true},
}

// Both coins use 100-block coinbase maturity and 8 decimals on every network.
func init() {
	for i := range all {
		all[i].CoinbaseMaturity = 100
		all[i].Decimals = 8
	}
}

// Lookup returns the parameters for coin on net. The arguments must be the
// canonical lowercase names; use ParseCoin and ParseNetwork for user input.
func Lookup(coin Coin, net Network) (*Params, error) {
	if coin != BTC && coin != LTC {
		return nil, fmt.Errorf("chain: unknown coin %q (want btc or ltc)", string(coin))
	}
	switch net {
	case Mainnet, Testnet, Signet, Regtest:
	default:
		return nil, fmt.Errorf("chain: unknown network %q (want mainnet, testnet, signet or regtest)", string(net))
	}
	var supported []string
	for i := range all {
		if all[i].Coin != coin {
			continue
		}
		if all[i].Network == net {
			p := all[i]
			return &p, nil
		}
		supported = append(supported, string(all[i].Network))
	}
	return nil, fmt.Errorf("chain: %s has no %s network (supported: %s)", coin, net, strings.Join(supported, ", "))
}

// ParseCoin turns user input such as "BTC" into a Coin.
func ParseCoin(s string) (Coin, error) {
	switch c := Coin(strings.ToLower(strings.TrimSpace(s))); c {
	case BTC, LTC:
		return c, nil
	}
	return "", fmt.Errorf("chain: unknown coin %q (want btc or ltc)", s)
}

// ParseNetwork turns user input such as "Regtest" into a Network.
func ParseNetwork(s string) (Network, error) {
	switch n := Network(strings.ToLower(strings.TrimSpace(s))); n {
	case Mainnet, Testnet, Signet, Regtest:
		return n, nil
	}
	return "", fmt.Errorf("chain: unknown network %q (want mainnet, testnet, signet or regtest)", s)
}

// errUnsupportedCoin guards the per-coin switches against a Params value
// built by hand instead of through Lookup.
var errUnsupportedCoin = errors.New("chain: params are not for a supported coin")

// All returns the parameters of every supported coin and network.
func All() []*Params {
	out := make([]*Params, len(all))
	for i := range all {
		p := all[i]
		out[i] = &p
	}
	return out
}

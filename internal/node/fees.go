package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrNoEstimate means the node has no usable fee estimate for the target:
// too little history (always the case on a fresh regtest chain), fee
// estimation disabled, or no estimation method at all. The node's error,
// if it gave one, is wrapped.
var ErrNoEstimate = errors.New("node has no fee estimate")

type noEstimateError struct{ detail string }

func (e *noEstimateError) Error() string { return ErrNoEstimate.Error() + ": " + e.detail }
func (e *noEstimateError) Unwrap() error { return ErrNoEstimate }

type noEstimateRPCError struct{ err error }

func (e *noEstimateRPCError) Error() string   { return ErrNoEstimate.Error() + ": " + e.err.Error() }
func (e *noEstimateRPCError) Unwrap() []error { return []error{ErrNoEstimate, e.err} }

// btcdMaxTarget is the furthest target btcd's estimatefee accepts.
const btcdMaxTarget = 25

// EstimateFeeRate asks the node what fee rate gets a transaction confirmed
// within confTarget blocks. The rate is in base units (satoshis, litoshis)
// per 1000 virtual bytes; divide by 1000 for sat/vB.
//
// Bitcoin and Litecoin Core answer estimatesmartfee (BTC/kvB). btcd has no
// estimatesmartfee, so on "method not found" the older estimatefee is used
// (btcd: BTC per 1000 bytes, targets up to 25 blocks, larger ones are
// clamped); btcd answers it with an error, -1 or 0 until it has watched
// enough blocks and transactions. All of those, and an estimatesmartfee
// result without a feerate, give ErrNoEstimate. Transport failures are
// returned as they are.
func (c *Client) EstimateFeeRate(ctx context.Context, confTarget int) (int64, error) {
	if confTarget < 1 {
		return 0, fmt.Errorf("estimate fee rate: confirmation target %d, want at least 1", confTarget)
	}
	var smart struct {
		FeeRate *json.Number `json:"feerate"`
		Errors  []string     `json:"errors"`
	}
	err := c.Call(ctx, "estimatesmartfee", &smart, confTarget)
	switch {
	case err == nil:
		if smart.FeeRate == nil {
			detail := "no feerate in estimatesmartfee result"
			if len(smart.Errors) > 0 {
				detail = strings.Join(smart.Errors, "; ")
			}
			return 0, &noEstimateError{detail}
		}
		return feeRateFromCoins("estimatesmartfee", *smart.FeeRate)
	case !IsCode(err, CodeMethodNotFound):
		return 0, err
	}

	var rate json.Number
	err = c.Call(ctx, "estimatefee", &rate, min(confTarget, btcdMaxTarget))
	if err != nil {
		var re *RPCError
		if errors.As(err, &re) {
			return 0, &noEstimateRPCError{err}
		}
		return 0, err
	}
	return feeRateFromCoins("estimatefee", rate)
}

// feeRateFromCoins converts a node's coins-per-kvB figure to base units per
// kvB; zero and negative rates (btcd's "no data" answers) mean no estimate.
func feeRateFromCoins(method string, n json.Number) (int64, error) {
	v, err := ParseAmount(string(n))
	if err != nil {
		return 0, fmt.Errorf("node rpc %s: fee rate: %w", method, err)
	}
	if v <= 0 {
		return 0, &noEstimateError{fmt.Sprintf("%s returned fee rate %s", method, n)}
	}
	return v, nil
}

// ParseAmount converts an amount of coins as a node writes it in JSON
// ("0.00012345", "1e-05", "-1") to base units (10^-8 coin), exactly: the
// decimal text is never turned into a float. Digits beyond the eighth
// decimal are rounded half away from zero, as is btcd's float output such
// as 0.000123455. Anything but a JSON number, or an amount of 10^10 coins
// (10^18 base units) or more, is an error.
func ParseAmount(s string) (int64, error) {
	bad := func() (int64, error) { return 0, fmt.Errorf("amount %q is not a JSON number", s) }
	rest := s
	neg := strings.HasPrefix(rest, "-")
	if neg {
		rest = rest[1:]
	}
	intEnd := digitsEnd(rest)
	intPart := rest[:intEnd]
	if intPart == "" || (len(intPart) > 1 && intPart[0] == '0') {
		return bad()
	}
	rest = rest[intEnd:]
	var frac string
	if strings.HasPrefix(rest, ".") {
		rest = rest[1:]
		n := digitsEnd(rest)
		if n == 0 {
			return bad()
		}
		frac, rest = rest[:n], rest[n:]
	}
	exp := 0
	if rest != "" {
		if rest[0] != 'e' && rest[0] != 'E' {
			return bad()
		}
		rest = rest[1:]
		expNeg := false
		if rest != "" && (rest[0] == '+' || rest[0] == '-') {
			expNeg = rest[0] == '-'
			rest = rest[1:]
		}
		if rest == "" || digitsEnd(rest) != len(rest) {
			return bad()
		}
		// Exponents this large only ever give zero or an overflow; cap
		// them so the arithmetic below stays small.
		e := strings.TrimLeft(rest, "0")
		if len(e) > 4 {
			e = "9999"
		}
		if e != "" {
			exp, _ = strconv.Atoi(e) // at most four digits: cannot fail
		}
		if expNeg {
			exp = -exp
		}
	}

	// value = digits × 10^(exp − len(frac)); in base units × 10^8.
	digits := strings.TrimLeft(intPart+frac, "0")
	shift := exp - len(frac) + 8
	if digits == "" {
		return 0, nil
	}
	round := false
	if shift < 0 {
		drop := -shift
		if drop > len(digits) {
			return 0, nil // below half a unit: the first dropped digit is a leading 0
		}
		round = digits[len(digits)-drop] >= '5'
		digits = digits[:len(digits)-drop]
	} else {
		if len(digits)+shift > 18 {
			return 0, fmt.Errorf("amount %q is out of range", s)
		}
		digits += strings.Repeat("0", shift)
	}
	if len(digits) > 18 { // 10^18 base units < MaxInt64: no overflow below
		return 0, fmt.Errorf("amount %q is out of range", s)
	}
	var v int64
	for i := 0; i < len(digits); i++ {
		v = v*10 + int64(digits[i]-'0')
	}
	if round {
		v++
	}
	if neg {
		v = -v
	}
	return v, nil
}

func digitsEnd(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// Package amount is the money type shared across Coffer: integer minor units
// (satoshis) in Go and SQL, decimal strings of integers in JSON.
package amount

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Amount is a number of minor units (satoshis).
type Amount int64

// ErrOverflow is returned when a sum or difference leaves the int64 range.
var ErrOverflow = errors.New("amount: arithmetic overflow")

// String is the decimal integer, e.g. "150000".
func (a Amount) String() string { return strconv.FormatInt(int64(a), 10) }

// MarshalJSON writes the amount as a JSON string: "150000".
func (a Amount) MarshalJSON() ([]byte, error) {
	return []byte(`"` + a.String() + `"`), nil
}

// UnmarshalJSON accepts a JSON string of a decimal integer, and rejects
// numbers, fractions and exponents so nobody sends BTC by mistake.
func (a *Amount) UnmarshalJSON(b []byte) error {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return fmt.Errorf("amount must be a string of integer minor units, like \"150000\", not %s", b)
	}
	v, err := Parse(string(b[1 : len(b)-1]))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Parse reads a decimal integer of minor units.
func Parse(s string) (Amount, error) {
	if s == "" || len(s) > 20 {
		return 0, fmt.Errorf("amount %q is not an integer number of minor units", s)
	}
	for i, c := range s {
		if (c < '0' || c > '9') && !(i == 0 && c == '-') {
			return 0, fmt.Errorf("amount %q is not an integer number of minor units (satoshis)", s)
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("amount %q is out of range", s)
	}
	return Amount(v), nil
}

// Add returns a+b, or ErrOverflow.
func Add(a, b Amount) (Amount, error) {
	if (b > 0 && a > math.MaxInt64-b) || (b < 0 && a < math.MinInt64-b) {
		return 0, ErrOverflow
	}
	return a + b, nil
}

// Sub returns a−b, or ErrOverflow.
func Sub(a, b Amount) (Amount, error) {
	if (b < 0 && a > math.MaxInt64+b) || (b > 0 && a < math.MinInt64+b) {
		return 0, ErrOverflow
	}
	return a - b, nil
}

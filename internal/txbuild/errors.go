// Package txbuild turns a payment request and a set of spendable wallet
// outputs into an unsigned PSBT (version 0), and checks and finalises what a
// signer hands back before it is broadcast.
//
// It is pure: no database, no network, no clock. Coin selection follows
// Bitcoin Core (branch and bound first, then a waste-minimising fallback
// with change), sizes are estimated per script type, and fees are rounded up
// so the real fee rate is never below the requested one.
package txbuild

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// them, so callers can map errors.Is results to HTTP status codes.
var (
	// ErrInsufficientFunds: the candidates cannot pay the outputs and the
	// fee. The error is an *InsufficientFundsError with the numbers.
	ErrInsufficientFunds = errors.New("txbuild: insufficient funds")
	// ErrDust: an output is below the dust limit of its script type.
	ErrDust = errors.New("txbuild: output is dust")
	// ErrInvalidAmount: a zero, negative or out-of-range amount, or totals
	// above the coin's money supply.
	ErrInvalidAmount = errors.New("txbuild: invalid amount")
	// ErrFeeRate: the fee rate is outside the accepted range.
	ErrFeeRate = errors.New("txbuild: fee rate out of range")
	// ErrNoOutputs: nothing to pay (no outputs and no send-all target).
	ErrNoOutputs = errors.New("txbuild: no outputs")
	// ErrUnknownInput: an Include outpoint is not among the candidates.
	ErrUnknownInput = errors.New("txbuild: unknown input")
	// ErrInvalidRequest: a malformed request, such as a missing change
	// script, an unsupported script type, or a previous transaction that
	// does not match its outpoint. These are caller bugs, not user errors.
	ErrInvalidRequest = errors.New("txbuild: invalid request")
	// ErrTxTooLarge: the transaction would exceed the standard weight
	// limit (400,000 WU) and would not be relayed.
	ErrTxTooLarge = errors.New("txbuild: transaction too large")

	// ErrBadPSBT: the signed data is neither a PSBT nor a transaction.
	ErrBadPSBT = errors.New("txbuild: unparsable PSBT or transaction")
	// ErrMismatch: the signed transaction spends or pays something other
	// than the proposal.
	ErrMismatch = errors.New("txbuild: signed transaction does not match proposal")
	// ErrNotSigned: some input lacks the signatures to finalise it.
	ErrNotSigned = errors.New("txbuild: transaction not fully signed")
	// ErrBadSignature: the scripts do not verify, or a signature uses a
	// sighash type other than ALL (which would let others alter the tx).
	ErrBadSignature = errors.New("txbuild: invalid signature")
)

// InsufficientFundsError says how much a request needs and how much the
// usable candidates hold. It matches ErrInsufficientFunds with errors.Is.
type InsufficientFundsError struct {
	Need int64 // outputs plus the fee of spending every usable candidate
	Have int64 // total value of the usable candidates
}

func (e *InsufficientFundsError) Error() string {
	return fmt.Sprintf("txbuild: insufficient funds: need %d sat (outputs plus fee), have %d sat spendable", e.Need, e.Have)
}

// Is makes errors.Is(err, ErrInsufficientFunds) true.
func (e *InsufficientFundsError) Is(target error) bool { return target == ErrInsufficientFunds }

// errf wraps kind with a formatted explanation.
func errf(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, args...))
}

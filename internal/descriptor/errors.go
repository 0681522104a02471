// Package descriptor parses output script descriptors (BIP 380-386, 389) and
// extended public keys for watch-only HD wallets, and derives the output
// scripts, addresses and BIP 32 key origins they describe.
//
// Only public material is accepted: private keys (WIF, xprv and relatives)
// are rejected, and so is anything that would need them, such as hardened
// derivation after an xpub.
//
// Descriptors are immutable once built and safe for concurrent use.
package descriptor

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// them, so callers can map errors.Is results to stable API error codes.
var (
	// ErrSyntax reports a malformed descriptor or key; the message says
	// where.
	ErrSyntax = errors.New("descriptor: invalid syntax")
	// ErrChecksum reports a missing, malformed or wrong "#checksum" suffix.
	ErrChecksum = errors.New("descriptor: bad checksum")
	// ErrNetwork reports a key of another network than the wallet's.
	ErrNetwork = errors.New("descriptor: wrong network")
	// ErrPrivateKey reports private key material; Coffer is watch-only.
	ErrPrivateKey = errors.New("descriptor: private key given")
	// ErrUnsupported reports valid input that this package does not
	// handle, such as tr() with a script tree or hardened derivation after
	// an xpub.
	ErrUnsupported = errors.New("descriptor: unsupported")
	// ErrScriptType reports a missing, unknown or conflicting script type
	// given with an extended key.
	ErrScriptType = errors.New("descriptor: bad script type")
	// ErrIndex reports a derivation index the descriptor cannot use.
	ErrIndex = errors.New("descriptor: bad index")
)

// Error is the concrete error type of this package. Kind is one of the
// sentinel errors above; Pos is the 1-based character position in the input
// the problem was found at, or 0 when it is not about one place.
type Error struct {
	Kind error
	Pos  int
	Msg  string
}

func (e *Error) Error() string {
	if e.Pos > 0 {
		return fmt.Sprintf("descriptor: %s (at character %d)", e.Msg, e.Pos)
	}
	return "descriptor: " + e.Msg
}

// Unwrap lets errors.Is match the sentinel.
func (e *Error) Unwrap() error { return e.Kind }

// errAt builds an *Error; pos is a 0-based byte offset, or -1 for none.
func errAt(kind error, pos int, format string, args ...any) error {
	return &Error{Kind: kind, Pos: pos + 1, Msg: fmt.Sprintf(format, args...)}
}

// errf builds an *Error that is not about one place in the input.
func errf(kind error, format string, args ...any) error {
	return errAt(kind, -1, format, args...)
}

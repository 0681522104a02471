package wallet

import (
	"errors"
	"fmt"
)

// Error is a caller's mistake or a state that forbids the request. Code is
// stable and part of the API; Msg says what to do about it.
type Error struct {
	Code   string
	Status int // HTTP status the API answers with
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// Is matches errors by code, so errors.Is(err, ErrNotFound) works for any
// not-found message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

func newErr(code string, status int) *Error { return &Error{Code: code, Status: status, Msg: code} }

// Error kinds. Wrap them with errorf to give the message.
var (
	ErrInvalid           = newErr("invalid_parameter", 400)
	ErrInvalidDescriptor = newErr("invalid_descriptor", 400)
	ErrWrongNetwork      = newErr("wrong_network", 400)
	ErrInvalidAddress    = newErr("invalid_address", 400)
	ErrInvalidAmount     = newErr("invalid_amount", 400)
	ErrDust              = newErr("dust_amount", 400)
	ErrInsufficientFunds = newErr("insufficient_funds", 422)
	ErrNotFound          = newErr("not_found", 404)
	ErrConflict          = newErr("conflict", 409)
	ErrProposalClosed    = newErr("proposal_not_open", 409)
	ErrMismatch          = newErr("transaction_mismatch", 422)
	ErrNotSigned         = newErr("not_signed", 422)
	ErrRejected          = newErr("rejected_by_node", 422)
	ErrNodeUnavailable   = newErr("node_unavailable", 503)
)

// errorf returns an error of kind with a message for people.
func errorf(kind *Error, format string, args ...any) error {
	return &Error{Code: kind.Code, Status: kind.Status, Msg: fmt.Sprintf(format, args...)}
}

// AsError returns the *Error in err's chain, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

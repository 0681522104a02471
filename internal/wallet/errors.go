package wallet

import "github.com/coffer/coffer/internal/fault"

// Error is a caller's mistake or a state that forbids the request.
type Error = fault.Error

// Error kinds. Wrap them with errorf to give the message.
var (
	ErrInvalid           = fault.New("invalid_parameter", 400)
	ErrInvalidDescriptor = fault.New("invalid_descriptor", 400)
	ErrWrongNetwork      = fault.New("wrong_network", 400)
	ErrInvalidAddress    = fault.New("invalid_address", 400)
	ErrInvalidAmount     = fault.New("invalid_amount", 400)
	ErrDust              = fault.New("dust_amount", 400)
	ErrInsufficientFunds = fault.New("insufficient_funds", 422)
	ErrNotFound          = fault.New("not_found", 404)
	ErrConflict          = fault.New("conflict", 409)
	ErrProposalClosed    = fault.New("proposal_not_open", 409)
	ErrMismatch          = fault.New("transaction_mismatch", 422)
	ErrNotSigned         = fault.New("not_signed", 422)
	ErrRejected          = fault.New("rejected_by_node", 422)
	ErrNodeUnavailable   = fault.New("node_unavailable", 503)
)

var errorf = fault.Errorf

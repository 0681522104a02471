// Package fault is the error type services return for a caller's mistake or
// a state that forbids a request: a stable code (part of the API contract),
// the HTTP status the API answers with, and a message a person can act on.
package fault

import (
	"errors"
	"fmt"
)

// Error is a caller's mistake or a state that forbids the request.
type Error struct {
	Code   string
	Status int // HTTP status the API answers with
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// Is matches errors by code, so errors.Is(err, kind) works for any message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// New declares an error kind; wrap it with Errorf to give the message.
func New(code string, status int) *Error { return &Error{Code: code, Status: status, Msg: code} }

// Errorf returns an error of kind with a message for people.
func Errorf(kind *Error, format string, args ...any) error {
	return &Error{Code: kind.Code, Status: kind.Status, Msg: fmt.Sprintf(format, args...)}
}

// As returns the *Error in err's chain, if any.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

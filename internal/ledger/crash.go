package ledger

import (
	"os"
	"syscall"
)

// crashAt names a point at which the process kills itself with SIGKILL,
// for the crash-safety tests: "journaled" (a batch is signed and journaled,
// not broadcast), "broadcast" (the node has it, the database does not know
// yet) or "batching" (withdrawals picked, nothing journaled). Empty in
// production: set only through COFFER_TEST_CRASH_AT.
var crashAt = os.Getenv("COFFER_TEST_CRASH_AT")

// crashPoint dies at point when the tests asked for it.
func crashPoint(point string) {
	if crashAt == point {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}

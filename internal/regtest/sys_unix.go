//go:build unix

package regtest

import (
	"os"
	"syscall"
)

// killGroup kills the node and anything it spawned.
func killGroup(p *os.Process) {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
		_ = p.Kill()
	}
}

// lockFile takes an exclusive advisory lock, so concurrent test processes
// build btcd once instead of racing each other.
func lockFile(f *os.File) error { return syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }

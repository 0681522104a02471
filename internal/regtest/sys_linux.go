//go:build linux

package regtest

import "syscall"

// sysProcAttr puts a node in its own process group (so a terminal's Ctrl-C
// does not race our graceful stop) and has the kernel kill it when the
// process that started it dies, so crashed tests do not leak nodes.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

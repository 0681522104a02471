//go:build unix && !linux

package regtest

import "syscall"

// sysProcAttr puts a node in its own process group. Only Linux can tie the
// node's life to ours; elsewhere Stop/cleanup must run.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

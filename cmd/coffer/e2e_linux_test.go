package main_test

import "syscall"

// procAttr has the kernel kill a coffer process when the test binary dies
// (a panic or -timeout skips the cleanups that would stop it). The process
// stays in the test's process group, so a Ctrl-C stops it gracefully too.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }

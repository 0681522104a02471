//go:build unix && !linux

package main_test

import "syscall"

// procAttr: only Linux can have the kernel kill the process with the test
// binary; elsewhere the test cleanups stop it.
func procAttr() *syscall.SysProcAttr { return nil }

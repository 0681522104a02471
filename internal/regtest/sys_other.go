//go:build !unix

package regtest

import (
	"os"
	"syscall"
)

func sysProcAttr() *syscall.SysProcAttr { return nil }

func killGroup(p *os.Process) { _ = p.Kill() }

// lockFile is a no-op: the build still renames atomically into place, so
// concurrent builders only waste time.
func lockFile(*os.File) error { return nil }

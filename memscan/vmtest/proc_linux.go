//go:build linux

package vmtest

import (
	"os"
	"syscall"
)

// sysProcAttr puts QEMU in its own process group, so that killGroup reaches anything
// it spawned, and kills it if the test process dies first.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup kills the process group led by p.
func killGroup(p *os.Process) error { return syscall.Kill(-p.Pid, syscall.SIGKILL) }

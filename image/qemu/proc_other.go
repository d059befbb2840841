//go:build !linux

package qemu

import (
	"os"
	"syscall"
)

// sysProcAttr: no process group or parent-death signal here.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// killGroup kills p alone.
func killGroup(p *os.Process) error { return p.Kill() }

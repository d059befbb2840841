package lab

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/domainm/domainm/memscan/vmtest"
)

// Guest is a busybox initramfs for the host's kernel: kernel modules loaded in
// dependency order, extra files, and an init script.
type Guest struct {
	Kernel  string            // the host's /boot/vmlinuz-VERSION
	Modules []string          // module names; their dependencies are added
	Files   map[string][]byte // guest path -> contents
	Script  string            // runs after the modules are loaded
}

// NewGuest starts a guest for the host's newest kernel.
func NewGuest() (*Guest, error) {
	k, err := vmtest.Kernel()
	if err != nil {
		return nil, err
	}
	return &Guest{Kernel: k, Files: map[string][]byte{}}, nil
}

// KernelVersion is the kernel's release (the part of vmlinuz-RELEASE).
func (g *Guest) KernelVersion() string {
	return strings.TrimPrefix(filepath.Base(g.Kernel), "vmlinuz-")
}

// AddFile copies a host file into the guest at guestPath.
func (g *Guest) AddFile(guestPath, hostPath string) error {
	b, err := os.ReadFile(hostPath)
	if err != nil {
		return fmt.Errorf("guest file %s: %w", guestPath, err)
	}
	g.Files[guestPath] = b
	return nil
}

// AddBinary copies a dynamically linked host binary and the shared libraries ldd lists
// (at their host paths) into the guest.
func (g *Guest) AddBinary(guestPath, hostPath string) error {
	if err := g.AddFile(guestPath, hostPath); err != nil {
		return err
	}
	out, err := exec.Command("ldd", hostPath).Output()
	if err != nil {
		return fmt.Errorf("ldd %s: %w", hostPath, err)
	}
	for _, lib := range regexp.MustCompile(`(?m)(/\S+\.so[.\d]*)`).FindAllString(string(out), -1) {
		if err := g.AddFile(lib, lib); err != nil {
			return err
		}
	}
	return nil
}

// moduleOrder lists the .ko files to insmod for names, dependencies first, each once
// (modprobe --show-depends against the kernel's module tree).
func moduleOrder(kver string, names []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		b, err := exec.Command("modprobe", "-S", kver, "--show-depends", n).Output()
		if err != nil {
			return nil, fmt.Errorf("modprobe -S %s --show-depends %s: %w", kver, n, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "insmod" && !seen[f[1]] {
				seen[f[1]] = true
				out = append(out, f[1])
			}
		}
	}
	return out, nil
}

// Build writes the initramfs to dst.
func (g *Guest) Build(dst string) error {
	mods, err := moduleOrder(g.KernelVersion(), g.Modules)
	if err != nil {
		return err
	}
	files := make(map[string][]byte, len(g.Files)+len(mods))
	for k, v := range g.Files {
		files[k] = v
	}
	var load bytes.Buffer
	for _, m := range mods {
		if err := addTo(files, "/mod/"+filepath.Base(m), m); err != nil {
			return err
		}
		fmt.Fprintf(&load, "insmod /mod/%s\n", filepath.Base(m))
	}
	return vmtest.BuildInitramfs(dst, load.String()+g.Script, files)
}

func addTo(files map[string][]byte, guestPath, hostPath string) error {
	b, err := os.ReadFile(hostPath)
	if err != nil {
		return err
	}
	files[guestPath] = b
	return nil
}

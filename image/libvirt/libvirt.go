// Package libvirt holds the domain XML of a Domain M pair under libvirt (issue 17): a
// target whose RAM is a shared file, and Domain M with a read-only virtio disk over that
// file (its view of the target), a virtio-serial control port and a network interface.
// The files are templates; TargetXML and DomMXML fill them. migrate-hooks/internal/virt's test defines and starts both in real libvirtd
// daemons and co-migrates them.
package libvirt

import (
	"bytes"
	"embed"
	"fmt"
	"text/template"
)

//go:embed target.xml domm.xml
var files embed.FS

var tmpl = template.Must(template.ParseFS(files, "*.xml"))

// Guest is what both domains share.
type Guest struct {
	Type   string // "qemu" (TCG) or "kvm"
	Name   string
	MemMiB int
	// Kernel, Initrd and Cmdline boot the guest directly (a target without Kernel runs
	// its firmware only); Serial is its console's file.
	Kernel, Initrd, Cmdline, Serial string
}

// Target is the watched VM; DomM names its Domain M.
type Target struct {
	Guest
	DomM string
}

// DomM is Domain M watching Target through the RAM file ViewPath, as libvirt names it:
// memory_backing_dir/ID-NAME/pc.ram.
type DomM struct {
	Guest
	Target   string
	ViewPath string
	// ControlSocket is the host end of the supervisor's virtio-serial control port
	// (domainm-migrate's --control and --control-dst); "" means ControlSocket(Name).
	ControlSocket string
	// ViewBlockSize, if not 0, is the view disk's logical (and physical) sector size,
	// e.g. 4096; libvirt's and QEMU's default is 512.
	ViewBlockSize int
}

// ControlSocket is the default host end of Domain M's control port: a fixed path, so
// that it is the same at the destination. (libvirt's own default,
// channel/target/domain-ID-NAME/NAME, has the id the destination gives the domain only
// once the migration is under way; and libvirt 9.0 drops any path under channel/target
// from the XML and makes its own.)
func ControlSocket(domm string) string {
	return "/var/lib/libvirt/qemu/domainm-" + domm + ".control"
}

// TargetXML renders target.xml.
func TargetXML(t Target) (string, error) { return render("target.xml", t) }

// DomMXML renders domm.xml.
func DomMXML(d DomM) (string, error) {
	if d.ControlSocket == "" {
		d.ControlSocket = ControlSocket(d.Name)
	}
	return render("domm.xml", d)
}

func render(name string, data any) (string, error) {
	var b bytes.Buffer
	if err := tmpl.ExecuteTemplate(&b, name, data); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return b.String(), nil
}

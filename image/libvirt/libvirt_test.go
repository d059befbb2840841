package libvirt

import (
	"encoding/xml"
	"strings"
	"testing"
)

// The templates render to well-formed domain XML with the devices the pair needs.
// (migrate-hooks/internal/virt's test defines and starts them in real libvirtd daemons.)
func TestRender(t *testing.T) {
	g := Guest{Type: "qemu", MemMiB: 128, Kernel: "/boot/vmlinuz", Initrd: "/tmp/i.cpio", Cmdline: "console=ttyS0", Serial: "/tmp/s"}
	tg := g
	tg.Name = "web-1"
	tx, err := TargetXML(Target{Guest: tg, DomM: "domm-1"})
	if err != nil {
		t.Fatal(err)
	}
	fw := tg
	fw.Kernel = ""
	if fx, err := TargetXML(Target{Guest: fw, DomM: "domm-1"}); err != nil || strings.Contains(fx, "<kernel>") || !strings.Contains(fx, "<boot dev='hd'/>") {
		t.Errorf("firmware-only target: %v\n%s", err, fx)
	}
	mg := g
	mg.Name = "domm-1"
	mx, err := DomMXML(DomM{Guest: mg, Target: "web-1", ViewPath: "/var/lib/libvirt/qemu/ram/1-web-1/pc.ram"})
	if err != nil {
		t.Fatal(err)
	}
	type dom struct {
		Type    string `xml:"type,attr"`
		Name    string `xml:"name"`
		Backing *struct {
			Source struct {
				Type string `xml:"type,attr"`
			} `xml:"source"`
			Access struct {
				Mode string `xml:"mode,attr"`
			} `xml:"access"`
		} `xml:"memoryBacking"`
		Pair struct {
			Role string `xml:"role,attr"`
			DomM string `xml:"domm,attr"`
		} `xml:"metadata>pair"`
		Disks []struct {
			Source struct {
				File string `xml:"file,attr"`
			} `xml:"source"`
			BlockIO *struct {
				Logical string `xml:"logical_block_size,attr"`
			} `xml:"blockio"`
			ReadOnly *struct{} `xml:"readonly"`
		} `xml:"devices>disk"`
		Channels []struct {
			Source struct {
				Mode string `xml:"mode,attr"`
				Path string `xml:"path,attr"`
			} `xml:"source"`
			Target struct {
				Type string `xml:"type,attr"`
				Name string `xml:"name,attr"`
			} `xml:"target"`
		} `xml:"devices>channel"`
		Interfaces []struct{} `xml:"devices>interface"`
		Memory     []struct{} `xml:"devices>memory"`
	}
	var td, md dom
	if err := xml.Unmarshal([]byte(tx), &td); err != nil {
		t.Fatalf("target XML: %v\n%s", err, tx)
	}
	if err := xml.Unmarshal([]byte(mx), &md); err != nil {
		t.Fatalf("domm XML: %v\n%s", err, mx)
	}
	if td.Name != "web-1" || td.Type != "qemu" || td.Backing == nil || td.Backing.Source.Type != "file" || td.Backing.Access.Mode != "shared" {
		t.Errorf("target: %+v: want a shared file memory backing", td)
	}
	if td.Pair.Role != "target" || td.Pair.DomM != "domm-1" || md.Pair.Role != "domm" {
		t.Errorf("pair metadata: target %+v, domm %+v", td.Pair, md.Pair)
	}
	if len(md.Disks) != 1 || md.Disks[0].ReadOnly == nil || !strings.HasSuffix(md.Disks[0].Source.File, "/1-web-1/pc.ram") {
		t.Errorf("domm: want one read-only disk over the target's RAM file, got %+v", md.Disks)
	}
	if len(md.Memory) != 0 {
		t.Errorf("domm has a memory device: under libvirt 9.0 it would travel in Domain M's stream")
	}
	if len(md.Channels) != 1 || md.Channels[0].Target.Type != "virtio" || md.Channels[0].Target.Name != "org.domainm.control.0" ||
		md.Channels[0].Source.Mode != "bind" || md.Channels[0].Source.Path != ControlSocket("domm-1") {
		t.Errorf("domm: want the virtio-serial control port at %s, got %+v", ControlSocket("domm-1"), md.Channels)
	}
	if md.Disks[0].BlockIO != nil {
		t.Errorf("domm: blockio %+v without ViewBlockSize", md.Disks[0].BlockIO)
	}
	mx4, err := DomMXML(DomM{Guest: mg, Target: "web-1", ViewPath: "/x/1-web-1/pc.ram", ViewBlockSize: 4096, ControlSocket: "/run/c.sock"})
	var md4 dom
	if err == nil {
		err = xml.Unmarshal([]byte(mx4), &md4)
	}
	if err != nil || len(md4.Disks) != 1 || md4.Disks[0].BlockIO == nil || md4.Disks[0].BlockIO.Logical != "4096" ||
		md4.Channels[0].Source.Path != "/run/c.sock" {
		t.Errorf("domm with 4096-byte sectors and its own socket: %v\n%s", err, mx4)
	}
	if len(md.Interfaces) != 1 || len(td.Interfaces) != 1 {
		t.Errorf("want a network interface on both")
	}
}

package virt

import (
	"strings"
	"testing"
)

func TestRewriteView(t *testing.T) {
	xml := `<domain><devices><disk type='file' device='disk'><source file='/var/lib/libvirt/qemu/ram/2-web-1/pc.ram'/><readonly/></disk></devices></domain>`
	got, err := rewriteView(xml, shortName(2, "web-1"), shortName(7, "web-1"))
	if err != nil || !strings.Contains(got, "/ram/7-web-1/pc.ram") || strings.Contains(got, "/2-web-1/") {
		t.Errorf("rewritten %q, %v", got, err)
	}
	if _, err := rewriteView(xml, shortName(3, "web-1"), "4-web-1"); err == nil {
		t.Errorf("a Domain M without the target's RAM path must be refused")
	}
	if n := shortName(1, "a-very-long-domain-name-indeed"); n != "1-a-very-long-domain-n" {
		t.Errorf("short name %q: libvirt keeps 20 bytes of the name", n)
	}
}

func TestNoSharedRAM(t *testing.T) {
	if err := noSharedRAM(`<devices><memory model='nvdimm' access='shared'/></devices>`); err == nil {
		t.Error("an nvdimm view would travel in Domain M's stream: must be refused")
	}
	if err := noSharedRAM(`<devices><disk device='disk'><readonly/></disk></devices>`); err != nil {
		t.Error(err)
	}
}

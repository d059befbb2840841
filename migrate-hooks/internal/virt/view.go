package virt

import (
	"fmt"
	"strings"
)

// ViewPath rewrites Domain M's domain XML for the destination: its view of the target (a
// read-only disk) is the target's RAM file, which libvirt names after the domain's short
// name (memory_backing_dir/ID-NAME/pc.ram), and the target's id differs at the
// destination. Every "/SRCID-NAME/" becomes "/DSTID-NAME/", with the target's ids looked
// up at both ends; the destination's target must have been prepared (its QEMU started,
// its RAM file created) before Domain M's Prepare3, which syncpoint's order gives.
func ViewPath(target *Migration) func(xml string) (string, error) {
	return func(xml string) (string, error) {
		s, err := target.Src.domain(target.Name)
		if err != nil {
			return "", err
		}
		d, err := target.Dst.domain(target.Name)
		if err != nil {
			return "", fmt.Errorf("the target's destination must exist before Domain M's: %w", err)
		}
		return rewriteView(xml, shortName(s.ID, target.Name), shortName(d.ID, target.Name))
	}
}

// shortName is libvirt's per-domain folder name: the id and at most 20 bytes of the name.
func shortName(id int32, name string) string {
	if len(name) > 20 {
		name = name[:20]
	}
	return fmt.Sprintf("%d-%s", id, name)
}

func rewriteView(xml, from, to string) (string, error) {
	if !strings.Contains(xml, "/"+from+"/") {
		return "", fmt.Errorf("no path with /%s/ (the target's RAM file) in Domain M's XML", from)
	}
	return strings.ReplaceAll(xml, "/"+from+"/", "/"+to+"/"), nil
}

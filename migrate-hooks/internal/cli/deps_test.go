package cli

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// bannedDeps are packages the coordinator shipped to hypervisor hosts must not link: the
// YARA engine (cgo), the plotting library and the experiment's lab and stand-in supervisor
// (those belong to domainm-migrate-bench).
var bannedDeps = []string{
	"github.com/hillu/go-yara",
	"gonum.org/",
	"github.com/domainm/domainm/migrate-hooks/internal/bench",
	"github.com/domainm/domainm/migrate-hooks/internal/lab",
	"github.com/domainm/domainm/migrate-hooks/internal/controltest",
	"github.com/domainm/domainm/appliance/",
	"github.com/domainm/domainm/memscan",
	"github.com/domainm/domainm/detectors",
	"github.com/domainm/domainm/diskscan",
}

// allowedDeps are the exceptions to bannedDeps: the control protocol's messages, which
// the coordinator shares with the supervisor. TestBinaryDeps checks they stay leaves
// (standard library only), so allowing them links no appliance code.
var allowedDeps = []string{
	"github.com/domainm/domainm/appliance/control/proto",
}

// The coordinator binary runs on hypervisor hosts: no cgo, no YARA, no lab.
func TestBinaryDeps(t *testing.T) {
	const pkg = "github.com/domainm/domainm/migrate-hooks/cmd/domainm-migrate"
	out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if slices.Contains(allowedDeps, dep) {
			continue
		}
		for _, banned := range bannedDeps {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("domainm-migrate links %s (banned: %s)", dep, banned)
			}
		}
	}
	if !strings.Contains(string(out), "migrate-hooks/internal/syncpoint") {
		t.Fatalf("go list output does not look like domainm-migrate's deps:\n%s", out)
	}
	for _, leaf := range allowedDeps {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", leaf).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != leaf {
			t.Errorf("%s must import only the standard library; its non-standard deps: %q (%v)", leaf, out, err)
		}
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if .CgoFiles}}{{if not .Standard}}{{.ImportPath}}{{end}}{{end}}", pkg)
	out, err = cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("non-standard packages with cgo in domainm-migrate: %q (%v)", out, err)
	}
	build := exec.Command("go", "build", "-o", t.TempDir()+"/domainm-migrate", pkg)
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Errorf("CGO_ENABLED=0 build: %v\n%s", err, out)
	}
}

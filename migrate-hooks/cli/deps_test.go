package cli

import (
	"os/exec"
	"strings"
	"testing"
)

// The coordinator binary runs on hypervisor hosts: no cgo, and no YARA.
func TestBinaryDeps(t *testing.T) {
	const pkg = "github.com/domainm/domainm/migrate-hooks/cmd/domainm-migrate"
	out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "github.com/hillu/go-yara") {
		t.Errorf("domainm-migrate imports go-yara")
	}
	if !strings.Contains(string(out), "migrate-hooks/syncpoint") {
		t.Fatalf("go list output does not look like domainm-migrate's deps:\n%s", out)
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

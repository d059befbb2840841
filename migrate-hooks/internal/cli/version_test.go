package cli

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestVersion builds the coordinator as the Makefile does (without cgo, -X version and
// commit) and checks --version, version and version --json: no libyara in any of them.
func TestVersion(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "domainm-migrate")
	ld := "-X github.com/domainm/domainm/internal/cmdline.version=v9.8.7-dirty -X github.com/domainm/domainm/internal/cmdline.commit=deadbeefcafe"
	build := exec.Command("go", "build", "-ldflags", ld, "-o", bin, "github.com/domainm/domainm/migrate-hooks/cmd/domainm-migrate")
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	want := "domainm-migrate v9.8.7-dirty\ncommit:  deadbeefcafe\ngo:      " + runtime.Version() + "\n"
	for _, arg := range []string{"--version", "version"} {
		out, err := exec.Command(bin, arg).Output()
		if err != nil || string(out) != want {
			t.Errorf("domainm-migrate %s: %v\n%s\nwant\n%s", arg, err, out, want)
		}
	}
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]string
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if v["version"] != "v9.8.7-dirty" || v["commit"] != "deadbeefcafe" || v["go_version"] != runtime.Version() || len(v) != 3 {
		t.Errorf("version --json = %v", v)
	}
	if strings.Contains(strings.ToLower(string(out)), "yara") {
		t.Errorf("the coordinator reports a libyara version: %s", out)
	}
	if c := exec.Command(bin, "version", "extra"); c.Run() == nil || c.ProcessState.ExitCode() != ExitUsage {
		t.Errorf("version extra: exit %d, want %d", c.ProcessState.ExitCode(), ExitUsage)
	}
}

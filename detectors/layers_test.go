package detectors_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const module = "github.com/domainm/domainm/"

// TestNoUpwardImports checks the layering appliance → detectors → memscan, diskscan
// (migrate-hooks beside appliance, talking to it only through the control protocol)
// over every package of the module, with go list:
//
//   - memscan and diskscan import neither appliance, migrate-hooks nor a detector
//     engine. The one exception is the leaf package detectors itself (Match, Finding:
//     standard library only, which this test also checks), whose Match the memory scan
//     driver returns; a binary under memscan/cmd may wire in detectors' engines, as
//     appliance's do, but nothing of appliance or migrate-hooks;
//   - detectors imports nothing of appliance or migrate-hooks;
//   - no package imports a main package (a cmd folder).
//
// Test files may import upward (a memscan test runs the real YARA engine); they may not
// import a cmd package either.
func TestNoUpwardImports(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..")
	cmd := exec.Command("go", "list", "-e", "-f",
		"{{.ImportPath}}|{{.Name}}|{{join .Imports \" \"}}|{{join .TestImports \" \"}} {{join .XTestImports \" \"}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 4 || !strings.HasPrefix(f[0], module) {
			continue
		}
		pkgs++
		pkg, name := strings.TrimPrefix(f[0], module), f[1]
		for _, imp := range strings.Fields(f[2]) {
			if why := upward(pkg, name, imp); why != "" {
				t.Errorf("%s imports %s: %s", pkg, imp, why)
			}
		}
		for _, imp := range strings.Fields(f[3]) {
			if rel, ok := strings.CutPrefix(imp, module); ok && isCmd(rel) {
				t.Errorf("tests of %s import the main package %s", pkg, rel)
			}
		}
	}
	if pkgs < 20 {
		t.Fatalf("go list found %d packages of the module; the check saw too little", pkgs)
	}
}

// upward says why pkg (a package path inside the module, name its package name) must
// not import imp, or "" when it may.
func upward(pkg, name, imp string) string {
	rel, inModule := strings.CutPrefix(imp, module)
	top := func(p string) string { t, _, _ := strings.Cut(p, "/"); return t }
	switch {
	case pkg == "detectors" && (inModule || strings.Contains(imp, ".")):
		return "detectors is a leaf package (standard library only): memscan imports it"
	case !inModule:
		return ""
	case isCmd(rel):
		return "a main package is a binary, not a library"
	}
	from, to := top(pkg), top(rel)
	switch {
	case (from == "memscan" || from == "diskscan") && (to == "appliance" || to == "migrate-hooks"):
		return from + " is below " + to
	case (from == "memscan" || from == "diskscan") && to == "detectors" && rel != "detectors" && name != "main":
		return from + " is below the detector engines"
	case from == "detectors" && (to == "appliance" || to == "migrate-hooks"):
		return "detectors is below " + to
	}
	return ""
}

func isCmd(rel string) bool {
	return strings.HasPrefix(rel, "cmd/") || strings.Contains(rel, "/cmd/")
}

// TestUpwardRules: the rule itself catches what it must.
func TestUpwardRules(t *testing.T) {
	for _, c := range []struct {
		pkg, name, imp string
		bad            bool
	}{
		{"memscan", "memscan", module + "appliance/internal/alert", true},
		{"memscan/vmtest", "vmtest", module + "migrate-hooks/qmp", true},
		{"diskscan", "diskscan", module + "detectors/integrity", true},
		{"memscan", "memscan", module + "detectors", false},
		{"memscan/cmd/memscan-bench", "main", module + "detectors/yara", false},
		{"memscan/cmd/memscan-bench", "main", module + "appliance/engine", true},
		{"detectors/yara", "yara", module + "memscan", false},
		{"detectors/filescan", "filescan", module + "appliance/internal/config", true},
		{"appliance/internal/cli", "cli", module + "appliance/cmd/domainm", true},
		{"detectors", "detectors", "encoding/hex", false},
		{"detectors", "detectors", module + "diskscan", true},
		{"appliance/internal/supervisor", "supervisor", module + "detectors/yara", false},
	} {
		if got := upward(c.pkg, c.name, c.imp) != ""; got != c.bad {
			t.Errorf("upward(%s → %s) = %v, want %v", c.pkg, c.imp, got, c.bad)
		}
	}
}

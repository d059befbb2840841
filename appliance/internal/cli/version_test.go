package cli

import (
	"github.com/domainm/domainm/internal/cmdline"

	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/domainm/domainm/appliance/domainmtest"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/image/testenv"
)

// TestVersionLdflags builds domainm as the Makefile does (-X version and commit) and
// checks --version, version and version --json.
func TestVersionLdflags(t *testing.T) {
	ld := "-X github.com/domainm/domainm/internal/cmdline.version=v9.8.7-3-gdeadbee-dirty -X github.com/domainm/domainm/internal/cmdline.commit=deadbeefcafe"
	bin := testenv.GoBuild(t, domainmtest.Package, "-ldflags", ld)
	want := fmt.Sprintf("domainm v9.8.7-3-gdeadbee-dirty\ncommit:  deadbeefcafe\ngo:      %s\nlibyara: %s\n", runtime.Version(), yara.LibyaraVersion)
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out, err := exec.Command(bin, args...).Output()
		if err != nil || string(out) != want {
			t.Errorf("domainm %s: %v\n%s\nwant\n%s", args[0], err, out, want)
		}
	}
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var v VersionInfo
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if v != (VersionInfo{"v9.8.7-3-gdeadbee-dirty", "deadbeefcafe", runtime.Version(), yara.LibyaraVersion}) {
		t.Errorf("version --json = %+v", v)
	}
	if !strings.HasPrefix(yara.LibyaraVersion, "4.") {
		t.Errorf("libyara %q: the appliance is built against libyara 4", yara.LibyaraVersion)
	}
}

// TestVersionFallback: without ldflags the version comes from the build info, never empty.
func TestVersionFallback(t *testing.T) {
	ver, com := cmdline.Stamp("", "")
	if ver == "" || com == "" {
		t.Fatalf("version %q commit %q", ver, com)
	}
	ver, com = cmdline.Stamp("v1", "c1")
	if ver != "v1" || com != "c1" {
		t.Errorf("set values replaced: %q %q", ver, com)
	}
	var out, errb bytes.Buffer
	if code := Main(context.Background(), Env{Stdout: &out, Stderr: &errb}, []string{"version", "--bogus"}); code != ExitUsage {
		t.Errorf("version --bogus: exit %d", code)
	}
	out.Reset()
	if code := Main(context.Background(), Env{Stdout: &out, Stderr: &errb}, []string{"--help"}); code != ExitClean || !strings.Contains(out.String(), "domainm --version") || !strings.Contains(out.String(), "  version ") {
		t.Errorf("--help does not list version:\n%s", out.String())
	}
}

// TestRunFirstLogLineAndBuildInfo: the daemon's first log line names its version and
// its configuration file, and /metrics has domainm_build_info.
func TestRunFirstLogLineAndBuildInfo(t *testing.T) {
	s, p, metrics := startMetricsDaemon(t)
	// The binary's own answer: a `go build` may stamp VCS information a test binary lacks.
	out, err := exec.Command(domainmBinary(t), "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var v VersionInfo
	if err := json.Unmarshal(out, &v); err != nil || v.Version == "" || v.Commit == "" {
		t.Fatalf("version --json: %v %s", err, out)
	}
	first, _, _ := strings.Cut(p.stderr.String(), "\n")
	for _, w := range []string{`msg="domainm starting"`, "version=" + v.Version, "commit=" + v.Commit, "libyara=" + v.Libyara, "config=" + s.cfg} {
		if !strings.Contains(first, w) {
			t.Errorf("first log line %q lacks %q", first, w)
		}
	}
	body := httpGet(t, metrics)
	want := fmt.Sprintf(`domainm_build_info{commit=%q,goversion=%q,libyara=%q,version=%q} 1`, v.Commit, v.GoVersion, v.Libyara, v.Version)
	if !strings.Contains(body, want) {
		t.Errorf("/metrics lacks %s", want)
	}
	if _, code := p.stop(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

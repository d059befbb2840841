// Package deb builds Domain M's Debian packages (build.sh, with nfpm) and make install's
// tree (install.sh); its test installs and removes the packages with the real dpkg.
package deb

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// dpkgRoot makes a private root for dpkg --root: an empty admin dir, nothing else.
func dpkgRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	adm := filepath.Join(root, "var/lib/dpkg")
	for _, d := range []string{"info", "updates", "triggers"} {
		if err := os.MkdirAll(filepath.Join(adm, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"status", "available"} {
		os.WriteFile(filepath.Join(adm, f), nil, 0o644)
	}
	return root
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func gunzip(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(z)
	return string(b)
}

// debFiles lists the regular files of a .deb (dpkg-deb -c), as absolute paths.
func debFiles(t *testing.T, deb string) []string {
	var files []string
	for _, l := range strings.Split(run(t, "dpkg-deb", "-c", deb), "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 && strings.HasPrefix(f[0], "-") {
			files = append(files, strings.TrimPrefix(f[5], "."))
		}
	}
	return files
}

// TestPackages builds domainm and domainm-migrate .debs and installs, removes and purges
// them with the real dpkg in a private root (dpkg --root with an empty admin dir).
// --force-depends: libyara9, which domainm depends on, is not in that root (the host's
// libyara runs the installed binary below).
func TestPackages(t *testing.T) {
	for _, tool := range []string{"dpkg", "dpkg-deb", "go", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found", tool)
		}
	}
	out := t.TempDir()
	build := exec.Command("./build.sh", out)
	build.Env = append(os.Environ(), "VERSION=v1.4.2-3-gabcdef0-dirty", "COMMIT=abcdef0123")
	b, err := build.Output()
	if err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	appDeb := filepath.Join(out, "domainm_1.4.2+3+gabcdef0+dirty_amd64.deb")
	hostDeb := filepath.Join(out, "domainm-migrate_1.4.2+3+gabcdef0+dirty_amd64.deb")
	if !exists(appDeb) || !exists(hostDeb) {
		t.Fatalf("build.sh made:\n%s", b)
	}
	info := run(t, "dpkg-deb", "-I", appDeb)
	for _, w := range []string{"Package: domainm\n", "Version: 1.4.2+3+gabcdef0+dirty\n", "Depends: libyara9\n", "Architecture: amd64\n"} {
		if !strings.Contains(info, w) {
			t.Errorf("domainm control lacks %q:\n%s", w, info)
		}
	}
	ctl := t.TempDir()
	run(t, "dpkg-deb", "-e", appDeb, ctl)
	cf, _ := os.ReadFile(filepath.Join(ctl, "conffiles"))
	wantConf := []string{"/etc/domainm/domainm.toml", "/etc/domainm/rules/eicar.yar", "/etc/logrotate.d/domainm"}
	for _, w := range wantConf {
		if !slices.Contains(strings.Fields(string(cf)), w) {
			t.Errorf("conffiles lack %s:\n%s", w, cf)
		}
	}
	if scripts, _ := filepath.Glob(filepath.Join(ctl, "*inst")); len(scripts) > 0 {
		t.Errorf("maintainer scripts %v: the unit is not enabled and the hook not linked on install", scripts)
	}

	root := dpkgRoot(t)
	dpkg := func(args ...string) string {
		t.Helper()
		return run(t, "dpkg", append([]string{"--root=" + root, "--force-depends", "--force-script-chrootless"}, args...)...)
	}
	dpkg("-i", appDeb, hostDeb)
	for _, f := range []string{"usr/bin/domainm", "usr/bin/domainm-migrate", "lib/systemd/system/domainm.service",
		"etc/domainm/domainm.toml", "etc/domainm/rules/linux_rootkits.yar", "etc/logrotate.d/domainm",
		"usr/share/domainm/policy/default.toml", "usr/share/man/man8/domainm.8.gz", "usr/share/man/man8/domainm-migrate.8.gz",
		"usr/share/bash-completion/completions/domainm", "usr/share/bash-completion/completions/domainm-migrate",
		"usr/share/doc/domainm/README.md", "usr/share/doc/domainm-migrate/README.md"} {
		if !exists(filepath.Join(root, f)) {
			t.Errorf("/%s not installed", f)
		}
	}
	if exists(filepath.Join(root, "etc/libvirt/hooks/qemu")) {
		t.Error("the libvirt hook was linked on install")
	}
	if st, err := os.Stat(filepath.Join(root, "etc/domainm/domainm.toml")); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("domainm.toml mode: %v %v", st, err)
	}
	// The installed binaries run and say what they are.
	v := run(t, filepath.Join(root, "usr/bin/domainm"), "--version")
	if !strings.HasPrefix(v, "domainm v1.4.2-3-gabcdef0-dirty\ncommit:  abcdef0123\n") || !strings.Contains(v, "libyara: 4.") {
		t.Errorf("domainm --version:\n%s", v)
	}
	v = run(t, filepath.Join(root, "usr/bin/domainm-migrate"), "--version")
	if !strings.HasPrefix(v, "domainm-migrate v1.4.2-3-gabcdef0-dirty\ncommit:  abcdef0123\n") {
		t.Errorf("domainm-migrate --version:\n%s", v)
	}
	if f := run(t, "file", "-L", filepath.Join(root, "usr/bin/domainm-migrate")); !strings.Contains(f, "statically linked") {
		t.Errorf("domainm-migrate is not cgo-free: %s", f)
	}

	// The unit's Documentation= names the installed man page; systemd-analyze verify (which
	// runs man for it) accepts the installed unit.
	unit, _ := os.ReadFile(filepath.Join(root, "lib/systemd/system/domainm.service"))
	if !regexp.MustCompile(`(?m)^Documentation=man:domainm\(8\)`).Match(unit) {
		t.Errorf("unit's Documentation=:\n%s", unit)
	}
	page := gunzip(t, filepath.Join(root, "usr/share/man/man8/domainm.8.gz"))
	if !strings.HasPrefix(page, ".TH DOMAINM 8") {
		t.Errorf("domainm.8: %.60q", page)
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		u := filepath.Join(t.TempDir(), "domainm.service")
		os.WriteFile(u, bytes.ReplaceAll(unit, []byte("/usr/bin/domainm"), []byte(filepath.Join(root, "usr/bin/domainm"))), 0o644)
		verify := exec.Command("systemd-analyze", "verify", u)
		verify.Env = append(os.Environ(), "MANPATH="+filepath.Join(root, "usr/share/man"))
		if o, err := verify.CombinedOutput(); err != nil || len(bytes.TrimSpace(o)) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, o)
		}
	} else {
		t.Log("systemd-analyze not installed: unit not verified")
	}
	// Every command of --help is in the man page and the bash completion.
	for _, p := range []string{"domainm", "domainm-migrate"} {
		help := run(t, filepath.Join(root, "usr/bin", p), "--help")
		page := gunzip(t, filepath.Join(root, "usr/share/man/man8", p+".8.gz"))
		comp, _ := os.ReadFile(filepath.Join(root, "usr/share/bash-completion/completions", p))
		for _, m := range regexp.MustCompile(`(?m)^  ([a-z-]+)( [a-z]+)?  `).FindAllStringSubmatch(help, -1) {
			if !strings.Contains(page, ".B "+m[1]+m[2]) {
				t.Errorf("%s.8 lacks command %q", p, m[1]+m[2])
			}
			if !strings.Contains(string(comp), " "+m[1]+" ") && !strings.Contains(string(comp), `"`+m[1]+" ") {
				t.Errorf("%s completion lacks command %q", p, m[1])
			}
		}
	}
	// The completion completes commands and a command's flags (from its --help).
	sh := `source "$1"; PATH="$2:$PATH"
COMP_WORDS=(domainm ve); COMP_CWORD=1; _domainm; echo "${COMPREPLY[*]}"
COMP_WORDS=(domainm run --check); COMP_CWORD=2; _domainm; echo "${COMPREPLY[*]}"
COMP_WORDS=(domainm rules check --pro); COMP_CWORD=3; _domainm; echo "${COMPREPLY[*]}"`
	got := run(t, "bash", "-c", sh, "bash", filepath.Join(root, "usr/share/bash-completion/completions/domainm"), filepath.Join(root, "usr/bin"))
	if got != "version\n--check-config\n--profile\n" {
		t.Errorf("completion:\n%s", got)
	}
	if _, err := exec.LookPath("logrotate"); err == nil {
		// -d: parse and dry-run only.
		if o, err := exec.Command("logrotate", "-d", filepath.Join(root, "etc/logrotate.d/domainm")).CombinedOutput(); err != nil || bytes.Contains(o, []byte("error")) {
			t.Errorf("logrotate -d: %v\n%s", err, o)
		}
	} else {
		t.Error("logrotate not installed (make deps installs it)")
	}

	// dpkg -r keeps the conffiles (an edited one as edited), dpkg -P removes them.
	cfg := filepath.Join(root, "etc/domainm/domainm.toml")
	os.WriteFile(cfg, []byte("# edited by the operator\n"), 0o640)
	dpkg("-r", "domainm", "domainm-migrate")
	if exists(filepath.Join(root, "usr/bin/domainm")) || exists(filepath.Join(root, "usr/bin/domainm-migrate")) || exists(filepath.Join(root, "lib/systemd/system/domainm.service")) {
		t.Error("dpkg -r left the binaries or the unit")
	}
	if b, err := os.ReadFile(cfg); err != nil || string(b) != "# edited by the operator\n" {
		t.Errorf("dpkg -r did not keep the edited conffile: %q %v", b, err)
	}
	for _, f := range wantConf {
		if !exists(filepath.Join(root, f)) {
			t.Errorf("dpkg -r removed conffile %s", f)
		}
	}
	if st := run(t, "dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "-W", "-f=${Package} ${Status}\n"); !strings.Contains(st, "domainm deinstall ok config-files") {
		t.Errorf("status after -r:\n%s", st)
	}
	dpkg("-P", "domainm", "domainm-migrate")
	for _, f := range wantConf {
		if exists(filepath.Join(root, f)) {
			t.Errorf("dpkg -P left conffile %s", f)
		}
	}
	if exists(filepath.Join(root, "etc/domainm")) {
		t.Error("dpkg -P left /etc/domainm")
	}

	// make install (install.sh) lays out the same files as the two packages.
	bins := t.TempDir()
	for _, p := range []string{"domainm", "domainm-migrate"} {
		os.WriteFile(filepath.Join(bins, p), []byte("#!/bin/sh\n"), 0o755)
	}
	dest := t.TempDir()
	run(t, "./install.sh", dest, bins)
	var tree []string
	filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			tree = append(tree, strings.TrimPrefix(p, dest))
		}
		return nil
	})
	pkgs := append(debFiles(t, appDeb), debFiles(t, hostDeb)...)
	sort.Strings(tree)
	sort.Strings(pkgs)
	if !slices.Equal(tree, pkgs) {
		t.Errorf("make install's files differ from the packages':\n%v\n%v", tree, pkgs)
	}
}

package xenlab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseLdd(t *testing.T) {
	out := `	linux-vdso.so.1 (0x00007ffd)
	libyara.so.9 => /lib/x86_64-linux-gnu/libyara.so.9 (0x00007f23)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f24)
	/lib64/ld-linux-x86-64.so.2 (0x00007f25)
`
	ns, err := ParseLdd([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []Needed{{"libyara.so.9", "/lib/x86_64-linux-gnu/libyara.so.9"}, {"libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"},
		{"ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2"}}
	if len(ns) != len(want) {
		t.Fatalf("got %v, want %v", ns, want)
	}
	for i := range want {
		if ns[i] != want[i] {
			t.Fatalf("got %v, want %v", ns, want)
		}
	}
	if _, err := ParseLdd([]byte("\tlibyara.so.9 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n")); err == nil || !strings.Contains(err.Error(), "libyara.so.9") {
		t.Fatalf("a library ldd did not find: err = %v", err)
	}
}

// TestPackDynamicSupervisor packs the real supervisor (appliance/cmd/domainm, cgo on
// libyara) into an empty tree as the Xen lab's Domain M initrd would hold it, checks
// that every object ldd names is there with the host file's size, and runs
// `domainm version` (which asks libyara for its version) with the tree as its root.
// Without libyara in the tree the same run must fail: the chroot is what proves the
// tree self-sufficient.
func TestPackDynamicSupervisor(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "domainm")
	build := exec.Command("go", "build", "-o", bin, "./appliance/cmd/domainm")
	build.Dir = filepath.Join("..", "..", "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build domainm: %v\n%s", err, out)
	}
	tree := filepath.Join(dir, "tree")
	ns, err := PackDynamic(tree, bin, "bin/domainm")
	if err != nil {
		t.Fatal(err)
	}
	var yara string
	for _, n := range ns {
		host, err := os.Stat(n.Path)
		if err != nil {
			t.Fatal(err)
		}
		packed, err := os.Stat(filepath.Join(tree, n.Path))
		if err != nil {
			t.Fatalf("%s (%s) not in the packed tree: %v", n.Name, n.Path, err)
		}
		if packed.Size() != host.Size() || !packed.Mode().IsRegular() {
			t.Fatalf("%s: packed %d bytes (%v), host %d", n.Path, packed.Size(), packed.Mode(), host.Size())
		}
		if strings.HasPrefix(n.Name, "libyara.so") {
			yara = n.Path
		}
	}
	if yara == "" {
		t.Fatalf("ldd names no libyara: %v", ns)
	}
	t.Logf("packed %d shared objects with domainm: %v", len(ns), ns)
	run := func() (string, error) {
		args := []string{tree, "/bin/domainm", "version"}
		name := "chroot"
		if os.Geteuid() != 0 { // a user namespace makes chroot possible without root
			name, args = "unshare", append([]string{"-r", "chroot"}, args...)
		}
		cmd := exec.Command(name, args...)
		cmd.Env = []string{} // nothing of the host's environment (LD_LIBRARY_PATH, ...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run()
	if err != nil || !strings.Contains(out, "libyara: ") {
		t.Fatalf("domainm version in the packed tree: %v\n%s", err, out)
	}
	t.Logf("in the packed tree: %s", strings.TrimSpace(out))
	if err := os.Remove(filepath.Join(tree, yara)); err != nil {
		t.Fatal(err)
	}
	if out, err := run(); err == nil || !strings.Contains(out, "libyara") {
		t.Fatalf("domainm ran without libyara in the tree: err %v\n%s", err, out)
	}
}

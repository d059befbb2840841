package xenlab

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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
	tree, ns := packSupervisor(t)
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
	out, err := inTree(tree, "/bin/domainm", "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "libyara: ") {
		t.Fatalf("domainm version in the packed tree: %v\n%s", err, out)
	}
	t.Logf("in the packed tree: %s", strings.TrimSpace(string(out)))
	if err := os.Remove(filepath.Join(tree, yara)); err != nil {
		t.Fatal(err)
	}
	if out, err := inTree(tree, "/bin/domainm", "version").CombinedOutput(); err == nil || !strings.Contains(string(out), "libyara") {
		t.Fatalf("domainm ran without libyara in the tree: err %v\n%s", err, out)
	}
}

// packSupervisor builds appliance/cmd/domainm and packs it into a new tree at bin/domainm.
func packSupervisor(t *testing.T) (string, []Needed) {
	t.Helper()
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
	return tree, ns
}

// inTree is a command run with tree as its root and none of the host's environment
// (LD_LIBRARY_PATH, ...); without root, in a user namespace that makes chroot possible.
func inTree(tree string, args ...string) *exec.Cmd {
	name, a := "chroot", append([]string{tree}, args...)
	if os.Geteuid() != 0 {
		name, a = "unshare", append([]string{"-r", "chroot"}, a...)
	}
	cmd := exec.Command(name, a...)
	cmd.Env = []string{}
	return cmd
}

// TestPackedSupervisorScans runs the real supervisor from the packed tree with the lab's
// Domain M configuration (image/xen/domainm.toml) and marker rule (image/xen/rules),
// as Domain M's initrd would hold them, with two lines replaced because this machine
// has no Xen: the memory source is a RAM file (not xen:granted) and the control channel a
// unix socket (not xenstore). It checks the configuration (domainm run --check-config),
// then waits for the alert the lab's dom0 would read from Domain M's console: the
// marker's guest-physical address and its seed.
func TestPackedSupervisorScans(t *testing.T) {
	tree, _ := packSupervisor(t)
	x := filepath.Join("..", "..", "..", "image", "xen")
	cfg, err := os.ReadFile(filepath.Join(x, "domainm.toml"))
	if err != nil {
		t.Fatal(err)
	}
	c := string(cfg)
	for _, r := range [][2]string{
		{`memory = "xen:granted"`, "memory = \"file:/target.ram\"\nlayout = \"flat\""},
		{`device = "/dev/xen/xenbus"`, `socket = "/run/domainm/control.sock"`},
	} {
		if !strings.Contains(c, r[0]) {
			t.Fatalf("image/xen/domainm.toml has no %s", r[0])
		}
		c = strings.Replace(c, r[0], r[1], 1)
	}
	rules := filepath.Join(tree, "etc", "domainm", "rules")
	for _, d := range []string{rules, filepath.Join(tree, "run", "domainm"), filepath.Join(tree, "var", "lib", "domainm"), filepath.Join(tree, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tree, "etc", "domainm", "domainm.toml"), []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
	yar, err := os.ReadFile(filepath.Join(x, "rules", "xenlab-marker.yar"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rules, "xenlab-marker.yar"), yar, 0o644); err != nil {
		t.Fatal(err)
	}
	// 16 MiB of guest RAM with the marker at a known guest-physical address
	ram := make([]byte, 16<<20)
	seed := fmt.Sprintf("%016x", time.Now().UnixNano())
	const gpa = 0x9e4123
	copy(ram[gpa:], "DOMAINM-XENLAB-PLANT:"+seed)
	if err := os.WriteFile(filepath.Join(tree, "target.ram"), ram, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := inTree(tree, "/bin/domainm", "run", "--check-config", "--config", "/etc/domainm/domainm.toml").CombinedOutput(); err != nil {
		t.Fatalf("domainm run --check-config in the packed tree: %v\n%s", err, out)
	}
	run := inTree(tree, "/bin/domainm", "run", "--config", "/etc/domainm/domainm.toml")
	var log bytes.Buffer
	run.Stdout, run.Stderr = &log, &log
	run.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- run.Wait() }()
	defer func() {
		syscall.Kill(-run.Process.Pid, syscall.SIGKILL)
		<-done
	}()
	alerts := filepath.Join(tree, "var", "lib", "domainm", "alerts.jsonl")
	wait := func(seed string, gpa int) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute) // a pass of 16 MiB takes well under a second unloaded
		for {
			if m, ok := markerAlert(t, alerts, seed); ok {
				if m.Address != fmt.Sprintf("%#x", gpa) || m.DataText != "DOMAINM-XENLAB-PLANT:"+seed {
					t.Fatalf("marker alert: address %s, data %q; want %#x, the seed %s", m.Address, m.DataText, gpa, seed)
				}
				t.Logf("marker found by the packed supervisor at %s: %s", m.Address, m.DataText)
				return
			}
			select {
			case err := <-done:
				done <- err
				t.Fatalf("domainm run ended before finding the marker: %v\n%s", err, log.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("no alert for marker %s in %s after 3 min; domainm run's log:\n%s", seed, alerts, log.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	wait(seed, gpa)
	// a second marker while it runs (the lab plants again at B): the same rule's
	// finding gets new content, alerted with its address and seed too
	seed2 := fmt.Sprintf("%016x", time.Now().UnixNano()+1)
	const gpa2 = 0x3f0055
	f, err := os.OpenFile(filepath.Join(tree, "target.ram"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("DOMAINM-XENLAB-PLANT:"+seed2), gpa2); err != nil {
		t.Fatal(err)
	}
	f.Close()
	wait(seed2, gpa2)
	// it stops cleanly on SIGTERM, as Domain M's init would stop it
	run.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("domainm run after SIGTERM: %v\n%s", err, log.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("domainm run still running 2 min after SIGTERM")
	}
}

type markerMatch struct {
	Address  string `json:"address"`
	DataText string `json:"data_text"`
}

// markerAlert returns the match of the xenlab_marker rule carrying seed in the alert
// file (JSON lines), if there is one yet.
func markerAlert(t *testing.T, path, seed string) (markerMatch, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return markerMatch{}, false
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		var ev struct {
			Rule *struct {
				Name string `json:"name"`
			} `json:"rule"`
			DomainM struct {
				Matches []markerMatch `json:"matches"`
			} `json:"domainm"`
		}
		if json.Unmarshal(line, &ev) != nil || ev.Rule == nil || ev.Rule.Name != "xenlab_marker" {
			continue
		}
		for _, m := range ev.DomainM.Matches {
			if strings.HasSuffix(m.DataText, seed) {
				return m, true
			}
		}
	}
	return markerMatch{}, false
}

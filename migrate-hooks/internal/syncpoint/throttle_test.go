package syncpoint_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// throttle limits this test process (the coordinator and the stand-in supervisor; not
// the QEMUs, started before) to quota of CPU time per 100 ms, in a CPU cgroup it creates
// (v2's cpu.max where the cpu controller is on the unified hierarchy, else v1's CFS
// quota), and takes the process out and removes the cgroup at cleanup. It fails the
// test where neither can be written (the test needs root).
func throttle(t *testing.T, quota time.Duration) {
	t.Helper()
	pid := strconv.Itoa(os.Getpid())
	name := "domainm-throttle-" + pid
	var dir, home string
	var limits [][2]string
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil && strings.Contains(" "+string(b)+" ", " cpu ") {
		home = filepath.Join("/sys/fs/cgroup", v2Path(t))
		dir = filepath.Join(home, name)
		limits = [][2]string{{"cpu.max", fmt.Sprintf("%d 100000", quota.Microseconds())}}
	} else {
		home = filepath.Join("/sys/fs/cgroup/cpu", v1Path(t, "cpu"))
		dir = filepath.Join(home, name)
		limits = [][2]string{{"cpu.cfs_period_us", "100000"}, {"cpu.cfs_quota_us", strconv.FormatInt(quota.Microseconds(), 10)}}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("a CPU cgroup to slow the coordinator down: %v", err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(filepath.Join(home, "cgroup.procs"), []byte(pid), 0); err != nil {
			t.Errorf("moving the test process back to %s: %v", home, err)
		}
		if err := os.Remove(dir); err != nil {
			t.Errorf("removing %s: %v", dir, err)
		}
	})
	for _, l := range limits {
		if err := os.WriteFile(filepath.Join(dir, l[0]), []byte(l[1]), 0); err != nil {
			t.Fatalf("%s: %v", l[0], err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(pid), 0); err != nil {
		t.Fatalf("moving the test process into %s: %v", dir, err)
	}
	t.Logf("test process throttled to %v of CPU per 100 ms (%s)", quota, dir)
}

// v2Path is this process's cgroup on the unified hierarchy ("0::/path").
func v2Path(t *testing.T) string {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p
		}
	}
	return "/"
}

// v1Path is this process's cgroup in the v1 hierarchy of controller ("N:cpu,cpuacct:/path").
func v1Path(t *testing.T, controller string) string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 && slices.Contains(strings.Split(f[1], ","), controller) {
			return f[2]
		}
	}
	return "/"
}

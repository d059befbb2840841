package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// buildPrefix names the folders GoBuild builds into, with the test process's pid.
const buildPrefix = "testenv-gobuild-"

var builds struct {
	sync.Mutex
	dir  string
	once map[string]*build
}

type build struct {
	once sync.Once
	n    int // names the build's own subfolder
	bin  string
	err  error
}

// GoBuild builds the main package pkg (an import path) with go build flags once per
// test process and returns the binary's path; later calls with the same package and
// flags return the same binary. The binaries go to a folder named after this process:
// there is no hook that runs when a test binary exits, so each process removes the
// folders of earlier test processes that are gone instead.
func GoBuild(t testing.TB, pkg string, flags ...string) string {
	t.Helper()
	key := strings.Join(append([]string{pkg}, flags...), "\x00")
	builds.Lock()
	if builds.once == nil {
		builds.once = map[string]*build{}
	}
	b := builds.once[key]
	if b == nil {
		b = &build{n: len(builds.once)}
		builds.once[key] = b
	}
	builds.Unlock()
	b.once.Do(func() { b.bin, b.err = goBuild(pkg, flags, b.n) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

func goBuild(pkg string, flags []string, n int) (string, error) {
	dir, err := buildDir()
	if err != nil {
		return "", err
	}
	// A subfolder per build keeps the binary's own name (it may print it).
	sub := filepath.Join(dir, fmt.Sprint(n))
	if err := os.Mkdir(sub, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(sub, path.Base(pkg))
	args := append(append([]string{"build"}, flags...), "-o", bin, pkg)
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}

// buildDir makes this process's folder once, removing those of dead test processes.
func buildDir() (string, error) {
	builds.Lock()
	defer builds.Unlock()
	if builds.dir != "" {
		return builds.dir, nil
	}
	removeStale()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", buildPrefix, os.Getpid()))
	if err != nil {
		return "", err
	}
	builds.dir = dir
	return dir, nil
}

func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), buildPrefix+"*"))
	for _, d := range dirs {
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(d), buildPrefix+"%d-", &pid); err != nil || pid <= 0 {
			continue
		}
		if p, err := os.FindProcess(pid); err == nil {
			if err := p.Signal(syscall.Signal(0)); errors.Is(err, os.ErrProcessDone) || errors.Is(err, syscall.ESRCH) {
				os.RemoveAll(d)
			}
		}
	}
}

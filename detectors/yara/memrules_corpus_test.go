package yara_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
	"github.com/domainm/domainm/memscan/vmtest"
)

// publicSets are the public rule sets kept beside the repository (never copied into it).
var publicSets = []string{"signature-base", "reversinglabs", "elastic-protections-artifacts"}

func corpus(t *testing.T, parts ...string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(append([]string{filepath.Dir(file), "..", "..", "..", "shared", "corpora"}, parts...)...)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s not found: %v", p, err)
	}
	return p
}

// cleanImage builds a memory image from this machine's files as a clean guest's page
// cache holds them: every window starts with the first 64 KiB of a program (Windows PE
// files where the machine has some, such as the launchers pip ships, and ELF files),
// followed by documents and libraries. That is the case where a rule written for files
// mistakes a window for a file that starts with MZ or ELF. DOMAINM_CLEAN_MEMORY names an
// existing image (a RAM dump of a clean guest) instead.
func cleanImage(t *testing.T, size int) string {
	t.Helper()
	if p := os.Getenv("DOMAINM_CLEAN_MEMORY"); p != "" {
		return p
	}
	walk := func(want func([]byte) bool, limit int, dirs ...string) [][]byte {
		var out [][]byte
		for _, dir := range dirs {
			filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err != nil || len(out) >= limit {
					return filepath.SkipDir
				}
				if !d.Type().IsRegular() {
					return nil
				}
				b, err := os.ReadFile(p)
				if err == nil && len(b) > 512 && want(b) {
					out = append(out, b[:min(len(b), 64<<10)])
				}
				return nil
			})
		}
		return out
	}
	home, _ := os.UserHomeDir()
	isPE := func(b []byte) bool { return b[0] == 'M' && b[1] == 'Z' }
	isELF := func(b []byte) bool { return string(b[:4]) == "\x7fELF" }
	heads := walk(isPE, 200, "/usr/lib/python3", "/usr/share", filepath.Join(home, ".pyenv"), filepath.Join(home, "go", "pkg", "mod"))
	heads = append(heads, walk(isELF, 400, "/usr/bin", "/usr/sbin")...)
	fill := walk(func([]byte) bool { return true }, 4000, "/usr/share/doc", "/usr/lib/x86_64-linux-gnu", "/etc")
	if len(heads) == 0 || len(fill) == 0 {
		t.Skip("no programs or documents on this machine to build a clean image from")
	}
	img := make([]byte, size)
	window, fi := memscan.DefaultBlockSize, 0
	for w := 0; w+window <= size; w += window {
		off := w + copy(img[w:w+window], heads[(w/window)%len(heads)])
		for off < w+window-4096 {
			off = (off + 4095) &^ 4095
			off += copy(img[off:w+window], fill[fi%len(fill)])
			fi++
		}
	}
	plantControl(img)
	p := filepath.Join(t.TempDir(), "clean.raw")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("clean image: %d MiB, %d program heads (%d windows), %d fill files", size>>20, len(heads), size/window, fi)
	return p
}

// TestPublicRulesCleanMemory (issue 9 item 12): the public rule sets scanned over clean
// memory report no rule that yara does not report on the same bytes as one file. A rule
// that matches only in domainm would match because of the window (its size, what starts
// it, where its offsets count from).
func TestPublicRulesCleanMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("scans the public rule sets (-short)")
	}
	yaraCLI, err := exec.LookPath("yara")
	if err != nil {
		t.Fatal("yara not installed (Debian package yara): ", err)
	}
	images := []string{cleanImage(t, 64<<20)}
	if os.Getenv("DOMAINM_CLEAN_MEMORY") == "" {
		images = append(images, cleanGuestRAM(t))
	}
	for _, img := range images {
		for _, set := range publicSets {
			t.Run(filepath.Base(img)+"/"+set, func(t *testing.T) { checkCleanMemory(t, yaraCLI, img, set) })
		}
	}
}

// cleanGuestRAM boots a clean Linux guest (this machine's kernel, a busybox initramfs)
// under TCG with 256 MiB, waits until it runs its init, stops it and returns a copy of
// its RAM.
func cleanGuestRAM(t *testing.T) string {
	t.Helper()
	kernel, err := vmtest.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(t.TempDir(), "initrd.cpio")
	if err := vmtest.BuildInitramfs(initrd, "echo VMTEST-READY\nwhile true; do sleep 1; done", nil); err != nil {
		t.Fatal(err)
	}
	vm := vmtest.Start(t, vmtest.Config{Memory: 256 << 20, Kernel: kernel, Initrd: initrd, Append: "quiet panic=-1"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := vm.WaitSerial(ctx, "VMTEST-READY"); err != nil {
		t.Fatal(err)
	}
	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(vm.RAMFile)
	if err != nil {
		t.Fatal(err)
	}
	plantControl(b)
	p := filepath.Join(t.TempDir(), "clean-guest.raw")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	vm.Close()
	return p
}

// control is the one thing planted in the clean images, a positive control: a string
// signature-base's gen_invoke_mimikatz.yar (rule Invoke_Mimikatz, plain strings, no
// window dependence) detects, so a harness that finds nothing at all fails.
const (
	control     = "Write-BytesToMemory -Bytes $Shellcode1 -MemoryAddress $GetCommandLineWAddrTemp"
	controlRule = "gen_invoke_mimikatz:Invoke_Mimikatz"
	controlAt   = 0x123456
)

func plantControl(img []byte) { copy(img[controlAt:], " "+control+" ") }

func checkCleanMemory(t *testing.T, yaraCLI, img, set string) {
	src, err := memscan.Open("file:"+img, memscan.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	{
		{
			dir := corpus(t, "yara-rules", set, "yara")
			r, err := yara.Compile(dir)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			res, err := memscan.NewDriver(memscan.DriverConfig{}).Pass(context.Background(), src, memscan.PassOptions{
				Rules: func() memscan.RuleSet { return yara.MemoryRules{Rules: r} },
			})
			if err != nil || len(res.Errors) > 0 {
				t.Fatalf("pass: %v %v", err, res.Errors)
			}
			took := time.Since(start)
			ours := map[string]bool{}
			for _, m := range res.Matches {
				ours[m.Namespace+":"+m.Rule] = true
			}
			// yara over the image as one file, each rule file in its namespace.
			args := []string{"-e", "-w"}
			for k := range yara.Externals {
				args = append(args, "-d", k+"=")
			}
			for _, f := range r.Files() {
				args = append(args, yara.Namespace(f)+":"+filepath.Join(dir, f))
			}
			out, err := exec.Command(yaraCLI, append(args, img)...).Output()
			if err != nil {
				t.Fatalf("yara: %v", err)
			}
			theirs := map[string]bool{}
			for _, l := range strings.Split(string(out), "\n") {
				if f := strings.Fields(l); len(f) == 2 {
					theirs[f[0]] = true
				}
			}
			var only []string
			for k := range ours {
				if !theirs[k] {
					only = append(only, k)
				}
			}
			sort.Strings(only)
			t.Logf("%s on %s (%d MiB): domainm %d rules in %v, yara %d; only domainm: %d %v",
				set, filepath.Base(img), res.BytesTotal>>20, len(ours), took.Round(time.Millisecond), len(theirs), len(only), only)
			if len(only) > 0 {
				t.Errorf("%d rules match in memory but not in yara's file scan of the same bytes: %v", len(only), only)
			}
			if set == "signature-base" && os.Getenv("DOMAINM_CLEAN_MEMORY") == "" && (!ours[controlRule] || !theirs[controlRule]) {
				t.Errorf("positive control %s: found by domainm %v, by yara %v", controlRule, ours[controlRule], theirs[controlRule])
			}
		}
	}
}

package linux

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/domainm/domainm/memscan"
	"github.com/domainm/domainm/memscan/vmtest"
)

// The modules the test guest loads (no dependencies in Debian 12's 6.1 kernel).
var guestModules = []string{"kernel/drivers/block/brd.ko", "kernel/drivers/block/nbd.ko", "kernel/lib/crc7.ko"}

// guestScript prints the guest's own view between markers, using shell builtins for
// the process listing so that no process it forks is left in or missing from it, then
// blocks on the console without forking, so the task list stays as listed.
const guestScript = `
for m in $MODS; do insmod /mods/$(basename $m) || echo "INSMOD-FAILED $m"; done
sleep 100000 &
sh -c 'M=DOMAINM-ATTRIB; M="$M-MARKER-$$-0123456789"; echo $$ > /tmp/attrib.pid; read x' < /dev/console &
while [ ! -s /tmp/attrib.pid ]; do sleep 1; done
read AP < /tmp/attrib.pid
echo "ATTRIB-PID $AP"
echo PAGEMAP-BEGIN
while read range perms off dev ino name; do
  case "$name" in
  "[heap]"|"[stack]")
    a=$((0x${range%-*})); e=$((0x${range#*-}))
    while [ $a -lt $e ]; do
      echo "PM $a $(dd if=/proc/$AP/pagemap bs=8 skip=$((a/4096)) count=1 2>/dev/null | od -An -tx8)"
      a=$((a+4096))
    done;;
  esac
done < /proc/$AP/maps
echo PAGEMAP-END
echo KALLSYMS-BEGIN
cat /proc/kallsyms
echo KALLSYMS-END
echo MODULES-BEGIN
while read l; do echo "MOD $l"; done < /proc/modules
echo MODULES-END
echo PROCS-BEGIN
for d in /proc/[0-9]*; do
  read s < $d/stat && echo "STAT $s"
  while read k a b; do [ "$k" = Uid: ] && echo "UID ${d#/proc/} $a"; done < $d/status
  c=""; read -r c < $d/cmdline; echo "CMD ${d#/proc/} $c"
done
echo PROCS-END
read x
`

// guest is a booted test guest, stopped after it printed its own view.
type guest struct {
	vm      *vmtest.VM
	src     memscan.Source
	serial  string
	kallsym []kallsymLine
	modules []procModule
	procs   map[int]procStat
	// The process holding the attribution marker (in its shell variable) and its own
	// /proc/PID/pagemap for its heap and stack: page VA -> pagemap entry.
	attribPID int
	pagemap   map[uint64]uint64
	k         *Kernel
}

type kallsymLine struct {
	addr uint64
	typ  byte
	name string
	mod  string // "" for the core kernel
}

type procModule struct {
	name string
	size uint64
	base uint64
}

type procStat struct {
	pid, ppid, uid int
	comm           string
	startTicks     uint64
	cmdline        string // /proc/PID/cmdline as the shell's read returns it
}

// TestMain stops the shared guest (and removes its RAM file and initramfs) after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if guestVal != nil {
		guestVal.src.Close()
		guestVal.vm.Close()
	}
	if guestDir != "" {
		os.RemoveAll(guestDir)
	}
	os.Exit(code)
}

var (
	guestDir  string // the initramfs's folder
	guestOnce sync.Once
	guestVal  *guest
	guestErr  error
)

// bootGuest boots (once per test binary) the Debian kernel under TCG with KASLR on and
// 2 vCPUs; its init loads guestModules and prints kallsyms, modules and processes.
// With DOMAINM_LINUX_FIXTURE=DIR it also copies the RAM file and console there.
func bootGuest(t *testing.T) *guest {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a TCG guest (-short)")
	}
	guestOnce.Do(func() { guestVal, guestErr = doBoot() })
	if guestErr != nil {
		t.Fatal(guestErr)
	}
	return guestVal
}

func doBoot() (*guest, error) {
	kernel, err := vmtest.Kernel()
	if err != nil {
		return nil, err
	}
	rel := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	dir, err := os.MkdirTemp("", "linux-guest-")
	if err != nil {
		return nil, err
	}
	guestDir = dir
	files := map[string][]byte{}
	var names []string
	for _, m := range guestModules {
		b, err := os.ReadFile(filepath.Join("/lib/modules", rel, m))
		if err != nil {
			return nil, fmt.Errorf("module for the test guest (install linux-image-%s): %w", rel, err)
		}
		files["mods/"+filepath.Base(m)] = b
		names = append(names, filepath.Base(m))
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	script := "MODS=\"" + strings.Join(names, " ") + "\"\n" + guestScript
	if err := vmtest.BuildInitramfs(initrd, script, files); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	vm, err := vmtest.Launch(ctx, vmtest.Config{
		Memory: 256 << 20, Kernel: kernel, Initrd: initrd, Accel: "tcg",
		// no_timer_check: under load the TCG guest fails the IO-APIC timer check and panics.
		Append: "quiet panic=-1 no_timer_check", Extra: []string{"-smp", "2"}, Timeout: 2 * time.Minute,
	})
	if err != nil {
		return nil, err
	}
	if err := vm.WaitSerial(ctx, "PROCS-END"); err != nil {
		vm.Close()
		return nil, err
	}
	if err := vm.Stop(ctx); err != nil {
		vm.Close()
		return nil, err
	}
	g := &guest{vm: vm, serial: vm.Serial()}
	if fx := os.Getenv("DOMAINM_LINUX_FIXTURE"); fx != "" {
		os.MkdirAll(fx, 0o755)
		os.WriteFile(filepath.Join(fx, "serial.log"), []byte(g.serial), 0o644)
		if b, err := os.ReadFile(vm.RAMFile); err == nil {
			os.WriteFile(filepath.Join(fx, "ram"), b, 0o644)
		}
	}
	if strings.Contains(g.serial, "INSMOD-FAILED") {
		vm.Close()
		return nil, fmt.Errorf("guest could not load its modules: %s", g.serial)
	}
	if err := g.parse(); err != nil {
		vm.Close()
		return nil, err
	}
	g.src, err = memscan.Open("file:"+vm.RAMFile, memscan.OpenOptions{})
	if err != nil {
		vm.Close()
		return nil, err
	}
	return g, nil
}

// section returns the console lines between BEGIN and END markers.
func section(serial, name string) ([]string, error) {
	_, rest, ok := strings.Cut(serial, name+"-BEGIN\r\n")
	if !ok {
		_, rest, ok = strings.Cut(serial, name+"-BEGIN\n")
	}
	body, _, ok2 := strings.Cut(rest, name+"-END")
	if !ok || !ok2 {
		return nil, fmt.Errorf("console has no complete %s section", name)
	}
	var out []string
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := strings.TrimRight(sc.Text(), "\r"); l != "" {
			out = append(out, l)
		}
	}
	return out, nil
}

func (g *guest) parse() error {
	lines, err := section(g.serial, "KALLSYMS")
	if err != nil {
		return err
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 3 || len(f[1]) != 1 {
			return fmt.Errorf("kallsyms line %q", l)
		}
		a, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			return fmt.Errorf("kallsyms line %q: %v", l, err)
		}
		k := kallsymLine{addr: a, typ: f[1][0], name: f[2]}
		if len(f) > 3 {
			k.mod = strings.Trim(f[3], "[]")
		}
		g.kallsym = append(g.kallsym, k)
	}
	if lines, err = section(g.serial, "MODULES"); err != nil {
		return err
	}
	for _, l := range lines {
		// MOD name size refs deps state addr
		f := strings.Fields(l)
		if len(f) < 7 || f[0] != "MOD" {
			return fmt.Errorf("modules line %q", l)
		}
		size, err1 := strconv.ParseUint(f[2], 10, 64)
		base, err2 := strconv.ParseUint(strings.TrimPrefix(f[6], "0x"), 16, 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("modules line %q", l)
		}
		g.modules = append(g.modules, procModule{name: f[1], size: size, base: base})
	}
	if _, after, ok := strings.Cut(g.serial, "ATTRIB-PID "); ok {
		fmt.Sscanf(after, "%d", &g.attribPID)
	}
	if lines, err = section(g.serial, "PAGEMAP"); err != nil {
		return err
	}
	g.pagemap = map[uint64]uint64{}
	for _, l := range lines {
		var va, e uint64
		if _, err := fmt.Sscanf(l, "PM %d %x", &va, &e); err != nil {
			return fmt.Errorf("pagemap line %q: %v", l, err)
		}
		g.pagemap[va] = e
	}
	if g.attribPID == 0 || len(g.pagemap) == 0 {
		return fmt.Errorf("guest printed no attribution pid or pagemap")
	}
	if lines, err = section(g.serial, "PROCS"); err != nil {
		return err
	}
	g.procs = map[int]procStat{}
	uids := map[int]int{}
	cmds := map[int]string{}
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "STAT "):
			s := l[5:]
			open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
			if open < 0 || closing < open {
				return fmt.Errorf("stat line %q", l)
			}
			pid, _ := strconv.Atoi(strings.TrimSpace(s[:open]))
			rest := strings.Fields(s[closing+1:])
			if len(rest) < 20 {
				return fmt.Errorf("stat line %q", l)
			}
			ppid, _ := strconv.Atoi(rest[1])
			st, _ := strconv.ParseUint(rest[19], 10, 64)
			g.procs[pid] = procStat{pid: pid, ppid: ppid, comm: s[open+1 : closing], startTicks: st}
		case strings.HasPrefix(l, "CMD "):
			pid, c, _ := strings.Cut(l[4:], " ")
			n, _ := strconv.Atoi(pid)
			cmds[n] = c
		case strings.HasPrefix(l, "UID "):
			var pid, uid int
			fmt.Sscanf(l, "UID %d %d", &pid, &uid)
			uids[pid] = uid
		}
	}
	for pid, u := range uids {
		if p, ok := g.procs[pid]; ok {
			p.uid = u
			p.cmdline = cmds[pid]
			g.procs[pid] = p
		}
	}
	if len(g.kallsym) < 10000 || len(g.procs) < 10 || len(g.modules) < len(guestModules) {
		return fmt.Errorf("guest view too small: %d symbols, %d processes, %d modules", len(g.kallsym), len(g.procs), len(g.modules))
	}
	return nil
}

// sym returns the guest's own address of a core-kernel symbol.
func (g *guest) sym(t *testing.T, name string) uint64 {
	t.Helper()
	for _, k := range g.kallsym {
		if k.name == name && k.mod == "" {
			return k.addr
		}
	}
	t.Fatalf("guest's /proc/kallsyms has no %s", name)
	return 0
}

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/diskscan/ext4test"
	"github.com/domainm/domainm/memscan"
	"github.com/domainm/domainm/memscan/linux"
	"github.com/domainm/domainm/memscan/linux/linuxtest"
)

// TestInspectRootkit: domainm inspect on a live Linux guest (TCG, 2 vCPUs, KASLR),
// stopped while it is inspected. Clean: every check ok, exit 0; Debian's own
// /boot/System.map (a placeholder) as --symbols says it has no symbols and names what
// it lacks. After the test rootkit dmkit loads: each technique reported (exit 1, in
// the table and in --json), and --disk reads a System.map from an ext4 image (made
// from the guest's kallsyms less the KASLR shift, with idt_table left out) and says
// that every symbol agrees but idt_table, missing from the file.
func TestInspectRootkit(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	g, err := linuxtest.Boot(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer g.VM.Close()
	src := "file:" + g.VM.RAMFile
	if err := g.VM.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	code, out, errs := runInspectCLI("--source", src)
	t.Logf("clean guest inspected in %v", time.Since(t0))
	for _, c := range []string{linux.CheckSyscalls, linux.CheckIDT, linux.CheckHiddenModule, linux.CheckHiddenTask} {
		if !strings.Contains(out, fmt.Sprintf("  %-14s ok ", c)) {
			t.Errorf("clean guest: check %s not ok", c)
		}
	}
	if code != ExitClean {
		t.Fatalf("clean guest: exit %d, %s\n%s", code, errs, out)
	}
	placeholder := "/boot/System.map-" + g.Release
	code, out, errs = runInspectCLI("--source", src, "--symbols", placeholder)
	if code != ExitClean || !strings.Contains(out, "0 symbols (1 lines that are not symbols: a placeholder?") || !strings.Contains(out, "idt_table: missing from System.map") {
		t.Errorf("--symbols %s: exit %d %s\n%s", placeholder, code, errs, out)
	}

	if err := g.VM.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.Infect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.VM.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runInspectCLI("--source", src)
	t.Logf("infected guest:\n%s", out[strings.Index(out, "kernel integrity checks"):])
	for _, want := range []string{
		"sys_call_table[62] points outside kernel text, to 0x",
		"(dmkit_kill in hidden module dmkit)",
		"IDT vector 15 points outside kernel text",
		"(dmkit_idt_handler in hidden module dmkit)",
		"module dmkit (struct module at 0x",
		fmt.Sprintf("task %d (sleep) is known to the kernel (pid hash) but not on the task list", g.HiddenPID),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("infected guest: no %q", want)
		}
	}
	if code != ExitFindings {
		t.Errorf("infected guest: exit %d, %s", code, errs)
	}
	code, out, _ = runInspectCLI("--source", src, "--json")
	var res InspectResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != ExitFindings {
		t.Fatalf("--json: exit %d, %v", code, err)
	}
	for _, r := range res.Checks {
		if len(r.Findings) != 1 || r.Err != "" {
			t.Errorf("--json: check %s: %d findings, error %q", r.Check, len(r.Findings), r.Err)
		}
	}
	// Addresses in the alert schema's form (issue 14): "0x..." lower-case hex strings.
	hexForm := regexp.MustCompile(`^0x[0-9a-f]+$`)
	addrs := map[string]string{"kernel.text_virtual": res.Kernel.TextVA, "kernel.text_physical": res.Kernel.TextPA, "kernel.page_table_root": res.Kernel.PGD}
	for _, m := range res.Modules {
		addrs["module "+m.Name+" base"] = m.Base
	}
	for _, p := range res.Processes {
		addrs[fmt.Sprintf("process %d task_struct", p.PID)] = p.DomainM.Task
	}
	for what, a := range addrs {
		if !hexForm.MatchString(a) {
			t.Errorf("--json: %s is %q, not a \"0x...\" address", what, a)
		}
	}
	// Processes with ECS process.* names (issue 14): pid, name, parent.pid, user.id as
	// a string, args and command_line; no old names left at a process's top.
	var withArgs int
	for _, p := range res.Processes {
		if p.PID == g.HiddenPID {
			t.Errorf("the hidden pid %d is on the process list", p.PID)
		}
		if p.PID == 1 && (p.Name == "" || p.User.ID != "0" || p.Parent.PID != 0 || p.DomainM.KernelThread || len(p.Args) == 0) {
			t.Errorf("--json: init is %+v", p)
		}
		if len(p.Args) > 0 {
			withArgs++
			if p.CommandLine != strings.Join(p.Args, " ") || p.ArgsCount != len(p.Args) {
				t.Errorf("--json: process %d: command_line %q, args_count %d, args %q", p.PID, p.CommandLine, p.ArgsCount, p.Args)
			}
		}
		if _, err := strconv.ParseUint(p.User.ID, 10, 32); err != nil {
			t.Errorf("--json: process %d: user.id %q", p.PID, p.User.ID)
		}
	}
	var raw struct {
		Processes []map[string]json.RawMessage `json:"processes"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil || len(raw.Processes) != len(res.Processes) || withArgs == 0 {
		t.Errorf("--json: %v, %d processes, %d with a command line", err, len(raw.Processes), withArgs)
	}
	for _, p := range raw.Processes {
		for _, old := range []string{"comm", "uid", "ppid", "cmdline", "task_struct"} {
			if _, ok := p[old]; ok {
				t.Errorf("--json: a process still has %q", old)
				break
			}
		}
	}

	img := ext4test.Image(t, map[string]string{"etc/": "", "boot/System.map-" + g.Release: systemMap(t, g.VM.RAMFile, "idt_table")}, 64)
	code, out, errs = runInspectCLI("--source", src, "--disk", img)
	if code != ExitFindings || !strings.Contains(out, "idt_table: missing from System.map") || strings.Contains(out, "differs:") {
		t.Errorf("--disk: exit %d %s\n%s", code, errs, out)
	}
	var agree int
	if _, after, ok := strings.Cut(out, "also in the guest's kallsyms, "); ok {
		agree, _ = strconv.Atoi(strings.Fields(after)[0])
	}
	if agree < 50000 {
		t.Errorf("--disk: %d symbols agree:\n%s", agree, out)
	}
}

// systemMap writes the guest's kallsyms as a System.map would hold them (link-time
// addresses: less the KASLR shift), leaving out the symbol omit.
func systemMap(t *testing.T, ram, omit string) string {
	t.Helper()
	src, err := memscan.Open("file:"+ram, memscan.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	k, err := linux.Find(src)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, s := range k.Syms.Symbols {
		if s.Name == omit {
			continue
		}
		a := s.Addr
		if a >= 0xffffffff80000000 {
			a -= uint64(k.VirtShift)
		}
		fmt.Fprintf(&b, "%016x %c %s\n", a, s.Type, s.Name)
	}
	if b.Len() == 0 {
		t.Fatal("no symbols")
	}
	return b.String()
}

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/internal/alert/schema"

	"github.com/domainm/domainm/memscan/linux"
)

func runInspectCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(context.Background(), Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}, append([]string{"inspect"}, args...))
	return code, out.String(), errb.String()
}

func TestInspectUsage(t *testing.T) {
	code, out, _ := runInspectCLI("--help")
	if code != ExitClean || !strings.Contains(out, "kallsyms") || !strings.Contains(out, "BTF") || !strings.Contains(out, "Exit codes:\n  0   described") {
		t.Errorf("--help: exit %d, %q", code, out)
	}
	if code, _, errs := runInspectCLI(); code != ExitError || !strings.Contains(errs, "--source is required") {
		t.Errorf("no --source: exit %d, %q", code, errs)
	}
	// Memory with no Linux kernel in it: exit 2 and say what is missing.
	ram := filepath.Join(t.TempDir(), "ram")
	if err := os.WriteFile(ram, bytes.Repeat([]byte("not a kernel "), 1<<16), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runInspectCLI("--source", "file:"+ram, "--json"); code != ExitError || !strings.Contains(errs, "no kallsyms tables found") {
		t.Errorf("no kernel: exit %d, %q", code, errs)
	}
}

// TestInspectProcessJSON: a process of inspect --json has ECS process.* names and forms
// (pid, name, parent.pid, user.id as a string, args, args_count, command_line), pid and
// name validate against the alert schema's process.*, what ECS has no field for is
// under domainm with "0x..." addresses, and every field of linux.Process is carried (a
// field added there fails until the JSON has it).
func TestInspectProcessJSON(t *testing.T) {
	carried := map[string]string{"PID": "pid", "PPID": "parent.pid", "UID": "user.id", "Comm": "name", "Cmdline": "args",
		"TGID": "domainm.tgid", "Kernel": "domainm.kernel_thread", "Start": "domainm.start_seconds", "TaskVA": "domainm.task_struct",
		"PGD": "domainm.page_table_root", "CmdlineErr": "domainm.cmdline_error"}
	for _, f := range reflect.VisibleFields(reflect.TypeOf(linux.Process{})) {
		if f.IsExported() && carried[f.Name] == "" {
			t.Errorf("linux.Process.%s is not carried by inspect --json (inspectProcess)", f.Name)
		}
	}
	p := linux.Process{PID: 408, TGID: 408, PPID: 1, UID: 33, Comm: "nginx", Start: 2500 * time.Millisecond,
		TaskVA: 0xffff888003a1c000, PGD: 0x3b2e000, Cmdline: []string{"nginx:", "worker", "process"}}
	b, err := json.Marshal(inspectProcess(p))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	field := func(path string) any {
		var v any = got
		for _, k := range strings.Split(path, ".") {
			m, _ := v.(map[string]any)
			v = m[k]
		}
		return v
	}
	for path, want := range map[string]any{
		"pid": 408.0, "name": "nginx", "parent.pid": 1.0, "user.id": "33", "args_count": 3.0, "command_line": "nginx: worker process",
		"domainm.tgid": 408.0, "domainm.kernel_thread": false, "domainm.start_seconds": 2.5,
		"domainm.task_struct": "0xffff888003a1c000", "domainm.page_table_root": "0x3b2e000",
	} {
		if v := field(path); v != want {
			t.Errorf("%s = %#v, want %#v (%s)", path, v, want, b)
		}
	}
	if a, _ := field("args").([]any); len(a) != 3 || a[0] != "nginx:" || a[2] != "process" {
		t.Errorf("args = %v (%s)", field("args"), b)
	}
	for _, old := range []string{"comm", "uid", "ppid", "tgid", "cmdline", "task_struct", "start_seconds"} {
		if _, ok := got[old]; ok {
			t.Errorf("old field %q is still at the top of a process (%s)", old, b)
		}
	}
	// pid and name as the alert events' process.* (the schema's part).
	c, err := schema.NewCompiler()
	if err != nil {
		t.Fatal(err)
	}
	if err := schemaPart(t, c, "/properties/process").Validate(map[string]any{"pid": got["pid"], "name": got["name"]}); err != nil {
		t.Errorf("pid and name do not validate as the alert's process.*: %v", err)
	}
	// A kernel thread: no page-table root, no command line, the reason kept.
	k := inspectProcess(linux.Process{PID: 2, Comm: "kthreadd", Kernel: true, TaskVA: 0xffff888003a1d000, CmdlineErr: "kernel thread"})
	if b, _ := json.Marshal(k); strings.Contains(string(b), "page_table_root") || strings.Contains(string(b), "command_line") ||
		!strings.Contains(string(b), `"user":{"id":"0"}`) || !strings.Contains(string(b), `"cmdline_error":"kernel thread"`) {
		t.Errorf("kernel thread: %s", b)
	}
}

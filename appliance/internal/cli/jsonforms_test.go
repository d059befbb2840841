package cli

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/domainm/domainm/appliance/internal/alert/schema"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/integrity"
	"github.com/domainm/domainm/diskscan/ext4test"
)

// decodeFinding reads one YARA finding line of --json back into a detectors.Finding
// (the inverse of toFindingJSON), so that tests compare what was found.
func decodeFinding(t testing.TB, line []byte) detectors.Finding {
	t.Helper()
	var j findingJSON
	if err := json.Unmarshal(line, &j); err != nil {
		t.Fatalf("finding line %s: %v", line, err)
	}
	f := detectors.Finding{Detector: j.Detector, Rule: j.Rule.Name, Namespace: j.Rule.Ruleset, Tags: j.Tags, Meta: j.Meta,
		MatchesCut: j.MatchesCut, WindowDependent: j.WindowDependent, Time: j.Timestamp, Target: detectors.Target(j.Target)}
	if j.File != nil {
		f.Path = j.File.Path
	}
	if p := j.Process; p != nil {
		f.Process = &detectors.Process{PID: p.PID, Name: p.Name, Address: parseAddr(t, p.Address)}
	}
	for _, m := range j.Matches {
		sm := detectors.StringMatch{Name: m.Name, Length: m.Length, Hex: m.DataHex, Text: m.DataText, ProcessCount: m.ProcessCount, Virtual: m.Virtual}
		switch {
		case m.Address != "" && m.Offset == nil && j.File == nil:
			sm.Offset = parseAddr(t, m.Address)
		case m.Offset != nil && m.Address == "" && j.File != nil:
			sm.Offset = uint64(*m.Offset)
		default:
			t.Fatalf("match %+v of %s: a memory match has an address, a file match an offset", m, line)
		}
		for _, p := range m.Processes {
			sm.Processes = append(sm.Processes, detectors.ProcessMapping{PID: p.PID, Name: p.Name, Address: parseAddr(t, p.Address)})
		}
		if k := m.Kernel; k != nil {
			sm.Kernel = &detectors.KernelMapping{Kind: k.Kind, Module: k.Module}
			if k.Address != "" {
				sm.Kernel.Address = parseAddr(t, k.Address)
			}
		}
		f.Matches = append(f.Matches, sm)
	}
	return f
}

// parseAddr reads an address in the alert schema's form, "0x" and lower-case hex.
func parseAddr(t testing.TB, s string) uint64 {
	t.Helper()
	h, ok := strings.CutPrefix(s, "0x")
	v, err := strconv.ParseUint(h, 16, 64)
	if !ok || err != nil || h != strings.ToLower(h) {
		t.Fatalf("address %q: want \"0x\" and lower-case hex digits", s)
	}
	return v
}

// decodeChange reads one integrity line of check --json back into an integrity.Change
// (the inverse of toChangeJSON for what reports carry).
func decodeChange(t testing.TB, line []byte) integrity.Change {
	t.Helper()
	var j changeJSON
	if err := json.Unmarshal(line, &j); err != nil {
		t.Fatalf("change line %s: %v", line, err)
	}
	c := integrity.Change{Detector: j.Detector, Kind: integrity.ChangeKind(j.State), Path: j.File.Path, PathRaw: j.File.PathRaw,
		Rule: j.Rule.Ruleset, Type: fromECSFileType(j.File.Type)}
	if want := "integrity-" + j.State; j.Rule.Name != want {
		t.Errorf("%s: rule.name %q, want %q", line, j.Rule.Name, want)
	}
	for _, a := range j.Changes {
		c.Attrs = append(c.Attrs, integrity.AttrChange{Attr: a.Attribute, Before: a.Before, After: a.After})
	}
	now := fileRecord(t, &j.File)
	switch c.Kind {
	case integrity.Added:
		c.After = now
	case integrity.Removed:
		c.Before = now
	default:
		c.After, c.Before = now, fileRecord(t, j.Before)
	}
	return c
}

func fromECSFileType(t string) string {
	switch t {
	case "char":
		return "chardev"
	case "block":
		return "blockdev"
	}
	return t
}

func fileRecord(t testing.TB, f *fileJSON) *integrity.Record {
	if f == nil {
		return nil
	}
	r := &integrity.Record{Path: f.Path, PathRaw: f.PathRaw, Type: fromECSFileType(f.Type), Mtime: f.Mtime, Ctime: f.Ctime,
		Link: f.TargetPath, Xattrs: f.Xattrs, Err: f.Error}
	num := func(s string, bits int) uint64 {
		if s == "" {
			return 0
		}
		v, err := strconv.ParseUint(s, 10, bits)
		if err != nil {
			t.Errorf("file %s: %q is not a decimal string: %v", f.Path, s, err)
		}
		return v
	}
	if f.Mode != "" {
		m, err := strconv.ParseUint(f.Mode, 8, 32)
		if err != nil || len(f.Mode) != 4 {
			t.Errorf("file %s: mode %q is not 4 octal digits", f.Path, f.Mode)
		}
		r.Mode = uint32(m)
	}
	r.UID, r.GID, r.Inode = uint32(num(f.UID, 32)), uint32(num(f.GID, 32)), num(f.Inode, 64)
	if f.Size != nil {
		r.Size = *f.Size
	}
	if f.Nlink != nil {
		r.Nlink = *f.Nlink
	}
	if f.Hash != nil {
		r.Hashes = *f.Hash
	}
	return r
}

// schemaPart compiles a part of the alert event schema by its JSON pointer.
func schemaPart(t *testing.T, c *jsonschema.Compiler, ptr string) *jsonschema.Schema {
	t.Helper()
	s, err := schema.Part(c, ptr)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestJSONForms runs scan-memory, scan-disk, baseline, check, rules list and version
// with --json on real inputs (a memory file with planted strings; ext4 images made by
// mkfs.ext4 -d, changed and made again; a setuid file, a symlink, a device node) and
// validates every field the alert event schema also has against that schema's part:
// guest-physical addresses as "0x..." strings (processes' and the kernel's too), file
// offsets as integers, modes as octal strings, uid/gid/inode as strings, file.type in
// ECS's names, rule.name/rule.ruleset, file.path, file.hash, @timestamp,
// domainm.changes and domainm.state. Fields outside the schema are listed here: a new
// one fails the test until it is given a form.
func TestJSONForms(t *testing.T) {
	c, err := schema.NewCompiler()
	diskMust(t, err)
	var (
		sMatch    = schemaPart(t, c, "/properties/domainm/properties/matches/items")
		sAddress  = schemaPart(t, c, "/properties/domainm/properties/matches/items/properties/address")
		sRule     = schemaPart(t, c, "/properties/rule")
		sFile     = schemaPart(t, c, "/properties/file")
		sTime     = schemaPart(t, c, "/properties/@timestamp")
		sTags     = schemaPart(t, c, "/properties/tags")
		sMeta     = schemaPart(t, c, "/properties/domainm/properties/meta")
		sDetector = schemaPart(t, c, "/properties/domainm/properties/detector")
		sChanges  = schemaPart(t, c, "/properties/domainm/properties/changes")
		sState    = schemaPart(t, c, "/properties/domainm/properties/state")
		sTarget   = schemaPart(t, c, "/properties/domainm/properties/target")
		sProcess  = schemaPart(t, c, "/properties/process")
	)
	validate := func(what string, s *jsonschema.Schema, v any) {
		t.Helper()
		if err := s.Validate(v); err != nil {
			t.Errorf("%s %v does not validate against the alert schema: %v", what, v, err)
		}
	}
	// The non-ECS fields a file object may carry besides the schema's file.*.
	fileExtras := map[string]bool{"nlink": true, "caps": true, "xattrs": true, "error": true, "path_raw": true}
	checkFile := func(what string, v any) {
		t.Helper()
		m, ok := v.(map[string]any)
		if !ok {
			t.Errorf("%s: %v is not an object", what, v)
			return
		}
		ecs := map[string]any{}
		for k, x := range m {
			if !fileExtras[k] {
				ecs[k] = x
			}
		}
		validate(what, sFile, ecs)
	}
	lines := func(what, out string) []map[string]any {
		t.Helper()
		var vs []map[string]any
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			v, err := jsonschema.UnmarshalJSON(strings.NewReader(sc.Text()))
			if err != nil {
				t.Fatalf("%s: line %q: %v", what, sc.Text(), err)
			}
			vs = append(vs, v.(map[string]any))
		}
		if len(vs) == 0 {
			t.Fatalf("%s: no JSON lines", what)
		}
		return vs
	}
	seen := map[string]int{}
	checkFinding := func(what string, l map[string]any) {
		t.Helper()
		for k, v := range l {
			seen[l["detector"].(string)+" "+k]++
			switch k {
			case "detector":
				validate(what+" detector", sDetector, v)
			case "rule":
				validate(what+" rule", sRule, v)
			case "tags":
				validate(what+" tags", sTags, v)
			case "meta":
				validate(what+" meta", sMeta, v)
			case "@timestamp":
				validate(what+" @timestamp", sTime, v)
			case "target":
				validate(what+" target", sTarget, v)
				for k := range v.(map[string]any) { // the schema allows others: the names must still be its own
					if !map[string]bool{"name": true, "uuid": true, "domid": true, "hypervisor_host": true, "source": true}[k] {
						t.Errorf("%s: target.%s is not a domainm.target field of the alert schema", what, k)
					}
				}
			case "file":
				checkFile(what+" file", v)
			case "process": // pid and name as ECS process.*, the address in the process as an address
				p := v.(map[string]any)
				validate(what+" process", sProcess, map[string]any{"pid": p["pid"], "name": p["name"]})
				validate(what+" process address", sAddress, p["address"])
			case "matches":
				for _, m := range v.([]any) {
					validate(what+" match", sMatch, m)
					mm := m.(map[string]any)
					if (l["detector"] == "yara-memory") != (mm["address"] != nil) || (mm["address"] != nil) == (mm["offset"] != nil) {
						t.Errorf("%s: match %v: memory matches have an address, file matches an offset", what, mm)
					}
					for _, p := range asSlice(mm["processes"]) {
						validate(what+" process address", sAddress, p.(map[string]any)["address"])
					}
					if k, ok := mm["kernel"].(map[string]any); ok && k["address"] != nil {
						validate(what+" kernel address", sAddress, k["address"])
					}
				}
			case "matches_cut", "window_dependent":
			default:
				t.Errorf("%s: field %q has no form in this test (add it, with the schema's form if the alert has it)", what, k)
			}
		}
	}

	// Memory: a real file with strings planted at known guest-physical addresses.
	mf := newMemFixture(t, 4<<20, map[int]string{0x123450: "EVIL-MARK-ONE", 0x3ff000: "EVIL-MARK-TWO"},
		`rule mem : planted { meta: description = "planted" strings: $a = /EVIL-MARK-[A-Z]+/ condition: $a }`)
	code, out, errOut := diskCLI(t, "scan-memory", "--source", "file:"+mf.img, "--rules", mf.rules, "--json", "--quiet", "--block-size", "1MiB", "--overlap", "8KiB")
	if code != ExitFindings {
		t.Fatalf("scan-memory: exit %d\n%s", code, errOut)
	}
	for _, l := range lines("scan-memory", out) {
		checkFinding("scan-memory", l)
		var addrs []string
		for _, m := range l["matches"].([]any) {
			addrs = append(addrs, m.(map[string]any)["address"].(string))
		}
		if strings.Join(addrs, " ") != "0x123450 0x3ff000" {
			t.Errorf("scan-memory: addresses %q, want 0x123450 0x3ff000", addrs)
		}
	}
	var sum map[string]any
	diskMust(t, json.Unmarshal([]byte(lastLine(errOut)), &sum))
	if sum["block_size"] != float64(1<<20) || sum["overlap"] != float64(8<<10) {
		t.Errorf("scan-memory summary: block_size %v overlap %v, want 1MiB and 8KiB", sum["block_size"], sum["overlap"])
	}

	// Disk: ext4 from mkfs.ext4 -d with a setuid file, a symlink and a marker; then
	// changed (mode, content, a new file, a removed one, a device node) and made again.
	tree := t.TempDir()
	ext4test.WriteFile(t, tree, "usr/bin/su", []byte("EVIL-MARK-SU\n"), 0o4755)
	ext4test.WriteFile(t, tree, "etc/motd", []byte("hello\n"), 0o644)
	ext4test.WriteFile(t, tree, "etc/gone", []byte("bye\n"), 0o600)
	diskMust(t, os.Symlink("/usr/bin/su", filepath.Join(tree, "usr/bin/sudo")))
	dir := t.TempDir()
	img1, img2, db := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img"), filepath.Join(dir, "b.db")
	ext4test.Mkfs(t, img1, tree, 16)
	code, out, errOut = diskCLI(t, "baseline", "--image", img1, "--db", db, "--json", "--quiet")
	if code != ExitClean {
		t.Fatalf("baseline: exit %d\n%s", code, errOut)
	}
	var base map[string]any
	diskMust(t, json.Unmarshal([]byte(out), &base))
	if base["db"] != db || base["stats"] == nil {
		t.Errorf("baseline --json: %v", base)
	}
	diskMust(t, os.Chmod(filepath.Join(tree, "etc/motd"), 0o640))
	diskMust(t, os.WriteFile(filepath.Join(tree, "etc/motd"), []byte("EVIL-MARK-MOTD\n"), 0o640))
	diskMust(t, os.Remove(filepath.Join(tree, "etc/gone")))
	ext4test.WriteFile(t, tree, "tmp/rootsh", []byte("EVIL-MARK-ROOTSH\n"), 0o4750)
	ext4test.Mkfs(t, img2, tree, 16)
	// A device node, added with debugfs (mkfs.ext4 -d copies one only as root).
	ext4test.Debugfs(t, img2, "cd /etc", "mknod kmem c 1 2")

	code, out, errOut = diskCLI(t, "check", "--image", img2, "--db", db, "--rules", mf.rules, "--json", "--quiet")
	if code != ExitFindings {
		t.Fatalf("check: exit %d\n%s", code, errOut)
	}
	states := map[string]string{}
	for _, l := range lines("check", out) {
		if l["detector"] != "integrity" {
			checkFinding("check", l)
			continue
		}
		for k, v := range l {
			seen["integrity "+k]++
			switch k {
			case "detector":
				validate("check detector", sDetector, v)
			case "state":
				validate("check state", sState, v)
			case "rule":
				validate("check rule", sRule, v)
			case "file", "file_before":
				checkFile("check "+k, v)
			case "changes":
				validate("check changes", sChanges, v)
			default:
				t.Errorf("check: field %q has no form in this test", k)
			}
		}
		file := l["file"].(map[string]any)
		states[file["path"].(string)] = l["state"].(string) + " " + str(file["type"]) + " " + str(file["mode"])
	}
	for p, want := range map[string]string{
		"/etc/motd":   "changed file 0640",
		"/etc/gone":   "removed file 0600",
		"/tmp/rootsh": "added file 4750",
		"/etc/kmem":   "added char 0", // debugfs mknod: mode bits 0, type char
	} {
		if got := states[p]; !strings.HasPrefix(got, want) {
			t.Errorf("check: %s is %q, want %q", p, got, want)
		}
	}
	for _, k := range []string{"yara-file file", "yara-file matches", "integrity file_before", "integrity changes"} {
		if seen[k] == 0 {
			t.Errorf("no %q field was checked: the inputs do not exercise it", k)
		}
	}

	code, out, errOut = diskCLI(t, "scan-disk", "--image", img2, "--rules", mf.rules, "--json", "--quiet", "--max-file-size", "1KiB")
	if code != ExitFindings {
		t.Fatalf("scan-disk: exit %d\n%s", code, errOut)
	}
	var paths []string
	for _, l := range lines("scan-disk", out) {
		checkFinding("scan-disk", l)
		paths = append(paths, l["file"].(map[string]any)["path"].(string))
	}
	if len(paths) != 3 {
		t.Errorf("scan-disk: findings in %q, want /etc/motd, /tmp/rootsh, /usr/bin/su", paths)
	}
	var dsum diskScanSummary
	diskMust(t, json.Unmarshal([]byte(lastLine(errOut)), &dsum))
	if dsum.MaxFileSize != 1024 {
		t.Errorf("scan-disk --max-file-size 1KiB: summary says %d bytes", dsum.MaxFileSize)
	}

	// rules list and version: one JSON document each.
	code, out, _ = diskCLI(t, "rules", "list", mf.rules, "--json")
	var rl []map[string]any
	if code != ExitClean || json.Unmarshal([]byte(out), &rl) != nil || len(rl) != 1 || rl[0]["name"] != "test:mem" || rl[0]["severity"] != "medium" {
		t.Fatalf("rules list --json: exit %d %s", code, out)
	}
	validate("rules list rule", sRule, rl[0]["rule"]) // rule.name and rule.ruleset, as the findings' rule
	if r, _ := rl[0]["rule"].(map[string]any); r["name"] != "mem" || r["ruleset"] != "test" || rl[0]["namespace"] != nil {
		t.Errorf("rules list --json: rule %v, namespace %v", rl[0]["rule"], rl[0]["namespace"])
	}
	code, out, _ = diskCLI(t, "version", "--json")
	var v map[string]any
	if code != ExitClean || json.Unmarshal([]byte(out), &v) != nil || !regexp.MustCompile(`^go1\.`).MatchString(str(v["go_version"])) {
		t.Errorf("version --json: exit %d %s", code, out)
	}
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// TestFindingJSONRoundTrip: a YARA finding with every field set comes back whole from
// its --json line (memory and file), so no field is lost on the way to the schema's
// forms; a field added to detectors.Finding or StringMatch fails the test until the
// line carries it.
func TestFindingJSONRoundTrip(t *testing.T) {
	known := map[string]bool{"Detector": true, "Rule": true, "Namespace": true, "Tags": true, "Meta": true, "Matches": true,
		"MatchesCut": true, "WindowDependent": true, "Path": true, "Process": true, "Time": true, "Target": true,
		// integrity findings, printed by check as changeJSON from integrity.Change
		"Change": true, "File": true, "Before": true, "Changes": true}
	for _, f := range reflect.VisibleFields(reflect.TypeOf(detectors.Finding{})) {
		if f.IsExported() && !known[f.Name] {
			t.Errorf("detectors.Finding.%s is not carried by the --json line (jsonout.go)", f.Name)
		}
	}
	matchFields := map[string]bool{"Name": true, "Offset": true, "Length": true, "Data": true, "Hex": true, "Text": true,
		"Processes": true, "ProcessCount": true, "Kernel": true, "Virtual": true}
	for _, f := range reflect.VisibleFields(reflect.TypeOf(detectors.StringMatch{})) {
		if f.IsExported() && !matchFields[f.Name] {
			t.Errorf("detectors.StringMatch.%s is not carried by the --json line (jsonout.go)", f.Name)
		}
	}
	now := time.Date(2026, 11, 30, 8, 7, 52, 123456789, time.UTC)
	mem := detectors.Finding{Detector: "yara-memory", Rule: "heap_a", Namespace: "test", Tags: []string{"t1"}, Meta: map[string]string{"severity": "high"},
		Matches: []detectors.StringMatch{
			{Name: "$a", Offset: 0x268b5064, Length: 9, Hex: "41", Text: "A", ProcessCount: 2, Virtual: true,
				Processes: []detectors.ProcessMapping{{PID: 408, Name: "heapmark", Address: 0x55d0c0de0064}, {PID: 409, Name: "x", Address: 0x1000}}},
			{Name: "$b", Offset: 0x45c3ff7, Length: 3, Hex: "424242", Kernel: &detectors.KernelMapping{Kind: "vmalloc", Module: "vmark", Address: 0xffffc90000123ff7}},
			{Name: "$c", Offset: 0x1000, Length: 1, Hex: "43", Kernel: &detectors.KernelMapping{Kind: "direct-map"}},
		},
		MatchesCut: 7, WindowDependent: true, Process: &detectors.Process{PID: 408, Name: "heapmark", Address: 0x55d0c0de0064},
		Time: now, Target: detectors.Target{Name: "web-1", UUID: "u", DomID: 3, Host: "h", Source: "file:/x"}}
	file := detectors.Finding{Detector: "yara-file", Rule: "r", Namespace: "n", Path: "/usr/bin/x",
		Matches: []detectors.StringMatch{{Name: "$a", Offset: 0, Length: 2, Hex: "4142", Text: "AB"}}, Time: now, Target: detectors.Target{Name: "img", Source: "img"}}
	for _, f := range []detectors.Finding{mem, file} {
		b, err := json.Marshal(toFindingJSON(f))
		diskMust(t, err)
		if got := decodeFinding(t, b); !reflect.DeepEqual(got, f) {
			t.Errorf("round trip of %s:\n got %+v\nwant %+v\nline %s", f.Detector, got, f, b)
		}
		if f.Detector == "yara-memory" && (!strings.Contains(string(b), `"address":"0x268b5064"`) || !strings.Contains(string(b), `"hypervisor_host":"h"`)) || !strings.Contains(string(b), `"@timestamp":"2026-11-30T08:07:52.123456789Z"`) {
			t.Errorf("line %s", b)
		}
	}
}

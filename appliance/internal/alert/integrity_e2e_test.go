package alert

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/integrity"
	"github.com/domainm/domainm/diskscan"
	"github.com/domainm/domainm/rules/policy"
)

// TestIntegrityAlertsCarryAttributes, end to end on a real ext4 image (mkfs.ext4 -d,
// changed with debugfs, never mounted) and the shipped policy: a root-owned setuid file
// planted in /home/alice (no selection covers it; the setuid sweep does) alerts as a
// high file-added event carrying its mode, owner, size, inode and hash, and a file
// removed from /etc alerts with its last known attributes.
func TestIntegrityAlertsCarryAttributes(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (make deps installs it): %v", tool, err)
		}
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	motd := []byte("welcome\n")
	for p, data := range map[string][]byte{"etc/motd": motd, "etc/passwd": []byte("root:x:0:0::/root:/bin/sh\n"),
		"home/alice/notes.txt": []byte("hi\n")} {
		full := filepath.Join(tree, p)
		must(t, os.MkdirAll(filepath.Dir(full), 0o755))
		must(t, os.WriteFile(full, data, 0o644))
	}
	img := filepath.Join(dir, "fs.ext4")
	run(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-d", tree, "-E", "root_owner=0:0", img, "8M")

	p, err := integrity.ParsePolicy(policy.DefaultFile, policy.Default)
	must(t, err)
	base, _ := collectRecords(t, img, p, nil)

	backdoor := []byte("#!/bin/sh\nexec /bin/sh -p\n")
	src := filepath.Join(dir, "backdoor")
	must(t, os.WriteFile(src, backdoor, 0o755))
	cmds := filepath.Join(dir, "cmds")
	must(t, os.WriteFile(cmds, []byte(strings.Join([]string{
		"write " + src + " /home/alice/.cache-helper",
		"sif /home/alice/.cache-helper mode 0104755",
		"sif /home/alice/.cache-helper uid 0", "sif /home/alice/.cache-helper gid 0",
		"rm /etc/motd",
	}, "\n")+"\n"), 0o600))
	run(t, "debugfs", "-w", "-f", cmds, img)

	_, changes := collectRecords(t, img, p, integrity.NewComparer(base))
	tgt := detectors.Target{Name: "web-1", UUID: "7f8d2a9e-1c3b-4d5e-9f00-aabbccddeeff"}
	events := map[string]map[string]any{}
	for _, c := range changes {
		b, err := json.Marshal(FromFinding(c.Finding(tgt, time.Now()), ""))
		must(t, err)
		var m map[string]any
		must(t, json.Unmarshal(b, &m))
		events[c.Path] = m
	}

	sum := sha256.Sum256(backdoor)
	added := events["/home/alice/.cache-helper"]
	if added == nil {
		t.Fatalf("no alert for the planted file; alerts: %v", events)
	}
	for field, want := range map[string]any{
		"event.action": "file-added", "domainm.state": "added", "log.level": "error", "domainm.severity": "high", "event.severity": 73.0,
		"file.path": "/home/alice/.cache-helper", "file.type": "file", "file.mode": "4755",
		"file.uid": "0", "file.gid": "0", "file.size": float64(len(backdoor)),
		"file.hash.sha256": hex.EncodeToString(sum[:]), "domainm.meta.nlink": "1",
	} {
		if got := field2(added, field); got != want {
			t.Errorf("added setuid file: %s = %v, want %v", field, got, want)
		}
	}
	if field2(added, "file.inode") == nil || field2(added, "file.mtime") == nil {
		t.Errorf("added setuid file: no inode or mtime: %v", added["file"])
	}

	removed := events["/etc/motd"]
	if removed == nil {
		t.Fatalf("no alert for the removed file; alerts: %v", events)
	}
	motdSum := sha256.Sum256(motd)
	for field, want := range map[string]any{
		"event.action": "file-removed", "domainm.state": "removed",
		"file.type": "file", "file.mode": "0644", "file.uid": "0", "file.size": float64(len(motd)),
		"file.hash.sha256": hex.EncodeToString(motdSum[:]),
	} {
		if got := field2(removed, field); got != want {
			t.Errorf("removed file: %s = %v, want %v", field, got, want)
		}
	}
}

// field2 reads a dotted path in a decoded JSON object.
func field2(m map[string]any, dotted string) any {
	var v any = m
	for _, k := range strings.Split(dotted, ".") {
		o, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = o[k]
	}
	return v
}

// collectRecords walks the image as the appliance's disk check does; with cmp it
// also returns the changes (added, changed, then removed).
func collectRecords(t *testing.T, img string, p *integrity.Policy, cmp *integrity.Comparer) ([]*integrity.Record, []integrity.Change) {
	t.Helper()
	fsys, closer, err := diskscan.OpenVolumeFormat(img, "raw", -1)
	must(t, err)
	defer closer.Close()
	opt := integrity.Options{Workers: 1}
	if cmp != nil {
		opt.Baseline = cmp.Baseline
	}
	var recs []*integrity.Record
	var changes []integrity.Change
	_, err = integrity.Collect(context.Background(), fsys, p, opt, func(r *integrity.Record) error {
		recs = append(recs, r)
		if cmp != nil {
			if c := cmp.Add(r); c != nil {
				changes = append(changes, *c)
			}
		}
		return nil
	})
	must(t, err)
	if cmp != nil {
		changes = append(changes, cmp.Removed()...)
	}
	return recs, changes
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	if name == "debugfs" {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, ": ") && !strings.HasPrefix(l, "debugfs") && !strings.HasPrefix(l, "Allocated inode") {
				t.Fatalf("debugfs: %s", out)
			}
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/diskscan/ext4test"
)

// burstAlert is the part of an alert the aggregation test reads.
type burstAlert struct {
	Message string `json:"message"`
	Event   struct {
		ID     string `json:"id"`
		Action string `json:"action"`
	} `json:"event"`
	Log struct {
		Level string `json:"level"` // the syslog name: error for high
	} `json:"log"`
	File *struct {
		Path string `json:"path"`
	} `json:"file"`
	DomainM struct {
		Severity string            `json:"severity"`
		Meta     map[string]string `json:"meta"`
	} `json:"domainm"`
}

func readBurstAlerts(t *testing.T, path string) []burstAlert {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []burstAlert
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var a burstAlert
		if json.Unmarshal(sc.Bytes(), &a) == nil {
			out = append(out, a)
		}
	}
	return out
}

// TestAggregation reproduces the burst of issue 14 with the real daemon: 300 new files
// in a new folder under /usr/lib of the target's disk (301 high alerts before) give
// one summary alert (file-added-summary, high, naming the folder and the count) and
// the 301 details at info, each naming the summary's event.id; a lone change elsewhere
// in the same check stays a high alert of its own.
func TestAggregation(t *testing.T) {
	img := ext4test.Image(t, map[string]string{"usr/lib/libx.so": "\x7fELF lib", "usr/bin/tool": "\x7fELF tool"}, 16)
	s := newSetup(t, fmt.Sprintf("disk = %q\n", img), "\n[disk]\ninterval = \"1h\"\n")
	n := listenNotify(t, s.dir)
	p := startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	waitUntil(t, "the baseline", 60*time.Second, func() bool { return len(s.alertsWith(t, "disk-baseline-created", "")) == 1 })

	// The burst, written while no check runs (the next is an hour away).
	src := filepath.Join(t.TempDir(), "payload")
	os.WriteFile(src, []byte("\x7fELF payload"), 0o644)
	cmds := []string{"mkdir /usr/lib/burst", "cd /usr/lib/burst"}
	for i := range 300 {
		cmds = append(cmds, fmt.Sprintf("write %s f%03d", src, i))
	}
	ext4test.Debugfs(t, img, cmds...)
	ext4test.Overwrite(t, img, "/usr/bin/tool", []byte("\x7fELF TOOL"))
	// Check now: disk.interval is live.
	s.editConfig(t, `interval = "1h"`, `interval = "1s"`)
	p.Signal(syscall.SIGHUP)

	var sums, details, high []burstAlert
	waitUntil(t, "the check's alerts", 90*time.Second, func() bool {
		sums, details, high = nil, nil, nil
		for _, a := range readBurstAlerts(t, s.alerts) {
			switch {
			case a.Event.Action == "file-added-summary":
				sums = append(sums, a)
			case a.Event.Action == "file-added":
				details = append(details, a)
			}
			if strings.HasPrefix(a.Event.Action, "file-") && (a.DomainM.Severity == "high" || a.DomainM.Severity == "critical") {
				high = append(high, a)
			}
		}
		return len(sums) == 1 && len(details) == 301 && len(high) == 2
	})
	sum := sums[0]
	t.Logf("summary: %s", sum.Message)
	if sum.DomainM.Severity != "high" || sum.Log.Level != "error" || sum.File == nil || sum.File.Path != "/usr/lib/burst" || sum.DomainM.Meta["count"] != "301" ||
		!strings.HasPrefix(sum.Message, "301 files added under /usr/lib/burst on e2e-target") {
		t.Errorf("summary %+v", sum)
	}
	for _, d := range details {
		if d.DomainM.Severity != "info" || d.DomainM.Meta["summary_id"] != sum.Event.ID {
			t.Errorf("detail %s: severity %s, summary_id %q; want info and %s", d.File.Path, d.DomainM.Severity, d.DomainM.Meta["summary_id"], sum.Event.ID)
			break
		}
	}
	var lone []string
	for _, a := range high {
		lone = append(lone, a.Event.Action+" "+a.File.Path)
	}
	if strings.Join(lone, ",") != "file-added-summary /usr/lib/burst,file-changed /usr/bin/tool" &&
		strings.Join(lone, ",") != "file-changed /usr/bin/tool,file-added-summary /usr/lib/burst" {
		t.Errorf("high file alerts %q: want the summary and the lone change", lone)
	}
}

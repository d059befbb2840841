package cli

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/diskscan/ext4test"
)

// TestBaselineAccept: two files of the target's disk change and are alerted; the
// operator accepts one with domainm baseline accept (exit 1: a second path given did
// not change): an audit alert names who and what, the accepted finding ends
// (file-change-ended, reason accepted, the finding's own id) and is not alerted again;
// the other file restored in the image ends too (reason restored).
func TestBaselineAccept(t *testing.T) {
	img := ext4test.Image(t, map[string]string{"etc/motd": "welcome\n", "usr/bin/tool": "\x7fELF tool"}, 8)
	s := newSetup(t, fmt.Sprintf("disk = %q\n", img), "\n[disk]\ninterval = \"1s\"\n")
	n := listenNotify(t, s.dir)
	startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	waitUntil(t, "the baseline", 60*time.Second, func() bool { return len(s.alertsWith(t, "disk-baseline-created", "")) == 1 })
	ext4test.Overwrite(t, img, "/usr/bin/tool", []byte("\x7fELF TOOL"))
	ext4test.Overwrite(t, img, "/etc/motd", []byte("WELCOME\n"))
	waitUntil(t, "both changes alerted", 60*time.Second, func() bool { return len(s.alertsWith(t, "file-changed", "")) == 2 })
	ids := map[string]string{}
	for _, a := range s.alertsWith(t, "file-changed", "") {
		ids[a.File.Path] = a.DomainM.FindingID
	}

	out, errOut, code := runDomainm(t, "baseline", "accept", "--socket", s.sock, "/usr/bin/tool", "/etc/hostname")
	t.Logf("domainm baseline accept (exit %d):\n%s%s", code, out, errOut)
	if code != ExitFindings || !strings.Contains(out, "accepted   /usr/bin/tool\n") || !strings.Contains(out, "unchanged  /etc/hostname") {
		t.Errorf("exit %d, want %d with /usr/bin/tool accepted and /etc/hostname unchanged", code, ExitFindings)
	}
	waitUntil(t, "the audit alert and the end of the accepted change", 60*time.Second, func() bool {
		return len(s.alertsWith(t, "baseline-accepted", "")) == 1 && len(s.alertsWith(t, "file-change-ended", "")) == 1
	})
	audit := s.alertsWith(t, "baseline-accepted", "")[0]
	if !strings.Contains(audit.Message, "by ") || !strings.Contains(audit.Message, "uid") || !strings.Contains(audit.Message, "/usr/bin/tool") ||
		!strings.Contains(audit.Message, time.Now().UTC().Format("2006-01-02T")) {
		t.Errorf("audit alert does not say who, what and when: %s", audit.Message)
	}
	end := s.alertsWith(t, "file-change-ended", "")[0]
	if end.File == nil || end.File.Path != "/usr/bin/tool" || !strings.Contains(end.Message, "was accepted into the baseline by") ||
		end.DomainM.FindingID != ids["/usr/bin/tool"] {
		t.Errorf("end event %+v; want /usr/bin/tool accepted, finding id %s", end, ids["/usr/bin/tool"])
	}

	// Restored: the other finding ends too.
	ext4test.Overwrite(t, img, "/etc/motd", []byte("welcome\n"))
	waitUntil(t, "the end of the restored change", 60*time.Second, func() bool { return len(s.alertsWith(t, "file-change-ended", "")) == 2 })
	end = s.alertsWith(t, "file-change-ended", "")[1]
	if end.File == nil || end.File.Path != "/etc/motd" || !strings.Contains(end.Message, "is as in the baseline again") ||
		end.DomainM.FindingID != ids["/etc/motd"] {
		t.Errorf("end event %+v; want /etc/motd restored, finding id %s", end, ids["/etc/motd"])
	}
	time.Sleep(3 * time.Second) // a few more checks
	if a := s.alertsWith(t, "file-changed", ""); len(a) != 2 {
		t.Errorf("%d file-changed alerts after the accept; want the 2 from before", len(a))
	}
	if _, errOut, code := runDomainm(t, "baseline", "accept", "--socket", s.sock, "relative/path"); code != ExitError || !strings.Contains(errOut, "absolute") {
		t.Errorf("relative path: exit %d, %q", code, errOut)
	}
	checkEventsSchema(t, s.alerts)
}

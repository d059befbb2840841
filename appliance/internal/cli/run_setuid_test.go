package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/domainmtest"
	"github.com/domainm/domainm/diskscan/ext4test"
)

// TestRunDiskSetuidAlert: with the daemon watching a disk image, a root-owned setuid
// file planted in /home/alice (debugfs on a copy, renamed over the image) is alerted
// through the file sink as a high file-added event carrying the file's mode, owner,
// size, inode and hash (issue 8 item 3: it was medium with only path, name and type).
func TestRunDiskSetuidAlert(t *testing.T) {
	s, p, img := startDiskDaemon(t)
	waitUntil(t, "baseline alert", 60*time.Second, func() bool { return len(s.alertsWith(t, "disk-baseline-created", "")) == 1 })

	backdoor := []byte("#!/bin/sh\nexec /bin/sh -p\n")
	src := filepath.Join(t.TempDir(), "backdoor")
	diskMust(t, os.WriteFile(src, backdoor, 0o755))
	b, err := os.ReadFile(img)
	diskMust(t, err)
	next := img + ".next"
	diskMust(t, os.WriteFile(next, b, 0o600))
	const planted = "/home/alice/.cache-helper"
	ext4test.Debugfs(t, next, "mkdir /home/alice", "write "+src+" "+planted,
		"sif "+planted+" mode 0104755", "sif "+planted+" uid 0", "sif "+planted+" gid 0")
	diskMust(t, os.Rename(next, img))

	var ev map[string]any
	waitUntil(t, "file-added alert", 60*time.Second, func() bool {
		ev = rawAlert(t, s.alerts, "file-added", planted)
		return ev != nil
	})
	sum := sha256.Sum256(backdoor)
	for field, want := range map[string]any{
		"domainm.severity": "high", "log.level": "error", "event.severity": 73.0, "domainm.state": "added",
		"file.type": "file", "file.mode": "4755", "file.uid": "0", "file.gid": "0",
		"file.size": float64(len(backdoor)), "file.hash.sha256": hex.EncodeToString(sum[:]),
		"host.name": "e2e-target",
	} {
		if got := jsonField(ev, field); got != want {
			t.Errorf("%s = %v, want %v", field, got, want)
		}
	}
	if jsonField(ev, "file.inode") == nil {
		t.Errorf("no file.inode: %v", ev["file"])
	}
	if _, code := p.stop(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// rawAlert returns the first alert in the file sink's output with the action and
// file.path, decoded as a generic JSON object, or nil.
func rawAlert(t *testing.T, alerts, action, path string) map[string]any {
	t.Helper()
	for _, m := range domainmtest.ReadAlerts[map[string]any](alerts) {
		if jsonField(m, "event.action") == action && jsonField(m, "file.path") == path {
			return m
		}
	}
	return nil
}

// jsonField reads a dotted path in a decoded JSON object.
func jsonField(m map[string]any, dotted string) any {
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

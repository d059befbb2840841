package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/domainm/domainm/image/qemu"
	"github.com/domainm/domainm/migrate-hooks/internal/controltest"
	"github.com/domainm/domainm/migrate-hooks/internal/host"
	"github.com/domainm/domainm/migrate-hooks/internal/lab"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

// migrateArgs starts a pair and its destination copies and returns the CLI's flags.
func migrateArgs(t *testing.T, sup func(*controltest.Supervisor)) ([]string, *lab.Pair, *host.Local) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	accel, err := qemu.FirmwareAccel(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	prefix := "domainm-cli-" + filepath.Base(t.Name()) + "-"
	src := &host.Local{Name: "src", Dir: t.TempDir(), Prefix: prefix}
	dst := &host.Local{Name: "dst", Dir: t.TempDir(), Prefix: prefix}
	t.Cleanup(src.Close)
	t.Cleanup(dst.Close)
	p, err := lab.StartSource(ctx, src, lab.NewSpec(64, 64, accel))
	if err != nil {
		t.Fatal(err)
	}
	ts, ms, err := p.Destination(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "control.sock")
	s, err := controltest.Listen(sock, src.RAMFile("target"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if sup != nil {
		sup(s)
	}
	// A QEMU monitor socket takes one client: hand them over to the CLI.
	for _, vm := range []*host.VM{p.Target, p.DomM, ts.Dst.(*host.VM), ms.Dst.(*host.VM)} {
		vm.Mon.Close()
	}
	qmpOf := func(h *host.Local, name string) string { return filepath.Join(h.Dir, h.Name+"-"+name+".qmp") }
	return []string{"migrate", "--json", "--lease-dir", t.TempDir(),
		"--target-src", qmpOf(src, "target"), "--target-dst", qmpOf(dst, "target"), "--target-uri", ts.URI,
		"--domm-src", qmpOf(src, "domm"), "--domm-dst", qmpOf(dst, "domm"), "--domm-uri", ms.URI,
		"--control", sock, "--src-ram", src.RAMFile("target"), "--dst-ram", dst.RAMFile("target"),
		"--target-mib", "64", "--domm-mib", strconv.Itoa(64), "--handshake-timeout", "1s"}, p, dst
}

func TestMigrateCLI(t *testing.T) {
	for _, tc := range []struct {
		name string
		sup  func(*controltest.Supervisor)
		want int
	}{
		{"ok", nil, ExitOK},
		{"supervisor-hangs-on-resume", func(s *controltest.Supervisor) { s.Hang("resume") }, ExitPaused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, _, _ := migrateArgs(t, tc.sup)
			var out, errb bytes.Buffer
			var alerts []error
			env := Env{Stdout: &out, Stderr: &errb, Alert: func(err error) { alerts = append(alerts, err) }}
			code := Main(context.Background(), env, "domainm-migrate", args)
			t.Logf("exit %d; stderr: %s", code, errb.String())
			if code != tc.want {
				t.Errorf("exit %d, want %d", code, tc.want)
			}
			var r struct {
				syncpoint.Result
				Error string `json:"error"`
			}
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatalf("--json output: %v\n%s", err, out.String())
			}
			if len(r.Timeline) < 8 {
				t.Errorf("timeline has %d entries, want the events of four QEMUs and the supervisor", len(r.Timeline))
			}
			if err := syncpoint.Timeline(r.Timeline).Err(); err != nil {
				t.Errorf("invariant: %v", err)
			}
			if (tc.want != ExitOK) != (len(alerts) == 1 && r.Error != "") {
				t.Errorf("alerts %v, error %q", alerts, r.Error)
			}
			// A target that never ran at the destination has no downtime to report: null,
			// not 0 (issue 8, item 9).
			if absent := bytes.Contains(out.Bytes(), []byte(`"target_downtime_ns": null`)); absent != (tc.want != ExitOK) {
				t.Errorf("target_downtime_ns null = %v, want %v", absent, tc.want != ExitOK)
			}
		})
	}
}

// A migration whose every step succeeded but whose record ends with the target
// unwatched is not a success (issue 8, item 9).
func TestExitCodeOpenViolation(t *testing.T) {
	r := &syncpoint.Result{Violations: []syncpoint.Violation{{Why: "target running while supervisor not monitoring", Open: true}}}
	if got := exitCode(r, nil); got != ExitUnwatched {
		t.Errorf("exit %d for a record with an open violation and gap 0, want %d", got, ExitUnwatched)
	}
}

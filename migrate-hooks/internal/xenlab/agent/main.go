// Command agent is the lab's Domain M inside a PVH domU: a static, cgo-free stand-in
// for the supervisor (which links libyara) that exercises the Xen memory path for
// real. It reads the target's domain id and highest guest frame from its xenstore
// subtree (written by domainm-xen grant), maps the target with memscan's xen: source,
// searches every pass for the lab's planted marker and reports each hit (guest-physical
// address and value) in its subtree and on its console; it serves the supervisor's
// handshake over xenstore with the supervisor's own server code
// (control.ServeXenstore): prepare unmaps and records a fingerprint; resume maps the
// frames the destination's grant lists for the new target domain id (a restored
// target may lack a few of the source's frames), names a frame set changed beyond
// what a migration explains (BEYOND-MIGRATION), checks the fingerprint over the
// sampled pages present at both hosts, and writes what changed to domainm/remap.
//
// All xenstore paths are relative to the domain's home, so that after a migration they
// name the new domain's subtree (the kernel re-registers watches on resume).
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/appliance/control/xenstore"
	"github.com/domainm/domainm/memscan"
)

// marker is what the lab's target plants (built there from two halves, so that the
// whole string exists only in the target's memory).
const marker = "DOMAINM-XENLAB-PLANT:"

type agent struct {
	xs  *xenstore.Client
	log *slog.Logger

	mu    sync.Mutex
	state string
	src   *memscan.Xen
	fp    memscan.Fingerprint
	seen  map[string]bool
	pass  int
	t0    time.Time
}

func main() {
	// "agent xs-read PATH" prints one xenstore node (relative paths: this domain's
	// home) and exits: the real supervisor's init reads domainm/target with it before
	// each start, since after a migration the target has another domain id than the
	// one on Domain M's command line (lab run 15).
	if len(os.Args) == 3 && os.Args[1] == "xs-read" {
		xs, err := xenstore.Open()
		if err == nil {
			var v string
			if v, err = xs.Read(os.Args[2]); err == nil {
				fmt.Println(v)
				os.Exit(0)
			}
		}
		fmt.Fprintln(os.Stderr, "xs-read:", err)
		os.Exit(1)
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	if err := run(log); err != nil {
		log.Error("agent failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	xs, err := xenstore.Open()
	if err != nil {
		return err
	}
	a := &agent{xs: xs, log: log, state: proto.StateStarting, seen: map[string]bool{}, t0: time.Now()}
	if err := xs.Watch("domainm", "dm"); err != nil {
		return err
	}
	a.progress("waiting for the grant")
	target, maxGPFN, frames := a.waitGrant()
	a.progress("granted: target %d, max gpfn %#x, frames %q; loading xen-privcmd", target, maxGPFN, frames)
	if err := loadPrivcmd(); err != nil {
		return err
	}
	t0 := time.Now()
	var src *memscan.Xen
	if rs, perr := memscan.ParseXenFrames(frames); perr == nil {
		// the frames dom0 read from Xen's p2m: only these are asked for (run 8
		// probed all of frames 0..0xfefff, two hypercalls per frame in this PVH domU,
		// and had not finished 19 min later)
		a.progress("mapping the %d frames Xen's p2m holds", memscan.TotalSize(rs)/4096)
		src, err = memscan.OpenXenFrames(uint16(target), rs)
	} else {
		a.progress("no usable domainm/frames (%v): probing frames 0..%#x", perr, maxGPFN)
		src, err = memscan.OpenXen(uint16(target), maxGPFN)
	}
	if err != nil {
		a.progress("mapping failed after %v: %v", time.Since(t0).Round(time.Millisecond), err)
		return err
	}
	a.progress("mapped in %v", time.Since(t0).Round(time.Millisecond))
	a.src = src
	var rs []string
	for _, r := range src.Ranges() {
		rs = append(rs, fmt.Sprintf("%#x-%#x", r.GPA, r.End()))
	}
	log.Info("mapped", "target", target, "max_gpfn", fmt.Sprintf("%#x", maxGPFN), "ranges", strings.Join(rs, " "),
		"bytes", memscan.TotalSize(src.Ranges()), "took", time.Since(t0).Round(time.Millisecond))
	a.put("domainm/ranges", strings.Join(rs, " "))
	a.setState(proto.StateMonitoring)
	go a.scanLoop()
	return control.ServeXenstore(context.Background(), xs, a, log)
}

// waitGrant waits until dom0 wrote the target's id and highest frame; it returns them
// and the runs of frames (domainm/frames, "" when dom0 wrote none).
func (a *agent) waitGrant() (uint64, uint64, string) {
	for {
		t, err1 := a.xs.Read("domainm/target")
		g, err2 := a.xs.Read("domainm/max-gpfn")
		if err1 == nil && err2 == nil {
			tv, e1 := strconv.ParseUint(t, 10, 16)
			gv, e2 := strconv.ParseUint(g, 0, 64)
			if e1 == nil && e2 == nil {
				f, _ := a.xs.Read("domainm/frames")
				return tv, gv, f
			}
		}
		<-a.xs.Events()
	}
}

// progress reports a step on the console and in domainm/progress (dom0's run.sh logs
// it while it waits), with the seconds since the agent started.
func (a *agent) progress(format string, args ...any) {
	msg := fmt.Sprintf("%.1fs %s", time.Since(a.t0).Seconds(), fmt.Sprintf(format, args...))
	a.log.Info("progress", "step", msg)
	if err := a.xs.Write("domainm/progress", msg); err != nil && !errors.Is(err, xenstore.ErrNotFound) {
		a.log.Warn("xenstore write", "path", "domainm/progress", "err", err)
	}
}

// loadPrivcmd (re)loads xen-privcmd: in a domU it reads the xenstore node "target"
// once, when it is loaded, and refuses every other domain; after a migration the target
// has a new id, so the driver is loaded again once dom0 has rewritten the node.
func loadPrivcmd() error {
	exec.Command("rmmod", "xen_privcmd").Run()
	out, err := exec.Command("insmod", "/lib/modules/xen-privcmd.ko").CombinedOutput()
	if err != nil {
		return fmt.Errorf("insmod xen-privcmd.ko: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

func (a *agent) put(path, v string) {
	if err := a.xs.Write(path, v); err != nil {
		a.log.Error("xenstore write", "path", path, "err", err)
	}
}

func (a *agent) setState(s string) {
	a.mu.Lock()
	a.state = s
	a.mu.Unlock()
	a.put("domainm/state", s)
	a.log.Info("state", "state", s)
}

// scanLoop searches the mapped memory for the marker, one pass a second.
func (a *agent) scanLoop() {
	buf := make([]byte, 1<<20)
	for {
		a.mu.Lock()
		if a.state == proto.StateMonitoring && a.src.Mapped() {
			a.scanPass(buf)
		}
		a.mu.Unlock()
		time.Sleep(time.Second)
	}
}

// scanPass runs with a.mu held, so that prepare waits for the pass to end.
func (a *agent) scanPass(buf []byte) {
	a.pass++
	ov := len(marker) + 16
	for _, r := range a.src.Ranges() {
		for off := r.GPA; off < r.End(); off += uint64(len(buf) - ov) {
			n := min(uint64(len(buf)), r.End()-off)
			c, err := a.src.ReadAt(buf[:n], int64(off))
			if err != nil && c == 0 {
				a.log.Error("read", "gpa", fmt.Sprintf("%#x", off), "err", err)
				break
			}
			for i := 0; ; {
				j := bytes.Index(buf[i:c], []byte(marker))
				if j < 0 {
					break
				}
				at := i + j
				end := min(at+len(marker)+16, c)
				val := string(buf[at+len(marker) : end])
				key := fmt.Sprintf("%#x=%s", off+uint64(at), val)
				if !a.seen[key] && isHex(val, 16) {
					a.seen[key] = true
					a.log.Info("FOUND", "gpa", fmt.Sprintf("%#x", off+uint64(at)), "value", val, "domid", a.src.DomID(), "pass", a.pass)
					a.put(fmt.Sprintf("domainm/found/%d", len(a.seen)), fmt.Sprintf("%#x %s %d", off+uint64(at), val, a.src.DomID()))
				}
				i = at + 1
			}
			if n == r.End()-off {
				break
			}
		}
	}
	if a.pass%30 == 1 {
		a.log.Info("pass", "n", a.pass)
	}
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// Status implements control.Handler.
func (a *agent) Status(context.Context) control.Response {
	a.mu.Lock()
	defer a.mu.Unlock()
	return control.Response{State: a.state, Target: &proto.TargetInfo{DomID: int(a.src.DomID())}}
}

// Prepare implements control.Handler: it waits for the scan pass to end (a.mu), takes
// the fingerprint (the target is stopped: P1) and unmaps every frame.
func (a *agent) Prepare(ctx context.Context) (control.Response, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state != proto.StateMonitoring {
		return control.Response{State: a.state}, control.Errorf(proto.CodeWrongState, "prepare while %s", a.state)
	}
	if err := control.Live(ctx); err != nil {
		return control.Response{State: a.state}, err
	}
	fp, err := memscan.TakeFingerprint(ramOnly{a.src})
	if err != nil {
		return control.Response{State: a.state}, control.Errorf(proto.CodeInternal, "fingerprint: %v", err)
	}
	if err := a.src.Unmap(); err != nil {
		return control.Response{State: a.state}, control.Errorf(proto.CodeInternal, "%v", err)
	}
	a.fp = fp
	a.state = proto.StateQuiesced
	a.put("domainm/state", a.state)
	a.log.Info("quiesced: unmapped", "domid", a.src.DomID(), "ranges", len(fp.Ranges))
	return control.Response{State: a.state}, nil
}

// Resume implements control.Handler: reload xen-privcmd (dom0 rewrote the target node
// for the new id), map the frames the destination's grant listed for the new domain id,
// judge the change and check the fingerprint over the pages present at both hosts.
func (a *agent) Resume(ctx context.Context, args control.ResumeArgs) (control.Response, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if args.Target.DomID <= 0 || args.Target.DomID > 0x7fef {
		return control.Response{State: a.state}, control.Errorf(proto.CodeBadRequest, "resume: target.domid %d is not a domU id", args.Target.DomID)
	}
	if a.state != proto.StateQuiesced {
		return control.Response{State: a.state}, control.Errorf(proto.CodeWrongState, "resume while %s", a.state)
	}
	if err := control.Live(ctx); err != nil {
		return control.Response{State: a.state}, err
	}
	t0 := time.Now()
	if err := loadPrivcmd(); err != nil {
		return control.Response{State: a.state}, control.Errorf(proto.CodeSource, "%v", err)
	}
	domid := uint16(args.Target.DomID)
	// The frames the destination's grant read from Xen's p2m of the new domain (its
	// domainm/frames, in this domain's new home): the restored target need not hold
	// every frame it held at the source (lab run 10: frame 0x10 was gone at B).
	frames, ferr := a.xs.Read("domainm/frames")
	gt, _ := a.xs.Read("domainm/target")
	rs, perr := memscan.ParseXenFrames(frames)
	if ferr != nil || perr != nil || gt != strconv.Itoa(int(domid)) {
		// no usable list for this domain: map the same frames as before, all or nothing
		a.log.Warn("resume: no frame list of the new target from its grant; remapping the same frames", "target_node", gt, "read", ferr, "parse", perr)
		if err := a.src.Remap(domid); err != nil {
			a.put("domainm/remap", err.Error())
			return control.Response{State: a.state}, control.Errorf(proto.CodeSource, "%v", err)
		}
	} else {
		change, err := a.src.RemapFrames(domid, rs)
		if err != nil {
			a.put("domainm/remap", err.Error())
			return control.Response{State: a.state}, control.Errorf(proto.CodeSource, "%v", err)
		}
		a.log.Info("resume: remapped the grant's frames", "change", change.String())
		// Frames gone are no attack by themselves: a change beyond what a migration
		// explains is named (domainm/remap, the coordinator's result), and the
		// fingerprint over the frames present at both decides whether it is the guest.
		if err := change.Check(); err != nil {
			a.log.Warn("resume: BEYOND-MIGRATION", "err", err)
			a.put("domainm/remap", "BEYOND-MIGRATION "+err.Error())
		} else {
			a.put("domainm/remap", change.String())
		}
	}
	// The fingerprint over the sampled pages present at both hosts decides (as the real
	// supervisor's resume does on Xen: memscan.Fingerprint.VerifyMigrated).
	_, fc, err := a.fp.VerifyMigrated(a.src)
	a.log.Info("resume: fingerprint", "check", fc.String(), "absent", fmt.Sprintf("%#x", fc.Absent), "differ", fmt.Sprintf("%#x", fc.Differ))
	rm, _ := a.xs.Read("domainm/remap")
	a.put("domainm/remap", strings.TrimSpace(rm+"; fingerprint: "+fc.String()))
	if err != nil {
		a.src.Unmap()
		code := proto.CodeSource
		if errors.Is(err, memscan.ErrGuestChanged) {
			code = proto.CodeGuestChanged
		}
		return control.Response{State: a.state}, control.Errorf(code, "fingerprint: %v", err)
	}
	if len(fc.Differ) == 1 {
		a.log.Warn("resume: one sampled page differs; accepted", "gpa", fmt.Sprintf("%#x", fc.Differ[0]))
	}
	a.state = proto.StateMonitoring
	a.put("domainm/state", a.state)
	a.log.Info("monitoring: remapped", "domid", args.Target.DomID, "took", time.Since(t0).Round(time.Millisecond))
	return control.Response{State: a.state, Source: args.Source}, nil
}

// ramOnly shows a source's ranges of at least 1 MiB: the guest's RAM. The few pages the
// toolstack owns (console and xenstore rings, ioreq pages near 4 GiB) are cleared or
// rewritten by libxenguest when the domain is restored, so they identify no guest and
// stay out of the fingerprint.
type ramOnly struct{ *memscan.Xen }

func (r ramOnly) Ranges() []memscan.Range {
	var out []memscan.Range
	for _, rg := range r.Xen.Ranges() {
		if rg.Size >= 1<<20 {
			out = append(out, rg)
		}
	}
	return out
}

// Package xenmig co-migrates a Xen target and its Domain M from this host (dom0) to
// another with xl, keeping P1–P4 by order, since xl/libxl has no pre-copy policy hook:
//
//   - the target migrates first (xl migrate -p: it arrives paused), while Domain M keeps
//     monitoring it here; Domain M's migration starts only after the target's ended, so
//     Domain M cannot stop first (P1);
//   - prepare (the supervisor unmaps, over xenstore) goes out the moment the target stops
//     for its last copy (domainm-xen wait-suspend), while its source domain still exists:
//     xl destroys it when the destination has it, before xl returns;
//   - Domain M migrates while the stopped target waits (P2);
//   - at the destination the target is there already (P3); dom0 there grants Domain M
//     privilege for the new domain ids (domainm-xen grant) and follows the target's
//     frames (domainm-xen follow, in the background), Domain M runs, and resume
//     (remap the same frames of the new target id) is answered "monitoring";
//   - only then is the target unpaused (P4).
//
// The cost: Domain M's whole migration falls into the target's downtime. Every step's
// time is taken here, on one clock, and the invariant is checked on the resulting
// syncpoint.Timeline, as for QEMU. Commands run through Exec: xl and domainm-xen here,
// and the same over ssh at the destination.
package xenmig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

// Exec runs a command on a host ("" for this one) and returns its standard output.
type Exec interface {
	Run(ctx context.Context, host string, name string, args ...string) (string, error)
}

// SSH runs commands here directly and elsewhere through ssh root@HOST.
type SSH struct{}

// Run implements Exec.
func (SSH) Run(ctx context.Context, host, name string, args ...string) (string, error) {
	argv := append([]string{name}, args...)
	if host != "" {
		q := make([]string, len(argv))
		for i, a := range argv {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		argv = []string{"ssh", "-o", "BatchMode=yes", "root@" + host, strings.Join(q, " ")}
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s%s: %w: %s", where(host), strings.Join(append([]string{name}, args...), " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

func where(host string) string {
	if host == "" {
		return ""
	}
	return host + ": "
}

// Config names the pair and the destination.
type Config struct {
	Target, DomM string // xl domain names
	Dest         string // destination host (xl migrate's and ssh's host)
	Tool         string // the dom0 tool, default "domainm-xen" (on PATH at both hosts)
	// DomMSave moves Domain M by xl save, a copy to the destination (scp) and xl restore
	// -p there instead of xl migrate: for a PV Domain M, the only kind a Xen before 4.19
	// lets foreign-map (p2m_add_foreign refuses translated, i.e. PVH and HVM, callers
	// other than the hardware domain), which without shadow paging (Debian's Xen)
	// cannot live-migrate. Domain M is quiesced by then, so nothing is lost by a
	// stop-and-copy: its whole move falls into the target's wait (P2) either way.
	DomMSave bool
	// SaveDir holds the saved image at both hosts (default /tmp).
	SaveDir string
	Log     *slog.Logger
}

// Result is one co-migration's figures (all on this host's clock) and timeline.
type Result struct {
	Start time.Time `json:"start"`
	// Total: the target's migration start until it runs at the destination.
	Total syncpoint.Figure `json:"total_ns"`
	// P1: Domain M kept monitoring (not migrating) until the target stopped for its
	// last copy (its suspend; the end of its migration if the suspend was not seen).
	// P2: the stopped target waited for prepare, its last copy and Domain M's migration. P3: 0 (the
	// target is there first). P4: the paused target waited from Domain M's arrival
	// until "monitoring".
	Waits           [4]syncpoint.Figure `json:"waits_ns"`
	TargetMigration syncpoint.Figure    `json:"target_migration_ns"`
	DomMMigration   syncpoint.Figure    `json:"domm_migration_ns"`
	// DomMSteps: with DomMSave, the save, copy and restore parts of DomMMigration.
	DomMSteps map[string]syncpoint.Figure `json:"domm_steps_ns,omitempty"`
	// TargetDowntime: the target's suspend for its last copy (else the end of its
	// migration, a lower bound) until it was unpaused at the destination.
	TargetDowntime syncpoint.Figure      `json:"target_downtime_ns"`
	Gap            syncpoint.Figure      `json:"gap_ns"`
	Violations     []syncpoint.Violation `json:"violations,omitempty"`
	IDs            map[string]int        `json:"domain_ids"`
	// Frames: the target's frames in Xen's p2m (domainm-xen's FIRST+COUNT runs) at the
	// source before its migration ("src") and at the destination on arrival, as the
	// grant there read them ("dst_grant"): Domain M remaps the same frames at resume.
	Frames map[string]string `json:"frames,omitempty"`
	// Remap: what Domain M reported of its remap at the destination (its xenstore node
	// domainm/remap): the frames gone or new against the source's map state, those Xen
	// refused, and the fingerprint over the sampled pages present at both hosts; or why
	// it refused.
	Remap    string             `json:"remap,omitempty"`
	Timeline syncpoint.Timeline `json:"timeline"`
}

// followLog is where the destination's domainm-xen follow writes.
const followLog = "/var/log/domainm-xen-follow.log"

// ErrRolledBack is wrapped by Migrate's error when the co-migration failed and left the
// pair at the source, the target running there and Domain M monitoring it (the
// timeline says whether the target ran unwatched meanwhile).
var ErrRolledBack = errors.New("rolled back: the target runs at the source, monitored by Domain M")

type run struct {
	cfg Config
	x   Exec
	res *Result
}

// Migrate co-migrates the pair (see the package doc). On error the result holds what
// was measured so far, and the error says where the pair was left.
func Migrate(ctx context.Context, x Exec, cfg Config) (*Result, error) {
	if cfg.Tool == "" {
		cfg.Tool = "domainm-xen"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	r := &run{cfg: cfg, x: x, res: &Result{Start: time.Now(), IDs: map[string]int{}}}
	err := r.migrate(ctx)
	r.finish()
	return r.res, err
}

func (r *run) domid(ctx context.Context, host, name string) (int, error) {
	out, err := r.x.Run(ctx, host, "xl", "domid", name)
	if err != nil {
		return 0, err
	}
	id, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%sxl domid %s = %q: not a domU id", where(host), name, strings.TrimSpace(out))
	}
	return id, nil
}

// request sends one handshake request over xenstore through the dom0 tool.
func (r *run) request(ctx context.Context, host string, dm int, req proto.Request) (proto.Response, error) {
	b, _ := json.Marshal(req)
	out, err := r.x.Run(ctx, host, r.cfg.Tool, "request", strconv.Itoa(dm), string(b))
	var resp proto.Response
	line, _, _ := strings.Cut(out, "\n")
	if jerr := json.Unmarshal([]byte(line), &resp); jerr != nil && err == nil {
		err = fmt.Errorf("%s: response %q: %w", req.Cmd, line, jerr)
	}
	return resp, err
}

// fenced is req with the coordinator's epoch and arguments (prepare, resume).
func fenced(req proto.Request, epoch uint64, args json.RawMessage) proto.Request {
	req.Epoch, req.Args = epoch, args
	return req
}

// id is a request id unique across runs: the supervisor ignores a request whose id it
// answered already (a watch can fire twice).
func id(cmd string) json.RawMessage {
	return json.RawMessage(strconv.Quote(fmt.Sprintf("%s-%d", cmd, time.Now().UnixNano())))
}

func (r *run) mark(subject, where string, up bool, what string) time.Time {
	return r.markAt(time.Now(), subject, where, up, what)
}

// markAt records a change observed at now (e.g. when a command running meanwhile ended).
func (r *run) markAt(now time.Time, subject, where string, up bool, what string) time.Time {
	r.res.Timeline = append(r.res.Timeline, syncpoint.Change{Time: now, Subject: subject, Where: where, Up: up, What: what})
	r.cfg.Log.Info(what, "subject", subject, "where", where, "up", up)
	return now
}

func (r *run) migrate(ctx context.Context) error {
	c := r.cfg
	t, err := r.domid(ctx, "", c.Target)
	if err != nil {
		return err
	}
	m, err := r.domid(ctx, "", c.DomM)
	if err != nil {
		return err
	}
	r.res.IDs["src_target"], r.res.IDs["src_domm"] = t, m
	st, err := r.request(ctx, "", m, proto.NewRequest(id("status"), proto.CmdStatus))
	if err != nil || st.State != proto.StateMonitoring {
		return fmt.Errorf("supervisor is %q (%v), not monitoring: nothing started", st.State, err)
	}
	// The target's p2m here, before anything starts (not timed): to compare with the
	// destination's when resume finds frames missing (lab run 10).
	r.res.Frames = map[string]string{}
	if out, err := r.x.Run(ctx, "", c.Tool, "frames", strconv.Itoa(t)); err == nil {
		r.res.Frames["src"] = strings.TrimSpace(out)
	} else {
		r.cfg.Log.Warn("reading the target's frames", "err", err)
	}
	// What ran at the start, at one instant: all three up at the source.
	t0 := time.Now()
	r.res.Start = t0
	r.res.Timeline = append(r.res.Timeline,
		syncpoint.Change{Time: t0, Subject: syncpoint.SubjectDomM, Where: "src/domm", Up: true, What: "running at start"},
		syncpoint.Change{Time: t0, Subject: syncpoint.SubjectSupervisor, Where: "src", Up: true, What: "monitoring at start"},
		syncpoint.Change{Time: t0, Subject: syncpoint.SubjectTarget, Where: "src/target", Up: true, What: "running at start"})

	epoch := uint64(time.Now().Unix())
	tStop, err := r.migrateTarget(ctx, t, m, epoch)
	if err != nil {
		return err
	}
	var mStart time.Time
	if c.DomMSave {
		mStart = r.mark(syncpoint.SubjectDomM, "src/domm", false, "xl save domainm started")
		if err := r.saveRestore(ctx); err != nil {
			return fmt.Errorf("P2: Domain M's move: %w (the target is paused at %s)", err, c.Dest)
		}
	} else {
		mStart = r.mark(syncpoint.SubjectDomM, "src/domm", false, "xl migrate domainm started")
		if _, err := r.x.Run(ctx, "", "xl", "migrate", "-p", c.DomM, c.Dest); err != nil {
			return fmt.Errorf("P2: Domain M's migration: %w (the target is paused at %s)", err, c.Dest)
		}
	}
	mEnd := time.Now()
	r.res.DomMMigration = syncpoint.Measured(mEnd.Sub(mStart))
	r.res.Waits[1] = syncpoint.Measured(mEnd.Sub(tStop))
	r.res.Waits[2] = syncpoint.Measured(0)

	t2, err := r.domid(ctx, c.Dest, c.Target)
	if err != nil {
		return fmt.Errorf("P3: %w", err)
	}
	m2, err := r.domid(ctx, c.Dest, c.DomM)
	if err != nil {
		return fmt.Errorf("P3: %w", err)
	}
	r.res.IDs["dst_target"], r.res.IDs["dst_domm"] = t2, m2
	gout, err := r.x.Run(ctx, c.Dest, c.Tool, "grant", strconv.Itoa(m2), strconv.Itoa(t2))
	if err != nil {
		return fmt.Errorf("P4: grant at %s: %w (both paused there)", c.Dest, err)
	}
	r.res.Frames["dst_grant"] = strings.TrimSpace(gout)
	r.cfg.Log.Info("granted at the destination", "out", strings.TrimSpace(gout))
	// dom0 there keeps domainm/frames equal to the new domain's p2m (the source's
	// follow ended with its domain); not fatal: the supervisor still sweeps 4 GiB.
	follow := fmt.Sprintf("nohup %s follow %d %d >>%s 2>&1 </dev/null &", c.Tool, m2, t2, followLog)
	if _, err := r.x.Run(ctx, c.Dest, "sh", "-c", follow); err != nil {
		r.cfg.Log.Warn("starting domainm-xen follow at the destination", "err", err)
	}
	if _, err := r.x.Run(ctx, c.Dest, "xl", "unpause", c.DomM); err != nil {
		return fmt.Errorf("P4: %w (both paused at %s)", err, c.Dest)
	}
	r.mark(syncpoint.SubjectDomM, "dst/domm", true, "unpaused")
	args, _ := json.Marshal(proto.ResumeArgs{Source: fmt.Sprintf("xen:%d", t2),
		Target: proto.TargetInfo{Name: c.Target, Host: c.Dest, DomID: t2}})
	resp, err := r.request(ctx, c.Dest, m2, fenced(proto.NewRequest(id("resume"), proto.CmdResume), epoch, args))
	// what Domain M remapped there, or why it refused (not timed: after the answer)
	defer func() {
		out, rerr := r.x.Run(ctx, c.Dest, "xenstore-read", fmt.Sprintf("/local/domain/%d/domainm/remap", m2))
		if rerr == nil {
			r.res.Remap = strings.TrimSpace(out)
		}
	}()
	if err != nil || resp.State != proto.StateMonitoring {
		return fmt.Errorf("P4: resume: %v (state %q; the target stays paused at %s)", err, resp.State, c.Dest)
	}
	mon := r.mark(syncpoint.SubjectSupervisor, "dst", true, "monitoring")
	r.res.Waits[3] = syncpoint.Measured(mon.Sub(mEnd))
	// The target may run from the moment the unpause is sent.
	run := r.mark(syncpoint.SubjectTarget, "dst/target", true, "unpause sent")
	if _, err := r.x.Run(ctx, c.Dest, "xl", "unpause", c.Target); err != nil {
		return fmt.Errorf("P4: unpausing the target: %w (it is paused at %s, watched)", err, c.Dest)
	}
	r.res.TargetDowntime = syncpoint.Measured(run.Sub(tStop))
	r.res.Total = syncpoint.Measured(run.Sub(t0))
	return nil
}

// migrateTarget runs the target's migration (xl migrate -p) while Domain M monitors it
// here (P1), and quiesces Domain M (prepare) the moment the target stops for its last
// copy, seen by domainm-xen wait-suspend: then the target runs no more at this host and
// its source domain, whose frames Domain M maps, still exists. xl destroys that domain
// as soon as the destination has it; a supervisor that looks in between sees its target
// vanish, raises a false alert and refuses prepare (lab runs 21, 22), so prepare must not
// wait for xl to return. It returns when the target stopped and xl has ended well, with
// Domain M quiesced.
//
// If the suspend is not seen (the tool fails, or the domain went before it was looked
// at), prepare follows xl's end as before, with that window open. If xl fails after
// prepare, xl resumes the target here: the coordinator pauses it, resumes Domain M here
// and unpauses it, and the timeline shows the target running unwatched from xl's end (at
// the latest) to the pause.
func (r *run) migrateTarget(ctx context.Context, t, m int, epoch uint64) (time.Time, error) {
	c := r.cfg
	t0 := r.res.Start
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	type ended struct {
		at  time.Time
		out string
		err error
	}
	susp, mig := make(chan ended, 1), make(chan ended, 1)
	go func() {
		out, err := r.x.Run(wctx, "", c.Tool, "wait-suspend", strconv.Itoa(t))
		susp <- ended{time.Now(), out, err}
	}()
	go func() {
		_, err := r.x.Run(ctx, "", "xl", "migrate", "-p", c.Target, c.Dest)
		mig <- ended{time.Now(), "", err}
	}()
	prepare := func() error {
		if _, err := r.request(ctx, "", m, fenced(proto.NewRequest(id("prepare"), proto.CmdPrepare), epoch, nil)); err != nil {
			return err
		}
		r.mark(syncpoint.SubjectSupervisor, "src", false, "quiesced")
		return nil
	}
	var tStop time.Time
	var prepErr error
	prepared := false
	var xl ended
	select {
	case s := <-susp:
		if s.err != nil {
			r.cfg.Log.Warn("the target's suspend was not seen: prepare after its migration ends", "err", s.err)
		} else {
			tStop = r.mark(syncpoint.SubjectTarget, "src/target", false, "suspended for its last copy")
			r.res.Waits[0] = syncpoint.Measured(tStop.Sub(t0))
			prepErr = prepare()
			prepared = prepErr == nil
		}
		xl = <-mig
	case xl = <-mig:
	}
	stopWatch()
	if xl.err == nil {
		r.markAt(xl.at, syncpoint.SubjectTarget, "src/target", false, "xl migrate target ended")
	}
	r.res.TargetMigration = syncpoint.Measured(xl.at.Sub(t0))
	switch {
	case xl.err != nil && ctx.Err() != nil:
		// xl was killed mid-migration: where the target is, and whether it runs, is
		// not known here.
		return tStop, fmt.Errorf("P1: target's migration: %w: stopped by the coordinator's deadline (%v); the target's state is unknown (xl list here and at %s; Domain M prepared: %v)", xl.err, ctx.Err(), c.Dest, prepared)
	case xl.err != nil && prepared:
		return tStop, r.resumeAtSource(ctx, t, m, epoch, xl.at, xl.err)
	case xl.err != nil && prepErr != nil:
		return tStop, fmt.Errorf("P1: target's migration: %w; prepare at its suspend failed too: %v (xl resumes the target at the source; ask Domain M's status)", xl.err, prepErr)
	case xl.err != nil:
		return tStop, fmt.Errorf("P1: target's migration: %w (xl resumes it at the source on failure; Domain M still monitors it): %w", xl.err, ErrRolledBack)
	case prepErr != nil:
		return tStop, fmt.Errorf("P2: prepare at the target's suspend: %w (the target is paused at %s)", prepErr, c.Dest)
	}
	if tStop.IsZero() {
		tStop = xl.at
		r.res.Waits[0] = syncpoint.Measured(tStop.Sub(t0))
	}
	if !prepared {
		if err := prepare(); err != nil {
			return tStop, fmt.Errorf("P2: prepare: %w (the target is paused at %s)", err, c.Dest)
		}
	}
	return tStop, nil
}

// resumeAtSource answers a target migration that failed after prepare: xl has resumed
// the target here (or left it suspended), Domain M is quiesced. The target is paused,
// Domain M resumed for it here, and the target unpaused once it is monitored again; the
// returned error says so. If Domain M does not resume, the target stays paused.
func (r *run) resumeAtSource(ctx context.Context, t, m int, epoch uint64, xlEnd time.Time, xlErr error) error {
	c := r.cfg
	// xl resumed the target before it returned: from then at the latest it ran unwatched.
	r.markAt(xlEnd, syncpoint.SubjectTarget, "src/target", true, "resumed here by xl (its migration failed)")
	if _, err := r.x.Run(ctx, "", "xl", "pause", c.Target); err != nil {
		return fmt.Errorf("P1: target's migration: %w, after Domain M's prepare; pausing the target here failed too: %v (it may run here unwatched: resume Domain M for domain %d)", xlErr, err, t)
	}
	r.mark(syncpoint.SubjectTarget, "src/target", false, "paused until Domain M monitors it again")
	args, _ := json.Marshal(proto.ResumeArgs{Source: fmt.Sprintf("xen:%d", t),
		Target: proto.TargetInfo{Name: c.Target, DomID: t}})
	resp, err := r.request(ctx, "", m, fenced(proto.NewRequest(id("resume"), proto.CmdResume), epoch, args))
	if err != nil || resp.State != proto.StateMonitoring {
		return fmt.Errorf("P1: target's migration: %w, after Domain M's prepare; Domain M's resume here: %v (state %q): the target stays paused here", xlErr, err, resp.State)
	}
	r.mark(syncpoint.SubjectSupervisor, "src", true, "monitoring again")
	r.mark(syncpoint.SubjectTarget, "src/target", true, "unpause sent")
	if _, err := r.x.Run(ctx, "", "xl", "unpause", c.Target); err != nil {
		return fmt.Errorf("P1: target's migration: %w; Domain M monitors it here again, but unpausing it failed: %v", xlErr, err)
	}
	return fmt.Errorf("P1: target's migration: %w, after Domain M's prepare; the target runs here again, monitored by Domain M (nothing moved): %w", xlErr, ErrRolledBack)
}

// saveRestore moves the quiesced Domain M by xl save here, scp to the destination and
// xl restore -p there (it arrives paused, like xl migrate -p), timing each part.
func (r *run) saveRestore(ctx context.Context) error {
	c := r.cfg
	dir := c.SaveDir
	if dir == "" {
		dir = "/tmp"
	}
	file := fmt.Sprintf("%s/domainm-migrate-%s.save", dir, c.DomM)
	r.res.DomMSteps = map[string]syncpoint.Figure{}
	step := func(name, host string, argv ...string) error {
		t0 := time.Now()
		_, err := r.x.Run(ctx, host, argv[0], argv[1:]...)
		r.res.DomMSteps[name] = syncpoint.Measured(time.Since(t0))
		r.cfg.Log.Info("Domain M's move", "step", name, "took", time.Since(t0).Round(time.Millisecond), "err", err)
		return err
	}
	// xl save destroys the domain once its image is written.
	if err := step("save", "", "xl", "save", c.DomM, file); err != nil {
		return err
	}
	if err := step("copy", "", "scp", "-q", file, "root@"+c.Dest+":"+file); err != nil {
		return fmt.Errorf("%w (Domain M is saved in %s here: xl restore it)", err, file)
	}
	r.x.Run(ctx, "", "rm", "-f", file)
	if err := step("restore", c.Dest, "xl", "restore", "-p", file); err != nil {
		return fmt.Errorf("%w (Domain M is saved in %s at %s)", err, file, c.Dest)
	}
	r.x.Run(ctx, c.Dest, "rm", "-f", file)
	return nil
}

func (r *run) finish() {
	if len(r.res.Timeline) == 0 {
		return
	}
	r.res.Timeline = append(r.res.Timeline, syncpoint.Change{Time: time.Now(), Subject: syncpoint.SubjectEnd, What: "end"})
	vs, gap := r.res.Timeline.Check()
	r.res.Violations, r.res.Gap = vs, syncpoint.Measured(gap)
}

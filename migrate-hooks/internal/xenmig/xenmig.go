// Package xenmig co-migrates a Xen target and its Domain M from this host (dom0) to
// another with xl, through the coordinator shared with QEMU (syncpoint, Sequential
// mode): xl/libxl has no pre-copy policy hook and no pre-switchover hold, so P1–P4 are
// kept by order:
//
//   - the target migrates first (xl migrate -p: it arrives paused), while Domain M keeps
//     monitoring it here; Domain M's migration starts only after the target's ended, so
//     Domain M cannot stop first (P1);
//   - prepare (the supervisor unmaps, over xenstore) goes out the moment the target stops
//     for its last copy (domainm-xen wait-suspend), while its source domain still exists:
//     xl destroys it when the destination has it, before xl returns;
//   - Domain M migrates while the stopped target waits (P2);
//   - at the destination the target is there already (P3); dom0 there grants Domain M
//     privilege for the new domain ids (domainm-xen grant, the supervisor's Binder step)
//     and follows the target's frames (domainm-xen follow, in the background), Domain M
//     runs, and resume (remap the same frames of the new target id) is answered
//     "monitoring";
//   - only then is the target unpaused (P4).
//
// The cost: Domain M's whole migration falls into the target's downtime. The four
// domains are syncpoint.VMs over xl (domain.go), the supervisor a syncpoint.Supervisor
// over xenstore (supervisor.go); every event is stamped on this host's clock, and the
// invariant is checked on the timeline syncpoint builds, as for QEMU. Commands run
// through Exec: xl and domainm-xen here, and the same over ssh at the destination.
package xenmig

import (
	"context"
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
	// Call bounds one xl command while the coordinator checks a state or cleans up
	// (default 30 s: over ssh to a nested, emulated host a call takes seconds).
	Call time.Duration
	Log  *slog.Logger
}

// Result is one co-migration: the coordinator's figures and timeline (syncpoint.Result:
// P1 is the target's migration until it stopped for its last copy, P2 the stopped
// target's wait for prepare, its last copy and Domain M's move, P3 0, P4 Domain M's
// arrival until the target's unpause was sent) and Xen's own.
type Result struct {
	syncpoint.Result
	TargetMigration syncpoint.Figure `json:"target_migration_ns"`
	// TargetMigrationEnded: when xl migrate of the target returned (TargetMigration
	// counts from its start, not from Start).
	TargetMigrationEnded time.Time        `json:"target_migration_ended,omitzero"`
	DomMMigration        syncpoint.Figure `json:"domm_migration_ns"`
	// DomMSteps: with DomMSave, the save, copy and restore parts of DomMMigration.
	DomMSteps map[string]syncpoint.Figure `json:"domm_steps_ns,omitempty"`
	IDs       map[string]int              `json:"domain_ids"`
	// Frames: the target's frames in Xen's p2m (domainm-xen's FIRST+COUNT runs) at the
	// source before its migration ("src") and at the destination on arrival, as the
	// grant there read them ("dst_grant"): Domain M remaps the same frames at resume.
	Frames map[string]string `json:"frames,omitempty"`
	// Remap: what Domain M reported of its remap at the destination (its xenstore node
	// domainm/remap): the frames gone or new against the source's map state, those Xen
	// refused, and the fingerprint over the sampled pages present at both hosts; or why
	// it refused.
	Remap string `json:"remap,omitempty"`
}

// followLog is where the destination's domainm-xen follow writes.
const followLog = "/var/log/domainm-xen-follow.log"

// ErrRolledBack is wrapped by Migrate's error when the co-migration failed and left the
// pair at the source, the target running there and Domain M monitoring it (the
// timeline says whether the target ran unwatched meanwhile).
var ErrRolledBack = errors.New("rolled back: the target runs at the source, monitored by Domain M")

// Migrate co-migrates the pair (see the package doc). On error the result holds what
// was measured so far, and the error says where the pair was left.
func Migrate(ctx context.Context, x Exec, cfg Config) (*Result, error) {
	if cfg.Tool == "" {
		cfg.Tool = "domainm-xen"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Call == 0 {
		cfg.Call = 30 * time.Second
	}
	res := &Result{IDs: map[string]int{}, Frames: map[string]string{}}
	res.Start = time.Now()
	sup := &supervisor{x: x, cfg: &cfg, res: res, epoch: uint64(time.Now().Unix())}
	t, err := sup.domid(ctx, "", cfg.Target)
	if err != nil {
		return res, err
	}
	m, err := sup.domid(ctx, "", cfg.DomM)
	if err != nil {
		return res, err
	}
	res.IDs["src_target"], res.IDs["src_domm"] = t, m
	sup.srcT, sup.srcM = t, m
	st, err := sup.request(ctx, "", m, proto.NewRequest(id("status"), proto.CmdStatus))
	if err != nil || st.State != proto.StateMonitoring {
		return res, fmt.Errorf("supervisor is %q (%v), not monitoring: nothing started", st.State, err)
	}
	// The target's p2m here, before anything starts (not timed): to compare with the
	// destination's when resume finds frames missing (lab run 10).
	if out, err := x.Run(ctx, "", cfg.Tool, "frames", strconv.Itoa(t)); err == nil {
		res.Frames["src"] = strings.TrimSpace(out)
	} else {
		cfg.Log.Warn("reading the target's frames", "err", err)
	}

	tSrc, tDst := newDomain(x, "", cfg.Target, "src/target", t, &cfg), newDomain(x, cfg.Dest, cfg.Target, "dst/target", 0, &cfg)
	mSrc, mDst := newDomain(x, "", cfg.DomM, "src/domm", m, &cfg), newDomain(x, cfg.Dest, cfg.DomM, "dst/domm", 0, &cfg)
	tSrc.peer, mSrc.peer = tDst, mDst
	r, err := syncpoint.Run(ctx,
		syncpoint.Side{Src: tSrc, Dst: tDst, URI: cfg.Dest},
		syncpoint.Side{Src: mSrc, Dst: mDst, URI: cfg.Dest},
		sup, syncpoint.Config{Mode: syncpoint.Sequential, Log: cfg.Log,
			// TCG-nested hosts move a 512 MiB target in minutes, and a supervisor
			// under load answers a remap of every frame in seconds
			P1: 20 * time.Minute, P2: 15 * time.Minute, P3: 5 * time.Minute, Handshake: 2 * time.Minute, Call: cfg.Call})
	res.Result = *r
	res.TargetMigration, res.DomMMigration = tSrc.took(), mSrc.took()
	res.TargetMigrationEnded = tSrc.endedAt()
	mSrc.mu.Lock()
	res.DomMSteps = mSrc.steps
	mSrc.mu.Unlock()
	if sup.dstM != 0 {
		// what Domain M remapped there, or why it refused (after the answer)
		out, rerr := x.Run(context.WithoutCancel(ctx), cfg.Dest, "xenstore-read", fmt.Sprintf("/local/domain/%d/domainm/remap", sup.dstM))
		if rerr == nil {
			res.Remap = strings.TrimSpace(out)
		}
	}
	if err != nil && res.RolledBack {
		err = fmt.Errorf("%w: %w", err, ErrRolledBack)
	}
	return res, err
}

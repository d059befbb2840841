package xenmig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

// fakeXen plays both dom0s: domain ids, xl migrate moving a domain, and a supervisor
// answering requests by state. It records every command in order.
//
// xl migrate of the target models libxl's sender: the target suspends, then its last
// copy lasts until prepare arrives (or lastCopy passes), then xl destroys the source
// domain and returns. Domain M's supervisor, like the real one, sees its target vanish
// if it is still monitoring then (goneSeen).
type fakeXen struct {
	mu        sync.Mutex
	ids       map[string]int // "host/name" -> domid
	state     string         // the supervisor's
	log       []string
	failCmd   string // a command (prefix) that fails
	nextID    int
	unwatched bool // the target ran while Domain M was not monitoring

	suspended        chan struct{} // closed when the target stops for its last copy
	prepared         chan struct{} // closed at prepare
	lastCopy         time.Duration // how long the last copy waits for prepare at most
	failAfterSuspend bool          // xl migrate fails after the suspend; xl resumes the target here
	noWatch          bool          // wait-suspend fails (an older dom0 tool)
	goneSeen         bool          // the source domain was destroyed while Domain M monitored it
	hold             bool          // xl migrate of the target ends only when its context does
	targetHere       string        // the target's state at the source: running, suspended, paused, gone
	xlEnd            time.Time     // when xl migrate of the target returned
	dstRunning       map[string]bool
}

// list is xl list at host: the domains there, with their state column.
func (f *fakeXen) list(host string) string {
	out := "Name                                        ID   Mem VCPUs\tState\tTime(s)\nDomain-0 0 1024 2 r----- 10.0\n"
	for k, id := range f.ids {
		h, name, _ := strings.Cut(k, "/")
		if h != host {
			continue
		}
		st := "--p---"
		switch {
		case host == "" && name == "target":
			st = map[string]string{"running": "-b----", "suspended": "---s--", "paused": "--p---"}[f.targetHere]
		case host == "" || f.dstRunning[name]:
			st = "-b----"
		}
		out += fmt.Sprintf("%s %d 512 1 %s 1.0\n", name, id, st)
	}
	return out
}

func (f *fakeXen) Run(ctx context.Context, host, name string, args ...string) (string, error) {
	cmd := strings.TrimSpace(host + " " + name + " " + strings.Join(args, " "))
	f.mu.Lock()
	f.log = append(f.log, cmd)
	fail := f.failCmd != "" && strings.HasPrefix(strings.TrimSpace(name+" "+strings.Join(args, " ")), f.failCmd)
	f.mu.Unlock()
	if fail {
		return "", errors.New("injected failure")
	}
	// the two commands that run beside the rest, and block
	switch {
	case name == "domainm-xen" && args[0] == "wait-suspend":
		if f.noWatch {
			return "", errors.New("unknown command \"wait-suspend\"")
		}
		select {
		case <-f.suspended:
			return "suspended " + args[1] + " 0\n", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	case name == "xl" && args[0] == "migrate" && args[2] == "target":
		f.mu.Lock()
		f.targetHere = "suspended"
		f.mu.Unlock()
		close(f.suspended)
		if f.hold {
			<-ctx.Done()
			return "", fmt.Errorf("signal: killed (%w)", ctx.Err())
		}
		select {
		case <-f.prepared:
		case <-time.After(f.lastCopy):
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.failAfterSuspend {
			f.targetHere = "running"
			if f.state != proto.StateMonitoring {
				f.unwatched = true
			}
			return "", errors.New("migration sender: target reported failure; resuming at the source")
		}
		if f.state == proto.StateMonitoring {
			f.goneSeen = true
		}
		f.targetHere = "gone"
		f.xlEnd = time.Now()
		delete(f.ids, "/target")
		f.nextID++
		f.ids[args[3]+"/target"] = f.nextID
		return "", nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case name == "xl" && args[0] == "list":
		return f.list(host), nil
	case name == "xl" && args[0] == "domid":
		id, ok := f.ids[host+"/"+args[1]]
		if !ok {
			return "", fmt.Errorf("no domain %s", args[1])
		}
		return fmt.Sprintf("%d\n", id), nil
	case name == "xl" && args[0] == "migrate":
		delete(f.ids, "/"+args[2])
		f.nextID++
		f.ids[args[3]+"/"+args[2]] = f.nextID
	case name == "domainm-xen" && args[0] == "frames":
		return "0x0+0x8000 0xfeff8+0x8\n", nil
	case name == "domainm-xen" && args[0] == "grant":
		return "granted domain " + args[1] + " privilege over domain " + args[2] + "\n", nil
	case name == "xenstore-read" && host != "" && strings.HasSuffix(args[0], "/domainm/remap"):
		// what Domain M wrote at resume (the agent: its remap and fingerprint check)
		if f.state != proto.StateMonitoring {
			return "xen:6: refused\n", nil
		}
		return "frames 32785 -> 32721: 64 gone (0x10+0x40), 0 new (none), 0 refused by Xen\n", nil
	case name == "xl" && args[0] == "save":
		delete(f.ids, "/"+args[1])
	case name == "xl" && args[0] == "restore":
		f.nextID++
		f.ids[host+"/domainm"] = f.nextID
	case name == "xl" && args[0] == "unpause":
		if args[1] == "target" && f.state != proto.StateMonitoring {
			f.unwatched = true
		}
		if host == "" && args[1] == "target" {
			f.targetHere = "running"
		} else if host != "" {
			f.dstRunning[args[1]] = true
		}
	case name == "xl" && args[0] == "pause" && args[1] == "target" && host == "":
		f.targetHere = "paused"
	case name == "domainm-xen" && args[0] == "request":
		var req proto.Request
		if err := json.Unmarshal([]byte(args[2]), &req); err != nil {
			return "", err
		}
		// As the other clients, it asks for the current forms (proto.NewRequest).
		if req.AddrForm != proto.AddrFormHex || req.HostForm != proto.HostFormHypervisor {
			return "", fmt.Errorf("%s asks for addr_form %q, host_form %q", req.Cmd, req.AddrForm, req.HostForm)
		}
		switch req.Cmd {
		case proto.CmdPrepare:
			if f.targetHere == "gone" {
				return "", errors.New("request prepare: not monitoring: waiting for the memory source xen:1 (wrong_state)")
			}
			f.state = proto.StateQuiesced
			close(f.prepared)
		case proto.CmdResume:
			f.state = proto.StateMonitoring
		}
		b, _ := json.Marshal(proto.Response{ID: req.ID, OK: true, State: f.state})
		return string(b) + "\nrequest answered\n", nil
	}
	return "", nil
}

// d is a measured figure's duration (-1 if not measured).
func d(f syncpoint.Figure) time.Duration {
	if v, ok := f.Get(); ok {
		return v
	}
	return -1
}

func newFake() *fakeXen {
	return &fakeXen{ids: map[string]int{"/target": 1, "/domainm": 2}, state: proto.StateMonitoring, nextID: 5,
		suspended: make(chan struct{}), prepared: make(chan struct{}), lastCopy: 2 * time.Second, targetHere: "running", dstRunning: map[string]bool{}}
}

func TestMigrateOrder(t *testing.T) {
	f := newFake()
	r, err := Migrate(context.Background(), f, Config{Target: "target", DomM: "domainm", Dest: "b"})
	if err != nil {
		t.Fatal(err)
	}
	idx := func(prefix string) int {
		i := slices.IndexFunc(f.log, func(s string) bool { return strings.HasPrefix(s, prefix) })
		if i < 0 {
			t.Fatalf("%q never ran: %q", prefix, f.log)
		}
		return i
	}
	order := []string{"xl migrate -p target b", `domainm-xen request 2 {"id":"prepare`, "xl migrate -p domainm b",
		"b domainm-xen grant 7 6", "b sh -c nohup domainm-xen follow 7 6 >>/var/log/domainm-xen-follow.log 2>&1 </dev/null &",
		"b xl unpause domainm", `b domainm-xen request 7 {"id":"resume`, "b xl unpause target"}
	for i := 1; i < len(order); i++ {
		if idx(order[i-1]) >= idx(order[i]) {
			t.Errorf("%q ran after %q: %q", order[i-1], order[i], f.log)
		}
	}
	if f.unwatched {
		t.Error("the target was unpaused before resume was answered")
	}
	if len(r.Violations) > 0 || !r.Gap.OK() {
		t.Errorf("violations %v, gap %v", r.Violations, r.Gap)
	}
	if r.IDs["dst_target"] != 6 || r.IDs["dst_domm"] != 7 {
		t.Errorf("ids %v", r.IDs)
	}
	if r.Frames["src"] != "0x0+0x8000 0xfeff8+0x8" || r.Frames["dst_grant"] != "granted domain 7 privilege over domain 6" {
		t.Errorf("frames %q", r.Frames)
	}
	if !strings.HasPrefix(r.Remap, "frames 32785 -> 32721: 64 gone") || idx("b xenstore-read /local/domain/7/domainm/remap") < idx("b xl unpause target") {
		t.Errorf("remap %q: want Domain M's report at B, read after the target's unpause: %q", r.Remap, f.log)
	}
	if idx("domainm-xen frames 1") > idx("xl migrate -p target") {
		t.Errorf("the source's frames were read after the migration started: %q", f.log)
	}
	for i, w := range r.Waits {
		if !w.OK() {
			t.Errorf("P%d not measured", i+1)
		}
	}
}

// TestResumeFails: the target must stay paused at the destination when resume fails.
func TestResumeFails(t *testing.T) {
	f := newFake()
	f.failCmd = "domainm-xen request 7"
	r, err := Migrate(context.Background(), f, Config{Target: "target", DomM: "domainm", Dest: "b"})
	if err == nil || !strings.Contains(err.Error(), "target paused at destination") {
		t.Fatalf("err = %v", err)
	}
	if slices.Contains(f.log, "b xl unpause target") {
		t.Fatalf("the target was unpaused after a failed resume: %q", f.log)
	}
	if r.Remap != "xen:6: refused" {
		t.Errorf("remap %q: want why Domain M refused, read at B", r.Remap)
	}
	if len(r.Violations) > 0 {
		t.Errorf("violations %v", r.Violations)
	}
}

// TestNotMonitoring: nothing starts when the supervisor does not monitor.
func TestNotMonitoring(t *testing.T) {
	f := newFake()
	f.state = proto.StateStarting
	if _, err := Migrate(context.Background(), f, Config{Target: "target", DomM: "domainm", Dest: "b"}); err == nil {
		t.Fatal("migrated with a supervisor that does not monitor")
	}
	for _, c := range f.log {
		if strings.Contains(c, "migrate") {
			t.Fatalf("%q ran", c)
		}
	}
}

// TestMigrateSave: a PV Domain M moves by xl save, scp and xl restore -p, after prepare
// and before the grant at the destination; the target still waits for resume.
func TestMigrateSave(t *testing.T) {
	f := newFake()
	r, err := Migrate(context.Background(), f, Config{Target: "target", DomM: "domainm", Dest: "b", DomMSave: true})
	if err != nil {
		t.Fatal(err)
	}
	idx := func(prefix string) int {
		i := slices.IndexFunc(f.log, func(s string) bool { return strings.HasPrefix(s, prefix) })
		if i < 0 {
			t.Fatalf("%q never ran: %q", prefix, f.log)
		}
		return i
	}
	order := []string{"xl migrate -p target b", `domainm-xen request 2 {"id":"prepare`, "xl save domainm /tmp/domainm-migrate-domainm.save",
		"scp -q /tmp/domainm-migrate-domainm.save root@b:/tmp/domainm-migrate-domainm.save", "b xl restore -p /tmp/domainm-migrate-domainm.save",
		"b domainm-xen grant 7 6", "b xl unpause domainm", `b domainm-xen request 7 {"id":"resume`, "b xl unpause target"}
	for i := 1; i < len(order); i++ {
		if idx(order[i-1]) >= idx(order[i]) {
			t.Errorf("%q ran after %q: %q", order[i-1], order[i], f.log)
		}
	}
	if slices.ContainsFunc(f.log, func(s string) bool { return strings.HasPrefix(s, "xl migrate -p domainm") }) {
		t.Errorf("Domain M live-migrated: %q", f.log)
	}
	if f.unwatched || len(r.Violations) > 0 || !r.Gap.OK() {
		t.Errorf("unwatched %v, violations %v, gap %v", f.unwatched, r.Violations, r.Gap)
	}
	for _, k := range []string{"save", "copy", "restore"} {
		if !r.DomMSteps[k].OK() {
			t.Errorf("step %s not measured: %v", k, r.DomMSteps)
		}
	}
	f = newFake()
	f.failCmd = "xl restore"
	r, err = Migrate(context.Background(), f, Config{Target: "target", DomM: "domainm", Dest: "b", DomMSave: true})
	if err == nil || !strings.Contains(err.Error(), "saved in") || !strings.Contains(err.Error(), "target paused at destination") {
		t.Fatalf("failed restore: err = %v, want where the image is, and the target left paused", err)
	}
	if f.unwatched || slices.Contains(f.log, "b xl unpause target") || len(r.Violations) > 0 {
		t.Errorf("failed restore: the target was unpaused (%v) or ran unwatched (%v): %q", slices.Contains(f.log, "b xl unpause target"), r.Violations, f.log)
	}
}

// TestPrepareAtSuspend: prepare reaches Domain M while the target's source domain still
// exists (its last copy), so the supervisor never sees its target vanish (lab runs 21
// and 22 lost that race when prepare followed xl's end). Without the suspend watch the
// fake reproduces run 21: the supervisor saw the domain go and refused prepare.
func TestPrepareAtSuspend(t *testing.T) {
	f := newFake()
	r, err := Migrate(context.Background(), f, Config{Target: "target", DomM: "domainm", Dest: "b", DomMSave: true})
	if err != nil {
		t.Fatal(err)
	}
	if f.goneSeen {
		t.Errorf("the source domain was destroyed while Domain M still monitored it: %q", f.log)
	}
	if f.unwatched || len(r.Violations) > 0 || !r.Gap.OK() || d(r.Gap) != 0 {
		t.Errorf("unwatched %v, violations %v, gap %v", f.unwatched, r.Violations, r.Gap)
	}
	// P1 ends at the suspend, before xl's end; the downtime counts from the suspend.
	if !(d(r.Waits[0]) <= f.xlEnd.Sub(r.Start)) || d(r.TargetDowntime) < d(r.Waits[1]) {
		t.Errorf("P1 %v, target's migration %v, P2 %v, downtime %v", r.Waits[0], r.TargetMigration, r.Waits[1], r.TargetDowntime)
	}
	if e := r.TargetMigrationEnded; e.Before(f.xlEnd.Add(-250*time.Millisecond)) || e.After(f.xlEnd.Add(250*time.Millisecond)) {
		t.Errorf("TargetMigrationEnded %v, xl migrate of the target returned at %v", e, f.xlEnd)
	}
	var suspend, prepare time.Time
	for _, c := range r.Timeline {
		switch {
		case c.Where == "src/target" && c.What == "STOP: suspended for its last copy":
			suspend = c.Time
		case c.Subject == syncpoint.SubjectSupervisor && c.What == "prepare sent":
			prepare = c.Time
		}
	}
	if suspend.IsZero() || prepare.Before(suspend) || !prepare.Before(f.xlEnd) {
		t.Errorf("suspend %v, prepare %v, xl's end %v: want suspend, then prepare, then xl's end; timeline %v", suspend, prepare, f.xlEnd, r.Timeline)
	}

	f = newFake()
	f.noWatch, f.lastCopy = true, 50*time.Millisecond
	_, err = Migrate(context.Background(), f, Config{Target: "target", DomM: "domainm", Dest: "b", DomMSave: true})
	if err == nil || !strings.Contains(err.Error(), "supervisor prepare") || !f.goneSeen {
		t.Errorf("without the suspend watch: err %v, gone seen %v: want run 21's refused prepare", err, f.goneSeen)
	}
}

// TestTargetFailsAfterPrepare: the target's migration fails after Domain M quiesced (xl
// resumes the target at the source). The coordinator pauses the target, resumes Domain M
// there and unpauses it; nothing else moves, and the timeline owns up to the moment the
// target ran unwatched (from xl's end at the latest to the pause).
func TestTargetFailsAfterPrepare(t *testing.T) {
	f := newFake()
	f.failAfterSuspend = true
	r, err := Migrate(context.Background(), f, Config{Target: "target", DomM: "domainm", Dest: "b", DomMSave: true})
	if err == nil || !strings.Contains(err.Error(), "monitored by Domain M") || !errors.Is(err, ErrRolledBack) {
		t.Fatalf("err = %v, want ErrRolledBack", err)
	}
	idx := func(prefix string) int {
		i := slices.IndexFunc(f.log, func(s string) bool { return strings.HasPrefix(s, prefix) })
		if i < 0 {
			t.Fatalf("%q never ran: %q", prefix, f.log)
		}
		return i
	}
	order := []string{`domainm-xen request 2 {"id":"prepare`, "xl pause target", `domainm-xen request 2 {"id":"resume`, "xl unpause target"}
	for i := 1; i < len(order); i++ {
		if idx(order[i-1]) >= idx(order[i]) {
			t.Errorf("%q ran after %q: %q", order[i-1], order[i], f.log)
		}
	}
	if !strings.Contains(f.log[idx(`domainm-xen request 2 {"id":"resume`)], `"source":"xen:1"`) {
		t.Errorf("resume does not name the source domain: %q", f.log[idx(`domainm-xen request 2 {"id":"resume`)])
	}
	if f.state != proto.StateMonitoring || f.targetHere != "running" {
		t.Errorf("after the failure: supervisor %q, target %q here: want monitoring, running", f.state, f.targetHere)
	}
	for _, c := range f.log {
		if strings.HasPrefix(c, "xl save") || strings.HasPrefix(c, "xl migrate -p domainm") || strings.HasPrefix(c, "b ") && c != "b xl list" {
			t.Errorf("%q ran after the target's migration failed", c)
		}
	}
	if len(r.Violations) != 1 || r.Violations[0].Open || d(r.Gap) <= 0 || d(r.Gap) > time.Second {
		t.Errorf("violations %v, gap %v: want one closed interval, xl's end to the pause", r.Violations, r.Gap)
	}
	f = newFake()
	f.failAfterSuspend = true
	f.failCmd = `domainm-xen request 2 {"id":"resume`
	if _, err := Migrate(context.Background(), f, Config{Target: "target", DomM: "domainm", Dest: "b"}); err == nil || !strings.Contains(err.Error(), "target paused at source") || errors.Is(err, ErrRolledBack) {
		t.Errorf("resume at the source refused: err = %v, want the target left paused, not rolled back", err)
	}
	if f.targetHere != "paused" {
		t.Errorf("resume at the source refused, target %q: want it left paused", f.targetHere)
	}
}

// TestTargetMigrationTimesOut: the coordinator's deadline kills xl migrate after the
// target's suspend. Domain M is resumed here, but the pair is not claimed rolled back:
// the target's source domain is left suspended (xl did not resume it), which xl unpause
// cannot undo; and nothing else moves.
func TestTargetMigrationTimesOut(t *testing.T) {
	f := newFake()
	f.lastCopy = time.Hour           // xl never ends on its own
	f.prepared = make(chan struct{}) // ...even after prepare
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	f.hold = true
	// Call: the rollback waits that long for a restart that a killed xl never makes
	r, err := Migrate(ctx, f, Config{Target: "target", DomM: "domainm", Dest: "b", Call: time.Second})
	if err == nil || errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "xl unpause cannot run it") {
		t.Fatalf("err = %v, want a timeout that does not claim the target runs", err)
	}
	if f.state != proto.StateMonitoring || f.targetHere != "suspended" || len(r.Violations) > 0 {
		t.Errorf("supervisor %q, target %q, violations %v: want monitoring, suspended, none", f.state, f.targetHere, r.Violations)
	}
	for _, c := range f.log {
		if strings.HasPrefix(c, "xl pause") || strings.HasPrefix(c, "xl migrate -p domainm") || strings.HasPrefix(c, "b ") && c != "b xl list" {
			t.Errorf("%q ran after the deadline", c)
		}
	}
}

package virt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

// flags of every phase: live, and the destination left paused by Finish3.
const flags = golibvirt.MigrateLive | golibvirt.MigratePaused

// Migration is one VM's migration from Src to Dst. Source and Destination are its two
// ends as the coordinator drives them.
type Migration struct {
	Name     string
	Src, Dst *Host
	// Via, if set, is the tcp://HOST:PORT the source sends the stream to instead of the
	// address the destination listens on (a proxy in tests).
	Via string
	// DestXML, if set, rewrites the domain XML for the destination (Prepare3's
	// destination_xml), e.g. ViewPath for Domain M.
	DestXML func(xml string) (string, error)

	mu            sync.Mutex
	ignoreShared  bool
	speedMiB      uint64 // last max speed set, passed to Perform3 too
	downtimeMs    uint64 // last max downtime set, set again once the job runs
	performParams []golibvirt.TypedParam
	performCookie []byte
	phase         phase
	srcDom        golibvirt.Domain
	srcHandle     atomic.Pointer[golibvirt.Domain] // srcDom, read without mu (Stop)
	dstDom        golibvirt.Domain
	params        []golibvirt.TypedParam // Finish3's and Confirm3's
	cookie        []byte                 // Finish3's cookie, for Confirm3
	performed     chan struct{}          // closed once Perform3 and Finish3 are over
	performErr    error
	finishErr     error
	from          int // source events before Migrate
	streamTotal   int64
}

// StreamBytes is the RAM the source's stream covered (memory_total of the last job
// stats polled): Domain M's own RAM only, when its view of the target does not travel.
func (m *Migration) StreamBytes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.streamTotal
}

type phase int

const (
	idle       phase = iota
	prepared         // Begin3 and Prepare3 done: the destination waits
	performing       // Perform3 in flight
	performed        // Perform3 and Finish3 returned: source paused until Confirm3
	failed           // Perform3 failed; the destination was told (Finish3 cancelled)
	committed        // Confirm3: the source is gone
	cancelled        // Confirm3 cancelled: the source resumed, the destination destroyed
)

// Source is the source end.
func (m *Migration) Source() syncpoint.VM { return &end{m: m, h: m.Src} }

// Destination is the destination end: it exists from Prepare3 on.
func (m *Migration) Destination() syncpoint.VM { return &end{m: m, h: m.Dst, dst: true} }

func (m *Migration) where(h *Host) string { return h.Name + "/" + m.Name }

// prepare runs Begin3 and Prepare3 (the destination QEMU starts, paused, listening).
// listen is the tcp://ADDR:PORT the destination listens on ("" lets it choose).
func (m *Migration) prepare(ctx context.Context, listen string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.phase != idle {
		return fmt.Errorf("%s: migration already started", m.where(m.Src))
	}
	src, err := m.Src.domain(m.Name)
	if err != nil {
		return err
	}
	m.srcDom = src
	m.srcHandle.Store(&src)
	evs, _ := m.Src.eventLog(m.Name).snapshot()
	m.from = len(evs)
	// Params of every phase (Finish3 finds the domain by its destination_name); each
	// phase adds the URI it needs.
	params := []golibvirt.TypedParam{strParam(golibvirt.MigrateParamDestName, m.Name)}
	if listen != "" {
		if u, err := url.Parse(listen); err == nil && net.ParseIP(u.Hostname()) != nil {
			params = append(params, strParam(golibvirt.MigrateParamListenAddress, u.Hostname()))
		}
	}
	if m.speedMiB > 0 {
		params = append(params, golibvirt.TypedParam{Field: golibvirt.MigrateParamBandwidth, Value: *golibvirt.NewTypedParamValueUllong(m.speedMiB)})
	}
	cookie, xml, err := m.Src.lv.DomainMigrateBegin3Params(src, params, uint32(flags))
	if err != nil {
		return fmt.Errorf("%s: Begin3: %w", m.where(m.Src), err)
	}
	if m.ignoreShared {
		if err := noSharedRAM(xml); err != nil {
			m.Src.lv.DomainMigrateConfirm3Params(src, params, nil, uint32(flags), 1)
			return fmt.Errorf("%s: %w", m.where(m.Src), err)
		}
	}
	if m.DestXML != nil {
		if xml, err = m.DestXML(xml); err != nil {
			return fmt.Errorf("%s: destination XML: %w", m.where(m.Dst), err)
		}
	}
	pp := append(append([]golibvirt.TypedParam(nil), params...), strParam(golibvirt.MigrateParamDestXML, xml))
	if listen != "" {
		pp = append(pp, strParam(golibvirt.MigrateParamURI, listen))
	}
	cookie, uriOut, err := m.Dst.lv.DomainMigratePrepare3Params(pp, cookie, uint32(flags))
	if err != nil {
		// Begin3 leaves the source's migration job in place: end it.
		m.Src.lv.DomainMigrateConfirm3Params(src, params, nil, uint32(flags), 1)
		return fmt.Errorf("%s: Prepare3: %w", m.where(m.Dst), err)
	}
	target := listen
	if len(uriOut) > 0 && uriOut[0] != "" {
		target = uriOut[0]
	}
	m.params = append(append([]golibvirt.TypedParam(nil), params...), strParam(golibvirt.MigrateParamURI, target))
	m.performed = make(chan struct{})
	pp = append(append([]golibvirt.TypedParam(nil), params...), strParam(golibvirt.MigrateParamURI, target))
	if m.Via != "" {
		pp[len(pp)-1] = strParam(golibvirt.MigrateParamURI, m.Via)
	}
	m.phase = prepared
	m.performParams, m.performCookie = pp, cookie
	return nil
}

// launch starts Perform3 in the background.
func (m *Migration) launch() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.phase != prepared {
		return fmt.Errorf("%s: migration not prepared (phase %d)", m.where(m.Src), m.phase)
	}
	m.phase = performing
	go m.perform(m.performParams, m.performCookie)
	return nil
}

// unprepare ends a prepared migration that never started: Finish3 cancelled destroys
// the destination, Confirm3 cancelled ends the source's job. Caller holds mu.
func (m *Migration) unprepare() error {
	_, _, ferr := m.Dst.lv.DomainMigrateFinish3Params(m.params, nil, uint32(flags), 1)
	cerr := m.Src.lv.DomainMigrateConfirm3Params(m.srcDom, m.params, nil, uint32(flags), 1)
	m.phase = failed
	m.performErr = errors.New("cancelled before the stream started")
	close(m.performed)
	if cerr != nil {
		return fmt.Errorf("%s: Confirm3 (cancelled): %w", m.where(m.Src), cerr)
	}
	if ferr != nil {
		m.Src.log.Debug("Finish3 cancelled", "where", m.where(m.Dst), "err", ferr)
	}
	return nil
}

// jobStarted waits until Perform3's job runs at the source (it is sent in the
// background) and sets the max downtime again: the coordinator's P1 hold counts on it
// from the first byte.
func (m *Migration) jobStarted(ctx context.Context) error {
	m.mu.Lock()
	done, dom, downtime := m.performed, m.srcDom, m.downtimeMs
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		typ, _, err := m.Src.lv.DomainGetJobStats(dom, 0)
		if err == nil && typ != int32(golibvirt.DomainJobNone) {
			break
		}
		select {
		case <-done:
			return nil // over already; Progress tells how
		case <-ctx.Done():
			return fmt.Errorf("%s: the migration job did not start: %w", m.where(m.Src), ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
	if downtime > 0 {
		if err := m.Src.lv.DomainMigrateSetMaxDowntime(dom, downtime, 0); err != nil {
			return fmt.Errorf("%s: max downtime %d ms: %w", m.where(m.Src), downtime, err)
		}
	}
	return nil
}

// perform runs Perform3, then Finish3: paused at the destination on success, cancelled
// (the destination destroyed) on failure.
func (m *Migration) perform(params []golibvirt.TypedParam, cookie []byte) {
	t0 := time.Now()
	cookie, err := m.Src.lv.DomainMigratePerform3Params(m.srcDom, nil, params, cookie, flags)
	m.Src.log.Info("Perform3 returned", "where", m.where(m.Src), "took", time.Since(t0), "at", stamp(time.Now()), "err", err)
	m.mu.Lock()
	defer m.mu.Unlock()
	defer close(m.performed)
	if err != nil {
		m.performErr = fmt.Errorf("%s: Perform3: %w", m.where(m.Src), err)
		m.phase = failed
		if _, _, ferr := m.Dst.lv.DomainMigrateFinish3Params(m.params, cookie, uint32(flags), 1); ferr != nil {
			m.Src.log.Debug("Finish3 cancelled", "where", m.where(m.Dst), "err", ferr)
		}
		return
	}
	m.phase = performed
	t1 := time.Now()
	dom, cookie, err := m.Dst.lv.DomainMigrateFinish3Params(m.params, cookie, uint32(flags), 0)
	m.Src.log.Info("Finish3 returned", "where", m.where(m.Dst), "took", time.Since(t1), "at", stamp(time.Now()), "err", err)
	if err != nil {
		m.finishErr = fmt.Errorf("%s: Finish3: %w", m.where(m.Dst), err)
		return
	}
	m.dstDom, m.cookie = dom, cookie
}

// noSharedRAM refuses a Domain M whose XML holds a memory device (an nvdimm or
// virtio-pmem over the target's RAM file): libvirt 9.0 cannot make its destination skip
// it (x-ignore-shared), so its view would travel in Domain M's stream and be written
// into the target's RAM at the destination while the target's own stream fills it.
func noSharedRAM(xml string) error {
	for _, m := range []string{"<memory model='nvdimm'", `<memory model="nvdimm"`, "<memory model='virtio-pmem'", `<memory model="virtio-pmem"`} {
		if strings.Contains(xml, m) {
			return errors.New("domain M has a memory device (" + m[len("<memory model="):] + "): under libvirt its view of the target must be a read-only disk (image/libvirt/domm.xml)")
		}
	}
	return nil
}

// wait waits until Perform3 and Finish3 are over.
func (m *Migration) wait(ctx context.Context) error {
	m.mu.Lock()
	ch := m.performed
	m.mu.Unlock()
	if ch == nil {
		return errNotPrepared
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: waiting for Perform3/Finish3: %w", m.where(m.Src), ctx.Err())
	}
}

// cancel ends a performed migration the other way: Confirm3 cancelled resumes the
// source, and the paused destination copy is destroyed. Caller holds mu.
func (m *Migration) cancelPerformed() error {
	if err := m.Src.lv.DomainMigrateConfirm3Params(m.srcDom, m.params, m.cookie, uint32(flags), 1); err != nil {
		return fmt.Errorf("%s: Confirm3 (cancelled): %w", m.where(m.Src), err)
	}
	m.phase = cancelled
	if m.finishErr == nil {
		if err := m.Dst.lv.DomainDestroy(m.dstDom); err != nil {
			m.Src.log.Warn("destroying the destination copy", "where", m.where(m.Dst), "err", err)
		}
	}
	return nil
}

// commit confirms a performed migration: the source QEMU ends.
func (m *Migration) commit(ctx context.Context) error {
	if err := m.wait(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.phase != performed || m.finishErr != nil {
		return fmt.Errorf("%s: nothing to confirm (phase %d, %v %v)", m.where(m.Src), m.phase, m.performErr, m.finishErr)
	}
	t0 := time.Now()
	if err := m.Src.lv.DomainMigrateConfirm3Params(m.srcDom, m.params, m.cookie, uint32(flags), 0); err != nil {
		return fmt.Errorf("%s: Confirm3: %w", m.where(m.Src), err)
	}
	m.Src.log.Info("Confirm3 returned", "where", m.where(m.Src), "took", time.Since(t0), "at", stamp(time.Now()))
	m.phase = committed
	return nil
}

func strParam(name, v string) golibvirt.TypedParam {
	return golibvirt.TypedParam{Field: name, Value: *golibvirt.NewTypedParamValueString(v)}
}

// stamp formats a time for the driver's log: the figures of P4's parts come from it.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00") }

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

package host

import (
	"context"
	"time"

	"github.com/domainm/domainm/image/qemu/qmp"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

// VM implements the hypervisor operations the coordinator drives, over QMP.
var _ syncpoint.VM = (*VM)(nil)

// Where names the process: host/vm.
func (vm *VM) Where() string { return vm.Host + "/" + vm.Name }

func (vm *VM) SetCapabilities(ctx context.Context, caps map[string]bool) error {
	return vm.Mon.SetCapabilities(ctx, caps)
}

func (vm *VM) SetParameters(ctx context.Context, p syncpoint.Params) error {
	var q qmp.Parameters
	if p.MaxBandwidth != 0 {
		q.MaxBandwidth = &p.MaxBandwidth
	}
	if p.DowntimeLimit != 0 {
		ms := p.DowntimeLimit.Milliseconds()
		q.DowntimeLimit = &ms
	}
	return vm.Mon.SetParameters(ctx, q)
}

func (vm *VM) Migrate(ctx context.Context, uri string) error { return vm.Mon.Migrate(ctx, uri) }

func (vm *VM) Progress(ctx context.Context) (syncpoint.Progress, error) {
	mi, err := vm.Mon.QueryMigrate(ctx)
	if err != nil {
		return syncpoint.Progress{}, err
	}
	p := syncpoint.Progress{Status: mi.Status, Error: mi.ErrorDesc,
		TotalTime: time.Duration(mi.TotalTime) * time.Millisecond, Downtime: time.Duration(mi.Downtime) * time.Millisecond}
	if mi.RAM != nil {
		p.Total, p.Remaining = mi.RAM.Total, mi.RAM.Remaining
	}
	return p, nil
}

func (vm *VM) ContinueSwitchover(ctx context.Context) error {
	return vm.Mon.MigrateContinue(ctx, "pre-switchover")
}

func (vm *VM) CancelMigration(ctx context.Context) error { return vm.Mon.MigrateCancel(ctx) }
func (vm *VM) Cont(ctx context.Context) error            { return vm.Mon.Cont(ctx) }
func (vm *VM) Stop(ctx context.Context) error            { return vm.Mon.Stop(ctx) }

func (vm *VM) Running(ctx context.Context) (bool, error) {
	s, err := vm.Mon.QueryStatus(ctx)
	return s.Running, err
}

func convert(e qmp.Event) syncpoint.Event {
	return syncpoint.Event{Name: e.Name, Status: e.MigrationStatus(), Time: e.Time()}
}

func (vm *VM) WaitEvent(ctx context.Context, from int, match func(syncpoint.Event) bool) (syncpoint.Event, int, error) {
	e, next, err := vm.Mon.WaitEvent(ctx, from, func(e qmp.Event) bool { return match(convert(e)) })
	return convert(e), next, err
}

func (vm *VM) Events() []syncpoint.Event {
	evs := vm.Mon.Events()
	out := make([]syncpoint.Event, len(evs))
	for i, e := range evs {
		out[i] = convert(e)
	}
	return out
}

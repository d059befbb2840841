package linux

import (
	"testing"
)

// BenchmarkKernel measures, on the shared test guest (the Debian kernel under TCG,
// 256 MiB, 2 vCPUs, stopped, ~70 tasks, 3 modules), deriving the layout from cold, loading
// the BTF, walking the task and module lists, and each kernel-integrity check:
//
//	go test -run '^$' -bench Kernel -benchtime 5x ./memscan/linux
func BenchmarkKernel(b *testing.B) {
	if testing.Short() {
		b.Skip("boots a TCG guest (-short)")
	}
	guestOnce.Do(func() { guestVal, guestErr = doBoot() })
	if guestErr != nil {
		b.Fatal(guestErr)
	}
	src := guestVal.src
	k, err := Find(src)
	if err != nil {
		b.Fatal(err)
	}
	ty, err := k.LoadBTF()
	if err != nil {
		b.Fatal(err)
	}
	in, err := NewInspector(k, ty)
	if err != nil {
		b.Fatal(err)
	}
	procs, err := in.Processes()
	if err != nil {
		b.Fatal(err)
	}
	mods, err := in.Modules()
	if err != nil {
		b.Fatal(err)
	}
	run := func(name string, f func() error) {
		b.Run(name, func(b *testing.B) {
			for range b.N {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	run("layout", func() error { _, err := Find(src); return err })
	run("btf", func() error { _, err := k.LoadBTF(); return err })
	run("processes", func() error { _, err := in.Processes(); return err })
	run("modules", func() error { _, err := in.Modules(); return err })
	run("check-hidden-module", func() error { _, _, err := in.hiddenModules(mods); return err })
	run("check-syscall-table", func() error { _, err := in.syscallTable("sys_call_table", mods); return err })
	run("check-idt", func() error { _, err := in.IDT(); return err })
	run("check-hidden-task", func() error { _, _, err := in.hiddenTasks(procs); return err })
	run("integrity-all", func() error { in.Integrity(procs, mods); return nil })
}

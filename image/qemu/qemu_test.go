package qemu

import (
	"slices"
	"strings"
	"testing"
)

func TestArgs(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		want []string // consecutive arguments that must appear
		not  []string // arguments that must not appear
	}{
		{"anonymous RAM", Config{Accel: "tcg", MemMiB: 16},
			[]string{"-machine q35,memory-backend=ram -accel tcg -m 16M", "-object memory-backend-ram,id=ram,size=16M"},
			[]string{"-S", "-kernel", "-qmp", "-serial", "-name", "-no-reboot"}},
		{"shared RAM file, paused", Config{Machine: "pc", Accel: "kvm", MemMiB: 64, RAMFile: "/dev/shm/r", RAMShared: true, Paused: true, QMP: "/s", Serial: "/c"},
			[]string{"-machine pc,memory-backend=ram", "memory-backend-file,id=ram,size=64M,mem-path=/dev/shm/r,share=on", "-qmp unix:/s,server=on,wait=off", "-serial file:/c", "-S"},
			[]string{"-incoming"}},
		{"private RAM file, incoming, nvdimm", Config{Name: "domm", Accel: "tcg", MemMiB: 32, RAMFile: "/r", MachineOpts: ",nvdimm=on", MemoryOpts: ",slots=1,maxmem=96M", Incoming: "tcp:127.0.0.1:4444", Extra: []string{"-device", "nvdimm,memdev=watch,id=watch"}},
			[]string{"-name domm", "-machine q35,memory-backend=ram,nvdimm=on", "-m 32M,slots=1,maxmem=96M", "-object memory-backend-file,id=ram,size=32M,mem-path=/r,share=off", "-incoming tcp:127.0.0.1:4444 -S", "-device nvdimm,memdev=watch,id=watch"},
			nil},
		{"kernel", Config{Accel: "tcg", MemMiB: 128, Kernel: "/k", Initrd: "/i", Append: " console=ttyS0 quiet ", NoReboot: true},
			[]string{"-kernel /k -initrd /i -append", "-no-reboot"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tt.c.Args()
			line := " " + strings.Join(a, " ") + " "
			for _, w := range tt.want {
				if !strings.Contains(line, " "+w+" ") {
					t.Errorf("%q missing from %q", w, a)
				}
			}
			for _, n := range tt.not {
				if slices.Contains(a, n) {
					t.Errorf("%q in %q", n, a)
				}
			}
			if i := slices.Index(a, "-append"); i >= 0 && a[i+1] != "console=ttyS0 quiet" {
				t.Errorf("-append %q, want it trimmed", a[i+1])
			}
		})
	}
}

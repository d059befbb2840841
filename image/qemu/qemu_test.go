package qemu

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
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

// TestProcess starts a firmware-only VM, talks to it over QMP, and kills it: the
// process is gone afterwards and a second Kill is harmless.
func TestProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts QEMU")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	accel, err := FirmwareAccel(ctx, t.TempDir())
	if err != nil || (accel != "kvm" && accel != "tcg") {
		t.Fatalf("FirmwareAccel = %q, %v", accel, err)
	}
	t.Logf("accelerator for firmware-only guests: %s", accel)
	c := Config{Accel: accel, MemMiB: 16, QMP: filepath.Join(t.TempDir(), "qmp.sock"), Paused: true}
	p, mon, err := Launch(ctx, c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	defer mon.Close()
	if st, err := mon.QueryStatus(ctx); err != nil || st.Status != "prelaunch" {
		t.Fatalf("status %+v, %v; want prelaunch (-S)", st, err)
	}
	if accel == "kvm" {
		if err := CheckKVM(ctx, mon, p.Exited(), true); err != nil {
			t.Errorf("CheckKVM after FirmwareAccel chose kvm: %v", err)
		}
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Exited not closed after Kill")
	}
	if err := syscall.Kill(p.Pid, 0); err == nil {
		t.Fatalf("QEMU pid %d still alive after Kill", p.Pid)
	}
	if p.Err() == nil {
		t.Error("a killed QEMU reports a nil exit status")
	}
	if err := p.Kill(); err != nil {
		t.Errorf("second Kill: %v", err)
	}
}

// A QEMU that exits at startup (an unknown machine type) ends DialQMP with ErrExited,
// not a timeout.
func TestDialQMPExited(t *testing.T) {
	c := Config{Machine: "no-such-machine", Accel: "tcg", MemMiB: 16, QMP: filepath.Join(t.TempDir(), "qmp.sock")}
	p, err := Start(append([]string{Binary}, c.Args()...), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := p.DialQMP(ctx, c.QMP); !errors.Is(err, ErrExited) {
		t.Fatalf("DialQMP = %v, want ErrExited", err)
	}
}

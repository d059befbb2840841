package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The benchmark's guest: the host's Linux kernel with a busybox initramfs whose init
// keeps rewriting a 4 MiB file in tmpfs (fresh pages dirtied at ~16 MiB/s), while the
// rest of RAM keeps the non-zero data the host filled it with before boot.
const initScript = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
mount -t tmpfs -o size=50% tmpfs /tmp
head -c 4194304 /dev/urandom > /tmp/src
echo ` + readyMarker + `
while true; do cp /tmp/src /tmp/dst; rm /tmp/dst; usleep 250000; done
`

const readyMarker = "DOMAINM-GUEST-READY"

// guestAppend is the kernel command line.
const guestAppend = "console=ttyS0 panic=-1 mitigations=off nokaslr swiotlb=noforce no_timer_check"

// Kernel returns the newest /boot/vmlinuz-*.
func Kernel() (string, error) {
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(ks) == 0 {
		return "", fmt.Errorf("no /boot/vmlinuz-*: install linux-image-amd64")
	}
	return ks[len(ks)-1], nil
}

// BuildInitramfs writes the guest's initramfs (newc cpio, uncompressed) into dir.
func BuildInitramfs(dir string) (string, error) { return BuildInitramfsWith(dir, initScript) }

// BuildInitramfsWith writes an initramfs with busybox and the given init script.
func BuildInitramfsWith(dir, script string) (string, error) {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return "", fmt.Errorf("reading busybox (install busybox-static): %w", err)
	}
	var w cpioWriter
	w.dir("bin")
	w.file("bin/busybox", 0o755, bb)
	w.file("init", 0o755, []byte(script))
	w.trailer()
	path := filepath.Join(dir, "guest-initramfs.cpio")
	return path, os.WriteFile(path, w.buf.Bytes(), 0o644)
}

// cpioWriter writes the "newc" format the kernel unpacks.
type cpioWriter struct {
	buf bytes.Buffer
	ino int
}

func (w *cpioWriter) entry(name string, mode int, data []byte) {
	w.ino++
	fmt.Fprintf(&w.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	w.buf.WriteString(name)
	w.buf.WriteByte(0)
	w.pad()
	w.buf.Write(data)
	w.pad()
}

func (w *cpioWriter) pad() {
	for w.buf.Len()%4 != 0 {
		w.buf.WriteByte(0)
	}
}

func (w *cpioWriter) dir(name string)                         { w.entry(name, 0o040755, nil) }
func (w *cpioWriter) file(name string, perm int, data []byte) { w.entry(name, 0o100000|perm, data) }
func (w *cpioWriter) trailer()                                { w.entry("TRAILER!!!", 0, nil) }

// waitReady waits until the guest's serial log shows the marker.
func waitReady(ctx context.Context, serial string) error {
	for {
		b, _ := os.ReadFile(serial)
		if strings.Contains(string(b), readyMarker) {
			return nil
		}
		select {
		case <-ctx.Done():
			tail := string(b)
			if len(tail) > 400 {
				tail = tail[len(tail)-400:]
			}
			return fmt.Errorf("guest not ready (serial %s ends: %q): %w", serial, tail, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

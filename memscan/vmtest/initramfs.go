package vmtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"
)

// BusyboxPath is the static busybox (Debian busybox-static) copied into initramfs images.
const BusyboxPath = "/bin/busybox"

// BuildInitramfs writes a gzip-less newc cpio initramfs to dst holding a static
// busybox at /bin/busybox, the directories /dev /proc /sys /tmp /bin, an executable
// /init that runs script under busybox sh, and extra files (path in the image ->
// contents; executable when they start with "#!" or an ELF magic). The script runs with PATH=/bin after "busybox --install -s /bin", with
// /proc, /sys and devtmpfs mounted.
func BuildInitramfs(dst, script string, extra map[string][]byte) error {
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return fmt.Errorf("reading %s (install busybox-static): %w", BusyboxPath, err)
	}
	init := "#!/bin/busybox sh\n" +
		"/bin/busybox --install -s /bin\n" +
		"export PATH=/bin\n" +
		"mount -t proc proc /proc\n" +
		"mount -t sysfs sysfs /sys\n" +
		"mount -t devtmpfs devtmpfs /dev\n" +
		script + "\n"
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	w := newCpio(f)
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp"} {
		w.add(d, 0o040755, nil)
	}
	w.add("bin/busybox", 0o100755, bb)
	w.add("init", 0o100755, []byte(init))
	names := slices.Sorted(maps.Keys(extra))
	made := map[string]bool{"bin": true, "dev": true, "proc": true, "sys": true, "tmp": true}
	for _, n := range names {
		clean := strings.TrimPrefix(path.Clean("/"+n), "/")
		// Parents outermost first: the kernel's unpacker does not create missing parents.
		var parents []string
		for dir := path.Dir(clean); dir != "." && !made[dir]; dir = path.Dir(dir) {
			parents = append(parents, dir)
		}
		for i := len(parents) - 1; i >= 0; i-- {
			w.add(parents[i], 0o040755, nil)
			made[parents[i]] = true
		}
		mode := uint32(0o100644)
		if b := extra[n]; bytes.HasPrefix(b, []byte("#!")) || bytes.HasPrefix(b, []byte("\x7fELF")) {
			mode = 0o100755
		}
		w.add(clean, mode, extra[n])
	}
	if err := w.close(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	return f.Close()
}

// cpioWriter writes the "newc" (070701) format the kernel's initramfs unpacker reads.
type cpioWriter struct {
	w   *bufio.Writer
	n   int64
	ino uint32
	err error
}

func newCpio(w io.Writer) *cpioWriter { return &cpioWriter{w: bufio.NewWriter(w), ino: 1} }

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	k, err := c.w.Write(b)
	c.n += int64(k)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) add(name string, mode uint32, data []byte) {
	nlink := 1
	if mode&0o040000 != 0 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	c.ino++
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
	c.write(data)
	c.pad()
}

func (c *cpioWriter) close() error {
	c.add("TRAILER!!!", 0, nil)
	if c.err != nil {
		return c.err
	}
	return c.w.Flush()
}

// GoBuildStatic builds the Go main package pkg (an import path or ./dir relative to
// the current directory) as a static binary at dst for a guest initramfs.
func GoBuildStatic(dst, pkg string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go toolchain not in PATH: %w", err)
	}
	cmd := exec.Command(gobin, "build", "-o", dst, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %w: %s", cmd.Args, err, out)
	}
	return nil
}

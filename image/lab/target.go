package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// LabPort is the name of the target's virtio-serial port on which the lab tells the
// target what to do (the lab's stand-in for an attacker's shell).
const LabPort = "org.domainm.lab"

// targetScript mounts the target's disk (its image in the NFS-exported folder, attached
// by QEMU as virtio-blk) and obeys the lab's commands:
//
//	plant STRING   start a process that holds STRING in its memory
//	setuid PATH    copy busybox to PATH on the disk, make it setuid root, sync
var targetScript = strings.ReplaceAll(`mount -t tmpfs tmpfs /tmp
mkdir -p /disk
mount -t ext4 -o commit=1 /dev/vda /disk && echo GUEST-DISK-MOUNTED
port=
for i in 1 2 3 4 5 6 7 8 9 10; do
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat $p/name 2>/dev/null)" = LABPORT ] && port=/dev/$(basename $p)
  done
  [ -n "$port" ] && [ -e "$port" ] && break
  sleep 1
done
echo "GUEST-TARGET-READY $port"
while true; do
  while read cmd arg; do
    case "$cmd" in
    plant) sh -c "m='$arg'; while :; do sleep 3600; done" & echo "GUEST-PLANTED $! $arg" ;;
    setuid) cp /bin/busybox "/disk$arg" && chmod 4755 "/disk$arg" && sync && echo "GUEST-SETUID $arg" ;;
    esac
  done < $port
  sleep 1
done`, "LABPORT", LabPort)

// TargetGuest is the target's initramfs.
func TargetGuest() (*Guest, error) {
	g, err := NewGuest()
	if err != nil {
		return nil, err
	}
	g.Modules = []string{"virtio_pci", "virtio_blk", "virtio_console", "ext4"}
	g.Script = targetScript
	return g, nil
}

// MakeTargetDisk writes a small ext4 image (mkfs.ext4 -d) with a few system files at
// path: the target's disk, to be placed in the exported folder.
func MakeTargetDisk(path string, sizeMiB int) error {
	tree, err := os.MkdirTemp("", "target-tree-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tree)
	for p, text := range map[string]string{"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
		"etc/hostname": "target\n", "usr/bin/hello": "#!/bin/sh\necho hello\n", "home/alice/notes": "notes\n"} {
		if err := os.MkdirAll(filepath.Join(tree, filepath.Dir(p)), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(tree, p), []byte(text), 0o644); err != nil {
			return err
		}
	}
	os.Remove(path)
	cmd := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-d", tree, path, fmt.Sprintf("%dM", sizeMiB))
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %w: %s", cmd.Args, err, out)
	}
	return nil
}

// Tell sends one command line to the target's lab port (the host end, a unix socket of
// the QEMU that runs it) and keeps the connection until done reports it carried out:
// data sent just before the guest (re)opens its end, or just before the host end
// closes, can be lost, so the line is sent again every 30 s until then.
func Tell(ctx context.Context, sock, line string, done func() bool) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return fmt.Errorf("target's lab port %s: %w", sock, err)
	}
	defer c.Close()
	for {
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(line + "\n")); err != nil {
			return fmt.Errorf("target's lab port %s: %w", sock, err)
		}
		resend := time.After(30 * time.Second)
		for !done() {
			select {
			case <-ctx.Done():
				return fmt.Errorf("target did not carry out %q: %w", line, ctx.Err())
			case <-resend:
			case <-time.After(500 * time.Millisecond):
				continue
			}
			break
		}
		if done() {
			return nil
		}
	}
}

package virttest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/domainmtest"
	"github.com/domainm/domainm/image/lab"
	"github.com/domainm/domainm/image/libvirt"
)

// Domain M in the lab is the real supervisor: `domainm run` (domainmtest.Binary, with
// its libraries) in a busybox initramfs built by image/lab's Guest, reading the target's
// memory through the view disk with the disk: source and answering the coordinator on
// its virtio-serial control port, whose host end is libvirt.ControlSocket (a unix socket
// in each daemon's private /var/lib/libvirt).
//
// Two test-only devices are added to image/libvirt's XML: a second virtio-serial port
// (org.domainm.lab) on which the test tells the guest what to do (LabCommand), and a
// second view disk over the same RAM file with 4096-byte sectors (View4K; ViewPath
// rewrites both at the destination), scanned once on demand with domainm scan-memory.

// Guest paths of the view disks (the links udev would make from the disks' serials).
const (
	ViewDevice = "/dev/disk/by-id/virtio-domainm-view"
	View4K     = "/dev/disk/by-id/virtio-domainm-view-4k"
)

// Rules are the supervisor's YARA rules: one per string the tests plant.
const Rules = `rule planted_before_migration { strings: $a = "DOMAINM-PLANTED-LIBVIRT-BEFORE-3b1e" condition: $a }
rule planted_at_destination { strings: $a = "DOMAINM-PLANTED-AFTER-LIBVIRT-9d4c" condition: $a }
`

// Supervisor's configuration inside Domain M.
const (
	guestConfig = "/etc/domainm/domainm.toml"
	guestRules  = "/etc/domainm/rules"
	guestAlerts = "/tmp/alerts.jsonl"
	labPort     = "org.domainm.lab"
	// Interval between the starts of two memory passes; a pass of the 192 MiB target
	// under TCG takes a few seconds.
	memInterval = "2s"
)

var supervisorConfig = fmt.Sprintf(`[target]
name = "target"
host = "src"
memory = "disk:%s"
layout = "flat"
[memory]
interval = %q
workers = 1
[rules]
dir = %q
[state]
dir = "/tmp/state"
[control]
socket = "/tmp/ctl.sock"
device = "/dev/virtio-ports/org.domainm.control.0"
[[alerts.sink]]
name = "file"
type = "file"
path = %q
`, ViewDevice, memInterval, guestRules, guestAlerts)

// dommScript runs after image/lab's Guest has loaded the modules: the links udev would
// make (disks by serial, virtio ports by name), domainm run, a loop dirtying 1 MiB every
// 250 ms (with domainm's own heap and initramfs, Domain M cannot converge unseen while
// held; a heavier loop slowed the supervisor's passes), and the lab port's commands,
// each answered with its output and a line END:
//
//	stop, cont   SIGSTOP, SIGCONT domainm run (a silent supervisor)
//	alerts       the alert file
//	blocksize    each view disk's logical block size
//	scan DEVICE LAYOUT  domainm scan-memory --source disk:DEVICE --layout LAYOUT, once,
//	             without attribution
//	sh COMMAND   any shell command
var dommScript = strings.NewReplacer("READY", readyMarker, "CONFIG", guestConfig, "RULES", guestRules,
	"ALERTS", guestAlerts, "LABPORT", labPort).Replace(`mount -t tmpfs -o size=75% tmpfs /tmp
mkdir -p /dev/disk/by-id /dev/virtio-ports /tmp/state
i=0
while :; do
  for b in /sys/block/vd*; do
    s=$(cat $b/serial 2>/dev/null)
    [ -n "$s" ] && ln -sf /dev/${b##*/} /dev/disk/by-id/virtio-$s
  done
  for p in /sys/class/virtio-ports/*; do
    n=$(cat $p/name 2>/dev/null)
    [ -n "$n" ] && ln -sf /dev/${p##*/} /dev/virtio-ports/$n
  done
  [ -e /dev/virtio-ports/org.domainm.control.0 ] && [ -e /dev/virtio-ports/LABPORT ] && [ -e /dev/disk/by-id/virtio-domainm-view-4k ] && break
  i=$((i+1)); [ $i -ge 30 ] && break
  sleep 1
done
ls -l /dev/disk/by-id /dev/virtio-ports 2>&1 | sed 's/^/GUEST-DEV /'
head -c 1048576 /dev/urandom > /tmp/src
/bin/domainm run --config CONFIG --log-level info 2>&1 | sed 's/^/GUEST-LOG /' &
echo READY
(while true; do cp /tmp/src /tmp/dst; rm /tmp/dst; usleep 250000; done) &
exec 3<>/dev/virtio-ports/LABPORT
while true; do
  while read -r cmd arg <&3; do
    case "$cmd" in
    stop) kill -STOP $(pidof domainm) && echo stopped >&3 ;;
    cont) kill -CONT $(pidof domainm) && echo continued >&3 ;;
    alerts) cat ALERTS >&3 2>/dev/null ;;
    blocksize) for b in /sys/block/vd*; do echo "$(cat $b/serial) $(cat $b/queue/logical_block_size)" >&3; done ;;
    sh) sh -c "$arg" >&3 2>&1 ;;
    scan) set -- $arg; /bin/domainm scan-memory --source "disk:$1" --layout "$2" --rules RULES --workers 1 --attribute=false --virtual=false --quiet >&3 2>&1 ;;
    esac
    echo END >&3
  done
  usleep 200000
done`)

// buildDomM writes Domain M's initramfs into dir.
func buildDomM(t testing.TB, dir string) string {
	t.Helper()
	g, err := lab.NewGuest()
	if err != nil {
		t.Fatal(err)
	}
	g.Modules = []string{"virtio_pci", "virtio_blk", "virtio_console"}
	if err := g.AddBinary("/bin/domainm", domainmtest.Binary(t)); err != nil {
		t.Fatal(err)
	}
	g.Files[guestConfig] = []byte(supervisorConfig)
	g.Files[guestRules+"/planted.yar"] = []byte(Rules)
	g.Script = dommScript
	path := filepath.Join(dir, "domm-initramfs.cpio")
	if err := g.Build(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// labSocket is the host end of Domain M's lab port, as libvirt sees it.
func labSocket(domm string) string {
	return "/var/lib/libvirt/qemu/domainm-" + domm + ".lab"
}

// testDevices adds the lab port and the 4K view disk to Domain M's XML (d4k is the same
// Domain M rendered with ViewBlockSize 4096).
func testDevices(xml, xml4k, domm string) (string, error) {
	i, j := strings.Index(xml4k, "<disk "), strings.Index(xml4k, "</disk>")
	if i < 0 || j < i {
		return "", fmt.Errorf("no <disk> in Domain M's XML")
	}
	disk := strings.NewReplacer("<serial>domainm-view</serial>", "<serial>domainm-view-4k</serial>",
		"dev='vdb'", "dev='vdc'").Replace(xml4k[i : j+len("</disk>")])
	port := fmt.Sprintf("<channel type='unix'><source mode='bind' path='%s'/><target type='virtio' name='%s'/></channel>",
		labSocket(domm), labPort)
	if !strings.Contains(xml, "</devices>") {
		return "", fmt.Errorf("no </devices> in Domain M's XML")
	}
	return strings.Replace(xml, "</devices>", "    "+port+"\n    "+disk+"\n  </devices>", 1), nil
}

// ControlSocket is the host end of the supervisor's control port on d (outside path).
func (l *Lab) ControlSocket(d *Daemon) string { return d.Outside(libvirt.ControlSocket(l.DomM)) }

// LabCommand sends one command to Domain M's guest on d (see dommScript) and returns
// its output.
func (l *Lab) LabCommand(ctx context.Context, d *Daemon, cmd string) (string, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", d.Outside(labSocket(l.DomM)))
	if err != nil {
		return "", fmt.Errorf("domain M's lab port on %s: %w", d.Name, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(2 * time.Minute))
	}
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		return "", fmt.Errorf("domain M's lab port on %s: %w", d.Name, err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(c)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		if sc.Text() == "END" {
			return out.String(), nil
		}
		out.WriteString(sc.Text() + "\n")
	}
	return out.String(), fmt.Errorf("domain M on %s: %q: no END after %q: %v", d.Name, cmd, out.String(), sc.Err())
}

// DomMConsole is the end of Domain M's console (both ends append to the same file).
func (l *Lab) DomMConsole(n int) string {
	b, _ := os.ReadFile(l.serialM)
	return tail(b, n)
}

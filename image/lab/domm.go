package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Guest paths of the Domain M stand-in.
const (
	GuestConfig  = "/etc/domainm/domainm.toml"
	GuestRules   = "/etc/domainm/rules"
	GuestMount   = "/mnt/nfs" // the export, mounted read-only
	GuestSocket  = "/tmp/ctl.sock"
	GuestAlerts  = "/tmp/alerts.jsonl"
	GuestState   = "/tmp/state"
	hostFromVM   = "10.0.2.2" // the host's 127.0.0.1 through QEMU user networking
	domainmStart = "GUEST-DOMAINM-STARTED"
)

// NFSMountOptions: soft with short timeouts, so that reads fail (EIO) rather than hang
// when the export goes away; noac and lookupcache=none, so that every check sees the
// image as it is on the server (close-to-open, no cached attributes or names).
const NFSMountOptions = "ro,soft,timeo=20,retrans=2,noac,lookupcache=none"

// DomM is the Domain M stand-in guest: domainm and its libraries in a busybox
// initramfs, the NFS export mounted read-only at GuestMount, domainm run with Config,
// and a loop that prints `domainm status` and each new alert on the console
// (ParseConsole reads them back).
type DomM struct {
	Domainm string            // host path of the domainm binary
	Config  string            // domainm.toml, guest paths
	Rules   map[string]string // rule files for GuestRules
	NFSPort int               // ganesha's port on the host
	Pseudo  string            // the export's NFSv4 pseudo path
	// Modules beyond networking and NFS (e.g. nd_pmem for an nvdimm, virtio_console).
	Modules []string
	Setup   string // shell run before domainm starts (after the mount)
}

// Guest builds the guest description.
func (d DomM) Guest() (*Guest, error) {
	g, err := NewGuest()
	if err != nil {
		return nil, err
	}
	g.Modules = append([]string{"virtio_pci", "virtio_net", "nfsv4"}, d.Modules...)
	if err := g.AddBinary("/bin/domainm", d.Domainm); err != nil {
		return nil, err
	}
	g.Files[GuestConfig] = []byte(d.Config)
	for n, text := range d.Rules {
		g.Files[GuestRules+"/"+n] = []byte(text)
	}
	g.Script = netUp + d.mountScript() + d.Setup + "\n" + runScript
	return g, nil
}

// netUp configures QEMU user networking's fixed addresses (no DHCP client needed).
const netUp = `mount -t tmpfs tmpfs /tmp
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
`

func (d DomM) mountScript() string {
	return fmt.Sprintf(`mkdir -p %[1]s
i=0
until mount -t nfs4 -o %[2]s,port=%[3]d,addr=%[4]s %[4]s:%[5]s %[1]s; do
  i=$((i+1)); [ $i -ge 60 ] && break; sleep 1
done
grep " %[1]s " /proc/mounts | sed 's/^/GUEST-MOUNT /'
`, GuestMount, NFSMountOptions, d.NFSPort, hostFromVM, d.Pseudo)
}

// runScript starts domainm and reports on the console every 2 s.
var runScript = strings.NewReplacer("CONFIG", GuestConfig, "SOCKET", GuestSocket, "ALERTS", GuestAlerts, "STARTED", domainmStart).Replace(
	`/bin/domainm run --config CONFIG --log-level warn 2>&1 | sed 's/^/GUEST-LOG /' &
echo STARTED
n=0
while true; do
  sleep 2
  echo "GUEST-STATUS $(/bin/domainm status --json --socket SOCKET 2>&1 | tr -d '\n')"
  t=$(cat ALERTS 2>/dev/null | wc -l)
  if [ "$t" -gt "$n" ]; then
    tail -n +$((n+1)) ALERTS | head -n $((t-n)) | sed 's/^/GUEST-ALERT /'
    n=$t
  fi
done`)

// BuildDomainm builds bin/domainm's command (cgo, libyara) into dir and returns its path.
func BuildDomainm(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dst := filepath.Join(dir, "domainm")
	cmd := exec.Command("go", "build", "-o", dst, "./appliance/cmd/domainm")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v: %w: %s", cmd.Args, err, out)
	}
	return dst, nil
}

// moduleRoot is the folder of this repository's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the domainm module")
	}
	return filepath.Dir(mod), nil
}

package bench

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// link is two network namespaces joined by a veth pair, each side's egress shaped with a
// token bucket, so that both migration streams share one link (in either direction).
type link struct {
	src, dst     string // namespace names
	srcIP, dstIP string
}

func ipCmd(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newLink creates the namespaces and the veth pair; rate is a tc rate ("1gbit").
func newLink(rate string) (*link, error) {
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	l := &link{src: "dmsrc" + id, dst: "dmdst" + id, srcIP: "10.77.0.1", dstIP: "10.77.0.2"}
	vs, vd := "dms"+id, "dmd"+id
	steps := [][]string{
		{"ip", "netns", "add", l.src},
		{"ip", "netns", "add", l.dst},
		{"ip", "link", "add", vs, "netns", l.src, "type", "veth", "peer", "name", vd, "netns", l.dst},
		{"ip", "-n", l.src, "addr", "add", l.srcIP + "/24", "dev", vs},
		{"ip", "-n", l.dst, "addr", "add", l.dstIP + "/24", "dev", vd},
		{"ip", "-n", l.src, "link", "set", vs, "up"},
		{"ip", "-n", l.dst, "link", "set", vd, "up"},
		{"ip", "-n", l.src, "link", "set", "lo", "up"},
		{"ip", "-n", l.dst, "link", "set", "lo", "up"},
	}
	if rate != "" {
		// burst: enough for one timer tick at 1 Gbit/s; latency bounds the queue.
		for _, e := range [][2]string{{l.src, vs}, {l.dst, vd}} {
			steps = append(steps, []string{"ip", "netns", "exec", e[0], "tc", "qdisc", "add", "dev", e[1], "root", "tbf", "rate", rate, "burst", "256kb", "latency", "20ms"})
		}
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			l.close()
			return nil, err
		}
	}
	return l, nil
}

func (l *link) close() {
	exec.Command("ip", "netns", "del", l.src).Run()
	exec.Command("ip", "netns", "del", l.dst).Run()
}

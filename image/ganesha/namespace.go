package ganesha

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/domainm/domainm/image/qemu"
)

// Namespace is a network namespace made for the lab (unshare --net --mount): it holds
// only its own loopback, a private /run and an rpcbind of its own. NFSv3 needs it:
// QEMU's nfs:// block driver (libnfs, Debian's qemu-block-extra) mounts an export
// through the portmapper on port 111 (MOUNT, then NFS), which the lab must not open on
// the host's loopback, where the machine's own rpcbind would sit. A Server whose Config
// names the Namespace runs in it, and so must its clients (Command).
type Namespace struct {
	proc *qemu.Process // unshare, exec'd into rpcbind: its pid names the namespaces
	dir  string
}

// StartNamespace makes the namespaces and starts rpcbind in them; the log of its
// holder goes to dir/netns.log.
func StartNamespace(ctx context.Context, dir string) (*Namespace, error) {
	for _, tool := range []string{"unshare", "nsenter", "rpcbind", "rpcinfo", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found (util-linux, rpcbind, iproute2): %w", tool, err)
		}
	}
	out, err := os.OpenFile(filepath.Join(dir, "netns.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	// A tmpfs on /run hides the host's rpcbind socket and lock files from this rpcbind
	// (and gives ganesha, whose libtirpc registers through /run/rpcbind.sock, this one).
	script := `set -e
mount -t tmpfs -o mode=0755,size=4m tmpfs /run
mkdir -p /run/rpcbind
chown _rpc /run/rpcbind 2>/dev/null || true
ip link set lo up
exec rpcbind -f -w`
	p, err := qemu.Start([]string{"unshare", "--net", "--mount", "--propagation", "private", "--", "sh", "-c", script}, out, out)
	if err != nil {
		return nil, err
	}
	n := &Namespace{proc: p, dir: dir}
	for {
		if _, err := n.Run(ctx, "rpcinfo", "-p", "127.0.0.1"); err == nil {
			return n, nil
		}
		select {
		case <-ctx.Done():
			n.Close()
			return nil, fmt.Errorf("rpcbind in the lab's namespace not ready: %w; %s", ctx.Err(), n.logTail())
		case <-p.Exited():
			n.Close()
			return nil, fmt.Errorf("the lab's namespace (unshare, rpcbind) exited: %v; %s", p.Err(), n.logTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (n *Namespace) logTail() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "netns.log"))
	return strings.TrimSpace(string(b))
}

// Pid is the process (rpcbind) whose namespaces these are.
func (n *Namespace) Pid() int { return n.proc.Pid }

// Command returns argv run inside the namespaces (nsenter execs it: the pid of a
// process started from it is argv[0]'s).
func (n *Namespace) Command(argv ...string) []string {
	return append([]string{"nsenter", "-t", strconv.Itoa(n.proc.Pid), "-n", "-m", "--"}, argv...)
}

// Run runs argv inside the namespaces and returns its combined output.
func (n *Namespace) Run(ctx context.Context, argv ...string) (string, error) {
	c := n.Command(argv...)
	out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Close kills rpcbind (by its process group); the namespaces end with their last
// process, so servers started in them must be stopped first.
func (n *Namespace) Close() error { return n.proc.Kill() }

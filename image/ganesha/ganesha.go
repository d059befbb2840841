// Package ganesha runs Debian's nfs-ganesha as a plain user-space NFS server for the
// lab and the tests: the shared storage that holds a target's disk image and that both
// "hosts" and Domain M reach (DESIGN.md, "Test lab on one machine").
//
// A Server is one ganesha.nfsd process started in the foreground, in its own process
// group, with its own config, pid file, log and recovery folder in a private folder.
// By default it serves NFSv4 only over TCP on 127.0.0.1 and a port of its own, so it
// needs neither rpcbind nor a kernel NFS server. With Version3 it serves NFSv3 too, in a
// Namespace of its own with its own rpcbind (namespace.go): what the hosts' QEMUs need
// to open a disk as nfs://. Graceless skips the 90 s grace period after a
// restart, so a client's reads resume as soon as the server is back. Stop kills the
// process group by pid; Start again serves the same export on the same port.
//
// The host kernel here has no NFS client: clients are Linux guests that reach the
// server through QEMU user networking (10.0.2.2:Port inside the guest).
package ganesha

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/domainm/domainm/image/qemu"
)

// Binary is Debian's server (packages nfs-ganesha and nfs-ganesha-vfs).
const Binary = "ganesha.nfsd"

// Config is what a Server exports and where it keeps its files.
type Config struct {
	Export string // folder to export (read-only)
	Pseudo string // its NFSv4 pseudo path; default "/export"
	Dir    string // config, pid file, log and recovery folder; default a new temporary folder (removed by Close)
	Port   int    // TCP port on 127.0.0.1; 0 picks a free one

	// Namespace, if set, is where the server runs (its own loopback, its own rpcbind):
	// Addr is then reachable only from processes run in it (Namespace.Command).
	Namespace *Namespace
	// Version3 serves NFSv3 too (with its MOUNT protocol, registered with the
	// Namespace's rpcbind, which it needs): what QEMU's nfs:// block driver speaks.
	Version3 bool
	// Writable exports read-write (for the hosts' QEMUs, whose target writes its disk);
	// default read-only.
	Writable bool
}

// Server is a ganesha.nfsd serving one export.
type Server struct {
	Config
	Addr string // 127.0.0.1:Port

	proc   *qemu.Process // a generic process-group runner, despite its package's name
	ownDir bool
}

// readyLine is what ganesha logs once it serves.
const readyLine = "NFS SERVER INITIALIZED"

// New prepares a server (config written, port chosen) without starting it.
func New(c Config) (*Server, error) {
	if _, err := exec.LookPath(Binary); err != nil {
		return nil, fmt.Errorf("%s not found (install nfs-ganesha and nfs-ganesha-vfs): %w", Binary, err)
	}
	if c.Pseudo == "" {
		c.Pseudo = "/export"
	}
	if c.Version3 && c.Namespace == nil {
		return nil, fmt.Errorf("NFSv3 needs rpcbind: serve it in a Namespace, not on the host's loopback")
	}
	var err error
	if c.Export, err = filepath.Abs(c.Export); err != nil {
		return nil, err
	}
	own := c.Dir == ""
	if own {
		if c.Dir, err = os.MkdirTemp("", "ganesha-"); err != nil {
			return nil, err
		}
	}
	if c.Port == 0 {
		if c.Port, err = freePort(); err != nil {
			return nil, err
		}
	}
	s := &Server{Config: c, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)), ownDir: own}
	if err := os.MkdirAll(s.path("recovery"), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.path("ganesha.conf"), []byte(s.configText()), 0o600); err != nil {
		return nil, fmt.Errorf("writing ganesha config: %w", err)
	}
	return s, nil
}

// Start starts a server with New and Start.
func Start(ctx context.Context, c Config) (*Server, error) {
	s, err := New(c)
	if err != nil {
		return nil, err
	}
	return s, s.Start(ctx)
}

func (s *Server) path(name string) string { return filepath.Join(s.Dir, name) }

// LogFile is ganesha's log; PIDFile its pid file.
func (s *Server) LogFile() string { return s.path("ganesha.log") }
func (s *Server) PIDFile() string { return s.path("ganesha.pid") }

// Pid is the running server's process id, 0 when stopped.
func (s *Server) Pid() int {
	if s.proc == nil {
		return 0
	}
	return s.proc.Pid
}

// configText is ganesha's config: NFSv4 (and NFSv3 with Version3), TCP only, no
// NLM/RQUOTA (the NFSv3 side services), no grace period, recovery state in Dir. On the
// host it binds 127.0.0.1; in a Namespace it binds every address there, which is only
// that namespace's loopback (ganesha resolves Bind_Addr with AI_ADDRCONFIG, which finds
// no IPv4 address where there is nothing but lo).
func (s *Server) configText() string {
	protocols, access, bind := "4", "RO", "\n\tBind_Addr = 127.0.0.1;"
	if s.Version3 {
		protocols = "3, 4"
	}
	if s.Writable {
		access = "RW"
	}
	if s.Namespace != nil {
		bind = ""
	}
	return fmt.Sprintf(`NFS_CORE_PARAM {
	Protocols = %s;
	NFS_Port = %d;%s
	Enable_NLM = false;
	Enable_RQUOTA = false;
	Enable_UDP = false;
}
NFSV4 {
	Graceless = true;
	Lease_Lifetime = 10;
	RecoveryBackend = fs;
	RecoveryRoot = %q;
	Only_Numeric_Owners = true;
}
NFS_KRB5 { Active_krb5 = false; }
EXPORT {
	Export_Id = 1;
	Path = %q;
	Pseudo = %q;
	Access_Type = %s;
	Squash = No_Root_Squash;
	Protocols = %s;
	Transports = TCP;
	SecType = sys;
	FSAL { Name = VFS; }
}
`, protocols, s.Port, bind, s.path("recovery"), s.Export, s.Pseudo, access, protocols)
}

// Start runs ganesha.nfsd in the foreground and waits until it logs that it serves and
// accepts TCP connections.
func (s *Server) Start(ctx context.Context) error {
	if s.proc != nil {
		return fmt.Errorf("ganesha on %s already started (pid %d)", s.Addr, s.proc.Pid)
	}
	out, err := os.OpenFile(s.path("stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	start, _ := os.Stat(s.LogFile()) // the log is appended to across restarts
	argv := []string{Binary, "-F", "-f", s.path("ganesha.conf"), "-L", s.LogFile(), "-p", s.PIDFile(), "-N", "NIV_EVENT"}
	if s.Namespace != nil {
		argv = s.Namespace.Command(argv...)
	}
	p, err := qemu.Start(argv, out, out)
	if err != nil {
		return err
	}
	s.proc = p
	if err := s.waitReady(ctx, logSize(start)); err != nil {
		s.Stop()
		return err
	}
	return nil
}

func logSize(fi os.FileInfo) int64 {
	if fi == nil {
		return 0
	}
	return fi.Size()
}

// waitReady polls the log (from offset from) and the port.
func (s *Server) waitReady(ctx context.Context, from int64) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.logged(from) {
			if s.Namespace != nil {
				// A NULL call of every version served, found through the namespace's
				// rpcbind, from inside the namespace.
				ok := true
				for _, v := range s.versions() {
					if _, err := s.Namespace.Run(ctx, "rpcinfo", "-T", "tcp", "127.0.0.1", "nfs", v); err != nil {
						ok = false
					}
				}
				if ok {
					return nil
				}
			} else if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
				c.Close()
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ganesha on %s not ready: %w; log: %s", s.Addr, ctx.Err(), s.LogTail(10))
		case <-s.proc.Exited():
			return fmt.Errorf("ganesha on %s exited: %v; log: %s", s.Addr, s.proc.Err(), s.LogTail(10))
		case <-tick.C:
		}
	}
}

func (s *Server) versions() []string {
	if s.Version3 {
		return []string{"3", "4"}
	}
	return []string{"4"}
}

// URL is the nfs:// URL of file name in the export as QEMU's nfs block driver (libnfs,
// NFSv3: the export's real path, not its NFSv4 pseudo path) opens it from inside the
// Namespace.
func (s *Server) URL(name string) string {
	return "nfs://127.0.0.1" + filepath.Join(s.Export, name)
}

func (s *Server) logged(from int64) bool {
	b, err := os.ReadFile(s.LogFile())
	if err != nil || int64(len(b)) < from {
		return false
	}
	return strings.Contains(string(b[from:]), readyLine)
}

// LogTail returns the last n lines of the log.
func (s *Server) LogTail(n int) string {
	b, _ := os.ReadFile(s.LogFile())
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Stop kills the server's process group (by pid) and waits for it: to clients the
// export is gone. Stopping a stopped server does nothing.
func (s *Server) Stop() error {
	if s.proc == nil {
		return nil
	}
	err := s.proc.Kill()
	s.proc = nil
	os.Remove(s.PIDFile())
	return err
}

// Close stops the server and removes Dir if New made it.
func (s *Server) Close() error {
	err := s.Stop()
	if s.ownDir {
		err = errors.Join(err, os.RemoveAll(s.Dir))
	}
	return err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("picking a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Handler carries out the commands. Its methods may block (prepare finishes the block
// in flight); ctx is cancelled when the server closes.
type Handler interface {
	Status(ctx context.Context) Response
	Prepare(ctx context.Context) (Response, error)
	Resume(ctx context.Context, args ResumeArgs) (Response, error)
}

// MaxLine bounds a request line.
const MaxLine = 64 << 10

// Server accepts control connections on a unix socket.
type Server struct {
	ln      *net.UnixListener
	path    string
	h       Handler
	log     *slog.Logger
	allowed func(uid uint32) bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

// Listen creates the socket at path (mode 0600; a stale socket there is replaced) and
// serves h until Close.
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket folder: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another supervisor is listening on it", path)
		}
		os.Remove(path) // stale, from a process that died
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// The peer-credential check below is what enforces ownership; the mode keeps other
	// users from even connecting.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	me := uint32(os.Getuid())
	s := &Server{ln: ln, path: path, h: h, log: log, conns: map[net.Conn]struct{}{},
		allowed: func(uid uint32) bool { return uid == 0 || uid == me }}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops accepting, closes open connections, waits for their handlers and
// removes the socket.
func (s *Server) Close() error {
	s.cancel()
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Error("control socket accept failed", "err", err)
				// Back off instead of spinning on a persistent error (e.g. EMFILE).
				select {
				case <-time.After(100 * time.Millisecond):
					continue
				case <-s.ctx.Done():
				}
			}
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

func (s *Server) serve(c *net.UnixConn) {
	enc := json.NewEncoder(c)
	uid, pid, err := peerCred(c)
	if err != nil || !s.allowed(uid) {
		s.log.Warn("control connection refused", "uid", uid, "pid", pid, "err", err)
		enc.Encode(Response{ID: json.RawMessage("null"), Code: CodeForbidden,
			Error: fmt.Sprintf("peer uid %d may not use the control channel", uid)})
		return
	}
	s.log.Debug("control connection", "uid", uid, "pid", pid)
	s.serveLines(c, enc, peerClosed(c))
}

// serveLines answers request lines from r until it ends or fails; the error is the
// reader's (nil at EOF). gone reports whether the peer has closed the connection (nil:
// the transport cannot tell).
func (s *Server) serveLines(r io.Reader, enc *json.Encoder, gone func() bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), MaxLine)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		resp := s.handle(sc.Bytes(), time.Now(), gone)
		if err := enc.Encode(resp); err != nil {
			return err
		}
	}
	err := sc.Err()
	if errors.Is(err, bufio.ErrTooLong) {
		enc.Encode(Response{ID: json.RawMessage("null"), Code: CodeBadRequest,
			Error: fmt.Sprintf("request line longer than %d bytes", MaxLine)})
	}
	return err
}

// handle answers one request line, received at the monotonic time received.
func (s *Server) handle(line []byte, received time.Time, gone func() bool) Response {
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		return fail(nil, Errorf(CodeBadRequest, "request is not a JSON object: %v", err))
	}
	if len(req.ID) == 0 {
		req.ID = json.RawMessage("null")
	}
	if req.TimeoutMs < 0 {
		return fail(req.ID, Errorf(CodeBadRequest, "timeout_ms %d is negative", req.TimeoutMs))
	}
	ctx, cancel := withRequest(s.ctx, &request{cmd: req.Cmd, epoch: req.Epoch, received: received,
		timeout: time.Duration(req.TimeoutMs) * time.Millisecond, gone: gone})
	defer cancel()
	start := time.Now()
	var (
		resp Response
		err  error
	)
	switch req.Cmd {
	case CmdStatus:
		resp = s.h.Status(s.ctx)
	case CmdPrepare:
		resp, err = s.h.Prepare(ctx)
	case CmdResume:
		var a ResumeArgs
		if len(req.Args) == 0 {
			err = Errorf(CodeBadRequest, "resume needs args with a source")
		} else if e := json.Unmarshal(req.Args, &a); e != nil {
			err = Errorf(CodeBadRequest, "resume args: %v", e)
		} else if a.Source == "" {
			err = Errorf(CodeBadRequest, "resume args: source is missing")
		} else {
			resp, err = s.h.Resume(ctx, a)
		}
	case "":
		err = Errorf(CodeBadRequest, "cmd is missing")
	default:
		if op, ok := s.h.(Operator); ok {
			resp, err = op.Operate(ctx, req.Cmd, req.Args)
		} else {
			err = Errorf(CodeUnknownCommand, "unknown cmd %q (want status, prepare or resume)", req.Cmd)
		}
	}
	if c := codeOf(err); err != nil && (c == CodeExpired || c == CodeStale) {
		s.log.Warn("control request refused as stale", "cmd", req.Cmd, "code", c, "epoch", req.Epoch,
			"timeout_ms", req.TimeoutMs, "err", err)
	} else {
		s.log.Info("control request", "cmd", req.Cmd, "ok", err == nil, "err", err, "took", time.Since(start))
	}
	if err != nil {
		r := fail(req.ID, err)
		r.State = resp.State
		return r
	}
	resp.ID, resp.OK = req.ID, true
	resp.IntegerAddrs = req.AddrForm != AddrFormHex      // an older client decodes integers only
	resp.LegacyHost = req.HostForm != HostFormHypervisor // and reads the target's host as "host"
	return resp
}

func fail(id json.RawMessage, err error) Response {
	if id == nil {
		id = json.RawMessage("null")
	}
	return Response{ID: id, OK: false, Error: err.Error(), Code: codeOf(err)}
}

// Package controltest is a stand-in Domain M supervisor speaking the control protocol,
// for tests and benchmarks that run before (or without) the real `domainm run`.
//
// It "monitors" a target by reading its RAM file: prepare fingerprints sampled pages and
// unmaps, resume opens the new source, checks the fingerprints (unless it is the file of
// prepare, as the real supervisor does at a rollback) and maps it. Like the real
// supervisor it reports its epoch in status and refuses a prepare or resume whose epoch
// is below one it accepted ("stale") or whose timeout_ms has run out ("expired").
// Commands can be made to hang, to inject a supervisor that does not answer.
package controltest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
)

// Change is a state change of the supervisor, timestamped when it happened.
type Change struct {
	Time  time.Time
	State string
}

// Supervisor is the stand-in.
type Supervisor struct {
	ln net.Listener

	mu      sync.Mutex
	state   string
	source  string // RAM file being watched ("" while quiesced)
	prints  [][32]byte
	printed os.FileInfo // the RAM file fingerprinted at prepare
	changes []Change
	hang    map[string]bool
	epoch   uint64 // highest accepted on prepare/resume
	conns   []net.Conn
	wg      sync.WaitGroup
}

// Listen serves the protocol at path, watching the RAM file source.
func Listen(path, source string) (*Supervisor, error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	s := &Supervisor{ln: ln, hang: map[string]bool{}}
	s.setState(proto.StateMonitoring, source)
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Hang makes the supervisor never answer cmd.
func (s *Supervisor) Hang(cmd string) {
	s.mu.Lock()
	s.hang[cmd] = true
	s.mu.Unlock()
}

// Unhang makes the supervisor answer cmd again (requests it ignored stay unanswered).
func (s *Supervisor) Unhang(cmd string) {
	s.mu.Lock()
	delete(s.hang, cmd)
	s.mu.Unlock()
}

// Changes returns the state changes so far.
func (s *Supervisor) Changes() []Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Change(nil), s.changes...)
}

// State returns the current state and watched RAM file.
func (s *Supervisor) State() (string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.source
}

// Find reports whether needle is in the memory the supervisor watches now.
func (s *Supervisor) Find(needle []byte) (bool, error) {
	st, src := s.State()
	if st != proto.StateMonitoring {
		return false, fmt.Errorf("supervisor is %s", st)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return false, err
	}
	return bytes.Contains(b, needle), nil
}

// Close stops serving.
func (s *Supervisor) Close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Supervisor) setState(state, source string) {
	s.mu.Lock()
	s.state, s.source = state, source
	s.changes = append(s.changes, Change{time.Now(), state})
	s.mu.Unlock()
}

func (s *Supervisor) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

func (s *Supervisor) serve(c net.Conn) {
	defer s.wg.Done()
	defer c.Close()
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		received := time.Now()
		var (
			req  proto.Request
			args proto.ResumeArgs
		)
		err := json.Unmarshal(sc.Bytes(), &req)
		if err == nil && len(req.Args) > 0 {
			err = json.Unmarshal(req.Args, &args)
		}
		resp := map[string]any{}
		if err != nil {
			resp["ok"], resp["error"], resp["code"] = false, err.Error(), proto.CodeBadRequest
		} else {
			s.mu.Lock()
			hang := s.hang[req.Cmd]
			s.mu.Unlock()
			if hang {
				continue
			}
			if proto.Fenced(req.Cmd) {
				resp = s.admit(req.Cmd, req.Epoch, received, time.Duration(req.TimeoutMs)*time.Millisecond)
			}
			if resp["ok"] == nil {
				resp = s.handle(req.Cmd, args.Source)
			}
			resp["id"] = req.ID
		}
		b, _ := json.Marshal(resp)
		c.Write(append(b, '\n'))
	}
}

// admit refuses a stale or expired prepare or resume (nil: go ahead).
func (s *Supervisor) admit(cmd string, epoch uint64, received time.Time, timeout time.Duration) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if timeout > 0 && time.Since(received) > timeout {
		return map[string]any{"ok": false, "code": proto.CodeExpired, "error": cmd + " expired", "state": s.state}
	}
	if epoch < s.epoch {
		return map[string]any{"ok": false, "code": proto.CodeStale, "state": s.state,
			"error": fmt.Sprintf("%s with epoch %d: epoch %d was accepted since", cmd, epoch, s.epoch)}
	}
	s.epoch = epoch
	return map[string]any{}
}

func (s *Supervisor) handle(cmd, source string) map[string]any {
	st, cur := s.State()
	fail := func(code, msg string) map[string]any { // with the state, as the real supervisor's refusals
		return map[string]any{"ok": false, "error": msg, "code": code, "state": st}
	}
	switch cmd {
	case proto.CmdStatus:
	case proto.CmdPrepare:
		if st != proto.StateMonitoring {
			return fail(proto.CodeWrongState, "prepare while "+st)
		}
		p, err := fingerprints(cur)
		if err != nil {
			return fail(proto.CodeInternal, err.Error())
		}
		fi, err := os.Stat(cur)
		if err != nil {
			return fail(proto.CodeInternal, err.Error())
		}
		s.mu.Lock()
		s.prints, s.printed = p, fi
		s.mu.Unlock()
		s.setState(proto.StateQuiesced, "")
	case proto.CmdResume:
		if st != proto.StateQuiesced {
			return fail(proto.CodeWrongState, "resume while "+st)
		}
		path, ok := strings.CutPrefix(source, "file:")
		if !ok {
			return fail(proto.CodeBadRequest, "source must be file:PATH")
		}
		p, err := fingerprints(path)
		if err != nil {
			return fail(proto.CodeSource, err.Error())
		}
		fi, err := os.Stat(path)
		if err != nil {
			return fail(proto.CodeSource, err.Error())
		}
		s.mu.Lock()
		// As the real supervisor: a resume on the RAM file of prepare (a rollback) is
		// the same guest whatever it wrote meanwhile (a target QEMU restarted after a
		// failed final copy runs a few ms); another file must show the sampled pages.
		same := s.printed != nil && os.SameFile(fi, s.printed)
		if !same {
			same = len(p) == len(s.prints)
			for i := range p {
				same = same && p[i] == s.prints[i]
			}
		}
		s.mu.Unlock()
		if !same {
			return fail(proto.CodeGuestChanged, "sampled pages differ from those seen at prepare")
		}
		s.setState(proto.StateMonitoring, path)
	default:
		return fail(proto.CodeUnknownCommand, cmd)
	}
	st, _ = s.State()
	s.mu.Lock()
	defer s.mu.Unlock()
	return map[string]any{"ok": true, "state": st, "epoch": s.epoch}
}

// fingerprints hashes 64 pages spread over the file.
func fingerprints(path string) ([][32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	pages := fi.Size() / 4096
	var out [][32]byte
	buf := make([]byte, 4096)
	for i := int64(0); i < 64 && pages > 0; i++ {
		if _, err := f.ReadAt(buf, (i*pages/64)*4096); err != nil {
			return nil, err
		}
		out = append(out, sha256.Sum256(buf))
	}
	return out, nil
}

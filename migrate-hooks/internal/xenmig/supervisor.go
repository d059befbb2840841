package xenmig

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
)

// supervisor is Domain M's supervisor as the coordinator drives it on Xen
// (syncpoint.Supervisor and Binder): the handshake over xenstore through the dom0 tool
// (domainm-xen request) at either host, and dom0's grant at the destination.
type supervisor struct {
	x     Exec
	cfg   *Config
	res   *Result
	epoch uint64
	// the domain ids of target and Domain M at the source, and at the destination once
	// bound
	srcT, srcM, dstT, dstM int
}

func (s *supervisor) domid(ctx context.Context, host, name string) (int, error) {
	out, err := s.x.Run(ctx, host, "xl", "domid", name)
	if err != nil {
		return 0, err
	}
	id, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%sxl domid %s = %q: not a domU id", where(host), name, strings.TrimSpace(out))
	}
	return id, nil
}

// request sends one handshake request over xenstore through the dom0 tool.
func (s *supervisor) request(ctx context.Context, host string, dm int, req proto.Request) (proto.Response, error) {
	b, _ := json.Marshal(req)
	out, err := s.x.Run(ctx, host, s.cfg.Tool, "request", strconv.Itoa(dm), string(b))
	var resp proto.Response
	line, _, _ := strings.Cut(out, "\n")
	if jerr := json.Unmarshal([]byte(line), &resp); jerr != nil && err == nil {
		err = fmt.Errorf("%s: response %q: %w", req.Cmd, line, jerr)
	}
	return resp, err
}

// id is a request id unique across runs: the supervisor ignores a request whose id it
// answered already (a watch can fire twice).
func id(cmd string) json.RawMessage {
	return json.RawMessage(strconv.Quote(fmt.Sprintf("%s-%d", cmd, time.Now().UnixNano())))
}

// fenced is a prepare or resume with the coordinator's epoch.
func (s *supervisor) fenced(cmd string, args any) proto.Request {
	req := proto.NewRequest(id(cmd), cmd)
	req.Epoch = s.epoch
	if args != nil {
		req.Args, _ = json.Marshal(args)
	}
	return req
}

// Prepare quiesces the supervisor at the source: it unmaps the target's frames.
func (s *supervisor) Prepare(ctx context.Context) error {
	_, err := s.request(ctx, "", s.srcM, s.fenced(proto.CmdPrepare, nil))
	return err
}

// BindDestination runs when both domains are at the destination, paused: dom0 there
// grants Domain M privilege over the target's new domain and follows its frames.
func (s *supervisor) BindDestination(ctx context.Context) error {
	c := s.cfg
	t2, err := s.domid(ctx, c.Dest, c.Target)
	if err != nil {
		return err
	}
	m2, err := s.domid(ctx, c.Dest, c.DomM)
	if err != nil {
		return err
	}
	s.dstT, s.dstM = t2, m2
	s.res.IDs["dst_target"], s.res.IDs["dst_domm"] = t2, m2
	gout, err := s.x.Run(ctx, c.Dest, c.Tool, "grant", strconv.Itoa(m2), strconv.Itoa(t2))
	if err != nil {
		return fmt.Errorf("grant at %s: %w", c.Dest, err)
	}
	s.res.Frames["dst_grant"] = strings.TrimSpace(gout)
	c.Log.Info("granted at the destination", "out", strings.TrimSpace(gout))
	// dom0 there keeps domainm/frames equal to the new domain's p2m (the source's
	// follow ended with its domain); not fatal: the supervisor still sweeps 4 GiB.
	follow := fmt.Sprintf("nohup %s follow %d %d >>%s 2>&1 </dev/null &", c.Tool, m2, t2, followLog)
	if _, err := s.x.Run(ctx, c.Dest, "sh", "-c", follow); err != nil {
		c.Log.Warn("starting domainm-xen follow at the destination", "err", err)
	}
	return nil
}

// Resume points the supervisor at the destination at the target's new domain; it
// returns once the answer is "monitoring".
func (s *supervisor) Resume(ctx context.Context) error {
	if s.dstM == 0 {
		return fmt.Errorf("resume at %s before the destination was bound", s.cfg.Dest)
	}
	return s.resume(ctx, s.cfg.Dest, s.dstM, s.dstT)
}

// ResumeAtSource points it at the target's domain here again (rollback).
func (s *supervisor) ResumeAtSource(ctx context.Context) error {
	return s.resume(ctx, "", s.srcM, s.srcT)
}

func (s *supervisor) resume(ctx context.Context, host string, m, t int) error {
	args := proto.ResumeArgs{Source: fmt.Sprintf("xen:%d", t), Target: proto.TargetInfo{Name: s.cfg.Target, Host: host, DomID: t}}
	resp, err := s.request(ctx, host, m, s.fenced(proto.CmdResume, args))
	if err == nil && resp.State != proto.StateMonitoring {
		err = fmt.Errorf("resume answered %q (%s)", resp.State, resp.Error)
	}
	if err != nil {
		return fmt.Errorf("%sresume on xen:%d: %w", where(host), t, err)
	}
	return nil
}

// Monitoring asks the supervisor at the source whether it monitors.
func (s *supervisor) Monitoring(ctx context.Context) (bool, error) {
	st, err := s.request(ctx, "", s.srcM, proto.NewRequest(id("status"), proto.CmdStatus))
	if err != nil {
		return false, err
	}
	return st.State == proto.StateMonitoring, nil
}

package xenctl

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/appliance/control/xenstore"
)

// Run carries out one domainm-xen command (see its package doc).
func Run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: domainm-xen grant|request|frame|frames|maxgpfn|wait-suspend|follow ARGS")
	}
	num := func(i int) (uint64, error) {
		if i >= len(args) {
			return 0, fmt.Errorf("%s: missing argument %d", args[0], i)
		}
		v, err := strconv.ParseUint(args[i], 0, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: argument %d: %w", args[0], i, err)
		}
		return v, nil
	}
	switch args[0] {
	case "grant":
		dm, err1 := num(1)
		t, err2 := num(2)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		return Grant(uint32(dm), uint32(t), out)
	case "request":
		dm, err := num(1)
		if err != nil || len(args) < 3 {
			return errors.Join(err, errors.New("usage: domainm-xen request DOMAINM JSON"))
		}
		return Request(ctx, uint32(dm), args[2], out)
	case "frame":
		dom, err1 := num(1)
		gfn, err2 := num(2)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		b, err := ReadFrame(uint32(dom), gfn)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "frame dom=%d gfn=%#x sha256=%x\n", dom, gfn, sha256.Sum256(b))
		if len(args) >= 5 {
			off, err1 := num(3)
			n, err2 := num(4)
			if err := errors.Join(err1, err2); err != nil {
				return err
			}
			if off >= FrameSize || n > FrameSize-off {
				return fmt.Errorf("frame: %d bytes at %d outside the frame", n, off)
			}
			fmt.Fprintf(out, "bytes %q\n", b[off:off+n])
		}
		return nil
	case "frames":
		dom, err := num(1)
		if err != nil {
			return err
		}
		g, err := MaxGPFN(uint32(dom))
		if err != nil {
			return err
		}
		runs, err := Frames(uint32(dom), g)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s\n", FormatRuns(runs))
		return nil
	case "follow":
		dm, err1 := num(1)
		t, err2 := num(2)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		period := 10 * time.Second
		if len(args) > 3 {
			if period, err1 = time.ParseDuration(args[3]); err1 != nil || period <= 0 {
				return fmt.Errorf("follow: period %q: want a positive duration (10s)", args[3])
			}
		}
		return Follow(ctx, uint32(dm), uint32(t), period, out)
	case "wait-suspend":
		dom, err := num(1)
		if err != nil {
			return err
		}
		return WaitSuspend(ctx, uint32(dom), out)
	case "maxgpfn":
		dom, err := num(1)
		if err != nil {
			return err
		}
		g, err := MaxGPFN(uint32(dom))
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%#x\n", g)
		return nil
	}
	return fmt.Errorf("unknown command %q", args[0])
}

// maxFramesValue bounds domainm/frames below xenstore's 4096-byte payload.
const maxFramesValue = 3500

// Grant gives domain dm privilege over target (see the package doc of domainm-xen).
func Grant(dm, target uint32, out io.Writer) error {
	t0 := time.Now()
	if err := SetTarget(dm, target); err != nil {
		return err
	}
	g, err := MaxGPFN(target)
	if err != nil {
		return err
	}
	t1 := time.Now()
	runs, err := Frames(target, g)
	if err != nil {
		return err
	}
	frames, tf := FormatRuns(runs), time.Since(t1)
	xs, err := xenstore.Open()
	if err != nil {
		return err
	}
	defer xs.Close()
	home := fmt.Sprintf("/local/domain/%d", dm)
	steps := []struct{ path, value, owner string }{
		// the node Linux's privcmd reads in a domU: dom0's, readable by Domain M
		{home + "/target", strconv.Itoa(int(target)), fmt.Sprintf("r%d", dm)},
		// Domain M's own subtree: the handshake and what it must map
		{home + "/domainm/target", strconv.Itoa(int(target)), ""},
		{home + "/domainm/max-gpfn", fmt.Sprintf("%#x", g), ""},
	}
	own := []string{home + "/domainm", home + "/domainm/target", home + "/domainm/max-gpfn"}
	// the target's frames as Xen's p2m holds them: Domain M maps exactly these
	// (a value must fit xenstore's 4 KiB payload; else Domain M probes)
	if len(frames) <= maxFramesValue {
		steps = append(steps, struct{ path, value, owner string }{home + "/domainm/frames", frames, ""})
		own = append(own, home+"/domainm/frames")
	}
	for _, s := range steps {
		if err := xs.Write(s.path, s.value); err != nil {
			return err
		}
		if s.owner != "" {
			if err := xs.SetPerms(s.path, "n0", s.owner); err != nil {
				return err
			}
		}
	}
	// Owned by Domain M (first entry = owner): it writes its state and responses there.
	for _, p := range own {
		if err := xs.SetPerms(p, fmt.Sprintf("n%d", dm)); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "granted domain %d privilege over domain %d (max gpfn %#x; frames %s, read from Xen's p2m in %v) in %v\n",
		dm, target, g, frames, tf.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	return nil
}

// Request writes one handshake request into Domain M's subtree and waits for the
// response with the same id, the unix-socket protocol's messages over xenstore.
func Request(ctx context.Context, dm uint32, reqJSON string, out io.Writer) error {
	var req proto.Request
	if err := json.Unmarshal([]byte(reqJSON), &req); err != nil {
		return fmt.Errorf("request %q: %w", reqJSON, err)
	}
	xs, err := xenstore.Open()
	if err != nil {
		return err
	}
	defer xs.Close()
	base := fmt.Sprintf("/local/domain/%d/domainm", dm)
	if err := xs.Watch(base+"/response", "resp"); err != nil {
		return err
	}
	sent := time.Now()
	if err := xs.Write(base+"/request", reqJSON); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("request %s: no response: %w", req.Cmd, ctx.Err())
		case _, ok := <-xs.Events():
			if !ok {
				return fmt.Errorf("request %s: xenstore connection closed", req.Cmd)
			}
		}
		v, err := xs.Read(base + "/response")
		if errors.Is(err, xenstore.ErrNotFound) {
			continue
		} else if err != nil {
			return err
		}
		var resp proto.Response
		if json.Unmarshal([]byte(v), &resp) != nil || string(resp.ID) != string(req.ID) {
			continue // an older response, or not written whole yet
		}
		fmt.Fprintf(out, "%s\n", v)
		fmt.Fprintf(out, "request %s answered in %v\n", req.Cmd, time.Since(sent).Round(time.Millisecond))
		if !resp.OK {
			return fmt.Errorf("request %s: %s (%s)", req.Cmd, resp.Error, resp.Code)
		}
		return nil
	}
}

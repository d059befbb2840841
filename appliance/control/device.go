package control

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"time"

	"github.com/domainm/domainm/appliance/control/xenstore"
)

// ServeDevice serves the protocol over a character device until ctx ends: the guest
// end of a virtio-serial port (/dev/virtio-ports/NAME) in a QEMU Domain M, whose host
// end is the coordinator's. The device has one peer, the host, so there are no peer
// credentials to check; the device node's permissions are the access control.
//
// The host may connect and disconnect at will: the guest then reads end-of-file, and
// the device is read again after a short pause (reopened after an error). Closing the
// device when ctx ends unblocks a pending read on pollable devices (ttys, virtio ports).
//
// The Xen xenbus device (xenstore.DevicePath, /dev/xen/xenbus) means xenstore: a Xen
// Domain M without virtio-serial is served over its subtree (ServeXenstoreDevice).
func ServeDevice(ctx context.Context, path string, h Handler, log *slog.Logger) {
	if path == xenstore.DevicePath {
		ServeXenstoreDevice(ctx, h, log)
		return
	}
	s := &Server{h: h, log: log, path: path}
	s.ctx, s.cancel = context.WithCancel(ctx)
	defer s.cancel()
	for ctx.Err() == nil {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			log.Warn("control device", "path", path, "err", err)
			pause(ctx, time.Second)
			continue
		}
		stop := context.AfterFunc(ctx, func() { f.Close() })
		enc := json.NewEncoder(f)
		for ctx.Err() == nil {
			if err := s.serveLines(f, enc, nil); err != nil {
				if ctx.Err() == nil {
					log.Warn("control device", "path", path, "err", err)
				}
				break
			}
			pause(ctx, 200*time.Millisecond) // end of file: the host is not connected
		}
		stop()
		f.Close()
		pause(ctx, time.Second)
	}
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

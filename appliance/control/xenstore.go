package control

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/domainm/domainm/appliance/control/xenstore"
)

// Nodes of Domain M's xenstore subtree, relative to its domain's home
// (/local/domain/DOMID), which dom0 creates and gives to Domain M (domainm-xen grant).
// Relative paths follow Domain M to its new domain id after a migration.
const (
	XenstoreRequest  = "domainm/request"
	XenstoreResponse = "domainm/response"
)

// Store is what ServeXenstore needs of a xenstore connection (*xenstore.Client).
type Store interface {
	Read(path string) (string, error)
	Write(path, value string) error
	Watch(path, token string) error
	Events() <-chan xenstore.Event
}

// ServeXenstore serves the protocol over xenstore, for a Xen Domain M without
// virtio-serial, until ctx ends or the connection closes: the coordinator writes one
// request (a JSON line of the same protocol) to XenstoreRequest, Domain M's watch fires,
// and the response goes to XenstoreResponse. The same request text seen again (a watch
// fires more than once) is not carried out twice; coordinators use a new id per
// request. Like a virtio-serial port, xenstore has no connections: only the timeout
// and the epoch fence stale requests. It consumes xs's events.
func ServeXenstore(ctx context.Context, xs Store, h Handler, log *slog.Logger) error {
	s := &Server{h: h, log: log, path: "xenstore:" + XenstoreRequest}
	s.ctx, s.cancel = context.WithCancel(ctx)
	defer s.cancel()
	if err := xs.Watch(XenstoreRequest, "domainm-request"); err != nil {
		return err
	}
	var last string
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-xs.Events():
			if !ok {
				return errors.New("control: xenstore connection closed")
			}
			if !strings.HasSuffix(ev.Path, XenstoreRequest) {
				continue
			}
		}
		v, err := xs.Read(XenstoreRequest)
		if err != nil || strings.TrimSpace(v) == "" || v == last {
			continue
		}
		last = v
		resp := s.handle([]byte(v), time.Now(), nil)
		b, err := json.Marshal(resp)
		if err == nil {
			err = xs.Write(XenstoreResponse, string(b))
		}
		if err != nil {
			log.Warn("control: writing the xenstore response", "node", XenstoreResponse, "err", err)
		}
	}
}

// openXenstore connects to xenstore (a seam for tests).
var openXenstore = func() (xenstoreConn, error) { return xenstore.Open() }

type xenstoreConn interface {
	Store
	Close() error
}

// ServeXenstoreDevice serves the protocol over xenstore (ServeXenstore) until ctx
// ends, connecting through the xenbus device (or xenstored's socket in dom0) and
// connecting again a second after the connection fails. What `control.device =
// "/dev/xen/xenbus"` in domainm's configuration runs.
func ServeXenstoreDevice(ctx context.Context, h Handler, log *slog.Logger) {
	for ctx.Err() == nil {
		xs, err := openXenstore()
		if err == nil {
			log.Info("control over xenstore", "request", XenstoreRequest, "response", XenstoreResponse)
			err = ServeXenstore(ctx, xs, h, log)
			xs.Close()
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("control over xenstore", "err", err)
		pause(ctx, time.Second)
	}
}

// Package metrics serves the appliance's Prometheus metrics and its health check
// over HTTP: GET /metrics (the Prometheus text format) and GET /healthz (200 "ok",
// or 503 with the reasons). The listener is off unless configured, and by default
// only a loopback address is accepted: metrics name the target and its findings.
//
// Every part of the appliance registers its series on the one registry that
// NewRegistry makes (the supervisor's scan metrics, the alert dispatcher's).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// ErrNotLoopback is returned by CheckListen for a non-loopback address without
// allowRemote.
var ErrNotLoopback = errors.New("not a loopback address")

// CheckListen validates a listen address: "" means off; otherwise host:port where
// host is a loopback IP or "localhost", unless allowRemote.
func CheckListen(addr string, allowRemote bool) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("listen address %q: want host:port, e.g. 127.0.0.1:9477", addr)
	}
	if allowRemote {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("listen address %q: %w (metrics reveal the target and its findings; allow remote listening explicitly)", addr, ErrNotLoopback)
}

// Server is a running metrics listener.
type Server struct {
	srv  *http.Server
	addr net.Addr
	done chan error
}

// Serve listens on addr and serves /metrics from g and /healthz from health (nil:
// always healthy) until Close.
func Serve(addr string, g prometheus.Gatherer, health func() error, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: slogErrorLog{log}}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if health != nil {
			if err := health(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "unhealthy: %v\n", err)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "domainm: /metrics /healthz")
	})
	s := &Server{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second},
		addr: ln.Addr(), done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	log.Info("metrics listening", "addr", s.addr.String())
	return s, nil
}

// Addr is the address the server listens on (useful with port 0).
func (s *Server) Addr() net.Addr { return s.addr }

// Close stops the server, letting requests in progress finish until ctx ends.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

type slogErrorLog struct{ log *slog.Logger }

func (l slogErrorLog) Println(v ...any) { l.log.Error("serving metrics", "err", fmt.Sprint(v...)) }

// RegisterBuildInfo registers domainm_build_info, a gauge that is always 1 and whose
// labels say what is running (the Prometheus convention for build information):
// domainm_build_info{version,commit,goversion,libyara} 1.
func RegisterBuildInfo(reg prometheus.Registerer, version, commit, goVersion, libyara string) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "domainm_build_info",
		Help: "Build information of the running domainm: version, commit, Go and libyara versions. Always 1.",
	}, []string{"version", "commit", "goversion", "libyara"})
	g.WithLabelValues(version, commit, goVersion, libyara).Set(1)
	reg.MustRegister(g)
}

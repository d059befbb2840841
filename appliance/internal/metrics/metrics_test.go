package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCheckListen(t *testing.T) {
	for _, ok := range []string{"", "127.0.0.1:9477", "[::1]:9477", "localhost:1", "127.0.0.2:80"} {
		if err := CheckListen(ok, false); err != nil {
			t.Errorf("CheckListen(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"0.0.0.0:9477", ":9477", "10.0.0.1:9477", "example.org:1"} {
		if err := CheckListen(bad, false); !errors.Is(err, ErrNotLoopback) {
			t.Errorf("CheckListen(%q) = %v, want ErrNotLoopback", bad, err)
		}
		if err := CheckListen(bad, true); err != nil {
			t.Errorf("CheckListen(%q, allowRemote): %v", bad, err)
		}
	}
	if err := CheckListen("9477", false); err == nil || errors.Is(err, ErrNotLoopback) {
		t.Errorf("CheckListen(9477) = %v, want a format error", err)
	}
}

func TestServe(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "domainm_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	var healthErr atomic.Pointer[error]
	s, err := Serve("127.0.0.1:0", reg, func() error {
		if e := healthErr.Load(); e != nil {
			return *e
		}
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	base := "http://" + s.Addr().String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "domainm_test_total 3") || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	unhealthy := errors.New("alert sink siem: 12 alerts waiting")
	healthErr.Store(&unhealthy)
	if code, body := get("/healthz"); code != 503 || !strings.Contains(body, "12 alerts waiting") {
		t.Fatalf("/healthz unhealthy: %d %q", code, body)
	}
	if code, _ := get("/nope"); code != 404 {
		t.Fatalf("/nope: %d", code)
	}
}

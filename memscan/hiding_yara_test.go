package memscan_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

// hidingYara is real libyara rules whose "guest" hides its payload while libyara runs:
// before every call into the engine the payload's bytes in the RAM file are overwritten,
// and after it they are put back. Whatever libyara reads from the live mapping holds no
// payload; a copy taken before the call does.
type hidingYara struct {
	yara.MemoryRules
	ram     *os.File
	at      int64
	payload string
	calls   map[string]int
}

func (h hidingYara) NewScanner() (memscan.BlockScanner, error) {
	sc, err := h.MemoryRules.NewScanner()
	if err != nil {
		return nil, err
	}
	return &hidingScanner{BlockScanner: sc, h: h}, nil
}

type hidingScanner struct {
	memscan.BlockScanner
	h hidingYara
}

func (s *hidingScanner) hide(call string) func() {
	s.h.calls[call]++
	s.h.ram.WriteAt(bytes.Repeat([]byte{'.'}, len(s.h.payload)), s.h.at)
	return func() { s.h.ram.WriteAt([]byte(s.h.payload), s.h.at) }
}

func (s *hidingScanner) Scan(buf []byte, base uint64) ([]detectors.Match, error) {
	defer s.hide("Scan")()
	return s.BlockScanner.Scan(buf, base)
}

func (s *hidingScanner) ScanEach(buf []byte, offs, lens []int, bases []uint64) ([][]detectors.Match, []error) {
	defer s.hide("ScanEach")()
	return s.BlockScanner.(memscan.EachScanner).ScanEach(buf, offs, lens, bases)
}

func (s *hidingScanner) Screen(wins [][]byte, bases []uint64) ([]bool, error) {
	defer s.hide("Screen")()
	return s.BlockScanner.(memscan.Screener).Screen(wins, bases)
}

// TestGuestHidingFromYaraIsAlerted is TestGuestHidingDuringScanIsAlerted (memscan's own
// test, with a Go stand-in for the engine) with libyara and the daemon's way of calling
// it: windows copied in groups and scanned in one ScanEach call. A guest that hides its
// payload from every call into libyara is alerted by the daemon's driver in the same
// pass, since libyara scans the copy the change hash was taken of; a driver scanning in
// place (scan-memory's) misses that pass, and its next pass, where the guest does not
// hide, alerts: the clean result read in place did not stand for the payload's hash.
func TestGuestHidingFromYaraIsAlerted(t *testing.T) {
	const payload = "DOMAINM-HIDDEN-PAYLOAD-7f3a"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hidden.yar"), []byte(`rule hidden { strings: $a = "`+payload+`" condition: $a }`), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := yara.Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 4<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range img {
		img[i] = byte(rng.Uint32())
	}
	at := int64(5*memscan.DefaultBlockSize + 1234)
	copy(img[at:], payload)
	ram, path := memscan.SealedMemfd(t, img)
	src, err := memscan.OpenFile(path, memscan.Layout{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	plain := yara.MemoryRules{Rules: r}
	for _, inPlace := range []bool{false, true} {
		hiding := hidingYara{MemoryRules: plain, ram: ram, at: at, payload: payload, calls: map[string]int{}}
		d := memscan.NewDriver(memscan.DriverConfig{Workers: 1, InPlace: inPlace})
		var alerted []bool
		for _, rs := range []memscan.RuleSet{hiding, plain} {
			p, err := d.Pass(context.Background(), src, memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }})
			if err != nil || len(p.Errors) > 0 {
				t.Fatal(err, p.Errors)
			}
			hit := false
			for _, m := range p.Matches {
				for _, s := range m.Strings {
					hit = hit || m.Rule == "hidden" && s.Offset == uint64(at)
				}
			}
			alerted = append(alerted, hit)
		}
		t.Logf("in place %v: alerted in passes %v; calls into libyara while hiding %v", inPlace, alerted, hiding.calls)
		if hiding.calls["ScanEach"] == 0 {
			t.Errorf("in place %v: no ScanEach call: the test no longer takes the daemon's path", inPlace)
		}
		if msg := memscan.HidingVerdict(inPlace, alerted); msg != "" {
			t.Error(msg)
		}
	}
}

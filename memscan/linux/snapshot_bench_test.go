package linux

import (
	"context"
	"os"
	"testing"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/memscan"
)

// BenchmarkSnapshotRAM profiles a pass's guest work (snapshot, attribution, seams) on a
// RAM file kept by TestGuestAttribution (DOMAINM_KEEP_GUEST_RAM=PATH), named by
// DOMAINM_GUEST_RAM.
func BenchmarkSnapshotRAM(b *testing.B) {
	path := os.Getenv("DOMAINM_GUEST_RAM")
	if path == "" {
		b.Skip("DOMAINM_GUEST_RAM names no RAM file (keep one with DOMAINM_KEEP_GUEST_RAM in TestGuestAttribution)")
	}
	src, err := memscan.Open("file:"+path, memscan.OpenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	g, err := OpenGuest(src)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("snapshot", func(b *testing.B) {
		for b.Loop() {
			if _, err := g.Snapshot(); err != nil {
				b.Fatal(err)
			}
		}
	})
	s, _ := g.Snapshot()
	b.Run("attribute", func(b *testing.B) {
		for b.Loop() {
			s.Attribute([]uint64{0x1000000})
		}
	})
	b.Run("seams", func(b *testing.B) {
		for b.Loop() {
			s.Seams()
		}
	})
	b.Run("unchanged-virtual", func(b *testing.B) {
		sc := memscan.NewSeamScanner(0, 1, 1<<30)
		rs := noRules{}
		s.ScanVirtual(context.Background(), src, sc, rs, nil)
		for b.Loop() {
			s.ScanVirtual(context.Background(), src, sc, rs, nil)
		}
	})
}

type noRules struct{}

func (noRules) ID() string                                { return "none" }
func (noRules) NewScanner() (memscan.BlockScanner, error) { return noScanner{}, nil }

type noScanner struct{}

func (noScanner) Scan([]byte, uint64) ([]detectors.Match, error) { return nil, nil }
func (noScanner) Close()                                         {}

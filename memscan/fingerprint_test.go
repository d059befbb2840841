package memscan_test

import (
	"errors"
	"testing"

	"github.com/domainm/domainm/memscan"
)

// TestFingerprint: the same memory verifies; a changed sampled page or a different layout
// is ErrGuestChanged; sampled pages are non-zero where the guest has non-zero pages.
func TestFingerprint(t *testing.T) {
	mem := newMem() // 1 MiB at 0, 512 KiB at 4 GiB, all zero
	// 384 pages give 64 slots 6 pages apart; in low RAM only the page after each slot's
	// first page is non-zero, so the sampler must look past the first.
	for pg := 1; pg < 256; pg += 6 {
		mem.data[0][pg*4096+100] = byte(pg) | 1
	}
	fp, err := memscan.TakeFingerprint(mem)
	if err != nil {
		t.Fatal(err)
	}
	if len(fp.Pages) != memscan.FingerprintPages {
		t.Fatalf("%d pages sampled", len(fp.Pages))
	}
	for _, p := range fp.Pages {
		if p.GPA < 1<<20 && (p.GPA/4096)%6 != 1 {
			t.Errorf("sampled zero page %#x although a non-zero one is near", p.GPA)
		}
	}
	if err := fp.Verify(mem); err != nil {
		t.Fatalf("same memory: %v", err)
	}
	mem.data[0][fp.Pages[5].GPA+200] ^= 0xff
	if err := fp.Verify(mem); !errors.Is(err, memscan.ErrGuestChanged) {
		t.Fatalf("changed page: %v", err)
	}
	mem.data[0][fp.Pages[5].GPA+200] ^= 0xff
	other := newMem()
	copy(other.data[0], mem.data[0])
	other.ranges[1].Size = 256 << 10
	if err := fp.Verify(other); !errors.Is(err, memscan.ErrGuestChanged) {
		t.Fatalf("other layout: %v", err)
	}
}

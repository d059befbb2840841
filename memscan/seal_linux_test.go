package memscan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/domainm/domainm/detectors"
)

// SealedMemfd returns a memfd holding img, sealed against shrinking and growing as
// QEMU's memory-backend-memfd seals guest RAM, and its /proc path (memscan_test's tests
// use it too).
func SealedMemfd(t *testing.T, img []byte) (*os.File, string) {
	t.Helper()
	fd, err := unix.MemfdCreate("domainm-test", unix.MFD_ALLOW_SEALING|unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	mf := os.NewFile(uintptr(fd), "memfd")
	t.Cleanup(func() { mf.Close() })
	if _, err := mf.Write(img); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
		t.Fatal(err)
	}
	if err := mf.Truncate(0); !errors.Is(err, unix.EPERM) {
		t.Fatalf("truncating the sealed memfd: %v, want EPERM", err)
	}
	return mf, fmt.Sprintf("/proc/self/fd/%d", fd)
}

// TestSealedMemfdScannedInPlace: a memfd sealed against shrinking is scanned in its
// mapping, without a copy, by a driver configured InPlace (scan-memory), and the pass
// finds exactly what it finds in a regular file with the same bytes (a needle inside a
// block, one across a block boundary, one in the last block); truncating the memfd is
// refused. What was scanned in place stands for that pass only: an unchanged second pass
// scans every block again. The daemon's driver (not InPlace) copies the memfd's windows
// like any file's, and its unchanged second pass reuses every block.
func TestSealedMemfdScannedInPlace(t *testing.T) {
	const size = 2 << 20
	const needle = "IN-PLACE-NEEDLE"
	img := make([]byte, size)
	for i := range img {
		img[i] = byte(i*7 + i>>9)
	}
	for _, off := range []int{0x1234, 256<<10 - 5, size - 100} {
		copy(img[off:], needle)
	}
	_, path := SealedMemfd(t, img)
	plain := t.TempDir() + "/ram"
	if err := os.WriteFile(plain, img, 0o644); err != nil {
		t.Fatal(err)
	}
	sealed, err := OpenFile(path, Layout{})
	if err != nil {
		t.Fatal(err)
	}
	defer sealed.Close()
	regular, err := OpenFile(plain, Layout{})
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	if !sealed.InPlace() || regular.InPlace() {
		t.Fatalf("InPlace: sealed memfd %v, regular file %v", sealed.InPlace(), regular.InPlace())
	}
	scans := 0
	opts := PassOptions{Rules: func() RuleSet { return needleRules{needle: needle, scans: &scans} }}
	cases := []struct {
		name    string
		src     Source
		inPlace bool
	}{{"memfd in place", sealed, true}, {"memfd copied", sealed, false}, {"regular file", regular, true}}
	var want PassResult
	for i, c := range cases {
		d := NewDriver(DriverConfig{Workers: 2, InPlace: c.inPlace})
		p1, err := d.Pass(context.Background(), c.src, opts)
		if err != nil || len(p1.Errors) > 0 {
			t.Fatal(c.name, err, p1.Errors)
		}
		if i == 0 {
			want = p1
			if n := len(p1.Matches); n != 1 || len(p1.Matches[0].Strings) != 3 {
				t.Fatalf("%s: found %+v, want the 3 needles", c.name, p1.Matches)
			}
		} else if !reflect.DeepEqual(p1.Matches, want.Matches) || p1.BytesScanned != want.BytesScanned {
			t.Errorf("%s differs from the memfd in place:\n%+v\n%+v", c.name, p1, want)
		}
		inPlace := c.inPlace && c.src == sealed
		if inPlace && (p1.BytesInPlace != p1.BytesScanned || p1.BytesScanned == 0) || !inPlace && p1.BytesInPlace != 0 {
			t.Errorf("%s: %d of %d bytes scanned in place", c.name, p1.BytesInPlace, p1.BytesScanned)
		}
		p2, err := d.Pass(context.Background(), c.src, opts)
		if err != nil || !reflect.DeepEqual(p2.Matches, want.Matches) {
			t.Errorf("%s: unchanged pass: %+v, %v", c.name, p2, err)
		}
		if inPlace && (p2.BlocksUnchanged != 0 || p2.BlocksScanned != p1.BlocksScanned) {
			t.Errorf("%s: unchanged pass reused %d blocks and scanned %d (first pass %d): a result scanned in place stood for a later pass",
				c.name, p2.BlocksUnchanged, p2.BlocksScanned, p1.BlocksScanned)
		}
		if !inPlace && p2.BlocksUnchanged != p2.Blocks {
			t.Errorf("%s: unchanged pass reused %d of %d blocks", c.name, p2.BlocksUnchanged, p2.Blocks)
		}
	}
}

// hidingRules finds needle (needleRules), but the "guest" hides it while a window is
// being scanned: before each scan the needle's bytes in the RAM file are overwritten,
// and put back after. The window the change hash read held the needle; the live memory
// the scan reads, if it reads the mapping, does not.
type hidingRules struct {
	needleRules
	ram *os.File
	at  int64
}

func (r hidingRules) NewScanner() (BlockScanner, error) { return hidingScanner(r), nil }

type hidingScanner hidingRules

func (s hidingScanner) Close() {}
func (s hidingScanner) Scan(buf []byte, base uint64) ([]detectors.Match, error) {
	if _, err := s.ram.WriteAt(bytes.Repeat([]byte{'.'}, len(s.needle)), s.at); err != nil {
		return nil, err
	}
	defer s.ram.WriteAt([]byte(s.needle), s.at)
	return needleScanner(s.needleRules).Scan(buf, base)
}

// TestGuestHidingDuringScanIsAlerted asks whether a guest that hides its payload while
// its window is being scanned (it flips the bytes back and forth, and the scan reads
// memory at another moment than the change hash) escapes. The daemon's driver scans the
// copy it hashed, so it alerts in the very pass; a one-pass driver scanning in place
// may miss that pass, but should the guest not win the race again, the next pass scans
// the window again (its result did not stand for the payload's hash) and alerts.
func TestGuestHidingDuringScanIsAlerted(t *testing.T) {
	const size = 1 << 20
	const needle = "HIDDEN-WHILE-SCANNED"
	const at = 300 << 10
	img := make([]byte, size)
	for i := range img {
		img[i] = byte(i*13 + i>>10)
	}
	copy(img[at:], needle)
	mf, path := SealedMemfd(t, img)
	src, err := OpenFile(path, Layout{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	scans := 0
	hiding := hidingRules{needleRules{needle: needle, scans: &scans}, mf, at}
	found := func(p PassResult) bool {
		return len(p.Matches) == 1 && len(p.Matches[0].Strings) >= 1 && p.Matches[0].Strings[0].Offset == at
	}
	for _, inPlace := range []bool{false, true} {
		d := NewDriver(DriverConfig{Workers: 1, InPlace: inPlace})
		var alerted []bool
		// Pass 1: the guest hides the payload while it is scanned; pass 2: it does not
		// manage to (same rules, so a cached result may stand).
		for _, rs := range []RuleSet{hiding, hiding.needleRules} {
			p, err := d.Pass(context.Background(), src, PassOptions{Rules: func() RuleSet { return rs }})
			if err != nil || len(p.Errors) > 0 {
				t.Fatal(err, p.Errors)
			}
			alerted = append(alerted, found(p))
		}
		if msg := HidingVerdict(inPlace, alerted); msg != "" {
			t.Error(msg)
		}
	}
}

// HidingVerdict judges the passes of a hiding test (pass 1: the guest hides its payload
// during every call into the engine; pass 2: it does not): "" when the daemon's driver
// (copies) alerted in both, or the in-place driver missed pass 1 and alerted in pass 2;
// else what went wrong.
func HidingVerdict(inPlace bool, alerted []bool) string {
	switch {
	case !inPlace && !(alerted[0] && alerted[1]):
		return fmt.Sprintf("daemon's driver (copies): alerted in passes %v, want both", alerted)
	case inPlace && alerted[0]:
		return "in place: pass 1 alerted although the engine read the hidden bytes: the test no longer hides anything"
	case inPlace && !alerted[1]:
		return "in place: pass 2 did not alert: the clean result of pass 1 (scanned in place, payload hidden) stood for the payload's hash"
	}
	return ""
}

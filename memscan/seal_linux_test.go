package memscan

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSealedMemfdScannedInPlace: a memfd sealed against shrinking (as QEMU's
// memory-backend-memfd seals guest RAM) is scanned in its mapping, without a copy, and
// the pass finds exactly what it finds in a regular file with the same bytes (a needle
// inside a block, one across a block boundary, one in the last block); the regular
// file's blocks are copied; truncating the memfd is refused; an unchanged second pass
// reuses every block.
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
	fd, err := unix.MemfdCreate("domainm-test", unix.MFD_ALLOW_SEALING|unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	mf := os.NewFile(uintptr(fd), "memfd")
	defer mf.Close()
	if _, err := mf.Write(img); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
		t.Fatal(err)
	}
	if err := mf.Truncate(0); !errors.Is(err, unix.EPERM) {
		t.Fatalf("truncating the sealed memfd: %v, want EPERM", err)
	}
	plain := t.TempDir() + "/ram"
	if err := os.WriteFile(plain, img, 0o644); err != nil {
		t.Fatal(err)
	}
	sealed, err := OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), Layout{})
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
	var got [2]PassResult
	for i, src := range []Source{sealed, regular} {
		d := NewDriver(DriverConfig{Workers: 2})
		if got[i], err = d.Pass(context.Background(), src, opts); err != nil || len(got[i].Errors) > 0 {
			t.Fatal(err, got[i].Errors)
		}
		if i == 0 {
			p2, err := d.Pass(context.Background(), src, opts)
			if err != nil || p2.BlocksUnchanged != p2.Blocks || !reflect.DeepEqual(p2.Matches, got[0].Matches) {
				t.Errorf("unchanged pass over the memfd: %+v, %v", p2, err)
			}
		}
	}
	if n := len(got[0].Matches); n != 1 || len(got[0].Matches[0].Strings) != 3 {
		t.Fatalf("memfd pass found %+v, want the 3 needles", got[0].Matches)
	}
	if !reflect.DeepEqual(got[0].Matches, got[1].Matches) || got[0].BytesScanned != got[1].BytesScanned {
		t.Errorf("memfd and regular file differ:\n%+v\n%+v", got[0], got[1])
	}
	if got[0].BytesInPlace != got[0].BytesScanned || got[0].BytesScanned == 0 || got[1].BytesInPlace != 0 {
		t.Errorf("bytes in place: memfd %d of %d, regular file %d", got[0].BytesInPlace, got[0].BytesScanned, got[1].BytesInPlace)
	}
}

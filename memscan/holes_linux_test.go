package memscan_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/domainm/domainm/memscan"
	"github.com/domainm/domainm/memscan/linux"
)

// TestPassLeavesHolesUnread: a RAM file on tmpfs (/dev/shm, a memfd) is sparse where the
// guest never wrote, and reading a hole through the mapping allocates a page for it, so
// a pass that read every window would give the host a page for every page the guest
// never touched. Windows that are holes are zero blocks, asked with SEEK_DATA and not
// read, and an overlap that is a hole is not read either; both passes and both ways of
// scanning (a copy, and in place for a memfd sealed against shrinking) find what is
// planted in the data and store no page beyond the blocks that hold data.
func TestPassLeavesHolesUnread(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		t.Run(fmt.Sprintf("sealed=%v", sealed), func(t *testing.T) {
			const size = 16 << 20
			fd, err := unix.MemfdCreate("domainm-holes", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
			if err != nil {
				t.Fatal(err)
			}
			f := os.NewFile(uintptr(fd), "memfd")
			defer f.Close()
			if err := f.Truncate(size); err != nil {
				t.Fatal(err)
			}
			// Data in three places: a marker in block 3, one that begins in block 20's
			// last page and ends in block 21 (block 20's window reads the overlap), and a
			// marker alone in the last block.
			plants := map[int64]string{3<<18 + 100: "DOMAINM-MARK-0003", 21<<18 - 8: "DOMAINM-MARK-0021", size - 4096: "DOMAINM-MARK-0063"}
			for off, s := range plants {
				if _, err := f.WriteAt([]byte(s), off); err != nil {
					t.Fatal(err)
				}
			}
			if sealed {
				if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
					t.Fatal(err)
				}
			}
			allocated := func() int64 {
				var st unix.Stat_t
				if err := unix.Fstat(fd, &st); err != nil {
					t.Fatal(err)
				}
				return st.Blocks * 512
			}
			before := allocated()
			src, err := memscan.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), memscan.Layout{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			rs := compile(t, testRules)
			d := memscan.NewDriver(memscan.DriverConfig{Workers: 2})
			var afterFirst int64
			for pass := 1; pass <= 3; pass++ {
				res, err := d.Pass(context.Background(), src, memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }})
				if err != nil || len(res.Errors) > 0 {
					t.Fatal(err, res.Errors)
				}
				var addrs []uint64
				for _, m := range res.Matches {
					for _, s := range m.Strings {
						addrs = append(addrs, s.Offset)
					}
				}
				if got, want := fmt.Sprintf("%#x", addrs), "[0xc0064 0x53fff8 0xfff000]"; got != want {
					t.Errorf("pass %d: matches at %s, want %s", pass, got, want)
				}
				// Blocks 3, 20, 21 and 63 hold data, and block 2's window does (its overlap is
				// block 3's first page).
				if res.BlocksZero != 59 || res.BlocksScanned+res.BlocksUnchanged != 5 {
					t.Errorf("pass %d: %d zero blocks, %d scanned, %d unchanged; want 59 zero and 5 with data", pass, res.BlocksZero, res.BlocksScanned, res.BlocksUnchanged)
				}
				if pass == 1 {
					afterFirst = allocated()
				}
			}
			// Holes are not read; a block with data of its own is read whole (its own
			// holes are stored with it), an overlap or own bytes that are one hole are
			// not: at most the four blocks with data of their own (3, 20, 21, 63), far
			// from the file's 16 MiB, and no more with every pass (a stored page is data
			// to the next pass).
			if after := allocated(); after > before+4<<18 || after != afterFirst {
				t.Errorf("the file had %d bytes allocated before the passes, %d after the first, %d after the third (at most %d)", before, afterFirst, after, before+4<<18)
			}
			// The search for a Linux kernel's layout reads all memory (kallsyms,
			// linux_banner) and leaves the holes unread as well.
			if _, err := linux.OpenGuest(src); err == nil {
				t.Error("a guest layout found in a memfd holding three markers")
			}
			if after := allocated(); after != afterFirst {
				t.Errorf("the search for a guest layout took the file from %d allocated bytes to %d", afterFirst, after)
			}
		})
	}
}

package yara

/*
#include <stdlib.h>
#include "screen.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"

	goyara "github.com/hillu/go-yara/v4"

	"github.com/domainm/domainm/memscan"
)

var _ memscan.Screener = (*MemoryScanner)(nil)

// Screen runs the rules' string matching over many memory windows in one libyara
// scan: wins[i] holds guest memory from address bases[i] (ascending; a window may
// overlap the next one, as the memory driver's windows do). hit[i] is false only
// when window i, scanned alone (Scan), has no match of any string of the rule set
// (private ones too) and reads no memory in its conditions; Scan then reports the
// same for it as for every other such window (what the rule set's conditions make of
// no matches at all, usually nothing). The memory driver screens a run of windows so,
// scans the windows with a hit alone and settles the others with that one result: it
// pays libyara's fixed cost per scan (evaluating every rule's condition, about 0.2-0.6
// ms per window with elastic's 3,021 rules) once per run instead of once per window.
//
// Why a window without a hit needs no scan of its own: libyara matches strings block
// by block, and each window is one block at its own address, so its matches are those
// of its scan alone (dm_scan_screen undoes the two ways libyara 4.2.3 links blocks).
// With no string match, a condition can only depend on the window's bytes by reading
// them: a module, entrypoint or uint*(x). Rule sets whose conditions use modules or
// entrypoint, or read at an address other than a number or one derived from a match or
// another read, are not screened (memscan.ErrNoScreen, see screenRoots), nor are rules
// not compiled from a folder by Compile; a read at a number N marks the window
// holding N.
//
// What counts as a hit: a string match of any rule in the window, or the window holds
// a fixed address a condition reads. But when no rule matches the run as a whole, a
// rule whose condition is monotone (sensitiveRules: made of string presence, "N of",
// counts with >=, reads compared with ==, and, or; it can only hold in a window if it
// holds in the run, which holds all the window's matches and bytes) matches in none of
// its windows either, so only the strings of the other rules (sensitive: not, ==
// counts, loops, global rules, and the rules they refer to) make hits. Where rules
// rarely match, most windows are passed even when their strings match here and there.
//
// An error means: scan each window alone. memscan.ErrNoScreen says it will not change
// for this rule set.
func (m *MemoryScanner) Screen(wins [][]byte, bases []uint64) ([]bool, error) {
	cs := cScanner(m.s.s)
	if cs == nil || !m.s.rules.screen {
		return nil, memscan.ErrNoScreen
	}
	n := len(wins)
	if n != len(bases) {
		return nil, fmt.Errorf("yara: screen of %d windows with %d addresses", n, len(bases))
	}
	if n == 0 {
		return nil, nil
	}
	for i := range n {
		if len(wins[i]) == 0 {
			return nil, fmt.Errorf("yara: screen window %d at %#x is empty", i, bases[i])
		}
		if i > 0 && bases[i] <= bases[i-1] {
			return nil, fmt.Errorf("yara: screen windows at %#x and %#x are out of order", bases[i-1], bases[i])
		}
	}
	// The windows' addresses go to C in C memory (Go memory handed to C may not hold Go
	// pointers), pinned, and written as integers: a pointer-typed store into C memory
	// would pass the slot's old bits to the garbage collector's write barrier.
	cptrs := C.calloc(C.size_t(n), C.size_t(unsafe.Sizeof(uintptr(0))))
	if cptrs == nil {
		return nil, fmt.Errorf("yara: screen of %d windows: out of memory", n)
	}
	defer C.free(cptrs)
	ptrs := unsafe.Slice((*uintptr)(cptrs), n)
	var pin runtime.Pinner
	defer pin.Unpin()
	sizes := make([]C.size_t, n)
	for i, w := range wins {
		pin.Pin(&w[0])
		ptrs[i] = uintptr(unsafe.Pointer(&w[0]))
		sizes[i] = C.size_t(len(w))
	}
	hit := make([]byte, n)
	var sens *C.uint8_t
	if m.s.rules.shortcut {
		if m.sensitive == nil {
			m.sensitive = m.sensitiveRules(cs)
		}
		sens = (*C.uint8_t)(unsafe.Pointer(&m.sensitive[0]))
	}
	var matched C.int
	flags := C.int(goyara.ScanFlagsProcessMemory) | C.SCAN_FLAGS_NO_TRYCATCH | C.SCAN_FLAGS_REPORT_RULES_MATCHING
	rc := C.dm_scan_screen(cs, (**C.uint8_t)(cptrs), (*C.uint64_t)(unsafe.Pointer(&bases[0])), &sizes[0], C.size_t(n), flags,
		sens, (*C.uint8_t)(unsafe.Pointer(&hit[0])), &matched)
	runtime.KeepAlive(m.s.s)
	runtime.KeepAlive(bases)
	runtime.KeepAlive(m.sensitive)
	if rc != C.ERROR_SUCCESS {
		return nil, m.s.scanError(goyara.Error(rc))
	}
	out := make([]bool, n)
	for i, h := range hit {
		out[i] = h != 0 || m.s.rules.readsIn(bases[i], uint64(len(wins[i])))
	}
	return out, nil
}

// sensitiveRules returns, by libyara's rule index, 1 for the rules the rule set's
// source names sensitive (Rules.sensitive), with one byte more so that the slice is
// never empty.
func (m *MemoryScanner) sensitiveRules(cs *C.YR_SCANNER) []byte {
	n := int(C.dm_num_rules(cs))
	out := make([]byte, n+1)
	for i := range n {
		if m.s.rules.sensitive[C.GoString(C.dm_rule_name_at(cs, C.uint32_t(i)))] {
			out[i] = 1
		}
	}
	return out
}

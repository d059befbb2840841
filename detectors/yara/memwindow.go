package yara

/*
#include <stdlib.h>
#include "memwindow.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"runtime/cgo"
	"strconv"
	"unsafe"

	goyara "github.com/hillu/go-yara/v4"

	"github.com/domainm/domainm/detectors"
)

// The C window path (memwindow.c) scans a window with the same libyara call and the
// same semantics as go-yara's ScanMemBlocks with windowIterator (one block at the
// window's address, no file size, process-memory flags), but its iterator is C: libyara
// looks the block up (first, next, fetch_data) for every uint*() read, entrypoint and
// module, about 5,000 times per window with signature-base, and through go-yara each
// look-up is a cgo callback into Go and each scan copies the window into malloc'd
// memory. Only a matching rule calls into Go (dmRuleMatching).

// goyaraScannerOK says whether go-yara's Scanner starts with its *C.YR_SCANNER, as
// go-yara v4.2.4 (pinned in go.mod) declares it; if a later version moves it, the
// memory scan falls back to ScanMemBlocks.
var goyaraScannerOK = func() bool {
	t := reflect.TypeOf(goyara.Scanner{})
	f := t.Field(0)
	return f.Name == "cptr" && f.Offset == 0 && f.Type.Kind() == reflect.Pointer
}()

// cScanner returns the libyara scanner behind s, or nil.
func cScanner(s *goyara.Scanner) *C.YR_SCANNER {
	if !goyaraScannerOK || s == nil {
		return nil
	}
	return *(**C.YR_SCANNER)(unsafe.Pointer(s))
}

// windowScan collects one window's matches (out), or those of each window of a ScanEach
// call (outs, window i at bases[i]); dmRuleMatching reaches it through a handle.
type windowScan struct {
	base  uint64
	max   int
	out   []detectors.Match
	bases []uint64
	outs  [][]detectors.Match
}

// scanFlagsNoTryCatch keeps libyara from installing its fault handler (see NewScanner).
const scanFlagsNoTryCatch = goyara.ScanFlags(C.SCAN_FLAGS_NO_TRYCATCH)

// scanC scans buf as one memory block at base through memwindow.c. buf is passed as a
// cgo argument and used by libyara only during the call.
func (m *MemoryScanner) scanC(cs *C.YR_SCANNER, buf []byte, base uint64) ([]detectors.Match, error) {
	if m.ws == nil {
		// One collector and handle per scanner, reused for every window (Close frees them).
		m.ws = &windowScan{}
		m.h = cgo.NewHandle(m.ws)
	}
	*m.ws = windowScan{base: base, max: m.s.maxMatches}
	flags := C.int(goyara.ScanFlagsProcessMemory) | C.SCAN_FLAGS_REPORT_RULES_MATCHING | C.SCAN_FLAGS_NO_TRYCATCH
	rc := C.dm_scan_window(cs, (*C.uint8_t)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), C.uint64_t(base), flags, C.uintptr_t(m.h))
	runtime.KeepAlive(m.s.s)
	runtime.KeepAlive(buf)
	out := m.ws.out
	m.ws.out = nil
	if rc != C.ERROR_SUCCESS {
		return out, goyara.Error(rc)
	}
	return out, nil
}

// ScanEach scans windows of buf alone, window i being buf[offs[i]:offs[i]+lens[i]] at
// address bases[i], each exactly as Scan(window, bases[i]) would (same matches, same
// errors), in one call into libyara: a cgo call of a few hundred microseconds costs the
// Go runtime tens of microseconds of thread hand-offs (sysmon and an idle M woken
// around each call), about 7% of a 256 KiB window's CPU with cheap rules. Without the C
// window path it scans them one by one. The windows may overlap.
func (m *MemoryScanner) ScanEach(buf []byte, offs, lens []int, bases []uint64) ([][]detectors.Match, []error) {
	n := len(offs)
	outs, errs := make([][]detectors.Match, n), make([]error, n)
	if len(lens) != n || len(bases) != n {
		for i := range errs {
			errs[i] = fmt.Errorf("yara: %d windows with %d lengths and %d addresses", n, len(lens), len(bases))
		}
		return outs, errs
	}
	cs := cScanner(m.s.s)
	if cs == nil || n < 2 {
		for i := range n {
			outs[i], errs[i] = m.Scan(buf[offs[i]:offs[i]+lens[i]], bases[i])
		}
		return outs, errs
	}
	for i := range n {
		if offs[i] < 0 || lens[i] <= 0 || offs[i]+lens[i] > len(buf) {
			// as Scan: nothing to scan in an empty window; a window outside buf is a bug
			if lens[i] == 0 && offs[i] >= 0 && offs[i] <= len(buf) {
				continue
			}
			for j := range errs {
				errs[j] = fmt.Errorf("yara: window %d at %d+%d outside %d bytes", i, offs[i], lens[i], len(buf))
			}
			return outs, errs
		}
	}
	if m.ws == nil {
		m.ws = &windowScan{}
		m.h = cgo.NewHandle(m.ws)
	}
	*m.ws = windowScan{max: m.s.maxMatches, bases: bases, outs: outs}
	coffs, clens := make([]C.size_t, 0, n), make([]C.size_t, 0, n)
	cbases, idx := make([]C.uint64_t, 0, n), make([]int, 0, n)
	for i := range n {
		if lens[i] == 0 {
			continue
		}
		coffs, clens = append(coffs, C.size_t(offs[i])), append(clens, C.size_t(lens[i]))
		cbases, idx = append(cbases, C.uint64_t(bases[i])), append(idx, i)
	}
	if len(idx) < n {
		// dmRuleMatching indexes outs by the position in the call
		m.ws.bases, m.ws.outs = make([]uint64, len(idx)), make([][]detectors.Match, len(idx))
		for j, i := range idx {
			m.ws.bases[j] = bases[i]
		}
	}
	rcs := make([]C.int, len(idx))
	failed := make([]error, len(idx))
	flags := C.int(goyara.ScanFlagsProcessMemory) | C.SCAN_FLAGS_REPORT_RULES_MATCHING | C.SCAN_FLAGS_NO_TRYCATCH
	for j := 0; j < len(idx); {
		k := int(C.dm_scan_each(cs, (*C.uint8_t)(unsafe.Pointer(&buf[0])), &coffs[j], &clens[j], &cbases[j],
			C.size_t(len(idx)-j), flags, C.uintptr_t(m.h), C.size_t(j), &rcs[j]))
		j += max(k, 1)
		if rc := rcs[j-1]; rc != C.ERROR_SUCCESS {
			failed[j-1] = m.s.scanError(goyara.Error(rc)) // the scanner's state is this window's
		}
	}
	runtime.KeepAlive(m.s.s)
	runtime.KeepAlive(buf)
	got := m.ws.outs
	*m.ws = windowScan{}
	for j, i := range idx {
		outs[i], errs[i] = got[j], failed[j]
		for k := range outs[i] {
			outs[i][k].Window = m.window[[2]string{outs[i][k].Namespace, outs[i][k].Rule}]
		}
	}
	return outs, errs
}

// ErrNoBatch: this scanner cannot screen windows in a batch (the rule set has chained
// strings, or the C window path is off); scan each window alone.
var ErrNoBatch = errors.New("yara: rule set cannot be scanned in batches")

// Crossing screens many windows in one libyara scan, for a caller that keeps only the
// string matches crossing offset at of a window (memscan's seam scan). buf holds
// len(bases) windows of win bytes each, window i at guest-physical address bases[i];
// bases must ascend with each window's addresses apart from the next's. hit[i] is true
// when some string of the rule set (private ones too, whatever its rule's condition)
// has a match in window i that starts before at and ends after it.
//
// A window without a hit has no such match when scanned alone either, so Scan would
// report nothing across at: libyara matches strings block by block, each window is
// one block at its own address (offsets, "at N" offsets, fullword checks and regexp
// anchors are those of the window alone), and a match can only be longer, never
// missing, when more blocks follow; rule conditions, which do depend on the other
// windows, are ignored here. Windows with a hit must be scanned alone (Scan) to learn
// which rules match. Two cases would break that, and return ErrNoBatch or an error so
// that the caller scans every window alone: chained strings (libyara links a chain's
// pieces by their offsets in a block, across the blocks of a scan too, and drops
// pieces it thinks too far apart) and a string with more matches than libyara keeps.
func (m *MemoryScanner) Crossing(buf []byte, win int, bases []uint64, at int) ([]bool, error) {
	cs := cScanner(m.s.s)
	if cs == nil {
		return nil, ErrNoBatch
	}
	if m.chained == 0 {
		m.chained = 2
		if C.dm_rules_chained(cs) != 0 {
			m.chained = 1
		}
	}
	if m.chained == 1 {
		return nil, ErrNoBatch
	}
	n := len(bases)
	if n == 0 {
		return nil, nil
	}
	if win <= 0 || len(buf) != n*win || at <= 0 || at >= win {
		return nil, fmt.Errorf("yara: batch of %d windows of %d bytes in %d bytes, cut at %d", n, win, len(buf), at)
	}
	for i := 1; i < n; i++ {
		if bases[i] < bases[i-1]+uint64(win) {
			return nil, fmt.Errorf("yara: batch windows at %#x and %#x overlap or are out of order", bases[i-1], bases[i])
		}
	}
	hit := make([]byte, n)
	flags := C.int(goyara.ScanFlagsProcessMemory) | C.SCAN_FLAGS_NO_TRYCATCH
	rc := C.dm_scan_batch(cs, (*C.uint8_t)(unsafe.Pointer(&buf[0])), C.size_t(win),
		(*C.uint64_t)(unsafe.Pointer(&bases[0])), C.size_t(n), C.size_t(at), flags, (*C.uint8_t)(unsafe.Pointer(&hit[0])))
	runtime.KeepAlive(m.s.s)
	runtime.KeepAlive(buf)
	runtime.KeepAlive(bases)
	if rc != C.ERROR_SUCCESS {
		return nil, m.s.scanError(goyara.Error(rc))
	}
	out := make([]bool, n)
	for i, h := range hit {
		out[i] = h != 0
	}
	return out, nil
}

// dmRuleMatching is libyara's CALLBACK_MSG_RULE_MATCHING for the C window path: it turns
// the rule and its string matches into a detectors.Match as convert does for go-yara's
// MatchRule (same names, metas, tags, order and cut).
//
//export dmRuleMatching
func dmRuleMatching(ctx *C.YR_SCAN_CONTEXT, rule *C.YR_RULE, handle C.uintptr_t, i C.size_t) C.int {
	ws, ok := cgo.Handle(handle).Value().(*windowScan)
	if !ok {
		return C.CALLBACK_ERROR
	}
	base, out := ws.base, &ws.out
	if ws.outs != nil {
		if int(i) >= len(ws.outs) {
			return C.CALLBACK_ERROR
		}
		base, out = ws.bases[i], &ws.outs[i]
	}
	dm := detectors.Match{Rule: C.GoString(C.dm_rule_identifier(rule)), Namespace: C.GoString(C.dm_rule_ns(rule))}
	for t := C.dm_rule_tags(rule); t != nil && *t != 0; {
		s := C.GoString(t)
		dm.Tags = append(dm.Tags, s)
		t = (*C.char)(unsafe.Add(unsafe.Pointer(t), len(s)+1))
	}
	for mt := C.dm_rule_metas(rule); mt != nil; mt = C.dm_meta_next(mt) {
		if dm.Meta == nil {
			dm.Meta = map[string]string{}
		}
		var v string
		switch mt._type {
		case C.META_TYPE_STRING:
			v = C.GoString(C.dm_meta_string(mt))
		case C.META_TYPE_INTEGER:
			v = strconv.FormatInt(int64(mt.integer), 10)
		case C.META_TYPE_BOOLEAN:
			v = strconv.FormatBool(mt.integer != 0)
		default:
			v = fmt.Sprint(nil)
		}
		dm.Meta[C.GoString(C.dm_meta_identifier(mt))] = v
	}
	n := 0
	for s := C.dm_rule_strings(rule); s != nil; s = C.dm_string_next(s) {
		var name string
		for mm := C.dm_first_match(ctx, s); mm != nil; mm = C.dm_next_match(mm) {
			if n >= ws.max {
				dm.Cut++
				continue
			}
			if name == "" {
				name = C.GoString(C.dm_string_identifier(s))
			}
			sm := detectors.StringMatch{Name: name, Offset: uint64(mm.base) + uint64(mm.offset) - base, Length: int(mm.data_length)}
			sm.SetData(C.GoBytes(unsafe.Pointer(mm.data), C.int(mm.data_length)))
			dm.Strings = append(dm.Strings, sm)
			n++
		}
	}
	*out = append(*out, dm)
	return C.CALLBACK_CONTINUE
}

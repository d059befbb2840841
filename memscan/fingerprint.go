package memscan

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// FingerprintPages is how many pages a fingerprint samples.
const FingerprintPages = 64

const pageSize = 4096

// Fingerprint identifies a guest's memory at one instant (while the guest is stopped): its
// layout and the hashes of sampled pages. The supervisor takes one at `prepare` and checks
// it at `resume`, so that after a migration it knows it remapped the same guest.
type Fingerprint struct {
	Ranges []Range    `json:"ranges"`
	Pages  []PageHash `json:"pages"`
}

// PageHash is the SHA-256 (first 8 bytes) of one sampled page.
type PageHash struct {
	GPA  uint64 `json:"gpa"`
	Hash uint64 `json:"hash"`
}

// ErrGuestChanged is matched by a *GuestChangedError.
var ErrGuestChanged = errors.New("guest memory does not match its fingerprint")

// GuestChangedError says where a source differs from a fingerprint.
type GuestChangedError struct {
	Reason string
}

func (e *GuestChangedError) Error() string   { return ErrGuestChanged.Error() + ": " + e.Reason }
func (e *GuestChangedError) Is(t error) bool { return t == ErrGuestChanged }

// TakeFingerprint samples up to FingerprintPages non-zero pages spread evenly over src's
// ranges (zero pages carry no identity; if too few non-zero pages exist, zero pages are used).
func TakeFingerprint(src Source) (Fingerprint, error) {
	ranges, err := normalize(src.Ranges())
	if err != nil {
		return Fingerprint{}, err
	}
	fp := Fingerprint{Ranges: ranges}
	total := TotalSize(ranges) / pageSize
	if total == 0 {
		return fp, nil
	}
	slots := min(uint64(FingerprintPages), total)
	stride := total / slots
	page := make([]byte, pageSize)
	for s := range slots {
		ph, err := samplePage(src, ranges, page, s*stride, max(stride/samplesPerSlot, 1), total)
		if err != nil {
			return Fingerprint{}, err
		}
		fp.Pages = append(fp.Pages, ph)
	}
	return fp, nil
}

// samplesPerSlot is how many pages a slot probes for a non-zero one, so that a mostly
// zero guest still yields pages with identity.
const samplesPerSlot = 8

// samplePage returns the first non-zero page among samplesPerSlot pages from page index
// first, step apart (below total), or the first of them if all are zero.
func samplePage(src Source, ranges []Range, page []byte, first, step, total uint64) (PageHash, error) {
	var chosen PageHash
	for i := range uint64(samplesPerSlot) {
		idx := first + i*step
		if idx >= total {
			break
		}
		gpa := pageAddr(ranges, idx)
		if _, err := src.ReadAt(page, int64(gpa)); err != nil {
			return PageHash{}, fmt.Errorf("reading page %#x: %w", gpa, err)
		}
		ph := PageHash{GPA: gpa, Hash: hashPage(page)}
		if i == 0 {
			chosen = ph
		}
		if !allZero(page) {
			return ph, nil
		}
	}
	return chosen, nil
}

var zeroPage [pageSize]byte

func allZero(b []byte) bool { return bytes.Equal(b, zeroPage[:len(b)]) }

// Verify checks that src has the fingerprint's layout and sampled page contents.
func (fp Fingerprint) Verify(src Source) error {
	ranges, err := normalize(src.Ranges())
	if err != nil {
		return err
	}
	if len(ranges) != len(fp.Ranges) {
		return &GuestChangedError{Reason: fmt.Sprintf("layout has %d ranges, fingerprint %d", len(ranges), len(fp.Ranges))}
	}
	for i := range ranges {
		if ranges[i] != fp.Ranges[i] {
			return &GuestChangedError{Reason: fmt.Sprintf("range %d is %v, fingerprint %v", i, ranges[i], fp.Ranges[i])}
		}
	}
	page := make([]byte, pageSize)
	for _, p := range fp.Pages {
		if _, err := src.ReadAt(page, int64(p.GPA)); err != nil {
			return fmt.Errorf("reading page %#x: %w", p.GPA, err)
		}
		if h := hashPage(page); h != p.Hash {
			return &GuestChangedError{Reason: fmt.Sprintf("page %#x differs", p.GPA)}
		}
	}
	return nil
}

func hashPage(b []byte) uint64 {
	s := sha256.Sum256(b)
	return binary.LittleEndian.Uint64(s[:8])
}

// pageAddr returns the address of the idx-th page counting through ranges in order.
func pageAddr(ranges []Range, idx uint64) uint64 {
	for _, r := range ranges {
		n := r.Size / pageSize
		if idx < n {
			return r.GPA + idx*pageSize
		}
		idx -= n
	}
	last := ranges[len(ranges)-1]
	return last.GPA
}

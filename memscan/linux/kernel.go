package linux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/domainm/domainm/memscan"
)

// x86-64 link-time defaults (arch/x86/include/asm/page_64_types.h, CONFIG_PHYSICAL_START):
// the KASLR shifts are measured from them.
const (
	startKernelMap  = 0xffffffff80000000 // __START_KERNEL_map
	defaultTextVA   = 0xffffffff81000000 // __START_KERNEL
	defaultTextPA   = 0x1000000          // CONFIG_PHYSICAL_START
	maxBannerLen    = 512
	bannerPrefix    = "Linux version "
	kernelImageSpan = 1 << 30 // the kernel image mapping (KERNEL_IMAGE_SIZE) is at most 1 GiB
)

// Kernel is the layout of a Linux guest's kernel, derived from guest-physical memory.
type Kernel struct {
	Banner    string // linux_banner without its newline
	Release   string // e.g. "6.1.0-57-amd64"
	BannerPA  uint64 // physical address of linux_banner
	TextVA    uint64 // runtime virtual address of _text
	TextPA    uint64 // physical address of _text
	VirtShift int64  // KASLR virtual shift: TextVA - 0xffffffff81000000 (the kernel's "Kernel Offset")
	PhysShift int64  // KASLR physical shift: TextPA - 0x1000000
	// PGD is the physical address of the kernel's top-level page table (init_top_pgt,
	// a.k.a. swapper_pg_dir); Levels is 4 or 5 (LA57).
	PGD    uint64
	Levels int
	// PageOffset is the base of the direct map of physical memory (page_offset_base,
	// randomised by CONFIG_RANDOMIZE_MEMORY), 0 if the symbol is missing.
	PageOffset uint64
	Syms       *Kallsyms
	// Took is how long Find took.
	Took time.Duration

	p  *phys
	as *AddressSpace
}

// Find derives the kernel's layout from guest-physical memory alone: it finds the
// kallsyms tables by their structure, linux_banner by its text, the physical shift by
// matching the two, and the page-table root (init_top_pgt), which it accepts only if
// translating linux_banner's virtual address through it lands on the banner found.
func Find(src memscan.Source) (*Kernel, error) {
	t0 := time.Now()
	p := newPhys(src)
	syms, err := findKallsyms(p)
	if err != nil {
		return nil, err
	}
	k := &Kernel{p: p, Syms: syms}
	vBanner, err := syms.Addr("linux_banner")
	if err != nil {
		return nil, err
	}
	if k.TextVA, err = syms.Addr("_text"); err != nil {
		return nil, err
	}
	vPGD, err := syms.Addr("init_top_pgt")
	if err != nil {
		if vPGD, err = syms.Addr("swapper_pg_dir"); err != nil {
			return nil, errors.New("kernel symbols init_top_pgt and swapper_pg_dir not in the guest's kallsyms")
		}
	}
	if vBanner < k.TextVA || vPGD < k.TextVA || vBanner-k.TextVA > kernelImageSpan || vPGD-k.TextVA > kernelImageSpan {
		return nil, fmt.Errorf("linux_banner %#x or init_top_pgt %#x not in the kernel image at _text %#x", vBanner, vPGD, k.TextVA)
	}
	cands, err := bannerCandidates(p)
	if err != nil {
		return nil, err
	}
	var tried []string
	for _, pa := range cands {
		if pa < vBanner-k.TextVA {
			continue
		}
		textPA := pa - (vBanner - k.TextVA)
		pgd := textPA + (vPGD - k.TextVA)
		for _, levels := range k.levelOrder(textPA) {
			as := &AddressSpace{p: p, Root: pgd, Levels: levels}
			m, err := as.Translate(vBanner)
			if err != nil || m.PA != pa {
				tried = append(tried, fmt.Sprintf("banner at %#x with %d-level root %#x: %v", pa, levels, pgd, errOr(err, fmt.Sprintf("translates to %#x", m.PA))))
				continue
			}
			k.BannerPA, k.TextPA, k.PGD, k.Levels, k.as = pa, textPA, pgd, levels, as
			break
		}
		if k.as != nil {
			break
		}
	}
	if k.as == nil {
		return nil, fmt.Errorf("no linux_banner (%d candidates) consistent with kallsyms and init_top_pgt: %s", len(cands), strings.Join(tried, "; "))
	}
	b := make([]byte, maxBannerLen)
	if err := k.as.Read(vBanner, b); err != nil {
		return nil, fmt.Errorf("reading linux_banner: %w", err)
	}
	b, _, _ = bytes.Cut(b, []byte{0})
	k.Banner = strings.TrimRight(string(b), "\n")
	if f := strings.Fields(k.Banner); len(f) >= 3 {
		k.Release = f[2]
	}
	k.VirtShift = int64(k.TextVA - defaultTextVA)
	k.PhysShift = int64(k.TextPA - defaultTextPA)
	if v, err := syms.Addr("page_offset_base"); err == nil {
		if k.PageOffset, err = k.U64(v); err != nil {
			return nil, fmt.Errorf("reading page_offset_base: %w", err)
		}
	}
	k.Took = time.Since(t0)
	return k, nil
}

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

// levelOrder tries the depth the kernel says it uses first (__pgtable_l5_enabled,
// read through the kernel image's linear mapping), then the other.
func (k *Kernel) levelOrder(textPA uint64) []int {
	if v, ok := k.Syms.Lookup("__pgtable_l5_enabled"); ok && v.Addr >= k.TextVA && v.Addr-k.TextVA < kernelImageSpan {
		var b [4]byte
		if k.p.read(textPA+v.Addr-k.TextVA, b[:]) == nil && b[0] == 1 {
			return []int{5, 4}
		}
	}
	return []int{4, 5}
}

// bannerCandidates returns the physical addresses of "Linux version " strings that end
// with a newline and NUL (as linux_banner does; copies in the log buffer do not).
func bannerCandidates(p *phys) ([]uint64, error) {
	var out []uint64
	const win = 4 << 20
	pre := []byte(bannerPrefix)
	for _, r := range p.ranges {
		buf := make([]byte, min(win+maxBannerLen, r.Size))
		for off := uint64(0); off < r.Size; off += win {
			n := min(uint64(len(buf)), r.Size-off)
			b := buf[:n]
			if err := p.readAll(r.GPA+off, b); err != nil {
				return nil, err
			}
			for i := 0; i < len(b) && uint64(i) < win; {
				j := bytes.Index(b[i:], pre)
				if j < 0 || uint64(i+j) >= win {
					break
				}
				s := b[i+j:]
				if e := bytes.IndexByte(s[:min(len(s), maxBannerLen)], 0); e > 0 && s[e-1] == '\n' {
					out = append(out, r.GPA+off+uint64(i+j))
				}
				i += j + 1
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no linux_banner (\"Linux version ...\\n\") in guest memory")
	}
	return out, nil
}

// AddressSpace returns the kernel's address space (init_top_pgt).
func (k *Kernel) AddressSpace() *AddressSpace { return k.as }

// UserSpace returns the address space rooted at the physical page table pgdPA.
func (k *Kernel) UserSpace(pgdPA uint64) *AddressSpace {
	return &AddressSpace{p: k.p, Root: pgdPA, Levels: k.Levels}
}

// Translate translates a kernel virtual address.
func (k *Kernel) Translate(va uint64) (Mapping, error) { return k.as.Translate(va) }

// Read reads kernel virtual memory.
func (k *Kernel) Read(va uint64, b []byte) error { return k.as.Read(va, b) }

// U64 reads a little-endian u64 at kernel virtual address va.
func (k *Kernel) U64(va uint64) (uint64, error) {
	var b [8]byte
	if err := k.as.Read(va, b[:]); err != nil {
		return 0, err
	}
	return le.Uint64(b[:]), nil
}

var le = binary.LittleEndian

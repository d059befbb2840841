package cli

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/domainm/domainm/diskscan"
	"github.com/domainm/domainm/memscan/linux"
)

// The kernel-integrity half of inspect: the checks' report and the optional symbol
// cross-check (--symbols FILE, --disk IMG).

// checkFindings counts the findings of all checks.
func checkFindings(rs []linux.CheckResult) int {
	n := 0
	for _, r := range rs {
		n += len(r.Findings)
	}
	return n
}

// symbolsFile reads an operator's System.map.
func symbolsFile(k *linux.Kernel, path string) (*linux.SymbolCheck, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--symbols: %w", err)
	}
	defer f.Close()
	syms, bad, err := linux.ParseSystemMap(f)
	if err != nil {
		return nil, fmt.Errorf("--symbols %s: %w", path, err)
	}
	c := k.CompareSymbols(path, syms, bad)
	return &c, nil
}

// symbolsDisk reads /boot/System.map-RELEASE from the target's disk image (never
// mounted: through diskscan), on the root filesystem or a separate /boot partition.
func symbolsDisk(k *linux.Kernel, image string) (*linux.SymbolCheck, error) {
	fsys, closer, err := diskscan.OpenVolume(image, -1)
	if err != nil {
		return nil, fmt.Errorf("--disk: %w", err)
	}
	defer closer.Close()
	var errs []string
	for _, p := range []string{"/boot/System.map-" + k.Release, "/System.map-" + k.Release} {
		r, err := fsys.Open(p)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", p, err))
			continue
		}
		syms, bad, err := linux.ParseSystemMap(r)
		r.Close()
		if err != nil {
			return nil, fmt.Errorf("--disk %s: %s: %w", image, p, err)
		}
		c := k.CompareSymbols(image+":"+p, syms, bad)
		return &c, nil
	}
	return nil, fmt.Errorf("--disk %s: no System.map for kernel %s (%s)", image, k.Release, strings.Join(errs, "; "))
}

// printChecks prints the checks' results, then the symbol cross-check.
func printChecks(w io.Writer, rs []linux.CheckResult, sc *linux.SymbolCheck) {
	fmt.Fprintf(w, "\nkernel integrity checks:\n")
	for _, r := range rs {
		switch {
		case r.Err != "":
			fmt.Fprintf(w, "  %-14s FAILED to run: %s\n", r.Check, r.Err)
		case len(r.Findings) == 0:
			fmt.Fprintf(w, "  %-14s ok      %s (%.3fs)\n", r.Check, r.Coverage, r.Took.Seconds())
		default:
			fmt.Fprintf(w, "  %-14s %d FOUND %s (%.3fs)\n", r.Check, len(r.Findings), r.Coverage, r.Took.Seconds())
		}
		for _, f := range r.Findings {
			fmt.Fprintf(w, "    - %s\n", f.Summary)
		}
	}
	if sc == nil {
		return
	}
	fmt.Fprintf(w, "\nsymbols cross-check with %s: %d symbols", sc.File, sc.Symbols)
	if sc.Symbols == 0 {
		fmt.Fprintf(w, " (%d lines that are not symbols: a placeholder? Debian ships the real System.map in the linux-image-*-dbg package); the guest's own kallsyms were used\n", sc.BadLines)
	} else {
		fmt.Fprintf(w, ", %d also in the guest's kallsyms, %d at the same address after the KASLR shift\n", sc.Compared, sc.Agree)
	}
	for _, d := range sc.Differ {
		fmt.Fprintf(w, "  differs: %s\n", d)
	}
	for _, u := range sc.Used {
		if u.Status != "agree" {
			fmt.Fprintf(w, "  %s: %s\n", u.Name, u.Status)
		}
	}
	if !slices.ContainsFunc(sc.Used, func(u linux.UsedSymbol) bool { return u.Status != "agree" }) {
		fmt.Fprintf(w, "  every symbol inspect reads agrees\n")
	}
}

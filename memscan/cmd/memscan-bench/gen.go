package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
)

const page = 4096

// makeRules returns a rule file with n rules and the strings planted for every 12th rule.
func makeRules(rng *rand.Rand, n int) (string, []string) {
	var b strings.Builder
	var planted []string
	word := func(k int) string {
		s := make([]byte, k)
		for i := range s {
			s[i] = byte('a' + rng.IntN(26))
		}
		return string(s)
	}
	hexBytes := func(k int) string {
		parts := make([]string, k)
		for i := range parts {
			parts[i] = fmt.Sprintf("%02X", 1+rng.IntN(254))
		}
		return strings.Join(parts, " ")
	}
	for i := range n {
		name := fmt.Sprintf("bench_%03d", i)
		a := "implant-" + word(10)
		fmt.Fprintf(&b, "rule %s : bench {\n  meta:\n    description = \"synthetic rule %d\"\n    severity = \"%s\"\n  strings:\n", name, i, []string{"low", "medium", "high"}[i%3])
		fmt.Fprintf(&b, "    $a = \"%s\" ascii wide\n", a)
		fmt.Fprintf(&b, "    $b = \"%s\" nocase\n", "Beacon"+word(8))
		fmt.Fprintf(&b, "    $c = { %s ?? ?? [2-8] %s }\n", hexBytes(4), hexBytes(4))
		if i%8 == 0 {
			fmt.Fprintf(&b, "    $d = /c2-%s\\.[a-z]{2,6}\\/[0-9]{2,4}/\n", word(6))
		}
		b.WriteString("  condition:\n    any of them\n}\n\n")
		if i%12 == 0 {
			planted = append(planted, a)
		}
	}
	return b.String(), planted
}

// makeImage writes a guest-memory-like image of size bytes (dense: without zero pages)
// and plants each string 3 times, one of them across a 1 MiB block boundary. It returns a description of the mix.
func makeImage(path string, size int64, rng *rand.Rand, planted []string, dense bool) (string, error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() == size {
		return "reused from an earlier run", nil
	}
	text := corpus([]string{"/usr/share/doc", "/usr/share/common-licenses", "/etc"}, isText, 64<<20)
	elf := corpus([]string{"/usr/bin", "/usr/lib/x86_64-linux-gnu"}, isELF, 128<<20)
	if len(text) < 1<<20 || len(elf) < 1<<20 {
		return "", fmt.Errorf("too little text (%d) or ELF (%d) content on this machine", len(text), len(elf))
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return "", err
	}
	counts := map[string]int64{}
	buf := make([]byte, 512*page)
	var off int64
	for off < size {
		runPages := int64(1 + rng.IntN(512))
		n := min(runPages*page, size-off)
		kind := pick(rng)
		for dense && kind == "zero" {
			kind = pick(rng)
		}
		counts[kind] += n
		chunk := buf[:n]
		switch kind {
		case "zero":
			off += n
			continue
		case "random":
			for i := 0; i+8 <= len(chunk); i += 8 {
				v := rng.Uint64()
				for j := range 8 {
					chunk[i+j] = byte(v >> (8 * j))
				}
			}
		case "text":
			start := rng.IntN(len(text) - len(chunk))
			copy(chunk, text[start:])
		case "elf":
			start := rng.IntN(len(elf)-len(chunk)) &^ (page - 1)
			copy(chunk, elf[start:])
		}
		if _, err := f.WriteAt(chunk, off); err != nil {
			return "", err
		}
		off += n
	}
	for i, s := range planted {
		at := []int64{rng.Int64N(size - 64), rng.Int64N(size - 64), (int64(1+i) << 20) - int64(len(s)/2)}
		for _, a := range at {
			if _, err := f.WriteAt([]byte(s), a%(size-int64(len(s)))); err != nil {
				return "", err
			}
		}
	}
	pct := func(k string) float64 { return 100 * float64(counts[k]) / float64(size) }
	return fmt.Sprintf("%.0f%% zero, %.0f%% random, %.0f%% text, %.0f%% ELF pages",
		pct("zero"), pct("random"), pct("text"), pct("elf")), f.Sync()
}

func pick(rng *rand.Rand) string {
	switch x := rng.IntN(100); {
	case x < 55:
		return "zero"
	case x < 70:
		return "random"
	case x < 85:
		return "text"
	}
	return "elf"
}

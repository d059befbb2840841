package cli

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/domainm/domainm/appliance/internal/config"
)

// TestUnitsAsInConfig: sizes and durations on the command line are read as the
// configuration file reads them (one parser, internal/units). Each size is given both
// as scan-memory --block-size on a real memory file and as memory.block_size in a
// configuration; both end with the same number of bytes (the summary's block_size, or
// the same "got N bytes" when out of bounds), IEC units being powers of 1024, SI units
// of 1000 and a bare number bytes. A duration without a unit says "needs a unit" in
// both; on the command line that is one line and exit 64, for every duration flag.
func TestUnitsAsInConfig(t *testing.T) {
	f := newMemFixture(t, 2<<20, map[int]string{0x100: "EVIL-MARK"}, `rule plain { strings: $a = "EVIL-MARK" condition: $a }`)
	got := regexp.MustCompile(`block.size: expected [^\n]*got (\d+) bytes`)
	for v, want := range map[string]int64{
		"1MiB": 1 << 20, "1M": 1 << 20, "1024KiB": 1 << 20, "1048576": 1 << 20, "64KiB": 64 << 10, "256k": 256 << 10,
		"1MB": 1e6, "100000": 1e5, "2GiB": 2 << 30, "4kB": 4000,
	} {
		// The command line.
		code, _, errOut := diskCLI(t, "scan-memory", "--source", "file:"+f.img, "--rules", f.rules, "--json", "--quiet", "--block-size", v)
		var cli int64 = -1
		if code == ExitFindings {
			var sum map[string]any
			if err := json.Unmarshal([]byte(lastLine(errOut)), &sum); err == nil {
				cli = int64(sum["block_size"].(float64))
			}
		} else if m := got.FindStringSubmatch(errOut); m != nil && code == ExitUsage && strings.Count(errOut, "\n") == 1 {
			fmt.Sscan(m[1], &cli)
		}
		// The file.
		cfg, err := config.Parse("c.toml", []byte(fmt.Sprintf("[target]\nname = \"a\"\nmemory = \"file:/x\"\n[memory]\nblock_size = %q\n", v)))
		var file int64 = -1
		if err == nil {
			file = int64(cfg.Memory.BlockSize)
		} else if m := got.FindStringSubmatch(err.Error()); m != nil {
			fmt.Sscan(m[1], &file)
		}
		if cli != want || file != want {
			t.Errorf("%q: command line %d bytes (exit %d: %q), config file %d bytes (%v); want %d", v, cli, code, errOut, file, err, want)
		}
	}
	_, err := config.Parse("c.toml", []byte("[target]\nname = \"a\"\nmemory = \"file:/x\"\n[memory]\nyara_timeout = 30\n"))
	const needs = `needs a unit: 30 is a bare number; write a duration such as "30s", "30m" or "30h"`
	if err == nil || !strings.Contains(err.Error(), needs) {
		t.Errorf("config yara_timeout = 30: %v", err)
	}
	for _, args := range [][]string{
		{"scan-memory", "--source", "file:" + f.img, "--rules", f.rules, "--timeout", "30"},
		{"alert", "test", "--socket", "/nonexistent", "--timeout", "30"},
	} {
		code, out, errOut := diskCLI(t, args...)
		if code != ExitUsage || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, needs) {
			t.Errorf("%q: exit %d, stderr %q; want 64 and %q", args, code, errOut, needs)
		}
	}
	// Sizes where the command takes a size in bytes: --max-file-size, --overlap.
	for _, args := range [][]string{
		{"scan-disk", "--image", "/nonexistent", "--rules", f.rules, "--max-file-size", "64 parsecs"},
		{"check", "--image", "/nonexistent", "--db", "/nonexistent", "--max-file-size", "1.5MiB"},
		{"scan-memory", "--source", "file:" + f.img, "--rules", f.rules, "--overlap", "4Q"},
	} {
		code, _, errOut := diskCLI(t, args...)
		if code != ExitUsage || !strings.Contains(errOut, "expected a size such as 4194304 (bytes), \"4MiB\"") {
			t.Errorf("%q: exit %d, stderr %q; want 64 and the size's form", args, code, errOut)
		}
	}
	code, _, errOut := diskCLI(t, "scan-memory", "--source", "file:"+f.img, "--rules", f.rules, "--json", "--quiet", "--block-size", "64KiB", "--overlap", "32KiB")
	if code != ExitUsage || !strings.Contains(errOut, "--overlap: expected at least 1 byte and less than half of --block-size (32768 bytes), got 32768 bytes") {
		t.Errorf("--overlap of half the block: exit %d, %q", code, errOut)
	}
}

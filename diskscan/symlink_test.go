package diskscan

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestInlineDataSymlinks: with inline_data, mke2fs -d stores a symlink target of 60 to
// about 100 bytes in i_block plus the system.data xattr (inode flag 0x10000000). Lstat,
// Walk and path resolution must read the whole target, as debugfs does; shorter targets
// are fast symlinks and longer ones sit in a block.
func TestInlineDataSymlinks(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	must(t, os.MkdirAll(filepath.Join(src, "dd"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "dd", "f"), []byte("reached"), 0o644))
	t80 := strings.Repeat("./", 39) + "dd" // 80 bytes naming the directory /dd
	targets := map[string]string{
		"/l30":  strings.Repeat("y", 30),
		"/l60":  strings.Repeat("s", 60),
		"/l80":  t80,
		"/l100": strings.Repeat("w", 100),
		"/l300": strings.Repeat("z", 300),
	}
	for p, tg := range targets {
		must(t, os.Symlink(tg, filepath.Join(src, p)))
	}
	img := filepath.Join(dir, "inline.raw")
	run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-O", "inline_data,^has_journal", "-d", src, img, "8M")
	out := run(t, "debugfs", "-R", "stat /l80", img)
	if !strings.Contains(out, "Flags: 0x10000000") || !strings.Contains(out, "system.data") {
		t.Fatalf("/l80 is not an inline-data symlink; debugfs stat:\n%s", out)
	}

	fs, closer, err := OpenVolumeFormat(img, "raw", -1)
	must(t, err)
	defer closer.Close()
	for p, want := range targets {
		if dbg := debugfsLinkTarget(t, img, p); dbg != want {
			t.Fatalf("%s: debugfs says %q, the source %q", p, dbg, want)
		}
		e, err := fs.Lstat(p)
		if err != nil {
			t.Errorf("Lstat %s: %v", p, err)
			continue
		}
		if e.Type != Symlink || e.LinkTarget != want {
			t.Errorf("Lstat %s: type %v target %q, want %q", p, e.Type, e.LinkTarget, want)
		}
		if _, ok := e.Xattrs["system.data"]; ok {
			t.Errorf("Lstat %s: system.data (inline contents) reported as an xattr", p)
		}
	}
	got, _ := walkAll(t, fs)
	for p, want := range targets {
		if e := got[p]; e == nil || e.LinkTarget != want {
			t.Errorf("walk %s: %+v, want target %q", p, e, want)
		}
	}
	// Resolution through the inline symlink in the middle of a path.
	if e, err := fs.Lstat("/l80/f"); err != nil || e.Type != Regular || e.Size != int64(len("reached")) {
		t.Errorf("Lstat /l80/f (through the link): %+v, %v", e, err)
	}
}

// debugfsLinkTarget is debugfs's reading of a symlink's target: "Fast link dest" for
// fast and inline symlinks, the data block (cat) otherwise.
func debugfsLinkTarget(t *testing.T, img, p string) string {
	t.Helper()
	out := debugfsOut(t, "stat "+p, img)
	if i := strings.Index(out, "Fast link dest: "); i >= 0 {
		line := out[i+len("Fast link dest: "):]
		line = line[:strings.IndexByte(line, '\n')]
		s, err := strconv.Unquote(line)
		must(t, err)
		return s
	}
	return debugfsOut(t, "cat "+p, img)
}

// debugfsOut runs one debugfs request and returns its standard output (the version
// banner goes to standard error).
func debugfsOut(t *testing.T, req, img string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, img).Output()
	if err != nil {
		t.Fatalf("debugfs -R %q %s: %v", req, img, err)
	}
	return string(out)
}

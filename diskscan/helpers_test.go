package diskscan

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/diskscan/ext4test"
	"github.com/domainm/domainm/image/testenv"
)

// run runs a tool and fails the test with its output on error.
var run = testenv.Run

const bigSparseSize = 5<<30 + 12345 // > 4 GiB, mostly a hole

// makeTree fills dir with the cases the reader must get right and returns the paths of
// the entries that need an xattr set by debugfs afterwards.
func makeTree(t testing.TB, dir string) {
	t.Helper()
	w := func(p string, data []byte, mode uint32) { ext4test.WriteFile(t, dir, p, data, mode) }
	rnd := rand.New(rand.NewSource(1))
	randBytes := func(n int) []byte { b := make([]byte, n); rnd.Read(b); return b }
	w("empty", nil, 0o644)
	w("tiny", []byte("x"), 0o600)
	w("inline59", bytes.Repeat([]byte("i"), 59), 0o644)
	w("small", randBytes(100), 0o644)
	w("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	w("bin/su", randBytes(5000), 0o4755)
	w("bin/wall", randBytes(7000), 0o2755)
	w("bin/big", randBytes(3<<20+17), 0o755)
	w("data/ids", randBytes(10), 0o640)
	if err := os.Chown(filepath.Join(dir, "data/ids"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(dir, "bin/wall"), 100000, 70000); err != nil { // high 16 bits
		t.Fatal(err)
	}
	must(t, syscall.Chmod(filepath.Join(dir, "bin/wall"), 0o2755)) // chown cleared setgid
	must(t, os.Mkdir(filepath.Join(dir, "tmp"), 0o755))
	must(t, os.Chmod(filepath.Join(dir, "tmp"), 0o1777))
	must(t, os.Mkdir(filepath.Join(dir, "emptydir"), 0o700))
	must(t, os.Symlink("etc/passwd", filepath.Join(dir, "fastlink")))
	must(t, os.Symlink(strings.Repeat("long/", 40)+"target", filepath.Join(dir, "slowlink")))
	must(t, os.Link(filepath.Join(dir, "bin/su"), filepath.Join(dir, "bin/su-hardlink")))
	must(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	must(t, syscall.Mknod(filepath.Join(dir, "null"), syscall.S_IFCHR|0o666, 1<<8|3))
	for i := 0; i < 2100; i++ { // large enough for an htree once e2fsck -D indexes it
		w(fmt.Sprintf("many/file-with-a-longish-name-%05d", i), []byte(fmt.Sprint(i)), 0o644)
	}
	w("a/b/c/d/e/f/g/deep", []byte("deep"), 0o644)
	sparse := func(p string, size int64, n int, at ...int64) {
		f, err := os.Create(filepath.Join(dir, p))
		must(t, err)
		for _, off := range at {
			_, err := f.WriteAt(randBytes(n), off)
			must(t, err)
		}
		must(t, f.Truncate(size))
		must(t, f.Close())
	}
	sparse("sparse", 10<<20, 9000, 0, 8<<20)
	var islands []int64 // > 4*340 extents: a depth-2 extent tree with 4 KiB blocks
	for i := int64(0); i < 1500; i++ {
		islands = append(islands, i*2*4096)
	}
	sparse("fragmented", 1500*2*4096, 4096, islands...)
	sparse("bigsparse", bigSparseSize, 9000, 4<<30+4096*3+5, 5<<30)
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	must(t, os.Chtimes(filepath.Join(dir, "etc/passwd"), old, old))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var bigXattr = bytes.Repeat([]byte("0123456789abcdef"), 40)

// capValue is a VFS_CAP_REVISION_2 security.capability granting cap_net_raw.
var capValue = []byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// mkfs builds an ext4 filesystem image of sizeMiB from dir, indexes directories (htree)
// and adds xattrs with debugfs.
func mkfs(t testing.TB, img, dir string, sizeMiB int, opts ...string) {
	t.Helper()
	ext4test.Mkfs(t, img, dir, sizeMiB, append([]string{"-U", "clear"}, opts...)...)
	capFile := filepath.Join(t.TempDir(), "cap")
	must(t, os.WriteFile(capFile, capValue, 0o600))
	run(t, "debugfs", "-w", "-R", "ea_set -f "+capFile+" /bin/big security.capability", img)
	run(t, "debugfs", "-w", "-R", "ea_set /small user.note hello", img)
	// Too big for the inode: goes to an xattr block (checksummed with metadata_csum).
	bigFile := filepath.Join(t.TempDir(), "bigxattr")
	must(t, os.WriteFile(bigFile, bigXattr, 0o600))
	run(t, "debugfs", "-w", "-R", "ea_set -f "+bigFile+" /etc/passwd user.big", img)
	ext4test.Fsck(t, img, "-D") // -D builds htree indexes for large directories
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return 255
}

// fileInfo is what the source tree says about one path.
type fileInfo struct {
	typ      FileType
	mode     uint32
	uid, gid uint32
	size     int64
	mtime    int64
	ino      uint64 // source inode, to compare hard-link groups
	target   string
	sha      string
}

func sourceTree(t testing.TB, dir string) map[string]fileInfo {
	t.Helper()
	out := map[string]fileInfo{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		gp := "/" + filepath.ToSlash(rel)
		if rel == "." {
			gp = "/"
		}
		st := fi.Sys().(*syscall.Stat_t)
		info := fileInfo{mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid, size: fi.Size(),
			mtime: fi.ModTime().Unix(), ino: st.Ino}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			info.typ = Regular
			if fi.Size() < 64<<20 {
				b, err := os.ReadFile(p)
				must(t, err)
				s := sha256.Sum256(b)
				info.sha = hex.EncodeToString(s[:])
			}
		case syscall.S_IFDIR:
			info.typ = Dir
			info.size = 0
		case syscall.S_IFLNK:
			info.typ = Symlink
			info.target, _ = os.Readlink(p)
		case syscall.S_IFIFO:
			info.typ = FIFO
		case syscall.S_IFCHR:
			info.typ = CharDev
		}
		out[gp] = info
		return nil
	})
	must(t, err)
	return out
}

// walkAll walks fs and returns every entry by path; a per-path error fails the test.
func walkAll(t testing.TB, fs FS) (map[string]*Entry, []string) {
	t.Helper()
	got := map[string]*Entry{}
	var order []string
	err := fs.Walk(context.Background(), "/", func(p string, e *Entry, err error) error {
		if err != nil {
			t.Errorf("walk %s: %v", p, err)
			return nil
		}
		got[p] = e
		order = append(order, p)
		return nil
	})
	must(t, err)
	return got, order
}

func hashFile(t testing.TB, fs FS, p string) string {
	t.Helper()
	r, err := fs.Open(p)
	must(t, err)
	defer r.Close()
	h := sha256.New()
	_, err = io.Copy(h, r)
	must(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

// compareTree checks a walk of fs against the source tree, attribute by attribute.
func compareTree(t *testing.T, fs FS, src map[string]fileInfo, srcDir string) {
	t.Helper()
	got, order := walkAll(t, fs)
	delete(got, "/lost+found")
	for i := 1; i < len(order); i++ {
		if filepath.Dir(order[i]) == filepath.Dir(order[i-1]) && order[i] < order[i-1] {
			t.Errorf("walk order: %s after %s", order[i], order[i-1])
		}
	}
	for p := range got {
		if _, ok := src[p]; !ok && !strings.HasPrefix(p, "/lost+found") {
			t.Errorf("%s: in image, not in source", p)
		}
	}
	linkGroups := map[uint64]uint64{} // source inode → image inode
	for p, want := range src {
		e, ok := got[p]
		if !ok {
			t.Errorf("%s: missing from walk", p)
			continue
		}
		if e.Type != want.typ || e.Mode != want.mode || e.UID != want.uid || e.GID != want.gid {
			t.Errorf("%s: got type %v mode %#o uid %d gid %d, want %v %#o %d %d", p, e.Type, e.Mode, e.UID, e.GID, want.typ, want.mode, want.uid, want.gid)
		}
		if want.typ != Dir && e.Size != want.size {
			t.Errorf("%s: size %d, want %d", p, e.Size, want.size)
		}
		if want.typ != Dir && e.Mtime.Unix() != want.mtime {
			t.Errorf("%s: mtime %v, want %v", p, e.Mtime, time.Unix(want.mtime, 0))
		}
		if e.LinkTarget != want.target {
			t.Errorf("%s: link target %q, want %q", p, e.LinkTarget, want.target)
		}
		if want.typ == Regular {
			if prev, ok := linkGroups[want.ino]; ok && prev != e.Inode {
				t.Errorf("%s: hard link has inode %d, its twin %d", p, e.Inode, prev)
			}
			linkGroups[want.ino] = e.Inode
			if want.sha != "" {
				if h := hashFile(t, fs, p); h != want.sha {
					t.Errorf("%s: sha256 %s, want %s", p, h, want.sha)
				}
			}
		}
	}
	if e := got["/bin/su"]; e != nil && e.Nlink != 2 {
		t.Errorf("/bin/su: nlink %d, want 2", e.Nlink)
	}
	if e := got["/bin/big"]; e == nil || !bytes.Equal(e.Xattrs["security.capability"], capValue) {
		t.Errorf("/bin/big: security.capability = %x, want %x", e.Xattrs["security.capability"], capValue)
	}
	if e := got["/small"]; e == nil || string(e.Xattrs["user.note"]) != "hello" {
		t.Errorf("/small: user.note = %q", e.Xattrs["user.note"])
	}
	if e := got["/etc/passwd"]; e == nil || !bytes.Equal(e.Xattrs["user.big"], bigXattr) {
		t.Errorf("/etc/passwd: user.big (xattr block) = %q", e.Xattrs["user.big"])
	}
	checkBigSparse(t, fs, filepath.Join(srcDir, "bigsparse"))
}

// checkBigSparse reads the data islands of the > 4 GiB sparse file and a hole, instead
// of hashing 5 GiB in every variant.
func checkBigSparse(t *testing.T, fs FS, srcFile string) {
	t.Helper()
	src, err := os.Open(srcFile)
	must(t, err)
	defer src.Close()
	r, err := fs.Open("/bigsparse")
	must(t, err)
	defer r.Close()
	ra, ok := r.(io.ReaderAt)
	if !ok {
		t.Fatal("file reader is not an io.ReaderAt")
	}
	buf, want := make([]byte, 15000), make([]byte, 15000)
	for _, off := range []int64{4<<30 + 4096*3, 5<<30 - 10000} {
		if _, err := ra.ReadAt(buf, off); err != nil {
			t.Fatalf("bigsparse at %#x: %v", off, err)
		}
		_, err := src.ReadAt(want, off)
		must(t, err)
		if !bytes.Equal(buf, want) || bytes.Equal(buf, make([]byte, len(buf))) {
			t.Errorf("bigsparse: data above 4 GiB at %#x differs from source", off)
		}
	}
	buf = buf[:9000]
	if _, err := ra.ReadAt(buf, 1<<30); err != nil || !bytes.Equal(buf, make([]byte, 9000)) {
		t.Errorf("bigsparse: hole at 1 GiB: err %v, nonzero data", err)
	}
	e, err := fs.Lstat("/bigsparse")
	must(t, err)
	tail := make([]byte, 100)
	n, err := ra.ReadAt(tail, e.Size-50)
	if n != 50 || err != io.EOF {
		t.Errorf("bigsparse: read at end: n=%d err=%v, want 50, EOF", n, err)
	}
}

var execCommand = exec.Command

// debugfsSize is debugfs's opinion of a file's size in a filesystem image.
func debugfsSize(t testing.TB, img, p string) int64 {
	t.Helper()
	out := run(t, "debugfs", "-R", "stat "+p, img)
	i := strings.Index(out, "Size: ")
	if i < 0 {
		t.Fatalf("debugfs stat %s: no size in\n%s", p, out)
	}
	var n int64
	fmt.Sscan(out[i+6:], &n)
	return n
}

// prefixSHA is the sha256 of the first n bytes of a file.
func prefixSHA(t testing.TB, file string, n int64) string {
	f, err := os.Open(file)
	must(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.CopyN(h, f, n)
	must(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

func readAll(t testing.TB, p string) []byte {
	b, err := os.ReadFile(p)
	must(t, err)
	return b
}

// TestMakeTreeKeepsSetuid guards the helper itself: the tree must really hold setuid and
// setgid files, or the reader's tests of those bits test nothing.
func TestMakeTreeKeepsSetuid(t *testing.T) {
	dir := t.TempDir()
	makeTree(t, dir)
	for p, want := range map[string]os.FileMode{"bin/su": os.ModeSetuid, "bin/wall": os.ModeSetgid} {
		fi, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&want == 0 {
			t.Errorf("%s: mode %v lacks %v", p, fi.Mode(), want)
		}
	}
}

// e2fsCorpusPath is the folder of e2fsprogs' test images (tests/*/image*), kept outside
// the repository: $DOMAINM_CORPORA/e2fsprogs-tests (the Makefile exports DOMAINM_CORPORA),
// else ../shared/corpora/e2fsprogs-tests relative to the repository root.
func e2fsCorpusPath() string {
	dir := os.Getenv("DOMAINM_CORPORA")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "corpora")
	}
	abs, err := filepath.Abs(filepath.Join(dir, "e2fsprogs-tests"))
	if err != nil {
		return filepath.Join(dir, "e2fsprogs-tests")
	}
	return abs
}

// e2fsCorpus returns e2fsCorpusPath, or skips the test naming the path when it is missing.
func e2fsCorpus(t testing.TB) string {
	t.Helper()
	dir := e2fsCorpusPath()
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("e2fsprogs corpus not found at %s (set DOMAINM_CORPORA; default ../shared/corpora from the repository root): %v", dir, err)
	}
	return dir
}

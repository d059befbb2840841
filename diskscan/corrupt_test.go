package diskscan

import (
	"bytes"
	"compress/bzip2"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// corruptCheck checks the ErrCorrupt errors met while reading corrupt images: each must
// hold a *CorruptError (on every branch of its tree that reaches ErrCorrupt) with a
// Structure, a Reason and an Offset inside the image.
type corruptCheck struct {
	t     *testing.T
	n     int            // ErrCorrupt errors checked
	kinds map[string]int // first two words of Structure -> count
}

func newCorruptCheck(t *testing.T) *corruptCheck {
	return &corruptCheck{t: t, kinds: map[string]int{}}
}

// check checks err, met on an image whose qcow2 file has fileSize bytes (0: raw) and
// whose disk has diskSize bytes.
func (c *corruptCheck) check(what string, err error, fileSize, diskSize int64) {
	c.t.Helper()
	if err == nil || !errors.Is(err, ErrCorrupt) {
		return
	}
	c.n++
	if nakedCorrupt(err) {
		c.t.Errorf("%s: %v: matches ErrCorrupt without a *CorruptError", what, err)
		return
	}
	for _, ce := range corruptErrors(err) {
		limit := diskSize
		if strings.HasPrefix(ce.Structure, "qcow2") {
			limit = fileSize
		}
		if ce.Structure == "" || ce.Reason == "" || ce.Offset < 0 || ce.Offset >= limit {
			c.t.Errorf("%s: %v: CorruptError %+v: want a structure, a reason and an offset in [0, %#x)", what, err, *ce, limit)
		}
		f := strings.Fields(ce.Structure)
		c.kinds[strings.Join(f[:min(2, len(f))], " ")]++
	}
}

// nakedCorrupt reports whether a branch of err's tree reaches ErrCorrupt without going
// through a *CorruptError.
func nakedCorrupt(err error) bool {
	switch e := err.(type) {
	case *CorruptError:
		return false
	case interface{ Unwrap() []error }:
		for _, x := range e.Unwrap() {
			if nakedCorrupt(x) {
				return true
			}
		}
		return false
	}
	if err == ErrCorrupt {
		return true
	}
	if u := errors.Unwrap(err); u != nil {
		return nakedCorrupt(u)
	}
	return false
}

// corruptErrors returns the outermost *CorruptError of each branch of err's tree.
func corruptErrors(err error) []*CorruptError {
	switch e := err.(type) {
	case nil:
		return nil
	case *CorruptError:
		return []*CorruptError{e}
	case interface{ Unwrap() []error }:
		var out []*CorruptError
		for _, x := range e.Unwrap() {
			out = append(out, corruptErrors(x)...)
		}
		return out
	}
	return corruptErrors(errors.Unwrap(err))
}

// raw reads a raw disk through every entry point: partition table, volume, walk, file
// contents (bounded).
func (c *corruptCheck) raw(what string, img []byte) {
	c.t.Helper()
	c.disk(what, bytes.NewReader(img), int64(len(img)), 0)
}

// qcow2 reads a qcow2 image's header, its virtual disk and the disk's contents.
func (c *corruptCheck) qcow2(what string, img []byte) {
	c.t.Helper()
	size := int64(len(img))
	r := bytes.NewReader(img)
	hd, err := parseQcow2Header(r, size)
	c.check(what+": header", err, size, size)
	if err != nil {
		return
	}
	q, err := newQcow2(r, size, hd, nil, 0)
	c.check(what+": open", err, size, size)
	if err != nil {
		return
	}
	buf := make([]byte, 64<<10)
	for _, off := range []int64{0, q.size / 2, q.size - 1} {
		_, err := q.ReadAt(buf, off)
		c.check(fmt.Sprintf("%s: ReadAt(%#x)", what, off), err, size, q.size)
	}
	c.disk(what, q, q.size, size)
}

func (c *corruptCheck) disk(what string, r io.ReaderAt, size, fileSize int64) {
	c.t.Helper()
	_, err := Partitions(r, size)
	c.check(what+": partitions", err, fileSize, size)
	fs, err := openVolume(r, size, -1)
	c.check(what+": open", err, fileSize, size)
	if err != nil {
		return
	}
	noRetryWait(fs)
	steps := 0
	err = fs.Walk(context.Background(), "/", func(p string, e *Entry, err error) error {
		if steps++; steps > 3000 {
			return errStop
		}
		c.check(what+": walk "+p, err, fileSize, size)
		if e == nil || e.Type != Regular {
			return nil
		}
		f, err := fs.Open(p)
		c.check(what+": open "+p, err, fileSize, size)
		if err == nil {
			_, err = io.Copy(io.Discard, io.LimitReader(f, 1<<20))
			c.check(what+": read "+p, err, fileSize, size)
			f.Close()
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		c.check(what+": walk", err, fileSize, size)
	}
}

// TestCorruptErrorsSayWhere reads corrupt images (the e2fsprogs corpus when present, the
// fuzz seed corpus, and random damage to the fuzz seeds' metadata) and checks that every
// error matching ErrCorrupt is a *CorruptError naming the structure and an offset inside
// the image.
func TestCorruptErrorsSayWhere(t *testing.T) {
	withRetries(t, noRetries) // the images do not change while they are read
	c := newCorruptCheck(t)

	// Hand-made corruptions: random damage aimed at the metadata of real mkfs images.
	rnd := rand.New(rand.NewSource(7))
	for _, name := range []string{"ext4.img.gz", "ext2.img.gz", "inline.img.gz", "journal.img.gz"} {
		img, err := readGz(filepath.Join("testdata", name))
		must(t, err)
		regions := metadataRegions(t, img)
		for i := range 40 {
			r := regions[i%len(regions)]
			undo := damage(img, r, rnd)
			c.raw(fmt.Sprintf("%s #%d %s", name, i, r.name), img)
			undo()
		}
	}
	for _, name := range []string{"ext4.qcow2.gz", "ext4c.qcow2.gz", "ext4x.qcow2.gz"} {
		img, err := readGz(filepath.Join("testdata", name))
		must(t, err)
		// Header, header extensions and the tables in the first clusters.
		regions := []region{{"header", 0, 112}, {"extensions", 112, 400}, {"tables", 512, min(int64(len(img))-512, 256<<10)}}
		for i := range 45 {
			r := regions[i%len(regions)]
			undo := damage(img, r, rnd)
			c.qcow2(fmt.Sprintf("%s #%d %s", name, i, r.name), img)
			undo()
		}
	}
	for _, name := range []string{"gpt.img.gz", "mbr.img.gz"} {
		img, err := readGz(filepath.Join("testdata", name))
		must(t, err)
		if name == "gpt.img.gz" {
			clear(img[len(img)-512:]) // no backup header: damage to the primary is an error
		}
		regions := []region{{"MBR", 0, 512}, {"GPT header", 512, 92}, {"GPT entries", 1024, 32 * 512}}
		for i := range 30 {
			r := regions[i%len(regions)]
			undo := damage(img, r, rnd)
			c.raw(fmt.Sprintf("%s #%d %s", name, i, r.name), img)
			undo()
		}
	}

	// The fuzz seed corpus (inputs the fuzzer kept), as the fuzz targets read them.
	seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "*", "*"))
	for _, p := range seeds {
		data := fuzzInput(t, p)
		switch filepath.Base(filepath.Dir(p)) {
		case "FuzzExt4":
			c.raw(p, expandImage(data, 128<<10))
		case "FuzzQcow2":
			c.qcow2(p, expandImage(data, 256<<10)[:256<<10])
		case "FuzzPartitions":
			c.raw(p, expandImage(data, 1<<20)[:1<<20])
		}
	}

	// The e2fsprogs images, which e2fsck's tests made corrupt in every way they test.
	if _, err := os.Stat(e2fsCorpusPath()); err == nil {
		for _, p := range corpusImages(t) {
			c.raw(filepath.Base(p), corpusBytes(t, p))
		}
	} else {
		t.Logf("e2fsprogs corpus not found at %s: only the seeds' damage and the fuzz corpus are read", e2fsCorpusPath())
	}

	var kinds []string
	for k, n := range c.kinds {
		kinds = append(kinds, fmt.Sprintf("%s:%d", k, n))
	}
	sort.Strings(kinds)
	t.Logf("%d corrupt errors checked: %s", c.n, strings.Join(kinds, " "))
	// The inputs must have reached the parsers' checks, else the test checks nothing.
	for _, k := range []string{"ext4 superblock", "ext4 inode", "ext4 directory", "qcow2 header", "GPT header"} {
		if c.kinds[k] == 0 {
			t.Errorf("no corrupt %s met: the damage no longer reaches it", k)
		}
	}
}

// metadataRegions locates the metadata of a healthy ext4 image to damage: superblock,
// group descriptors, the first inode table, the first blocks of every directory and the
// extent index blocks of every file.
func metadataRegions(t *testing.T, img []byte) []region {
	fs, err := openExt4(bytes.NewReader(img), int64(len(img)))
	must(t, err)
	o := fs.newOp(false)
	bs := fs.bs
	it, err := o.inodeTable(0)
	must(t, err)
	rs := []region{
		{"superblock", 1024, 1024},
		{"group descriptors", int64(superblockOff/bs+1) * bs, bs},
		{"inode table", int64(it) * bs, int64(min(fs.inodesPerGroup*uint64(fs.inodeSize), 64<<10))},
	}
	err = fs.Walk(context.Background(), "/", func(p string, e *Entry, err error) error {
		must(t, err)
		in, err := o.readInode(uint32(e.Inode))
		must(t, err)
		if in.flags&flagInlineData != 0 || (e.Type != Dir && e.Type != Regular) {
			return nil
		}
		if in.flags&flagExtents != 0 && binary.LittleEndian.Uint16(in.iblock[6:]) > 0 {
			child := uint64(binary.LittleEndian.Uint32(in.iblock[16:])) | uint64(binary.LittleEndian.Uint16(in.iblock[20:]))<<32
			rs = append(rs, region{"extent node of " + p, int64(child) * bs, bs})
		}
		if exts, err := o.mapBlocks(in); err == nil && len(exts) > 0 && e.Type == Dir {
			rs = append(rs, region{"directory block of " + p, int64(exts[0].pblk) * bs, int64(min(exts[0].n, 4)) * bs})
		}
		return nil
	})
	must(t, err)
	return rs
}

// fuzzInput decodes a file of the fuzz corpus ("go test fuzz v1", one []byte value).
func fuzzInput(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	must(t, err)
	lines := strings.SplitN(strings.TrimSpace(string(b)), "\n", 2)
	if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
		t.Fatalf("%s: not a one-[]byte fuzz input", p)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return []byte(s)
}

// corpusBytes reads a compressed e2fsprogs image into memory.
func corpusBytes(t *testing.T, p string) []byte {
	if strings.HasSuffix(p, ".gz") {
		b, err := readGz(p)
		must(t, err)
		return b
	}
	f, err := os.Open(p)
	must(t, err)
	defer f.Close()
	b, err := io.ReadAll(bzip2.NewReader(f))
	must(t, err)
	return b
}

// TestCorruptErrorTyped: a CorruptError matches ErrCorrupt, unwraps to its cause and
// says structure, offset and reason.
func TestCorruptErrorTyped(t *testing.T) {
	cause := errors.New("unexpected EOF")
	err := fmt.Errorf("walking: %w", &CorruptError{Structure: "qcow2 compressed cluster", Offset: 0x30000, Reason: "inflating", Err: cause})
	var ce *CorruptError
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, cause) || !errors.As(err, &ce) || ce.Offset != 0x30000 {
		t.Fatalf("%v: Is(ErrCorrupt) %v, Is(cause) %v, As %v", err, errors.Is(err, ErrCorrupt), errors.Is(err, cause), ce)
	}
	if nakedCorrupt(err) || !nakedCorrupt(fmt.Errorf("x: %w", ErrCorrupt)) || !nakedCorrupt(errors.Join(err, fmt.Errorf("y: %w", ErrCorrupt))) {
		t.Error("nakedCorrupt misjudges a wrap")
	}
	want := "walking: qcow2 compressed cluster at 0x30000: inflating: unexpected EOF: corrupt or inconsistent metadata"
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}

	// An ext4 volume in a partition names offsets in the disk, not in the partition.
	img, err := readGz("testdata/ext4.img.gz")
	must(t, err)
	const start = 1 << 20
	disk := make([]byte, start+len(img))
	copy(disk[start:], img)
	fs, err := openExt4(io.NewSectionReader(bytes.NewReader(disk), start, int64(len(img))), int64(len(img)))
	must(t, err)
	it, err := fs.newOp(false).inodeTable(0)
	must(t, err)
	in12 := start + int64(it)*fs.bs + 11*fs.inodeSize
	disk[in12+0x7C] ^= 0xFF // inode 12's checksum
	_, err = fs.newOp(true).readInode(12)
	if !errors.As(err, &ce) || ce.Structure != "ext4 inode 12" || ce.Offset != in12+0x7C {
		t.Errorf("inode 12 with a bad checksum: %v (%+v), want ext4 inode 12 at %#x", err, ce, in12+0x7C)
	}
}

// TestNoUntypedCorruptWraps fails when diskscan's code names ErrCorrupt outside its
// declaration and CorruptError's methods: every corrupt-metadata error must be a
// *CorruptError (corruptf, ext4FS.corrupt) so that it says where.
func TestNoUntypedCorruptWraps(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	must(t, err)
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		must(t, err)
		checked++
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv != nil && (fd.Name.Name == "Error" || fd.Name.Name == "Is") &&
				len(fd.Recv.List) == 1 && types(fd.Recv.List[0].Type) == "*CorruptError" {
				continue
			}
			if gd, ok := d.(*ast.GenDecl); ok && gd.Tok == token.VAR && declares(gd, "ErrCorrupt") {
				continue
			}
			ast.Inspect(d, func(n ast.Node) bool {
				if id, ok := n.(*ast.Ident); ok && id.Name == "ErrCorrupt" {
					t.Errorf("%s: ErrCorrupt used directly; return a *CorruptError (corruptf, fs.corrupt) naming structure and offset", fset.Position(id.Pos()))
				}
				return true
			})
		}
	}
	if checked < 10 {
		t.Fatalf("only %d files checked", checked)
	}
}

// types renders a receiver type (T or *T).
func types(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.StarExpr:
		return "*" + types(x.X)
	case *ast.Ident:
		return x.Name
	}
	return ""
}

func declares(gd *ast.GenDecl, name string) bool {
	for _, s := range gd.Specs {
		if vs, ok := s.(*ast.ValueSpec); ok {
			for _, n := range vs.Names {
				if n.Name == name {
					return true
				}
			}
		}
	}
	return false
}

package diskscan

import (
	"path/filepath"
	"testing"
)

// TestEAInodeZeroSizeValue: in e2fsprogs' f_ea_zero_size (e2fsck finds it clean), /lustre
// has an xattr user.be of length 0 that names a 4 KiB EA inode. A zero-length value
// holds no bytes, so it is read as empty and the file stays readable; the other
// attribute of its block (user.bi, 100 bytes in the block) is read as usual.
func TestEAInodeZeroSizeValue(t *testing.T) {
	corpusImages(t) // skips, naming the path, without the corpus
	raw, cleanup := decompressed(t, filepath.Join(e2fsCorpus(t), "f_ea_zero_size.img.gz"))
	defer cleanup()
	fs, c, err := OpenVolumeFormat(raw, "raw", -1)
	must(t, err)
	defer c.Close()
	e, err := fs.Lstat("/lustre")
	if err != nil {
		t.Fatalf("Lstat /lustre: %v", err)
	}
	if v, ok := e.Xattrs["user.be"]; !ok || len(v) != 0 {
		t.Errorf("user.be = %q (present %v), want empty", v, ok)
	}
	if v := e.Xattrs["user.bi"]; len(v) != 100 {
		t.Errorf("user.bi: %d bytes, want 100 (xattrs %q)", len(v), e.Xattrs)
	}
	if e.Type != Regular || e.Size != int64(debugfsSize(t, raw, "/lustre")) {
		t.Errorf("/lustre: %+v", e)
	}
}

package linux

import (
	"testing"

	"github.com/cilium/ebpf/btf"
)

// testBTF is a small BTF blob with a task_struct-like struct, made by cilium's encoder.
func testBTF(t testing.TB) []byte {
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	u64 := &btf.Int{Name: "long unsigned int", Size: 8}
	lh := &btf.Struct{Name: "list_head", Size: 16}
	lh.Members = []btf.Member{{Name: "next", Type: &btf.Pointer{Target: lh}}, {Name: "prev", Type: &btf.Pointer{Target: lh}, Offset: 64}}
	anon := &btf.Struct{Size: 8, Members: []btf.Member{{Name: "inner", Type: u64}}}
	ts := &btf.Struct{Name: "task_struct", Size: 48, Members: []btf.Member{
		{Name: "pid", Type: u32},
		{Name: "tasks", Type: lh, Offset: 64},
		{Type: anon, Offset: 256},
		{Name: "comm", Type: &btf.Array{Type: &btf.Int{Name: "char", Size: 1}, Index: u32, Nelems: 8}, Offset: 320},
	}}
	b, err := btf.NewBuilder([]btf.Type{ts}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestBTFFields(t *testing.T) {
	ty, err := parseBTF(testBTF(t), 0xffffffff82000000)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path      string
		off, size uint64
	}{{"pid", 0, 4}, {"tasks", 8, 16}, {"tasks.prev", 16, 8}, {"inner", 32, 8}, {"comm", 40, 8}} {
		f, err := ty.Field("task_struct", c.path)
		if err != nil || f.Offset != c.off || f.Size != c.size {
			t.Errorf("%s: %+v, %v; want offset %d size %d", c.path, f, err, c.off, c.size)
		}
	}
	if _, err := ty.Field("task_struct", "mm"); err == nil {
		t.Error("missing member found")
	}
	if _, err := ty.Field("mm_struct", "pgd"); err == nil {
		t.Error("missing struct found")
	}
	bad := testBTF(t)
	bad[0] = 0
	if _, err := parseBTF(bad, 0); err == nil {
		t.Error("bad magic accepted")
	}
}

// FuzzBTF: a hostile .BTF section never panics the header check or the parser.
func FuzzBTF(f *testing.F) {
	f.Add(testBTF(f))
	f.Add([]byte{0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, raw []byte) {
		ty, err := parseBTF(raw, 0)
		if err == nil {
			ty.Field("task_struct", "tasks.next")
		}
	})
}

package integrity

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkCheck records a baseline of the image named by INTEGRITY_BENCH_IMAGE once
// (the bench-diskscan policy: every path, sha256) and then times Check of the unchanged
// image, which must report nothing. With -cpuprofile it shows where a check's CPU goes
// outside hashing:
//
//	INTEGRITY_BENCH_IMAGE=disk.raw go test -run '^$' -bench Check -benchtime 2x -cpuprofile check.pprof ./detectors/integrity
func BenchmarkCheck(b *testing.B) {
	img, p := benchImagePolicy(b)
	fsys, closer, info, err := OpenImage(img, "", -1)
	if err != nil {
		b.Fatal(err)
	}
	defer closer.Close()
	db := filepath.Join(b.TempDir(), "bench.db")
	if _, err := RecordBaseline(context.Background(), fsys, p, NewHeader(p, info, time.Now()), db, Options{}, nil); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		base, err := OpenBaseline(db)
		if err != nil {
			b.Fatal(err)
		}
		changes, st, err := Check(context.Background(), fsys, base, CheckOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if len(changes) != 0 {
			b.Fatalf("unchanged image: %d changes, first %+v", len(changes), changes[0])
		}
		b.ReportMetric(float64(st.Records), "records")
		b.SetBytes(st.Bytes)
	}
}

// BenchmarkBaseline times RecordBaseline of the image named by INTEGRITY_BENCH_IMAGE
// (the bench-diskscan policy: every path, sha256), DB write included. With -cpuprofile
// and -memprofile it shows where a baseline's wall and CPU go outside hashing:
//
//	INTEGRITY_BENCH_IMAGE=disk.raw go test -run '^$' -bench Baseline -benchtime 2x -cpuprofile baseline.pprof ./detectors/integrity
func BenchmarkBaseline(b *testing.B) {
	img, p := benchImagePolicy(b)
	db := filepath.Join(b.TempDir(), "bench.db")
	for b.Loop() {
		fsys, closer, info, err := OpenImage(img, "", -1)
		if err != nil {
			b.Fatal(err)
		}
		st, err := RecordBaseline(context.Background(), fsys, p, NewHeader(p, info, time.Now()), db, Options{}, nil)
		closer.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(st.Records), "records")
		b.SetBytes(st.Bytes)
	}
}

// benchImagePolicy is the image named by INTEGRITY_BENCH_IMAGE (the benchmark is
// skipped without one) and the bench-diskscan policy: every path, sha256.
func benchImagePolicy(b *testing.B) (string, *Policy) {
	img := os.Getenv("INTEGRITY_BENCH_IMAGE")
	if img == "" {
		b.Skip("set INTEGRITY_BENCH_IMAGE to a disk image")
	}
	p, err := ParsePolicy("bench.toml", []byte(`version = 1
[[select]]
name = "all"
paths = ["/"]
attrs = ["type", "mode", "uid", "gid", "inode", "nlink", "link", "caps", "size", "mtime", "ctime", "sha256"]
`))
	if err != nil {
		b.Fatal(err)
	}
	return img, p
}

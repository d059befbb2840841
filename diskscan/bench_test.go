package diskscan

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkWalkHash walks the image named by DISKSCAN_BENCH_IMAGE and hashes every
// regular file with SHA-256, with the metadata walk on one goroutine and hashing on
// GOMAXPROCS workers, as the integrity baseline does. Run with
//
//	DISKSCAN_BENCH_IMAGE=disk.raw go test -run '^$' -bench WalkHash -benchtime 1x ./diskscan
func BenchmarkWalkHash(b *testing.B) {
	img := os.Getenv("DISKSCAN_BENCH_IMAGE")
	if img == "" {
		b.Skip("set DISKSCAN_BENCH_IMAGE to a disk image")
	}
	for i := 0; i < b.N; i++ {
		fs, c, err := OpenVolume(img, -1)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		var files, bytes atomic.Int64
		paths := make(chan string, 1024)
		var wg sync.WaitGroup
		for w := 0; w < runtime.GOMAXPROCS(0); w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for p := range paths {
					r, err := fs.Open(p)
					if err != nil {
						b.Error(err)
						continue
					}
					h := sha256.New()
					n, err := io.Copy(h, r)
					if err != nil {
						b.Error(err)
					}
					r.Close()
					files.Add(1)
					bytes.Add(n)
				}
			}()
		}
		entries := 0
		err = fs.Walk(context.Background(), "/", func(p string, e *Entry, err error) error {
			entries++
			if err != nil {
				b.Error(err)
				return nil
			}
			if e.Type == Regular {
				paths <- p
			}
			return nil
		})
		walkDone := time.Since(start)
		close(paths)
		wg.Wait()
		el := time.Since(start)
		c.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(entries)/walkDone.Seconds(), "entries/s(walk)")
		b.ReportMetric(float64(files.Load())/el.Seconds(), "files/s")
		b.ReportMetric(float64(bytes.Load())/el.Seconds()/1e6, "MB/s")
		b.Logf("%d entries, walk %v; %d files, %d MB hashed in %v", entries, walkDone, files.Load(), bytes.Load()/1e6, el)
	}
}

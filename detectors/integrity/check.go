package integrity

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"

	"github.com/domainm/domainm/diskscan"
)

// Baseline is a baseline DB read into memory, with the policy stored in it.
type Baseline struct {
	Header  Header
	Records []*Record
	Policy  *Policy
}

// OpenBaseline reads the baseline DB at path and parses the policy stored in it.
func OpenBaseline(path string) (*Baseline, error) {
	hdr, recs, _, err := ReadDB(path)
	if err != nil {
		return nil, err
	}
	p, err := ParsePolicy(hdr.PolicyFile, []byte(hdr.Policy))
	if err != nil {
		return nil, fmt.Errorf("policy stored in %s: %w", path, err)
	}
	return &Baseline{Header: hdr, Records: recs, Policy: p}, nil
}

// CheckOptions tune Check.
type CheckOptions struct {
	Workers  int // parallel hashing workers; 0 means one per CPU
	Counters *Counters
	Log      *slog.Logger
	// Record, when set, also receives every record of the walk, in walk order (check
	// --update writes them to the next baseline).
	Record func(*Record) error
}

// Check walks fsys with the baseline's policy and returns every entry added, removed
// or changed since, sorted as AIDE users read them: added, removed, changed, each by
// path. It is `domainm check` and the daemon's disk check.
func Check(ctx context.Context, fsys FS, b *Baseline, opt CheckOptions) ([]Change, Stats, error) {
	cmp := NewComparer(b.Records)
	var changes []Change
	st, err := Collect(ctx, fsys, b.Policy, Options{
		Workers: opt.Workers, Counters: opt.Counters, Log: opt.Log, Baseline: cmp.Baseline,
	}, func(r *Record) error {
		if ch := cmp.Add(r); ch != nil {
			changes = append(changes, *ch)
		}
		if opt.Record != nil {
			return opt.Record(r)
		}
		return nil
	})
	if err != nil {
		return nil, st, err
	}
	changes = append(changes, cmp.Removed()...)
	SortChanges(changes)
	return changes, st, nil
}

// SortChanges orders changes as AIDE users read them: added, removed, changed, each by path.
func SortChanges(cs []Change) {
	rank := map[ChangeKind]int{Added: 0, Removed: 1, Changed: 2}
	sort.SliceStable(cs, func(i, j int) bool {
		if rank[cs[i].Kind] != rank[cs[j].Kind] {
			return rank[cs[i].Kind] < rank[cs[j].Kind]
		}
		return cs[i].Path < cs[j].Path
	})
}

// OpenImage opens the filesystem in a disk image of the given format ("raw", "qcow2",
// or "" to probe) and describes the image for a baseline header, with the format found.
func OpenImage(image, format string, partition int) (diskscan.FS, io.Closer, ImageInfo, error) {
	info := ImageInfo{Path: image, Partition: partition, Format: format}
	st, err := os.Stat(image)
	if err != nil {
		return nil, nil, info, fmt.Errorf("opening image: %w", err)
	}
	info.Size, info.ModTime = st.Size(), st.ModTime().UTC()
	fsys, closer, err := diskscan.OpenVolumeFormat(image, format, partition)
	if err != nil {
		return nil, nil, info, fmt.Errorf("opening filesystem: %w", err)
	}
	if f, ok := closer.(interface{ Format() string }); ok {
		info.Format = f.Format()
	}
	return fsys, closer, info, nil
}

// RecordBaseline walks fsys with policy p and writes a new baseline to dest atomically (a
// crash leaves the previous one complete); each, when set, also sees every record.
// It is `domainm baseline` and the daemon's first disk check.
func RecordBaseline(ctx context.Context, fsys FS, p *Policy, h Header, dest string, opt Options, each func(*Record)) (Stats, error) {
	w, err := CreateDB(dest, h)
	if err != nil {
		return Stats{}, err
	}
	defer w.Abort()
	st, err := Collect(ctx, fsys, p, opt, func(r *Record) error {
		if each != nil {
			each(r)
		}
		return w.Add(r)
	})
	if err != nil {
		return st, err
	}
	return st, w.Commit(st)
}

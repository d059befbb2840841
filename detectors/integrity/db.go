package integrity

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"time"
)

// The baseline DB is a gzip stream of JSON lines: a Header, one Record per line in walk
// order, and a Trailer with the record count and the SHA-256 of every byte before it.
// A streaming format fits the job: a baseline is written once, front to back, while
// the image is walked, and read whole before a check; there are no in-place updates
// that would call for a store such as bbolt. It stays inspectable (zcat | jq). gzip's
// CRC and the trailer's checksum catch truncation and corruption; the atomic rename
// in DBWriter.Commit means a reader never sees a half-written file.

// DBFormat and DBVersion identify the baseline format.
const (
	DBFormat  = "domainm-integrity-baseline"
	DBVersion = 1
)

// ErrCorruptDB is matched by errors about an unreadable or inconsistent baseline.
var ErrCorruptDB = errors.New("corrupt baseline")

// ImageInfo identifies the disk image a baseline was made from.
type ImageInfo struct {
	Path      string    `json:"path"`
	Format    string    `json:"format,omitempty"` // raw, qcow2
	Size      int64     `json:"size"`
	ModTime   time.Time `json:"mtime"`
	Partition int       `json:"partition"` // as given; -1 means the first usable one
}

// Header opens a baseline.
type Header struct {
	Format       string    `json:"format"`
	Version      int       `json:"version"`
	Created      time.Time `json:"created"`
	Image        ImageInfo `json:"image"`
	PolicyFile   string    `json:"policy_file"`
	PolicySHA256 string    `json:"policy_sha256"`
	Policy       string    `json:"policy"` // the policy text, so a check needs only the DB
}

// Trailer closes a baseline.
type Trailer struct {
	End     bool   `json:"end"`
	Records int64  `json:"records"`
	SHA256  string `json:"sha256"` // of all the uncompressed bytes before the trailer line
	Stats   Stats  `json:"stats"`
}

// NewHeader fills a header for a baseline made with p.
func NewHeader(p *Policy, img ImageInfo, now time.Time) Header {
	return Header{Format: DBFormat, Version: DBVersion, Created: now.UTC(), Image: img,
		PolicyFile: p.File, PolicySHA256: p.Hash, Policy: string(p.Source)}
}

// DBWriter writes a baseline to a temporary file beside its destination; Commit
// makes it the baseline in one rename, Abort throws it away.
type DBWriter struct {
	dest, tmp string
	f         *os.File
	bw        *bufio.Writer
	zw        *gzip.Writer
	sum       hash.Hash
	enc       *json.Encoder
	n         int64
	done      bool
	line      []byte // Add's buffer
}

// CreateDB starts a baseline that will replace dest on Commit.
func CreateDB(dest string, h Header) (*DBWriter, error) {
	dir, base := filepath.Split(dest)
	if dir == "" {
		dir = "."
	}
	removeStaleTemps(dir, base, time.Now())
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("creating baseline: %w", err)
	}
	w := &DBWriter{dest: dest, tmp: f.Name(), f: f, sum: sha256.New()}
	w.bw = bufio.NewWriterSize(f, 1<<16)
	// BestSpeed: the default level spent as much CPU compressing a baseline as encoding
	// it, for a file about a tenth larger.
	w.zw, _ = gzip.NewWriterLevel(w.bw, gzip.BestSpeed) // fails only for an invalid level
	w.enc = json.NewEncoder(io.MultiWriter(w.zw, w.sum))
	if err := w.enc.Encode(h); err != nil {
		w.Abort()
		return nil, fmt.Errorf("writing baseline header: %w", err)
	}
	return w, nil
}

// staleTemp is the age after which a temporary baseline is taken for the leftover of a
// crashed writer: a live writer touches its file far more often than that.
const staleTemp = time.Hour

// removeStaleTemps deletes temporary baselines left by writers that crashed.
func removeStaleTemps(dir, base string, now time.Time) {
	old, _ := filepath.Glob(filepath.Join(dir, "."+base+".tmp-*"))
	for _, p := range old {
		if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() && now.Sub(st.ModTime()) > staleTemp {
			os.Remove(p)
		}
	}
}

// Add appends one record.
func (w *DBWriter) Add(r *Record) error {
	b, err := appendRecord(w.line[:0], r)
	if err == nil {
		w.line = b
		w.sum.Write(b)
		_, err = w.zw.Write(b)
	}
	if err != nil {
		return fmt.Errorf("writing baseline %s: %w", w.tmp, err)
	}
	w.n++
	return nil
}

// Commit writes the trailer, syncs the file, renames it over the destination and
// syncs the directory, so that after a crash either the old or the new baseline is
// there, complete.
func (w *DBWriter) Commit(st Stats) error {
	if w.done {
		return errors.New("baseline already committed or aborted")
	}
	t := Trailer{End: true, Records: w.n, SHA256: hex.EncodeToString(w.sum.Sum(nil)), Stats: st}
	b, err := json.Marshal(t)
	if err == nil {
		_, err = w.zw.Write(append(b, '\n'))
	}
	if err == nil {
		err = w.zw.Close()
	}
	if err == nil {
		err = w.bw.Flush()
	}
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(w.tmp, w.dest)
	}
	if err != nil {
		w.done = true
		os.Remove(w.tmp)
		return fmt.Errorf("writing baseline %s: %w", w.dest, err)
	}
	w.done = true
	return syncDir(filepath.Dir(w.dest))
}

// Abort removes the temporary file; the old baseline, if any, is untouched. It is a
// no-op after Commit.
func (w *DBWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.tmp)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// ReadDB reads a whole baseline and checks its format, count and checksum.
func ReadDB(path string) (Header, []*Record, Trailer, error) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, nil, Trailer{}, fmt.Errorf("opening baseline: %w", err)
	}
	defer f.Close()
	return readDB(path, f)
}

// maxLine bounds one JSON line of the baseline (a record with large xattrs, or the
// header with the policy text).
const maxLine = 16 << 20

func readDB(path string, r io.Reader) (h Header, recs []*Record, t Trailer, err error) {
	zr, err := gzip.NewReader(bufio.NewReader(r))
	if err != nil {
		return h, nil, t, fmt.Errorf("%w: %s: %v", ErrCorruptDB, path, err)
	}
	return readLines(path, zr)
}

// readLines reads the JSON lines inside the gzip stream.
func readLines(path string, r io.Reader) (h Header, recs []*Record, t Trailer, err error) {
	bad := func(line int, format string, args ...any) error {
		return fmt.Errorf("%w: %s: line %d: %s", ErrCorruptDB, path, line, fmt.Sprintf(format, args...))
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), maxLine)
	sum := sha256.New()
	line := 0
	ended := false
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if ended {
			return h, nil, t, bad(line, "data after the trailer")
		}
		switch {
		case line == 1:
			if err := json.Unmarshal(b, &h); err != nil {
				return h, nil, t, bad(line, "header: %v", err)
			}
			if h.Format != DBFormat {
				return h, nil, t, bad(line, "not a domainm baseline (format %q)", h.Format)
			}
			if h.Version != DBVersion {
				return h, nil, t, bad(line, "baseline version %d, this domainm reads version %d", h.Version, DBVersion)
			}
		case len(b) > 7 && string(b[:7]) == `{"end":`:
			if err := json.Unmarshal(b, &t); err != nil {
				return h, nil, t, bad(line, "trailer: %v", err)
			}
			if want := hex.EncodeToString(sum.Sum(nil)); t.SHA256 != want {
				return h, nil, t, bad(line, "checksum mismatch")
			}
			if t.Records != int64(len(recs)) {
				return h, nil, t, bad(line, "trailer says %d records, read %d", t.Records, len(recs))
			}
			ended = true
			continue
		default:
			r := new(Record)
			if !decodeRecord(b, r) {
				*r = Record{}
				if err := json.Unmarshal(b, r); err != nil {
					return h, nil, t, bad(line, "record: %v", err)
				}
			}
			r.restoreRaw()
			recs = append(recs, r)
		}
		sum.Write(b)
		sum.Write([]byte{'\n'})
	}
	if err := sc.Err(); err != nil {
		return h, nil, t, fmt.Errorf("%w: %s: after line %d: %v", ErrCorruptDB, path, line, err)
	}
	if !ended {
		return h, nil, t, fmt.Errorf("%w: %s: no trailer (truncated?)", ErrCorruptDB, path)
	}
	return h, recs, t, nil
}

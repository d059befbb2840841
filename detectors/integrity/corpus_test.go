package integrity

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/diskscan"
	"github.com/domainm/domainm/image/testenv"
)

// The e2fsprogs corpus: every test image of e2fsprogs (tests/NAME/image.gz, most of them
// deliberately corrupt), kept outside the repository in ../shared/corpora (see its
// README). TestE2fsprogsCorpus runs each image through baseline and check in a child
// process with a memory cap and a deadline, so that a crash, a hang or an
// out-of-memory on one image is reported with the image's name and the others still
// run; images that e2fsck finds clean are also compared with debugfs.

// corpusRel is the corpus folder relative to the repository root.
const corpusRel = "../shared/corpora/e2fsprogs-tests"

// Child process limits. The memory cap is RLIMIT_DATA, which on Linux counts every
// private writable mapping, so the Go heap too: an image that makes the reader allocate
// without bound ends the child with "out of memory" instead of the machine. The
// deadline is CPU time (RLIMIT_CPU), so that a loaded machine does not fail an image
// (the slowest, f_many_subdirs with 130,000 entries walked three times, takes 10 s of
// CPU); a wall-clock limit backs it up against a child that blocks.
const (
	childMemCap  = 1 << 30
	childCPU     = 40 // seconds
	childWall    = 5 * time.Minute
	toolDeadline = time.Minute      // wall clock, for debugfs
	fsckDeadline = 20 * time.Second // e2fsck -n loops forever on a few images (clean ones take < 1 s)
	toolCPU      = 10               // seconds of CPU, for both
	toolOutput   = 64 << 20         // bytes of a tool's output kept
	exitCPU      = 4                // the child's exit code when its CPU time is up
)

// corpusDebugfsWaived lists the e2fsck-clean images whose differences from debugfs are
// not bugs of this project, each with the reason. It waives only the comparison with
// debugfs: a crash, a time-out or a change reported by check still fails the image. An
// image that no longer differs must come off the list (the test says so).
var corpusDebugfsWaived = map[string]string{
	// The inode's extent tree is 7 levels deep. Linux refuses trees deeper than 5
	// (EXT4_MAX_EXTENT_DEPTH; ext4_find_extent: "inode has invalid extent depth"), so the
	// guest itself gets EIO for this file; diskscan follows the kernel and reports the file
	// unreadable, while debugfs and e2fsck -n read it (e2fsck only offers to make the
	// tree shallower).
	"f_extent_too_deep": "extent tree deeper than Linux reads",
}

const (
	childEnvImage = "DOMAINM_CORPUS_CHILD_IMAGE"
	childEnvOut   = "DOMAINM_CORPUS_CHILD_OUT"
)

func TestMain(m *testing.M) {
	if img := os.Getenv(childEnvImage); img != "" {
		os.Exit(corpusChild(img, os.Getenv(childEnvOut)))
	}
	os.Exit(m.Run())
}

// childResult is what the child reports of one image.
type childResult struct {
	OpenError    string   `json:"open_error,omitempty"`
	Journal      string   `json:"journal,omitempty"` // diskscan.JournalError: not replayed as the kernel would
	CollectError string   `json:"collect_error,omitempty"`
	Records      int      `json:"records"`
	Unreadable   int      `json:"unreadable"`
	Internal     []string `json:"internal,omitempty"`       // parser panics turned into errors
	AfterBase    []string `json:"after_baseline,omitempty"` // changes reported right after the baseline
	AfterUpdate  []string `json:"after_update,omitempty"`   // and after check --update
	Seconds      float64  `json:"seconds"`
}

// corpusChild is the child process: baseline the image into out+".db", check it,
// check it with --update, check again, and write a childResult to out.
func corpusChild(img, out string) int {
	mem := syscall.Rlimit{Cur: childMemCap, Max: childMemCap}
	cpu := syscall.Rlimit{Cur: childCPU, Max: childCPU + 10}
	if err := errors.Join(syscall.Setrlimit(syscall.RLIMIT_DATA, &mem), syscall.Setrlimit(syscall.RLIMIT_CPU, &cpu)); err != nil {
		fmt.Fprintln(os.Stderr, "setrlimit:", err)
		return 3
	}
	// The Go runtime ignores SIGXCPU unless asked for it.
	xcpu := make(chan os.Signal, 1)
	signal.Notify(xcpu, syscall.SIGXCPU)
	go func() {
		<-xcpu
		fmt.Fprintf(os.Stderr, "CPU time limit (%d s) reached\n", childCPU)
		os.Exit(exitCPU)
	}()
	start := time.Now()
	res := runCorpusChild(img, out+".db")
	res.Seconds = time.Since(start).Seconds()
	b, _ := json.Marshal(res)
	if err := os.WriteFile(out, b, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	return 0
}

func runCorpusChild(img, db string) (res childResult) {
	p, err := ParsePolicy("all.toml", []byte(allPolicy))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	// walk opens the image afresh, as every check of the appliance does.
	walk := func(cmp *Comparer, emit func(*Record) error) (openErr, err error) {
		fsys, closer, err := diskscan.OpenVolumeFormat(img, "raw", -1)
		if err != nil {
			return err, nil
		}
		defer closer.Close()
		if err := diskscan.JournalError(fsys); err != nil {
			res.Journal = err.Error()
		}
		// Two hashing workers, as on the appliance: files are read concurrently.
		opt := Options{Workers: 2}
		if cmp != nil {
			opt.Baseline = cmp.Baseline
		}
		_, err = Collect(ctx, fsys, p, opt, emit)
		return nil, err
	}
	w, err := CreateDB(db, NewHeader(p, ImageInfo{Path: img, Format: "raw", Partition: -1}, time.Now()))
	if err != nil {
		panic(err)
	}
	openErr, err := walk(nil, func(r *Record) error {
		res.Records++
		if r.Err != "" {
			res.Unreadable++
			if strings.Contains(r.Err, "internal error") {
				res.Internal = append(res.Internal, r.Path+": "+r.Err)
			}
		}
		return w.Add(r)
	})
	if openErr != nil || err != nil {
		if openErr != nil {
			res.OpenError = openErr.Error()
		} else {
			res.CollectError = err.Error()
		}
		w.Abort()
		return res
	}
	if err := w.Commit(Stats{}); err != nil {
		panic(err)
	}
	// check --update: compare and write the new baseline in the same walk.
	check := func(update bool) []string {
		_, base, _, err := ReadDB(db)
		if err != nil {
			panic(err)
		}
		var uw *DBWriter
		if update {
			if uw, err = CreateDB(db, NewHeader(p, ImageInfo{Path: img}, time.Now())); err != nil {
				panic(err)
			}
			defer uw.Abort()
		}
		cmp := NewComparer(base)
		var out []string
		openErr, err := walk(cmp, func(r *Record) error {
			if c := cmp.Add(r); c != nil {
				out = append(out, describeChange(*c))
			}
			if uw != nil {
				return uw.Add(r)
			}
			return nil
		})
		if err = errors.Join(openErr, err); err != nil {
			return append(out, "check failed: "+err.Error())
		}
		for _, c := range cmp.Removed() {
			out = append(out, describeChange(c))
		}
		if uw != nil {
			if err := uw.Commit(Stats{}); err != nil {
				panic(err)
			}
		}
		return out
	}
	res.AfterBase = check(true)
	res.AfterUpdate = check(false)
	return res
}

func describeChange(c Change) string {
	s := fmt.Sprintf("%s %q", c.Kind, c.Path)
	for _, a := range c.Attrs {
		s += fmt.Sprintf(" %s: %q -> %q", a.Attr, a.Before, a.After)
	}
	return s
}

// repoRoot is the folder holding go.mod, above the package folder.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

// TestE2fsprogsCorpus runs every e2fsprogs test image through baseline, check and
// check --update in a child process (memory cap childMemCap, deadline childDeadline):
// the child must not crash, run out of memory or time, or hit a parser bug (a recovered
// panic), and neither check may report a change. Images that e2fsck -fn finds clean
// (after replaying their journal on a copy, as the kernel would on mount) must give the
// paths, types, modes, owners, inodes, sizes, content hashes and link targets that
// debugfs gives (rdump for contents and targets, ls -p for the metadata). Each failing
// image is a failing subtest named after it.
func TestE2fsprogsCorpus(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the e2fsprogs corpus takes minutes")
	}
	dir := filepath.Join(repoRoot(t), corpusRel)
	names, err := corpusImages(dir)
	if err != nil {
		t.Skipf("e2fsprogs corpus not found at %s (see ../shared/corpora/README.md): %v", dir, err)
	}
	testenv.MustHave(t, "e2fsck", "debugfs")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Scratch space for debugfs rdump: a tmpfs when there is one (tens of thousands of
	// small files are several times faster to write there).
	scratch := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		scratch = "/dev/shm"
	}
	start := time.Now()
	var mu sync.Mutex
	var failed, compared, opened []string
	var childSecs float64
	var peakRSS int64
	peakName := ""
	type timing struct {
		name string
		secs float64
	}
	var times []timing
	t.Run("image", func(t *testing.T) {
		for _, file := range names {
			name := imageName(file)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				ci := &corpusImage{t: t, name: name, src: filepath.Join(dir, file), exe: exe, scratch: scratch}
				ci.run()
				mu.Lock()
				defer mu.Unlock()
				childSecs += ci.secs
				times = append(times, timing{name, ci.secs})
				if ci.rssKiB > peakRSS {
					peakRSS, peakName = ci.rssKiB, name
				}
				if ci.res.Records > 0 {
					opened = append(opened, name)
				}
				if ci.compared {
					compared = append(compared, name)
				}
				if t.Failed() {
					failed = append(failed, name)
				}
			})
		}
	})
	sort.Strings(failed)
	sort.Slice(times, func(i, j int) bool { return times[i].secs > times[j].secs })
	var slow []string
	for _, x := range times[:min(5, len(times))] {
		slow = append(slow, fmt.Sprintf("%s %.1fs", x.name, x.secs))
	}
	t.Logf("%d images in %.0fs (children %.0fs; slowest %s; peak memory %d MiB, %s): %d readable, %d e2fsck-clean and compared with debugfs, %d failed: %s",
		len(times), time.Since(start).Seconds(), childSecs, strings.Join(slow, ", "), peakRSS>>10, peakName,
		len(opened), len(compared), len(failed), strings.Join(failed, " "))
}

func corpusImages(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if e.Type().IsRegular() && (strings.HasSuffix(n, ".img") || strings.HasSuffix(n, ".img.gz") || strings.HasSuffix(n, ".img.bz2")) {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no images")
	}
	return out, nil
}

func imageName(file string) string {
	n, _, _ := strings.Cut(file, ".img")
	return n
}

// corpusImage is one image's run.
type corpusImage struct {
	t                 *testing.T
	name, src, exe    string
	scratch           string
	res               childResult
	clean, compared   bool
	img, work, stderr string
	secs              float64 // the child's wall time
	rssKiB            int64   // the child's peak resident memory
	movedJournal      string  // a journal file e2fsck moved to the hidden inode
	want              map[string]*refEntry
}

func (ci *corpusImage) run() {
	t := ci.t
	ci.work = t.TempDir()
	ci.img = filepath.Join(ci.work, "image")
	if err := decompress(ci.src, ci.img); err != nil {
		t.Fatalf("decompressing: %v", err)
	}
	start := time.Now()
	ok := ci.runChild()
	ci.secs = time.Since(start).Seconds()
	if !ci.isClean() || !ok {
		return
	}
	if ci.res.OpenError != "" {
		t.Errorf("e2fsck finds the image clean and debugfs reads it, but domainm cannot: %s", ci.res.OpenError)
		return
	}
	diffs := ci.compareDebugfs()
	reason, waived := corpusDebugfsWaived[ci.name]
	switch {
	case waived && len(diffs) == 0:
		t.Errorf("same as debugfs, but listed in corpusDebugfsWaived (%s): remove it", reason)
	case waived:
		t.Logf("differs from debugfs in %d places, as expected (%s):\n  %s", len(diffs), reason, strings.Join(head(diffs, 5), "\n  "))
	case len(diffs) > 0:
		t.Errorf("e2fsck-clean image differs from debugfs in %d places:\n  %s", len(diffs), strings.Join(head(diffs, 15), "\n  "))
	}
}

// runChild runs the child and reports its failures; false when there is no result.
func (ci *corpusImage) runChild() bool {
	t := ci.t
	out := filepath.Join(ci.work, "result.json")
	ctx, cancel := context.WithTimeout(context.Background(), childWall)
	defer cancel()
	cmd := exec.CommandContext(ctx, ci.exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnvImage+"="+ci.img, childEnvOut+"="+out, "GOMAXPROCS=1", "GOTRACEBACK=single")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	ci.stderr = stderr.String()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		ci.rssKiB = ru.Maxrss
	}
	switch {
	case ctx.Err() != nil:
		t.Errorf("out of time: killed after %v", time.Since(start).Round(time.Second))
		return false
	case cmd.ProcessState.ExitCode() == exitCPU:
		t.Errorf("out of time: %d s of CPU used up after %v", childCPU, time.Since(start).Round(time.Second))
		return false
	case err != nil:
		what := "crashed"
		if strings.Contains(ci.stderr, "out of memory") {
			what = fmt.Sprintf("out of memory (cap %d MiB)", childMemCap>>20)
		}
		t.Errorf("%s: %v\n%s", what, err, tail(ci.stderr, 25))
		return false
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Errorf("child wrote no result: %v\n%s", err, tail(ci.stderr, 25))
		return false
	}
	if err := json.Unmarshal(b, &ci.res); err != nil {
		t.Fatalf("child result: %v", err)
	}
	r := &ci.res
	if r.Journal != "" {
		t.Logf("journal: %s", r.Journal)
	}
	if r.CollectError != "" {
		t.Errorf("baseline failed: %s", r.CollectError)
	}
	for _, s := range r.Internal {
		t.Errorf("parser bug (recovered panic): %s", s)
	}
	for what, cs := range map[string][]string{"right after the baseline": r.AfterBase, "after check --update": r.AfterUpdate} {
		if len(cs) > 0 {
			t.Errorf("check %s reports %d changes on the unchanged image:\n  %s", what, len(cs), strings.Join(head(cs, 10), "\n  "))
		}
	}
	return true
}

// isClean reports whether e2fsck -fn finds a copy of the image clean, after replaying
// its journal on the copy when it needs recovery (as the kernel does on mount), and
// debugfs can open that copy (e2fsck falls back to a backup superblock where debugfs and
// the kernel refuse the primary). It keeps debugfs's view of the copy in ci.want.
func (ci *corpusImage) isClean() bool {
	ref := filepath.Join(ci.work, "ref")
	if err := sparseCopy(ci.img, ref); err != nil {
		ci.t.Fatal(err)
	}
	if needsRecovery(ref) {
		out, code := tool(fsckDeadline, "e2fsck", "-E", "journal_only", "-y", ref)
		if code != 0 {
			return false
		}
		// e2fsck also moves a journal kept in a visible file (old ext3, f_journal) to the
		// hidden inode; the kernel leaves it where it is.
		if m := movedJournal.FindStringSubmatch(out); m != nil {
			ci.movedJournal = m[1]
		}
	}
	out, code := tool(fsckDeadline, "e2fsck", "-fn", ref)
	if code < 0 {
		ci.t.Logf("e2fsck -fn did not finish (%d s of CPU, %v): not compared with debugfs\n%s", toolCPU, fsckDeadline, tail(out, 3))
	}
	if code != 0 {
		return false
	}
	want, err := ci.debugfsTree(ref)
	if err != nil {
		ci.t.Logf("e2fsck -fn exits 0, but debugfs cannot read the image: not compared: %v", err)
		return false
	}
	ci.want, ci.clean = want, true
	return true
}

// needsRecovery reads the superblock's RECOVER flag (incompat 0x4).
func needsRecovery(img string) bool {
	f, err := os.Open(img)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [4]byte
	if _, err := f.ReadAt(b[:], 1024+0x60); err != nil {
		return false
	}
	return binary.LittleEndian.Uint32(b[:])&0x4 != 0
}

// tool runs a command with a wall-clock deadline and, through prlimit where it is
// installed, a CPU-time limit; code is its exit code, -1 when it was killed.
func tool(d time.Duration, name string, args ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if _, err := exec.LookPath("prlimit"); err == nil {
		args = append([]string{fmt.Sprintf("--cpu=%d", toolCPU), name}, args...)
		name = "prlimit"
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	var buf capped
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	out := buf.b.Bytes()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return string(out), -1
	case errors.As(err, &ee) && ee.ExitCode() < 0:
		return string(out), -1 // killed by a signal: SIGXCPU
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		return err.Error(), -1
	}
	return string(out), 0
}

// capped keeps the first toolOutput bytes written to it.
type capped struct{ b bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if room := toolOutput - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// refEntry is what debugfs says of one path.
type refEntry struct {
	typ        string
	mode       uint32
	uid, gid   uint32
	inode      uint64
	size       int64 // regular files and symlinks
	sha256     string
	link       string
	hasContent bool
}

var movedJournal = regexp.MustCompile(`Moving journal from (/\S+) to hidden inode`)

var lsLine = regexp.MustCompile(`^/(\d+)/([0-7]+)/(\d+)/(\d+)/(.*)/(\d*)/$`)

// debugfsTree lists the image with debugfs: ls -p directory by directory (by inode
// number, so no name needs quoting), then rdump for contents and link targets.
func (ci *corpusImage) debugfsTree(ref string) (map[string]*refEntry, error) {
	tree := map[string]*refEntry{}
	dirs := map[uint64]string{2: "/"}
	for round := 0; len(dirs) > 0; round++ {
		if round > 256 {
			return nil, errors.New("directories nested more than 256 deep")
		}
		var script strings.Builder
		for ino := range dirs {
			fmt.Fprintf(&script, "ls -p <%d>\n", ino)
		}
		f := filepath.Join(ci.work, "ls.cmds")
		if err := os.WriteFile(f, []byte(script.String()), 0o600); err != nil {
			return nil, err
		}
		out, code := tool(toolDeadline, "debugfs", "-f", f, ref)
		if code != 0 || strings.Contains(out, "while trying to open") {
			return nil, fmt.Errorf("debugfs ls: exit %d: %s", code, tail(out, 5))
		}
		next := map[uint64]string{}
		var cur string
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			l := sc.Text()
			if s, ok := strings.CutPrefix(l, "debugfs: ls -p <"); ok {
				n, _ := strconv.ParseUint(strings.TrimSuffix(s, ">"), 10, 64)
				cur = dirs[n]
				continue
			}
			m := lsLine.FindStringSubmatch(l)
			if m == nil || cur == "" {
				continue
			}
			ino, _ := strconv.ParseUint(m[1], 10, 64)
			mode, _ := strconv.ParseUint(m[2], 8, 32)
			uid, _ := strconv.ParseUint(m[3], 10, 32)
			gid, _ := strconv.ParseUint(m[4], 10, 32)
			size, _ := strconv.ParseInt(m[6], 10, 64)
			name := m[5]
			p := path.Join(cur, name)
			switch {
			case ino == 0 || name == "..":
				continue
			case name == ".":
				if cur != "/" {
					continue
				}
				p = "/"
			}
			e := &refEntry{typ: typeOfMode(uint32(mode)), mode: uint32(mode) & 0o7777, uid: uint32(uid), gid: uint32(gid), inode: ino, size: size}
			tree[p] = e
			if e.typ == "dir" && name != "." {
				next[ino] = p
			}
		}
		dirs = next
	}
	if tree["/"] == nil {
		return nil, errors.New("debugfs listed no root directory")
	}
	// rdump writes the tree's contents and link targets.
	dump, err := os.MkdirTemp(ci.scratch, "rdump-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dump)
	if out, code := tool(toolDeadline, "debugfs", "-R", "rdump / "+dump, ref); code != 0 {
		return nil, fmt.Errorf("debugfs rdump: exit %d: %s", code, tail(out, 5))
	}
	for p, e := range tree {
		host := filepath.Join(dump, filepath.FromSlash(p))
		switch e.typ {
		case "file":
			// The content is the first i_size bytes: debugfs 1.47.0 dumps an inline-data
			// file's whole inline area instead (d_inline_dump: 60 bytes for a 20-byte file).
			sum, err := fileSHA256(host, e.size)
			if err == nil {
				e.sha256, e.hasContent = sum, true
			}
		case "symlink":
			if l, err := os.Readlink(host); err == nil {
				e.link, e.hasContent = l, true
			}
		}
	}
	return tree, nil
}

func typeOfMode(m uint32) string {
	switch m & 0o170000 {
	case 0o100000:
		return "file"
	case 0o040000:
		return "dir"
	case 0o120000:
		return "symlink"
	case 0o020000:
		return "chardev"
	case 0o060000:
		return "blockdev"
	case 0o010000:
		return "fifo"
	case 0o140000:
		return "socket"
	}
	return "unknown"
}

// compareDebugfs compares the baseline the child wrote with debugfs's view of the
// (journal-replayed) copy and returns the differences.
func (ci *corpusImage) compareDebugfs() []string {
	_, recs, _, err := ReadDB(filepath.Join(ci.work, "result.json.db"))
	if err != nil {
		ci.t.Fatalf("reading the child's baseline: %v", err)
	}
	ci.compared = true
	var diffs []string
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r.Path] = true
		w, ok := ci.want[r.Path]
		if !ok && r.Path == ci.movedJournal {
			continue
		}
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%q: in domainm, not in debugfs", r.Path))
			continue
		}
		diffs = append(diffs, diffEntry(r, w)...)
	}
	for p := range ci.want {
		if !seen[p] {
			diffs = append(diffs, fmt.Sprintf("%q: in debugfs, not in domainm", p))
		}
	}
	sort.Strings(diffs)
	return diffs
}

func diffEntry(r *Record, w *refEntry) []string {
	var d []string
	add := func(attr string, got, want any) {
		d = append(d, fmt.Sprintf("%q: %s %v, debugfs %v", r.Path, attr, got, want))
	}
	if r.Err != "" {
		d = append(d, fmt.Sprintf("%q: unreadable: %s", r.Path, r.Err))
	}
	if r.Type != w.typ {
		add("type", r.Type, w.typ)
		return d
	}
	if r.Mode != w.mode {
		add("mode", fmt.Sprintf("%04o", r.Mode), fmt.Sprintf("%04o", w.mode))
	}
	if r.UID != w.uid || r.GID != w.gid {
		add("owner", fmt.Sprintf("%d:%d", r.UID, r.GID), fmt.Sprintf("%d:%d", w.uid, w.gid))
	}
	if r.Inode != w.inode {
		add("inode", r.Inode, w.inode)
	}
	switch w.typ {
	case "file":
		if r.Size != w.size {
			add("size", r.Size, w.size)
		}
		if !w.hasContent {
			d = append(d, fmt.Sprintf("%q: debugfs rdump did not write it", r.Path))
		} else if r.Hashes.SHA256 != w.sha256 {
			add("sha256", r.Hashes.SHA256, w.sha256)
		}
	case "symlink":
		if r.Size != w.size {
			add("size", r.Size, w.size)
		}
		if !w.hasContent {
			d = append(d, fmt.Sprintf("%q: debugfs rdump did not write it", r.Path))
		} else if r.Link != w.link {
			add("link", strconv.Quote(r.Link), strconv.Quote(w.link))
		}
	}
	return d
}

// fileSHA256 hashes at most the first n bytes of a host file.
func fileSHA256(p string, n int64) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil && err != io.EOF {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// decompress writes the image (gzip, bzip2 or plain) sparsely: all-zero blocks
// become holes, so the largest images cost little disk.
func decompress(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = bufio.NewReaderSize(f, 1<<20)
	switch {
	case strings.HasSuffix(src, ".gz"):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		r = zr
	case strings.HasSuffix(src, ".bz2"):
		r = bzip2.NewReader(r)
	}
	return writeSparse(r, dst)
}

func sparseCopy(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	return writeSparse(f, dst)
}

func writeSparse(r io.Reader, dst string) error {
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if !allZero(buf[:n]) {
				if _, werr := out.WriteAt(buf[:n], off); werr != nil {
					out.Close()
					return werr
				}
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Truncate(off); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func head(l []string, n int) []string {
	if len(l) > n {
		return append(l[:n:n], fmt.Sprintf("... and %d more", len(l)-n))
	}
	return l
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

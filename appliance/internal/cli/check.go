package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/filescan"
	"github.com/domainm/domainm/detectors/integrity"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/diskscan"
	"github.com/domainm/domainm/internal/units"
)

func init() {
	register(command{
		name:    "check",
		summary: "compare a disk image with its file-integrity baseline",
		run:     runCheck,
		exits: []exit{
			{ExitClean, "nothing added, removed or changed, and no YARA finding"},
			{ExitFindings, "changes or YARA findings (reported; with --update the baseline is updated)"},
			{ExitError, "an error: unreadable image or baseline DB, rules that do not compile"},
		},
		examples: []string{
			"domainm check --image /var/lib/libvirt/images/web-1.qcow2 --db /var/lib/domainm/web-1.db",
			`domainm check --image web-1.raw --db web-1.db --rules /etc/domainm/rules --max-file-size 128MiB --json 2>summary.json | jq -c 'select(.detector == "integrity")'`,
		},
	})
}

const diskCheckHelp = `
Walk the target's disk image again (read in user space, never mounted) with the policy
stored in the baseline, and report every entry added, removed or changed since, with
the value of each changed attribute before and after. Contents are re-hashed unless a
selection of the policy sets trust_metadata and the inode metadata is unchanged.

With --rules, new and changed regular files are also scanned with YARA (external
variables filename, filepath (the folder), extension, filetype, md5 and owner as in
Loki/THOR).
With --update, the new state becomes the baseline (written atomically) after the report.

With --json, every change and YARA finding is one JSON object per line on stdout (changes
have "detector":"integrity", findings "detector":"yara-file"), in the alert schema's forms
(file.mode "0644", uid, gid and inode as strings, rule.name, file.path; README: JSON
output); the summary goes to stderr.`

// diskCheckSummary is check's summary (stderr with --json).
type diskCheckSummary struct {
	Image        string    `json:"image"`
	DB           string    `json:"db"`
	BaselineTime time.Time `json:"baseline_created"`
	PolicySHA256 string    `json:"policy_sha256"`
	Entries      int64     `json:"entries"`
	Added        int       `json:"added"`
	Removed      int       `json:"removed"`
	Changed      int       `json:"changed"`
	Findings     int       `json:"findings"`
	HashedFiles  int64     `json:"hashed_files"`
	HashedBytes  int64     `json:"hashed_bytes"`
	Reused       int64     `json:"hashes_reused"`
	Unreadable   int64     `json:"unreadable"`
	YaraScanned  int64     `json:"yara_scanned,omitempty"`
	YaraSkipped  []string  `json:"yara_skipped,omitempty"`
	Seconds      float64   `json:"seconds"`
	Updated      bool      `json:"baseline_updated"`
}

func runCheck(ctx context.Context, env Env, args []string) (int, error) {
	fs := newFlags(env, "check", "check --image IMG --db DB [--json] [--update] [--rules DIR] [options]", diskCheckHelp)
	var d diskFlags
	d.register(fs)
	db := fs.String("db", "", "baseline `DB` made by domainm baseline")
	update := fs.Bool("update", false, "after reporting, make the current state the baseline")
	rulesDir := fs.String("rules", "", "YARA rules `DIR`: scan new and changed files")
	maxSize := units.Size(filescan.DefaultMaxSize)
	fs.Var(&maxSize, "max-file-size", "YARA: skip files larger than this `SIZE` (64MiB; a bare number is bytes)")
	if err := parse(env, fs, args); err != nil {
		return ExitError, err
	}
	if err := d.check(); err != nil {
		return ExitError, err
	}
	if *db == "" {
		return ExitError, errors.New("--db is required (see --help)")
	}
	base, err := integrity.OpenBaseline(*db)
	if err != nil {
		return ExitError, err
	}
	hdr := base.Header
	var rules *yara.Rules
	if *rulesDir != "" {
		if rules, err = compileDiskRules(env, "check", *rulesDir); err != nil {
			return ExitError, err
		}
	}
	part := d.partition
	if !flagSet(fs, "partition") {
		part = hdr.Image.Partition
	}
	format := d.format
	if !flagSet(fs, "format") {
		format = hdr.Image.Format // as at baseline time: never probe again
	}
	fsys, closer, img, err := integrity.OpenImage(d.image, format, part)
	if err != nil {
		return ExitError, err
	}
	defer closer.Close()
	warnJournal(env.Stderr, d.image, fsys)

	start := time.Now()
	opt := integrity.CheckOptions{Workers: d.workers, Log: slog.Default(), Counters: &integrity.Counters{}}
	var w *integrity.DBWriter
	if *update {
		if w, err = integrity.CreateDB(*db, integrity.NewHeader(base.Policy, img, start)); err != nil {
			return ExitError, err
		}
		defer w.Abort()
		opt.Record = w.Add
	}
	stop := diskProgress(env, d.quiet, "check", expectedHashBytes(base.Records), &opt.Counters.Hashed, &opt.Counters.Bytes)
	changes, st, err := integrity.Check(ctx, fsys, base, opt)
	stop()
	if err != nil {
		return ExitError, err
	}

	sum := diskCheckSummary{Image: d.image, DB: *db, BaselineTime: hdr.Created, PolicySHA256: hdr.PolicySHA256,
		Entries: st.Records, HashedFiles: st.Hashed, HashedBytes: st.Bytes, Reused: st.Reused, Unreadable: st.Errors}
	for _, c := range changes {
		switch c.Kind {
		case integrity.Added:
			sum.Added++
		case integrity.Removed:
			sum.Removed++
		default:
			sum.Changed++
		}
	}
	var ys filescan.Result
	if rules != nil {
		sc := &filescan.Scanner{FS: fsys, Rules: rules, MaxSize: int64(maxSize), Workers: d.workers,
			Target: detectors.Target{Name: d.image, Source: d.image}}
		stop := diskProgress(env, d.quiet, "yara", 0, &sc.Files, &sc.Bytes)
		err := sc.ScanChanged(ctx, changes)
		stop()
		if err != nil {
			return ExitError, err
		}
		ys = sc.Result()
		sum.Findings, sum.YaraScanned, sum.YaraSkipped = len(ys.Findings), sc.Files.Load(), ys.Skipped
	}
	findings := ys.Findings
	sum.Seconds = time.Since(start).Seconds()
	// Report first, then update: the report of what changed is never lost to a failed write.
	if d.json {
		if err := printCheckJSON(env, changes, findings); err != nil {
			return ExitError, err
		}
	} else {
		printCheck(env.Stdout, changes, findings, sum)
	}
	if w != nil {
		if err := w.Commit(st); err != nil {
			return ExitError, err
		}
		sum.Updated = true
		if !d.json {
			fmt.Fprintf(env.Stdout, "\nbaseline %s updated\n", *db)
		}
	}
	if d.json {
		json.NewEncoder(env.Stderr).Encode(sum)
	}
	for _, e := range ys.Errors {
		fmt.Fprintf(env.Stderr, "domainm check: yara: %s: %s\n", diskSafe(e.Path), diskSafe(e.Error))
	}
	if len(changes) > 0 || len(findings) > 0 {
		return ExitFindings, nil
	}
	return ExitClean, nil
}

// flagSet reports whether the flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// expectedHashBytes sizes the progress bar: the bytes hashed at baseline time.
func expectedHashBytes(recs []*integrity.Record) int64 {
	var n int64
	for _, r := range recs {
		if r.Type == diskscan.Regular.String() && r.Attrs&integrity.HashAttrs != 0 {
			n += r.Size
		}
	}
	return n
}

// compileDiskRules compiles a rules folder; an empty folder is a warning.
func compileDiskRules(env Env, cmd, dir string) (*yara.Rules, error) {
	rules, err := yara.Compile(dir)
	if errors.Is(err, yara.ErrNoRules) {
		fmt.Fprintf(env.Stderr, "domainm %s: warning: %v: nothing can match\n", cmd, err)
		return rules, nil
	}
	return rules, err
}

func printCheckJSON(env Env, changes []integrity.Change, findings []detectors.Finding) error {
	enc := json.NewEncoder(env.Stdout)
	for _, c := range changes {
		if err := enc.Encode(toChangeJSON(c)); err != nil {
			return err
		}
	}
	for _, f := range findings {
		if err := enc.Encode(toFindingJSON(f)); err != nil {
			return err
		}
	}
	return nil
}

// typeChar is AIDE's one-letter file type.
func typeChar(t string) string {
	switch t {
	case "file":
		return "f"
	case "dir":
		return "d"
	case "symlink":
		return "l"
	case "chardev":
		return "c"
	case "blockdev":
		return "b"
	case "fifo":
		return "p"
	case "socket":
		return "s"
	}
	return "?"
}

func printCheck(w io.Writer, changes []integrity.Change, findings []detectors.Finding, sum diskCheckSummary) {
	fmt.Fprintf(w, "domainm check %s against %s (baseline of %s)\n", sum.Image, sum.DB, sum.BaselineTime.Format(time.RFC3339))
	fmt.Fprintf(w, "%d entries: %d added, %d removed, %d changed", sum.Entries, sum.Added, sum.Removed, sum.Changed)
	if sum.YaraScanned > 0 || sum.Findings > 0 {
		fmt.Fprintf(w, "; yara: %d files scanned, %d findings", sum.YaraScanned, sum.Findings)
	}
	fmt.Fprintf(w, " (%d files hashed, %.1f MB, %.2fs)\n", sum.HashedFiles, float64(sum.HashedBytes)/1e6, sum.Seconds)
	var kind integrity.ChangeKind
	for _, c := range changes {
		if c.Kind != kind {
			kind = c.Kind
			fmt.Fprintf(w, "\n%s entries:\n", strings.ToUpper(string(kind[:1]))+string(kind[1:]))
		}
		fmt.Fprintf(w, "  %s %s", typeChar(c.Type), diskSafe(c.Path))
		if c.Rule != "" {
			fmt.Fprintf(w, "  [%s]", c.Rule)
		}
		fmt.Fprintln(w)
		if r := c.After; c.Kind == integrity.Added && r != nil {
			fmt.Fprintf(w, "      %s\n", describeRecord(r))
		}
		for _, a := range c.Attrs {
			fmt.Fprintf(w, "      %-7s %s\n      %-7s %s\n", a.Attr, "- "+orNone(diskSafe(a.Before)), "", "+ "+orNone(diskSafe(a.After)))
		}
	}
	if len(findings) > 0 {
		fmt.Fprintln(w, "\nYARA findings:")
		printFindings(w, findings)
	}
}

// describeRecord summarises a new entry in one line: mode, owner, size, link target.
func describeRecord(r *integrity.Record) string {
	if r.Err != "" && r.Inode == 0 {
		return "unreadable: " + diskSafe(r.Err)
	}
	s := fmt.Sprintf("mode %s  uid %d  gid %d  size %d", integrity.FormatMode(r.Type, r.Mode), r.UID, r.GID, r.Size)
	if r.Type == diskscan.Symlink.String() {
		s += "  -> " + diskSafe(r.Link)
	}
	if c := integrity.FormatCaps(r.Xattrs["security.capability"]); c != "" {
		s += "  caps " + c
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/domainm/domainm/appliance/internal/config"
	"github.com/domainm/domainm/appliance/internal/supervisor"
	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/filescan"
	"github.com/domainm/domainm/detectors/integrity"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/diskscan"
)

// daemonDisk is the supervisor's disk checker: AIDE's check against the baseline DB,
// the same code path as `domainm check`. The daemon never updates the baseline (the
// operator does, after review, with `domainm check --update`); when there is none yet
// it records one first, as `aide --init` would, and says so in an alert.
type daemonDisk struct {
	image     string
	format    string // "raw" or "qcow2", from the config: never probed
	partition int
	policy    string // "" for the built-in policy
	db        string
	log       *slog.Logger
}

var _ supervisor.DiskChecker = (*daemonDisk)(nil)

func newDiskChecker(cfg *config.Config, log *slog.Logger) (supervisor.DiskChecker, error) {
	part := -1
	if cfg.Target.Partition != "auto" {
		n, err := strconv.Atoi(cfg.Target.Partition)
		if err != nil {
			return nil, fmt.Errorf("target.partition %q: %w", cfg.Target.Partition, err)
		}
		part = n
	}
	// Read the policy now so that a broken one stops the start, not the first check.
	if _, err := loadIntegrityPolicy(cfg.Target.Policy); err != nil {
		return nil, err
	}
	d := &daemonDisk{image: cfg.Target.Disk, format: cfg.Target.DiskFormat, partition: part, policy: cfg.Target.Policy,
		db: cfg.Target.Baseline, log: log.With("component", "disk")}
	return storageProbe{DiskChecker: d, image: d.image, db: d.db}, nil
}

// Check compares the image with the baseline (integrity.Check, as `domainm check`)
// and YARA-scans new and changed files with the running rules (filescan); with no
// baseline yet it records one and returns a single finding saying so.
func (d *daemonDisk) Check(ctx context.Context, rules *yara.Rules) (supervisor.DiskReport, error) {
	if _, err := os.Stat(d.db); errors.Is(err, fs.ErrNotExist) {
		return d.initBaseline(ctx)
	}
	var rep supervisor.DiskReport
	base, err := integrity.OpenBaseline(d.db)
	if err != nil {
		return rep, err
	}
	fsys, closer, _, err := integrity.OpenImage(d.image, d.format, d.partition)
	if err != nil {
		return rep, err
	}
	defer closer.Close()
	d.warnJournal(fsys)
	changes, st, err := integrity.Check(ctx, fsys, base, integrity.CheckOptions{Workers: 1, Log: d.log})
	if err != nil {
		return rep, err
	}
	now := time.Now().UTC()
	for _, c := range changes {
		rep.Findings = append(rep.Findings, c.Finding(detectors.Target{}, now))
	}
	rep.Entries = st.Records
	if rules != nil && rules.Count() > 0 {
		// New and changed files get a YARA scan with the running rules.
		sc := &filescan.Scanner{FS: fsys, Rules: rules, MaxSize: filescan.DefaultMaxSize, Workers: 1}
		if err := sc.ScanChanged(ctx, changes); err != nil {
			return rep, fmt.Errorf("yara over changed files: %w", err)
		}
		res := sc.Result()
		for _, e := range res.Errors {
			d.log.Warn("changed file not scanned", "path", e.Path, "err", e.Error)
		}
		rep.Findings = append(rep.Findings, res.Findings...)
	}
	d.log.Debug("disk checked", "entries", st.Records, "hashed", st.Hashed, "reused", st.Reused, "changes", len(changes))
	return rep, nil
}

// warnJournal logs a journal that is not applied as the guest's kernel would apply it
// (diskscan.JournalError).
func (d *daemonDisk) warnJournal(fsys diskscan.FS) {
	if err := diskscan.JournalError(fsys); err != nil {
		d.log.Warn("disk journal not replayed as the guest's kernel would", "image", d.image, "err", err)
	}
}

func (d *daemonDisk) initBaseline(ctx context.Context) (supervisor.DiskReport, error) {
	var rep supervisor.DiskReport
	p, err := loadIntegrityPolicy(d.policy)
	if err != nil {
		return rep, err
	}
	fsys, closer, img, err := integrity.OpenImage(d.image, d.format, d.partition)
	if err != nil {
		return rep, err
	}
	defer closer.Close()
	d.warnJournal(fsys)
	if err := os.MkdirAll(filepath.Dir(d.db), 0o700); err != nil {
		return rep, fmt.Errorf("baseline folder: %w", err)
	}
	start := time.Now()
	st, err := integrity.RecordBaseline(ctx, fsys, p, integrity.NewHeader(p, img, start), d.db, integrity.Options{Workers: 1, Log: d.log}, nil)
	if err != nil {
		return rep, err
	}
	d.log.Info("baseline recorded", "db", d.db, "entries", st.Records, "took", time.Since(start))
	return supervisor.DiskReport{BaselineCreated: true, Entries: st.Records}, nil
}

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/domainm/domainm/detectors/integrity"
	"github.com/domainm/domainm/rules/policy"
)

func init() {
	register(command{
		name:    "baseline",
		summary: "record a file-integrity baseline of a disk image",
		run:     runBaseline,
		exits: []exit{
			{ExitClean, "baseline written (entries that could not be read are warned about and recorded as such)"},
			{ExitError, "an error: unreadable image, invalid policy, DB not written (the previous one is kept)"},
		},
		examples: []string{
			"domainm baseline --image /var/lib/libvirt/images/web-1.qcow2 --format qcow2 --db /var/lib/domainm/web-1.db",
			"domainm baseline --image web-1.raw --policy /etc/domainm/policy.toml --db web-1.db --json",
		},
	})
}

const diskBaselineHelp = `
Walk the filesystem in a target's disk image (raw or qcow2, bare or partitioned; read
in user space, never mounted), record what the policy selects (type, mode, owner,
size, times, inode, links, capabilities, content hashes) and write the baseline DB
atomically: a crash leaves the previous baseline complete. The policy text is stored
in the DB, so "domainm check" needs only the image and the DB.

Without --policy the shipped default policy (rules/policy/default.toml) is used.

Give --format when you know it: probing trusts the image's first bytes, and a guest can
write a qcow2 header into its raw disk that names a host file as backing file. The
format found is recorded, and "domainm check" opens the image the same way.`

func runBaseline(ctx context.Context, env Env, args []string) (int, error) {
	fs := newFlags(env, "baseline", "baseline --image IMG --db DB [--policy P] [options]", diskBaselineHelp)
	var d diskFlags
	d.register(fs)
	policyFile := fs.String("policy", "", "file-integrity policy `FILE` (TOML); default: the shipped policy")
	db := fs.String("db", "", "baseline `DB` to write")
	if err := parse(env, fs, args); err != nil {
		return ExitError, err
	}
	if err := d.check(); err != nil {
		return ExitError, err
	}
	if *db == "" {
		return ExitError, fmt.Errorf("--db is required (see --help)")
	}
	p, err := loadIntegrityPolicy(*policyFile)
	if err != nil {
		return ExitError, err
	}
	fsys, closer, img, err := integrity.OpenImage(d.image, d.format, d.partition)
	if err != nil {
		return ExitError, err
	}
	defer closer.Close()
	warnJournal(env.Stderr, d.image, fsys)

	start := time.Now()
	var cnt integrity.Counters
	stop := diskProgress(env, d.quiet, "baseline", 0, &cnt.Hashed, &cnt.Bytes)
	var unreadable []diskPathError
	st, err := integrity.RecordBaseline(ctx, fsys, p, integrity.NewHeader(p, img, start), *db,
		integrity.Options{Workers: d.workers, Counters: &cnt, Log: slog.Default()},
		func(r *integrity.Record) {
			if r.Err != "" {
				unreadable = append(unreadable, diskPathError{Path: r.Path, Error: r.Err})
			}
		})
	stop()
	if err != nil {
		return ExitError, err
	}
	elapsed := time.Since(start)
	if d.json {
		out := struct {
			DB           string              `json:"db"`
			Image        integrity.ImageInfo `json:"image"`
			PolicyFile   string              `json:"policy_file"`
			PolicySHA256 string              `json:"policy_sha256"`
			Stats        integrity.Stats     `json:"stats"`
			Seconds      float64             `json:"seconds"`
			Unreadable   []diskPathError     `json:"unreadable,omitempty"`
		}{*db, img, p.File, p.Hash, st, elapsed.Seconds(), unreadable}
		return ExitClean, diskJSON(env, out)
	}
	fmt.Fprintf(env.Stdout, "baseline %s: %d entries recorded (%d walked), %d files hashed, %.1f MB in %.2fs (%.0f files/s, %.1f MB/s)\n",
		*db, st.Records, st.Entries, st.Hashed, float64(st.Bytes)/1e6, elapsed.Seconds(),
		float64(st.Hashed)/elapsed.Seconds(), diskMBps(st.Bytes, elapsed))
	for _, u := range unreadable {
		fmt.Fprintf(env.Stderr, "warning: %s: %s\n", diskSafe(u.Path), diskSafe(u.Error))
	}
	return ExitClean, nil
}

// loadIntegrityPolicy reads a policy file, or the shipped default for "".
func loadIntegrityPolicy(file string) (*integrity.Policy, error) {
	if file == "" {
		return integrity.ParsePolicy(policy.DefaultFile, policy.Default)
	}
	return integrity.LoadPolicy(file)
}

func diskJSON(env Env, v any) error {
	enc := json.NewEncoder(env.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

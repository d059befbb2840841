package cli

import (
	"fmt"
	"strconv"
	"time"

	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/integrity"
)

// The --json lines of scan-memory, scan-disk and check take the alert schema's forms
// (appliance/internal/alert/schema/event.schema.json) and its ECS field names where
// one exists, so that a script reads a finding the same way from the command line and
// from a sink:
//   - addresses (guest-physical, process and kernel virtual) are "0x..." lower-case hex
//     strings, as domainm.matches[].address; a file match has its offset, an integer
//   - rule.name and rule.ruleset (ECS) name the rule and its file's namespace (the
//     policy selection for integrity changes, whose rule.name is integrity-<state>)
//   - file.* (ECS): path, type (file, dir, symlink, char, block, fifo, socket), mode as
//     an octal string ("0644"), uid, gid and inode as strings, target_path for a
//     symlink, hash.sha256
//   - integrity changes are state (added, removed, changed) and changes[] of
//     {attribute, before, after}, as domainm.state and domainm.changes
//   - @timestamp (ECS) is when the finding was made
// README's "JSON output" section documents them.

// findingJSON is one YARA finding line (yara-memory, yara-file). Its rule, target,
// process and matches are the alert event's types (rule.*, domainm.target,
// domainm.matches[]), built by the alert package's MatchOf, so the two cannot drift.
type findingJSON struct {
	Detector        string              `json:"detector"`
	Rule            alert.Rule          `json:"rule"`
	Tags            []string            `json:"tags,omitempty"`
	Meta            map[string]string   `json:"meta,omitempty"`
	File            *fileJSON           `json:"file,omitempty"`    // file findings: file.path
	Process         *alert.MatchProcess `json:"process,omitempty"` // memory: the first process holding the first attributed match (ECS process.pid, process.name; its virtual address)
	Matches         []alert.Match       `json:"matches,omitempty"`
	MatchesCut      int                 `json:"matches_cut,omitempty"`
	WindowDependent bool                `json:"window_dependent,omitempty"`
	Timestamp       time.Time           `json:"@timestamp"`
	Target          alert.Target        `json:"target"` // hypervisor_host, not host
}

func toFindingJSON(f detectors.Finding) findingJSON {
	out := findingJSON{Detector: f.Detector, Rule: alert.Rule{Name: f.Rule, Ruleset: f.Namespace}, Tags: f.Tags, Meta: f.Meta,
		MatchesCut: f.MatchesCut, WindowDependent: f.WindowDependent, Timestamp: f.Time, Target: alert.Target(f.Target)}
	memory := f.Path == ""
	if p := f.Process; p != nil {
		out.Process = &alert.MatchProcess{PID: p.PID, Name: p.Name, Address: alert.HexAddr(p.Address)}
	}
	if !memory {
		out.File = &fileJSON{Path: f.Path}
	}
	for _, m := range f.Matches {
		out.Matches = append(out.Matches, alert.MatchOf(m, memory))
	}
	return out
}

// changeJSON is one integrity change line.
type changeJSON struct {
	Detector string         `json:"detector"` // integrity
	State    string         `json:"state"`    // added, removed, changed
	Rule     alert.Rule     `json:"rule"`     // integrity-<state>, the policy selection
	File     fileJSON       `json:"file"`     // the entry now (as last known, when removed)
	Before   *fileJSON      `json:"file_before,omitempty"`
	Changes  []alert.Change `json:"changes,omitempty"` // as domainm.changes
}

// fileJSON is ECS file.* (nlink, caps, xattrs and error have no ECS field).
type fileJSON struct {
	Path       string            `json:"path"`
	PathRaw    []byte            `json:"path_raw,omitempty"` // Path byte for byte when it is not UTF-8
	Type       string            `json:"type,omitempty"`
	Mode       string            `json:"mode,omitempty"`
	UID        string            `json:"uid,omitempty"`
	GID        string            `json:"gid,omitempty"`
	Size       *int64            `json:"size,omitempty"`
	Mtime      time.Time         `json:"mtime,omitzero"`
	Ctime      time.Time         `json:"ctime,omitzero"`
	Inode      string            `json:"inode,omitempty"`
	Nlink      *uint32           `json:"nlink,omitempty"`
	TargetPath string            `json:"target_path,omitempty"`
	Caps       string            `json:"caps,omitempty"`
	Xattrs     integrity.Xattrs  `json:"xattrs,omitempty"`
	Hash       *integrity.Hashes `json:"hash,omitempty"`
	Error      string            `json:"error,omitempty"`
}

func octalMode(m uint32) string { return fmt.Sprintf("%04o", m&0o7777) }

func recordJSON(r *integrity.Record) *fileJSON {
	if r == nil {
		return nil
	}
	f := &fileJSON{Path: r.Path, PathRaw: r.PathRaw, Type: alert.ECSFileType(r.Type), Error: r.Err}
	if r.Inode == 0 && r.Err != "" {
		return f // nothing could be read but the error
	}
	size, nlink := r.Size, r.Nlink
	f.Mode, f.UID, f.GID, f.Size = octalMode(r.Mode), strconv.FormatUint(uint64(r.UID), 10), strconv.FormatUint(uint64(r.GID), 10), &size
	f.Mtime, f.Ctime, f.Inode, f.Nlink = r.Mtime, r.Ctime, strconv.FormatUint(r.Inode, 10), &nlink
	f.TargetPath, f.Xattrs = r.Link, r.Xattrs
	if c := integrity.FormatCaps(r.Xattrs["security.capability"]); c != "" {
		f.Caps = c
	}
	if r.Hashes != (integrity.Hashes{}) {
		h := r.Hashes
		f.Hash = &h
	}
	return f
}

func toChangeJSON(c integrity.Change) changeJSON {
	out := changeJSON{Detector: integrity.Detector, State: string(c.Kind),
		Rule: alert.Rule{Name: "integrity-" + string(c.Kind), Ruleset: c.Rule}}
	now, before := c.After, c.Before
	if c.Kind == integrity.Removed {
		now, before = c.Before, nil
	}
	if f := recordJSON(now); f != nil {
		out.File = *f
	}
	out.File.Path, out.File.PathRaw, out.File.Type = c.Path, c.PathRaw, alert.ECSFileType(c.Type)
	out.Before = recordJSON(before)
	for _, a := range c.Attrs {
		out.Changes = append(out.Changes, alert.Change{Attribute: a.Attr, Before: a.Before, After: a.After})
	}
	return out
}

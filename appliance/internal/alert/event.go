package alert

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/domainm/domainm/detectors"
)

// Event is one alert in Elastic Common Schema field names (ECS 8.x), plus Domain M's
// own fields under "domainm". Its JSON encoding is what the JSON sinks send and what
// the syslog sinks carry as MSG. Build events with FromFinding, RuleError or Health.
type Event struct {
	Timestamp time.Time  `json:"@timestamp"`
	ECS       ECSMeta    `json:"ecs"` // the ECS version of the field names (ecs.go)
	Message   string     `json:"message"`
	Tags      []string   `json:"tags,omitempty"`
	Event     EventMeta  `json:"event"`
	Log       LogMeta    `json:"log"`
	Rule      *Rule      `json:"rule,omitempty"`
	Host      *Host      `json:"host,omitempty"`
	Observer  Observer   `json:"observer"`
	File      *File      `json:"file,omitempty"`
	Process   *Process   `json:"process,omitempty"`
	Threat    *Threat    `json:"threat,omitempty"`
	Error     *ErrorInfo `json:"error,omitempty"`
	DomainM   Details    `json:"domainm"`
}

// EventMeta is ECS event.*.
type EventMeta struct {
	ID       string    `json:"id"`                 // unique per occurrence, kept across re-delivery
	Kind     string    `json:"kind"`               // alert, event
	Category []string  `json:"category"`           // intrusion_detection, malware, file, configuration, host
	Type     []string  `json:"type"`               // indicator, change, creation, deletion, error, info, start, end
	Action   string    `json:"action"`             // e.g. memory-match, file-changed, rule-error
	Severity int       `json:"severity"`           // Severity.ECS
	Created  time.Time `json:"created"`            // when Domain M made the event
	Dataset  string    `json:"dataset"`            // domainm.alert
	Module   string    `json:"module"`             // domainm
	Provider string    `json:"provider,omitempty"` // the detector
	Reason   string    `json:"reason,omitempty"`
}

// LogMeta is ECS log.*: the level and its syslog form.
type LogMeta struct {
	Level  string    `json:"level"`
	Syslog LogSyslog `json:"syslog"`
}

// LogSyslog is ECS log.syslog.*.
type LogSyslog struct {
	Severity struct {
		Code int    `json:"code"`
		Name string `json:"name"`
	} `json:"severity"`
}

// Rule is ECS rule.*: the YARA rule and its namespace.
type Rule struct {
	Name        string `json:"name"`
	Ruleset     string `json:"ruleset,omitempty"`
	ID          string `json:"id,omitempty"`
	Description string `json:"description,omitempty"`
	Author      string `json:"author,omitempty"`
	Reference   string `json:"reference,omitempty"`
	Version     string `json:"version,omitempty"`
}

// Host is ECS host.*: the watched VM (the target), not the appliance.
type Host struct {
	Name string `json:"name,omitempty"`
	ID   string `json:"id,omitempty"` // the VM's UUID
	Type string `json:"type,omitempty"`
}

// Observer is ECS observer.*: the Domain M appliance that saw it.
type Observer struct {
	Hostname string `json:"hostname,omitempty"`
	Product  string `json:"product"`
	Vendor   string `json:"vendor"`
	Type     string `json:"type"`
	Version  string `json:"version,omitempty"`
}

// File is ECS file.*, for file matches and integrity changes (after-values).
type File struct {
	Path       string    `json:"path"`
	Name       string    `json:"name,omitempty"`
	Extension  string    `json:"extension,omitempty"`
	Type       string    `json:"type,omitempty"`
	Size       *int64    `json:"size,omitempty"`
	Mode       string    `json:"mode,omitempty"`
	UID        string    `json:"uid,omitempty"`
	GID        string    `json:"gid,omitempty"`
	Inode      string    `json:"inode,omitempty"`
	Mtime      time.Time `json:"mtime,omitzero"`
	Ctime      time.Time `json:"ctime,omitzero"`
	TargetPath string    `json:"target_path,omitempty"`
	Hash       *Hash     `json:"hash,omitempty"`
}

// Process is ECS process.*: the guest process a finding belongs to, when the detector
// knows it.
type Process struct {
	PID  int    `json:"pid,omitempty"`
	Name string `json:"name,omitempty"`
}

// Hash is ECS file.hash.*.
type Hash struct {
	SHA256 string `json:"sha256,omitempty"`
	SHA512 string `json:"sha512,omitempty"`
}

// Threat is ECS threat.*, filled from rule metadata naming MITRE ATT&CK techniques.
type Threat struct {
	Framework string          `json:"framework"`
	Technique ThreatTechnique `json:"technique"`
}

// ThreatTechnique is ECS threat.technique.*.
type ThreatTechnique struct {
	ID []string `json:"id"`
}

// ErrorInfo is ECS error.*, for rule errors and appliance faults.
type ErrorInfo struct {
	Message string `json:"message"`
	Type    string `json:"type,omitempty"`
}

// Details is the custom "domainm" field set.
type Details struct {
	FindingID string  `json:"finding_id"`        // stable across occurrences of the same finding
	Severity  string  `json:"severity"`          // critical, high, medium, low, info (log.level is its syslog name)
	Detector  string  `json:"detector"`          // yara-memory, yara-file, integrity, rules, appliance
	State     string  `json:"state,omitempty"`   // new, gone (findings); changed, added, removed (integrity)
	Target    *Target `json:"target,omitempty"`  // the watched VM in Domain M's terms
	Matches   []Match `json:"matches,omitempty"` // at most MaxMatches
	MatchesN  int     `json:"matches_total,omitempty"`
	// MatchesCut counts matches the scanner found but did not keep (bounded per rule and
	// block, memory.max_matches_per_rule); they are included in MatchesN.
	MatchesCut int `json:"matches_cut,omitempty"`
	// WindowDependent: the rule's condition depends on the memory scan window
	// (domainm rules check lists such rules).
	WindowDependent bool       `json:"window_dependent,omitempty"`
	Changes         []Change   `json:"changes,omitempty"` // integrity: attribute before/after
	RuleFile        string     `json:"rule_file,omitempty"`
	RuleLine        int        `json:"rule_line,omitempty"`
	Component       string     `json:"component,omitempty"` // health: which part of the appliance
	Sink            string     `json:"sink,omitempty"`      // health: which alert sink
	Dropped         int        `json:"dropped,omitempty"`   // health: alerts dropped
	Seq             uint64     `json:"seq,omitempty"`       // free for callers (tests number events)
	Meta            MetaFields `json:"meta,omitempty"`      // rule metadata not mapped elsewhere
}

// MetaFields is rule metadata, bounded.
type MetaFields map[string]string

// Target is the watched VM as Domain M names it.
type Target struct {
	Name   string `json:"name,omitempty"`
	UUID   string `json:"uuid,omitempty"`
	DomID  int    `json:"domid,omitempty"`
	Host   string `json:"hypervisor_host,omitempty"`
	Source string `json:"source,omitempty"`
}

// Match is one matched string: for memory its guest-physical address, for files the
// offset in the file.
type Match struct {
	Name     string `json:"name"`
	Address  string `json:"address,omitempty"` // memory: "0x..." guest-physical
	Offset   *int64 `json:"offset,omitempty"`  // files
	Length   int    `json:"length"`
	DataHex  string `json:"data_hex,omitempty"`
	DataText string `json:"data_text,omitempty"`
	// Memory, when the guest's layout is known: the guest processes that map the match
	// (pid, comm, virtual address; at most maxMatchProcesses, ProcessCount in all) and
	// where the kernel maps it (image, module, or the direct map when no process does).
	Processes    []MatchProcess `json:"processes,omitempty"`
	ProcessCount int            `json:"process_count,omitempty"`
	Kernel       *MatchKernel   `json:"kernel,omitempty"`
	// Virtual: found in a virtual address space only, across a page boundary whose two
	// pages are not adjacent in guest-physical memory; Address is its first byte's.
	Virtual bool `json:"virtual,omitempty"`
}

// MatchProcess is a guest process that maps a memory match.
type MatchProcess struct {
	PID     int    `json:"pid"`
	Name    string `json:"name"`
	Address string `json:"address"` // "0x..." virtual, in the process
}

// MatchKernel is where the guest kernel maps a memory match.
type MatchKernel struct {
	Kind    string `json:"kind"` // image, module, vmalloc, direct-map
	Module  string `json:"module,omitempty"`
	Address string `json:"address,omitempty"` // "0x..." kernel virtual
}

// maxMatchProcesses bounds the processes an event lists per match.
const maxMatchProcesses = 8

// Change is one integrity attribute that changed.
type Change struct {
	Attribute string `json:"attribute"`
	Before    string `json:"before,omitempty"`
	After     string `json:"after,omitempty"`
}

// Bounds that keep an event small whatever a finding holds.
const (
	MaxMatches   = 16
	maxMetaKeys  = 32
	maxFieldLen  = 1024
	maxTagsCount = 32
)

// Finding states (Details.State) the supervisor reports.
const (
	StateNew  = "new"  // a finding appeared
	StateGone = "gone" // a finding reported before is no longer present
)

// Severity returns the event's level, from its syslog code.
func (e *Event) Severity() Severity { return Severity(e.Log.Syslog.Severity.Code) }

// SetSeverity sets every severity field consistently.
func (e *Event) SetSeverity(s Severity) {
	e.Event.Severity = s.ECS()
	e.Log.Level = s.syslogName() // a log level, as ECS means it; the Domain M level is domainm.severity
	e.DomainM.Severity = s.String()
	e.Log.Syslog.Severity.Code = int(s)
	e.Log.Syslog.Severity.Name = s.syslogName()
}

// FindingID is the stable id of a finding: the same detector, rule, target and place
// give the same id in every pass and after restarts, so a SIEM can pair "new" with "gone".
func FindingID(detector, ruleset, rule string, t detectors.Target, location string) string {
	who := t.UUID
	if who == "" {
		who = t.Name
	}
	return hashID(detector, ruleset, rule, who, location)
}

func hashID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// occurrenceID makes event.id: unique per occurrence, yet the same if the same
// event is built twice (so a re-emitted event does not look new to an index).
func occurrenceID(e *Event) string {
	return hashID(e.DomainM.FindingID, e.DomainM.State, e.Timestamp.UTC().Format(time.RFC3339Nano),
		e.Message, strconv.FormatUint(e.DomainM.Seq, 10))
}

func newEvent(now time.Time, detector string) Event {
	e := Event{Timestamp: now.UTC()}
	e.Event.Created = time.Now().UTC()
	e.Event.Dataset = "domainm.alert"
	e.Event.Module = "domainm"
	e.Event.Provider = detector
	e.DomainM.Detector = detector
	return e
}

// FromFinding turns a detector's finding into an alert. state is StateNew or
// StateGone for rule matches; for integrity findings Finding.Change (added, removed,
// changed) says what happened and wins. Severity follows the rule's metadata
// ("severity", else "score"), or for integrity changes the path class (PathSeverity),
// unless the policy put a "severity" in Meta; a finding that went away is low.
//
// Integrity findings (detectors/integrity's Change.Finding) are mapped from their
// typed fields: Namespace (the policy selection) to rule.ruleset, File to file.*
// (and nlink, caps, xattrs, error to domainm.meta), Changes to domainm.changes.
func FromFinding(f detectors.Finding, state string) Event {
	e := newEvent(f.Time, f.Detector)
	if e.Timestamp.IsZero() {
		e.Timestamp = e.Event.Created
	}
	t := Target{Name: f.Target.Name, UUID: f.Target.UUID, DomID: f.Target.DomID, Host: f.Target.Host, Source: f.Target.Source}
	e.DomainM.Target = &t
	if t.Name != "" || t.UUID != "" {
		e.Host = &Host{Name: t.Name, ID: t.UUID, Type: "vm"}
	}
	e.Tags = boundList(f.Tags, maxTagsCount)
	if p := f.Process; p != nil {
		e.Process = &Process{PID: p.PID, Name: bound(p.Name)}
	}
	if f.Detector == "integrity" {
		fromIntegrity(&e, f, state)
		return e
	}
	e.DomainM.State = state
	e.Rule = ruleFromMeta(f)
	e.Threat = threatFromMeta(f.Meta)
	e.DomainM.Meta = leftoverMeta(f.Meta)
	sev := ruleSeverity(f.Meta)
	e.Event.Kind = "alert"
	e.Event.Category = []string{"intrusion_detection", "malware"}
	location := f.Path
	if f.Path != "" {
		e.File = fileAt(f.Path)
		e.Event.Action = "file-match"
		e.Event.Category = append(e.Event.Category, "file")
		e.Message = fmt.Sprintf("YARA rule %s matched file %s", qualified(f), f.Path)
	} else {
		e.Event.Action = "memory-match"
		location = memoryLocation(f.Matches)
		e.Message = fmt.Sprintf("YARA rule %s matched guest memory at %s%s", qualified(f), location, heldBy(f.Matches))
	}
	e.Message += onTarget(t)
	e.Event.Type = []string{"indicator", "start"}
	if state == StateGone {
		e.Event.Type = []string{"indicator", "end"}
		e.Event.Action += "-gone"
		e.Message = "no longer present: " + e.Message
		sev = SevLow
	}
	e.DomainM.Matches, e.DomainM.MatchesN = matches(f.Matches, f.Path == "")
	e.DomainM.MatchesCut, e.DomainM.WindowDependent = f.MatchesCut, f.WindowDependent
	e.DomainM.MatchesN += f.MatchesCut
	e.DomainM.FindingID = FindingID(f.Detector, f.Namespace, f.Rule, f.Target, location)
	e.SetSeverity(sev)
	e.Event.ID = occurrenceID(&e)
	return e
}

func qualified(f detectors.Finding) string {
	if f.Namespace != "" && f.Namespace != "default" {
		return f.Namespace + ":" + f.Rule
	}
	return f.Rule
}

func onTarget(t Target) string {
	switch {
	case t.Name != "":
		return " on " + t.Name
	case t.UUID != "":
		return " on " + t.UUID
	}
	return ""
}

// memoryLocation is the lowest matched guest-physical address, as 0x-hex.
func memoryLocation(ms []detectors.StringMatch) string {
	if len(ms) == 0 {
		return "unknown address"
	}
	low := ms[0].Offset
	for _, m := range ms[1:] {
		low = min(low, m.Offset)
	}
	return fmt.Sprintf("%#x", low)
}

func matches(ms []detectors.StringMatch, memory bool) ([]Match, int) {
	var out []Match
	for i, m := range ms {
		if i == MaxMatches {
			break
		}
		out = append(out, boundMatch(MatchOf(m, memory)))
	}
	return out, len(ms)
}

// MatchOf is m in the alert schema's form (domainm.matches[]), whole: for memory its
// guest-physical address and, when the guest's layout is known, who maps it (the
// processes, ProcessCount as the detector counted them, the kernel) and whether it was
// found across a virtual page boundary; for a file its offset. Events bound it; the
// command line's --json lines print it whole, in the same form.
func MatchOf(m detectors.StringMatch, memory bool) Match {
	x := Match{Name: m.Name, Length: m.Length, DataHex: m.Hex, DataText: m.Text}
	if !memory {
		off := int64(m.Offset)
		x.Offset = &off
		return x
	}
	x.Address = HexAddr(m.Offset)
	x.ProcessCount, x.Virtual = m.ProcessCount, m.Virtual
	for _, p := range m.Processes {
		x.Processes = append(x.Processes, MatchProcess{PID: p.PID, Name: p.Name, Address: HexAddr(p.Address)})
	}
	if k := m.Kernel; k != nil {
		x.Kernel = &MatchKernel{Kind: k.Kind, Module: k.Module}
		if k.Address != 0 {
			x.Kernel.Address = HexAddr(k.Address)
		}
	}
	return x
}

// HexAddr is an address in the alert schema's form: "0x" and lower-case hex digits.
func HexAddr(a uint64) string { return "0x" + strconv.FormatUint(a, 16) }

func ruleFromMeta(f detectors.Finding) *Rule {
	m := f.Meta
	r := &Rule{Name: bound(f.Rule), Ruleset: bound(f.Namespace)}
	r.ID = bound(m["id"])
	r.Description = bound(m["description"])
	r.Author = bound(m["author"])
	r.Reference = bound(firstNonEmpty(m["reference"], m["ref"], m["url"]))
	r.Version = bound(m["version"])
	return r
}

var mappedMeta = map[string]bool{
	"id": true, "description": true, "author": true, "reference": true, "ref": true, "url": true,
	"version": true, "severity": true, "score": true, "mitre_attack": true, "attack": true,
}

func threatFromMeta(m map[string]string) *Threat {
	v := firstNonEmpty(m["mitre_attack"], m["attack"])
	if v == "" {
		return nil
	}
	var ids []string
	for _, id := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		ids = append(ids, bound(id))
	}
	return &Threat{Framework: "MITRE ATT&CK", Technique: ThreatTechnique{ID: boundList(ids, 16)}}
}

func leftoverMeta(m map[string]string) MetaFields {
	keys := make([]string, 0, len(m))
	for k := range m {
		if !mappedMeta[k] {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	out := MetaFields{}
	for _, k := range boundList(keys, maxMetaKeys) {
		out[bound(k)] = bound(m[k])
	}
	return out
}

func fileAt(path string) *File {
	f := &File{Path: bound(path)}
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		f.Name = bound(path[i+1:])
	}
	if i := strings.LastIndexByte(f.Name, '.'); i > 0 {
		f.Extension = f.Name[i+1:]
	}
	return f
}

func fromIntegrity(e *Event, f detectors.Finding, state string) {
	change := firstNonEmpty(f.Change, state, "changed")
	e.DomainM.State = bound(change)
	e.Event.Kind = "alert"
	e.Event.Category = []string{"file", "intrusion_detection"}
	e.File = fileAt(f.Path)
	fillFile(e.File, f.File)
	changes, errChange := integrityChanges(f.Changes)
	e.DomainM.Changes = changes
	e.DomainM.Meta = integrityExtra(f.File, errChange)
	e.Rule = &Rule{Name: firstNonEmpty(bound(f.Rule), "integrity-"+e.DomainM.State), Ruleset: bound(f.Namespace)}
	sev := PathSeverity(f.Path)
	if newSetuid(change, f) {
		// A new setuid/setgid program is a classic privilege-escalation backdoor wherever
		// it lies, so it is never less than high.
		sev = min(sev, SevHigh)
	}
	if v, ok := f.Meta["severity"]; ok {
		if s, err := ParseSeverity(v); err == nil {
			sev = s
		}
	}
	switch change {
	case "added":
		e.Event.Type, e.Event.Action = []string{"creation"}, "file-added"
	case "removed":
		e.Event.Type, e.Event.Action = []string{"deletion"}, "file-removed"
	default:
		e.Event.Type, e.Event.Action = []string{"change"}, "file-changed"
	}
	attrs := make([]string, 0, len(changes))
	for _, c := range changes {
		attrs = append(attrs, c.Attribute)
	}
	e.Message = fmt.Sprintf("file %s: %s", e.DomainM.State, f.Path)
	if len(attrs) > 0 && change != "added" && change != "removed" {
		e.Message += " (" + strings.Join(attrs, ", ") + ")"
	}
	e.Message = bound(e.Message + onTarget(*e.DomainM.Target))
	e.DomainM.FindingID = FindingID(f.Detector, e.Rule.Ruleset, "integrity", f.Target, f.Path+"\x00"+change)
	e.SetSeverity(sev)
	e.Event.ID = occurrenceID(e)
}

// integrityChanges maps attribute changes to domainm.changes; a change of the entry's
// read error (the pseudo attribute "error") is returned apart, as "before -> after".
func integrityChanges(cs []detectors.AttrChange) (out []Change, errChange string) {
	for _, c := range cs {
		if c.Attr == "error" {
			errChange = c.Before + " -> " + c.After
			continue
		}
		out = append(out, Change{Attribute: bound(c.Attr), Before: bound(c.Before), After: bound(c.After)})
	}
	return out, errChange
}

// newSetuid reports a regular file that was added with, or changed to, a setuid or setgid
// mode.
func newSetuid(change string, f detectors.Finding) bool {
	const setid = 0o6000
	if change == "removed" || f.File == nil || f.File.Type != "file" || f.File.Mode == nil || *f.File.Mode&setid == 0 {
		return false
	}
	if change == "added" {
		return true
	}
	for _, c := range f.Changes {
		if c.Attr == "mode" {
			return f.Before == nil || f.Before.Mode == nil || *f.Before.Mode&setid == 0
		}
	}
	return false
}

// integrityExtra keeps what ECS file.* has no field for: the link count, file
// capabilities and xattrs of the entry, and its read error (or how it changed).
func integrityExtra(fi *detectors.FileInfo, errChange string) MetaFields {
	out := MetaFields{}
	if fi != nil {
		if fi.Nlink != nil {
			out["nlink"] = strconv.FormatUint(uint64(*fi.Nlink), 10)
		}
		if fi.Caps != "" {
			out["caps"] = bound(fi.Caps)
		}
		if fi.Xattrs != "" {
			out["xattrs"] = bound(fi.Xattrs)
		}
		if fi.Error != "" {
			out["error"] = bound(fi.Error)
		}
	}
	if errChange != "" {
		out["error"] = bound(errChange)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// fillFile maps a finding's file description to ECS file.*.
// ECSFileType is ECS's name (file.type, as the event schema has it) of a diskscan
// file type: chardev and blockdev are char and block; the others are the same.
func ECSFileType(t string) string {
	switch t {
	case "chardev":
		return "char"
	case "blockdev":
		return "block"
	}
	return t
}

func fillFile(f *File, fi *detectors.FileInfo) {
	if fi == nil {
		return
	}
	f.Type = bound(ECSFileType(fi.Type))
	if fi.Mode != nil {
		f.Mode = fmt.Sprintf("%04o", *fi.Mode&0o7777)
	}
	if fi.UID != nil {
		f.UID = strconv.FormatUint(uint64(*fi.UID), 10)
	}
	if fi.GID != nil {
		f.GID = strconv.FormatUint(uint64(*fi.GID), 10)
	}
	if fi.Inode != nil {
		f.Inode = strconv.FormatUint(*fi.Inode, 10)
	}
	f.TargetPath = bound(fi.Link)
	if fi.Size != nil {
		v := *fi.Size
		f.Size = &v
	}
	f.Mtime, f.Ctime = fi.Mtime, fi.Ctime
	if fi.SHA256 != "" || fi.SHA512 != "" {
		f.Hash = &Hash{SHA256: bound(fi.SHA256), SHA512: bound(fi.SHA512)}
	}
}

// RuleError is the alert for a rule set that failed to compile (and so was not
// loaded): file and line name the first error. Severity high: detection runs on an
// older rule set than the operator meant.
func RuleError(now time.Time, t detectors.Target, file string, line int, msg string) Event {
	e := ruleEvent(now, t, file, line, msg, "error", "rule_compile")
	e.Event.Action = "rule-error"
	e.Message = bound(fmt.Sprintf("rules not loaded: %s:%d: %s", file, line, msg))
	e.DomainM.FindingID = hashID("rules", file, strconv.Itoa(line), msg)
	e.SetSeverity(SevHigh)
	e.Event.ID = occurrenceID(&e)
	return e
}

// ruleEvent is what rule-error and rule-warning share: the rule file and line, the
// message as error text, and the target (domainm.target and host.*).
func ruleEvent(now time.Time, t detectors.Target, file string, line int, msg, typ, errType string) Event {
	e := newEvent(now, "rules")
	e.Event.Kind = "event"
	e.Event.Category = []string{"configuration"}
	e.Event.Type = []string{typ}
	e.Error = &ErrorInfo{Message: bound(msg), Type: errType}
	e.File = fileAt(file)
	e.DomainM.RuleFile = bound(file)
	e.DomainM.RuleLine = line
	e.DomainM.Target = targetOf(t)
	if t.Name != "" || t.UUID != "" {
		e.Host = &Host{Name: bound(t.Name), ID: bound(t.UUID), Type: "vm"}
	}
	return e
}

// Health is an alert about the appliance itself: component names the part
// ("alert-spool", "memory-source", "rules", ...), condition is a short stable
// keyword ("full", "lost", "empty-ruleset"), msg the human text.
func Health(now time.Time, sev Severity, component, condition, msg string) Event {
	e := newEvent(now, "appliance")
	e.Event.Kind = "event"
	e.Event.Category = []string{"host"}
	e.Event.Type = []string{"info"}
	if sev <= SevHigh {
		e.Event.Type = []string{"error"}
	}
	e.Event.Action = bound(component + "-" + condition)
	e.Event.Reason = bound(condition)
	e.DomainM.Component = bound(component)
	e.Message = bound(msg)
	e.DomainM.FindingID = hashID("appliance", component, condition)
	e.SetSeverity(sev)
	e.Event.ID = occurrenceID(&e)
	return e
}

// SetTarget names the watched VM on an event built without it (Health): domainm.target
// and host.*. A health event's finding id then includes the target, so the same
// condition on two targets are two findings; event.id is recomputed to match.
func (e *Event) SetTarget(t detectors.Target) {
	tt := targetOf(t)
	if tt == nil {
		return
	}
	e.DomainM.Target = tt
	if t.Name != "" || t.UUID != "" {
		e.Host = &Host{Name: bound(t.Name), ID: bound(t.UUID), Type: "vm"}
	}
	if e.DomainM.Detector == "appliance" {
		who := t.UUID
		if who == "" {
			who = t.Name
		}
		e.DomainM.FindingID = hashID("appliance", e.DomainM.Component, e.Event.Reason, who)
	}
	e.Event.ID = occurrenceID(e)
}

func targetOf(t detectors.Target) *Target {
	if t == (detectors.Target{}) {
		return nil
	}
	return &Target{Name: t.Name, UUID: t.UUID, DomID: t.DomID, Host: t.Host, Source: t.Source}
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func bound(s string) string {
	if len(s) > maxFieldLen {
		return s[:maxFieldLen]
	}
	return s
}

func boundList(l []string, n int) []string {
	if len(l) > n {
		l = l[:n]
	}
	out := make([]string, 0, len(l))
	for _, s := range l {
		out = append(out, bound(s))
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

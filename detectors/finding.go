package detectors

import (
	"encoding/hex"
	"time"
)

// MaxMatchData bounds the matched bytes kept per string match, so a rule that
// matches megabytes of guest memory cannot blow up an alert.
const MaxMatchData = 64

// DefaultMaxMatchesPerRule is how many string matches a rule engine keeps per rule and
// scanned buffer unless told otherwise; the rest are counted in Match.Cut.
const DefaultMaxMatchesPerRule = 256

// Target identifies the watched VM.
type Target struct {
	Name   string `json:"name,omitempty"`
	UUID   string `json:"uuid,omitempty"`
	DomID  int    `json:"domid,omitempty"`
	Host   string `json:"host,omitempty"`
	Source string `json:"source,omitempty"` // memory source spec or disk image path
}

// Match is one rule that matched one scanned buffer, as a rule engine reports it.
// Offsets in Strings are relative to the buffer.
type Match struct {
	Rule      string            `json:"rule"`
	Namespace string            `json:"namespace"`
	Tags      []string          `json:"tags,omitempty"`
	Meta      map[string]string `json:"meta,omitempty"`
	Strings   []StringMatch     `json:"strings,omitempty"`
	// Cut counts the string matches found but not kept in Strings: engines keep a
	// bounded number per rule, and say how many they left out.
	Cut int `json:"strings_cut,omitempty"`
	// Window is true when the rule's condition depends on the scan window in a memory
	// scan (filesize, fixed offsets, counts, file-format modules; see detectors/yara).
	Window bool `json:"window_dependent,omitempty"`
}

// StringMatch is one occurrence of a rule string.
type StringMatch struct {
	Name   string `json:"name"`                // e.g. "$a"
	Offset uint64 `json:"offset"`              // in the buffer, or guest-physical address in a Finding
	Length int    `json:"length"`              // full length of the match
	Data   []byte `json:"-"`                   // at most MaxMatchData bytes
	Hex    string `json:"data_hex"`            // Data, hex-encoded (safe for any byte)
	Text   string `json:"data_text,omitempty"` // Data when it is printable ASCII

	// Who holds a memory match, when the guest's layout is known (memscan/linux): the
	// processes that map its first byte's page, by pid, each with the byte's virtual
	// address in it (at most MaxMatchProcesses; ProcessCount is the total), and the
	// kernel's own mapping when the page is the kernel image or a module's, or, when no
	// process maps it, the direct map. All empty when attribution did not run.
	Processes    []ProcessMapping `json:"processes,omitempty"`
	ProcessCount int              `json:"process_count,omitempty"`
	Kernel       *KernelMapping   `json:"kernel,omitempty"`
	// Virtual marks a memory match found in a virtual address space only: it crosses a
	// page boundary whose two pages are not adjacent in guest-physical memory (a seam,
	// see memscan.Seam), so no physical window holds it whole. Offset is the physical
	// address of its first byte, Processes (or Kernel) its virtual addresses.
	Virtual bool `json:"virtual,omitempty"`
}

// MaxMatchProcesses bounds the processes listed per memory match (a string in a shared
// library's page is mapped by every process that loads it).
const MaxMatchProcesses = 32

// ProcessMapping is a guest process that maps a memory match.
type ProcessMapping struct {
	PID     int    `json:"pid"`
	Name    string `json:"name"`    // its comm
	Address uint64 `json:"address"` // virtual address of the match's first byte in the process
}

// KernelMapping is where the guest kernel maps a memory match.
type KernelMapping struct {
	Kind    string `json:"kind"`              // "image", "module", "vmalloc" or "direct-map"
	Module  string `json:"module,omitempty"`  // the module, for "module"
	Address uint64 `json:"address,omitempty"` // kernel virtual address of the match's first byte
}

// SetData stores a bounded copy of b and its safe renderings.
func (s *StringMatch) SetData(b []byte) {
	if len(b) > MaxMatchData {
		b = b[:MaxMatchData]
	}
	s.Data = append([]byte(nil), b...)
	s.Hex = hex.EncodeToString(s.Data)
	s.Text = ""
	if printable(s.Data) {
		s.Text = string(s.Data)
	}
}

func printable(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// Finding is what a detector reports: a rule that matched memory or a file, or a
// file-integrity change. Detector says which engine produced it. Like
// archive/tar.Header, it carries what its consumers need as typed fields: alerts map
// them to their schema without reading anything back out of strings.
type Finding struct {
	Detector  string            `json:"detector"` // "yara-memory", "yara-file", "integrity"
	Rule      string            `json:"rule,omitempty"`
	Namespace string            `json:"namespace,omitempty"` // YARA namespace; integrity: the policy selection
	Tags      []string          `json:"tags,omitempty"`
	Meta      map[string]string `json:"meta,omitempty"` // rule metadata
	// Matches carry guest-physical addresses for memory findings, file offsets for files.
	Matches []StringMatch `json:"matches,omitempty"`
	// MatchesCut counts the matches found but not kept in Matches (bounded per rule);
	// 0 when every match is there.
	MatchesCut int `json:"matches_cut,omitempty"`
	// WindowDependent marks a memory finding of a rule whose condition depends on the
	// scan window (see detectors/yara Rules.WindowRules).
	WindowDependent bool   `json:"window_dependent,omitempty"`
	Path            string `json:"path,omitempty"` // file findings

	// Change says what happened to the file of an integrity finding: "added",
	// "removed" or "changed".
	Change string `json:"change,omitempty"`
	// File describes the file: an added entry's attributes, a removed entry's last
	// known ones, and for a changed entry its type and the new value of each changed
	// attribute.
	File *FileInfo `json:"file,omitempty"`
	// Before holds, for a changed entry, the previous value of each changed attribute.
	Before *FileInfo `json:"file_before,omitempty"`
	// Changes lists a changed entry's attributes with their values before and after,
	// as reports print them (e.g. a mode as "4755 (rwsr-xr-x)"), in report order.
	Changes []AttrChange `json:"changes,omitempty"`
	// Process is the guest process the finding belongs to, when a detector knows it.
	Process *Process `json:"process,omitempty"`

	Time   time.Time `json:"time"`
	Target Target    `json:"target"`
}

// FileInfo describes a guest file with the fields a detector knows. A nil pointer,
// an empty string or a zero time is a field the detector did not report.
type FileInfo struct {
	Type   string    `json:"type,omitempty"` // file, dir, symlink, chardev, blockdev, fifo, socket
	Mode   *uint32   `json:"mode,omitempty"` // permission bits with setuid, setgid, sticky (07777)
	UID    *uint32   `json:"uid,omitempty"`
	GID    *uint32   `json:"gid,omitempty"`
	Size   *int64    `json:"size,omitempty"`
	Mtime  time.Time `json:"mtime,omitzero"`
	Ctime  time.Time `json:"ctime,omitzero"`
	Inode  *uint64   `json:"inode,omitempty"`
	Nlink  *uint32   `json:"nlink,omitempty"`
	Link   string    `json:"link,omitempty"`   // a symlink's target
	Caps   string    `json:"caps,omitempty"`   // file capabilities, as getcap prints them
	Xattrs string    `json:"xattrs,omitempty"` // extended attributes, "name=hex" space-separated
	SHA256 string    `json:"sha256,omitempty"` // content hashes, hex
	SHA512 string    `json:"sha512,omitempty"`
	Error  string    `json:"error,omitempty"` // why the entry could not be (fully) read
}

// AttrChange is one attribute that changed, with its value before and after.
type AttrChange struct {
	Attr   string `json:"attr"`
	Before string `json:"before"`
	After  string `json:"after"`
}

// Process identifies a guest process. For a memory finding it is the first process
// that maps the first attributed match (lowest address, then lowest pid); every process
// of every match is in Matches[i].Processes.
type Process struct {
	PID  int    `json:"pid,omitempty"`
	Name string `json:"name,omitempty"`
	// Address is the virtual address of that match in the process.
	Address uint64 `json:"address,omitempty"`
}

package cli

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The libvirt qemu hook. libvirt runs "/etc/libvirt/hooks/qemu GUEST migrate begin -" on
// the destination host at the start of an incoming migration, with the domain XML on
// stdin; a non-zero exit cancels the migration, and empty output leaves the XML as it is.
// The hook must be quick and must not call back into libvirt, so it does not drive the
// co-migration itself: it refuses an incoming migration of a VM that belongs to a Domain M
// pair (marked in the domain's <metadata>) unless domainm-migrate holds a lease for it —
// a target migrated on its own, by `virsh migrate`, would leave its Domain M behind and
// run unwatched.

// MetadataNS marks a domain as part of a pair:
//
//	<metadata><dm:pair xmlns:dm="urn:domainm:migrate:1" role="target" domm="domm-1"/></metadata>
const MetadataNS = "urn:domainm:migrate:1"

// DefaultLeaseDir is where domainm-migrate announces the co-migrations it runs.
const DefaultLeaseDir = "/run/domainm-migrate"

func init() {
	register(command{name: "libvirt-hook", summary: "libvirt qemu hook: refuse a pair member's incoming migration not run by domainm-migrate", run: runHook,
		exits: []exit{
			{ExitOK, "the operation may go ahead (not a migration, not a pair member, or a co-migration lease exists)"},
			{ExitRolledBack, "refused: GUEST is a Domain M pair member and no co-migration lease for it exists"},
			{ExitPaused, "the domain XML on stdin could not be read or parsed (libvirt stops the operation)"},
		},
		examples: []string{
			"ln -s $(command -v domainm-migrate) /etc/libvirt/hooks/qemu",
			"domainm-migrate libvirt-hook web-1 migrate begin - < web-1.xml",
		}})
}

// lease is written by `domainm-migrate migrate` for each VM of the pair it migrates.
type lease struct {
	Name    string    `json:"name"`
	Pid     int       `json:"pid"`
	Expires time.Time `json:"expires"`
}

func runHook(ctx context.Context, env Env, args []string) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		printHelp(env.Stdout, flag.NewFlagSet("libvirt-hook", flag.ContinueOnError), commands["libvirt-hook"],
			"libvirt-hook GUEST OPERATION SUB-OPERATION EXTRA  (domain XML on stdin)", fmt.Sprintf(`
Installed as /etc/libvirt/hooks/qemu (a symbolic link to domainm-migrate) it is called by
libvirt with the four arguments and the domain XML on stdin. For "migrate begin" it
refuses (exit 1) when GUEST is marked as a Domain M pair member (<dm:pair> in its
metadata, namespace %s) and no co-migration lease for it exists in
$DOMAINM_LEASE_DIR (default %s): a pair member migrated on its own would
run unwatched. Other operations: exit 0, no output.`, MetadataNS, DefaultLeaseDir))
		return ExitOK
	}
	// libvirt always passes four arguments; fewer that start with a dash is someone
	// trying a flag.
	if len(args) > 0 && len(args) < 4 && strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(env.Stderr, "domainm-migrate libvirt-hook: unknown flag --%s (see domainm-migrate libvirt-hook --help)\n", strings.TrimLeft(args[0], "-"))
		return ExitUsage
	}
	if len(args) < 2 {
		fmt.Fprintln(env.Stderr, "domainm-migrate libvirt-hook: need GUEST OPERATION (see --help)")
		return ExitUsage
	}
	// libvirt writes the domain XML to every qemu hook; read it even when it is not
	// needed, so libvirt never writes into a closed pipe. A domain XML is small; the
	// bound keeps a broken caller from exhausting memory.
	b, err := io.ReadAll(io.LimitReader(env.Stdin, 16<<20))
	if args[1] != "migrate" {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(env.Stderr, "domainm-migrate hook: reading domain XML: %v\n", err)
		return ExitPaused
	}
	dom, err := parseDomain(b)
	if err != nil {
		fmt.Fprintf(env.Stderr, "domainm-migrate hook: %s: %v\n", args[0], err)
		return ExitPaused
	}
	if dom.Pair == nil {
		return ExitOK // not part of a pair
	}
	dir := os.Getenv("DOMAINM_LEASE_DIR")
	if dir == "" {
		dir = DefaultLeaseDir
	}
	if err := checkLease(dir, dom.Name, time.Now()); err != nil {
		fmt.Fprintf(env.Stderr, "domainm-migrate hook: refusing incoming migration of %s (%s of a Domain M pair): %v; migrate the pair with domainm-migrate\n", dom.Name, dom.Pair.Role, err)
		return ExitRolledBack
	}
	return ExitOK
}

type domainXML struct {
	Name string `xml:"name"`
	UUID string `xml:"uuid"`
	Pair *struct {
		Role string `xml:"role,attr"`
		DomM string `xml:"domm,attr"`
	} `xml:"metadata>pair"`
}

func parseDomain(b []byte) (*domainXML, error) {
	var d domainXML
	dec := xml.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("parsing domain XML: %w", err)
	}
	if d.Pair != nil && !pairNS(b) {
		d.Pair = nil // a <pair> of some other namespace
	}
	return &d, nil
}

// pairNS reports whether the metadata's pair element is ours. encoding/xml matches the
// local name only, so check the namespace with a token walk.
func pairNS(b []byte) bool {
	dec := xml.NewDecoder(strings.NewReader(string(b)))
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "pair" && se.Name.Space == MetadataNS {
			return true
		}
	}
}

func leasePath(dir, name string) string {
	return filepath.Join(dir, strings.ReplaceAll(name, "/", "_")+".lease")
}

func checkLease(dir, name string, now time.Time) error {
	b, err := os.ReadFile(leasePath(dir, name))
	if err != nil {
		return fmt.Errorf("no co-migration lease: %w", err)
	}
	var l lease
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("lease %s: %w", leasePath(dir, name), err)
	}
	if l.Name != name || now.After(l.Expires) {
		return fmt.Errorf("lease %s is stale (expired %v)", leasePath(dir, name), l.Expires.Format(time.RFC3339))
	}
	return nil
}

// takeLease announces a co-migration of names until the returned release is called.
func takeLease(dir string, d time.Duration, names ...string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lease folder: %w", err)
	}
	var paths []string
	release = func() {
		for _, p := range paths {
			os.Remove(p)
		}
	}
	for _, n := range names {
		b, _ := json.Marshal(lease{Name: n, Pid: os.Getpid(), Expires: time.Now().Add(d)})
		p := leasePath(dir, n)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			release()
			return nil, fmt.Errorf("writing lease: %w", err)
		}
		paths = append(paths, p)
	}
	return release, nil
}

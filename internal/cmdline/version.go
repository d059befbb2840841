package cmdline

import "runtime/debug"

// Stamp completes a binary's version and commit, as set at link time (-X), from the
// VCS stamp Go puts in the binary: the module version if it has one, else the commit's
// first 7 digits (with "-dirty" for a modified tree), else "devel"; the commit is
// vcs.revision, else "unknown". What was set at link time is kept.
func Stamp(version, commit string) (string, string) {
	if version != "" && commit != "" {
		return version, commit
	}
	var rev string
	var dirty bool
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
	}
	if commit == "" {
		commit = rev
		if commit == "" {
			commit = "unknown"
		}
	}
	if version == "" {
		switch {
		case len(rev) >= 7 && dirty:
			version = rev[:7] + "-dirty"
		case len(rev) >= 7:
			version = rev[:7]
		default:
			version = "devel"
		}
	}
	return version, commit
}

// version and commit are set at link time, for both binaries at once, by the Makefile
// and image/deb/build.sh:
//
//	-X github.com/domainm/domainm/internal/cmdline.version=$(git describe --always --dirty)
//	-X github.com/domainm/domainm/internal/cmdline.commit=$(git rev-parse HEAD)
//
// A plain `go build` leaves them empty; Version then falls back to the VCS stamp Go
// puts in the binary (Stamp).
var (
	version string
	commit  string
)

// Version returns this binary's version and commit.
func Version() (string, string) { return Stamp(version, commit) }

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"

	"github.com/domainm/domainm/internal/cmdline"
)

// version and commit are set at link time by the Makefile:
//
//	-X github.com/domainm/domainm/migrate-hooks/internal/cli.version=$(git describe --always --dirty)
//	-X github.com/domainm/domainm/migrate-hooks/internal/cli.commit=$(git rev-parse HEAD)
//
// A plain `go build` leaves them empty; Version then falls back to the VCS stamp Go
// puts in the binary (vcs.revision, vcs.modified), or "devel" and "unknown". The
// coordinator is built without cgo and links no YARA, so it reports no libyara version.
var (
	version string
	commit  string
)

// VersionInfo is what `domainm-migrate version` prints.
type VersionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
}

// Version returns this binary's version information.
func Version() VersionInfo {
	v := VersionInfo{GoVersion: runtime.Version()}
	v.Version, v.Commit = cmdline.Stamp(version, commit)
	return v
}

func init() {
	register(command{name: "version", summary: "print the version, commit and Go version", run: runVersion,
		exits:    []exit{{ExitOK, "printed"}},
		examples: []string{"domainm-migrate version", "domainm-migrate version --json | jq -r .version"}})
}

func runVersion(ctx context.Context, env Env, args []string) int {
	fs := newFlags(env, "version", "version [--json]", `
Prints the version (git describe of the source it was built from), the commit and the Go
version. domainm-migrate --version prints the same.`)
	asJSON := fs.Bool("json", false, "print one JSON object")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	printVersion(env.Stdout, Version(), *asJSON)
	return ExitOK
}

func printVersion(w io.Writer, v VersionInfo, asJSON bool) {
	if asJSON {
		json.NewEncoder(w).Encode(v)
		return
	}
	fmt.Fprintf(w, "domainm-migrate %s\ncommit:  %s\ngo:      %s\n", v.Version, v.Commit, v.GoVersion)
}

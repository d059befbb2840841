package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"

	"github.com/domainm/domainm/internal/cmdline"
)

// VersionInfo is what `domainm-migrate version` prints. The coordinator is built
// without cgo and links no YARA, so it reports no libyara version.
type VersionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
}

// Version returns this binary's version information.
func Version() VersionInfo {
	v := VersionInfo{GoVersion: runtime.Version()}
	v.Version, v.Commit = cmdline.Version() // set at link time (internal/cmdline)
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

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"

	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/internal/cmdline"
)

// VersionInfo is what `domainm version` prints, the domainm_build_info metric's labels
// and the first log line of `domainm run`.
type VersionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
	Libyara   string `json:"libyara_version"`
}

// Version returns this binary's version information.
func Version() VersionInfo {
	v := VersionInfo{GoVersion: runtime.Version(), Libyara: yara.LibyaraVersion}
	v.Version, v.Commit = cmdline.Version() // set at link time (internal/cmdline)
	return v
}

func init() {
	register(command{name: "version", summary: "print the version, commit, Go and libyara versions", run: runVersion,
		exits:    []exit{{ExitClean, "printed"}},
		examples: []string{"domainm version", "domainm version --json | jq -r .version"}})
}

func runVersion(ctx context.Context, env Env, args []string) (int, error) {
	fs := newFlags(env, "version", "version [--json]",
		`Prints domainm's version (git describe of the source it was built from), the commit,
the Go version it was built with and the libyara version it was compiled against.
domainm --version prints the same.`)
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parse(env, fs, args); err != nil {
		return ExitError, err
	}
	return ExitClean, printVersion(env.Stdout, Version(), *asJSON)
}

func printVersion(w io.Writer, v VersionInfo, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(v)
	}
	_, err := fmt.Fprintf(w, "domainm %s\ncommit:  %s\ngo:      %s\nlibyara: %s\n", v.Version, v.Commit, v.GoVersion, v.Libyara)
	return err
}

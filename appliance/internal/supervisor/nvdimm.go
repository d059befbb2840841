package supervisor

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/memscan"
)

// A memory source that is not there yet is waited for, not a failed start: a file that
// does not exist (the target has not started) or, inside a QEMU Domain M, an nvdimm
// with the configured handle that the VM was started without (memscan's
// NVDIMMMissingError names the handle expected and those present). The nvdimm is
// polled (sysfs sends no notifications); a VM cannot gain an nvdimm while it runs on
// QEMU 7.2, but the pmem driver may bind after the supervisor started.
func awaitable(sf sourceFile, err error) bool {
	var miss *memscan.NVDIMMMissingError
	var gone *grantedGoneError
	return errors.As(err, &miss) || sf.path != "" && errors.Is(err, fs.ErrNotExist) ||
		sf.granted && (errors.Is(err, errNoGrant) || errors.As(err, &gone))
}

// missingText says which source is missing and, for an nvdimm, which identifier was
// looked for.
func missingText(spec string, err error) string {
	var miss *memscan.NVDIMMMissingError
	if errors.As(err, &miss) {
		return fmt.Sprintf("memory source %s is missing: %v", spec, miss)
	}
	var gone *grantedGoneError
	if errors.Is(err, errNoGrant) || errors.As(err, &gone) {
		return fmt.Sprintf("memory source %s: %v", spec, err)
	}
	return fmt.Sprintf("memory source %s does not exist yet", spec)
}

// sourceProblem is the memory-source-missing problem while the supervisor waits for
// its source (state waiting: not yet there, or removed); the state's reason says which.
func sourceProblem(r healthReport) (string, string) {
	if r.state != control.StateWaiting {
		return "", ""
	}
	return control.ProblemSourceMissing, r.reason
}

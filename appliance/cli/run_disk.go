package cli

import (
	"errors"
	"log/slog"

	"github.com/domainm/domainm/appliance/config"
	"github.com/domainm/domainm/appliance/supervisor"
)

// newDiskChecker returns the disk checker for the configured target.
func newDiskChecker(cfg *config.Config, log *slog.Logger) (supervisor.DiskChecker, error) {
	return nil, errors.New("target.disk: disk checks are not wired into domainm run yet")
}

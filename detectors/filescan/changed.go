package filescan

import (
	"context"

	"github.com/domainm/domainm/detectors/integrity"
	"github.com/domainm/domainm/diskscan"
)

// ScanChanged scans the regular files that an integrity check found added or changed
// (their new content).
func (s *Scanner) ScanChanged(ctx context.Context, changes []integrity.Change) error {
	files := make(chan File, len(changes))
	for _, c := range changes {
		if r := c.After; r != nil && r.Type == diskscan.Regular.String() {
			files <- File{Path: c.Path, Size: r.Size, UID: r.UID}
		}
	}
	close(files)
	return s.Run(ctx, files)
}

package diskscan

import (
	"encoding/binary"
	"fmt"
)

// Fast commits (ext4 fast_commit, journal feature 0x20) are logical records (inode
// updates, added and removed block ranges, directory entries) written to the blocks after
// the log. The kernel replays them after the log, when the first fast-commit block's HEAD
// tag names the transaction after the last one replayed. This package does not replay
// them: it detects that there are some and reports the filesystem as not fully read.

const (
	fcTagHead = 9
	fcHeadLen = 8 // fc_features, fc_tid
)

// fastCommits returns an error matching ErrJournal when the fast-commit area holds
// fast commits that the kernel would replay after transaction end-1.
func (j *journal) fastCommits(end uint32) error {
	first := j.last + 1 // j_fc_first
	if first >= j.maxlen {
		return nil
	}
	b, err := j.block(first)
	if err != nil {
		return fmt.Errorf("fast-commit area: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(b) != fcTagHead || le.Uint16(b[2:]) < fcHeadLen {
		return nil // no fast commit since the area was last reset
	}
	if tid := le.Uint32(b[8:]); tid != end {
		return nil // left over from an older transaction: the kernel stops there
	}
	return fmt.Errorf("fast-commit blocks after transaction %d not replayed (journal block %d): files changed by them read as before: %w", end-1, first, ErrJournal)
}

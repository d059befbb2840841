package diskscan

import (
	"encoding/binary"
	"fmt"
)

// The three passes of jbd2 recovery (fs/jbd2/recovery.c, do_one_pass), followed step by
// step so that what is replayed, and whether the kernel would refuse the journal, is what
// the guest's kernel decides: PASS_SCAN finds the end of the log, checking descriptor,
// revoke and commit checksums; PASS_REVOKE collects the revoked blocks of the
// transactions before that end; PASS_REPLAY lays their blocks over the volume, skipping
// revoked ones and those whose data checksum fails.

type passKind int

const (
	passScan passKind = iota
	passRevoke
	passReplay
)

// maxRevokes bounds the revoke table (distinct blocks); the kernel keeps it in memory too.
const maxRevokes = 1 << 20

// recovery is what the passes share (the kernel's recovery_info and revoke table).
type recovery struct {
	j            *journal
	end          uint32 // end_transaction: the first transaction not replayed
	endSet       bool
	failedCommit *uint32 // j_failed_commit: a commit block whose checksum failed
	revoked      map[uint64]uint32
	replayed     map[uint64]journalBlock
	blockErr     error // the first data block skipped for its checksum (or an unreadable one)
	fastCommits  bool  // the filesystem and its journal have fast commits
	fcTags       []fcTag
}

// recoverJournal replays the journal of inode jino and returns the replayed blocks and
// the fast-commit tags to replay after them. A non-nil error (matching ErrJournal) means
// that the kernel would refuse this journal; what is returned with it is what the kernel
// and e2fsck would still have written (nothing when the scan itself failed).
func (fs *ext4FS) recoverJournal(jino uint32, sb []byte, fresh bool) (map[uint64]journalBlock, []fcTag, error) {
	j, err := fs.loadJournal(jino, sb, fresh)
	if err != nil {
		return nil, nil, err
	}
	if j.start == 0 {
		return nil, nil, j.inodeErr // clean
	}
	compat := binary.LittleEndian.Uint32(sb[0x5C:])
	if uint64(j.start) < j.first || uint64(j.start) >= j.last {
		return nil, nil, fmt.Errorf("log start %d outside [%d, %d): %w", j.start, j.first, j.last, ErrJournal)
	}
	r := &recovery{j: j, revoked: map[uint64]uint32{}, replayed: map[uint64]journalBlock{},
		fastCommits: compat&compatFastCommit != 0 && j.incompat&jbdIncompatFastCommit != 0}
	for _, kind := range []passKind{passScan, passRevoke, passReplay} {
		if err := r.pass(kind); err != nil {
			return r.replayed, nil, err
		}
	}
	switch {
	case r.blockErr != nil:
		return r.replayed, r.fcTags, r.blockErr
	case r.failedCommit != nil:
		return r.replayed, r.fcTags, fmt.Errorf("transaction %d: commit block checksum mismatch, log replayed up to it: %w", *r.failedCommit, ErrJournal)
	}
	return r.replayed, r.fcTags, j.inodeErr
}

// pass is one walk through the log (do_one_pass).
type pass struct {
	r        *recovery
	kind     passKind
	id       uint32 // next_commit_ID
	next     uint64 // next_log_block
	crc      uint32 // running crc32_be of a transaction (checksum v1)
	needTime bool   // need_check_commit_time: a descriptor or revoke checksum failed
	lastTime uint64 // last_trans_commit_time
}

// pass walks the log from s_start. A returned error is the kernel's "goto failed".
func (r *recovery) pass(kind passKind) error {
	j := r.j
	p := &pass{r: r, kind: kind, id: j.seq, next: uint64(j.start), crc: ^uint32(0)}
	j.o = j.fs.newOp(j.fresh)
	for steps := uint64(0); ; steps++ {
		if kind != passScan && tidGEQ(p.id, r.end) {
			break
		}
		if steps > j.last-j.first {
			return fmt.Errorf("log longer than the journal from block %d: %w", j.start, ErrJournal)
		}
		done, err := p.step()
		if err != nil {
			return err
		}
		if done {
			break
		}
	}
	if kind == passScan {
		if !r.endSet {
			r.end, r.endSet = p.id, true
		}
		if r.fastCommits { // fc_do_one_pass(PASS_SCAN): its failure fails the recovery
			tags, err := j.scanFastCommits(r.end, int(j.fs.inodeSize))
			if err != nil {
				return err
			}
			r.fcTags = tags
		}
	} else if p.id != r.end {
		return fmt.Errorf("recovery pass %d ended at transaction %d, expected %d: %w", kind, p.id, r.end, ErrJournal)
	}
	return nil
}

// step reads the next log block and handles it; done ends the pass.
func (p *pass) step() (done bool, err error) {
	j := p.r.j
	pos := p.next
	b, err := j.block(pos)
	if err != nil {
		return false, err
	}
	p.next = j.wrap(p.next + 1)
	be := binary.BigEndian
	if be.Uint32(b) != jbdMagic || be.Uint32(b[8:]) != p.id {
		return true, nil
	}
	switch be.Uint32(b[4:]) {
	case jbdDescriptor:
		return p.descriptor(pos, b)
	case jbdCommit:
		return p.commit(b)
	case jbdRevoke:
		return false, p.revoke(pos, b)
	}
	return true, nil
}

// descriptor handles a descriptor block at log position pos.
func (p *pass) descriptor(pos uint64, b []byte) (bool, error) {
	j := p.r.j
	if !j.verifyTail(b) {
		if p.kind != passScan {
			return false, fmt.Errorf("transaction %d: descriptor block %d checksum mismatch: %w", p.id, pos, ErrJournal)
		}
		p.needTime = true
	}
	tags := j.tags(b)
	switch {
	case p.kind == passReplay:
		return false, p.replay(pos, tags)
	case p.kind == passScan && j.compat&jbdCompatChecksum != 0 && !p.needTime && !p.r.endSet:
		return p.sumTransaction(b, tags)
	}
	p.next = j.wrap(p.next + uint64(len(tags)))
	return false, nil
}

// sumTransaction adds the descriptor and its data blocks to the v1 transaction checksum
// (calc_chksums); a block that cannot be read ends the log.
func (p *pass) sumTransaction(b []byte, tags []journalTag) (bool, error) {
	j := p.r.j
	p.crc = crc32BE(p.crc, b)
	for range tags {
		io := p.next
		p.next = j.wrap(p.next + 1)
		d, err := j.block(io)
		if err != nil {
			return true, nil
		}
		p.crc = crc32BE(p.crc, d)
	}
	return false, nil
}

// replay records where the newest copy of each tagged block is.
func (p *pass) replay(desc uint64, tags []journalTag) error {
	j, r := p.r.j, p.r
	descOff, err := j.offset(desc)
	if err != nil {
		return err
	}
	for _, t := range tags {
		io := p.next
		p.next = j.wrap(p.next + 1)
		off, err := j.offset(io)
		if err == nil && j.csumV23() {
			err = p.checkData(t, io)
		}
		switch {
		case err != nil:
			if r.blockErr == nil {
				r.blockErr = err // the kernel goes on and fails the recovery at the end
			}
		case r.isRevoked(t.fsBlock, p.id):
		case t.fsBlock < j.fs.blocks: // a block beyond the volume cannot be written
			r.replayed[t.fsBlock] = journalBlock{off: off, escaped: t.flags&jbdFlagEscape != 0, descOff: descOff, seq: p.id}
		}
	}
	return nil
}

// checkData verifies a data block's checksum from its tag (jbd2_block_tag_csum_verify).
func (p *pass) checkData(t journalTag, io uint64) error {
	j := p.r.j
	if p.r.isRevoked(t.fsBlock, p.id) {
		return nil // the kernel tests the revoke first
	}
	d, err := j.block(io)
	if err != nil {
		return err
	}
	var seq [4]byte
	binary.BigEndian.PutUint32(seq[:], p.id)
	c := crc32c(crc32c(j.seed, seq[:]), d)
	ok := t.csum == c
	if j.incompat&jbdIncompatCsumV3 == 0 {
		ok = t.csum == c&0xFFFF
	}
	if !ok {
		return fmt.Errorf("transaction %d: data block %d (filesystem block %d) checksum mismatch, not replayed: %w", p.id, io, t.fsBlock, ErrJournal)
	}
	return nil
}

// commit handles a commit block.
func (p *pass) commit(b []byte) (bool, error) {
	commitTime := binary.BigEndian.Uint64(b[0x30:])
	if p.needTime {
		if commitTime >= p.lastTime {
			return false, fmt.Errorf("transaction %d: descriptor or revoke block checksum mismatch: %w", p.id, ErrJournal)
		}
		return true, nil // an older journal's stale blocks: the log ends here
	}
	j, r := p.r.j, p.r
	bad := false
	if p.kind == passScan && j.compat&jbdCompatChecksum != 0 {
		if r.endSet {
			id := r.end
			r.failedCommit = &id
			return true, nil
		}
		bad = !p.v1CommitOK(b)
		p.crc = ^uint32(0)
	}
	if p.kind == passScan && (bad || !j.verifyCommit(b)) {
		if commitTime < p.lastTime {
			return true, nil
		}
		r.end, r.endSet = p.id, true
		if j.incompat&jbdIncompatAsyncCommit == 0 {
			id := p.id
			r.failedCommit = &id
			return true, nil
		}
	}
	if p.kind == passScan {
		p.lastTime = commitTime
	}
	p.id++
	return false, nil
}

// v1CommitOK checks a checksum v1 commit block: the transaction's crc32_be, or no
// checksum at all.
func (p *pass) v1CommitOK(b []byte) bool {
	typ, size, found := b[12], b[13], binary.BigEndian.Uint32(b[16:])
	return (found == p.crc && typ == 1 && size == 4) || (typ == 0 && size == 0 && found == 0)
}

// revoke handles a revoke block at log position pos.
func (p *pass) revoke(pos uint64, b []byte) error {
	j := p.r.j
	if p.kind == passScan && !j.verifyTail(b) {
		p.needTime = true
	}
	if p.kind != passRevoke {
		return nil
	}
	be := binary.BigEndian
	rcount := uint64(be.Uint32(b[12:]))
	limit := uint64(j.fs.bs)
	if j.csumV23() {
		limit -= 4
	}
	if rcount > limit {
		return fmt.Errorf("transaction %d: revoke block %d: r_count %d beyond %d: %w", p.id, pos, rcount, limit, ErrJournal)
	}
	w := uint64(4)
	if j.incompat&jbdIncompat64Bit != 0 {
		w = 8
	}
	for off := uint64(16); off+w <= rcount; off += w {
		blk := uint64(be.Uint32(b[off:]))
		if w == 8 {
			blk = be.Uint64(b[off:])
		}
		if err := p.r.setRevoke(blk, p.id); err != nil {
			return err
		}
	}
	return nil
}

func (r *recovery) setRevoke(blk uint64, seq uint32) error {
	old, ok := r.revoked[blk]
	switch {
	case !ok && len(r.revoked) >= maxRevokes:
		return fmt.Errorf("more than %d revoked blocks: %w", maxRevokes, ErrJournal)
	case !ok || tidGT(seq, old):
		r.revoked[blk] = seq
	}
	return nil
}

// isRevoked: a block of transaction seq is not replayed when a transaction at or after
// seq revoked it (jbd2_journal_test_revoke).
func (r *recovery) isRevoked(blk uint64, seq uint32) bool {
	rs, ok := r.revoked[blk]
	return ok && !tidGT(seq, rs)
}

// journalTag is one block write announced by a descriptor block.
type journalTag struct {
	fsBlock uint64
	flags   uint16
	csum    uint32 // 16 bits with csum v2, 32 with v3
}

// tags parses a descriptor block's tags as count_tags and the replay loop walk them.
func (j *journal) tags(b []byte) []journalTag {
	be := binary.BigEndian
	size, tb := len(b), j.tagBytes()
	if j.csumV23() {
		size -= 4
	}
	var out []journalTag
	for t := 12; t+tb <= size; {
		tag := journalTag{fsBlock: uint64(be.Uint32(b[t:])), flags: be.Uint16(b[t+6:])}
		if j.incompat&jbdIncompat64Bit != 0 {
			tag.fsBlock |= uint64(be.Uint32(b[t+8:])) << 32
		}
		switch {
		case j.incompat&jbdIncompatCsumV3 != 0:
			tag.csum = be.Uint32(b[t+12:])
		case j.incompat&jbdIncompatCsumV2 != 0:
			tag.csum = uint32(be.Uint16(b[t+4:]))
		}
		out = append(out, tag)
		t += tb
		if tag.flags&jbdFlagSameUUID == 0 {
			t += 16
		}
		if tag.flags&jbdFlagLastTag != 0 {
			break
		}
	}
	return out
}

// verifyTail checks a descriptor or revoke block's tail checksum (csum v2/v3 only).
func (j *journal) verifyTail(b []byte) bool {
	if !j.csumV23() {
		return true
	}
	n := len(b) - 4
	want := binary.BigEndian.Uint32(b[n:])
	return crc32c(crc32c(j.seed, b[:n]), []byte{0, 0, 0, 0}) == want
}

// verifyCommit checks a commit block's checksum (csum v2/v3 only), computed over the
// whole block with h_chksum[0] zeroed; or, as recent kernels accept an incompletely
// written commit block (jbd2_commit_block_csum_verify_partial), over its header alone
// followed by zeros.
func (j *journal) verifyCommit(b []byte) bool {
	if !j.csumV23() {
		return true
	}
	want := binary.BigEndian.Uint32(b[16:])
	c := append([]byte(nil), b...)
	clear(c[16:20])
	if crc32c(j.seed, c) == want {
		return true
	}
	clear(c[commitHeaderSize:])
	return crc32c(j.seed, c) == want
}

// commitHeaderSize is sizeof(struct commit_header): up to h_commit_nsec.
const commitHeaderSize = 60

// tidGT and tidGEQ compare transaction IDs modulo 2^32, as jbd2 does.
func tidGT(x, y uint32) bool  { return int32(x-y) > 0 }
func tidGEQ(x, y uint32) bool { return int32(x-y) >= 0 }

// crc32BE is the kernel's crc32_be (polynomial 0x04C11DB7, MSB first, no inversion), the
// transaction checksum of journal checksum v1.
func crc32BE(crc uint32, b []byte) uint32 {
	for _, x := range b {
		crc = crc<<8 ^ crc32BETable[byte(crc>>24)^x]
	}
	return crc
}

var crc32BETable = func() (t [256]uint32) {
	for i := range t {
		c := uint32(i) << 24
		for range 8 {
			if c&0x80000000 != 0 {
				c = c<<1 ^ 0x04C11DB7
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

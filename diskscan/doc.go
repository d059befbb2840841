// Package diskscan reads a guest disk image without mounting it: image formats (raw,
// qcow2 v2/v3 with backing files, deflate-compressed clusters and subclusters), partition
// tables (MBR with extended partitions, GPT) and filesystems (ext2/3/4), layered through
// io.ReaderAt so that image → partition → filesystem compose with io.SectionReader.
//
// Typical use: OpenVolumeFormat(path, "raw" or "qcow2", -1) picks the root filesystem
// (OpenVolume probes the format, which is unsafe for raw images: see OpenImage), FS.Walk
// lists every entry with its inode metadata (mode incl. setuid, owner, times, link
// target, xattrs such as security.capability), and FS.Open streams a regular file's
// contents. Open resolves the path again, through cached directory listings, so opening
// the files a walk reported is cheap; hash them from several goroutines.
//
// # Security
//
// The image belongs to the guest and is attacker-controlled; it may also change while it
// is read. Every length, offset and count read from it is bounds-checked before use,
// allocations are capped, extent trees must shrink in depth at each level, a directory
// inode met twice in a walk is reported instead of entered, and recursion is bounded (an
// xattr value kept in an EA inode never pulls another inode's xattrs). Memory per inode
// is bounded: xattr values at 64 KiB each (XATTR_SIZE_MAX) and 1 MiB per inode. Work is
// budgeted per operation (one path lookup, one directory listing, one file's block
// map): each has its own allowance (4096 metadata blocks or extents) and draws beyond it
// on a pool shared by the FS (8 × its blocks + 1 Mi), so a hostile directory or file
// can exhaust the pool but not the allowance of operations on other paths. A directory
// is read block by block as the kernel falls back to when its htree index is damaged:
// index blocks hold no names, a leaf block that fails its checksum is skipped and
// reported as an error of that directory, the names in its other blocks are listed
// (listings are cached with their error, so opening those names re-reads nothing).
// With metadata_csum, inode, extent-block and directory-block checksums are verified,
// so a read torn by a concurrent guest write is detected. Metadata that fails a check
// is re-read without the cache a bounded number of times and then reported as an error
// for that path only (errors match ErrCorrupt and hold a *CorruptError naming the
// structure and its byte offset in the image; see CorruptError for which image); the
// walk goes on. Symlinks are followed only inside the guest filesystem (in the middle of
// a path, at most 40), never on the host. Parsers never panic on any input (see the fuzz
// targets and the random-damage tests).
//
// # Caches and lifetime
//
// An FS caches metadata: 32 MiB of filesystem blocks, up to 256 Ki directory entries of
// listings; a qcow2 image 16 MiB of L2 tables. Beyond the retries above, an FS does not
// notice later changes of the image: open the volume again for each scan pass. File
// contents are not cached; they are read with one ReadAt per contiguous extent run (up to
// 1 MiB per call through WriteTo, so io.Copy streams in large chunks). A raw image file
// is also mapped read-only (internal/mmap), and WriteTo hands a file's extents to the
// writer straight from the mapping, without the copy of a pread (hashing a tree costs
// that much less); the writer's reads run under mmap.Do, so an image truncated under
// the mapping (or an NFS read error) fails that file with the volume offset instead of
// killing the process with SIGBUS. Extents beyond the mapping (a partition that runs
// past the end of the image) and blocks the replayed journal overlays are read with
// preads, as Read does. The mapping's pages are released every 8 MiB read, so the
// resident size stays small.
//
// # Concurrency
//
// An Image and an FS may be used from several goroutines at once: reads go through
// ReadAt (no shared offset) and the caches are locked. A reader returned by Open is for
// one goroutine.
//
// # Not supported
//
// LVM, LUKS, XFS, btrfs; qcow2 with zstd compression, encryption or external data files
// (refused with ErrUnsupportedImage naming the offset); ext4 with the compression,
// journal_dev or dirdata features (ErrUnsupportedFS). qcow2 images with extended L2
// entries (subclusters) are read. A qcow2 header that QEMU 7.2 refuses to open (feature
// bits, compression type, header length, table offsets and sizes, header extensions) is
// refused too.
//
// # Journal
//
// A running guest's ext4 always needs recovery: metadata reaches the journal at each
// commit and its home location later. Committed transactions are therefore replayed in
// memory, never written back, following the kernel's jbd2 recovery pass by pass: journal
// superblock checks, descriptor, revoke, commit and data-block checksums (v1, v2, v3),
// revokes and escaped blocks; then ext4 fast commits (inode updates, block ranges and
// directory entries, scanned and checksummed as the kernel does, applied to the inodes,
// block maps and listings read). A journal the kernel would refuse to mount is read as
// e2fsck replays it (the transactions before the damage, the data blocks whose checksums
// hold) and JournalError reports it (ErrJournal); so does an external journal (not
// replayed).
package diskscan

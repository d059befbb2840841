#!/bin/bash
# Builds the small seed images for the fuzz targets (committed gzip-compressed):
#   ext4.img.gz    128 KiB ext4, 1 KiB blocks, extents, dirs, symlinks (fast, slow),
#                  a hard link, a setuid file, a sparse file, xattrs (user., security.)
#   ext2.img.gz    128 KiB ext2, 1 KiB blocks, block maps incl. an indirect block
#   inline.img.gz  128 KiB ext4 with inline_data (inline files and directories)
#   journal.img.gz 3 MiB ext4 with a 1 MiB journal holding a committed transaction (a data
#                  block and a revoke, written by debugfs jo/jw/jc): needs_recovery
#   ext4.qcow2.gz  ext4.img as qcow2 with 512-byte clusters (small L1/L2 tables)
#   ext4c.qcow2.gz the same, compressed (deflate clusters)
#   ext4x.qcow2.gz ext4.img as qcow2 with extended L2 entries (16 KiB clusters, 512-byte
#                  subclusters) over a raw backing name, a zeroed and a rewritten subcluster
#   mbr.img.gz     1 MiB disk: primary 1, extended 2 with logical 5 and 6
#   gpt.img.gz     1 MiB disk: GPT with two named partitions
# The fuzz targets feed them packed (non-zero parts of each KiB only, see packImage):
# the Go fuzzer slows to a crawl on inputs much over 16 KiB.
# Run as root from this folder: ./mkseeds.sh
set -euo pipefail
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
src=$tmp/src
mkdir -p $src/etc $src/bin $src/d/e
echo "root:x:0:0::/root:/bin/sh" > $src/etc/passwd
head -c 1500 /dev/urandom > $src/bin/prog; chmod 4755 $src/bin/prog
head -c 40 /dev/urandom > $src/small
ln $src/bin/prog $src/bin/prog2
ln -s etc/passwd $src/fast
ln -s "$(printf 'x/%.0s' {1..50})target" $src/slow
for i in $(seq 1 8); do echo $i > $src/d/file$i; done
truncate -s 300000 $src/d/e/sparse; echo data | dd of=$src/d/e/sparse bs=1 seek=200000 conv=notrunc status=none
printf '\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00' > $tmp/cap
mk() { # name, mke2fs options...
	local n=$1; shift
	mke2fs -q -F -b 1024 -N 32 -d $src "$@" $tmp/$n.img 128K
	debugfs -w -R "ea_set -f $tmp/cap /bin/prog security.capability" $tmp/$n.img >/dev/null 2>&1
	debugfs -w -R "ea_set /small user.note hello" $tmp/$n.img >/dev/null 2>&1
	debugfs -w -R "rmdir /lost+found" $tmp/$n.img >/dev/null 2>&1 # 12 KiB of empty entries
	gzip -9n < $tmp/$n.img > $n.img.gz
}
mk ext4 -t ext4 -O ^has_journal,^resize_inode
mk ext2 -t ext2 -I 128
mk inline -t ext4 -O inline_data,^has_journal,^resize_inode
mke2fs -q -F -t ext4 -b 1024 -N 32 -J size=1 -O ^resize_inode -d $src $tmp/journal.img 3M
debugfs -w -R "rmdir /lost+found" $tmp/journal.img >/dev/null 2>&1
blk=$(debugfs -R 'blocks /etc/passwd' $tmp/journal.img 2>/dev/null | awk '{print $1}')
printf 'hacked\n' > $tmp/jblock; truncate -s 1024 $tmp/jblock
printf 'jo\njw -b %s %s\njw -r 40\njc\n' "$blk" $tmp/jblock > $tmp/jcmds
debugfs -w -f $tmp/jcmds $tmp/journal.img >/dev/null 2>&1
dumpe2fs -h $tmp/journal.img 2>/dev/null | grep -q needs_recovery
gzip -9n < $tmp/journal.img > journal.img.gz
qemu-img convert -f raw -O qcow2 -o cluster_size=512 $tmp/ext4.img $tmp/ext4.qcow2
gzip -9n < $tmp/ext4.qcow2 > ext4.qcow2.gz
qemu-img convert -c -f raw -O qcow2 -o cluster_size=512 $tmp/ext4.img $tmp/ext4c.qcow2
gzip -9n < $tmp/ext4c.qcow2 > ext4c.qcow2.gz
qemu-img convert -f raw -O qcow2 -o extended_l2=on,cluster_size=16k $tmp/ext4.img $tmp/ext4x.qcow2
qemu-io -f qcow2 -c 'write -z 8704 512' -c 'write -P 0x41 20480 1k' $tmp/ext4x.qcow2 >/dev/null
gzip -9n < $tmp/ext4x.qcow2 > ext4x.qcow2.gz
truncate -s 1M $tmp/mbr.img $tmp/gpt.img
printf 'label: dos\nstart=64, size=256, type=83\nstart=400, type=5\nstart=450, size=100, type=83\nstart=600, size=100, type=82\n' |
	sfdisk -q --no-reread --no-tell-kernel $tmp/mbr.img
printf 'label: gpt\nstart=64, size=256, name="boot"\nstart=400, size=500, name="root"\n' |
	sfdisk -q --no-reread --no-tell-kernel $tmp/gpt.img
gzip -9n < $tmp/mbr.img > mbr.img.gz
gzip -9n < $tmp/gpt.img > gpt.img.gz

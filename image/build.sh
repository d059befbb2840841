#!/bin/bash
# image/build.sh OUT: build the Domain M appliance image into folder OUT.
#
#   OUT/disk.raw     GPT disk: DOMAINM-ROOT (squashfs, read-only), DOMAINM-VERITY (its
#                    dm-verity hash tree), DOMAINM-STATE (blank; made ext4 on first boot)
#   OUT/vmlinuz      the root's Debian kernel, for direct boot
#   OUT/initrd.img   busybox init that checks and opens the verity root (image/initramfs/init)
#   OUT/cmdline      kernel command line, with the root hash
#   OUT/SHA256SUMS   sums of the four files above
#
# Inputs: the debootstrap tarball (cached in $IMAGE_CACHE, keyed by suite and package
# list), bin/domainm ($DOMAINM), image/, rules/. When the hash of all inputs equals
# OUT/INPUTS the build is skipped. Reproducible: see "The appliance image" in README.md.
set -euo pipefail
umask 022
export LC_ALL=C TZ=UTC

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out=${1:?usage: build.sh OUT}
cache=${IMAGE_CACHE:-$repo/bin/image-cache}
domainm=${DOMAINM:-$repo/bin/domainm}
suite=bookworm
# What the root holds. libyara9 is what bin/domainm links against (cgo).
packages=busybox-static,ca-certificates,cryptsetup-bin,e2fsprogs,kmod,libyara9,linux-image-amd64,systemd,systemd-sysv,udev
# Modules the initramfs loads, in this order, with their dependencies.
initrd_modules="virtio_pci virtio_blk dm_verity squashfs qemu_fw_cfg"
state_mib=256
# Fixed identifiers: the GPT's disk and partition GUIDs.
disk_guid=6d1f3a52-0d0c-4e4b-9d6a-2f4a7c0b5e01
root_guid=6d1f3a52-0d0c-4e4b-9d6a-2f4a7c0b5e02
verity_guid=6d1f3a52-0d0c-4e4b-9d6a-2f4a7c0b5e03
state_guid=6d1f3a52-0d0c-4e4b-9d6a-2f4a7c0b5e04

log() { printf '%s image: %s\n' "$(date -u +%T)" "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "build.sh: must run as root (debootstrap, chroot)" >&2; exit 1; }
for tool in debootstrap mksquashfs veritysetup sfdisk mke2fs cpio sha256sum; do
	command -v "$tool" >/dev/null || { echo "build.sh: $tool not found (make deps installs it)" >&2; exit 1; }
done
[ -x "$domainm" ] || { echo "build.sh: $domainm not built (make build)" >&2; exit 1; }

# mirror: the Debian archive from this machine's apt configuration (deb822 .sources or
# one-line .list), the first entry of suite $suite with component main.
mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk -v suite="$suite" 'BEGIN{RS=""; FS="\n"}
			{ t=""; u=""; s=""; c=""
			  for (i=1;i<=NF;i++) { split($i, kv, ":[ \t]*"); k=tolower(kv[1]); v=substr($i, length(kv[1])+2); sub(/^[ \t]+/, "", v)
			    if (k=="types") t=v; if (k=="uris") u=v; if (k=="suites") s=v; if (k=="components") c=v; if (k=="enabled" && v=="no") t="" }
			  if ((" " t " ") ~ / deb / && (" " s " ") ~ (" " suite " ") && (" " c " ") ~ / main /) { split(u, us, " "); print us[1]; exit } }' "$f"
	done
	# One-line sources: either file may be missing (a deb822-only machine), which must
	# not end the script under pipefail.
	{ cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
		awk -v suite="$suite" '$1=="deb" { i=2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++; if ($2 ~ /^\[/) i++; if ($(i+1)==suite) { print $i; exit } }'
}

inputs_hash() {
	{
		echo "$suite $packages $initrd_modules $state_mib"
		sha256sum "$domainm"
		(cd "$repo" && find image/build.sh image/rootfs.sh image/rootfs image/initramfs image/systemd/domainm.service \
			image/domainm.toml rules/yara rules/policy/default.toml -type f | sort | xargs sha256sum)
	} | sha256sum | cut -d' ' -f1
}

# One build of OUT at a time: tests that share the image (the image tests, the lab)
# may call make image at once; the later one waits and then finds it up to date.
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9

key=$(inputs_hash)
if [ -f "$out/INPUTS" ] && [ "$(cat "$out/INPUTS")" = "$key" ] && (cd "$out" && sha256sum --quiet -c SHA256SUMS); then
	log "up to date ($out, inputs $key)"
	exit 0
fi

# SOURCE_DATE_EPOCH: the last commit's time unless given; every timestamp in the image.
: "${SOURCE_DATE_EPOCH:=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH
start=$(date +%s)

# 1. The debootstrap tarball (the .debs only), cached by suite and package list.
mkdir -p "$cache"
tarball=$cache/debootstrap-$suite-$(echo "$packages" | sha256sum | cut -c1-16).tar
if [ ! -f "$tarball" ]; then
	m=$(mirror | head -n1)
	[ -n "$m" ] || { echo "build.sh: no '$suite main' entry in the apt configuration" >&2; exit 1; }
	log "downloading $suite ($packages) from $m"
	tmp=$(mktemp -d "$cache/dl.XXXXXX")
	debootstrap --variant=minbase --include="$packages" --make-tarball="$tarball.part" "$suite" "$tmp/root" "$m" >"$cache/debootstrap.log" 2>&1 ||
		{ tail -20 "$cache/debootstrap.log" >&2; rm -rf "$tmp"; exit 1; }
	rm -rf "$tmp"
	mv "$tarball.part" "$tarball"
fi

work=$out.work
rm -rf "$work"
mkdir -p "$work" "$out"
root=$work/root

# 2. The root: debootstrap from the tarball (its second stage, the packages' maintainer
# scripts, takes minutes: the result is cached as base-*.tar next to the tarball;
# IMAGE_FRESH_ROOT=1 ignores that cache), then our files.
base=${tarball%.tar}.base.tar
if [ -f "$base" ] && [ -z "${IMAGE_FRESH_ROOT:-}" ]; then
	log "base root from $(basename "$base")"
	mkdir "$root"
	tar -C "$root" --numeric-owner --xattrs --xattrs-include='*' -xpf "$base"
else
	log "debootstrap from $(basename "$tarball")"
	debootstrap --variant=minbase --include="$packages" --unpack-tarball="$tarball" "$suite" "$root" >"$work/debootstrap.log" 2>&1 ||
		{ tail -20 "$work/debootstrap.log" >&2; exit 1; }
	tar -C "$root" --numeric-owner --xattrs --xattrs-include='*' -cf "$base.part" . && mv "$base.part" "$base"
fi
"$here/rootfs.sh" "$root" "$repo" "$domainm"

kver=$(basename "$(ls -d "$root"/lib/modules/*)")
cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"

# 3. The initramfs: busybox, veritysetup and mke2fs with their libraries, the modules.
log "initramfs ($kver)"
"$here/initramfs/build.sh" "$root" "$kver" "$work/initrd.img" $initrd_modules

# 4. Root filesystem (squashfs: read-only by design, compressed, reproducible with fixed
# times: SOURCE_DATE_EPOCH for the filesystem time and every inode's) and its
# dm-verity hash tree. Salt and UUID derive from the root image itself.
log "squashfs"
# mksquashfs 4.5 takes SOURCE_DATE_EPOCH for the filesystem time only: every file's
# time is set here (files installed at build time would otherwise carry the build's clock).
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mksquashfs "$root" "$work/root.squashfs" -noappend -quiet -no-progress -comp zstd -Xcompression-level 3 >/dev/null
salt=$(sha256sum "$work/root.squashfs" | cut -d' ' -f1)
vuuid=$(echo "$salt" | sed -E 's/^(.{8})(.{4}).(.{3}).(.{3})(.{12}).*/\1-\2-4\3-8\4-\5/')
log "verity"
veritysetup format "$work/root.squashfs" "$work/root.verity" --salt="$salt" --uuid="$vuuid" >"$work/verity.txt"
roothash=$(awk -F':[ \t]*' '$1=="Root hash" {print $2}' "$work/verity.txt")
[ -n "$roothash" ] || { cat "$work/verity.txt" >&2; exit 1; }

# 5. The disk: GPT with fixed GUIDs, partitions aligned to 1 MiB.
mib() { echo $(( ($(stat -c %s "$1") + 1048575) / 1048576 )); }
root_mib=$(mib "$work/root.squashfs")
verity_mib=$(mib "$work/root.verity")
total_mib=$((1 + root_mib + verity_mib + state_mib + 1))
log "disk ($total_mib MiB: root $root_mib, verity $verity_mib, state $state_mib)"
rm -f "$work/disk.raw"
truncate -s "${total_mib}M" "$work/disk.raw"
sfdisk --quiet --no-reread --no-tell-kernel "$work/disk.raw" >/dev/null <<EOF
label: gpt
label-id: $disk_guid
start=2048, size=$((root_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$root_guid, name=DOMAINM-ROOT
size=$((verity_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$verity_guid, name=DOMAINM-VERITY
size=$((state_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$state_guid, name=DOMAINM-STATE
EOF
dd if="$work/root.squashfs" of="$work/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/root.verity" of="$work/disk.raw" bs=1M seek=$((1 + root_mib)) conv=notrunc,sparse status=none

# no_timer_check: the kernel's check that the IO-APIC timer ticks fails now and then
# under TCG on a loaded host ("IO-APIC + timer doesn't work!", a panic at 0.05 s: seen in
# the full loop at load 25); a VM's timer needs no such check.
echo "console=ttyS0 panic=-1 no_timer_check domainm.roothash=$roothash" >"$work/cmdline"

for f in disk.raw vmlinuz initrd.img cmdline; do mv -f "$work/$f" "$out/$f"; done
(cd "$out" && sha256sum disk.raw vmlinuz initrd.img cmdline >SHA256SUMS)
echo "$key" >"$out/INPUTS"
[ -n "${IMAGE_KEEP_WORK:-}" ] || rm -rf "$work"
log "done in $(( $(date +%s) - start )) s: $out ($(du -h --apparent-size "$out/disk.raw" | cut -f1) disk, $(du -h "$out/disk.raw" | cut -f1) allocated), root hash $roothash"

#!/bin/bash
# image/initramfs/build.sh ROOT KVER OUT MODULE...: the appliance's initramfs, taken from
# the image's own root (same Debian release, same kernel): busybox-static, veritysetup
# and mke2fs with the libraries they load, the named modules and their dependencies (in
# load order in /etc/modules.order), and ./init. A gzip'd newc cpio with sorted names,
# fixed times and root ownership, so the same root gives the same bytes.
set -euo pipefail
root=${1:?} kver=${2:?} out=${3:?}
shift 3
: "${SOURCE_DATE_EPOCH:?}"
here=$(cd "$(dirname "$0")" && pwd)
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT

mkdir -p "$d"/{bin,lib,lib64,etc,dev,proc,sys,sysroot,tmp}
install -m 0755 "$here/init" "$d/init"
# veritysetup, mke2fs and their shared libraries (resolved by the root's own loader).
for exe in /sbin/veritysetup /sbin/mke2fs; do
	name=$(basename "$exe")
	[ "$name" = mke2fs ] && name=mke2fs.e2fsprogs
	cp -L "$root$exe" "$d/bin/$name"
	chroot "$root" ldd "$exe" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r lib; do
		cp -L "$root$lib" "$d/lib/$(basename "$lib")"
	done
done
cp -L "$root/lib64/ld-linux-x86-64.so.2" "$d/lib64/ld-linux-x86-64.so.2"
cp "$root/etc/mke2fs.conf" "$d/etc/mke2fs.conf"
# busybox for everything else.
cp "$root/bin/busybox" "$d/bin/busybox"
for applet in $(chroot "$root" /bin/busybox --list); do
	[ -e "$d/bin/$applet" ] || ln -s busybox "$d/bin/$applet"
done

# Modules in load order: modprobe --show-depends lists dependencies first.
: >"$d/etc/modules.order"
for m in "$@"; do
	modprobe -d "$root" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r path; do
	rel=${path#"$root"}
	rel=/lib/modules/$kver/${rel#*/lib/modules/$kver/}
	mkdir -p "$d$(dirname "$rel")"
	cp "$root$rel" "$d$rel"
	echo "$rel" >>"$d/etc/modules.order"
done
[ -s "$d/etc/modules.order" ] || { echo "initramfs: no modules resolved" >&2; exit 1; }

find "$d" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$d" && find . -mindepth 1 | LC_ALL=C sort |
	cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9 -n >"$out"

#!/bin/bash
# image/xen/build-dom0.sh OUT: build the nested Xen lab's dom0 into folder OUT.
#
#   OUT/xen.elf      Debian's Xen 4.17 hypervisor, gunzipped (QEMU -kernel boots it)
#   OUT/vmlinuz      dom0's (and the domUs') Debian kernel
#   OUT/initrd.img   dom0's Debian initramfs
#   OUT/dom0.img     dom0's root, ext4 made with mkfs.ext4 -d (no loop mount)
#   OUT/rootfs/      the root tree (kernel modules and busybox for the domU initrds)
#   OUT/INPUTS       hash of this script; an equal hash skips the build
#
# Everything comes from Debian's archive; the mirror is read from this machine's apt
# configuration (/etc/apt/sources.list.d, deb822 or one-line), never written here.
set -euo pipefail
umask 022
export LC_ALL=C TZ=UTC
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build-dom0.sh OUT}
suite=bookworm
log() { printf '%s xen-lab build: %s\n' "$(date -u +%T)" "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "build-dom0.sh: must run as root (debootstrap, chroot)" >&2; exit 1; }
for tool in debootstrap mkfs.ext4 sha256sum; do
	command -v "$tool" >/dev/null || { echo "build-dom0.sh: $tool not found (make deps installs it)" >&2; exit 1; }
done

hash=$(cat "$here/build-dom0.sh" "$here/dom0/"* | sha256sum | cut -d' ' -f1)
if [ -f "$out/INPUTS" ] && [ "$(cat "$out/INPUTS")" = "$hash" ] && [ -f "$out/dom0.img" ]; then
	log "cached in $out (inputs $hash)"; exit 0
fi

# source SUITE: the first deb URI of SUITE with component main in the apt configuration.
source_of() {
	local want=$1 f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk -v suite="$want" 'BEGIN{RS=""; FS="\n"}
			{ t=""; u=""; s=""; c=""
			  for (i=1;i<=NF;i++) { split($i, kv, ":[ \t]*"); k=tolower(kv[1]); v=substr($i, length(kv[1])+2); sub(/^[ \t]+/, "", v)
			    if (k=="types") t=v; if (k=="uris") u=v; if (k=="suites") s=v; if (k=="components") c=v; if (k=="enabled" && v=="no") t="" }
			  if ((" " t " ") ~ / deb / && (" " s " ") ~ (" " suite " ") && (" " c " ") ~ / main /) { split(u, us, " "); print us[1]; exit } }' "$f"
	done
	{ cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
		awk -v suite="$want" '$1=="deb" { i=2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++; if ($2 ~ /^\[/) i++; if ($(i+1)==suite) { print $i; exit } }'
}
mirror=$(source_of $suite | head -1)
security=$(source_of $suite-security | head -1)
[ -n "$mirror" ] || { echo "build-dom0.sh: no Debian $suite source in the apt configuration" >&2; exit 1; }

root=$out/rootfs
cleanup() { for m in dev sys proc; do mountpoint -q "$root/$m" && umount "$root/$m"; done; return 0; }
trap cleanup EXIT
# The installed root is reused while the install steps below are unchanged (the
# configuration steps after them are redone on it).
install_hash=$(sed -n '/^# -- install --$/,/^# -- end install --$/p' "$here/build-dom0.sh" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$root/.xenlab-installed" 2>/dev/null)" = "$install_hash" ]; then
	log "installed root reused ($root)"
else
# -- install --
rm -rf "$out"; mkdir -p "$out"

log "debootstrap $suite"
debootstrap --variant=minbase --include=systemd-sysv,udev,kmod,iproute2,procps,openssh-client \
	$suite "$root" "$mirror" >"$out/debootstrap.log" 2>&1 || { tail -20 "$out/debootstrap.log" >&2; exit 1; }

log "Xen, kernel, ssh in the chroot"
{
	echo "deb $mirror $suite main"
	echo "deb $mirror $suite-updates main"
	[ -z "$security" ] || echo "deb $security $suite-security main"
} >"$root/etc/apt/sources.list"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"; chmod +x "$root/usr/sbin/policy-rc.d"
mount -t proc proc "$root/proc"; mount -t sysfs sys "$root/sys"; mount --bind /dev "$root/dev"
chroot "$root" sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	linux-image-amd64 xen-system-amd64 xen-utils-4.17 busybox-static initramfs-tools openssh-server bsdextrautils' \
	>"$out/chroot-install.log" 2>&1 || { tail -30 "$out/chroot-install.log" >&2; exit 1; }
chroot "$root" apt-get clean
cleanup
rm -f "$root/usr/sbin/policy-rc.d" "$root/etc/apt/sources.list"
# -- end install --
echo "$install_hash" >"$root/.xenlab-installed"
fi

log "configure dom0"
"$here/dom0/configure.sh" "$root"

log "boot files and dom0.img"
zcat "$root"/boot/xen-4.17-amd64.gz >"$out/xen.elf"
cp "$root"/boot/vmlinuz-*-amd64 "$out/vmlinuz"
cp "$root"/boot/initrd.img-*-amd64 "$out/initrd.img"
truncate -s 3G "$out/dom0.img"
mkfs.ext4 -q -F -L dom0root -d "$root" "$out/dom0.img"
echo "$hash" >"$out/INPUTS"
log "done: $(du -sh "$root" | cut -f1) root, $(du -sh --apparent-size "$out/dom0.img" | cut -f1) image"

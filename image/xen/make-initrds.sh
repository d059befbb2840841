#!/bin/bash
# make-initrds.sh DIR: the domUs' kernel (vmlinux) and the lab's two domU initrds into
# DIR (target-initrd.gz, domainm-initrd.gz): busybox from the dom0 root ($ROOT), the init scripts of
# image/xen/initrd; Domain M's also gets the agent ($AGENT) and the root's
# xen-privcmd.ko (its kernel is the same Debian kernel); with DOMM_TREE, that tree too
# (the real supervisor packed with its shared libraries, configuration and rules).
# With DOMM_NFS=1 Domain M's initrd also gets what reaches the target's disk image over
# NFS: xen-netfront and the kernel's NFSv4 client (the modules and their dependencies,
# from the root's modules.dep, in load order in lib/modules/storage.order) and the
# appliance image's own mount loop (image/rootfs/usr/lib/domainm/mount-storage).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: make-initrds.sh DIR}
: "${ROOT:?ROOT: the dom0 root tree}" "${AGENT:?AGENT: the agent binary}"
mk() { # mk NAME INIT [extra files as SRC:DST]
	local name=$1 init=$2 g; shift 2
	g=$(mktemp -d); trap 'rm -rf "$g"' RETURN
	mkdir -p "$g"/{bin,sbin,proc,sys,dev,run,tmp,etc,lib/modules,usr/bin,usr/sbin}
	cp "$ROOT/bin/busybox" "$g/bin/busybox"
	for a in $(chroot "$ROOT" /bin/busybox --list); do [ "$a" = busybox ] || ln -sf /bin/busybox "$g/bin/$a"; done
	cp "$init" "$g/init"; chmod 755 "$g/init"
	local f
	for f in "$@"; do cp "${f%%:*}" "$g/${f##*:}"; done
	[ "$name" = domainm-initrd.gz ] && [ -n "${DOMM_TREE:-}" ] && cp -a "$DOMM_TREE/." "$g/"
	[ "$name" = domainm-initrd.gz ] && [ "${DOMM_NFS:-}" = 1 ] && storage "$g"
	(cd "$g" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) >"$dir/$name"
}
# storage DIR: the NFS client's modules (dependencies first) and mount-storage into DIR.
storage() {
	local g=$1 kdir m
	kdir=$(ls -d "$ROOT"/lib/modules/*-amd64 | head -1)
	local -A seen=()
	local order=()
	add() { # add MODPATH (relative to kdir, as modules.dep names it)
		local d
		[ -n "${seen[$1]:-}" ] && return 0
		seen[$1]=1
		for d in $(sed -n "s|^$1: *||p" "$kdir/modules.dep"); do add "$d"; done
		order+=("$1")
	}
	for m in drivers/net/xen-netfront.ko fs/nfs/nfsv4.ko; do
		grep -q "^kernel/$m:" "$kdir/modules.dep" || { echo "make-initrds.sh: no kernel/$m in $kdir/modules.dep" >&2; return 1; }
		add "kernel/$m"
	done
	mkdir -p "$g/lib/modules/storage" "$g/usr/lib/domainm"
	: >"$g/lib/modules/storage.order"
	for m in "${order[@]}"; do
		cp "$kdir/$m" "$g/lib/modules/storage/"
		echo "$(basename "$m")" >>"$g/lib/modules/storage.order"
	done
	install -m 755 "$here/../rootfs/usr/lib/domainm/mount-storage" "$g/usr/lib/domainm/mount-storage"
}
privcmd=$(find "$ROOT/lib/modules" -name 'xen-privcmd.ko*' | head -1)
[ -n "$privcmd" ] || { echo "make-initrds.sh: no xen-privcmd.ko under $ROOT/lib/modules" >&2; exit 1; }
case $privcmd in *.xz) xz -dc "$privcmd" >"$dir/.privcmd.ko";; *.zst) zstd -dc "$privcmd" >"$dir/.privcmd.ko";; *) cp "$privcmd" "$dir/.privcmd.ko";; esac
# The domUs boot the kernel's ELF image (vmlinux, with its PVH entry note), unpacked here
# once: given the bzImage, xl unpacks the xz-compressed kernel in dom0 at every domain
# creation, which took minutes of dom0 CPU per xl create under TCG at load 20-30.
kernel=$(ls "$ROOT"/boot/vmlinuz-*-amd64 | head -1)
off=$(LC_ALL=C grep -abo $'\xfd7zXZ' "$kernel" | LC_ALL=C sed -n '1s/:.*//p')
[ -n "$off" ] || { echo "make-initrds.sh: no xz stream in $kernel" >&2; exit 1; }
# (xz stops after its stream: the rest of the bzImage must not make a pipe fail)
xz -dc --single-stream < <(tail -c +$((off + 1)) "$kernel") >"$dir/vmlinux"
mk target-initrd.gz "$here/initrd/target-init"
mk domainm-initrd.gz "$here/initrd/domainm-init" "$AGENT:agent" "$dir/.privcmd.ko:lib/modules/xen-privcmd.ko"
rm -f "$dir/.privcmd.ko"

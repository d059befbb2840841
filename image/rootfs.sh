#!/bin/bash
# image/rootfs.sh ROOT REPO DOMAINM: turn a debootstrap'd Debian root into the appliance's
# root: domainm and its unit, default config, shipped rules and policy, a read-only
# layout (/var and /tmp are tmpfs, the state partition on /var/lib/domainm), nothing
# listening, and every file that records the build's time or host made fixed.
set -euo pipefail
root=${1:?} repo=${2:?} domainm=${3:?}
: "${SOURCE_DATE_EPOCH:?}"

# domainm, its unit (as shipped), default config, rules and policy.
install -D -m 0755 "$domainm" "$root/usr/bin/domainm"
install -D -m 0644 "$repo/image/systemd/domainm.service" "$root/etc/systemd/system/domainm.service"
install -D -m 0644 "$repo/image/domainm.toml" "$root/usr/share/domainm/domainm.toml"
install -D -m 0644 -t "$root/usr/share/domainm/rules" "$repo"/rules/yara/*.yar
install -D -m 0644 "$repo/rules/policy/default.toml" "$root/usr/share/domainm/integrity.toml"
install -d -m 0755 "$root/etc/domainm" "$root/var/lib/domainm"
# Mount point of the target's shared storage (domainm-storage.service).
install -d -m 0755 "$root/srv/storage"
ln -sfn /etc/systemd/system/domainm.service "$root/etc/systemd/system/multi-user.target.wants/domainm.service"
# The image's own units and files (fstab, console status, ...).
cp -a "$repo/image/rootfs/." "$root/"
for u in "$repo"/image/rootfs/etc/systemd/system/*.service; do
	[ -f "$u" ] || continue
	grep -q '^WantedBy=multi-user.target' "$u" &&
		ln -sfn "/etc/systemd/system/$(basename "$u")" "$root/etc/systemd/system/multi-user.target.wants/$(basename "$u")"
done

# The serial console's login (image/rootfs/etc/systemd/system/serial-getty@ttyS0.service,
# not bound to dev-ttyS0.device); the getty generator pulls it in too, from console=ttyS0.
mkdir -p "$root/etc/systemd/system/getty.target.wants"
ln -sfn /etc/systemd/system/serial-getty@ttyS0.service "$root/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"

# No display (QEMU -nodefaults, no VGA): no login on the virtual consoles, neither
# Debian's getty@tty1 nor logind's autovt on tty2-6 (the console is ttyS0 only).
rm -f "$root/etc/systemd/system/getty.target.wants/getty@tty1.service"
ln -sfn /dev/null "$root/etc/systemd/system/getty@.service"
ln -sfn /dev/null "$root/etc/systemd/system/autovt@.service"
# getty-static would start getty@tty2-6 when logind is missing (and fail, masked).
ln -sfn /dev/null "$root/etc/systemd/system/getty-static.service"

# Network for the alert sinks (image/rootfs/etc/systemd/network): systemd-networkd,
# without its wait-online service (see the .network file).
ln -sfn /lib/systemd/system/systemd-networkd.service "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
mkdir -p "$root/etc/systemd/system/sockets.target.wants"
ln -sfn /lib/systemd/system/systemd-networkd.socket "$root/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"

# Operator access is the serial console only (no SSH, nothing listening): root logs in
# there without a password; the console is reachable only from the host.
chroot "$root" passwd -d root >/dev/null
# Units that would write to the read-only root or poll the network for nothing.
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
	fstrim.timer systemd-random-seed.service dpkg-db-backup.timer; do
	ln -sfn /dev/null "$root/etc/systemd/system/$u"
done

# Fixed identity and nothing from the build host.
echo domainm >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdomainm\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root/etc/resolv.conf" "$root"/etc/apt/sources.list \
	"$root"/boot/initrd.img* "$root"/initrd.img* "$root/var/cache/ldconfig/aux-cache"
rm -rf "$root"/var/log/* "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old \
	"$root"/var/lib/dpkg/*-old "$root"/tmp/* "$root"/var/tmp/* "$root"/run/*
# Days since the epoch at which each password was "last changed": the build's day.
days=$((SOURCE_DATE_EPOCH / 86400))
sed -i -E "s/^([^:]*:[^:]*:)[0-9]+:/\1$days:/" "$root/etc/shadow"
sed -i -E "s/^([^:]*:[^:]*:)[0-9]+:/\1$days:/" "$root/etc/shadow-" 2>/dev/null || true

# Smaller root: documentation, and kernel modules no appliance VM uses (graphics, sound,
# wireless, media, physical NICs, InfiniBand, staging). Modules for virtio, device-mapper,
# nvdimm, filesystems and netfilter stay.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
kver=$(basename "$(ls -d "$root"/lib/modules/*)")
k=$root/lib/modules/$kver/kernel
rm -rf "$k"/drivers/{gpu,media,infiniband,staging,iio,bluetooth,isdn,mtd,net/wireless,net/ethernet,net/can} \
	"$k"/sound "$k"/net/{wireless,mac80211,bluetooth}
depmod -b "$root" "$kver"

#!/bin/bash
# configure.sh ROOT: make the debootstrapped tree a Xen dom0 for the nested lab.
# The lab's per-run files come on a second disk (/dev/vdb, ext4 labelled xenlab) that
# xenlab.service mounts on /lab and whose /lab/run.sh it runs; the root stays generic.
set -euo pipefail
R=${1:?usage: configure.sh ROOT}
chroot "$R" passwd -d root >/dev/null
echo xenhost >"$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 xenhost\n' >"$R/etc/hosts"
echo 'LABEL=dom0root / ext4 defaults,errors=remount-ro 0 1' >"$R/etc/fstab"
# root@peer over ssh (xl migrate): one key pair, made here, trusted by both hosts.
mkdir -p "$R/root/.ssh"; chmod 700 "$R/root/.ssh"
rm -f "$R/root/.ssh/id_ed25519"*
ssh-keygen -q -t ed25519 -N '' -C xenlab -f "$R/root/.ssh/id_ed25519"
cp "$R/root/.ssh/id_ed25519.pub" "$R/root/.ssh/authorized_keys"
printf 'Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n' >"$R/root/.ssh/config"
# guest consoles logged by xenconsoled (the lab reads the domUs' output there)
echo 'XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console --timestamp=guest"' >>"$R/etc/default/xen"
mkdir -p "$R/var/log/xen/console"
# Units that only cost boot time under emulation, or fight the lab for hvc0.
for u in serial-getty@hvc0.service xendomains.service networking.service ifupdown-pre.service \
	apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
	systemd-timesyncd.service getty@.service getty-static.service; do
	ln -sf /dev/null "$R/etc/systemd/system/$u"
done
# Xen's daemons (Debian's sysv /etc/init.d/xen) are not started at boot: under a loaded
# TCG host the generated xen.service outran systemd's start timeout and failed. run.sh
# starts the script itself, without a timeout. (Masking the unit would not do: Debian's
# LSB hook makes a masked service's script exit at once, even when run by hand.)
rm -f "$R"/etc/rc?.d/[SK][0-9][0-9]xen
cat >"$R/etc/systemd/system/xenlab.service" <<'E2'
[Unit]
Description=Domain M nested Xen lab run (/lab/run.sh from the lab disk)
After=ssh.service
[Service]
Type=oneshot
TimeoutStartSec=infinity
ExecStartPre=/bin/mkdir -p /lab
ExecStartPre=/bin/mount -L xenlab /lab
ExecStart=/bin/bash /lab/run.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/hvc0
[Install]
WantedBy=multi-user.target
E2
ln -sf /etc/systemd/system/xenlab.service "$R/etc/systemd/system/multi-user.target.wants/xenlab.service"

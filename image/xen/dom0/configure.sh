#!/bin/bash
# configure.sh ROOT: make the debootstrapped tree a Xen dom0 for the nested lab.
# The lab's per-run files come on a second disk (/dev/vdb, ext4 labelled xenlab) that
# xenlab-init (dom0's PID 1) mounts on /lab and whose /lab/run.sh it runs; the root
# stays generic.
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
# One connection per peer, reused by every later ssh (xl migrate's too), and a cheap key
# exchange: in run 7 one `ssh B date` took 150 s of emulated dom0 time (most of it,
# probably, OpenSSH 9.2's default sntrup761x25519 key exchange, once per connection).
printf 'Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  KexAlgorithms curve25519-sha256\n  ControlMaster auto\n  ControlPath /run/ssh-%%C\n  ControlPersist 2h\n' >"$R/root/.ssh/config"
# guest consoles logged by xenconsoled (the lab reads the domUs' output there)
grep -q '^XENCONSOLED_ARGS=' "$R/etc/default/xen" ||
	echo 'XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console --timestamp=guest"' >>"$R/etc/default/xen"
mkdir -p "$R/var/log/xen/console"
# No systemd in the lab's dom0: the kernel runs xenlab-init (init=/sbin/xenlab-init on
# the dom0 command line), which mounts the lab disk (/dev/vdb, label xenlab) on /lab,
# starts sshd and runs /lab/run.sh; run.sh starts Xen's daemons itself (see xenlab-init
# for why). Debian's sysv script and systemd units stay installed but unused.
install -m 755 "$(dirname "$0")/xenlab-init" "$R/sbin/xenlab-init"

#!/bin/bash
# run.sh: what each nested Xen host's dom0 runs at boot (dom0/xenlab-init, from the lab
# disk mounted on /lab). The role comes from the kernel command line (xenlab_role=A|B).
#
# B: brings up its link, advances its domain ids (so that the migrated domains get new
#    ids), records xenstore events and waits.
# A: starts the target and Domain M, grants Domain M privilege (domainm-xen grant),
#    plants a marker in the target and waits for Domain M to find it, checks it against
#    dom0's own view of the frame, co-migrates both to B in the order that keeps P1-P4,
#    plants again at B, and powers both hosts off.
# With /lab/nfs (XENLAB_NFS; the appliance's /etc/domainm/nfs format: server, port,
# export) the target's disk image lies on NFS storage both hosts share: each dom0 bridges
# its storage NIC (QEMU user networking, the server at 10.0.2.2 is this machine's
# 127.0.0.1) as xenbr0 and mounts the export read-write at /srv/storage; Domain M gets a
# vif on xenbr0 and checks the image read-only over its own NFSv4 mount; a setuid file is
# planted into the image from dom0 (debugfs -w) at A and again at B after the migration,
# and each must be alerted by Domain M on its console.
#
# Every event goes to /lab/out/events.log as "EPOCH_SECONDS HOST EVENT key=value ...";
# migrate-hooks/internal/xenlab reads both hosts' logs back after power-off.
set -u
out=/lab/out; mkdir -p $out
exec > >(tee -a $out/console.log) 2>&1
PATH=/lab:$PATH
role=$(sed -n 's/.*xenlab_role=\([AB]\).*/\1/p' /proc/cmdline)
case $role in A) me=10.99.0.1 peer=10.99.0.2;; B) me=10.99.0.2 peer=10.99.0.1;; *) echo "no xenlab_role"; exit 0;; esac
# Domain M runs the agent, or the real supervisor (domainm run) when the lab disk says so
# (XENLAB_DOMM=supervisor): then its state comes from the status request and its finds
# from the alerts on its console (found-console.sh), not from its xenstore subtree.
domm=$(cat /lab/domm-mode 2>/dev/null || echo agent)
nfs=; [ -f /lab/nfs ] && nfs=1
ev() { echo "$(date +%s.%N) $role $*" | tee -a $out/events.log; }
fail() { ev FAIL "$*"; [ $role = A ] && domm_report; cp /var/log/xen/console/*.log $out/ 2>/dev/null; sync; [ $role = A ] && peer_off; exit 1; }
# domm_report: Domain M's restarts, OOM kills and last memory line on both hosts' consoles
# (lab run 15: the supervisor was OOM-killed at B and restarted on A's target id)
domm_console() { local l=/var/log/xen/console/guest-domainm.log; echo "ooms=$(grep -a -c 'Out of memory' $l 2>/dev/null) exits=$(grep -a -c -E '(domainm run|agent) exited' $l 2>/dev/null) last_mem=\"$(grep -a DOMAINM-MEM $l 2>/dev/null | tail -1 | cut -d' ' -f4-)\""; }
domm_report() {
	eval "ev DOMAINM-CONSOLE where=A $(domm_console)"
	local b; b=$(timeout 120 ssh root@$peer "$(declare -f domm_console); domm_console" 2>/dev/null) && eval "ev DOMAINM-CONSOLE where=B $b"
}
# Xen's daemons, started here step by step (not Debian's /etc/init.d/xen: see
# dom0/xenlab-init), each step an event, each daemon's output in out/. A xenstore
# client that is not told -s blocks while xenstored is down, hence -s and timeouts.
xb=/usr/lib/xen-4.17/bin
xen_start() {
	local impl i
	mountpoint -q /proc/xen || mount -t xenfs xenfs /proc/xen || { ev XEN-STEP xenfs-failed; return 1; }
	ev XEN-STEP xenfs caps="$(cat /proc/xen/capabilities)" devs="$(ls /dev/xen | tr '\n' ,)"
	for impl in oxenstored xenstored; do
		XENSTORED_ROOTDIR=/run/xenstored $xb/$impl --no-fork --pid-file /run/xenstore.pid >$out/$impl.log 2>&1 &
		ev XEN-STEP $impl pid=$!
		for ((i = 0; i < 240; i++)); do
			timeout -k 5 20 xenstore-read -s / >/dev/null 2>&1 && break
			kill -0 $! 2>/dev/null || break
			sleep 0.5
		done
		if timeout -k 5 20 xenstore-read -s / >/dev/null 2>&1; then ev XEN-STEP $impl-up; break; fi
		ev XEN-STEP $impl-not-up "$(tail -c 300 $out/$impl.log | tr '\n' ' ')"
		kill $! 2>/dev/null
	done
	timeout -k 5 120 $xb/xen-init-dom0 >$out/xen-init-dom0.log 2>&1; ev XEN-STEP xen-init-dom0 rc=$?
	timeout -k 5 120 $xb/xenconsoled --pid-file /run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console --timestamp=guest >$out/xenconsoled.log 2>&1
	ev XEN-STEP xenconsoled rc=$?
	timeout -k 5 60 xenstore-read domid >/dev/null
}
# power the peer off (its xenlab-init powers itself off only when its run.sh ends)
# (its domUs' consoles copied to its lab disk first: its monitor copies them only once a minute)
# (the power-off is left running there: an ssh whose peer powers off mid-session waited
# for its 300 s timeout, which delayed every run's end by 5 min, run 15)
peer_off() { timeout 300 ssh root@$peer 'cp /var/log/xen/console/*.log /lab/out/ 2>/dev/null; sync; echo u >/proc/sysrq-trigger; nohup sh -c "sleep 3; echo o >/proc/sysrq-trigger" </dev/null >/dev/null 2>&1 &' >/dev/null 2>&1; }
ev XEN-START
xen_start || fail "Xen's daemons did not start"
ev XEN-UP
# the lab link is the NIC with MAC 52:54:00:12:34:0X (the storage NIC, with XENLAB_NFS,
# has 52:54:00:12:35:0X)
nic_of() { local n; for n in /sys/class/net/*; do case $(cat $n/address) in $1*) basename $n; return 0;; esac; done; return 1; }
nic=$(nic_of 52:54:00:12:34:) || nic=$(ls /sys/class/net | grep -v -E '^(lo|vif|xenbr)' | head -1)
ip link set "$nic" up; ip addr add $me/24 dev "$nic"
# storage_up: xenbr0 over the storage NIC (Domain M's vif joins it), dom0's address on it,
# the export mounted read-write at /srv/storage (the kernel's NFSv4 client, busybox mount
# as in the appliance: no nfs-common in dom0).
storage_up() {
	local snic server port export i out
	server=$(sed -n 's/^server *= *//p' /lab/nfs) port=$(sed -n 's/^port *= *//p' /lab/nfs) export=$(sed -n 's/^export *= *//p' /lab/nfs)
	snic=$(nic_of 52:54:00:12:35:) || { ev STORAGE where=$role error=no-storage-nic; return 1; }
	modprobe bridge; modprobe nfsv4
	ip link add xenbr0 type bridge && ip link set "$snic" master xenbr0 && ip link set "$snic" up && ip link set xenbr0 up &&
		ip addr add 10.0.2.15/24 dev xenbr0 || { ev STORAGE where=$role error=bridge; return 1; }
	mkdir -p /srv/storage
	for ((i = 0; i < 60; i++)); do
		out=$(busybox mount -t nfs4 -o rw,noac,lookupcache=none,port=$port,addr=$server $server:$export /srv/storage 2>&1) && break
		sleep 5
	done
	mountpoint -q /srv/storage || { ev STORAGE where=$role error=mount "$out"; return 1; }
	ev STORAGE where=$role nic=$snic mounted=$server:$export port=$port image="$(ls -l /srv/storage/target.img 2>&1 | tr -s ' ')"
}
ev BOOTED uptime=$(cut -d' ' -f1 /proc/uptime) "$(xl info | grep -E '^(xen_version|virt_caps)' | tr -s ' ' | tr '\n' ' ')"

# xenstore watches, timestamped here: domains released, suspend requests, Domain M's state.
watch_xs() {
	xenstore-watch "$1" | while read -r p; do echo "$(date +%s.%N) $role XS $p $(xenstore-read "$p" 2>/dev/null)"; done >>$out/xs.log &
}
# (not all of /local/domain: each of the dozens of writes of a domain creation forked
# two processes here, competing with xenconsoled for dom0's CPU; see xl_create)
watch_xs @releaseDomain; watch_xs @introduceDomain
# xl_create LOG ARGS...: xl create, up to three times. Since Xen 4.14 libxl fails a
# creation when xenconsoled has not written the console's tty node 10 s after the
# kernel started loading (LIBXL_INIT_TIMEOUT); under TCG at load 16-30 the build alone
# took longer (run 7: A's target failed so, B's first domain passed). A failed
# attempt consumes a domain id, which is harmless here.
xl_create() {
	local log=$1 try; shift
	for try in 1 2 3; do
		xl -vvv create "$@" 2>>$out/$log && return 0
		ev XL-CREATE-RETRY "$*" try=$try "$(grep -a -m1 'error' $out/$log | tr -s ' ')"
		sleep 5
	done
	return 1
}

# Wait until domain $1's xenstore node $2 reads $3 (or, with $3 = "*", exists); $4 seconds.
wait_xs() {
	local i
	for ((i = 0; i < $4 * 2; i++)); do
		v=$(xenstore-read "/local/domain/$1/$2" 2>/dev/null) && { [ "$3" = "*" ] || [ "$v" = "$3" ]; } && return 0
		sleep 0.5
	done
	return 1
}
# plant DOM SEED: write "plant SEED" to the domain's console.
plant() {
	local tty; tty=$(xenstore-read /local/domain/$1/console/tty) || return 1
	echo "plant $2" >"$tty"
}
# found DOMAINM SEED: the gpa at which Domain M reported SEED (from its subtree).
found() {
	local k
	for k in $(xenstore-list /local/domain/$1/domainm/found 2>/dev/null); do
		set -- $1 $2 $(xenstore-read /local/domain/$1/domainm/found/$k)
		[ "${4:-}" = "$2" ] && { echo "$3"; return 0; }
		set -- $1 $2
	done
	return 1
}
wait_found() {
	local i g
	for ((i = 0; i < $3 * 2; i++)); do g=$(found $1 $2) && { echo "$g"; return 0; }; sleep 0.5; done
	return 1
}
# check_frame DOM GPA SEED: dom0's own view of the frame holds the marker at GPA.
check_frame() {
	local gfn=$(($2 >> 12)) off=$(($2 & 4095)) want="DOMAINM-XENLAB-PLANT:$3"
	[ $off -le $((4096 - ${#want})) ] || { ev FRAME-CHECK skipped "marker crosses the frame at $2"; return 0; }
	local r; r=$(domainm-xen frame $1 $gfn $off ${#want}) || return 1
	echo "$r" >>$out/frames.log
	echo "$r" | grep -qF "bytes \"$want\""
}
seed() { head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
# found_all SEED: every address at which Domain M reported SEED so far.
found_all() {
	if [ $domm = supervisor ]; then
		found-console.sh $1 1 all
	else
		local k
		for k in $(xenstore-list /local/domain/$M/domainm/found 2>/dev/null); do
			set -- $1 $(xenstore-read /local/domain/$M/domainm/found/$k)
			[ "${3:-}" = "$1" ] && echo "$2"
			set -- $1
		done
	fi
}

# (B goes on without it: A waits for B's READY, and its disk step at B then fails)
[ -n "$nfs" ] && { storage_up || { [ $role = A ] && fail "the shared storage"; }; }
if [ $role = B ]; then
	# advance B's domain ids: the migrated domains must arrive with new ids
	ev IDBUMP-CREATE
	# (a failed build consumes its id too: run 6's 32 MiB was too small for the kernel)
	xl -vvv create -p /lab/target.cfg 'name="idbump"' 'memory=96' 'maxmem=96' 2>$out/xl-idbump.log && ev IDBUMP-DESTROY && xl destroy idbump || echo "could not advance the domain ids"
	touch /run/xenlab-ready; ev READY
	exec sleep infinity
fi

# ---- host A ----
# (A works alone until the migration; it waits for B only then: in run 8 A waited
# 2.5 min for B before creating its domains)
# The target is created paused and runs only once Domain M monitors it.
# start_pair TRY: create target and Domain M, grant, wait for monitoring, unpause the
# target and wait for its "TARGET UP"; sets T and M. Returns 1 when the target died
# while booting (lab run 11: a triple fault at its first seconds, which Xen turns into
# a reboot; xl restarted it as a new domain that Domain M did not map, so target.cfg
# says on_reboot = "destroy" and the pair is made again).
start_pair() {
	ev TARGET-CREATE try=$1
	xl_create xl-create-target.log -p /lab/target.cfg || fail "xl create target"
	T=$(xl domid target); ev TARGET-CREATED domid=$T
	watch_xs /local/domain/$T/control
	ev DOMAINM-CREATE
	if [ $domm = supervisor ]; then
		if [ -n "$nfs" ]; then
			# a vif on the storage bridge; its address on the command line (domainm-init)
			xl_create xl-create-domainm.log -p /lab/domainm.cfg "extra=\"console=hvc0 rdinit=/init quiet domainm_target=$T domainm_ip=10.0.2.16/24\"" \
				'vif=["bridge=xenbr0,mac=00:16:3e:d0:4d:01"]' || fail "xl create domainm"
		else
			xl_create xl-create-domainm.log -p /lab/domainm.cfg "extra=\"console=hvc0 rdinit=/init quiet domainm_target=$T\"" || fail "xl create domainm"
		fi
	else
		xl_create xl-create-domainm.log -p /lab/domainm.cfg || fail "xl create domainm"
	fi
	M=$(xl domid domainm); ev DOMAINM-CREATED domid=$M
	domainm-xen grant $M $T | tee -a $out/grant.log || fail "grant"
	ev GRANTED domainm=$M target=$T maxgpfn=$(domainm-xen maxgpfn $T)
	# dom0 keeps domainm/frames equal to the target's p2m (frames it populates above the
	# supervisor's 4 GiB sweep are found only through it); it stops when the target's
	# domain here is gone (the migration's end)
	domainm-xen follow $M $T 10s >>$out/follow.log 2>&1 &
	xl unpause domainm; ev DOMAINM-UNPAUSED
	wait_monitoring $M 2400 || fail "Domain M not monitoring"
	if [ $domm = supervisor ]; then
		# the supervisor maps exactly the frames of the grant (or fails): those, as ranges
		ev MONITORING where=A domid=$M ranges_from=grant ranges="$(grant_ranges $T)"
	else
		ev MONITORING where=A domid=$M ranges="$(xenstore-read /local/domain/$M/domainm/ranges)"
	fi
	xl list -l target >$out/xl-list-target.json
	ev TARGET-UNPAUSE where=A; xl unpause target
	local i
	for ((i = 1; i <= 4800; i++)); do
		grep -q "TARGET UP" /var/log/xen/console/guest-target.log 2>/dev/null && return 0
		# every 10 s: is the target still the domain Domain M maps?
		if ((i % 20 == 0)) && [ "$(xl domid target 2>/dev/null)" != "$T" ]; then
			ev TARGET-GONE domid=$T try=$1 "$(xl dmesg | grep -a -E "d${T}v[0-9]+ (Triple fault|.*crash)" | tail -1 | tr -s ' ')"
			return 1
		fi
		# a kernel panic leaves the domain running (halted; lab run nfs-2: "BUG:
		# ENTRY_TRAMPOLINE stack guard page was hit" at 113 s, then 15 min of waiting)
		if ((i % 20 == 0)) && grep -a -q "Kernel panic" /var/log/xen/console/guest-target.log 2>/dev/null; then
			ev TARGET-GONE domid=$T try=$1 panic="$(grep -a -m1 -E "BUG:|Oops|Kernel panic" /var/log/xen/console/guest-target.log | cut -c1-160 | tr -s ' ')"
			return 1
		fi
		sleep 0.5
	done
	fail "target not up after 40 min"
}
# (Domain M's steps, from its domainm/progress node, become events while we wait)
wait_monitoring() {
	[ $domm = supervisor ] && { wait_status $1 $2; return; }
	local i p last=
	for ((i = 0; i < $2 * 2; i++)); do
		p=$(xenstore-read /local/domain/$1/domainm/progress 2>/dev/null) && [ "$p" != "$last" ] && { ev DOMAINM-PROGRESS "$p"; last=$p; }
		[ "$(xenstore-read /local/domain/$1/domainm/state 2>/dev/null)" = monitoring ] && return 0
		sleep 0.5
	done
	return 1
}
# wait_status DOMAINM SECONDS: the supervisor answers the status request "monitoring"
# (every 10 s: each request is a process in dom0; its answer goes to out/status.log).
wait_status() {
	local i r end=$(($(date +%s) + $2))
	for ((i = 1; $(date +%s) < end; i++)); do
		r=$(timeout 120 domainm-xen request $1 "{\"id\":\"status-$i\",\"cmd\":\"status\"}" 2>&1)
		echo "$(date +%s.%N) $r" >>$out/status.log
		case $r in *'"state":"monitoring"'*) return 0;; esac
		sleep 10
	done
	return 1
}
# grant_ranges DOM: the frames dom0's grant lists (domainm-xen frames), as gpa ranges.
grant_ranges() {
	local r f n rs=
	for r in $(domainm-xen frames $1); do
		f=${r%%+*} n=${r##*+}
		rs="$rs $(printf '%#x-%#x' $((f << 12)) $(((f + n) << 12)))"
	done
	echo ${rs# }
}
# five tries: the target's kernel panics at its first user-mode entry now and then (runs
# nfs-2, nfs-3, ci-69f599e twice; cause not found), and make test runs this lab
for try in 1 2 3 4 5; do
	start_pair $try && break
	[ $try = 5 ] && fail "the target died while booting, five times"
	xl destroy domainm; xl destroy target 2>/dev/null
	# the next boot's console log starts afresh (the lab reads the e820 map from it)
	mv /var/log/xen/console/guest-target.log $out/guest-target-try$try.log 2>/dev/null
	mv /var/log/xen/console/guest-domainm.log $out/guest-domainm-try$try.log 2>/dev/null
done
ev TARGET-UP where=A
s1=$(seed); ev PLANT where=A seed=$s1; plant $T $s1 || fail "plant at A"
if [ $domm = supervisor ]; then
	g=$(found-console.sh $s1 900) || fail "Domain M did not find seed $s1"
else
	g=$(wait_found $M $s1 900) || fail "Domain M did not find seed $s1"
fi
[ -n "$g" ] || fail "Domain M did not find seed $s1"
ev FOUND where=A gpa=$g seed=$s1 domid=$T
# The copy Domain M reported first may be one the target's shell held for a moment and
# reused before dom0 looks (run 20: 2.6 s later the frame held other strings): then any
# other copy it reported that dom0 still sees will do (the planted variable and
# /run/planted.SEED stay), after its next alerts had a few seconds to come.
check_frame $T $g $s1 && ev FRAME-OK where=A gpa=$g || {
	ok=
	for i in 1 2 3 4 5 6; do
		for g1 in $(found_all $s1); do
			[ "$g1" = "$g" ] && continue
			check_frame $T $g1 $s1 && { ev FRAME-OK where=A gpa=$g1 first_copy_gone=$g; ok=1; break 2; }
		done
		sleep 5
	done
	[ -n "$ok" ] || fail "dom0's view of $g (and of every other copy Domain M reported) lacks the marker"
}
# The disk check over NFS at A: Domain M's baseline of the image, a setuid file planted
# into the image from dom0, its alert on Domain M's console.
if [ -n "$nfs" ]; then
	b=$(nfs-check.sh alert disk-baseline-created - 600) || fail "Domain M recorded no baseline of the disk image"
	ev DISK-BASELINE where=A at=$b
	ev DISK-PLANT where=A path=/usr/bin/.xenlab-A
	nfs-check.sh plant /usr/bin/.xenlab-A >>$out/disk-plant.log 2>&1 || fail "plant in the disk image at A: $(tail -3 $out/disk-plant.log)"
	ev DISK-PLANTED where=A path=/usr/bin/.xenlab-A
	a=$(nfs-check.sh alert file-added /usr/bin/.xenlab-A 900) || fail "Domain M did not alert the file planted in the disk image at A"
	ev DISK-ALERT where=A path=/usr/bin/.xenlab-A at=$a
fi

# B ready?
# every 30 s: each ssh costs both emulated dom0s seconds of CPU (run 6: B's xl create
# shared its dom0 with up to three sshd handshakes at once)
# (no ConnectTimeout: it also bounds the wait for the server's banner, which took over
# 3 s under load in run 6, so that every attempt broke)
for i in $(seq 1 120); do timeout 300 ssh root@$peer test -e /run/xenlab-ready 2>/dev/null && break; sleep 30; done
ssh root@$peer true || fail "host B unreachable"
# clock offset of B against A (B's watch log is in B's clock)
t1=$(date +%s.%N); tb=$(ssh root@$peer date +%s.%N); t2=$(date +%s.%N)
ev CLOCK b=$tb a1=$t1 a2=$t2

# ---- co-migration A -> B: domainm-migrate migrate --xen (P1-P4 by order; README) ----
# (run 14: the target triple-faulted after the marker was found and on_reboot destroyed
# it; say so, and whether Domain M still says "monitoring" of it: its foreign mappings
# keep the dead domain's pages, which it went on scanning)
if [ "$(xl domid target 2>/dev/null)" != "$T" ]; then
	ev TARGET-GONE domid=$T before=migration "$(xl dmesg | grep -a -E "d${T}v[0-9]+ (Triple fault|.*crash)" | tail -1 | tr -s ' ')"
	[ $domm = supervisor ] && wait_status $M 60 && ev DOMAINM-STATE domid=$M state=monitoring target=$T target_gone=1
	fail "the target (domain $T) is gone before the migration"
fi
# what Domain M maps now (domainm/mapped-frames, written by domainm run's frame refresh)
# beside the target's p2m now: run 16's remap at B counted 32785 frames at A, though the
# target had given frame 0x10 back while booting
ev FRAMES-BEFORE-MIGRATION domainm_mapped=$(xenstore-read /local/domain/$M/domainm/mapped-frames 2>/dev/null || echo none) target_p2m="$(domainm-xen frames $T 2>&1 | tr '\n' ' ')"
ev MIGRATE-START
domainm-migrate migrate --xen --domm-save --dest $peer --tool /lab/domainm-xen --json -v >$out/migrate.json 2>$out/migrate.log
rc=$?; ev MIGRATE-DONE rc=$rc
[ $rc = 0 ] || fail "domainm-migrate migrate --xen: rc=$rc: $(tail -3 $out/migrate.log)"
T2=$(ssh root@$peer xl domid target); M2=$(ssh root@$peer xl domid domainm)
ev ARRIVED target=$T2 domainm=$M2
ssh root@$peer xl list >>$out/console.log

s2=$(seed); sleep 5; ev PLANT where=B seed=$s2
ssh root@$peer "echo plant $s2 > \$(xenstore-read /local/domain/$T2/console/tty)" || fail "plant at B"
if [ $domm = supervisor ]; then
	g2=$(ssh root@$peer /lab/found-console.sh $s2 900) || fail "Domain M did not find seed $s2 at B"
else
g2=$(ssh root@$peer "for i in \$(seq 1800); do for k in \$(xenstore-list /local/domain/$M2/domainm/found); do set -- \$(xenstore-read /local/domain/$M2/domainm/found/\$k); [ \"\$2\" = $s2 ] && { echo \$1; exit 0; }; done; sleep 0.5; done; exit 1") || fail "Domain M did not find seed $s2 at B"
fi
ev FOUND where=B gpa=$g2 seed=$s2 domid=$T2
r=$(ssh root@$peer /lab/domainm-xen frame $T2 $(($g2 >> 12)) $(($g2 & 4095)) 37) ; echo "$r" >>$out/frames.log
echo "$r" | grep -qF "bytes \"DOMAINM-XENLAB-PLANT:$s2\"" && ev FRAME-OK where=B gpa=$g2 || fail "B dom0's view of $g2 lacks the marker"
# The disk check over NFS after the co-migration: planted from B's dom0 into the same
# image (the shared storage), alerted by Domain M at B.
if [ -n "$nfs" ]; then
	ev DISK-PLANT where=B path=/usr/bin/.xenlab-B
	ssh root@$peer /lab/nfs-check.sh plant /usr/bin/.xenlab-B >>$out/disk-plant.log 2>&1 || fail "plant in the disk image at B: $(tail -3 $out/disk-plant.log)"
	ev DISK-PLANTED where=B path=/usr/bin/.xenlab-B
	a=$(ssh root@$peer /lab/nfs-check.sh alert file-added /usr/bin/.xenlab-B 900) || fail "Domain M did not alert the file planted in the disk image at B"
	ev DISK-ALERT where=B path=/usr/bin/.xenlab-B at=$a
fi
# dom0 B's domainm-xen follow (started by domainm-migrate after the grant): it still
# runs, and domainm/frames equals Xen's p2m of the target's new domain there (asked up to
# three times, 11 s apart: one 10 s period may be between a change and its rewrite)
for i in 1 2 3; do
	fb=$(ssh root@$peer xenstore-read /local/domain/$M2/domainm/frames 2>&1)
	pb=$(ssh root@$peer /lab/domainm-xen frames $T2 2>&1 | tr '\n' ' ' | sed 's/ *$//')
	alive=$(ssh root@$peer "pgrep -f '[d]omainm-xen follow $M2 $T2' >/dev/null && echo yes || echo no")
	[ "$fb" = "$pb" ] && [ $alive = yes ] && break
	[ $i = 3 ] || sleep 11
done
eq=no; [ "$fb" = "$pb" ] && eq=yes
ev FOLLOW-B equal=$eq running=$alive domainm_frames="$(echo $fb | tr ' ' ',')" p2m="$(echo $pb | tr ' ' ',')"
ssh root@$peer 'cp /var/log/domainm-xen-follow.log /lab/out/follow.log 2>/dev/null; sync'
domm_report
cp /var/log/xen/console/guest-*.log $out/ 2>/dev/null
ssh root@$peer 'cp /var/log/xen/console/guest-*.log /lab/out/ 2>/dev/null; cp /var/log/xen/console/guest-target.log /lab/out/guest-target-B.log; sync'
ev DONE
sync; peer_off

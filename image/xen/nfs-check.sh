#!/bin/bash
# nfs-check.sh: the lab's side of the disk check over NFS (XENLAB_NFS), run in a dom0.
#
# nfs-check.sh plant PATH
#   writes a setuid shell script at PATH into the target's disk image on the shared
#   storage (/srv/storage/target.img, dom0's read-write NFS mount) with debugfs -w, in
#   place, as a compromised target writing its own disk would; fails on any debugfs error.
# nfs-check.sh alert ACTION PATH SECONDS
#   waits until Domain M's console (xenconsoled's log in this dom0) shows an alert whose
#   event.action is ACTION and, unless PATH is -, whose file.path is PATH; prints the
#   alert's @timestamp (Domain M's clock). Exit 1 if none within SECONDS.
set -u
export DEBUGFS_PAGER=__none__
img=/srv/storage/target.img
log=/var/log/xen/console/guest-domainm.log
case ${1:-} in
plant)
	path=${2:?path}
	src=$(mktemp) cmds=$(mktemp)
	printf '#!/bin/sh\n# planted by the Xen lab at %s on %s\nexec /bin/sh -p\n' "$(date -u +%FT%TZ)" "$(hostname)" >"$src"
	printf 'write %s %s\nsif %s mode 0104755\n' "$src" "$path" "$path" >"$cmds"
	out=$(debugfs -w -f "$cmds" "$img" 2>&1)
	rc=$?
	echo "$out"
	rm -f "$src" "$cmds"
	[ $rc = 0 ] || exit 1
	# debugfs reports a failed command on its output only (exit 0): "write: ...: ..."
	echo "$out" | grep -v -E '^(debugfs[ :]|Allocated inode)' | grep -q ': ' && exit 1
	sync
	# read back (debugfs, read-only): the inode is there, setuid
	debugfs -R "stat $path" "$img" 2>&1 | grep -E 'Mode: +0?4755' || exit 1
	;;
alert)
	action=${2:?action} path=${3:?path} end=$(($(date +%s) + ${4:?seconds}))
	while [ "$(date +%s)" -lt $end ]; do
		if [ "$path" = - ]; then
			l=$(grep -a -F "\"action\":\"$action\"" $log 2>/dev/null | head -1)
		else
			l=$(grep -a -F "\"action\":\"$action\"" $log 2>/dev/null | grep -F "\"path\":\"$path\"" | head -1)
		fi
		if [ -n "$l" ]; then
			echo "$l" | sed -n 's/.*"@timestamp":"\([^"]*\)".*/\1/p'
			exit 0
		fi
		sleep 1
	done
	exit 1
	;;
*)
	echo "usage: nfs-check.sh plant PATH | alert ACTION PATH|- SECONDS" >&2
	exit 2
	;;
esac

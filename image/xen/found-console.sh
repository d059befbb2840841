#!/bin/bash
# found-console.sh SEED SECONDS: the guest-physical address at which the real supervisor
# in Domain M reported the lab's marker with SEED: its alerts (JSON lines, rule
# xenlab_marker, image/xen/rules) reach Domain M's console, which xenconsoled writes to
# this dom0's /var/log/xen/console/guest-domainm.log. Exit 1 if none within SECONDS.
# found-console.sh SEED SECONDS all: every distinct address reported so far, first first.
seed=${1:?seed} end=$(($(date +%s) + ${2:?seconds})) all=${3:-}
log=/var/log/xen/console/guest-domainm.log
while [ "$(date +%s)" -lt $end ]; do
	g=$(grep -a -o "\"address\":\"0x[0-9a-f]*\"[^{}]*\"data_text\":\"DOMAINM-XENLAB-PLANT:$seed\"" $log 2>/dev/null |
		sed 's/^"address":"\(0x[0-9a-f]*\)".*/\1/' | awk '!seen[$0]++')
	if [ -n "$g" ]; then
		[ "$all" = all ] && echo "$g" || echo "$g" | head -1
		exit 0
	fi
	sleep 1
done
exit 1

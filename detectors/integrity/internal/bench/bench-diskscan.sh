#!/usr/bin/env bash
# bench-diskscan: domainm baseline / check through an ext4 disk image, side by side with
# aide --init / aide --check on the same files in a folder, same attributes, sha256 only.
#
# The Debian root (debootstrap, mirror taken from the machine's apt sources) and the ext4
# image built from it are cached under $BENCH_CACHE (default /var/cache/domainm-bench),
# outside the repository, so re-runs only measure.
#
# Environment: BENCH_CACHE, DOMAINM (default bin/domainm), WORKERS (default nproc; the
# same for both tools), SUITE (default: the host's codename), COLD=1 to evict the inputs
# (image, qcow2, tree; posix_fadvise, not the whole machine's cache) before every run
# (default: warm cache for both, after one read of each input), REPEAT (default 3),
# BENCH_DISK_SCALE=1 to add a scale row: a second tree padded to >= 200,000 files
# (cached too), one baseline and check of each tool on it, with time and peak memory
# against the first tree.
set -euo pipefail

CACHE=${BENCH_CACHE:-/var/cache/domainm-bench}
DOMAINM=$(realpath "${DOMAINM:-bin/domainm}")
WORKERS=${WORKERS:-$(nproc)}
SUITE=${SUITE:-$(. /etc/os-release && echo "$VERSION_CODENAME")}
ROOTFS=$CACHE/rootfs-$SUITE
IMG=$CACHE/rootfs-$SUITE.ext4
QCOW=$CACHE/rootfs-$SUITE.qcow2
MIN_BYTES=$((1 << 30))
MIN_FILES=30000
# Packages beyond the base system, to reach a server-sized tree (kernel modules,
# compilers, interpreters, documentation).
INCLUDE=linux-image-amd64,python3,perl,git,vim,build-essential,man-db,manpages,locales,openssh-server,sudo,cron,rsyslog

log() { printf '%s\n' "bench-diskscan: $*" >&2; }
trap 'log "failed at line $LINENO"' ERR

# mirror prints the first URI of the apt sources that serve $SUITE (deb822 or one-line).
mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -e "$f" ] || continue
		awk -v suite="$SUITE" '
			/^[[:space:]]*$/ { if (uri != "" && ok) { print uri; exit } uri=""; ok=0; next }
			/^URIs:/ { uri=$2 }
			/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok=1 }
			END { if (uri != "" && ok) print uri }' "$f" | head -n1
	done | head -n1
	local l
	for l in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		if [ -e "$l" ]; then
			awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }' "$l"
		fi
	done | head -n1
	return 0
}

tree_stats() { # files bytes of regular files under $1
	find "$1" -xdev -type f -printf '%s\n' | awk '{ n++; b += $1 } END { printf "%.0f %.0f\n", n, b }'
}

build_rootfs() {
	if [ -f "$ROOTFS/.bench-complete" ]; then return; fi
	local m
	m=$(mirror | head -n1)
	[ -n "$m" ] || { log "no apt source for $SUITE in /etc/apt/sources.list*"; exit 2; }
	log "debootstrap $SUITE into $ROOTFS (once; cached)"
	rm -rf "$ROOTFS.tmp"
	mkdir -p "$CACHE"
	debootstrap --include="$INCLUDE" "$SUITE" "$ROOTFS.tmp" "$m" >"$CACHE/debootstrap.log" 2>&1 ||
		{ tail -20 "$CACHE/debootstrap.log" >&2; exit 2; }
	# Pad with real files (copies of the tree's own libraries) until big enough.
	local i=0 files bytes
	read -r files bytes < <(tree_stats "$ROOTFS.tmp")
	while [ "$files" -lt "$MIN_FILES" ] || [ "$bytes" -lt "$MIN_BYTES" ]; do
		i=$((i + 1))
		log "padding: $files files, $bytes bytes; copying /usr/lib to /opt/pad/$i"
		mkdir -p "$ROOTFS.tmp/opt/pad/$i"
		cp -a "$ROOTFS.tmp/usr/lib/." "$ROOTFS.tmp/opt/pad/$i/"
		read -r files bytes < <(tree_stats "$ROOTFS.tmp")
	done
	touch "$ROOTFS.tmp/.bench-complete"
	mv "$ROOTFS.tmp" "$ROOTFS"
}

build_image() {
	if [ -f "$IMG" ] && [ "$IMG" -nt "$ROOTFS/.bench-complete" ]; then return; fi
	local kib
	kib=$(du -sk --apparent-size "$ROOTFS" | cut -f1)
	kib=$((kib * 13 / 10 + 512 * 1024))
	log "mkfs.ext4 -d $ROOTFS -> $IMG (${kib} KiB)"
	rm -f "$IMG.tmp"
	mkfs.ext4 -q -F -b 4096 -d "$ROOTFS" "$IMG.tmp" "${kib}k"
	mv "$IMG.tmp" "$IMG"
}

build_qcow2() {
	if [ -f "$QCOW" ] && [ "$QCOW" -nt "$IMG" ]; then return; fi
	log "qemu-img convert -> $QCOW"
	qemu-img convert -f raw -O qcow2 "$IMG" "$QCOW.tmp"
	mv "$QCOW.tmp" "$QCOW"
}

calc() { awk "BEGIN { printf \"${2:-%.6f}\", $1 }"; } # expression [format]

warm() {
	if [ "${COLD:-0}" = 1 ]; then
		"$WORK/evict" "$IMG" "$QCOW" "$ROOTFS" 2>/dev/null
	fi
}

build_rootfs
build_image
build_qcow2
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-diskscan.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [ "${COLD:-0}" = 1 ]; then
	(cd "$(dirname "$0")/cmd/evict" && go build -o "$WORK/evict" .)
fi

read -r FILES BYTES < <(tree_stats "$ROOTFS")
ENTRIES=$(find "$ROOTFS" -xdev | wc -l)
IMGSIZE=$(stat -c %s "$IMG")
log "tree: $FILES regular files, $BYTES bytes, $ENTRIES entries; image $IMGSIZE bytes; workers $WORKERS"
if [ "$FILES" -lt "$MIN_FILES" ] || [ "$BYTES" -lt "$MIN_BYTES" ]; then
	log "tree too small (want >= $MIN_FILES files and >= $MIN_BYTES bytes): rm -rf $ROOTFS and re-run"
	exit 2
fi

# Same selection and attributes for both: everything under /, file type, permissions,
# inode, link count, owner, group, size, mtime, ctime, link target, capabilities, sha256.
cat >"$WORK/policy.toml" <<'EOF'
version = 1
[[select]]
name = "all"
paths = ["/"]
attrs = ["type", "mode", "uid", "gid", "inode", "nlink", "link", "caps", "size", "mtime", "ctime", "sha256"]
EOF
cat >"$WORK/aide.conf" <<EOF
database_in=file:$WORK/aide.db.gz
database_out=file:$WORK/aide.db.new.gz
gzip_dbout=yes
root_prefix=$ROOTFS
num_workers=$WORKERS
report_url=file:$WORK/aide.report
Bench = ftype+p+i+n+u+g+s+m+c+l+caps+sha256
/ Bench
!/.bench-complete\$
EOF

if [ "${COLD:-0}" != 1 ]; then
	log "warming the page cache (one read of the image and of the tree)"
	cat "$IMG" "$QCOW" >/dev/null
	find "$ROOTFS" -xdev -type f -print0 | xargs -0 cat >/dev/null 2>&1 || true
fi

declare -A SECS CPU RSS
run() { # name, command...: wall and CPU (user+sys) seconds and peak RSS (KiB) of the command
	local name=$1 rc=0 wall user sys rss
	shift
	warm
	/usr/bin/time -f '%e %U %S %M' -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || rc=$?
	read -r wall user sys rss < <(tail -n1 "$WORK/$name.time")
	SECS[$name]=$wall
	CPU[$name]=$(calc "$user + $sys")
	RSS[$name]=$rss
	log "$name: exit $rc, ${wall}s wall, ${CPU[$name]}s CPU, peak RSS ${rss} KiB"
	if [ "$rc" -ne 0 ]; then
		tail -5 "$WORK/$name.out" "$WORK/$name.err" >&2
		exit 2
	fi
}

# Each measurement REPEAT times, the tools interleaved so that both see the same load;
# the table shows the median run of each.
REPEAT=${REPEAT:-3}
declare -A RUNS
rec() { # tool rep: remember wall, CPU and peak RSS of one repetition
	RUNS[$1]+="${SECS[$1.$2]} ${CPU[$1.$2]} ${RSS[$1.$2]}"$'\n'
}
median() { # tool: sets SECS, CPU and RSS[tool] to the run with the median wall time
	local line
	line=$(printf '%s' "${RUNS[$1]}" | sort -n | awk '{ l[NR] = $0 } END { print l[int((NR + 1) / 2)] }')
	read -r SECS[$1] CPU[$1] RSS[$1] <<<"$line"
}
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
for i in $(seq "$REPEAT"); do
	run domainm-baseline.$i "$DOMAINM" baseline --image "$IMG" --policy "$WORK/policy.toml" --db "$WORK/dm.db" --workers "$WORKERS" --json
	rec domainm-baseline "$i"
	run aide-init.$i aide --init -c "$WORK/aide.conf"
	rec aide-init "$i"
	run domainm-baseline-qcow2.$i "$DOMAINM" baseline --image "$QCOW" --policy "$WORK/policy.toml" --db "$WORK/dmq.db" --workers "$WORKERS"
	rec domainm-baseline-qcow2 "$i"
done
mv "$WORK/aide.db.new.gz" "$WORK/aide.db.gz"
for i in $(seq "$REPEAT"); do
	run domainm-check.$i "$DOMAINM" check --image "$IMG" --db "$WORK/dm.db" --workers "$WORKERS"
	rec domainm-check "$i"
	run aide-check.$i aide --check -c "$WORK/aide.conf"
	rec aide-check "$i"
	run domainm-check-qcow2.$i "$DOMAINM" check --image "$QCOW" --db "$WORK/dmq.db" --workers "$WORKERS"
	rec domainm-check-qcow2 "$i"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
for t in domainm-baseline aide-init domainm-baseline-qcow2 domainm-check aide-check domainm-check-qcow2; do
	median "$t"
done

DM_FILES=$(grep -o '"hashed": *[0-9]*' "$WORK/domainm-baseline.1.out" | grep -o '[0-9]*$')
DM_RECS=$(grep -o '"records": *[0-9]*' "$WORK/domainm-baseline.1.out" | grep -o '[0-9]*$')
AIDE_ENTRIES=$(grep -o 'Number of entries:[[:space:]]*[0-9]*' "$WORK/aide.report" | grep -o '[0-9]*$' | tail -1 || echo "?")

echo
echo "bench-diskscan: $FILES regular files ($ENTRIES entries), $(calc "$BYTES / 1000000" %.0f) MB of content;"
echo "image $IMG ($(calc "$IMGSIZE / 1048576" %.0f) MiB, raw ext4; and as qcow2); workers $WORKERS; page cache $([ "${COLD:-0}" = 1 ] && echo cold || echo warm); median of $REPEAT runs"
echo "domainm: $DM_RECS entries recorded, $DM_FILES files hashed; aide: $AIDE_ENTRIES entries checked"
echo
echo "load average before the runs: $LOAD, after: $LOAD_AFTER (other work on the machine inflates wall time, less so CPU time)"
echo
printf '%-10s %-24s %9s %9s %10s %9s %9s\n' phase tool seconds "CPU s" files/s MB/s "peak MB"
for phase in baseline check; do
	case $phase in baseline) a=aide-init ;; check) a=aide-check ;; esac
	for tool in domainm-$phase domainm-$phase-qcow2 $a; do
		s=${SECS[$tool]}
		printf '%-10s %-24s %9.2f %9.2f %10.0f %9.1f %9.1f\n' "$phase" "$tool" "$s" "${CPU[$tool]}" "$(calc "$FILES / $s")" "$(calc "$BYTES / 1000000 / $s")" "$(calc "${RSS[$tool]} / 1024")"
	done
	printf '%-10s %-24s %8.2fx %8.2fx\n' "$phase" "aide/domainm (raw)" "$(calc "${SECS[$a]} / ${SECS[domainm-$phase]}")" "$(calc "${CPU[$a]} / ${CPU[domainm-$phase]}")"
done

[ "${BENCH_DISK_SCALE:-0}" = 1 ] || exit 0

# Scale row: the same root padded with copies of its /usr/share (small files) to
# >= 200,000 files, one run of each tool, growth against the tree above.
BIG_FILES=200000
BIGROOT=$CACHE/rootfs-$SUITE-200k
BIGIMG=$CACHE/rootfs-$SUITE-200k.ext4
if [ ! -f "$BIGROOT/.bench-complete" ]; then
	log "building the scale tree in $BIGROOT (once; cached)"
	rm -rf "$BIGROOT.tmp"
	cp -a "$ROOTFS" "$BIGROOT.tmp"
	rm -f "$BIGROOT.tmp/.bench-complete"
	i=0
	read -r files bytes < <(tree_stats "$BIGROOT.tmp")
	while [ "$files" -lt "$BIG_FILES" ]; do
		i=$((i + 1))
		log "scale padding: $files files; copying /usr/share to /opt/pad-share/$i"
		mkdir -p "$BIGROOT.tmp/opt/pad-share/$i"
		cp -a "$BIGROOT.tmp/usr/share/." "$BIGROOT.tmp/opt/pad-share/$i/"
		read -r files bytes < <(tree_stats "$BIGROOT.tmp")
	done
	touch "$BIGROOT.tmp/.bench-complete"
	mv "$BIGROOT.tmp" "$BIGROOT"
fi
if [ ! -f "$BIGIMG" ] || [ "$BIGROOT/.bench-complete" -nt "$BIGIMG" ]; then
	kib=$(du -sk --apparent-size "$BIGROOT" | cut -f1)
	kib=$((kib * 13 / 10 + 1024 * 1024))
	log "mkfs.ext4 -d $BIGROOT -> $BIGIMG (${kib} KiB)"
	rm -f "$BIGIMG.tmp"
	mkfs.ext4 -q -F -b 4096 -N $((BIG_FILES * 2)) -d "$BIGROOT" "$BIGIMG.tmp" "${kib}k"
	mv "$BIGIMG.tmp" "$BIGIMG"
fi
read -r BFILES BBYTES < <(tree_stats "$BIGROOT")
BENTRIES=$(find "$BIGROOT" -xdev | wc -l)
sed -i "s|^root_prefix=.*|root_prefix=$BIGROOT|; s|aide.db|aide-big.db|g" "$WORK/aide.conf"
if [ "${COLD:-0}" != 1 ]; then
	cat "$BIGIMG" >/dev/null
	find "$BIGROOT" -xdev -type f -print0 | xargs -0 cat >/dev/null 2>&1 || true
fi
run big-domainm-baseline "$DOMAINM" baseline --image "$BIGIMG" --policy "$WORK/policy.toml" --db "$WORK/big.db" --workers "$WORKERS"
run big-aide-init aide --init -c "$WORK/aide.conf"
mv "$WORK/aide-big.db.new.gz" "$WORK/aide-big.db.gz"
run big-domainm-check "$DOMAINM" check --image "$BIGIMG" --db "$WORK/big.db" --workers "$WORKERS"
run big-aide-check aide --check -c "$WORK/aide.conf"

echo
echo "scale: $BFILES regular files, $(calc "$BBYTES / 1000000" %.0f) MB against $FILES, $(calc "$BYTES / 1000000" %.0f) MB ($(calc "$BFILES / $FILES" %.2f)x the files); one run each"
printf '%-10s %-12s %9s %9s %9s %10s %10s %10s\n' phase tool seconds "CPU s" "peak MB" "x seconds" "x CPU" "x peak MB"
for pair in baseline:domainm:domainm-baseline baseline:aide:aide-init check:domainm:domainm-check check:aide:aide-check; do
	IFS=: read -r phase tool small <<<"$pair"
	big=big-$small
	printf '%-10s %-12s %9.2f %9.2f %9.1f %9.2fx %9.2fx %9.2fx\n' "$phase" "$tool" "${SECS[$big]}" "${CPU[$big]}" "$(calc "${RSS[$big]} / 1024")" \
		"$(calc "${SECS[$big]} / ${SECS[$small]}")" "$(calc "${CPU[$big]} / ${CPU[$small]}")" "$(calc "${RSS[$big]} / ${RSS[$small]}")"
done
# The check holds the baseline in memory: its growth per entry is the figure to watch.
echo "peak memory per added entry ($ENTRIES -> $BENTRIES entries): domainm baseline $(calc "(${RSS[big-domainm-baseline]} - ${RSS[domainm-baseline]}) * 1024 / ($BENTRIES - $ENTRIES)" %.0f) B, check $(calc "(${RSS[big-domainm-check]} - ${RSS[domainm-check]}) * 1024 / ($BENTRIES - $ENTRIES)" %.0f) B"

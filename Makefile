# Domain M — build, test, demo and benchmarks.
#
# Every target that needs system packages installs them first (Debian 12, as root,
# through the machine's own apt configuration), so a fresh machine needs nothing
# installed by hand.

SHELL        := /bin/bash
GO           ?= go
BIN          := bin
GOFLAGS_TEST ?= -count=1
# The version stamped into both binaries (--version, domainm_build_info, the first log
# line): git describe of this tree; without git, the binaries fall back to Go's VCS stamp.
MODULE       := github.com/domainm/domainm
VERSION      ?= $(shell git describe --always --dirty 2>/dev/null || echo devel)
COMMIT       ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS      := -X $(MODULE)/internal/cmdline.version=$(VERSION) -X $(MODULE)/internal/cmdline.commit=$(COMMIT)
# Packages the build, the tests and the demo need. Keep sorted.
APT_PACKAGES := aide busybox-static cpio cryptsetup-bin debootstrap e2fsprogs fdisk file gnutls-bin \
                gcc iproute2 libc6-dev libvirt-daemon-driver-qemu libvirt-daemon-system libxen-dev libyara-dev linux-headers-amd64 linux-image-amd64 logrotate man-db nfs-ganesha nfs-ganesha-vfs pkg-config qemu-block-extra qemu-system-x86 \
                qemu-utils rpcbind rsyslog rsyslog-gnutls squashfs-tools systemd yara
DEPS_STAMP   := $(BIN)/.deps-ok

.PHONY: all deps build test test-short fuzz demo bench-memscan vet clean help

all: build

help:
	@echo "make demo           set up everything and scan a live demo VM's memory"
	@echo "make test           install what is needed and run every test (what CI runs)"
	@echo "make build          build bin/domainm, bin/domainm-migrate and bin/domainm-migrate-bench"
	@echo "make image          build the appliance image into bin/image (root, needs debootstrap)"
	@echo "make image-repro    build the image twice and compare the SHA256SUMS"
	@echo "make lab            the full loop here: NFS, rsyslogd/TLS, target + Domain M, alerts, co-migration"
	@echo "make deb            build bin/deb/domainm_*.deb and bin/deb/domainm-migrate_*.deb"
	@echo "make install        install both binaries, unit, config, rules, man pages (DESTDIR=...)"
	@echo "make fuzz           run each fuzz target for FUZZTIME (default 10s)"
	@echo "make bench-memscan  domainm scan-memory vs the yara CLI on a >= 1 GiB image"
	@echo "make bench-guest    cost of attribution and of the virtual (seam) scan on a booted Linux guest"
	@echo "make bench-diskscan domainm baseline/check vs aide --init/--check on a Debian root"
	@echo "make bench-alerts   100,000 alerts spooled, then delivered to a real rsyslogd"
	@echo "make bench-migrate  co-migration experiment, reduced (sizes halved, 1 run per cell)"
	@echo "make xen-lab        two nested Xen hosts under QEMU: foreign mapping, co-migration A->B"

# deps: apt packages (only those missing), then Go modules.
deps: $(DEPS_STAMP)
$(DEPS_STAMP): Makefile go.mod go.sum
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing </dev/null; \
	fi
	$(GO) mod download
	@mkdir -p $(BIN) && touch $@
	@# bin/ holds build output, including the image build's root trees (with /proc
	@# mounted while debootstrap runs): a go.mod makes it a module of its own, so that
	@# ./... in `go vet ./...` and `go test ./...` never walks into it.
	@printf 'module domainm.invalid/build-output\n' > $(BIN)/go.mod

build: deps
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./appliance/cmd/... ./migrate-hooks/cmd/...

STATICCHECK_VERSION := v0.8.2
vet: deps
	$(GO) vet ./...
	GOBIN=$(CURDIR)/$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(BIN)/staticcheck ./...

# test: everything CI runs. VM tests use KVM where a guest can run under it and TCG
# otherwise; they never skip silently.
# The public corpora (e2fsprogs' test images, public YARA rule sets) are read from
# ../shared/corpora (or $DOMAINM_CORPORA); they are never copied into the repository.
DOMAINM_CORPORA ?= $(abspath $(CURDIR)/../shared/corpora)
export DOMAINM_CORPORA

# The Xen lab runs last (issue 13: in make test while the whole run stays under 60 min):
# two Xen hosts nested under QEMU (TCG), the real supervisor as Domain M, the memory
# finding, the co-migration with P1-P4 and the disk check over NFS; its dom0 image is
# built from nothing on a fresh clone (2.6 min here), 15.5 min in all (lab run 24).
test: build vet
	$(GO) test $(GOFLAGS_TEST) -timeout 45m ./...
	$(MAKE) fuzz FUZZTIME=5s
	XENLAB_DOMM=supervisor $(MAKE) xen-lab
	@if [ ! -d "$(DOMAINM_CORPORA)" ]; then \
	  echo "WARNING: $(DOMAINM_CORPORA) not found: the corpus tests (e2fsprogs images, public YARA rule sets) were SKIPPED"; fi

test-short: build
	$(GO) test $(GOFLAGS_TEST) -short ./...

FUZZTIME ?= 10s
# Each line: package and fuzz target. Runs briefly in `make test`; longer with FUZZTIME=10m.
FUZZ_TARGETS := \
	./memscan/elfcore:FuzzParse \
	./diskscan:FuzzPartitions \
	./diskscan:FuzzQcow2 \
	./diskscan:FuzzExt4 \
	./appliance/internal/alert:FuzzSyslogFrame \
	./appliance/internal/config:FuzzParse \
	./detectors/integrity:FuzzParsePolicy \
	./detectors/integrity:FuzzReadDB \
	./detectors/integrity:FuzzDecodeRecord \
	./detectors/yara:FuzzRuleSource \
	./detectors/yara:FuzzCrossing \
	./detectors/yara:FuzzScreen \
	./image/ganesha:FuzzParseReply \
	./memscan/linux:FuzzPTWalk \
	./memscan/linux:FuzzScanModules \
	./memscan/linux:FuzzWalkXArray \
	./memscan/linux:FuzzParseIDT \
	./memscan/linux:FuzzParseSystemMap \
	./memscan/linux:FuzzSeams \
	./memscan/linux:FuzzBTF \
	./memscan/linux:FuzzKallsyms \
	./memscan/linux:FuzzTranslate \
	./migrate-hooks/internal/virt:FuzzDecodeMonitorEvent

# A duration -fuzztime can end with "context deadline exceeded" and no crasher: a race in
# Go's fuzz coordinator at the deadline (go.dev/issue/75804, fixed in Go 1.27; we build
# with 1.26). Only that failure is run again (up to 3 tries); a failure that wrote a
# crasher (saved under testdata/fuzz) or printed anything else fails at once.
fuzz: deps
	@set -e; log=$$(mktemp); trap 'rm -f $$log' EXIT; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
	  for try in 1 2 3; do \
	    if $(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1x $$pkg >$$log 2>&1; then cat $$log; break; fi; \
	    cat $$log; \
	    if ! grep -q 'context deadline exceeded' $$log || grep -q -e 'Failing input written' -e '^panic' $$log || [ $$try = 3 ]; then exit 1; fi; \
	    echo "fuzz $$name: Go's deadline race (go.dev/issue/75804), no crasher: again (try $$((try+1)) of 3)"; \
	  done; \
	done

# demo: boot a small Linux guest whose RAM is a shared file, let it hold an "implant"
# string, and find it from outside with domainm scan-memory and the shipped rules; then
# baseline a small ext4 image, plant a setuid backdoor with debugfs, and domainm check it.
demo: build
	$(GO) run ./appliance/cmd/domainm-demo -domainm $(BIN)/domainm -rules rules/yara

# bench-guest: boots the attribution test guest (Debian kernel under TCG, 300 extra
# processes) and prints what attribution and the virtual (seam) scan add to a full and to
# an unchanged pass, wall-clock and CPU time, with the machine's load.
.PHONY: bench-guest
bench-guest: deps
	$(GO) test -count=1 -run '^TestGuestAttribution$$/^cost$$' -v -timeout 30m ./appliance/internal/cli/

# bench-memscan: domainm scan-memory against `yara -s` on a 1 GiB synthetic guest image
# with 128 rules, a dense image with 5 literal rules and a public rule set, in the same
# run; prints CPU and wall ratios and checks equal findings. BENCH_MEM_SCALE=1 adds a 4x
# image (time and peak memory growth); BENCH_MEM_PROFILE=DIR writes CPU profiles;
# BENCH_MEM_BEFORE=BINARY runs another domainm build in turn with the two (before/after);
# BENCH_MEM_CALLGRIND=BYTES counts both tools' instructions (valgrind) on that much of the
# dense image, a figure the machine's load does not move (67108864: about 5 minutes).
bench-memscan: build
	$(GO) run ./memscan/cmd/memscan-bench -domainm $(BIN)/domainm -size $${BENCH_MEM_SIZE:-1073741824} \
		$${BENCH_MEM_SCALE:+-scale} $${BENCH_MEM_PROFILE:+-cpuprofile $$BENCH_MEM_PROFILE} \
		$${BENCH_MEM_BEFORE:+-before $$BENCH_MEM_BEFORE} $${BENCH_MEM_CALLGRIND:+-callgrind $$BENCH_MEM_CALLGRIND}

# bench-diskscan: domainm baseline/check through an ext4 image of a debootstrap'd Debian
# root (>= 1 GiB, >= 30,000 files; cached in /var/cache/domainm-bench) against aide
# --init/--check on the same files, same attributes, sha256 only, in the same run.
.PHONY: bench-diskscan
bench-diskscan: build
	DOMAINM=$(BIN)/domainm detectors/integrity/internal/bench/bench-diskscan.sh

# bench-alerts: 100,000 alerts spooled with a real rsyslogd down, then delivered over
# TCP once it is up; prints the spool rate, the spool's disk use and the delivery rate.
.PHONY: bench-alerts
bench-alerts: deps
	DOMAINM_ALERT_BURST=$${BENCH_ALERTS:-100000} $(GO) test -count=1 -run '^TestRsyslogBurst$$' -v -timeout 30m ./appliance/internal/alert/

# bench-migrate: the published co-migration experiment (migrate-hooks/README.md), reduced
# to fit 15 minutes on 2 cores: sizes halved (512/256/128 MiB, TCG Linux guests), one run
# per cell, nosync/sync/paced, shaped 1 Gbit/s veth between two namespaces and unshaped.
# The full run: $(BIN)/domainm-migrate-bench (1024/512/256 MiB, 10 runs per cell).
.PHONY: bench-migrate
bench-migrate: build
	$(BIN)/domainm-migrate-bench --fixed 512 --sizes 512,256,128 --reps 1 --out $(BIN)/bench-migrate

# xen-lab: Domain M on two real Xen 4.17 hosts nested in QEMU (TCG): the dom0 image is
# built from Debian's archive into bin/xen-lab (cached), both hosts boot, dom0 A maps the
# target from Domain M, co-migrates both to B and checks the marker found at A and B
# (migrate-hooks/internal/xenlab, image/xen). `make test` runs it last, with the real
# supervisor (XENLAB_DOMM=supervisor; the default Domain M is the lab's agent).
.PHONY: xen-lab
xen-lab: deps
	$(GO) test -count=1 -tags xenlab -run '^TestXenLab$$' -v -timeout 110m ./migrate-hooks/internal/xenlab/

# image: the appliance image (image/build.sh): bin/image/{disk.raw,vmlinuz,initrd.img,
# cmdline,SHA256SUMS}. The debootstrap tarball is cached in bin/image-cache; a build whose
# inputs (bin/domainm, image/, rules/, package list) are unchanged is skipped.
# image-repro: two builds into bin/image-repro/{a,b}, the second with its own debootstrap
# second stage (IMAGE_FRESH_ROOT=1, minutes), same SOURCE_DATE_EPOCH; SHA256SUMS compared.
.PHONY: image image-repro
image: build
	image/build.sh $(BIN)/image

image-repro: build
	rm -rf $(BIN)/image-repro
	export SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct); \
	image/build.sh $(BIN)/image-repro/a && IMAGE_FRESH_ROOT=1 image/build.sh $(BIN)/image-repro/b
	diff $(BIN)/image-repro/a/SHA256SUMS $(BIN)/image-repro/b/SHA256SUMS && echo "image-repro: identical"

# lab: the full loop on this machine (image/lab; README "Deploying next to your own QEMU
# VM"): nfs-ganesha exporting the target's disk, rsyslogd on TLS with a lab-made CA, a
# target VM and Domain M booted from the appliance image (make image, run by the lab and
# skipped when its inputs are unchanged; nvdimm + the image's read-only NFS mount), both
# alerts at rsyslogd, a co-migration by domainm-migrate between two local hosts, a new
# string found from the destination, ganesha stopped and started. Prints a timeline;
# consoles, QEMU command lines, configs and logs stay in bin/lab/run.
.PHONY: lab
lab: image
	$(GO) run ./image/lab/cmd/domainm-lab -dir $(BIN)/lab/run -bin $(BIN)/lab

# deb: the appliance side (domainm: binary, unit, config and rules as conffiles, policy,
# man page, bash completion, logrotate snippet) and the host side (domainm-migrate, built
# without cgo) as Debian packages in bin/deb, with nfpm (image/deb/build.sh says which and
# why). install: the same files under $(DESTDIR) (default /), as the packages lay them out.
.PHONY: deb install
deb: build
	DOMAINM_BIN=$(BIN)/domainm VERSION=$(VERSION) COMMIT=$(COMMIT) image/deb/build.sh $(BIN)/deb

DESTDIR ?=
install: build
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/domainm-migrate ./migrate-hooks/cmd/domainm-migrate
	image/deb/install.sh "$(DESTDIR)/" $(BIN)

clean:
	rm -rf $(BIN)

#!/bin/bash
# build.sh OUTDIR: builds domainm_VERSION_amd64.deb and domainm-migrate_VERSION_amd64.deb
# into OUTDIR with nfpm, from the tree image/deb/install.sh lays out (make install's).
#
# nfpm runs as `go run github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION`: pinned,
# fetched as a Go module, and kept out of go.mod (its dependencies, rpm, apk, signing,
# are nothing the appliance links). v2.45.0: later releases need go.digitalxero.dev
# modules that the module proxy does not serve.
set -euo pipefail
out=${1:?usage: build.sh OUTDIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
GO=${GO:-go}
NFPM_VERSION=v2.45.0
mod=github.com/domainm/domainm

version=${VERSION:-$(git -C "$root" describe --always --dirty 2>/dev/null || echo devel)}
commit=${COMMIT:-$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)}
# A Debian version starts with a digit: a tag v1.2.3-4-gabc gives 1.2.3+4+gabc, a bare
# commit abc1234[-dirty] gives 0~gitabc1234[+dirty].
if [[ $version =~ ^v?[0-9]+\.[0-9]+ ]]; then
  debversion=$(echo "${version#v}" | tr -- - +)
else
  debversion=0~git$(echo "$version" | tr -- - +)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ld="-X $mod/internal/cmdline.version=$version -X $mod/internal/cmdline.commit=$commit"
mkdir -p "$work/bin"
if [[ -n ${DOMAINM_BIN:-} ]]; then
  cp "$DOMAINM_BIN" "$work/bin/domainm" # make deb: the one make build linked with the same -X flags
else
  (cd "$root" && $GO build -ldflags "$ld" -o "$work/bin/domainm" ./appliance/cmd/domainm)
fi
# The coordinator without cgo, as on hypervisor hosts.
(cd "$root" && CGO_ENABLED=0 $GO build -ldflags "$ld" -o "$work/bin/domainm-migrate" ./migrate-hooks/cmd/domainm-migrate)
"$root/image/deb/install.sh" "$work/tree" "$work/bin"

# contents: every file of the tree under PREFIXES; files under /etc are conffiles.
contents() {
  local p f
  echo "contents:"
  for p in "$@"; do
    (cd "$work/tree" && find ".$p" -type f | sort) | while read -r f; do
      f=${f#.}
      echo "  - src: $work/tree$f"
      echo "    dst: $f"
      if [[ $f == /etc/* ]]; then echo "    type: config"; fi
      echo "    file_info: {mode: 0$(stat -c %a "$work/tree$f"), owner: root, group: root}"
    done
  done
}

common() {
  cat <<YAML
arch: amd64
platform: linux
version: "$debversion"
section: admin
priority: optional
maintainer: Domain M maintainers <domainm@localhost>
homepage: https://github.com/domainm/domainm
license: Proprietary
YAML
}

{
  echo "name: domainm"
  common
  cat <<YAML
description: |-
  Domain M hypervisor-level intrusion detection (appliance side)
  domainm scans a target VM's guest-physical memory and disk image from outside with
  YARA rules and file-integrity checks and sends alerts to syslog, SIEMs, the journal
  or a file. domainm run is the supervisor daemon (systemd unit domainm.service, not
  enabled on install: configure /etc/domainm/domainm.toml, then
  systemctl enable --now domainm).
depends: [libyara9]
recommends: [logrotate]
YAML
  contents /usr/bin/domainm /lib/systemd /etc /usr/share/domainm /usr/share/man/man8/domainm.8.gz \
    /usr/share/bash-completion/completions/domainm /usr/share/doc/domainm
} > "$work/domainm.yaml"

{
  echo "name: domainm-migrate"
  common
  cat <<YAML
description: |-
  Domain M co-migration coordinator and libvirt hook (host side)
  domainm-migrate live-migrates a target VM and its Domain M together so that the
  target never runs unwatched. The libvirt hook link is not installed; see
  domainm-migrate(8): ln -s /usr/bin/domainm-migrate /etc/libvirt/hooks/qemu
YAML
  contents /usr/bin/domainm-migrate /usr/share/man/man8/domainm-migrate.8.gz \
    /usr/share/bash-completion/completions/domainm-migrate /usr/share/doc/domainm-migrate
} > "$work/domainm-migrate.yaml"

mkdir -p "$out"
for p in domainm domainm-migrate; do
  (cd "$root" && GOFLAGS= $GO run "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION" package \
    --config "$work/$p.yaml" --packager deb --target "$out/${p}_${debversion}_amd64.deb") >&2
done
ls "$out"/*_"$debversion"_amd64.deb

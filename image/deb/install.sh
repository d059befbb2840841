#!/bin/bash
# install.sh DESTDIR BINDIR: installs Domain M's files under DESTDIR (make install; the
# .deb packages are built from the same tree). BINDIR holds the built domainm and
# domainm-migrate. Layout:
#   /usr/bin/domainm, /usr/bin/domainm-migrate
#   /lib/systemd/system/domainm.service            (Documentation=man:domainm(8))
#   /etc/domainm/domainm.toml                      conffile
#   /etc/domainm/rules/*.yar                       conffiles: the rules domainm run loads
#   /etc/logrotate.d/domainm                       conffile
#   /usr/share/domainm/policy/default.toml         the built-in integrity policy, to copy
#   /usr/share/man/man8/domainm{,-migrate}.8.gz
#   /usr/share/bash-completion/completions/domainm{,-migrate}
#   /usr/share/doc/domainm{,-migrate}/README.md
# The libvirt hook link (/etc/libvirt/hooks/qemu -> /usr/bin/domainm-migrate) is not
# made: see domainm-migrate(8).
set -euo pipefail
dest=${1:?usage: install.sh DESTDIR BINDIR}
bin=${2:?usage: install.sh DESTDIR BINDIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/image/deb

install -D -m 0755 "$bin/domainm" "$dest/usr/bin/domainm"
install -D -m 0755 "$bin/domainm-migrate" "$dest/usr/bin/domainm-migrate"
install -D -m 0644 "$root/image/systemd/domainm.service" "$dest/lib/systemd/system/domainm.service"
install -D -m 0640 "$root/image/domainm.toml" "$dest/etc/domainm/domainm.toml"
install -d -m 0755 "$dest/etc/domainm/rules"
install -m 0644 "$root"/rules/yara/*.yar "$dest/etc/domainm/rules/"
install -D -m 0644 "$here/domainm.logrotate" "$dest/etc/logrotate.d/domainm"
install -D -m 0644 "$root/rules/policy/default.toml" "$dest/usr/share/domainm/policy/default.toml"
for p in domainm domainm-migrate; do
  install -d -m 0755 "$dest/usr/share/man/man8"
  gzip -n -9 -c "$here/$p.8" > "$dest/usr/share/man/man8/$p.8.gz"
  chmod 0644 "$dest/usr/share/man/man8/$p.8.gz"
  install -D -m 0644 "$here/$p.bash-completion" "$dest/usr/share/bash-completion/completions/$p"
done
install -D -m 0644 "$root/README.md" "$dest/usr/share/doc/domainm/README.md"
install -D -m 0644 "$root/migrate-hooks/README.md" "$dest/usr/share/doc/domainm-migrate/README.md"

// Package lab is the full loop of issue 11 on one machine: shared storage served by
// nfs-ganesha (package image/ganesha), a syslog receiver, a target VM whose disk image
// sits in the exported folder, and a Domain M VM that watches the target's memory
// through an nvdimm and its disk over a read-only NFS mount of the export, co-migrated
// with the target by the migration coordinator between two local "hosts".
//
// Guests are the host's Debian kernel with a busybox initramfs built here (Guest):
// Linux guests run under TCG on the lab machines (DESIGN.md, "Test lab"), and the host
// kernel has no NFS client, so everything that reads NFS runs inside a guest, which
// reaches the host's 127.0.0.1 as 10.0.2.2 through QEMU user networking.
package lab

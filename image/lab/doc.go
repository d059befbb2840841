// Package lab is the full loop of issue 11 on one machine (make lab, TestFullLoop):
// shared storage served by nfs-ganesha (package image/ganesha), rsyslogd receiving
// alerts over TLS with a CA the lab makes, a target VM whose disk image sits in the
// exported folder, and a Domain M VM that watches the target's memory through an
// nvdimm (found by its NFIT handle) and its disk over a read-only, soft NFS mount of the
// export, answers the coordinator on a virtio-serial port, and is co-migrated with the
// target by the shipped domainm-migrate between two local "hosts" (two sets of QEMU
// processes with the same device model; Host, Machine). Run prints a timeline.
//
// Guests are the host's Debian kernel with a busybox initramfs built here (Guest):
// Linux guests run under TCG on the lab machines (DESIGN.md, "Test lab"), and the host
// kernel has no NFS client, so everything that reads NFS runs inside a guest, which
// reaches the host's 127.0.0.1 as 10.0.2.2 through QEMU user networking.
//
// Domain M here is a stand-in (DomM): the same domainm binary and configuration as the
// appliance image, in a busybox initramfs, so the loop does not depend on the image
// build; it prints `domainm status --json` and each new alert on its console, which
// ParseConsole reads back. The target (TargetGuest) obeys commands on its own
// virtio-serial port (Tell): plant a string in a new process, plant a setuid binary on
// its disk.
package lab

// Package lab is the full loop of issue 11 on one machine (make lab, TestFullLoop):
// shared storage served by nfs-ganesha (package image/ganesha), rsyslogd receiving
// alerts over TLS with a CA the lab makes, a target VM whose disk image sits in the
// exported folder, and Domain M booted from the appliance image (make image; package
// image's Boot), which watches the target's memory through an nvdimm (found by its NFIT
// handle) and its disk over the image's read-only, soft NFS mount of the export
// (configured through fw_cfg opt/domainm/nfs), answers the coordinator on a
// virtio-serial port, and is co-migrated with the target by the shipped domainm-migrate
// between two local "hosts" (two sets of QEMU processes with the same device model;
// Host, Machine). Run prints a timeline, with progress while it waits.
//
// The target is the host's Debian kernel with a busybox initramfs built here (Guest):
// Linux guests run under TCG on the lab machines (DESIGN.md, "Test lab"), and the host
// kernel has no NFS client, so everything that reads NFS runs inside a guest, which
// reaches the host's 127.0.0.1 as 10.0.2.2 through QEMU user networking. It obeys
// commands on its own virtio-serial port (Tell): plant a string in a new process, plant
// a setuid binary on its disk. Domain M's status comes from its control port, its
// alerts from rsyslogd.
//
// DomM is a lighter stand-in for the NFS tests (TestDiskOverNFS, TestStorageOutage):
// the same domainm binary in a busybox initramfs, which prints `domainm status --json`
// and each new alert on its console for ParseConsole.
package lab

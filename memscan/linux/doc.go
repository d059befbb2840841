// Package linux describes a Linux guest from its guest-physical memory alone: where the
// kernel is (its banner and release, the KASLR physical and virtual shifts, the kernel
// page-table root), virtual-to-physical translation (x86-64, 4- and 5-level paging with
// 1 GiB and 2 MiB pages), the kernel's own symbols (its kallsyms tables, found by their
// structure), its own types (its BTF, parsed with github.com/cilium/ebpf/btf) and, from
// those, its processes and modules. It is to guest memory what diskscan is to disks: a
// deterministic description, with no agent in the guest and no per-version offsets.
//
// # Security
//
// Guest memory is attacker-controlled. Every pointer read from it is hostile: page walks
// never read a table outside the source's RAM ranges, list walks are bounded and detect
// loops, lengths are capped, and errors say what was being read and where.
package linux

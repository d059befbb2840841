// Package testenv is the test support every package of the module writes otherwise: run
// an external tool and fail with its output, wait for a condition with a deadline, a free
// port on 127.0.0.1, a pseudo-terminal, a Go binary built once per test process. It is
// cilium/ebpf's internal/testutils and the standard library's internal/testenv for this
// module, imported by tests only.
//
// Why here: a package used across top-level folders must be public, and there is no
// module-root internal/ (the top-level folders are fixed). image/ already holds the lab
// the tests share across the tree (image/qemu, the launcher memscan, migrate-hooks and
// appliance VM tests use), and sits outside the import layering appliance → detectors →
// memscan, diskscan. testenv depends on the standard library and golang.org/x only,
// never on the module, so that the lowest packages (diskscan) can use it without an
// edge upward.
//
// What belongs here: helpers that know nothing of Domain M. Domain-specific support
// lives beside its domain: diskscan/ext4test builds ext4 images, appliance/domainmtest
// runs the daemon, image/rsyslogtest runs the alerts' syslog receiver, internal/clitest
// checks both command lines' --help.
//
// A missing tool fails the test (t.Fatal) rather than skipping it: `make deps` installs
// every tool the tests use, and a silent skip would test nothing.
package testenv

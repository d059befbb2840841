// Package mmap maps files read-only into memory, for memscan's memory sources (a guest's
// RAM file) and diskscan's raw disk images, and reads the mappings without letting a
// fault (SIGBUS: the file was truncated under the mapping, a device went away, an I/O
// error on NFS) crash the process.
//
// It is, with memscan/internal/privcmd, one of the few places that may import unsafe and
// golang.org/x/sys/unix; please keep it small and free of policy.
package mmap

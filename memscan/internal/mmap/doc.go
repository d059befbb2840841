// Package mmap maps files read-only into memory for memscan's backends.
//
// It forwards to github.com/domainm/domainm/internal/mmap, which diskscan shares (a Go
// internal package under memscan cannot be imported from diskscan); the code lives there.
package mmap

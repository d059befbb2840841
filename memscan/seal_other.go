//go:build !linux

package memscan

import "os"

// cannotShrink: file seals are Linux's; elsewhere every file may shrink.
func cannotShrink(*os.File) bool { return false }

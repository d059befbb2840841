package memscan

// DiskRequests returns how many preads src (a disk: source) has issued, and its
// small-read cache's hits and misses.
func DiskRequests(src Source) (requests, hits, misses uint64) {
	d := src.(*DiskSource)
	if d.cache != nil {
		hits, misses = d.cache.stats()
	}
	return d.requests.Load(), hits, misses
}

// SetDiskCache turns src's small-read cache off (for before/after measurements) or on.
func SetDiskCache(src Source, on bool) {
	d := src.(*DiskSource)
	if !on {
		d.cache = nil
	} else if d.cache == nil {
		d.cache = newDiskCache()
	}
}

package alert

// Reopen closes the file of every file sink, so that the next batch opens its path
// again: after logrotate renamed the file (postrotate: systemctl reload), alerts go to
// the new file instead of following the old one. What was written before stays in the
// renamed file; nothing is lost or written twice. It returns the sinks reopened.
func (d *Dispatcher) Reopen() []string {
	var names []string
	for _, r := range d.runners {
		if f, ok := r.batch.(*fileSink); ok {
			if err := f.close(); err != nil {
				r.log.Warn("closing alert file for reopen", "path", f.cfg.Path, "err", err)
			}
			names = append(names, r.cfg.Name)
			r.poke() // anything waiting goes to the new file at once
		}
	}
	return names
}

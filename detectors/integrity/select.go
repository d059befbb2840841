package integrity

// Selection rules, as for AIDE users: the most specific selection wins (the one whose
// matching pattern has the most segments; a literal path beats a glob of the same
// depth; then the later selection in the file). An exclude pattern removes the path and
// everything below it: the top-level exclude list from every selection, a selection's
// own list from that selection only (a less specific selection may then apply).

func matchAny(ps []pattern, segs []string) bool {
	for _, p := range ps {
		if _, ok := p.match(segs, true); ok {
			return true
		}
	}
	return false
}

// Select returns the selection that covers the guest path, or nil.
func (p *Policy) Select(guestPath string) *Selection {
	return p.selectSegs(splitPath(guestPath))
}

func (p *Policy) selectSegs(segs []string) *Selection {
	if matchAny(p.Exclude, segs) {
		return nil
	}
	var best *Selection
	bestDepth, bestLiteral := -1, false
	for _, s := range p.Selections {
		for _, pt := range s.Paths {
			d, ok := pt.match(segs, s.Recursive)
			if !ok {
				continue
			}
			lit := !pt.glob
			better := d > bestDepth || (d == bestDepth && (lit || !bestLiteral))
			if better && !matchAny(s.Exclude, segs) {
				best, bestDepth, bestLiteral = s, d, lit
			}
		}
	}
	return best
}

// setuidCandidate reports whether the setuid sweep looks at the path.
func (p *Policy) setuidCandidate(segs []string) bool {
	return p.Setuid.Enabled && !matchAny(p.Setuid.Exclude, segs)
}

// descend reports whether the walk must enter the directory: something below it may be
// selected, or the setuid sweep covers it.
func (p *Policy) descend(segs []string) bool {
	if p.setuidCandidate(segs) {
		return true
	}
	if matchAny(p.Exclude, segs) {
		return false
	}
	for _, s := range p.Selections {
		if matchAny(s.Exclude, segs) {
			continue
		}
		for _, pt := range s.Paths {
			if pt.mayMatchBelow(segs, s.Recursive) {
				return true
			}
		}
	}
	return false
}

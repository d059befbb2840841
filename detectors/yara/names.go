package yara

// RuleName names one compiled rule: its namespace (the file's path without extension)
// and identifier, as detectors.Match reports them.
type RuleName struct {
	Namespace string
	Rule      string
}

// Names lists the rules of the set, so that a caller can tell a rule that no longer
// matches from one that is no longer loaded.
func (r *Rules) Names() []RuleName {
	if r == nil || r.rules == nil {
		return nil
	}
	rs := r.rules.GetRules()
	out := make([]RuleName, 0, len(rs))
	for i := range rs {
		out = append(out, RuleName{Namespace: rs[i].Namespace(), Rule: rs[i].Identifier()})
	}
	return out
}

package alert

// RuleSeverity is the level a YARA rule's matches are alerted at, from its meta
// (severity, else score, else medium): what domainm rules list shows.
func RuleSeverity(meta map[string]string) Severity { return ruleSeverity(meta) }

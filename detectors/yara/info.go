package yara

import (
	"fmt"
	"path"
	"strings"
)

// RuleInfo describes one rule of a set: what domainm rules list prints.
type RuleInfo struct {
	Namespace string            // the file's path without extension
	Rule      string            // identifier
	Tags      []string          // YARA tags
	Meta      map[string]string // meta, values as text
	File      string            // the rule file relative to the folder ("" if unknown)
}

// Infos lists the set's rules with their tags, meta and file, in load order.
func (r *Rules) Infos() []RuleInfo {
	if r == nil || r.rules == nil {
		return nil
	}
	files := map[string]string{}
	for _, f := range r.files {
		files[strings.TrimSuffix(f, path.Ext(f))] = f
	}
	rs := r.rules.GetRules()
	out := make([]RuleInfo, 0, len(rs))
	for i := range rs {
		in := RuleInfo{Namespace: rs[i].Namespace(), Rule: rs[i].Identifier(), Tags: rs[i].Tags(), Meta: map[string]string{}}
		for _, m := range rs[i].Metas() {
			in.Meta[m.Identifier] = fmt.Sprint(m.Value)
		}
		in.File = files[in.Namespace]
		out = append(out, in)
	}
	return out
}

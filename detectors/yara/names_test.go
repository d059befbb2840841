package yara

import (
	"cmp"
	"slices"
	"testing"
)

// TestNames: every compiled rule is listed under the namespace a match reports.
func TestNames(t *testing.T) {
	dir := writeRules(t, map[string]string{
		"a.yar":      `rule alpha { condition: false } rule gamma { condition: false }`,
		"sub/b.yara": `private rule beta { condition: false }`,
	})
	r, err := Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := r.Names()
	want := []RuleName{{"a", "alpha"}, {"a", "gamma"}, {"sub/b", "beta"}}
	slices.SortFunc(got, func(x, y RuleName) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Rule, y.Rule))
	})
	if !slices.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	var none *Rules
	if n := none.Names(); n != nil {
		t.Errorf("nil Rules: %v", n)
	}
}

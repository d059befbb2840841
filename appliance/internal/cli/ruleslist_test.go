package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestRulesList lists a folder with the real binary: each rule's namespace:rule name,
// the severity its alerts get, its tags and file; a file that does not compile is
// named with its line on stderr and exit 2, the rest still listed; --json agrees.
func TestRulesList(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "linux"), 0o755)
	os.WriteFile(filepath.Join(dir, "linux", "shells.yar"), []byte(`rule rev_shell : shell linux { meta: severity = "critical" strings: $a = "bash -i" condition: $a }
rule scored { meta: score = 75 strings: $a = "xyz123" condition: $a }
`), 0o644)
	os.WriteFile(filepath.Join(dir, "plain.yara"), []byte(`rule plain { strings: $a = "plainmarker" condition: $a }`+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "broken.yar"), []byte("rule ok_b { condition: true }\n\nrule bad { condition: $nope }\n"), 0o644)

	out, errOut, code := runDomainm(t, "rules", "list", dir)
	t.Logf("exit %d:\n%s%s", code, out, errOut)
	if code != ExitError || !strings.Contains(errOut, "broken.yar:3: error:") {
		t.Errorf("exit %d, stderr %q; want %d naming broken.yar:3", code, errOut, ExitError)
	}
	for _, re := range []string{
		`(?m)^NAME +SEVERITY +TAGS +FILE$`,
		`(?m)^linux/shells:rev_shell +critical +shell,linux +linux/shells\.yar$`,
		`(?m)^linux/shells:scored +high +- +linux/shells\.yar$`,
		`(?m)^plain:plain +medium +- +plain\.yara$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("rules list does not match %s", re)
		}
	}
	if strings.Contains(out, "ok_b") {
		t.Error("a rule of the file that does not compile is listed")
	}
	js, _, _ := runDomainm(t, "rules", "list", dir, "--json")
	var list []ruleListing
	if err := json.Unmarshal([]byte(js), &list); err != nil || len(list) != 3 {
		t.Fatalf("--json: %v, %d rules\n%s", err, len(list), js)
	}
	if l := list[0]; l.Name != "linux/shells:rev_shell" || l.Rule.Name != "rev_shell" || l.Rule.Ruleset != "linux/shells" || l.Severity != "critical" || strings.Join(l.Tags, ",") != "shell,linux" || l.File != "linux/shells.yar" {
		t.Errorf("--json first rule %+v", l)
	}
	if _, _, code := runDomainm(t, "rules", "list"); code != ExitUsage {
		t.Errorf("rules list without a folder: exit %d, want %d", code, ExitUsage)
	}
}

// TestRulesFolderArgs: rules check and rules list take their folder before or after
// their flags (rules check refused `--profile DIR` as an unexpected argument), and a
// missing or second folder is a usage error (exit 64), not a failure.
func TestRulesFolderArgs(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.yar"), []byte(`rule a { strings: $a = "folder-args-mark" condition: $a }`+"\n"), 0o644)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"rules", "check", dir, "--profile", "--top", "1"}, ExitClean, "1 rules in 1 files OK"},
		{[]string{"rules", "check", "--profile", "--top", "1", dir}, ExitClean, "1 rules in 1 files OK"},
		{[]string{"rules", "check"}, ExitUsage, "want exactly one rules folder"},
		{[]string{"rules", "check", dir, dir}, ExitUsage, "want exactly one rules folder"},
		{[]string{"rules", "list", "--json", dir}, ExitClean, `"name": "a:a"`},
		{[]string{"rules", "list", dir, "--json"}, ExitClean, `"name": "a:a"`},
		{[]string{"rules", "list"}, ExitUsage, "want exactly one rules folder"},
		{[]string{"rules", "list", dir, "--nope"}, ExitUsage, "--nope"},
	} {
		out, errOut, code := runDomainm(t, c.args...)
		if code != c.code || !strings.Contains(out+errOut, c.want) {
			t.Errorf("domainm %s: exit %d, want %d and %q:\n%s%s", strings.Join(c.args[:2], " "), code, c.code, c.want, out, errOut)
		}
	}
}

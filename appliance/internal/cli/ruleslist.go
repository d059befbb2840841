package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/detectors/yara"
)

func init() {
	register(command{name: "rules list", summary: "list a rules folder's rules: name, tags, severity, file", run: runRulesList,
		exits: []exit{
			{ExitClean, "listed"},
			{ExitError, "a file does not compile (the rules that load are listed) or the folder cannot be read"},
		},
		examples: []string{
			"domainm rules list /etc/domainm/rules",
			`domainm rules list /etc/domainm/rules --json | jq -r '.[] | select(.severity == "critical") | .name'`,
		}})
}

// ruleListing is one line of domainm rules list --json.
type ruleListing struct {
	Name     string     `json:"name"` // namespace:rule, as rules.disable and rules.exception name it
	Rule     alert.Rule `json:"rule"` // rule.name and rule.ruleset, as in alerts and the scans' --json
	Tags     []string   `json:"tags"`
	Severity string     `json:"severity"` // domainm.severity of its alerts
	File     string     `json:"file"`
}

func runRulesList(ctx context.Context, env Env, args []string) (int, error) {
	fs := newFlags(env, "rules list", "rules list DIR [--json]",
		`Compiles a rules folder as the daemon does and lists every rule that loads: its name
(namespace:rule, the form rules.disable and rules.exception take), its tags (tag:TAG in
rules.disable), the severity its alerts get (from its meta: severity, else score, else
medium) and its file. A file that does not compile is reported and left out.`)
	asJSON := fs.Bool("json", false, "print a JSON array, one object per rule (name, rule.name, rule.ruleset, tags, severity, file)")
	dir, err := rulesFolderArgs(env, fs, args)
	if err != nil {
		return ExitUsage, err
	}
	r, ce, err := compileFolder(dir, env.Stderr)
	if err != nil && !errors.Is(err, yara.ErrNoRules) {
		return ExitError, err
	}
	list := []ruleListing{}
	for _, in := range r.Infos() {
		tags := in.Tags
		if tags == nil {
			tags = []string{}
		}
		list = append(list, ruleListing{Name: in.Namespace + ":" + in.Rule, Rule: alert.Rule{Name: in.Rule, Ruleset: in.Namespace},
			Tags: tags, Severity: alert.RuleSeverity(in.Meta).String(), File: in.File})
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(list); err != nil {
			return ExitError, err
		}
	} else {
		tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSEVERITY\tTAGS\tFILE")
		for _, l := range list {
			tags := strings.Join(l.Tags, ",")
			if tags == "" {
				tags = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.Name, l.Severity, tags, l.File)
		}
		tw.Flush()
	}
	if ce != nil {
		return ExitError, fmt.Errorf("%d error(s) in %s: %d file(s) left out", len(ce.Errors), dir, len(ce.Left))
	}
	return ExitClean, nil
}

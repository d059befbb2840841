package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/domainm/domainm/detectors"
)

// printFindings prints YARA findings for people: rule, path (file findings; quoted when
// the guest chose unprintable bytes), tags and description, then one line per match
// with its guest-physical address (memory) or file offset (files) and the bounded data.
func printFindings(w io.Writer, fs []detectors.Finding) {
	for _, f := range fs {
		fmt.Fprintf(w, "FOUND %s:%s", f.Namespace, f.Rule)
		if f.Path != "" {
			fmt.Fprintf(w, " %s", diskSafe(f.Path))
		}
		if len(f.Tags) > 0 {
			fmt.Fprintf(w, " [%s]", strings.Join(f.Tags, ","))
		}
		if d := f.Meta["description"]; d != "" {
			fmt.Fprintf(w, " — %s", diskSafe(d))
		}
		fmt.Fprintln(w)
		width := 10
		if f.Detector == "yara-memory" {
			width = 14
		}
		for _, m := range f.Matches {
			data := "hex:" + m.Hex
			if m.Text != "" {
				data = fmt.Sprintf("%q", m.Text)
			}
			if h := holderText(m); h != "" {
				data += "  " + h
			}
			fmt.Fprintf(w, "  %#0*x  %-12s %s\n", width, m.Offset, m.Name, data)
		}
		if f.MatchesCut > 0 {
			fmt.Fprintf(w, "  ... and %d more matches, not listed (cut)\n", f.MatchesCut)
		}
		if f.WindowDependent {
			fmt.Fprintf(w, "  (the rule's condition depends on the memory scan window: see domainm rules check)\n")
		}
	}
}

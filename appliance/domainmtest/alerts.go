package domainmtest

import (
	"bufio"
	"encoding/json"
	"os"
)

// ReadAlerts decodes each line of the daemon's JSON-lines alert file (a file sink) into
// a T. A missing file is no alerts yet; a line that does not decode is one being
// written, and is skipped.
func ReadAlerts[T any](path string) []T {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var a T
		if json.Unmarshal(sc.Bytes(), &a) == nil {
			out = append(out, a)
		}
	}
	return out
}

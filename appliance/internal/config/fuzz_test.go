package config

import (
	"strings"
	"testing"
)

// FuzzParse: any input gives a config or an error (never both, never a panic), and
// every error names the file.
func FuzzParse(f *testing.F) {
	// Small seeds: the minimiser's cost grows fast with input size (the shipped file
	// is checked by TestShippedConfig).
	f.Add([]byte(good))
	f.Add([]byte("[target]\nname = \"a\"\nmemory = \"xen:5\"\n[memory]\nblock_size = \"4MiB\"\n"))
	f.Add([]byte("[[alerts.sink]]\n[alerts.sink.x]\ny=1\n[[alerts.sink]]\nname='a'\n"))
	f.Add([]byte("a.b.c = 1\n[target]\n'memory' = \"file:/x\" # c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("f.toml", data)
		if (c == nil) == (err == nil) {
			t.Fatalf("config %v with error %v", c != nil, err)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "f.toml") {
			t.Fatalf("error does not name the file: %v", err)
		}
		if c != nil && (c.Memory.Workers < 1 || c.Memory.BlockSize < 64<<10 || c.Target.Memory == "") {
			t.Fatalf("invalid config accepted: %+v", c)
		}
	})
}

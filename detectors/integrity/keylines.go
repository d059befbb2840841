package integrity

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// keyLines maps TOML keys to the line that defines them, so that errors found after
// decoding (unknown keys, bad attribute names) can name the line. The TOML library
// keeps key positions private, hence this small line scanner; it only has to be right
// for well-formed TOML, since malformed TOML already failed to decode with a position.
//
// Keys are stored twice: plain ("select.paths", first occurrence) and with the index
// of the array table they are in ("select#2.paths").
type keyLines map[string]int

var (
	reHeader = regexp.MustCompile(`^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?`)
	reKey    = regexp.MustCompile(`^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*=`)
)

func indexKeyLines(src []byte) keyLines {
	kl := keyLines{}
	counts := map[string]int{}
	plain, indexed := "", ""
	inMulti := false
	for i, line := range strings.Split(string(src), "\n") {
		n := i + 1
		if strings.Count(line, `"""`)%2 == 1 || strings.Count(line, `'''`)%2 == 1 {
			inMulti = !inMulti
			if !inMulti {
				continue
			}
		}
		if inMulti && !reKey.MatchString(line) {
			continue
		}
		if m := reHeader.FindStringSubmatch(line); m != nil && !reKey.MatchString(line) {
			name := normKey(m[2])
			plain, indexed = name, name
			if m[1] == "[[" {
				indexed = name + "#" + strconv.Itoa(counts[name])
				counts[name]++
			}
			kl.add(plain, n)
			kl.add(indexed, n)
			continue
		}
		if m := reKey.FindStringSubmatch(line); m != nil {
			k := normKey(m[1])
			kl.add(join(plain, k), n)
			kl.add(join(indexed, k), n)
		}
	}
	return kl
}

func (kl keyLines) add(k string, line int) {
	if _, ok := kl[k]; !ok {
		kl[k] = line
	}
}

func join(table, key string) string {
	if table == "" {
		return key
	}
	return table + "." + key
}

// normKey turns `a . "b"` into a.b.
func normKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}

// at finds the line of a key given as pieces (indexed table names allowed), falling
// back to its closest parent; 0 when unknown.
func (kl keyLines) at(key []string) int {
	for n := len(key); n > 0; n-- {
		if l, ok := kl[strings.Join(key[:n], ".")]; ok {
			return l
		}
	}
	return 0
}

// find is at for a key reported by the TOML decoder.
func (kl keyLines) find(k toml.Key) int { return kl.at([]string(k)) }

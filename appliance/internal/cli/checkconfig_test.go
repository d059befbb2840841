package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCert writes a self-signed certificate valid from nb to na (and its key) as PEM.
func writeCert(t *testing.T, dir, name string, nb, na time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: nb, NotAfter: na}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// TestCheckConfigAllProblems: --check-config reports at once the file's problems and
// those of what it points at (rules, policy, certificates, memory source), each with
// file, line and full key path; errors exit 2, warnings alone exit 0.
func TestCheckConfigAllProblems(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	os.Mkdir(rules, 0o755)
	os.WriteFile(filepath.Join(rules, "good.yar"), []byte("rule good { strings: $a = \"x1y2z3\" condition: $a }\n"), 0o644)
	os.WriteFile(filepath.Join(rules, "bad.yar"), []byte("rule bad {\n  condition:\n    $nope\n}\n"), 0o644)
	policy := filepath.Join(dir, "policy.toml")
	os.WriteFile(policy, []byte("bogus = 1\n"), 0o644)
	now := time.Now()
	expired, _ := writeCert(t, dir, "expired-ca", now.Add(-48*time.Hour), now.Add(-time.Hour))
	soon, soonKey := writeCert(t, dir, "soon", now.Add(-time.Hour), now.Add(10*24*time.Hour))
	_, otherKey := writeCert(t, dir, "other", now.Add(-time.Hour), now.Add(365*24*time.Hour))
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate\n"), 0o644)
	mem := filepath.Join(dir, "not-yet.ram")

	cfg := filepath.Join(dir, "domainm.toml")
	src := fmt.Sprintf(`[target]
name = "t"
memory = "file:%s"
policy = "%s"
[memory]
interval = "30"
[rules]
dir = "%s"
[state]
dir = "%s"
[[alerts.sink]]
name = "siem"
type = "syslog"
transport = "tls"
address = "127.0.0.1:6514"
ca_file = "%s"
min_severity = "urgent"
[[alerts.sink]]
name = "es"
type = "jsonl"
transport = "tls"
address = "127.0.0.1:6515"
ca_file = "%s"
cert_file = "%s"
key_file = "%s"
[[alerts.sink]]
name = "x"
type = "jsonl"
transport = "tls"
address = "127.0.0.1:6516"
ca_file = "%s"
cert_file = "%s"
key_file = "%s"
`, mem, policy, rules, filepath.Join(dir, "state"), expired, garbage, soon, soonKey, soon, soon, otherKey)
	os.WriteFile(cfg, []byte(src), 0o644)

	var out, errb bytes.Buffer
	code := Main(context.Background(), Env{Stdout: &out, Stderr: &errb}, []string{"run", "--config", cfg, "--check-config"})
	got := out.String()
	want := []string{
		cfg + `:3: target.memory: warning: stat ` + mem + `: no such file or directory: domainm run waits for it`,
		cfg + `:4: target.policy: ` + policy + `:1: unknown key "bogus"`,
		cfg + `:6: memory.interval: needs a unit: "30" is a bare number`,
		cfg + `:8: rules.dir: warning: 1 rule error(s) in ` + rules + `; 1 rules load`,
		cfg + `:16: alerts.sink[0].ca_file: ` + expired + `: certificate "CN=expired-ca" expired on `,
		cfg + `:17: alerts.sink[0].min_severity: severity "urgent"`,
		cfg + `:23: alerts.sink[1].ca_file: ` + garbage + `: no PEM certificate in it`,
		cfg + `:24: alerts.sink[1].cert_file: warning: ` + soon + `: certificate "CN=soon" expires on `,
		cfg + `:31: alerts.sink[2].ca_file: warning: ` + soon,
		cfg + `:32: alerts.sink[2].cert_file: warning: ` + soon,
		cfg + `:33: alerts.sink[2].key_file: ` + otherKey + ` does not go with ` + soon,
		filepath.Join(rules, "bad.yar") + `:4: warning: does not compile, left out by domainm run: undefined string "$nope"`,
		cfg + `: 6 error(s), 6 warning(s)`,
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != len(want) {
		t.Errorf("%d lines, want %d", len(lines), len(want))
	}
	for i, w := range want {
		if i >= len(lines) || !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: want prefix\n%s", i+1, w)
		}
	}
	if code != ExitError || t.Failed() {
		t.Errorf("exit %d, output:\n%s\nstderr: %s", code, got, errb.String())
	}

	// Warnings only: exit 0, and they are still printed.
	os.Remove(filepath.Join(rules, "bad.yar"))
	good := fmt.Sprintf("[target]\nname = \"t\"\nmemory = \"file:%s\"\n[rules]\ndir = \"%s\"\n[state]\ndir = \"%s\"\n", mem, rules, filepath.Join(dir, "state"))
	os.WriteFile(cfg, []byte(good), 0o644)
	out.Reset()
	code = Main(context.Background(), Env{Stdout: &out, Stderr: &errb}, []string{"run", "--config", cfg, "--check-config"})
	if code != ExitClean || !strings.Contains(out.String(), cfg+":3: target.memory: warning:") || !strings.HasSuffix(out.String(), cfg+": configuration is valid, 1 warning(s)\n") {
		t.Errorf("warnings only: exit %d\n%s", code, out.String())
	}
	// A missing rules folder is an error: domainm run would not start.
	os.RemoveAll(rules)
	out.Reset()
	code = Main(context.Background(), Env{Stdout: &out, Stderr: &errb}, []string{"run", "--config", cfg, "--check-config"})
	if code != ExitError || !strings.Contains(out.String(), cfg+":5: rules.dir: stat "+rules+": no such file or directory") {
		t.Errorf("missing rules folder: exit %d\n%s", code, out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
		t.Error("--check-config created the state folder")
	}
}

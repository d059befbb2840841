package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

const pairXML = `<domain type='kvm'><name>web-1</name><uuid>4b1c...</uuid>
<metadata><dm:pair xmlns:dm="urn:domainm:migrate:1" role="target" domm="domm-1"/></metadata></domain>`

func TestLibvirtHook(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DOMAINM_LEASE_DIR", dir)
	run := func(xml string, args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), Env{Stdin: strings.NewReader(xml), Stdout: &out, Stderr: &errb}, "/etc/libvirt/hooks/qemu", args)
		if out.Len() != 0 {
			t.Errorf("hook printed %q: libvirt would take it as a new domain XML", out.String())
		}
		return code, errb.String()
	}
	if code, _ := run(pairXML, "web-1", "start", "begin", "-"); code != 0 {
		t.Errorf("start: exit %d, want 0", code)
	}
	if code, _ := run(`<domain><name>other</name></domain>`, "other", "migrate", "begin", "-"); code != 0 {
		t.Errorf("unpaired VM: exit %d, want 0", code)
	}
	foreign := strings.Replace(pairXML, "urn:domainm:migrate:1", "urn:someone-else", 1)
	if code, _ := run(foreign, "web-1", "migrate", "begin", "-"); code != 0 {
		t.Errorf("pair element of another namespace: exit %d, want 0", code)
	}
	code, msg := run(pairXML, "web-1", "migrate", "begin", "-")
	if code == 0 || !strings.Contains(msg, "refusing incoming migration of web-1") {
		t.Errorf("pair member without lease: exit %d %q, want refusal", code, msg)
	}
	release, err := takeLease(dir, time.Minute, "web-1", "domm-1")
	if err != nil {
		t.Fatal(err)
	}
	if code, msg := run(pairXML, "web-1", "migrate", "begin", "-"); code != 0 {
		t.Errorf("with lease: exit %d %q, want 0", code, msg)
	}
	release()
	if code, _ := run(pairXML, "web-1", "migrate", "begin", "-"); code == 0 {
		t.Errorf("after release: exit 0, want refusal")
	}
	takeLease(dir, -time.Second, "web-1")
	if code, msg := run(pairXML, "web-1", "migrate", "begin", "-"); code == 0 || !strings.Contains(msg, "stale") {
		t.Errorf("expired lease: exit %d %q, want refusal", code, msg)
	}
	if code, _ := run("<domain><name>x</name>", "x", "migrate", "begin", "-"); code == 0 {
		t.Errorf("broken XML: exit 0, want failure")
	}
}

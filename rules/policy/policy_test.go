package policy_test

import (
	"testing"

	"github.com/domainm/domainm/detectors/integrity"
	"github.com/domainm/domainm/rules/policy"
)

// TestDefaultPolicy parses the shipped policy and checks that it covers what matters
// on a Linux server, with content hashes and without trusting metadata.
func TestDefaultPolicy(t *testing.T) {
	p, err := integrity.ParsePolicy(policy.DefaultFile, policy.Default)
	if err != nil {
		t.Fatalf("default policy: %v", err)
	}
	full := integrity.AttrSet(0)
	for _, a := range []integrity.Attr{integrity.AttrType, integrity.AttrMode, integrity.AttrUID,
		integrity.AttrGID, integrity.AttrSize, integrity.AttrMtime, integrity.AttrCtime,
		integrity.AttrInode, integrity.AttrNlink, integrity.AttrLink, integrity.AttrCaps, integrity.AttrSHA256} {
		full = full.With(a)
	}
	for _, tc := range []struct{ path, selection string }{
		{"/usr/bin/ls", "system binaries"},
		{"/usr/sbin/sshd", "system binaries"},
		{"/bin/sh", "system binaries"},
		{"/usr/local/bin/tool", "system binaries"},
		{"/usr/lib/x86_64-linux-gnu/libc.so.6", "libraries"},
		{"/lib/x86_64-linux-gnu/security/pam_unix.so", "libraries"},
		{"/usr/lib/modules/6.1.0-13-amd64/kernel/fs/ext4/ext4.ko", "kernel modules"},
		{"/lib/modules/6.1.0-13-amd64/modules.dep", "kernel modules"},
		{"/boot/vmlinuz-6.1.0-13-amd64", "boot"},
		{"/boot/grub/grub.cfg", "boot"},
		{"/etc/passwd", "configuration"},
		{"/etc/shadow", "configuration"},
		{"/etc/ld.so.preload", "configuration"},
		{"/etc/pam.d/sshd", "configuration"},
		{"/etc/sudoers", "sudoers"},
		{"/etc/sudoers.d/90-cloud", "sudoers"},
		{"/etc/crontab", "cron"},
		{"/etc/cron.d/backdoor", "cron"},
		{"/var/spool/cron/crontabs/root", "cron"},
		{"/etc/systemd/system/evil.service", "systemd units"},
		{"/usr/lib/systemd/system/ssh.service", "systemd units"},
		{"/lib/systemd/system/cron.service", "systemd units"},
		{"/root/.ssh/authorized_keys", "ssh authorized keys"},
		{"/home/alice/.ssh/authorized_keys", "ssh authorized keys"},
		{"/etc/ssh/sshd_config", "ssh authorized keys"},
	} {
		s := p.Select(tc.path)
		if s == nil {
			t.Errorf("%s: not selected, want %q", tc.path, tc.selection)
			continue
		}
		if s.Name != tc.selection {
			t.Errorf("%s: selection %q, want %q", tc.path, s.Name, tc.selection)
		}
		if s.Attrs&full != full {
			t.Errorf("%s: attrs %v, want at least %v", tc.path, s.Attrs, full)
		}
		if s.TrustMetadata || s.Growing {
			t.Errorf("%s: trust_metadata=%v growing=%v, want both false", tc.path, s.TrustMetadata, s.Growing)
		}
	}
	if s := p.Select("/var/log/auth.log"); s == nil || !s.Growing || s.TrustMetadata {
		t.Errorf("/var/log/auth.log: %+v, want a growing selection", s)
	}
	for _, path := range []string{"/tmp/x", "/proc/1/maps", "/usr/lib/python3/dist-packages/__pycache__/a.pyc", "/var/log/syslog.1"} {
		if s := p.Select(path); s != nil {
			t.Errorf("%s: selected by %q, want unselected", path, s.Name)
		}
	}
	if !p.Setuid.Enabled || p.Setuid.Attrs&full != full {
		t.Errorf("setuid sweep = %+v, want enabled with full attributes", p.Setuid)
	}
	for _, s := range p.Selections {
		if s.TrustMetadata {
			t.Errorf("selection %q trusts metadata; the default policy never does", s.Name)
		}
	}
}

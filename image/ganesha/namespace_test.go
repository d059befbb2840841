package ganesha

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestQEMUOpensDiskOverNFSv3: QEMU's own nfs:// block driver (Debian's qemu-block-extra,
// libnfs) opens a disk image in a ganesha export over NFSv3, as the hosts' QEMUs would
// open the target's disk from the shared storage instead of from the exported folder.
// Ganesha (NFSv3 and 4, read-write) and rpcbind run in a network namespace the test
// makes, which has nothing but its loopback; qemu-img and qemu-io run in it too. Checked:
// the size QEMU sees, a pattern written into the file on the host read back through
// nfs:// (qemu-io read -P verifies every byte), and a pattern QEMU writes through nfs://
// found in the file on the host.
func TestQEMUOpensDiskOverNFSv3(t *testing.T) {
	dir := t.TempDir()
	export := filepath.Join(dir, "export")
	if err := os.Mkdir(export, 0o755); err != nil {
		t.Fatal(err)
	}
	const size, readAt, writeAt, n = 8 << 20, 1 << 20, 5 << 20, 64 << 10
	disk := filepath.Join(export, "target.raw")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0x5a}, n), readAt); err != nil {
		t.Fatal(err)
	}
	f.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ns, err := StartNamespace(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	s, err := Start(ctx, Config{Export: export, Namespace: ns, Version3: true, Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// Confined: the namespace has only its loopback, and rpcbind there lists the MOUNT
	// and NFS version 3 services ganesha registered.
	links, err := ns.Run(ctx, "ip", "-o", "link")
	if err != nil {
		t.Fatal(err)
	}
	if l := strings.Split(strings.TrimSpace(links), "\n"); len(l) != 1 || !strings.Contains(l[0], ": lo:") {
		t.Errorf("the namespace's links are not just lo:\n%s", links)
	}
	reg, err := ns.Run(ctx, "rpcinfo", "-p", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"100005    3   tcp", "100003    3   tcp"} {
		if !strings.Contains(reg, want) {
			t.Errorf("rpcbind in the namespace lacks %q:\n%s", want, reg)
		}
	}
	if comm, _ := os.ReadFile(filepathProc(s.Pid())); strings.TrimSpace(string(comm)) != "ganesha.nfsd" {
		t.Errorf("Pid() %d is %q, not ganesha.nfsd", s.Pid(), comm)
	}

	url := s.URL("target.raw")
	out, err := ns.Run(ctx, "qemu-img", "info", "--output=json", url)
	if err != nil {
		t.Fatalf("qemu-img info %s (Debian's QEMU opens nfs:// with the qemu-block-extra package: make deps): %v", url, err)
	}
	var info struct {
		VirtualSize int64  `json:"virtual-size"`
		Filename    string `json:"filename"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.VirtualSize != size || info.Filename != url {
		t.Errorf("qemu-img info: %+v (%v), want %d bytes of %s:\n%s", info, err, size, url, out)
	}
	out, err = ns.Run(ctx, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 1048576 65536", "-c", "write -P 0xa5 5242880 65536", url)
	if err != nil || strings.Contains(out, "verification failed") || !strings.Contains(out, "read 65536/65536") || !strings.Contains(out, "wrote 65536/65536") {
		t.Fatalf("qemu-io through %s: %v\n%s", url, err, out)
	}
	b, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b[writeAt:writeAt+n], bytes.Repeat([]byte{0xa5}, n)) {
		t.Errorf("what QEMU wrote through %s is not in the file", url)
	}
	t.Logf("QEMU opened %s over NFSv3 (rpcbind and ganesha in the test's namespace), read and wrote 64 KiB:\n%s", url, strings.TrimSpace(out))
}

func filepathProc(pid int) string { return filepath.Join("/proc", strconv.Itoa(pid), "comm") }

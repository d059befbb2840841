package image

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/memscan/vmtest"
)

// pfnInfoBlock is a valid PFN info block (Linux drivers/nvdimm/pfn.h, struct nd_pfn_sb,
// version 1.4) for a raw namespace of size bytes: what a target could write at 4 KiB
// of its own RAM so that a guest kernel probing Domain M's nvdimm claims the namespace
// in PFN mode (data at 2 MiB) instead of showing it raw. The kernel accepts it when the
// signature, the fletcher64 checksum, the parent uuid (all zero for a label-less
// namespace), the mode and the alignments are right (nd_pfn_validate).
func pfnInfoBlock(size int64) []byte {
	const dataoff, align = 2 << 20, 2 << 20
	b := make([]byte, 4096)
	copy(b[0:16], "NVDIMM_PFN_INFO\x00")
	for i := 16; i < 32; i++ { // uuid: any non-zero value
		b[i] = byte(0xa0 + i)
	}
	le := binary.LittleEndian
	le.PutUint16(b[52:], 1)                         // version_major
	le.PutUint16(b[54:], 4)                         // version_minor
	le.PutUint64(b[56:], dataoff)                   // dataoff
	le.PutUint64(b[64:], uint64(size-dataoff)/4096) // npfns
	le.PutUint32(b[72:], 1)                         // mode: PFN_MODE_RAM
	le.PutUint32(b[84:], align)                     // align
	le.PutUint32(b[88:], 4096)                      // page_size
	le.PutUint16(b[92:], 64)                        // page_struct_size
	le.PutUint64(b[4088:], ndFletcher64(b))         // checksum, over the block with it zero
	return b
}

// ndFletcher64 is the kernel's nd_fletcher64 over little-endian 32-bit words: a 32-bit
// running sum (wrapping) and a 64-bit sum of the running sums.
func ndFletcher64(b []byte) uint64 {
	var lo uint32
	var hi uint64
	for i := 0; i+4 <= len(b); i += 4 {
		lo += binary.LittleEndian.Uint32(b[i:])
		hi += uint64(lo)
	}
	return hi<<32 | uint64(lo)
}

// TestPFNInfoBlock checks the block's layout and checksum as the kernel checks them.
func TestPFNInfoBlock(t *testing.T) {
	b := pfnInfoBlock(16 << 20)
	if len(b) != 4096 || string(b[:16]) != "NVDIMM_PFN_INFO\x00" {
		t.Fatalf("size %d, signature %q", len(b), b[:16])
	}
	sum := binary.LittleEndian.Uint64(b[4088:])
	c := append([]byte(nil), b...)
	binary.LittleEndian.PutUint64(c[4088:], 0)
	if got := ndFletcher64(c); got != sum || sum == 0 {
		t.Errorf("checksum %#x, recomputed %#x", sum, got)
	}
	c[100] ^= 1
	if ndFletcher64(c) == sum {
		t.Error("a changed byte keeps the checksum")
	}
	// fletcher64 by hand over two words: lo = 1+2 = 3, hi = 1 + 3 = 4.
	if got := ndFletcher64([]byte{1, 0, 0, 0, 2, 0, 0, 0}); got != 4<<32|3 {
		t.Errorf("ndFletcher64 = %#x, want %#x", got, uint64(4<<32|3))
	}
}

// TestPFNBlockClaimsNamespace shows what the image's force_raw rule prevents, and that
// pfnInfoBlock is one the kernel accepts: the host's Debian kernel (the image's
// release) with only nfit and nd_pmem loaded and the kernel's own probing, booted with
// an nvdimm whose 4 KiB page holds the block, claims the namespace in PFN mode: a pfn
// device names namespace0.0 and the namespace gets no raw block device. (TestApplianceVM
// boots the image with the same block and requires raw namespaces.)
func TestPFNBlockClaimsNamespace(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	t.Parallel()
	kernel, err := vmtest.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	kver := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	files := map[string][]byte{}
	var load strings.Builder
	seen := map[string]bool{}
	for _, m := range []string{"nfit", "nd_pmem"} {
		out, err := exec.Command("modprobe", "-S", kver, "--show-depends", m).Output()
		if err != nil {
			t.Fatalf("modprobe -S %s --show-depends %s: %v", kver, m, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "insmod" || seen[f[1]] {
				continue
			}
			seen[f[1]] = true
			b, err := os.ReadFile(f[1])
			if err != nil {
				t.Fatal(err)
			}
			files["/mod/"+filepath.Base(f[1])] = b
			fmt.Fprintf(&load, "insmod /mod/%s\n", filepath.Base(f[1]))
		}
	}
	script := load.String() + `i=0
while [ $i -lt 60 ] && ! ls -d /sys/bus/nd/devices/pfn*/namespace /sys/bus/nd/devices/namespace0.0/block 2>/dev/null | grep -q .; do sleep 1; i=$((i+1)); done
sleep 2
for d in /sys/bus/nd/devices/*; do
  n=${d##*/}; drv=$(readlink $d/driver); ns=$(cat $d/namespace 2>/dev/null); blk=$(ls $d/block 2>/dev/null | tr '\n' ' ')
  echo "PFN-CHECK $n driver=${drv##*/} namespace=$ns block=$blk"
done
echo PFN-CHECK-DONE
sleep 3600`
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := vmtest.BuildInitramfs(initrd, script, files); err != nil {
		t.Fatal(err)
	}
	ram := filepath.Join(dir, "target.ram")
	newRAM(t, ram)
	plant(t, ram, 4096, string(pfnInfoBlock(ramSize)))
	vm := vmtest.Start(t, vmtest.Config{Memory: 256 << 20, Kernel: kernel, Initrd: initrd, Append: "quiet panic=-1",
		MachineOpts: ",nvdimm=on", MemoryOpts: ",slots=1,maxmem=1G", Timeout: time.Minute,
		Extra: []string{"-object", fmt.Sprintf("memory-backend-file,id=t,mem-path=%s,size=%d,share=on,readonly=on", ram, ramSize),
			"-device", "nvdimm,id=n,memdev=t,slot=0,unarmed=on"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := vm.WaitSerial(ctx, "PFN-CHECK-DONE"); err != nil {
		t.Fatalf("%v\n%s", err, vm.Serial())
	}
	var claimed, rawBlock bool
	for _, line := range strings.Split(vm.Serial(), "\n") {
		if !strings.Contains(line, "PFN-CHECK ") {
			continue
		}
		t.Log(strings.TrimSpace(line))
		if strings.Contains(line, "PFN-CHECK pfn") && strings.Contains(line, "namespace=namespace0.0") {
			claimed = true
		}
		if strings.Contains(line, "PFN-CHECK namespace0.0 ") && !strings.HasSuffix(strings.TrimSpace(line), "block=") {
			rawBlock = true
		}
	}
	if !claimed || rawBlock {
		t.Errorf("the kernel did not claim the namespace for the PFN info block (claimed %v, raw block device %v)", claimed, rawBlock)
	}
}

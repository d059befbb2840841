package integrity

import (
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"strings"
)

var capNames = [...]string{
	"chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid",
	"setuid", "setpcap", "linux_immutable", "net_bind_service", "net_broadcast",
	"net_admin", "net_raw", "ipc_lock", "ipc_owner", "sys_module", "sys_rawio",
	"sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
	"sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write",
	"audit_control", "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm",
	"block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
}

// FormatCaps renders a security.capability xattr (struct vfs_cap_data) the way getcap
// does, e.g. "cap_net_raw=ep"; a value it cannot decode is shown as hex. Empty when
// the file has no capabilities.
func FormatCaps(v []byte) string {
	if len(v) == 0 {
		return ""
	}
	raw := "hex:" + hex.EncodeToString(v)
	if len(v) < 4 {
		return raw
	}
	magic := binary.LittleEndian.Uint32(v)
	var perm, inh uint64
	switch rev := magic & 0xff000000; {
	case rev == 0x01000000 && len(v) == 12:
		perm = uint64(binary.LittleEndian.Uint32(v[4:]))
		inh = uint64(binary.LittleEndian.Uint32(v[8:]))
	case (rev == 0x02000000 && len(v) == 20) || (rev == 0x03000000 && len(v) == 24):
		perm = uint64(binary.LittleEndian.Uint32(v[4:])) | uint64(binary.LittleEndian.Uint32(v[12:]))<<32
		inh = uint64(binary.LittleEndian.Uint32(v[8:])) | uint64(binary.LittleEndian.Uint32(v[16:]))<<32
	default:
		return raw
	}
	var parts []string
	if perm != 0 {
		flags := "=p"
		if magic&1 != 0 {
			flags = "=ep"
		}
		parts = append(parts, capList(perm)+flags)
	}
	if inh != 0 {
		parts = append(parts, capList(inh)+"=i")
	}
	if rev := magic & 0xff000000; rev == 0x03000000 {
		parts = append(parts, "[rootid="+strconv.FormatUint(uint64(binary.LittleEndian.Uint32(v[20:])), 10)+"]")
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, " ")
}

func capList(set uint64) string {
	var names []string
	for i := 0; i < 64; i++ {
		if set&(1<<i) == 0 {
			continue
		}
		if i < len(capNames) {
			names = append(names, "cap_"+capNames[i])
		} else {
			names = append(names, strconv.Itoa(i))
		}
	}
	return strings.Join(names, ",")
}

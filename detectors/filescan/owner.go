package filescan

import (
	"bufio"
	"io"
	"strconv"
	"strings"
	"sync"
)

// maxPasswd bounds the guest's /etc/passwd read for user names.
const maxPasswd = 4 << 20

// owners maps uids to user names as the guest's /etc/passwd says.
type owners struct {
	once  sync.Once
	names map[uint32]string
}

// load reads /etc/passwd from fsys once; a missing or unreadable file leaves no names.
func (o *owners) load(fsys Opener) {
	o.once.Do(func() {
		o.names = map[uint32]string{}
		rc, err := fsys.Open("/etc/passwd")
		if err != nil {
			return
		}
		defer rc.Close()
		o.names = parsePasswd(io.LimitReader(rc, maxPasswd))
	})
}

// name is the user name of uid, or uid in decimal when the guest names none.
func (o *owners) name(uid uint32) string {
	if n, ok := o.names[uid]; ok {
		return n
	}
	return strconv.FormatUint(uint64(uid), 10)
}

// parsePasswd reads passwd(5) lines (name:password:uid:...); the first name of a uid
// wins, as getpwuid(3) returns it. Malformed lines are skipped.
func parsePasswd(r io.Reader) map[uint32]string {
	names := map[uint32]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), ":", 4)
		if len(f) < 4 || f[0] == "" || strings.HasPrefix(f[0], "#") {
			continue
		}
		uid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		if _, dup := names[uint32(uid)]; !dup {
			names[uint32(uid)] = f[0]
		}
	}
	return names
}

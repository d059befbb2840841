package xenlab

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Needed is one shared object a dynamic program needs: its name as the program asks for
// it and the absolute path the loader resolves it to (ldd's view).
type Needed struct {
	Name, Path string
}

// ParseLdd reads ldd's output: "name => /path (0x...)" for a library, "/path (0x...)"
// for the program interpreter, "name (0x...)" without a path for the vDSO (skipped).
// A library ldd could not find ("name => not found") is an error: the packed program
// would not start.
func ParseLdd(out []byte) ([]Needed, error) {
	var ns []Needed
	var missing []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "statically linked") {
			continue
		}
		if name, rest, ok := strings.Cut(line, " => "); ok {
			path := strings.Fields(rest)
			if len(path) == 0 || path[0] == "not" {
				missing = append(missing, name)
				continue
			}
			if !filepath.IsAbs(path[0]) { // e.g. "linux-vdso.so.1 =>  (0x...)" of old ldd
				continue
			}
			ns = append(ns, Needed{Name: name, Path: path[0]})
			continue
		}
		f := strings.Fields(line)
		if len(f) > 0 && filepath.IsAbs(f[0]) {
			ns = append(ns, Needed{Name: filepath.Base(f[0]), Path: f[0]})
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("ldd: not found: %s", strings.Join(missing, ", "))
	}
	return ns, sc.Err()
}

// Ldd runs ldd on bin and returns the shared objects it names (ParseLdd).
func Ldd(bin string) ([]Needed, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w: %s", bin, err, bytes.TrimSpace(out))
	}
	return ParseLdd(out)
}

// PackDynamic copies the dynamically linked program bin into the tree root at dst
// (relative, e.g. "bin/domainm") with every shared object ldd names, each at the same
// absolute path inside root (symbolic links resolved: the file's content is copied under
// the name the loader looks for), so that the program runs with root as its "/": in
// Domain M's busybox initrd, which has no C library of its own. It returns the objects
// copied. For the real supervisor (appliance/cmd/domainm, cgo on libyara) that is
// libyara and what it links (libcrypto, libmagic, libjansson, ...), the C library and
// the loader. (libmagic's database is not copied: rules that import "magic" need it.)
func PackDynamic(root, bin, dst string) ([]Needed, error) {
	ns, err := Ldd(bin)
	if err != nil {
		return nil, err
	}
	if err := copyInto(root, bin, dst); err != nil {
		return nil, err
	}
	for _, n := range ns {
		if err := copyInto(root, n.Path, n.Path); err != nil {
			return nil, err
		}
	}
	return ns, nil
}

// copyInto copies the file at from (following symbolic links) to root/to, mode kept.
func copyInto(root, from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	p := filepath.Join(root, to)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

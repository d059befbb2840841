package integrity

import (
	"bytes"
	"unicode/utf8"
)

// decodeRecord decodes one baseline line as DBWriter writes the common record (plain
// strings, numbers, times, attrs and hashes) without reflection: encoding/json spent
// more CPU reading a baseline than a check of the unchanged tree spent outside
// hashing. ok is false for anything else (an escape in a string, xattrs, an error, raw
// bytes, an unknown or differently cased key, null, anything malformed); the caller then
// decodes the line with json.Unmarshal, so both give the same Record for every line
// this accepts (FuzzDecodeRecord checks it).
func decodeRecord(b []byte, r *Record) (ok bool) {
	d := &lineDecoder{b: b}
	if !d.byte('{') {
		return false
	}
	if d.peek() == '}' {
		d.i++
		return d.end()
	}
	for {
		key, ok := d.str()
		if !ok || !d.byte(':') {
			return false
		}
		if !d.field(string(key), r) {
			return false
		}
		switch d.next() {
		case ',':
			continue
		case '}':
			return d.end()
		default:
			return false
		}
	}
}

type lineDecoder struct {
	b []byte
	i int
}

func (d *lineDecoder) skip() {
	for d.i < len(d.b) && (d.b[d.i] == ' ' || d.b[d.i] == '\t' || d.b[d.i] == '\r' || d.b[d.i] == '\n') {
		d.i++
	}
}

func (d *lineDecoder) peek() byte {
	d.skip()
	if d.i >= len(d.b) {
		return 0
	}
	return d.b[d.i]
}

func (d *lineDecoder) next() byte {
	c := d.peek()
	if c != 0 {
		d.i++
	}
	return c
}

func (d *lineDecoder) byte(c byte) bool { return d.next() == c }

func (d *lineDecoder) end() bool {
	d.skip()
	return d.i == len(d.b)
}

// str reads a string without escapes or control characters, in valid UTF-8 (what
// json.Unmarshal would keep byte for byte).
func (d *lineDecoder) str() ([]byte, bool) {
	if !d.byte('"') {
		return nil, false
	}
	j := bytes.IndexByte(d.b[d.i:], '"')
	if j < 0 {
		return nil, false
	}
	s := d.b[d.i : d.i+j]
	for _, c := range s {
		if c < 0x20 || c == '\\' {
			return nil, false
		}
	}
	if !utf8.Valid(s) {
		return nil, false
	}
	d.i += j + 1
	return s, true
}

// uint reads a non-negative JSON integer that fits in max.
func (d *lineDecoder) uint(max uint64) (uint64, bool) {
	d.skip()
	start := d.i
	var v uint64
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		digit := uint64(d.b[d.i] - '0')
		if v > (max-digit)/10 {
			return 0, false
		}
		v = v*10 + digit
		d.i++
	}
	n := d.i - start
	if n == 0 || (n > 1 && d.b[start] == '0') {
		return 0, false
	}
	if d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		return 0, false
	}
	return v, true
}

func (d *lineDecoder) uint32(p *uint32) bool {
	v, ok := d.uint(1<<32 - 1)
	*p = uint32(v)
	return ok
}

func (d *lineDecoder) field(key string, r *Record) bool {
	switch key {
	case "path":
		s, ok := d.str()
		r.Path = string(s)
		return ok
	case "rule":
		s, ok := d.str()
		r.Rule = string(s)
		return ok
	case "type":
		s, ok := d.str()
		r.Type = typeName(s)
		return ok
	case "link":
		s, ok := d.str()
		r.Link = string(s)
		return ok
	case "attrs":
		return d.attrs(&r.Attrs)
	case "growing":
		d.skip()
		switch {
		case bytes.HasPrefix(d.b[d.i:], []byte("true")):
			r.Growing, d.i = true, d.i+4
		case bytes.HasPrefix(d.b[d.i:], []byte("false")):
			r.Growing, d.i = false, d.i+5
		default:
			return false
		}
		return true
	case "mode":
		return d.uint32(&r.Mode)
	case "uid":
		return d.uint32(&r.UID)
	case "gid":
		return d.uint32(&r.GID)
	case "nlink":
		return d.uint32(&r.Nlink)
	case "size":
		v, ok := d.uint(1<<63 - 1)
		r.Size = int64(v)
		return ok
	case "inode":
		v, ok := d.uint(1<<64 - 1)
		r.Inode = v
		return ok
	case "mtime":
		s, ok := d.str()
		return ok && r.Mtime.UnmarshalText(s) == nil
	case "ctime":
		s, ok := d.str()
		return ok && r.Ctime.UnmarshalText(s) == nil
	case "hashes":
		return d.hashes(&r.Hashes)
	}
	return false
}

// typeName returns the shared string for the file type names, so that a baseline of
// many files does not hold one copy per record.
func typeName(s []byte) string {
	for _, t := range typeNames {
		if string(s) == t {
			return t
		}
	}
	return string(s)
}

var typeNames = []string{"file", "dir", "symlink", "chardev", "blockdev", "fifo", "socket"}

func (d *lineDecoder) attrs(p *AttrSet) bool {
	if !d.byte('[') {
		return false
	}
	var out AttrSet
	if d.peek() == ']' {
		d.i++
		*p = out
		return true
	}
	for {
		s, ok := d.str()
		if !ok {
			return false
		}
		a, ok := attrByName(string(s))
		if !ok {
			return false
		}
		out = out.With(a)
		switch d.next() {
		case ',':
			continue
		case ']':
			*p = out
			return true
		default:
			return false
		}
	}
}

func (d *lineDecoder) hashes(h *Hashes) bool {
	if !d.byte('{') {
		return false
	}
	if d.peek() == '}' {
		d.i++
		return true
	}
	for {
		key, ok := d.str()
		if !ok || !d.byte(':') {
			return false
		}
		v, ok := d.str()
		if !ok {
			return false
		}
		switch string(key) {
		case "sha256":
			h.SHA256 = string(v)
		case "sha512":
			h.SHA512 = string(v)
		default:
			return false
		}
		switch d.next() {
		case ',':
			continue
		case '}':
			return true
		default:
			return false
		}
	}
}

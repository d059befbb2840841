package yara

import "fmt"

// FileVars are the external variables Loki and THOR define for a file scan.
type FileVars struct {
	Filename  string // base name, "sshd"
	Filepath  string // the folder, "/usr/sbin"
	Extension string // lower case with its dot, ".so"; "" when none
	Filetype  string // ELF, EXE, ZIP, GZIP, PDF, SCRIPT or UNKNOWN
	MD5       string // of the content, lower-case hex
	Owner     string // the owner's user name, or the uid in decimal
}

// SetFileVars sets the file external variables for the next scans.
func (s *Scanner) SetFileVars(v FileVars) error {
	for _, kv := range [...]struct{ k, v string }{
		{"filename", v.Filename}, {"filepath", v.Filepath}, {"extension", v.Extension},
		{"filetype", v.Filetype}, {"md5", v.MD5}, {"owner", v.Owner},
	} {
		if err := s.s.DefineVariable(kv.k, kv.v); err != nil {
			return fmt.Errorf("setting external %s: %w", kv.k, err)
		}
	}
	return nil
}

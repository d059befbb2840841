package cmdline

import (
	"bytes"
	"errors"
	"flag"
	"testing"
	"time"
)

// TestParse: mistakes name the flag as --flag, in one message, and nothing is written
// to the FlagSet's output; --help is flag.ErrHelp.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "unknown flag --bogus"},
		{[]string{"-bogus"}, "unknown flag --bogus"},
		{[]string{"--timeout"}, "flag --timeout needs a value"},
		{[]string{"--timeout", "soon"}, `invalid value "soon" for flag --timeout: parse error`},
		{[]string{"--timeout", "1s"}, ""},
	} {
		var out bytes.Buffer
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(&out)
		fs.Duration("timeout", time.Second, "how long")
		err := Parse(fs, tc.args)
		if got := errString(err); got != tc.want || out.Len() != 0 {
			t.Errorf("%q: %q, output %q; want %q and none", tc.args, got, out.String(), tc.want)
		}
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	if err := Parse(fs, []string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestPrintOptions: --flag with its value's name, the text's further lines indented,
// the default unless it says nothing.
func TestPrintOptions(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.String("socket", "/run/domainm/control.sock", "the supervisor's `PATH`\nsecond line")
	fs.Bool("json", false, "print JSON")
	fs.Int("n", 0, "how many")
	var b bytes.Buffer
	PrintOptions(&b, fs)
	want := "  --json\n      print JSON\n  --n int\n      how many\n  --socket PATH\n      the supervisor's PATH\n      second line (default /run/domainm/control.sock)\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestStamp: what the link set is kept; an empty version or commit is filled (a test
// binary has no VCS stamp: devel and unknown).
func TestStamp(t *testing.T) {
	if v, c := Stamp("v1.2", "abc"); v != "v1.2" || c != "abc" {
		t.Errorf("set at link time: %q %q", v, c)
	}
	if v, c := Stamp("", ""); v == "" || c == "" {
		t.Errorf("not set: %q %q, want both filled", v, c)
	}
	if v, c := Stamp("v1.2", ""); v != "v1.2" || c == "" {
		t.Errorf("commit not set: %q %q", v, c)
	}
}

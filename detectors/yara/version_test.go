package yara

import (
	"os"
	"regexp"
	"testing"
)

// TestLibyaraVersion: the version comes from the installed headers (the same numbers
// as the YR_*_VERSION lines of libyara.h).
func TestLibyaraVersion(t *testing.T) {
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(LibyaraVersion) {
		t.Fatalf("LibyaraVersion = %q", LibyaraVersion)
	}
	h, err := os.ReadFile("/usr/include/yara/libyara.h")
	if err != nil {
		t.Fatalf("libyara.h (libyara-dev) not at its Debian path: %v", err)
	}
	m := regexp.MustCompile(`(?m)^#define YR_MAJOR_VERSION (\d+)\s+#define YR_MINOR_VERSION (\d+)\s+#define YR_MICRO_VERSION (\d+)`).FindSubmatch(h)
	if m == nil {
		t.Fatal("no YR_*_VERSION lines in libyara.h")
	}
	if want := string(m[1]) + "." + string(m[2]) + "." + string(m[3]); LibyaraVersion != want {
		t.Errorf("LibyaraVersion = %q, libyara.h says %q", LibyaraVersion, want)
	}
}

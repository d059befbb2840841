package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestBuildInfo(t *testing.T) {
	reg := NewRegistry()
	RegisterBuildInfo(reg, "v1.2-3-gabc", "abc123", "go1.26.8", "4.2.3")
	want := `# HELP domainm_build_info Build information of the running domainm: version, commit, Go and libyara versions. Always 1.
# TYPE domainm_build_info gauge
domainm_build_info{commit="abc123",goversion="go1.26.8",libyara="4.2.3",version="v1.2-3-gabc"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "domainm_build_info"); err != nil {
		t.Error(err)
	}
}

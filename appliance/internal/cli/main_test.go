package cli

import (
	"context"
	"os"
	"testing"
)

// TestMain lets tests run domainm as a real child process: when DOMAINM_CLI_CHILD is set
// the test binary behaves as the domainm binary (same code as appliance/cmd/domainm).
func TestMain(m *testing.M) {
	if os.Getenv("DOMAINM_CLI_CHILD") == "1" {
		os.Exit(Main(context.Background(), Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// Binary domainm-migrate is the host-side coordinator that live-migrates a target VM and
// its Domain M together through sync points P1–P4, the libvirt qemu hook that keeps a
// pair member from migrating alone. The co-migration benchmark is domainm-migrate-bench.
//
// Run `domainm-migrate --help` for the commands. It is built without cgo.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/domainm/domainm/migrate-hooks/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}, os.Args[0], os.Args[1:])
	stop()
	os.Exit(code)
}

// Command domainm-lab runs the full loop of the appliance on this machine (make lab):
// nfs-ganesha, rsyslogd on TLS, a target VM with its disk in the export, Domain M
// watching it, the planted string and setuid binary alerted, a co-migration by
// domainm-migrate, a new string found from the destination. It prints a timeline and
// exits 0 when every step passed, 1 otherwise.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/domainm/domainm/image/lab"
)

func main() {
	dir := flag.String("dir", "bin/lab/run", "work folder (images, sockets, consoles, logs; emptied first)")
	bin := flag.String("bin", "bin/lab", "where domainm and domainm-migrate are built")
	timeout := flag.Duration("timeout", 30*time.Minute, "bound on the whole run")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := os.RemoveAll(*dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rep, err := lab.Run(ctx, lab.Options{Dir: *dir, BinDir: *bin, Out: os.Stdout})
	if err != nil {
		fmt.Fprintf(os.Stderr, "domainm-lab: %v\n(consoles and logs in %s)\n", err, *dir)
		os.Exit(1)
	}
	fmt.Printf("lab time %.1f s; implants %s (source), %s (destination)\n", rep.Total.Seconds(), rep.Implants[0], rep.Implants[1])
}

// Command domainm-xen is the dom0 tool of a Xen deployment of Domain M (built with
// -tags xen against libxenctrl; see migrate-hooks/internal/xenctl):
//
//	domainm-xen grant DOMAINM TARGET     give Domain M privilege over the target:
//	                                      xc_domain_set_target, the xenstore node
//	                                      /local/domain/DOMAINM/target (read by the domU's
//	                                      privcmd driver), and Domain M's own subtree
//	                                      /local/domain/DOMAINM/domainm with the target's
//	                                      domain id, highest guest frame and, in
//	                                      domainm/frames, the runs of frames Xen's p2m
//	                                      holds (FIRST+COUNT, what Domain M maps)
//	domainm-xen request DOMAINM JSON      one handshake request over xenstore (written to
//	                                      DOMAINM's domainm/request); prints the response
//	domainm-xen frame DOM GFN [OFF LEN]   dom0's own view of a guest frame: its SHA-256,
//	                                      and LEN bytes at OFF
//	domainm-xen frames DOM                the runs of frames Xen's p2m of DOM holds
//	domainm-xen maxgpfn DOM               the domain's highest guest frame
//	domainm-xen follow DOMAINM TARGET [PERIOD]
//	                                      keep domainm/frames equal to Xen's p2m of the
//	                                      target, read every PERIOD (10s), until the
//	                                      target is gone or another is granted: the
//	                                      frames it populates above the supervisor's
//	                                      sweep (4 GiB) are found only through this list
//	domainm-xen wait-suspend DOM          wait until DOM has stopped with reason suspend
//	                                      (a migration's last copy); prints "suspended
//	                                      DOM UNIXNANO"; fails if it is gone or shut down
//	                                      otherwise first
//
// Run it again at the destination of a migration, for the new domain ids, before resume.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/domainm/domainm/migrate-hooks/internal/xenctl"
)

func main() {
	// wait-suspend lasts as long as the migration it watches, follow as long as the
	// target: their callers end them.
	limit := 10 * time.Minute
	if len(os.Args) > 1 && (os.Args[1] == "wait-suspend" || os.Args[1] == "follow") {
		limit = 24 * time.Hour
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if err := xenctl.Run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "domainm-xen:", err)
		os.Exit(1)
	}
}

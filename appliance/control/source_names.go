package control

import "github.com/domainm/domainm/appliance/control/proto"

// ProblemSourceMissing: the memory source is not there (see proto).
const ProblemSourceMissing = proto.ProblemSourceMissing

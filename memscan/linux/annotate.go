package linux

import (
	"github.com/domainm/domainm/detectors"
)

// Annotate fills in, for every string match of ms (whose offsets are guest-physical
// addresses, as a scan pass returns them), the processes that map it and the kernel's
// mapping of it (detectors.StringMatch.Processes, ProcessCount, Kernel). Matches that
// already name processes (found in a process's virtual address space) keep them.
func (s *Snapshot) Annotate(ms []detectors.Match) (AttributeStats, error) {
	pas := matchAddrs(ms)
	if len(pas) == 0 {
		return AttributeStats{}, nil
	}
	attr, st, err := s.Attribute(pas)
	if err != nil {
		return st, err
	}
	annotate(ms, attr)
	return st, nil
}

func matchAddrs(ms []detectors.Match) []uint64 {
	var pas []uint64
	for _, m := range ms {
		for _, sm := range m.Strings {
			pas = append(pas, sm.Offset)
		}
	}
	return pas
}

func annotate(ms []detectors.Match, attr map[uint64]Attribution) {
	for i := range ms {
		for j := range ms[i].Strings {
			sm := &ms[i].Strings[j]
			a := attr[sm.Offset]
			if len(sm.Processes) == 0 {
				sm.ProcessCount = len(a.Processes)
				for _, p := range a.Processes[:min(len(a.Processes), detectors.MaxMatchProcesses)] {
					sm.Processes = append(sm.Processes, detectors.ProcessMapping{PID: p.PID, Name: p.Comm, Address: p.VA})
				}
			}
			if k := a.Kernel; k != nil && sm.Kernel == nil {
				sm.Kernel = &detectors.KernelMapping{Kind: k.Kind, Module: k.Module, Address: k.VA}
			}
		}
	}
}

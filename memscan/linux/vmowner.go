package linux

import "fmt"

// maxVmapAreas bounds the walk of vmap_area_list.
const maxVmapAreas = 1 << 20

// vmallocOwners names the module that allocated each vmalloc-area address of vas, when
// it can: the kernel's vmap_area_list gives the area holding it, the area's vm_struct
// its caller (the return address of whoever called vmalloc or vmap), and the module
// whose memory holds that caller is the owner. Addresses in areas the kernel itself
// allocated, or when the kernel's BTF or symbols lack what this reads, get "".
func (s *Snapshot) vmallocOwners(vas []uint64) (map[uint64]string, error) {
	out := map[uint64]string{}
	if len(vas) == 0 {
		return out, nil
	}
	in := s.g.In
	head, err := in.K.Syms.Addr("vmap_area_list")
	if err != nil {
		return out, nil // not in this kernel (6.9 and later keep areas per node)
	}
	var off [5]uint64
	for i, f := range [][2]string{{"vmap_area", "va_start"}, {"vmap_area", "va_end"}, {"vmap_area", "list"}, {"vmap_area", "vm"}, {"vm_struct", "caller"}} {
		fl, err := in.T.Field(f[0], f[1])
		if err != nil {
			return out, nil
		}
		off[i] = fl.Offset
	}
	r := &tlbReader{as: in.K.as, tlb: map[uint64]uint64{}, direct: in.K.PageOffset}
	left := len(vas)
	err = in.walkList("vmap_area", head, maxVmapAreas, func(node uint64) error {
		if left == 0 {
			return nil
		}
		va := node - off[2]
		start, err1 := r.u64(va + off[0])
		end, err2 := r.u64(va + off[1])
		if err := firstErr(err1, err2); err != nil {
			return fmt.Errorf("vmap_area at %#x: %w", va, err)
		}
		for _, a := range vas {
			if a < start || a >= end {
				continue
			}
			if _, done := out[a]; done {
				continue
			}
			out[a], left = "", left-1
			vm, err := r.u64(va + off[3])
			if err != nil || vm == 0 {
				continue
			}
			caller, err := r.u64(vm + off[4])
			if err != nil {
				continue
			}
			for _, m := range s.Modules {
				if caller >= m.VA && caller-m.VA < m.Size {
					out[a] = m.Module
				}
			}
		}
		return nil
	})
	return out, err
}

//go:build !(linux && cgo && xen)

package xenctl

// SetTarget needs the xen build tag.
func SetTarget(dom, target uint32) error { return ErrNotBuilt }

// MaxGPFN needs the xen build tag.
func MaxGPFN(dom uint32) (uint64, error) { return 0, ErrNotBuilt }

// ReadFrame needs the xen build tag.
func ReadFrame(dom uint32, gfn uint64) ([]byte, error) { return nil, ErrNotBuilt }

// Frames needs the xen build tag.
func Frames(dom uint32, maxGPFN uint64) ([]FrameRun, error) { return nil, ErrNotBuilt }

// State needs the xen build tag.
func State(dom uint32) (DomainState, bool, error) { return DomainState{}, false, ErrNotBuilt }

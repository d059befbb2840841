package proto

// StateWaiting: the supervisor runs but the target's memory source does not exist (the
// target has not started yet, or its RAM file was removed); it watches for the source
// and starts monitoring when it appears. Nothing is monitored meanwhile.
const StateWaiting = "waiting"

// Health is the supervisor's health as status reports it: the same model, taken at the
// same moment, that /healthz, the metrics (domainm_healthy, domainm_health_problem) and
// the state log show. Healthy means monitoring with no problem.
type Health struct {
	Healthy bool   `json:"healthy"`
	Reason  string `json:"reason,omitempty"` // why the state is what it is (e.g. what waiting waits for)
	Since   string `json:"since,omitempty"`  // RFC 3339: when the state was entered
	// Problems are the conditions that keep the supervisor from watching the whole target
	// with rules, sorted by code.
	Problems []Problem `json:"problems,omitempty"`
	// Unscanned are the blind spots of the last memory pass that reached the end.
	Unscanned *Unscanned `json:"unscanned,omitempty"`
}

// Problem codes.
const (
	ProblemRulesEmpty  = "rules-empty"         // the running rule set has no rules, or the rules folder is empty
	ProblemRulesBroken = "rules-broken"        // rule files do not compile (left out, or their last good version runs)
	ProblemPassFailed  = "memory-pass-failed"  // the last memory pass read or scanned nothing
	ProblemBlindSpots  = "memory-blind-spots"  // the last memory pass left blocks unscanned
	ProblemStalled     = "memory-pass-stalled" // a memory pass made no progress for memory.stall_timeout
	ProblemDiskFailed  = "disk-check-failed"   // the last disk check failed
	ProblemDiskOverdue = "disk-check-overdue"  // a disk check runs past its interval plus the stall timeout
	// ProblemDiskUnreachable: the storage holding the target's disk image (an NFS
	// export) is gone; checks resume by themselves when it is back.
	ProblemDiskUnreachable = "disk-unreachable"
	ProblemAlertsStuck     = "alerts-undelivered" // a sink holds alerts it could not deliver for minutes
	ProblemNotMonitored    = "not-monitoring"     // the state is not monitoring (used by /healthz and metrics)
	// ProblemSourceMissing: the memory source is not there (state waiting): a RAM file
	// not yet created or removed, or no nvdimm with the configured handle; the message
	// names what was expected.
	ProblemSourceMissing = "memory-source-missing"
)

// ProblemCodes lists every problem code, for metrics that show each as 0 or 1.
var ProblemCodes = []string{ProblemNotMonitored, ProblemRulesEmpty, ProblemRulesBroken, ProblemPassFailed, ProblemBlindSpots,
	ProblemStalled, ProblemDiskFailed, ProblemDiskOverdue, ProblemDiskUnreachable, ProblemAlertsStuck, ProblemSourceMissing}

// Problem is one reason the supervisor is not healthy.
type Problem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Since   string `json:"since,omitempty"` // RFC 3339
}

// MaxUnscannedRanges bounds the ranges an Unscanned lists; RangesTotal counts them all.
const MaxUnscannedRanges = 16

// Unscanned describes the guest memory a pass could not scan: how much, where
// (adjacent failed blocks with the same reason coalesced into ranges, the first
// MaxUnscannedRanges of them) and why (blocks per reason: timeout, unreadable,
// scan-error).
type Unscanned struct {
	Bytes       uint64           `json:"bytes"`
	Blocks      int              `json:"blocks"`
	Reasons     map[string]int   `json:"reasons"`
	Ranges      []UnscannedRange `json:"ranges"`
	RangesTotal int              `json:"ranges_total"`
}

// UnscannedRange is one coalesced run of failed blocks: [Start, End) guest-physical, as
// 0x-hex, the reason, and when its first and last blocks failed (RFC 3339).
type UnscannedRange struct {
	Start  string `json:"start"`
	End    string `json:"end"`
	Reason string `json:"reason"`
	First  string `json:"first_failure"`
	Last   string `json:"last_failure"`
}

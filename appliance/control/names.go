package control

import "github.com/domainm/domainm/appliance/control/proto"

// The protocol's messages and constants, defined in package proto, under the names the
// supervisor has always used. They are aliases: one definition.
type (
	Request        = proto.Request
	Response       = proto.Response
	ResumeArgs     = proto.ResumeArgs
	TargetInfo     = proto.TargetInfo
	Health         = proto.Health
	Problem        = proto.Problem
	Unscanned      = proto.Unscanned
	UnscannedRange = proto.UnscannedRange
	StateRecord    = proto.StateRecord
	Addr           = proto.Addr
)

// States, commands, error codes, problem codes: see package proto.
const (
	AddrFormHex        = proto.AddrFormHex
	HostFormHypervisor = proto.HostFormHypervisor

	StateStarting   = proto.StateStarting
	StateMonitoring = proto.StateMonitoring
	StateQuiescing  = proto.StateQuiescing
	StateQuiesced   = proto.StateQuiesced
	StateResuming   = proto.StateResuming
	StateStopping   = proto.StateStopping
	StateStopped    = proto.StateStopped
	StateWaiting    = proto.StateWaiting

	CmdStatus  = proto.CmdStatus
	CmdPrepare = proto.CmdPrepare
	CmdResume  = proto.CmdResume

	CodeBadRequest     = proto.CodeBadRequest
	CodeUnknownCommand = proto.CodeUnknownCommand
	CodeGuestChanged   = proto.CodeGuestChanged
	CodeWrongState     = proto.CodeWrongState
	CodeSource         = proto.CodeSource
	CodeForbidden      = proto.CodeForbidden
	CodeExpired        = proto.CodeExpired
	CodeStale          = proto.CodeStale
	CodeInternal       = proto.CodeInternal

	ProblemRulesEmpty      = proto.ProblemRulesEmpty
	ProblemRulesBroken     = proto.ProblemRulesBroken
	ProblemPassFailed      = proto.ProblemPassFailed
	ProblemBlindSpots      = proto.ProblemBlindSpots
	ProblemStalled         = proto.ProblemStalled
	ProblemDiskFailed      = proto.ProblemDiskFailed
	ProblemDiskOverdue     = proto.ProblemDiskOverdue
	ProblemDiskUnreachable = proto.ProblemDiskUnreachable
	ProblemAlertsStuck     = proto.ProblemAlertsStuck
	ProblemNotMonitored    = proto.ProblemNotMonitored

	MaxUnscannedRanges = proto.MaxUnscannedRanges
	StateLogFile       = proto.StateLogFile
)

// ProblemCodes lists every problem code (proto.ProblemCodes).
var ProblemCodes = proto.ProblemCodes

// ReadStateLog reads a state log (proto.ReadStateLog).
func ReadStateLog(path string) ([]StateRecord, error) { return proto.ReadStateLog(path) }

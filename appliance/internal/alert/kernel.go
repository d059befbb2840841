package alert

import (
	"strconv"
	"time"

	"github.com/domainm/domainm/detectors"
)

// KernelDetector is the detector of kernel-integrity findings (memscan/linux checks).
const KernelDetector = "kernel-integrity"

// Kernel-integrity checks mapped to MITRE ATT&CK: T1014 Rootkit for all; hidden
// tasks are also T1564 Hide Artifacts.
var kernelTechniques = map[string][]string{
	"syscall-table": {"T1014"}, "idt": {"T1014"}, "hidden-module": {"T1014"}, "hidden-task": {"T1014", "T1564"},
}

// KernelFinding is the alert for a kernel-integrity finding of check (syscall-table,
// idt, hidden-module, hidden-task) on target t: state StateNew when it appears (critical;
// a hidden task high), StateGone when a later check no longer sees it (low). key is the
// finding's stable identity (what pairs new with gone: domainm.finding_id), summary
// the message, evidence goes to domainm.meta (and a hidden task's pid and comm to
// process.*).
func KernelFinding(now time.Time, t detectors.Target, check, key, summary string, evidence map[string]string, state string) Event {
	e := newEvent(now, KernelDetector)
	tt := Target{Name: t.Name, UUID: t.UUID, DomID: t.DomID, Host: t.Host, Source: t.Source}
	e.DomainM.Target = &tt
	if tt.Name != "" || tt.UUID != "" {
		e.Host = &Host{Name: tt.Name, ID: tt.UUID, Type: "vm"}
	}
	e.DomainM.State = state
	e.Rule = &Rule{Name: bound(check), Ruleset: KernelDetector}
	if ids := kernelTechniques[check]; ids != nil {
		e.Threat = &Threat{Framework: "MITRE ATT&CK", Technique: ThreatTechnique{ID: ids}}
	}
	e.DomainM.Meta = leftoverMeta(evidence)
	if check == "hidden-task" {
		if pid, err := strconv.Atoi(evidence["pid"]); err == nil {
			e.Process = &Process{PID: pid, Name: bound(evidence["comm"])}
		}
	}
	e.Event.Kind = "alert"
	e.Event.Category = []string{"intrusion_detection", "malware", "host"}
	e.Event.Action = "kernel-integrity"
	e.Event.Type = []string{"indicator", "start"}
	e.Message = bound("kernel integrity: " + summary + onTarget(tt))
	sev := SevCritical
	if check == "hidden-task" {
		sev = SevHigh
	}
	if state == StateGone {
		e.Event.Type = []string{"indicator", "end"}
		e.Event.Action += "-gone"
		e.Message = bound("no longer present: " + e.Message)
		sev = SevLow
	}
	e.DomainM.FindingID = FindingID(KernelDetector, KernelDetector, check, t, key)
	e.SetSeverity(sev)
	e.Event.ID = occurrenceID(&e)
	return e
}

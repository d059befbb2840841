// The marker that `make demo` plants inside the demo guest.
rule domainm_demo_marker : demo
{
    meta:
        description = "Domain M demo: planted marker in the guest's memory"
        severity = "medium"
    strings:
        $m = /DOMAINM-DEMO-IMPLANT-[0-9a-f]{8}/
    condition:
        $m
}

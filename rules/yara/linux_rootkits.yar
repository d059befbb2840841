// Loadable-kernel-module and userland rootkits that hide processes and files from the
// guest's own tools; from outside the guest their code and strings are still visible.
rule linux_rootkit_diamorphine : rootkit linux
{
    meta:
        description = "Diamorphine LKM rootkit"
        severity = "critical"
        mitre_attack = "T1014"
    strings:
        $a = "diamorphine_secret" ascii
        $b = "diamorphine" ascii
        $c = "module_hide" ascii
        $d = "hacked_kill" ascii
        $e = "hacked_getdents64" ascii
    condition:
        $a or ($b and 2 of ($c, $d, $e))
}

rule linux_rootkit_reptile : rootkit linux
{
    meta:
        description = "Reptile LKM rootkit"
        severity = "critical"
        mitre_attack = "T1014"
    strings:
        $a = "/reptile/reptile_cmd" ascii
        $b = "reptile_shell" ascii
        $c = "REPTILE_HIDE" ascii
        $d = "#<reptile>" ascii
    condition:
        2 of them
}

rule linux_userland_rootkit_preload : rootkit linux
{
    meta:
        description = "userland rootkit hooking readdir through ld.so.preload"
        severity = "high"
        mitre_attack = "T1574.006"
    strings:
        $preload = "/etc/ld.so.preload" ascii
        $hide1 = "process_to_filter" ascii
        $hide2 = "libprocesshider" ascii
        $dl = "dlsym" ascii
        $readdir = "readdir64" ascii
    condition:
        $preload and $dl and $readdir and any of ($hide*)
}

// The nested Xen lab's marker: the target assembles "DOMAINM-XENLAB-PLANT:" and a random
// seed of 16 hex digits in its memory (image/xen/initrd/target-init); the alert's
// match gives its guest-physical address and the seed (data_text).
rule xenlab_marker
{
    meta:
        description = "Xen lab marker planted in the target"
        severity = "high"
    strings:
        $m = /DOMAINM-XENLAB-PLANT:[0-9a-f]{16}/
    condition:
        $m
}

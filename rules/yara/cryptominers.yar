// Cryptocurrency miners: the most common payload on compromised Linux servers.
rule cryptominer_xmrig : miner
{
    meta:
        description = "XMRig Monero miner (binary or config)"
        severity = "high"
        mitre_attack = "T1496"
    strings:
        $s1 = "stratum+tcp://" ascii
        $s2 = "stratum+ssl://" ascii
        $x1 = "xmrig" ascii nocase
        $x2 = "--donate-level" ascii
        $x3 = "\"donate-level\":" ascii
        $x4 = "randomx" ascii nocase
        $x5 = "cryptonight" ascii nocase
    condition:
        any of ($s*) and 2 of ($x*)
}

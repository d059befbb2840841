// Credential-theft tools, for Windows targets.
rule mimikatz_strings : credentials windows
{
    meta:
        description = "Mimikatz command strings"
        severity = "critical"
        mitre_attack = "T1003.001"
    strings:
        $a = "sekurlsa::logonpasswords" ascii wide nocase
        $b = "lsadump::sam" ascii wide nocase
        $c = "privilege::debug" ascii wide nocase
        $d = "gentilkiwi" ascii wide
        $e = "mimikatz" ascii wide nocase
    condition:
        2 of them
}

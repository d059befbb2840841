// The EICAR anti-virus test file: harmless, recognised by every scanner. Use it to check
// that an alert path works end to end.
rule eicar_test_file : test
{
    meta:
        description = "EICAR anti-virus test string"
        severity = "low"
        reference = "https://www.eicar.org/download-anti-malware-testfile/"
    strings:
        $eicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    condition:
        $eicar
}

// Reverse-shell one-liners as they sit in a process's argv, a shell's history or a
// dropper script, in memory or on disk.
rule linux_reverse_shell_bash : shell linux
{
    meta:
        description = "bash reverse shell through /dev/tcp"
        severity = "high"
        mitre_attack = "T1059.004"
    strings:
        $a = /bash -i >& ?\/dev\/tcp\/[0-9a-zA-Z.\-]{1,64}\/[0-9]{1,5}/
        $b = /sh -i [0-9]?>& ?\/dev\/(tcp|udp)\/[0-9a-zA-Z.\-]{1,64}\/[0-9]{1,5}/
        $c = /exec [0-9]{1,3}<>\/dev\/tcp\/[0-9a-zA-Z.\-]{1,64}\/[0-9]{1,5}/
    condition:
        any of them
}

rule linux_reverse_shell_tools : shell linux
{
    meta:
        description = "netcat, socat or script-language reverse shell"
        severity = "high"
        mitre_attack = "T1059"
    strings:
        $nc1 = /\bnc(at)? (-[a-z]+ )*-e \/bin\/(ba)?sh\b/
        $nc2 = "mkfifo /tmp/" ascii
        $nc3 = /\| ?\/bin\/(ba)?sh -i 2>&1 ?\| ?nc /
        $socat = /socat (tcp|TCP)(4|6)?:[0-9a-zA-Z.\-]{1,64}:[0-9]{1,5} (exec|EXEC):/
        $py = "pty.spawn(\"/bin/" ascii
        $py_sock = "socket.socket(socket.AF_INET,socket.SOCK_STREAM)" ascii
        $perl = "use Socket;$i=\"" ascii
    condition:
        $nc1 or ($nc2 and $nc3) or $socat or ($py and $py_sock) or $perl
}

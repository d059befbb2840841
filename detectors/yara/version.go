package yara

/*
#include <yara/libyara.h>
*/
import "C"

import "fmt"

// LibyaraVersion is the version of the libyara headers this package was compiled
// against (YR_MAJOR_VERSION.YR_MINOR_VERSION.YR_MICRO_VERSION), such as "4.2.3". libyara
// has no call that reports the version of the shared library loaded at run time; Debian
// ties the two through the package's shlibs (libyara9 for 4.2.x).
var LibyaraVersion = fmt.Sprintf("%d.%d.%d", C.YR_MAJOR_VERSION, C.YR_MINOR_VERSION, C.YR_MICRO_VERSION)

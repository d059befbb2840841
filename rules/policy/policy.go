// Package policy holds the file-integrity policy shipped with Domain M (default.toml),
// embedded so that `domainm baseline` works without a policy file.
package policy

import _ "embed"

// DefaultFile is the name the default policy is reported under.
const DefaultFile = "rules/policy/default.toml"

// Default is the text of default.toml.
//
//go:embed default.toml
var Default []byte

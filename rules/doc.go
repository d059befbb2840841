// Package rules holds the YARA rules (rules/yara) and the file-integrity policy
// (rules/policy) shipped with the appliance. It is data; the package exists for the tests
// that compile every shipped rule file.
package rules

#ifndef DOMAINM_MEMWINDOW_H
#define DOMAINM_MEMWINDOW_H

#include <stdint.h>
#include <yara.h>

int dm_scan_window(YR_SCANNER* s, const uint8_t* data, size_t size, uint64_t base, int flags, uintptr_t handle);
size_t dm_scan_each(YR_SCANNER* s, const uint8_t* buf, const size_t* offs, const size_t* lens, const uint64_t* bases, size_t n, int flags, uintptr_t handle, size_t first, int* rcs);
int dm_scan_batch(YR_SCANNER* s, const uint8_t* buf, size_t win, const uint64_t* bases, size_t n, size_t at, int flags, uint8_t* hit);
int dm_rules_chained(YR_SCANNER* s);
const char* dm_rule_ns(YR_RULE* r);
const char* dm_rule_identifier(YR_RULE* r);
const char* dm_rule_tags(YR_RULE* r);
const YR_META* dm_rule_metas(YR_RULE* r);
const YR_STRING* dm_rule_strings(YR_RULE* r);
const char* dm_string_identifier(const YR_STRING* s);
const char* dm_meta_identifier(const YR_META* m);
const char* dm_meta_string(const YR_META* m);
const YR_META* dm_meta_next(const YR_META* m);
const YR_STRING* dm_string_next(const YR_STRING* s);
const YR_MATCH* dm_first_match(YR_SCAN_CONTEXT* ctx, const YR_STRING* s);
const YR_MATCH* dm_next_match(const YR_MATCH* m);

// Implemented in Go (memory.go).
extern int dmRuleMatching(YR_SCAN_CONTEXT* ctx, YR_RULE* rule, uintptr_t handle, size_t i);

#endif

#ifndef DOMAINM_SCREEN_H
#define DOMAINM_SCREEN_H

#include <stddef.h>
#include <stdint.h>
#include <yara.h>

int dm_scan_screen(YR_SCANNER* s, const uint8_t* const* data, const uint64_t* bases, const size_t* sizes, size_t n, int flags, const uint8_t* sensitive, uint8_t* hit, int* matched);
uint32_t dm_num_rules(YR_SCANNER* s);
const char* dm_rule_name_at(YR_SCANNER* s, uint32_t i);

#endif

// The memory-window scan path in C: one YR_MEMORY_BLOCK whose data is the caller's
// buffer, so that libyara's many block look-ups (first, next and fetch_data for every
// uint*() read, entrypoint and module) stay in C instead of crossing into Go, and the
// window is not copied again. See MemoryScanner.Scan.

#include <string.h>
#include <yara.h>

#include "memwindow.h"

typedef struct
{
  YR_MEMORY_BLOCK block;
  const uint8_t* data;
} dm_window;

static const uint8_t* dm_fetch(YR_MEMORY_BLOCK* b)
{
  return ((dm_window*) b->context)->data;
}

static YR_MEMORY_BLOCK* dm_first(YR_MEMORY_BLOCK_ITERATOR* it)
{
  return &((dm_window*) it->context)->block;
}

static YR_MEMORY_BLOCK* dm_next(YR_MEMORY_BLOCK_ITERATOR* it)
{
  return NULL;
}

static int dm_callback(YR_SCAN_CONTEXT* ctx, int msg, void* data, void* user)
{
  if (msg == CALLBACK_MSG_RULE_MATCHING)
    return dmRuleMatching(ctx, (YR_RULE*) data, (uintptr_t) user);
  return CALLBACK_CONTINUE;
}

int dm_scan_window(
    YR_SCANNER* s,
    const uint8_t* data,
    size_t size,
    uint64_t base,
    int flags,
    uintptr_t handle)
{
  dm_window w;
  YR_MEMORY_BLOCK_ITERATOR it;
  memset(&w, 0, sizeof(w));
  memset(&it, 0, sizeof(it));
  w.block.base = base;
  w.block.size = size;
  w.block.context = &w;
  w.block.fetch_data = dm_fetch;
  w.data = data;
  it.context = &w;
  it.first = dm_first;
  it.next = dm_next;
  it.file_size = NULL;  // filesize undefined, as for process memory
  it.last_error = ERROR_SUCCESS;
  yr_scanner_set_callback(s, dm_callback, (void*) handle);
  yr_scanner_set_flags(s, flags);
  return yr_scanner_scan_mem_blocks(s, &it);
}

const char* dm_rule_ns(YR_RULE* r)
{
  return r->ns->name;
}

const char* dm_meta_identifier(const YR_META* m)
{
  return m->identifier;
}

const char* dm_meta_string(const YR_META* m)
{
  return m->string;
}

const YR_META* dm_meta_next(const YR_META* m)
{
  return META_IS_LAST_IN_RULE(m) ? NULL : m + 1;
}

const YR_STRING* dm_string_next(const YR_STRING* s)
{
  return STRING_IS_LAST_IN_RULE(s) ? NULL : s + 1;
}

const YR_MATCH* dm_first_match(YR_SCAN_CONTEXT* ctx, const YR_STRING* s)
{
  const YR_MATCH* m = ctx->matches[s->idx].head;
  while (m != NULL && m->is_private) m = m->next;
  return m;
}

const YR_MATCH* dm_next_match(const YR_MATCH* m)
{
  for (m = m->next; m != NULL && m->is_private; m = m->next)
    ;
  return m;
}

const char* dm_rule_identifier(YR_RULE* r)
{
  return r->identifier;
}

const char* dm_rule_tags(YR_RULE* r)
{
  return r->tags;
}

const YR_META* dm_rule_metas(YR_RULE* r)
{
  return r->metas;
}

const YR_STRING* dm_rule_strings(YR_RULE* r)
{
  return r->strings;
}

const char* dm_string_identifier(const YR_STRING* s)
{
  return s->identifier;
}

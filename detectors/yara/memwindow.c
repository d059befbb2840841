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

// dm_cb tells dmRuleMatching whose window a match is: the collector's handle and the
// window's index in the call.
typedef struct
{
  uintptr_t handle;
  size_t i;
} dm_cb;

static int dm_callback(YR_SCAN_CONTEXT* ctx, int msg, void* data, void* user)
{
  if (msg == CALLBACK_MSG_RULE_MATCHING)
  {
    dm_cb* cb = (dm_cb*) user;
    return dmRuleMatching(ctx, (YR_RULE*) data, cb->handle, cb->i);
  }
  return CALLBACK_CONTINUE;
}

static int dm_scan_one(
    YR_SCANNER* s,
    const uint8_t* data,
    size_t size,
    uint64_t base,
    int flags,
    dm_cb* cb)
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
  yr_scanner_set_callback(s, dm_callback, cb);
  yr_scanner_set_flags(s, flags);
  return yr_scanner_scan_mem_blocks(s, &it);
}

int dm_scan_window(
    YR_SCANNER* s,
    const uint8_t* data,
    size_t size,
    uint64_t base,
    int flags,
    uintptr_t handle)
{
  dm_cb cb = {handle, 0};
  return dm_scan_one(s, data, size, base, flags, &cb);
}

// dm_scan_each scans n windows of buf, window i being the lens[i] bytes at offs[i],
// each alone at bases[i] exactly as dm_scan_window would, storing each scan's result in
// rcs[i]: one call from Go for a run of windows instead of one per window (a cgo call
// of a few hundred microseconds costs the Go runtime tens of microseconds of thread
// hand-offs, about 7% of a window with cheap rules). It stops after the first window
// whose scan fails, so that the caller reads the scanner's error state for that window,
// and returns how many windows it scanned.
size_t dm_scan_each(
    YR_SCANNER* s,
    const uint8_t* buf,
    const size_t* offs,
    const size_t* lens,
    const uint64_t* bases,
    size_t n,
    int flags,
    uintptr_t handle,
    size_t first,
    int* rcs)
{
  for (size_t i = 0; i < n; i++)
  {
    dm_cb cb = {handle, first + i};
    rcs[i] = dm_scan_one(s, buf + offs[i], lens[i], bases[i], flags, &cb);
    if (rcs[i] != ERROR_SUCCESS)
      return i + 1;
  }
  return n;
}

// The batch path (MemoryScanner.Crossing): n windows of win bytes each, laid one after
// the other in buf, are handed to libyara as n memory blocks of one scan, block i at
// bases[i] (sorted ascending, each window's addresses disjoint from the others'). String
// matching runs block by block (a match never spans two blocks, and offsets, fullword
// checks and regexp anchors are relative to the block, as in a scan of that window
// alone); rule conditions are evaluated once for the scan and ignored. When the scan
// has finished, every match of every string (private ones too, whether or not its
// rule matched) that starts before offset at of its block and ends after it marks
// that block in hit.

typedef struct
{
  YR_MEMORY_BLOCK block;
  const uint8_t* buf;
  const uint64_t* bases;
  size_t win;
  size_t n;
  size_t i;
  size_t at;
  uint8_t* hit;
} dm_batch;

static const uint8_t* dm_batch_fetch(YR_MEMORY_BLOCK* b)
{
  dm_batch* bt = (dm_batch*) b->context;
  return bt->buf + bt->i * bt->win;
}

static YR_MEMORY_BLOCK* dm_batch_at(dm_batch* bt, size_t i)
{
  if (i >= bt->n)
    return NULL;
  bt->i = i;
  bt->block.base = bt->bases[i];
  bt->block.size = bt->win;
  return &bt->block;
}

static YR_MEMORY_BLOCK* dm_batch_first(YR_MEMORY_BLOCK_ITERATOR* it)
{
  return dm_batch_at((dm_batch*) it->context, 0);
}

static YR_MEMORY_BLOCK* dm_batch_next(YR_MEMORY_BLOCK_ITERATOR* it)
{
  dm_batch* bt = (dm_batch*) it->context;
  return dm_batch_at(bt, bt->i + 1);
}

static int dm_batch_callback(YR_SCAN_CONTEXT* ctx, int msg, void* data, void* user)
{
  dm_batch* bt = (dm_batch*) user;
  if (msg == CALLBACK_MSG_TOO_MANY_MATCHES)
    return CALLBACK_ERROR;  // a string would be cut: the caller scans alone
  if (msg != CALLBACK_MSG_SCAN_FINISHED)
    return CALLBACK_CONTINUE;
  for (uint32_t s = 0; s < ctx->rules->num_strings; s++)
  {
    for (const YR_MATCH* m = ctx->matches[s].head; m != NULL; m = m->next)
    {
      size_t lo = 0, hi = bt->n;
      while (lo < hi)
      {
        size_t mid = lo + (hi - lo) / 2;
        if (bt->bases[mid] < (uint64_t) m->base)
          lo = mid + 1;
        else
          hi = mid;
      }
      if (lo == bt->n || bt->bases[lo] != (uint64_t) m->base)
        return CALLBACK_ERROR;  // cannot happen: every match names its block
      if (m->offset < (int64_t) bt->at &&
          m->offset + (int64_t) m->match_length > (int64_t) bt->at)
        bt->hit[lo] = 1;
    }
  }
  return CALLBACK_CONTINUE;
}

int dm_scan_batch(
    YR_SCANNER* s,
    const uint8_t* buf,
    size_t win,
    const uint64_t* bases,
    size_t n,
    size_t at,
    int flags,
    uint8_t* hit)
{
  dm_batch bt;
  YR_MEMORY_BLOCK_ITERATOR it;
  memset(&bt, 0, sizeof(bt));
  memset(&it, 0, sizeof(it));
  bt.block.context = &bt;
  bt.block.fetch_data = dm_batch_fetch;
  bt.buf = buf;
  bt.bases = bases;
  bt.win = win;
  bt.n = n;
  bt.at = at;
  bt.hit = hit;
  it.context = &bt;
  it.first = dm_batch_first;
  it.next = dm_batch_next;
  it.file_size = NULL;
  it.last_error = ERROR_SUCCESS;
  yr_scanner_set_callback(s, dm_batch_callback, &bt);
  yr_scanner_set_flags(s, flags);
  return yr_scanner_scan_mem_blocks(s, &it);
}

// dm_rules_chained reports whether any string of rules is split into a chain (hex
// strings or regexps with long jumps): libyara links the pieces of a chain by their
// offsets within a block, across the blocks of one scan too, so a batch of blocks
// could lose a chain that the block alone completes.
int dm_rules_chained(YR_SCANNER* sc)
{
  YR_RULES* rules = sc->rules;
  for (uint32_t i = 0; i < rules->num_strings; i++)
  {
    const YR_STRING* s = &rules->strings_table[i];
    if (STRING_IS_CHAIN_PART(s) || STRING_IS_CHAIN_TAIL(s) || s->chained_to != NULL)
      return 1;
  }
  return 0;
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

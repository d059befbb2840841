// The screen (MemoryScanner.Screen): n windows of guest memory, each its own memory
// block at its own address, in one libyara scan. String matching runs block by block,
// so each window's string matches are those of its scan alone; rule conditions are
// evaluated once for the whole scan and ignored. When the scan has finished, every
// window in which some string (any rule, private ones too) has a match is marked in hit.
//
// Two things of libyara 4.2.3 would let one block's matching depend on another's, and
// are undone here:
//   - the pieces of a chained string (hex strings and regexps with long jumps) wait in
//     unconfirmed_matches for the next piece, across blocks too, linked by their
//     block-relative offsets: after each block its pieces are noted (a piece is enough
//     to mark the window) and dropped, so a chain only completes within one block, as
//     in the window's scan alone;
//   - a match at the address of an earlier match of the same string (overlapping
//     windows: the same bytes lie in two blocks) replaces it and keeps the earlier
//     block's base: a match marks every window holding its first byte.
//
// Once the blocks are matched, libyara evaluates the conditions, and each read of
// memory (uint16(0) and the like: thousands per scan with elastic's rules) walks the
// iterator from its first block until a block holds the address. So that a read
// outside the run does not visit every window, the iterator then starts with two
// guard blocks, the addresses below the run's first window and those from the end of
// its last one, whose data cannot be fetched: libyara's read finds the address in a
// guard and returns undefined, as it would after visiting every window; a read inside
// the run passes both guards and finds the windows in order, as before.

#include <stdlib.h>
#include <string.h>
#include <yara.h>

#include "screen.h"

typedef struct
{
  YR_MEMORY_BLOCK block;
  YR_SCANNER* sc;
  const uint8_t* const* data;
  const uint64_t* bases;
  const size_t* sizes;
  size_t n;
  size_t i;        // the current block, n before the first (and see DM_BELOW)
  uint8_t* hit;
  size_t max_size;  // the largest window
  uint32_t* pieces;  // indexes of the strings that are pieces of a chain
  size_t npieces;
  int reading;                 // the blocks are matched: conditions read memory
  YR_MEMORY_BLOCK below, above;  // the guards: no window holds these addresses
  const uint8_t* sensitive;  // by rule index, or NULL: every rule
  int matched;               // a rule not sensitive matched the whole run
} dm_screen;

static const uint8_t* dm_screen_fetch(YR_MEMORY_BLOCK* b)
{
  dm_screen* sr = (dm_screen*) b->context;
  return sr->data[sr->i];
}

// A guard's data cannot be fetched: a read of it is undefined.
static const uint8_t* dm_screen_fetch_none(YR_MEMORY_BLOCK* b)
{
  return NULL;
}

// dm_screen_pieces marks the current block when a piece of a chained string matched
// in it, and drops the pieces so that no chain links across blocks.
static void dm_screen_pieces(dm_screen* sr)
{
  for (size_t p = 0; p < sr->npieces; p++)
  {
    YR_MATCHES* um = &sr->sc->unconfirmed_matches[sr->pieces[p]];
    if (um->head == NULL)
      continue;
    if (sr->i < sr->n)
      sr->hit[sr->i] = 1;
    um->head = NULL;
    um->tail = NULL;
    um->count = 0;
  }
}

static YR_MEMORY_BLOCK* dm_screen_at(dm_screen* sr, size_t i)
{
  if (sr->i < sr->n && !sr->reading)
    dm_screen_pieces(sr);
  if (i >= sr->n)
  {
    // The last block is matched (or, reading, visited): what follows are reads.
    sr->i = sr->n;
    sr->reading = 1;
    return NULL;
  }
  sr->i = i;
  sr->block.base = sr->bases[i];
  sr->block.size = sr->sizes[i];
  return &sr->block;
}

// While reading, sr->i is a window, or DM_BELOW or DM_ABOVE past the windows: the
// guards come first.
#define DM_BELOW(sr) ((sr)->n + 1)
#define DM_ABOVE(sr) ((sr)->n + 2)

static YR_MEMORY_BLOCK* dm_screen_first(YR_MEMORY_BLOCK_ITERATOR* it)
{
  dm_screen* sr = (dm_screen*) it->context;
  if (sr->reading)
  {
    sr->i = DM_BELOW(sr);
    return &sr->below;
  }
  sr->i = sr->n;
  return dm_screen_at(sr, 0);
}

static YR_MEMORY_BLOCK* dm_screen_next(YR_MEMORY_BLOCK_ITERATOR* it)
{
  dm_screen* sr = (dm_screen*) it->context;
  if (sr->reading && sr->i == DM_BELOW(sr))
  {
    sr->i = DM_ABOVE(sr);
    return &sr->above;
  }
  if (sr->reading && sr->i == DM_ABOVE(sr))
    return dm_screen_at(sr, 0);
  return dm_screen_at(sr, sr->i + 1);
}

// dm_screen_mark marks every window that holds address a.
static void dm_screen_mark(dm_screen* sr, uint64_t a)
{
  // The last window starting at or below a, then back while windows may still reach a.
  size_t lo = 0, hi = sr->n;
  while (lo < hi)
  {
    size_t mid = lo + (hi - lo) / 2;
    if (sr->bases[mid] <= a)
      lo = mid + 1;
    else
      hi = mid;
  }
  for (size_t j = lo; j > 0; j--)
  {
    size_t k = j - 1;
    if (a - sr->bases[k] >= sr->max_size)
      break;
    if (a - sr->bases[k] < sr->sizes[k])
      sr->hit[k] = 1;
  }
}

static int dm_screen_callback(YR_SCAN_CONTEXT* ctx, int msg, void* data, void* user)
{
  dm_screen* sr = (dm_screen*) user;
  if (msg == CALLBACK_MSG_TOO_MANY_MATCHES)
    return CALLBACK_ERROR;  // a string would be cut: the caller scans alone
  if (msg == CALLBACK_MSG_RULE_MATCHING &&
      (sr->sensitive == NULL ||
       !sr->sensitive[(YR_RULE*) data - ctx->rules->rules_table]))
    sr->matched = 1;
  if (msg != CALLBACK_MSG_SCAN_FINISHED)
    return CALLBACK_CONTINUE;
  for (uint32_t s = 0; s < ctx->rules->num_strings; s++)
  {
    if (ctx->matches[s].head == NULL)
      continue;
    // When no rule that is not sensitive matched the run, none matches in a window
    // either (its condition holds in a window only if it holds in the run), whatever
    // its strings: only the sensitive rules' strings mark windows.
    if (!sr->matched && sr->sensitive != NULL &&
        !sr->sensitive[ctx->rules->strings_table[s].rule_idx])
      continue;
    for (const YR_MATCH* m = ctx->matches[s].head; m != NULL; m = m->next)
      dm_screen_mark(sr, (uint64_t) m->base + (uint64_t) m->offset);
  }
  return CALLBACK_CONTINUE;
}

int dm_scan_screen(
    YR_SCANNER* s,
    const uint8_t* const* data,
    const uint64_t* bases,
    const size_t* sizes,
    size_t n,
    int flags,
    const uint8_t* sensitive,
    uint8_t* hit,
    int* matched)
{
  dm_screen sr;
  YR_MEMORY_BLOCK_ITERATOR it;
  memset(&sr, 0, sizeof(sr));
  memset(&it, 0, sizeof(it));
  sr.block.context = &sr;
  sr.block.fetch_data = dm_screen_fetch;
  sr.sc = s;
  sr.data = data;
  sr.bases = bases;
  sr.sizes = sizes;
  sr.n = n;
  sr.i = n;
  sr.hit = hit;
  sr.sensitive = sensitive;
  uint64_t hi = 0;
  for (size_t i = 0; i < n; i++)
  {
    if (sizes[i] > sr.max_size)
      sr.max_size = sizes[i];
    if (bases[i] + sizes[i] > hi)
      hi = bases[i] + sizes[i];
  }
  sr.below.base = 0;
  sr.below.size = n > 0 ? bases[0] : 0;
  sr.below.context = &sr;
  sr.below.fetch_data = dm_screen_fetch_none;
  sr.above.base = hi;
  sr.above.size = UINT64_MAX - hi;
  sr.above.context = &sr;
  sr.above.fetch_data = dm_screen_fetch_none;
  YR_RULES* rules = s->rules;
  for (uint32_t i = 0; i < rules->num_strings; i++)
    if (STRING_IS_CHAIN_PART(&rules->strings_table[i]))
      sr.npieces++;
  if (sr.npieces > 0)
  {
    sr.pieces = (uint32_t*) malloc(sr.npieces * sizeof(uint32_t));
    if (sr.pieces == NULL)
      return ERROR_INSUFFICIENT_MEMORY;
    sr.npieces = 0;
    for (uint32_t i = 0; i < rules->num_strings; i++)
      if (STRING_IS_CHAIN_PART(&rules->strings_table[i]))
        sr.pieces[sr.npieces++] = i;
  }
  it.context = &sr;
  it.first = dm_screen_first;
  it.next = dm_screen_next;
  it.file_size = NULL;
  it.last_error = ERROR_SUCCESS;
  // The time limit is per window: the screen gets n windows' worth.
  uint64_t timeout = s->timeout;
  if (timeout != 0 && n > 0 && timeout <= UINT64_MAX / n)
    s->timeout = timeout * n;
  yr_scanner_set_callback(s, dm_screen_callback, &sr);
  yr_scanner_set_flags(s, flags);
  int rc = yr_scanner_scan_mem_blocks(s, &it);
  s->timeout = timeout;
  free(sr.pieces);
  *matched = sr.matched;
  return rc;
}

uint32_t dm_num_rules(YR_SCANNER* s)
{
  return s->rules->num_rules;
}

const char* dm_rule_name_at(YR_SCANNER* s, uint32_t i)
{
  return s->rules->rules_table[i].identifier;
}

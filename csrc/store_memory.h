/*
 * store_memory.h: what the memory store offers beyond its vtable, for
 * LuaJIT's read path (lcachy_jit.c): a reference to the item a get just
 * found or a put just wrote, and a hit on that item again, without the key (no hashing, no
 * comparing), while the reference holds. A reference holds while no item of
 * the store has been freed since it was taken (gen) and its item has not
 * been rewritten (stamp); otherwise the caller reads by key.
 */
#ifndef CACHY_STORE_MEMORY_H
#define CACHY_STORE_MEMORY_H

#include "store.h"

typedef struct cachy_memory_ref {
    const void *item;
    uint64_t stamp;     /* the item's write, unique in the store */
    uint64_t gen;       /* items freed in the store's life, across close and reopen */
} cachy_memory_ref;

/* After a cachy_get on s that returned 1, or a cachy_put that succeeded:
 * the item it read or wrote. 0, or -1 when s is not an open memory store. */
int cachy_memory_last(cachy_store *s, cachy_memory_ref *ref);

/* A get of ref's item: 1 a hit (counted, the item made the most recently
 * used, as memory_get does), 0 when the reference no longer holds or the
 * item has expired: read by key then. */
int cachy_memory_touch(cachy_store *s, const cachy_memory_ref *ref);

/*
 * What a hit needs to check without a call (LuaJIT's read path, where a
 * call costs more than the checks): the store's count of freed items, and
 * where an item keeps its stamp, its expiry (monotonic ms, on the clock of
 * CLOCK_MONOTONIC_COARSE) and its mark. A reader that finds the count at
 * the reference's gen and the item's stamp at the reference's, and the item
 * not expired, has a hit; it sets the mark (1), which makes eviction move
 * the item to the newest end of the LRU list instead of evicting it, as a
 * touch would have. freed lives as long as s. 0, or -1 when s is not an
 * open memory store.
 */
typedef struct cachy_memory_view {
    const uint64_t *freed;
    size_t stamp_at, expires_at, used_at;   /* byte offsets in an item */
} cachy_memory_view;

int cachy_memory_get_view(cachy_store *s, cachy_memory_view *v);

#endif

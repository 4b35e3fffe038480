/*
 * store_memory.c: the in-process memory driver ("memory", also "dict").
 *
 * A chained hash table keyed by XXH3-64 plus an intrusive LRU list. Items
 * expire on the monotonic clock; max_items and max_bytes bound the store by
 * evicting the least recently used items first. Each item is one allocation
 * holding its header, its key and its value.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "store_memory.h"

#define INITIAL_BUCKETS 16      /* a power of two; doubling keeps it one */
#define SWEEP_WRITE 4           /* buckets the expiry sweep visits per write */
#define READS_PER_SWEEP 16      /* reads sweep one bucket every this many (a power of two) */
#define KEY_SHOWN 64            /* key bytes quoted in an error message */

typedef struct item {
    struct item *chain;         /* next item in the same bucket */
    struct item *newer, *older; /* LRU neighbours */
    uint64_t hash;
    uint64_t stamp;             /* which write made the value: m->stamps at that time */
    int64_t expires;            /* monotonic ms; 0 = never */
    size_t klen, vlen;
    unsigned char used;         /* hit through the view since it last moved in the LRU list */
    char data[];                /* key bytes, then value bytes */
} item;

typedef struct mem {
    item **buckets;
    size_t nbuckets;            /* a power of two */
    size_t nitems;
    size_t nexpiring;           /* items with an expiry; while 0 the clock is not even read */
    size_t bytes;               /* key + value bytes of every item: what max_bytes bounds */
    item *newest, *oldest;      /* the LRU list's ends */
    size_t max_items, max_bytes;    /* 0 = unbounded */
    size_t cursor;              /* the sweep's next bucket, taken modulo nbuckets */
    int64_t hits, misses, evictions;
    unsigned reads;             /* reads since the last read that swept */
    uint64_t stamps;            /* writes so far */
    uint64_t *freed;            /* items freed in the store's life (s->kept: it outlasts close) */
    item *last;                 /* the item the last get hit or put wrote (cachy_memory_last) */
} mem;

/* Both optional, 0 = unbounded. max_bytes bounds the bytes of keys plus
 * values; item headers (72 bytes each on 64-bit systems) and the table are
 * not counted. */
static const cachy_field memory_fields[] = {
    { "max_items", CACHY_OPT_INTEGER, 0 },
    { "max_bytes", CACHY_OPT_INTEGER, 0 },
    { NULL, CACHY_OPT_STRING, 0 },
};

/* ---- helpers ----------------------------------------------------------- */

static char *value_of(item *it) { return it->data + it->klen; }

static int expired(const item *it, int64_t now)
{
    return it->expires != 0 && it->expires <= now;
}

/*
 * The store's clock, in monotonic milliseconds. The coarse clock is read
 * from memory the kernel updates every tick (1 to 4 ms): 4 ns against 16 ns
 * for CLOCK_MONOTONIC, which was a tenth of a whole get. Expiry is then
 * exact to a tick, well within the sub-second precision lifetimes promise.
 */
static int64_t mono_ms(void)
{
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0)
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
#endif
    return cachy_monotonic_ms();
}

/* Skip the clock when no item and no new lifetime can depend on it. */
static int64_t clock_for(const mem *m, int64_t ttl_ms)
{
    return m->nexpiring || ttl_ms > 0 ? mono_ms() : 0;
}

static int64_t expires_at(int64_t now, int64_t ttl_ms)
{
    if (ttl_ms <= 0 || now > INT64_MAX - ttl_ms)
        return 0;   /* a lifetime past the clock's range never ends */
    return now + ttl_ms;
}

static uint64_t hash_key(cachy_slice key) { return XXH3_64bits(key.ptr, key.len); }

static int key_is(const item *it, cachy_slice key, uint64_t h)
{
    return it->hash == h && it->klen == key.len &&
           (key.len == 0 || memcmp(it->data, key.ptr, key.len) == 0);
}

/* The key as an error message shows it: bytes that are not printable ASCII,
 * quotes and backslashes as \xNN, at most KEY_SHOWN bytes, then "...". */
static const char *quote_key(cachy_slice key, char out[KEY_SHOWN * 4 + 4])
{
    static const char hex[] = "0123456789abcdef";
    size_t i, n = key.len > KEY_SHOWN ? KEY_SHOWN : key.len;
    char *p = out;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key.ptr[i];
        if (c < 0x20 || c > 0x7e || c == '\'' || c == '\\') {
            *p++ = '\\';
            *p++ = 'x';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];
        } else {
            *p++ = (char)c;
        }
    }
    if (key.len > n) {
        memcpy(p, "...", 3);
        p += 3;
    }
    *p = '\0';
    return out;
}

/* ---- the LRU list: newest is the most recently used ------------------- */

static void lru_push(mem *m, item *it)
{
    it->used = 0;
    it->newer = NULL;
    it->older = m->newest;
    if (m->newest)
        m->newest->newer = it;
    else
        m->oldest = it;
    m->newest = it;
}

static void lru_unlink(mem *m, item *it)
{
    if (it->newer)
        it->newer->older = it->older;
    else
        m->newest = it->older;
    if (it->older)
        it->older->newer = it->newer;
    else
        m->oldest = it->newer;
}

static void lru_touch(mem *m, item *it)
{
    if (m->newest != it) {
        lru_unlink(m, it);
        lru_push(m, it);
    }
}

/* ---- the table --------------------------------------------------------- */

/* Frees the item *pp points to, which the chain then skips. */
static void drop(mem *m, item **pp)
{
    item *it = *pp;
    *pp = it->chain;
    lru_unlink(m, it);
    m->nitems--;
    m->bytes -= it->klen + it->vlen;
    if (it->expires)
        m->nexpiring--;
    (*m->freed)++;
    free(it);
}

static item **slot_of(mem *m, const item *it)
{
    item **pp = &m->buckets[it->hash & (m->nbuckets - 1)];
    while (*pp != it)
        pp = &(*pp)->chain;
    return pp;
}

/*
 * The link holding key's live item, or, when key is absent, the NULL link
 * that ends its chain. An expired item met on the way is freed: an expired
 * key reads as absent everywhere.
 */
static item **lookup(mem *m, cachy_slice key, uint64_t h, int64_t now)
{
    item **pp = &m->buckets[h & (m->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->chain) {
        if (key_is(*pp, key, h)) {
            if (!expired(*pp, now))
                return pp;
            drop(m, pp);
            while (*pp)
                pp = &(*pp)->chain;
            return pp;
        }
    }
    return pp;
}

/* Doubling keeps chains short, so operations stay amortised O(1). */
static void grow(mem *m)
{
    size_t n = m->nbuckets * 2, i;
    item **nb;
    if (n > SIZE_MAX / sizeof *nb)
        return;
    nb = calloc(n, sizeof *nb);
    if (nb == NULL)
        return;     /* the smaller table stays correct, with longer chains */
    for (i = 0; i < m->nbuckets; i++) {
        item *it = m->buckets[i], *next;
        for (; it; it = next) {
            size_t b = it->hash & (n - 1);
            next = it->chain;
            it->chain = nb[b];
            nb[b] = it;
        }
    }
    free(m->buckets);
    m->buckets = nb;
    m->nbuckets = n;
}

static void link_item(mem *m, item *it)
{
    item **head = &m->buckets[it->hash & (m->nbuckets - 1)];
    it->chain = *head;
    *head = it;
    lru_push(m, it);
    m->nitems++;
    m->bytes += it->klen + it->vlen;
    if (it->expires)
        m->nexpiring++;
    if (m->nitems > m->nbuckets)
        grow(m);
}

/*
 * Advances the incremental sweep over a few buckets, freeing the expired
 * items there, so memory held by expired items nobody reads is bounded over
 * time without a pause proportional to the store. Writes, which are what
 * add items, sweep more: the cursor passes every bucket while
 * nbuckets / SWEEP_WRITE items are added, so expired items awaiting it stay
 * a fraction of the live ones (about a quarter when every write adds a new
 * key; one bucket per write would let them outnumber the live items).
 * Reads sweep little: one bucket every READS_PER_SWEEP reads. Visiting a
 * bucket on every read cost 6% of a memory get-hit in cache misses and
 * mispredicted chain walks.
 */
static void sweep(mem *m, int64_t now, int buckets)
{
    int i;
    if (m->nexpiring == 0)
        return;
    for (i = 0; i < buckets; i++) {
        item **pp = &m->buckets[m->cursor++ & (m->nbuckets - 1)];
        while (*pp) {
            if (expired(*pp, now))
                drop(m, pp);
            else
                pp = &(*pp)->chain;
        }
    }
}

static void read_sweep(mem *m, int64_t now)
{
    if ((++m->reads & (READS_PER_SWEEP - 1)) == 0)
        sweep(m, now, 1);
}

/* Evicts from the LRU end until an item of `size` bytes fits. An expired
 * item leaving this way is reclaimed, not counted as an eviction. */
static void make_room(mem *m, size_t size, int64_t now)
{
    while (m->oldest && ((m->max_items && m->nitems >= m->max_items) ||
                         (m->max_bytes && m->bytes + size > m->max_bytes))) {
        item *it = m->oldest;
        if (it->used && !expired(it, now)) {
            /* hit through the view since it last moved: as recently used
             * as the newest, it moves there (the mark cleared first, so a
             * lone item cannot loop) */
            it->used = 0;
            lru_touch(m, it);
            continue;
        }
        if (!expired(it, now))
            m->evictions++;
        drop(m, slot_of(m, it));
    }
}

/*
 * Stores key -> val in place of the item *old (NULL link: none), evicting
 * to make room. On failure nothing has changed, and *old still stands.
 */
static int insert(cachy_store *s, mem *m, cachy_slice key, uint64_t h, cachy_slice val,
                  int64_t expires, item **old, int64_t now, cachy_error *err)
{
    size_t size;
    item *it;
    if (val.len > SIZE_MAX - sizeof *it - key.len) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    size = key.len + val.len;
    if (m->max_bytes && size > m->max_bytes) {
        if (val.len > m->max_bytes)
            cachy_error_set(err, s, CACHY_ETOOBIG, "value of %zu bytes exceeds max_bytes %zu",
                            val.len, m->max_bytes);
        else
            cachy_error_set(err, s, CACHY_ETOOBIG,
                            "value of %zu bytes with its %zu-byte key exceeds max_bytes %zu",
                            val.len, key.len, m->max_bytes);
        return -1;
    }
    it = malloc(sizeof *it + size);
    if (it == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    it->hash = h;
    it->stamp = ++m->stamps;
    it->expires = expires;
    it->klen = key.len;
    it->vlen = val.len;
    if (key.len)
        memcpy(it->data, key.ptr, key.len);
    if (val.len)
        memcpy(it->data + key.len, val.ptr, val.len);
    if (*old)
        drop(m, old);
    make_room(m, size, now);
    link_item(m, it);
    m->last = it;
    return 0;
}

/* Gives a live item a new expiry, as a use of it. */
static void set_expiry(mem *m, item *it, int64_t expires)
{
    if (it->expires && !expires)
        m->nexpiring--;
    else if (!it->expires && expires)
        m->nexpiring++;
    it->expires = expires;
    lru_touch(m, it);
}

/* A put that failed must not leave the previous value readable as if it
 * were current (memcached's choice too): the key ends up absent. */
static int put_one(cachy_store *s, mem *m, cachy_slice key, cachy_slice val, int64_t expires,
                   int64_t now, cachy_error *err)
{
    uint64_t h = hash_key(key);
    item **pp, *it;
    sweep(m, now, SWEEP_WRITE);
    pp = lookup(m, key, h, now);
    it = *pp;
    if (it != NULL && it->vlen == val.len) {
        /* The same size: rewritten in place, sparing a malloc and a free
         * (a third of an overwriting put). Sizes and counts stay as they
         * are, so nothing needs evicting. */
        if (val.len)
            memcpy(value_of(it), val.ptr, val.len);
        it->stamp = ++m->stamps;
        set_expiry(m, it, expires);
        m->last = it;
        return 0;
    }
    if (insert(s, m, key, h, val, expires, pp, now, err) == 0)
        return 0;
    if (*pp)
        drop(m, pp);
    return -1;
}

static void free_items(mem *m)
{
    item *it = m->newest, *next;
    (*m->freed)++;
    for (; it; it = next) {
        next = it->older;
        free(it);
    }
    m->newest = m->oldest = NULL;
    m->nitems = m->nexpiring = m->bytes = 0;
}

/* ---- the driver -------------------------------------------------------- */

static int read_bound(cachy_store *s, const char *field, size_t *out, cachy_error *err)
{
    double v = cachy_opt_number(&s->opts, field, 0);
    uint64_t u;
    if (!(v >= 0)) {
        cachy_error_set(err, s, CACHY_EMISUSE, "%s must be a non-negative integer, got %g",
                        field, v);
        return -1;
    }
    if (v >= 18446744073709551616.0) {     /* 2^64: no machine holds that much */
        *out = SIZE_MAX;
        return 0;
    }
    u = (uint64_t)v;
    if ((double)u != v) {
        cachy_error_set(err, s, CACHY_EMISUSE, "%s must be an integer, got %g", field, v);
        return -1;
    }
    *out = u > SIZE_MAX ? SIZE_MAX : (size_t)u;
    return 0;
}

static int memory_open(cachy_store *s, cachy_error *err)
{
    size_t max_items, max_bytes;
    mem *m;
    s->address[0] = '\0';
    if (read_bound(s, "max_items", &max_items, err) != 0 ||
        read_bound(s, "max_bytes", &max_bytes, err) != 0)
        return -1;
    if (s->kept == NULL)
        s->kept = calloc(1, sizeof *m->freed);
    m = calloc(1, sizeof *m);
    if (m)
        m->buckets = calloc(INITIAL_BUCKETS, sizeof *m->buckets);
    if (m == NULL || m->buckets == NULL || s->kept == NULL) {
        if (m)
            free(m->buckets);
        free(m);
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    m->nbuckets = INITIAL_BUCKETS;
    m->freed = s->kept;
    m->max_items = max_items;
    m->max_bytes = max_bytes;
    s->impl = m;
    return 0;
}

/* The value into out. Mostly the buffer has room already; the copy is then
 * done here, not through cachy_buf_set's three calls (5% of a get-hit). */
static int copy_value(cachy_buf *out, item *it)
{
    if (it->vlen < out->cap) {
        memcpy(out->data, value_of(it), it->vlen);
        out->len = it->vlen;
        out->data[it->vlen] = '\0';    /* cachy_buf keeps its bytes NUL-terminated */
        return 0;
    }
    return cachy_buf_set(out, value_of(it), it->vlen);
}

static int memory_get(cachy_store *s, cachy_slice key, cachy_buf *out, cachy_error *err)
{
    mem *m = s->impl;
    int64_t now = clock_for(m, 0);
    item *it;
    read_sweep(m, now);
    it = *lookup(m, key, hash_key(key), now);
    if (it == NULL) {
        m->misses++;
        return 0;
    }
    if (copy_value(out, it) != 0) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    m->hits++;
    m->last = it;
    lru_touch(m, it);
    return 1;
}

/* Not a read: no hit or miss is counted, the LRU order is kept. */
static int memory_ttl(cachy_store *s, cachy_slice key, int64_t *ms_left, cachy_error *err)
{
    mem *m = s->impl;
    int64_t now = clock_for(m, 0);
    item *it = *lookup(m, key, hash_key(key), now);
    (void)err;
    if (it == NULL)
        return 0;
    *ms_left = it->expires == 0 ? 0 : it->expires - now;
    return 1;
}

static int memory_put(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                      cachy_error *err)
{
    mem *m = s->impl;
    int64_t now = clock_for(m, ttl_ms);
    return put_one(s, m, key, val, expires_at(now, ttl_ms), now, err);
}

static int memory_add(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                      cachy_error *err)
{
    mem *m = s->impl;
    int64_t now = clock_for(m, ttl_ms);
    uint64_t h = hash_key(key);
    item **pp;
    sweep(m, now, SWEEP_WRITE);
    pp = lookup(m, key, h, now);
    if (*pp)
        return 0;
    if (insert(s, m, key, h, val, expires_at(now, ttl_ms), pp, now, err) != 0)
        return -1;
    return 1;
}

static int memory_forget(cachy_store *s, cachy_slice key, cachy_error *err)
{
    mem *m = s->impl;
    int64_t now = clock_for(m, 0);
    item **pp;
    read_sweep(m, now);     /* forgetting frees memory; it adds none */
    pp = lookup(m, key, hash_key(key), now);
    if (*pp == NULL)
        return 0;
    drop(m, pp);
    return 1;
}

static int memory_incr(cachy_store *s, cachy_slice key, int64_t by, int64_t *result,
                       cachy_error *err)
{
    mem *m = s->impl;
    int64_t now = clock_for(m, 0), cur = 0, sum, expires = 0;
    uint64_t h = hash_key(key);
    char digits[24], shown[KEY_SHOWN * 4 + 4];
    cachy_slice text;
    item **pp, *it;
    sweep(m, now, SWEEP_WRITE);
    pp = lookup(m, key, h, now);
    it = *pp;
    if (it) {
        cachy_slice old = { value_of(it), it->vlen };
        if (!cachy_parse_int(old, &cur)) {
            cachy_error_set(err, s, CACHY_ENOTINT, "value of key '%s' is not an integer",
                            quote_key(key, shown));
            return -1;
        }
        expires = it->expires;
    }
    if (cachy_checked_add(cur, by, &sum) != 0) {
        cachy_error_set(err, s, CACHY_ERANGE, "increment of key '%s' overflows 64 bits",
                        quote_key(key, shown));
        return -1;
    }
    text.ptr = digits;
    text.len = cachy_format_int(sum, digits);
    if (it && it->vlen == text.len) {
        memcpy(value_of(it), digits, text.len);
        it->stamp = ++m->stamps;
        lru_touch(m, it);
    } else if (insert(s, m, key, h, text, expires, pp, now, err) != 0) {
        return -1;
    }
    *result = sum;
    return 0;
}

static int holds(item *it, cachy_slice val)
{
    return it->vlen == val.len && (val.len == 0 || memcmp(value_of(it), val.ptr, val.len) == 0);
}

static int memory_forget_if(cachy_store *s, cachy_slice key, cachy_slice val, cachy_error *err)
{
    mem *m = s->impl;
    item **pp = lookup(m, key, hash_key(key), clock_for(m, 0));
    if (*pp == NULL || !holds(*pp, val))
        return 0;
    drop(m, pp);
    return 1;
}

static int memory_touch_if(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                           cachy_error *err)
{
    mem *m = s->impl;
    int64_t now = clock_for(m, ttl_ms), expires = expires_at(now, ttl_ms);
    item *it = *lookup(m, key, hash_key(key), now);
    if (it == NULL || !holds(it, val))
        return 0;
    set_expiry(m, it, expires);
    return 1;
}

static int memory_flush(cachy_store *s, cachy_slice prefix, cachy_error *err)
{
    mem *m = s->impl;
    int64_t now;
    size_t i;
    if (prefix.len == 0) {
        /* Shrink back too, so an emptied store gives its table back. */
        item **small = m->nbuckets > INITIAL_BUCKETS
                           ? calloc(INITIAL_BUCKETS, sizeof *small) : NULL;
        free_items(m);
        if (small) {
            free(m->buckets);
            m->buckets = small;
            m->nbuckets = INITIAL_BUCKETS;
        } else {
            memset(m->buckets, 0, m->nbuckets * sizeof *m->buckets);
        }
        return 0;
    }
    now = clock_for(m, 0);
    for (i = 0; i < m->nbuckets; i++) {
        item **pp = &m->buckets[i];
        while (*pp) {
            item *it = *pp;
            if (expired(it, now) ||
                (it->klen >= prefix.len && memcmp(it->data, prefix.ptr, prefix.len) == 0))
                drop(m, pp);
            else
                pp = &it->chain;
        }
    }
    return 0;
}

static int memory_many(cachy_store *s, const cachy_slice *keys, size_t n, cachy_buf *outs,
                       int *found, cachy_error *err)
{
    mem *m = s->impl;
    int64_t now = clock_for(m, 0);
    size_t i;
    for (i = 0; i < n; i++) {
        item *it;
        read_sweep(m, now);
        it = *lookup(m, keys[i], hash_key(keys[i]), now);
        found[i] = 0;
        if (it == NULL) {
            m->misses++;
            continue;
        }
        if (copy_value(&outs[i], it) != 0) {
            cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
            return -1;
        }
        found[i] = 1;
        m->hits++;
        lru_touch(m, it);
    }
    return 0;
}

/* Pairs are stored in order; the first failure stops there, as one put per
 * pair would. */
static int memory_put_many(cachy_store *s, const cachy_slice *keys, const cachy_slice *vals,
                           size_t n, int64_t ttl_ms, cachy_error *err)
{
    mem *m = s->impl;
    int64_t now = clock_for(m, ttl_ms), expires = expires_at(now, ttl_ms);
    size_t i;
    for (i = 0; i < n; i++)
        if (put_one(s, m, keys[i], vals[i], expires, now, err) != 0)
            return -1;
    return 0;
}

/* items and bytes include expired items the sweep has not reached yet. */
static int memory_stats(cachy_store *s, cachy_stats *out, cachy_error *err)
{
    mem *m = s->impl;
    out->items = (int64_t)m->nitems;
    out->bytes = (int64_t)m->bytes;
    out->hits = m->hits;
    out->misses = m->misses;
    out->evictions = m->evictions;
    return 0;
}

static int memory_prune(cachy_store *s, cachy_error *err)
{
    mem *m = s->impl;
    int64_t now;
    size_t i;
    if (m->nexpiring == 0)
        return 0;
    now = mono_ms();
    for (i = 0; i < m->nbuckets; i++) {
        item **pp = &m->buckets[i];
        while (*pp) {
            if (expired(*pp, now))
                drop(m, pp);
            else
                pp = &(*pp)->chain;
        }
    }
    return 0;
}

static void memory_close(cachy_store *s)
{
    mem *m = s->impl;
    if (m) {
        free_items(m);      /* counted in the kept count: references die with the items */
        free(m->buckets);
        free(m);
    }
    s->impl = NULL;
}

const cachy_store_ops cachy_memory_ops = {
    .name = "memory",
    .fields = memory_fields,
    .open = memory_open,
    .get = memory_get,
    .put = memory_put,
    .add = memory_add,
    .forget = memory_forget,
    .incr = memory_incr,
    .flush = memory_flush,
    .many = memory_many,
    .put_many = memory_put_many,
    .forget_if = memory_forget_if,
    .touch_if = memory_touch_if,
    .stats = memory_stats,
    .ttl = memory_ttl,
    .prune = memory_prune,
    .close = memory_close,
};

/* ---- LuaJIT's read path (store_memory.h) --------------------------------- */

static mem *open_memory(cachy_store *s)
{
    return s->opened && s->ops == &cachy_memory_ops ? s->impl : NULL;
}

int cachy_memory_last(cachy_store *s, cachy_memory_ref *ref)
{
    mem *m = open_memory(s);
    if (m == NULL || m->last == NULL)
        return -1;
    ref->item = m->last;
    ref->stamp = m->last->stamp;
    ref->gen = *m->freed;
    return 0;
}

int cachy_memory_get_view(cachy_store *s, cachy_memory_view *v)
{
    mem *m = open_memory(s);
    if (m == NULL)
        return -1;
    v->freed = m->freed;
    v->stamp_at = offsetof(item, stamp);
    v->expires_at = offsetof(item, expires);
    v->used_at = offsetof(item, used);
    return 0;
}

int cachy_memory_touch(cachy_store *s, const cachy_memory_ref *ref)
{
    mem *m = open_memory(s);
    item *it;
    int64_t now;
    if (m == NULL || *m->freed != ref->gen)
        return 0;
    it = (item *)ref->item;     /* not freed since the reference was taken */
    if (it->stamp != ref->stamp)
        return 0;
    now = clock_for(m, 0);
    if (expired(it, now))
        return 0;
    m->hits++;
    m->last = it;
    lru_touch(m, it);
    read_sweep(m, now);         /* after the touch: it may free other items */
    return 1;
}

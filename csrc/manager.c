/*
 * manager.c: named stores, their prefixes, lazy opening and reconnection.
 * Every operation passes through here so that the prefix, the open-on-use
 * rule and "a broken connection is closed, the next call reconnects" are
 * written once for every driver.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"

struct cachy_manager {
    cachy_store **stores;
    size_t n;
};

cachy_manager *cachy_manager_new(void)
{
    return calloc(1, sizeof(cachy_manager));
}

/* Whether s holds connections opened by another process: this is a forked
 * child, and using or closing them would disturb the parent's. */
static int inherited(const cachy_store *s)
{
    return s->opened && s->ops && s->ops->disown && s->pid != getpid();
}

void cachy_store_close(cachy_store *s)
{
    if (inherited(s))
        s->ops->disown(s);
    else if (s->opened && s->ops && s->ops->close)
        s->ops->close(s);
    s->opened = 0;
    s->impl = NULL;
}

void cachy_store_free(cachy_store *s)
{
    cachy_store_close(s);
    free(s->name);
    free(s->driver);
    free(s->prefix);
    cachy_options_free(&s->opts);
    cachy_buf_free(&s->keybuf);
    free(s->kept);
    free(s);
}

void cachy_manager_close(cachy_manager *m)
{
    size_t i;
    for (i = 0; i < m->n; i++)
        cachy_store_close(m->stores[i]);
}

void cachy_manager_free(cachy_manager *m)
{
    size_t i;
    if (m == NULL)
        return;
    for (i = 0; i < m->n; i++)
        cachy_store_free(m->stores[i]);
    free(m->stores);
    free(m);
}

cachy_store *cachy_store_new(const char *name, const char *driver, const cachy_store_ops *ops,
                             const char *prefix, cachy_options *opts)
{
    cachy_store *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->name = strdup(name);
    s->driver = strdup(driver);
    s->prefix = strdup(prefix ? prefix : "");
    if (!s->name || !s->driver || !s->prefix) {
        cachy_store_free(s);
        return NULL;
    }
    s->prefix_len = strlen(s->prefix);
    s->ops = ops;
    s->opts = *opts;
    opts->items = NULL;
    opts->n = 0;
    return s;
}

cachy_store *cachy_manager_add(cachy_manager *m, const char *name, const char *driver,
                               const cachy_store_ops *ops, const char *prefix,
                               cachy_options *opts)
{
    cachy_store **stores, *s;
    stores = realloc(m->stores, (m->n + 1) * sizeof *stores);
    if (stores == NULL)
        return NULL;
    m->stores = stores;
    s = cachy_store_new(name, driver, ops, prefix, opts);
    if (s == NULL)
        return NULL;
    m->stores[m->n++] = s;
    return s;
}

cachy_store *cachy_manager_store(cachy_manager *m, const char *name)
{
    size_t i;
    for (i = 0; i < m->n; i++)
        if (strcmp(m->stores[i]->name, name) == 0)
            return m->stores[i];
    return NULL;
}

const char *cachy_store_name(const cachy_store *s) { return s->name; }
const char *cachy_store_driver(const cachy_store *s) { return s->driver; }
const cachy_store_ops *cachy_store_ops_of(const cachy_store *s) { return s->ops; }
const cachy_options *cachy_store_options(const cachy_store *s) { return &s->opts; }

void cachy_store_set_driver(cachy_store *s, const cachy_store_ops *ops)
{
    if (s->ops != ops)
        cachy_store_close(s);
    s->ops = ops;
}

/* ---- the operations ---------------------------------------------------- */

static int open_store(cachy_store *s, cachy_error *err)
{
    if (s->ops == NULL) {
        cachy_error_set(err, NULL, CACHY_EMISUSE, "cache driver '%s' is not supported (store '%s')",
                        s->driver, s->name);
        return -1;
    }
    if (s->opened)
        cachy_store_close(s);       /* open in the parent (ensure_open): let it go */
    if (s->ops->open(s, err) != 0) {
        if (err->code == CACHY_ECONN)
            err->code = CACHY_EREFUSED;
        return -1;
    }
    s->opened = 1;
    if (s->ops->disown)
        s->pid = getpid();
    return 0;
}

/* The checks every operation makes are inlined and the rare work kept out
 * of line: as two calls they were 5% of a memory get-hit. A store with
 * connections also checks that this is the process that opened them (one
 * getpid, against a round trip). */
static inline int ensure_open(cachy_store *s, cachy_error *err)
{
    if (s->opened && (s->ops->disown == NULL || s->pid == getpid()))
        return 0;
    return open_store(s, err);
}

/* A connection that failed or timed out is never reused: a late reply must
 * not be read as the answer to a later command. */
static int after(cachy_store *s, int rc, const cachy_error *err)
{
    if (rc < 0 && (err->code == CACHY_ECONN || err->code == CACHY_EREFUSED ||
                   err->code == CACHY_ETIMEOUT))
        cachy_store_close(s);
    return rc;
}

/* The prefixed key, built in the store's scratch buffer. */
static int prefix_key(cachy_store *s, cachy_slice key, cachy_slice *out, cachy_error *err)
{
    if (cachy_buf_set(&s->keybuf, s->prefix, s->prefix_len) != 0 ||
        cachy_buf_append(&s->keybuf, key.ptr, key.len) != 0) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    out->ptr = s->keybuf.data;
    out->len = s->keybuf.len;
    return 0;
}

static inline int full_key(cachy_store *s, cachy_slice key, cachy_slice *out, cachy_error *err)
{
    if (s->prefix_len == 0) {
        *out = key;
        return 0;
    }
    return prefix_key(s, key, out, err);
}

#define PREPARE(s, key, fk, err)                                        \
    cachy_slice fk;                                                     \
    if (ensure_open(s, err) != 0 || full_key(s, key, &fk, err) != 0)    \
        return -1

int cachy_get(cachy_store *s, cachy_slice key, cachy_buf *out, cachy_error *err)
{
    PREPARE(s, key, fk, err);
    return after(s, s->ops->get(s, fk, out, err), err);
}

int cachy_put(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms, cachy_error *err)
{
    PREPARE(s, key, fk, err);
    return after(s, s->ops->put(s, fk, val, ttl_ms, err), err);
}

int cachy_add(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms, cachy_error *err)
{
    PREPARE(s, key, fk, err);
    return after(s, s->ops->add(s, fk, val, ttl_ms, err), err);
}

int cachy_forget(cachy_store *s, cachy_slice key, cachy_error *err)
{
    PREPARE(s, key, fk, err);
    return after(s, s->ops->forget(s, fk, err), err);
}

int cachy_incr(cachy_store *s, cachy_slice key, int64_t by, int64_t *result, cachy_error *err)
{
    PREPARE(s, key, fk, err);
    return after(s, s->ops->incr(s, fk, by, result, err), err);
}

static int no_slot(cachy_store *s, const char *what, cachy_error *err)
{
    cachy_error_set(err, s, CACHY_EMISUSE, "the %s driver has no %s", s->ops->name, what);
    return -1;
}

int cachy_forget_if(cachy_store *s, cachy_slice key, cachy_slice val, cachy_error *err)
{
    PREPARE(s, key, fk, err);
    if (s->ops->forget_if == NULL)
        return no_slot(s, "forget_if", err);
    return after(s, s->ops->forget_if(s, fk, val, err), err);
}

int cachy_touch_if(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                   cachy_error *err)
{
    PREPARE(s, key, fk, err);
    if (s->ops->touch_if == NULL)
        return no_slot(s, "touch_if", err);
    return after(s, s->ops->touch_if(s, fk, val, ttl_ms, err), err);
}

int cachy_flush(cachy_store *s, cachy_error *err)
{
    cachy_slice prefix;
    if (ensure_open(s, err) != 0)
        return -1;
    prefix.ptr = s->prefix;
    prefix.len = s->prefix_len;
    return after(s, s->ops->flush(s, prefix, err), err);
}

/* Prefixed copies of many keys, in one allocation. */
static cachy_slice *prefixed_keys(cachy_store *s, const cachy_slice *keys, size_t n,
                                  cachy_error *err)
{
    size_t i, total = 0;
    cachy_slice *out;
    char *p;
    for (i = 0; i < n; i++)
        total += s->prefix_len + keys[i].len;
    out = malloc(n * sizeof *out + total + 1);
    if (out == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return NULL;
    }
    p = (char *)(out + n);
    for (i = 0; i < n; i++) {
        memcpy(p, s->prefix, s->prefix_len);
        if (keys[i].len)
            memcpy(p + s->prefix_len, keys[i].ptr, keys[i].len);
        out[i].ptr = p;
        out[i].len = s->prefix_len + keys[i].len;
        p += out[i].len;
    }
    return out;
}

int cachy_many(cachy_store *s, const cachy_slice *keys, size_t n, cachy_buf *outs, int *found,
               cachy_error *err)
{
    cachy_slice *fk;
    size_t i;
    int rc = 0;
    if (n == 0)
        return 0;
    if (ensure_open(s, err) != 0 || (fk = prefixed_keys(s, keys, n, err)) == NULL)
        return -1;
    if (s->ops->many) {
        rc = s->ops->many(s, fk, n, outs, found, err);
    } else {
        for (i = 0; i < n && rc >= 0; i++) {
            rc = s->ops->get(s, fk[i], &outs[i], err);
            found[i] = rc == 1;
        }
        rc = rc < 0 ? -1 : 0;
    }
    free(fk);
    return after(s, rc, err);
}

int cachy_put_many(cachy_store *s, const cachy_slice *keys, const cachy_slice *vals, size_t n,
                   int64_t ttl_ms, cachy_error *err)
{
    cachy_slice *fk;
    size_t i;
    int rc = 0;
    if (n == 0)
        return 0;
    if (ensure_open(s, err) != 0 || (fk = prefixed_keys(s, keys, n, err)) == NULL)
        return -1;
    if (s->ops->put_many) {
        rc = s->ops->put_many(s, fk, vals, n, ttl_ms, err);
    } else {
        for (i = 0; i < n && rc == 0; i++)
            rc = s->ops->put(s, fk[i], vals[i], ttl_ms, err);
    }
    free(fk);
    return after(s, rc, err);
}

int cachy_stats_of(cachy_store *s, cachy_stats *out, cachy_error *err)
{
    if (ensure_open(s, err) != 0)
        return -1;
    if (s->ops->stats == NULL) {
        cachy_error_set(err, s, CACHY_EMISUSE, "the %s driver keeps no stats", s->ops->name);
        return -1;
    }
    out->items = out->bytes = out->hits = out->misses = out->evictions = -1;
    return after(s, s->ops->stats(s, out, err), err);
}

int cachy_prune(cachy_store *s, cachy_error *err)
{
    if (ensure_open(s, err) != 0)
        return -1;
    if (s->ops->prune == NULL) {
        cachy_error_set(err, s, CACHY_EMISUSE, "the %s driver has no prune", s->ops->name);
        return -1;
    }
    return after(s, s->ops->prune(s, err), err);
}

int cachy_ttl(cachy_store *s, cachy_slice key, int64_t *ms_left, cachy_error *err)
{
    PREPARE(s, key, fk, err);
    if (s->ops->ttl == NULL) {
        cachy_error_set(err, s, CACHY_EMISUSE, "the %s driver cannot tell a key's lifetime",
                        s->ops->name);
        return -1;
    }
    return after(s, s->ops->ttl(s, fk, ms_left, err), err);
}

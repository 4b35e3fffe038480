/*
 * lcachy_scope.c: store operations, in the repository's tag namespace.
 * The one place that knows a tagged repository's keys are not the keys the
 * store sees, so every method and the decorator share tags.c's rules.
 */
#include "lcachy.h"

/* The key the store sees: for a tagged repository, the item's key in its
 * tags' namespace, in `buf` (the caller's own: a Lua store may call back
 * into this repository while the key is still in use). */
static int scope(repo_ud *r, cachy_slice *key, cachy_buf *buf, char ns[33], cachy_error *err)
{
    if (r->ntags == 0)
        return 0;
    if (cachy_tags_item_key(r->st->store, r->tags, r->ntags, *key, buf, ns, err) != 0)
        return -1;
    key->ptr = buf->data;
    key->len = buf->len;
    return 0;
}

int lc_r_get(repo_ud *r, cachy_slice key, cachy_buf *out, cachy_error *err)
{
    cachy_buf buf = { 0 };
    char ns[33];
    int rc = scope(r, &key, &buf, ns, err);
    if (rc == 0)
        rc = cachy_get(r->st->store, key, out, err);
    cachy_buf_free(&buf);
    return rc;
}

int lc_r_forget(repo_ud *r, cachy_slice key, cachy_error *err)
{
    cachy_buf buf = { 0 };
    char ns[33];
    int rc = scope(r, &key, &buf, ns, err);
    if (rc == 0)
        rc = cachy_forget(r->st->store, key, err);
    cachy_buf_free(&buf);
    return rc;
}

/* put (is_add 0) or add (1); tagged writes are recorded first and checked
 * against a racing flush after (tags.c). */
int lc_r_write(repo_ud *r, cachy_slice key, cachy_slice val, int64_t ttl_ms, int is_add,
               cachy_error *err)
{
    cachy_store *s = r->st->store;
    cachy_buf buf = { 0 };
    char ns[33];
    int rc = scope(r, &key, &buf, ns, err);
    if (rc == 0 && r->ntags)
        rc = cachy_tags_record(s, r->tags, r->ntags, key, ttl_ms, err);
    if (rc == 0)
        rc = is_add ? cachy_add(s, key, val, ttl_ms, err) : cachy_put(s, key, val, ttl_ms, err);
    if (rc >= 0 && r->ntags) {
        int moved = cachy_tags_recheck(s, r->tags, r->ntags, key, ns, err);
        if (moved < 0)
            rc = -1;
        else if (moved && is_add)
            rc = 0;
    }
    cachy_buf_free(&buf);
    return rc;
}

int lc_r_incr(repo_ud *r, cachy_slice key, int64_t by, int64_t *result, cachy_error *err)
{
    cachy_store *s = r->st->store;
    cachy_buf buf = { 0 }, old = { 0 };
    char ns[33];
    int rc = scope(r, &key, &buf, ns, err);
    if (rc == 0 && r->ntags) {
        /* record a counter once, when it is created, not at every step */
        rc = cachy_get(s, key, &old, err);
        if (rc == 0)
            rc = cachy_tags_record(s, r->tags, r->ntags, key, 0, err);
        rc = rc < 0 ? -1 : 0;
    }
    if (rc == 0)
        rc = cachy_incr(s, key, by, result, err);
    if (rc == 0 && r->ntags && cachy_tags_recheck(s, r->tags, r->ntags, key, ns, err) < 0)
        rc = -1;
    cachy_buf_free(&buf);
    cachy_buf_free(&old);
    return rc;
}

/* Tagged keys live in one scratch buffer each, so tagged batches go key by key. */
int lc_r_many(repo_ud *r, const cachy_slice *keys, size_t n, cachy_buf *outs, int *found,
              cachy_error *err)
{
    size_t i;
    if (r->ntags == 0)
        return cachy_many(r->st->store, keys, n, outs, found, err);
    for (i = 0; i < n; i++) {
        int rc = lc_r_get(r, keys[i], &outs[i], err);
        if (rc < 0)
            return -1;
        found[i] = rc;
    }
    return 0;
}

int lc_r_put_many(repo_ud *r, const cachy_slice *keys, const cachy_slice *vals, size_t n,
                  int64_t ttl_ms, cachy_error *err)
{
    size_t i;
    if (r->ntags == 0)
        return cachy_put_many(r->st->store, keys, vals, n, ttl_ms, err);
    for (i = 0; i < n; i++)
        if (lc_r_write(r, keys[i], vals[i], ttl_ms, 0, err) < 0)
            return -1;
    return 0;
}

/*
 * tags.c: tagged items by namespace versioning, on any store.
 *
 * Each tag has a version kept in the store itself. A tagged item lives
 * under a hash of its ordered tags' versions, so bumping one tag's version
 * (flush) makes every item written under it unreachable at once. So that
 * unreachable items do not pile up on stores that never evict, every write
 * is also recorded under each tag's current version (a counter and one
 * slot per write, with the item's lifetime); a flush deletes what the old
 * version recorded.
 *
 * A write racing a flush: the writer records before it writes and reads
 * the versions again after; the flusher bumps before it deletes. Either
 * the flusher sees the record (and deletes the item, or the writer's
 * recheck does when the item lands after the deletion), or the writer
 * sees the new version and removes what it wrote. No item survives the
 * flush under the old namespace.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "store.h"

#define TAG_ROOT "cachy:tag:"

/* "cachy:tag:<hash of name>:<suffix>" into b */
static int tag_key(cachy_buf *b, cachy_slice tag, const char *suffix)
{
    char hex[33];
    cachy_hash128_hex(tag.ptr, tag.len, hex);
    hex[16] = '\0';
    b->len = 0;
    return cachy_buf_append(b, TAG_ROOT, strlen(TAG_ROOT)) || cachy_buf_append(b, hex, 16) ||
           cachy_buf_append(b, ":", 1) || cachy_buf_append(b, suffix, strlen(suffix));
}

static cachy_slice slice_of(const cachy_buf *b)
{
    cachy_slice s;
    s.ptr = b->data;
    s.len = b->len;
    return s;
}

static int oom(cachy_store *s, cachy_error *err)
{
    cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
    return -1;
}

/* A fresh version: random enough that a version key lost to eviction never
 * comes back with a value it had before (nanosecond clocks, the process,
 * and the tag's name, hashed). */
static int64_t fresh_version(cachy_slice tag)
{
    struct {
        struct timespec wall, mono;
        long pid;
        uint64_t name;
    } seed;
    memset(&seed, 0, sizeof seed);
    clock_gettime(CLOCK_REALTIME, &seed.wall);
    clock_gettime(CLOCK_MONOTONIC, &seed.mono);
    seed.pid = (long)getpid();
    seed.name = XXH3_64bits(tag.ptr, tag.len);
    /* >> 12: fits in a double too; | 1: 0 means "no version" */
    return (int64_t)(XXH3_64bits(&seed, sizeof seed) >> 12) | 1;
}

/* The tag's current version; a missing one is created when `create`, else 0. */
static int tag_version(cachy_store *s, cachy_slice tag, int create, int64_t *v, cachy_error *err)
{
    cachy_buf key = { 0 }, val = { 0 };
    int rc, attempt;
    if (tag_key(&key, tag, "version") != 0)
        return oom(s, err);
    for (attempt = 0; attempt < 3; attempt++) {
        rc = cachy_get(s, slice_of(&key), &val, err);
        if (rc < 0)
            break;
        if (rc == 1) {
            if (!cachy_parse_int(slice_of(&val), v)) {
                /* not ours to read: a foreign value under our key; replace it */
                rc = cachy_forget(s, slice_of(&key), err);
                if (rc < 0)
                    break;
                continue;
            }
            rc = 0;
            break;
        }
        if (!create) {
            *v = 0;
            rc = 0;
            break;
        }
        {
            char text[24];
            cachy_slice t;
            int64_t fresh = fresh_version(tag);
            t.ptr = text;
            t.len = cachy_format_int(fresh, text);
            rc = cachy_add(s, slice_of(&key), t, 0, err);
            if (rc < 0)
                break;
            if (rc == 1) {
                *v = fresh;
                rc = 0;
                break;
            }
            /* another writer created it first: read theirs */
        }
        rc = -1;
        cachy_error_set(err, s, CACHY_EBACKEND, "tag version keeps changing");
    }
    cachy_buf_free(&key);
    cachy_buf_free(&val);
    return rc < 0 ? -1 : 0;
}

/* The namespace of an ordered tag list: a hash of the versions, as hex. */
static int tag_namespace(cachy_store *s, const cachy_slice *tags, size_t n, char ns[33],
                         cachy_error *err)
{
    cachy_buf versions = { 0 };
    size_t i;
    for (i = 0; i < n; i++) {
        int64_t v;
        char text[24];
        size_t len;
        if (tag_version(s, tags[i], 1, &v, err) != 0) {
            cachy_buf_free(&versions);
            return -1;
        }
        len = cachy_format_int(v, text);
        text[len++] = '|';
        if (cachy_buf_append(&versions, text, len) != 0) {
            cachy_buf_free(&versions);
            return oom(s, err);
        }
    }
    cachy_hash128_hex(versions.data, versions.len, ns);
    cachy_buf_free(&versions);
    return 0;
}

int cachy_tags_item_key(cachy_store *s, const cachy_slice *tags, size_t n, cachy_slice key,
                        cachy_buf *out, char ns[33], cachy_error *err)
{
    if (tag_namespace(s, tags, n, ns, err) != 0)
        return -1;
    out->len = 0;
    if (cachy_buf_append(out, "cachy:tagged:", 13) || cachy_buf_append(out, ns, 32) ||
        cachy_buf_append(out, ":", 1) || cachy_buf_append(out, key.ptr, key.len))
        return oom(s, err);
    return 0;
}

int cachy_tags_record(cachy_store *s, const cachy_slice *tags, size_t n, cachy_slice item_key,
                      int64_t ttl_ms, cachy_error *err)
{
    cachy_buf key = { 0 };
    size_t i;
    int rc = 0;
    for (i = 0; i < n && rc == 0; i++) {
        int64_t v, slot;
        char suffix[64];
        if (tag_version(s, tags[i], 1, &v, err) != 0) {
            rc = -1;
            break;
        }
        snprintf(suffix, sizeof suffix, "%lld:count", (long long)v);
        if (tag_key(&key, tags[i], suffix) != 0) {
            rc = oom(s, err);
            break;
        }
        if (cachy_incr(s, slice_of(&key), 1, &slot, err) != 0) {
            rc = -1;
            break;
        }
        snprintf(suffix, sizeof suffix, "%lld:%lld", (long long)v, (long long)slot);
        if (tag_key(&key, tags[i], suffix) != 0) {
            rc = oom(s, err);
            break;
        }
        rc = cachy_put(s, slice_of(&key), item_key, ttl_ms, err);
    }
    cachy_buf_free(&key);
    return rc;
}

int cachy_tags_recheck(cachy_store *s, const cachy_slice *tags, size_t n, cachy_slice item_key,
                       const char ns[33], cachy_error *err)
{
    char now[33];
    if (tag_namespace(s, tags, n, now, err) != 0)
        return -1;
    if (memcmp(now, ns, 32) == 0)
        return 0;
    return cachy_forget(s, item_key, err) < 0 ? -1 : 1;
}

/* Deletes what the tag's version v recorded. */
static int drop_records(cachy_store *s, cachy_slice tag, int64_t v, cachy_error *err)
{
    cachy_buf key = { 0 }, val = { 0 };
    char suffix[64];
    int64_t count = 0, i;
    int rc;
    snprintf(suffix, sizeof suffix, "%lld:count", (long long)v);
    if (tag_key(&key, tag, suffix) != 0)
        return oom(s, err);
    rc = cachy_get(s, slice_of(&key), &val, err);
    if (rc == 1 && !cachy_parse_int(slice_of(&val), &count))
        count = 0;
    rc = rc < 0 ? -1 : 0;
    for (i = 1; i <= count && rc == 0; i++) {
        snprintf(suffix, sizeof suffix, "%lld:%lld", (long long)v, (long long)i);
        if (tag_key(&key, tag, suffix) != 0) {
            rc = oom(s, err);
            break;
        }
        rc = cachy_get(s, slice_of(&key), &val, err);
        if (rc == 1)
            rc = cachy_forget(s, slice_of(&val), err);
        if (rc >= 0)
            rc = cachy_forget(s, slice_of(&key), err);
        rc = rc < 0 ? -1 : 0;
    }
    if (rc == 0) {
        snprintf(suffix, sizeof suffix, "%lld:count", (long long)v);
        if (tag_key(&key, tag, suffix) != 0)
            rc = oom(s, err);
        else
            rc = cachy_forget(s, slice_of(&key), err) < 0 ? -1 : 0;
    }
    cachy_buf_free(&key);
    cachy_buf_free(&val);
    return rc;
}

int cachy_tags_flush(cachy_store *s, const cachy_slice *tags, size_t n, cachy_error *err)
{
    cachy_buf key = { 0 };
    size_t i;
    int rc = 0;
    for (i = 0; i < n && rc == 0; i++) {
        int64_t v, bumped;
        if (tag_version(s, tags[i], 0, &v, err) != 0) {
            rc = -1;
            break;
        }
        if (v == 0)
            continue;       /* never written: nothing to flush */
        if (tag_key(&key, tags[i], "version") != 0) {
            rc = oom(s, err);
            break;
        }
        /* bump first: writes from now on go to the new namespace */
        if (cachy_incr(s, slice_of(&key), 1, &bumped, err) != 0) {
            rc = -1;
            break;
        }
        rc = drop_records(s, tags[i], v, err);
    }
    cachy_buf_free(&key);
    return rc;
}

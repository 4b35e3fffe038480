/*
 * store.h: the vtable every driver fills in, and the store object the
 * manager owns. One driver = one file = one `static const` vtable exported
 * as `cachy_<driver>_ops`; keys reaching a driver already carry the prefix.
 */
#ifndef CACHY_STORE_H
#define CACHY_STORE_H

#include <sys/types.h>

#include "cachy.h"

struct cachy_store_ops {
    const char *name;                 /* driver name in config: "redis" */
    const cachy_field *fields;        /* accepted config fields besides driver/prefix/serializer */

    /* Connect or allocate; fills s->address. 0 ok, -1 error. Called lazily
     * before the first operation and again after a connection failure. */
    int (*open)(cachy_store *s, cachy_error *err);

    /* 1 hit (value copied into out), 0 miss, -1 error. */
    int (*get)(cachy_store *s, cachy_slice key, cachy_buf *out, cachy_error *err);

    /* Store val for ttl_ms milliseconds (0 = forever, never negative). 0 ok, -1 error. */
    int (*put)(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms, cachy_error *err);

    /* Store only if absent, atomically. 1 stored, 0 present, -1 error. */
    int (*add)(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms, cachy_error *err);

    /* 1 removed, 0 was absent, -1 error. */
    int (*forget)(cachy_store *s, cachy_slice key, cachy_error *err);

    /* Atomically add `by` to the decimal integer under key; a missing key
     * starts at 0 with no expiry, an existing one keeps its expiry.
     * 0 ok (*result set), -1 error: CACHY_ENOTINT / CACHY_ERANGE leave the
     * value unchanged. */
    int (*incr)(cachy_store *s, cachy_slice key, int64_t by, int64_t *result, cachy_error *err);

    /* Remove every key starting with prefix; an empty prefix means every
     * key of the store (database, directory). 0 ok, -1 error. */
    int (*flush)(cachy_store *s, cachy_slice prefix, cachy_error *err);

    /* Optional (NULL: one get per key). outs[i] filled and found[i] = 1 for
     * hits, found[i] = 0 for misses. 0 ok, -1 error. */
    int (*many)(cachy_store *s, const cachy_slice *keys, size_t n, cachy_buf *outs, int *found,
                cachy_error *err);

    /* Optional (NULL: one put per pair). 0 ok, -1 error. */
    int (*put_many)(cachy_store *s, const cachy_slice *keys, const cachy_slice *vals, size_t n,
                    int64_t ttl_ms, cachy_error *err);

    /* Locks (lua/cachy/lock.lua); every built-in driver has both (NULL:
     * lock calls fail with CACHY_EMISUSE). Atomically remove key if it
     * holds exactly val. 1 removed, 0 absent or holding other bytes, -1 error. */
    int (*forget_if)(cachy_store *s, cachy_slice key, cachy_slice val, cachy_error *err);

    /* Atomically give key a lifetime of ttl_ms (> 0) from now if it holds
     * exactly val. 1 done, 0 absent or holding other bytes, -1 error. */
    int (*touch_if)(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                    cachy_error *err);

    /* Optional. Fields the driver cannot know are -1. 0 ok, -1 error. */
    int (*stats)(cachy_store *s, cachy_stats *out, cachy_error *err);

    /* Optional (NULL: the driver cannot tell). The lifetime key has left:
     * 1 found (*ms_left set, 0 = no expiry), 0 missing, -1 error. */
    int (*ttl)(cachy_store *s, cachy_slice key, int64_t *ms_left, cachy_error *err);

    /* Optional. Remove expired items now. 0 ok, -1 error. */
    int (*prune)(cachy_store *s, cachy_error *err);

    /* Release the connection/state and set s->impl = NULL; may be opened again. */
    void (*close)(cachy_store *s);

    /* Optional: for stores holding connections. Called instead of close in
     * a forked child, for a store its parent opened: let go of the parent's
     * connections without any I/O on them (closing a descriptor is fine; a
     * shutdown or a quit message would end the parent's connection too) and
     * set s->impl = NULL. Stores without it are used on by the child (its
     * copy of a memory store, the same directory). */
    void (*disown)(cachy_store *s);
};

struct cachy_store {
    const cachy_store_ops *ops;   /* NULL until the driver is resolved */
    void *impl;                   /* driver state while open */
    int opened;
    pid_t pid;                    /* the process that opened it (stores with disown) */
    char *name;                   /* the store's name in config */
    char *driver;                 /* the driver's name in config */
    char *prefix;                 /* prepended to every key; "" for none */
    size_t prefix_len;
    char address[128];            /* for error messages ("127.0.0.1:6379"), "" if none */
    cachy_options opts;
    cachy_buf keybuf;             /* scratch for prefixed keys */
    void *kept;                   /* driver state that outlasts close (a breaker);
                                     malloc'd by the driver, freed with the store */
};

#endif

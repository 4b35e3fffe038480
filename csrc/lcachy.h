/*
 * lcachy.h: the Lua binding's internal header, shared by its files and by
 * nothing else. The binding never calls a user function: it exposes the
 * kernels (codec, argument hashing, TTL forms), C stores as handles that
 * speak bytes, and the value-level fast paths a repository binds when its
 * store is a C store. The control flow that reaches user code is in
 * lua/cachy/.
 */
#ifndef CACHY_LCACHY_H
#define CACHY_LCACHY_H

#include <stdint.h>

#include "codec.h"
#include "store.h"

#define HANDLE_MT "cachy.Store"

typedef struct recent_slot recent_slot;     /* lcachy_fast.c */

/* A C store owned by a userdata (core.open). */
typedef struct lc_handle {
    cachy_store *store;       /* NULL once freed */
    cachy_buf buf;            /* fetched bytes and encoded values */
    cachy_buf key;            /* decorator keys */
    cachy_buf batch;          /* put_many: keys and values side by side */
    recent_slot *recent;      /* strings handed out lately (lcachy_fast.c) */
    int64_t counts[4];        /* LC_HITS ...: what the fast methods saw (stats) */
} lc_handle;

enum { LC_HITS, LC_MISSES, LC_WRITES, LC_ERRORS, LC_NCOUNTS };

enum { TTL_BAD = -1, TTL_EXPIRED = 0, TTL_OK = 1 };

/* lcachy_store.c: the handle and its bytes-level methods. */
lc_handle *lc_check_handle(lua_State *L, int idx);
int lc_fail(lua_State *L, const cachy_error *err);          /* nil, msg, code: 3 */
const char *lc_code_name(cachy_errcode code);               /* "timeout", ... */
void lc_key_message(cachy_error *err, const cachy_store *s, const char *shown_fmt,
                    cachy_slice shown);
void lc_open_store(lua_State *L);                           /* core.open, the metatable */
/* Registers the metatable `name`: methods as __index, gc as __gc. */
void lc_new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc);
cachy_slice *lc_many_block(lua_State *L, size_t n, cachy_buf **outs, int **found);

/* lcachy_ttl.c: TTL forms. */
int lc_read_ttl(lua_State *L, int idx, int64_t dflt_ms, int64_t *ms, const char **why);
int lc_core_ttl(lua_State *L);                              /* core.ttl */

/* lcachy_fast.c: the value-level methods bound into a C store's repository. */
void lc_free_recent(lua_State *L, lc_handle *h);
int lc_bind(lua_State *L);                                  /* core.bind */
int lc_core_value_root(lua_State *L);                       /* core.value_root */

/* lcachy_jit.c: the memory store's hot paths for LuaJIT's FFI. */
int lc_jit_bind(lua_State *L);                              /* core.jit_bind */

/* lcachy_envelope.c: the envelope of an item kept for stale serving. */
int lc_core_envelope(lua_State *L);                         /* core.envelope */
int lc_core_envelope_open(lua_State *L);                    /* core.envelope_open */

/* lcachy_redis.c: RESP for transports written in Lua (redis_proto.c). */
/* Pushes a buffer userdata for C functions to keep as an upvalue;
 * lc_push_buffer pushes its bytes (and gives a large one back). */
cachy_buf *lc_new_buffer(lua_State *L);
int lc_push_buffer(lua_State *L, cachy_buf *b);
int lc_redis_reader(lua_State *L);                          /* core.redis_reader */
void lc_open_redis_cluster(lua_State *L);                   /* core.redis_slot, _redirect, _slot_map */
int lc_redis_lock_command(lua_State *L);                    /* core.redis_lock_command */
void lc_open_redis(lua_State *L);                           /* the reader's metatable */

/* lcachy_memcached.c: memcached keys, lifetimes, binary frames, counters and
 * the ketama continuum (memcached_wire.c), for transports written in Lua. */
int lc_mw_key(lua_State *L);
int lc_mw_expiry(lua_State *L);
int lc_mw_request(lua_State *L);
int lc_mw_store_extras(lua_State *L);
int lc_mw_incr_extras(lua_State *L);
int lc_mw_header(lua_State *L);
int lc_mw_unpad(lua_State *L);
int lc_mw_incr_plan(lua_State *L);
int lc_mw_incr_result(lua_State *L);
int lc_mw_repair(lua_State *L);
int lc_mw_status(lua_State *L);
int lc_mw_ring_new(lua_State *L);
void lc_open_memcached_wire(lua_State *L);                  /* the ring's metatable */

/* lcachy_lock.c: what locks need from C (a sleep, owner tokens). */
void lc_open_lock(lua_State *L);

/* A key argument: a non-empty string or a number. NULL with *why set otherwise. */
const char *lc_key_of(lua_State *L, int idx, size_t *len, const char **why);

#endif

/*
 * lcachy.h: the Lua binding's internal header, shared by its files
 * (lcachy.c, lcachy_repo.c, lcachy_decorate.c, lcachy_value.c,
 * lcachy_scope.c) and by nothing else. The userdata layouts live here so
 * that every file reads a repository the same way; the lc_ functions are
 * hidden like everything but luaopen_cachy_core (-fvisibility=hidden).
 */
#ifndef CACHY_LCACHY_H
#define CACHY_LCACHY_H

#include <stdint.h>

#include "codec.h"
#include "store_lua.h"

#define MANAGER_MT "cachy.CacheManager"
#define REPO_MT "cachy.Repository"

typedef struct recent_slot recent_slot;     /* lcachy_repo.c */

/* Per-store state the binding keeps beside the C store. */
typedef struct store_state {
    cachy_store *store;       /* NULL once the manager is gone */
    int resolved;             /* driver looked up (lazily: extend may come after new) */
    int lua_driver;           /* the store calls back into Lua */
    int msgpack;              /* the serializer is the built-in MessagePack codec */
    int slots_ref;            /* registry: { config, serializer, factory, instance } */
    cachy_lua_host host;
    cachy_buf buf;            /* encoded values and fetched bytes */
    cachy_buf key;            /* decorator keys */
    cachy_buf batch;          /* put_many: keys and values side by side */
    int64_t last_report_ms;   /* default on_error: one line a second per store */
    recent_slot *recent;      /* RECENT_SLOTS of them once a string is read */
} store_state;

typedef struct manager_ud manager_ud;

/*
 * The first field of both userdata says which of the two it is: methods
 * take either (a manager stands for its default repository), and reading
 * this tag costs a third of what comparing metatables did, on every call.
 * Lua code cannot write a userdata's bytes, so no other value carries
 * these addresses.
 */
extern const char lc_repo_kind, lc_manager_kind;

typedef struct repo_ud {
    const char *kind;         /* &lc_repo_kind */
    manager_ud *mgr;
    store_state *st;
    size_t ntags;             /* a tagged repository: its ordered tags */
    cachy_slice *tags;        /* (strings kept alive by the uservalue) */
} repo_ud;

struct manager_ud {
    const char *kind;         /* &lc_manager_kind */
    cachy_manager *m;
    int shared_ref;           /* registry: { drivers, serializers, on_error } */
    int64_t default_ttl_ms;
    repo_ud dflt;             /* the default store, for methods called on the manager */
    size_t n;
    store_state states[1];    /* n of them */
};

enum { TTL_BAD = -1, TTL_EXPIRED = 0, TTL_OK = 1 };

/* lcachy.c: the manager's shared table, the driver, the named repositories. */
void lc_lookup_shared(lua_State *L, manager_ud *mgr, const char *field);
void lc_prepare(lua_State *L, repo_ud *r);
void lc_push_repo(lua_State *L, int mgr_idx, const char *name);

/* lcachy_value.c: TTL forms, and values <-> bytes. */
int lc_read_ttl(lua_State *L, int idx, int64_t dflt_ms, int64_t *ms, const char **why);
int lc_check_ttl(lua_State *L, int idx, int64_t dflt_ms, int64_t *ms);
int lc_encode_value(lua_State *L, repo_ud *r, int idx, int argn, const char *root,
                    cachy_error *err);
int lc_decode_value(lua_State *L, repo_ud *r, cachy_slice key, const char *p, size_t n,
                    cachy_error *err);
void lc_corrupt(cachy_error *err, repo_ud *r, cachy_slice key, const char *why);

/* lcachy_scope.c: store operations in the repository's tag namespace. */
int lc_r_get(repo_ud *r, cachy_slice key, cachy_buf *out, cachy_error *err);
int lc_r_forget(repo_ud *r, cachy_slice key, cachy_error *err);
int lc_r_write(repo_ud *r, cachy_slice key, cachy_slice val, int64_t ttl_ms, int is_add,
               cachy_error *err);
int lc_r_incr(repo_ud *r, cachy_slice key, int64_t by, int64_t *result, cachy_error *err);
int lc_r_many(repo_ud *r, const cachy_slice *keys, size_t n, cachy_buf *outs, int *found,
              cachy_error *err);
int lc_r_put_many(repo_ud *r, const cachy_slice *keys, const cachy_slice *vals, size_t n,
                  int64_t ttl_ms, cachy_error *err);

/* lcachy_repo.c: argument checks, reads, and the repository methods. */
repo_ud *lc_to_repo(lua_State *L);
cachy_slice lc_check_key(lua_State *L, int idx);
int lc_fetch(lua_State *L, repo_ud *r, cachy_slice key, cachy_error *err);
void lc_free_recent(lua_State *L, store_state *st);
int lc_m_get(lua_State *L);
int lc_m_many(lua_State *L);
int lc_m_has(lua_State *L);
int lc_m_put(lua_State *L);
int lc_m_put_many(lua_State *L);
int lc_m_add(lua_State *L);
int lc_m_forever(lua_State *L);
int lc_m_pull(lua_State *L);
int lc_m_forget(lua_State *L);
int lc_m_increment(lua_State *L);
int lc_m_decrement(lua_State *L);
int lc_m_flush(lua_State *L);
int lc_m_stats(lua_State *L);
int lc_m_prune(lua_State *L);
int lc_m_tags(lua_State *L);

/* lcachy_decorate.c: remember and the decorator. */
int lc_m_remember(lua_State *L);
int lc_m_remember_forever(lua_State *L);
int lc_repo_call(lua_State *L);
int lc_manager_call(lua_State *L);

#endif

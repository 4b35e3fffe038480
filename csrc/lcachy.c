/*
 * lcachy.c: the Lua binding. The manager and repository userdata, every
 * repository method, TTL forms, the memoizing decorator (__call) and
 * `remember`. Values become bytes through codec.c; the stores below see
 * only bytes and milliseconds.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "store_lua.h"

#define MANAGER_MT "cachy.CacheManager"
#define REPO_MT "cachy.Repository"

#define RECENT_SLOTS 256        /* a power of two */
#define RECENT_VALUE_MAX 1024   /* longer strings are always made afresh */

/* A string value handed out lately (see push_string). */
typedef struct recent_slot {
    const char *ptr;          /* its bytes, NULL while the slot is empty */
    size_t len;
    int ref;                  /* registry: the string itself (LUA_NOREF: none yet) */
    const char *seen;         /* the key of this slot's last miss, */
    uint64_t seen_print;      /* and a fingerprint of its value */
} recent_slot;

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
static const char repo_kind = 'r', manager_kind = 'm';

typedef struct repo_ud {
    const char *kind;         /* &repo_kind */
    manager_ud *mgr;
    store_state *st;
    size_t ntags;             /* a tagged repository: its ordered tags */
    cachy_slice *tags;        /* (strings kept alive by the uservalue) */
} repo_ud;

struct manager_ud {
    const char *kind;         /* &manager_kind */
    cachy_manager *m;
    int shared_ref;           /* registry: { drivers, serializers, on_error } */
    int64_t default_ttl_ms;
    repo_ud dflt;             /* the default store, for methods called on the manager */
    size_t n;
    store_state states[1];    /* n of them */
};

/* ---- small helpers ----------------------------------------------------- */

static int push_failure(lua_State *L, const cachy_error *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err->msg);
    return 2;
}

/* Methods work on a repository and, for the default store, on the manager.
 * The length check turns away light userdata and smaller full ones. */
static repo_ud *to_repo(lua_State *L)
{
    const char *const *kind = lua_touserdata(L, 1);
    if (kind != NULL && cachy_rawlen(L, 1) >= sizeof(repo_ud)) {
        if (*kind == &repo_kind)
            return (repo_ud *)kind;
        if (*kind == &manager_kind)
            return &((manager_ud *)kind)->dflt;
    }
    luaL_argerror(L, 1, "cache repository expected (use a colon: cache:get(key))");
    return NULL;
}

/* The key at idx; a bad one blames argument `argn` (a key from a table
 * blames the table). */
static cachy_slice check_key_of(lua_State *L, int idx, int argn)
{
    cachy_slice k;
    int t = lua_type(L, idx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER) {
        lua_pushfstring(L, "key must be a non-empty string or a number, got %s",
                        luaL_typename(L, idx));
        luaL_argerror(L, argn, lua_tostring(L, -1));
    }
    k.ptr = lua_tolstring(L, idx, &k.len);
    if (k.len == 0)
        luaL_argerror(L, argn, "key must not be empty");
    return k;
}

static cachy_slice check_key(lua_State *L, int idx) { return check_key_of(L, idx, idx); }

static void lookup_shared(lua_State *L, manager_ud *mgr, const char *field)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, mgr->shared_ref);
    lua_getfield(L, -1, field);
    lua_remove(L, -2);
}

/* Resolves the driver on first use, and for a Lua store pushes its slots
 * table and points the store at this call's state. Call before any store
 * operation; what it pushes stays below the method's results. */
static void prepare(lua_State *L, repo_ud *r)
{
    store_state *st = r->st;
    if (st->store == NULL)
        luaL_error(L, "attempt to use a closed cache");
    if (!st->resolved) {
        const char *driver = cachy_store_driver(st->store);
        lookup_shared(L, r->mgr, "drivers");
        lua_getfield(L, -1, driver);
        if (!lua_isnil(L, -1)) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, st->slots_ref);
            lua_pushvalue(L, -2);
            lua_setfield(L, -2, "factory");
            lua_pop(L, 1);
            st->lua_driver = 1;
            cachy_store_set_driver(st->store, &cachy_lua_ops);
            cachy_store_set_host(st->store, &st->host);
        } else {
            const cachy_store_ops *ops = cachy_driver_find(driver);
            if (ops == NULL)
                luaL_error(L, "cache driver '%s' is not supported (store '%s')", driver,
                           cachy_store_name(st->store));
            cachy_store_set_driver(st->store, ops);
        }
        lua_pop(L, 2);
        st->resolved = 1;
    }
    if (st->lua_driver) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, st->slots_ref);
        st->host.L = L;
        st->host.slots = lua_gettop(L);
    }
}

/* ---- TTL forms --------------------------------------------------------- */

enum { TTL_BAD = -1, TTL_EXPIRED = 0, TTL_OK = 1 };

/* Minutes (fractional allowed) or a date table read like os.time(t).
 * TTL_OK with *ms (0 = forever), TTL_EXPIRED, or TTL_BAD with *why. */
static int read_ttl(lua_State *L, int idx, int64_t dflt_ms, int64_t *ms, const char **why)
{
    int t = lua_type(L, idx);
    if (t == LUA_TNONE || t == LUA_TNIL) {
        *ms = dflt_ms;
        return dflt_ms < 0 ? TTL_EXPIRED : TTL_OK;
    }
    if (t == LUA_TNUMBER) {
        double minutes = (double)lua_tonumber(L, idx), v;
        if (minutes != minutes) {
            *why = "ttl must not be NaN";
            return TTL_BAD;
        }
        if (minutes <= 0)
            return TTL_EXPIRED;
        v = ceil(minutes * 60000.0);
        *ms = v >= 9.2e18 ? 0 : (int64_t)v;    /* too long to represent: forever */
        return TTL_OK;
    }
    if (t == LUA_TTABLE) {
        static const char *const fields[] = { "year", "month", "day", "hour", "min", "sec" };
        int vals[6] = { 0, 0, 0, 12, 0, 0 };  /* os.time's defaults */
        struct tm tm;
        time_t when;
        int i, isdst;
        for (i = 0; i < 6; i++) {
            lua_getfield(L, idx, fields[i]);
            if (lua_type(L, -1) == LUA_TNUMBER) {
                double d = (double)lua_tonumber(L, -1);
                if (d != floor(d) || d < -1e9 || d > 1e9) {
                    lua_pop(L, 1);
                    *why = "date table fields must be integers";
                    return TTL_BAD;
                }
                vals[i] = (int)d;
            } else if (i < 3 || !lua_isnil(L, -1)) {
                lua_pop(L, 1);
                *why = "date table needs year, month and day";
                return TTL_BAD;
            }
            lua_pop(L, 1);
        }
        lua_getfield(L, idx, "isdst");
        isdst = lua_isnil(L, -1) ? -1 : lua_toboolean(L, -1);
        lua_pop(L, 1);
        memset(&tm, 0, sizeof tm);
        tm.tm_year = vals[0] - 1900;
        tm.tm_mon = vals[1] - 1;
        tm.tm_mday = vals[2];
        tm.tm_hour = vals[3];
        tm.tm_min = vals[4];
        tm.tm_sec = vals[5];
        tm.tm_isdst = isdst;
        when = mktime(&tm);
        if (when == (time_t)-1) {
            *why = "date table is not a representable time";
            return TTL_BAD;
        }
        *ms = (int64_t)when * 1000 - cachy_now_ms();
        return *ms > 0 ? TTL_OK : TTL_EXPIRED;
    }
    *why = NULL;
    return TTL_BAD;
}

static int check_ttl(lua_State *L, int idx, int64_t dflt_ms, int64_t *ms)
{
    const char *why = NULL;
    int rc = read_ttl(L, idx, dflt_ms, ms, &why);
    if (rc == TTL_BAD) {
        if (why == NULL)
            why = lua_pushfstring(L, "ttl must be a number of minutes or a date table, got %s",
                                  luaL_typename(L, idx));
        luaL_argerror(L, idx, why);
    }
    return rc;
}

/* ---- store operations, in the repository's tag namespace --------------- */

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

static int r_get(repo_ud *r, cachy_slice key, cachy_buf *out, cachy_error *err)
{
    cachy_buf buf = { 0 };
    char ns[33];
    int rc = scope(r, &key, &buf, ns, err);
    if (rc == 0)
        rc = cachy_get(r->st->store, key, out, err);
    cachy_buf_free(&buf);
    return rc;
}

static int r_forget(repo_ud *r, cachy_slice key, cachy_error *err)
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
static int r_write(repo_ud *r, cachy_slice key, cachy_slice val, int64_t ttl_ms, int is_add,
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

static int r_incr(repo_ud *r, cachy_slice key, int64_t by, int64_t *result, cachy_error *err)
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
static int r_many(repo_ud *r, const cachy_slice *keys, size_t n, cachy_buf *outs, int *found,
                  cachy_error *err)
{
    size_t i;
    if (r->ntags == 0)
        return cachy_many(r->st->store, keys, n, outs, found, err);
    for (i = 0; i < n; i++) {
        int rc = r_get(r, keys[i], &outs[i], err);
        if (rc < 0)
            return -1;
        found[i] = rc;
    }
    return 0;
}

static int r_put_many(repo_ud *r, const cachy_slice *keys, const cachy_slice *vals, size_t n,
                      int64_t ttl_ms, cachy_error *err)
{
    size_t i;
    if (r->ntags == 0)
        return cachy_put_many(r->st->store, keys, vals, n, ttl_ms, err);
    for (i = 0; i < n; i++)
        if (r_write(r, keys[i], vals[i], ttl_ms, 0, err) < 0)
            return -1;
    return 0;
}

/* ---- values <-> bytes -------------------------------------------------- */

/* Pushes the serializer table named by the store's slots, or raises. */
static void push_serializer(lua_State *L, repo_ud *r)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->st->slots_ref);
    lua_getfield(L, -1, "serializer");
    lookup_shared(L, r->mgr, "serializers");
    lua_pushvalue(L, -2);
    lua_gettable(L, -2);
    if (!lua_istable(L, -1))
        luaL_error(L, "serializer '%s' of store '%s' is not registered", lua_tostring(L, -3),
                   cachy_store_name(r->st->store));
    lua_replace(L, -4);
    lua_pop(L, 2);
}

/* Encodes the value at idx into st->buf. Unstorable values raise (misuse),
 * blaming argument `argn` and naming the path from `root`; a user
 * serializer's failure returns -1 with err set. */
static int encode_value(lua_State *L, repo_ud *r, int idx, int argn, const char *root,
                        cachy_error *err)
{
    store_state *st = r->st;
    char why[256];
    idx = lua_absindex(L, idx);
    if (lua_isnil(L, idx))
        luaL_argerror(L, argn, "nil cannot be stored; use forget to remove a key");
    /* MessagePack is also the check of what can be stored, whatever the
     * serializer, so every serializer refuses the same values the same way. */
    if (cachy_codec_encode(L, idx, root, &st->buf, why, sizeof why) != 0)
        luaL_argerror(L, argn, why);
    if (st->msgpack || cachy_isinteger(L, idx))
        return 0;
    push_serializer(L, r);
    lua_getfield(L, -1, "serialize");
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TSTRING) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, st->slots_ref);
        lua_getfield(L, -1, "serializer");
        cachy_error_set(err, st->store, CACHY_ECORRUPT, "serializer '%s' failed: %s",
                        lua_tostring(L, -1),
                        lua_type(L, -3) == LUA_TSTRING ? lua_tostring(L, -3) : "it did not return a string");
        lua_pop(L, 4);
        return -1;
    }
    {
        size_t n;
        const char *p = lua_tolstring(L, -1, &n);
        if (cachy_buf_set(&st->buf, p, n) != 0)
            luaL_error(L, "not enough memory");
    }
    lua_pop(L, 2);
    return 0;
}

static void corrupt(cachy_error *err, repo_ud *r, cachy_slice key, const char *why)
{
    char q[96];
    cachy_quote_key(key, q, sizeof q);
    cachy_error_set(err, r->st->store, CACHY_ECORRUPT, "value of key '%s' cannot be decoded: %s", q,
                    why);
}

/* Pushes the value held in bytes; -1 with err (nothing pushed) when they
 * are not a value of this store's serializer. */
static int decode_value(lua_State *L, repo_ud *r, cachy_slice key, const char *p, size_t n,
                        cachy_error *err)
{
    char why[256];
    int64_t iv;
    cachy_slice bytes;
    bytes.ptr = p;
    bytes.len = n;
    if (r->st->msgpack) {
        if (cachy_codec_decode(L, p, n, why, sizeof why) == 0)
            return 0;
        corrupt(err, r, key, why);
        return -1;
    }
    if (cachy_parse_int(bytes, &iv)) {
        cachy_pushinteger(L, iv);
        return 0;
    }
    push_serializer(L, r);
    lua_getfield(L, -1, "unserialize");
    lua_pushlstring(L, p, n);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        corrupt(err, r, key, lua_tostring(L, -1) ? lua_tostring(L, -1) : "unserialize failed");
        lua_pop(L, 2);
        return -1;
    }
    lua_remove(L, -2);
    return 0;
}

/* ---- repository methods ------------------------------------------------ */

/* On a miss: the default, calling it when it is a function. `given`: the
 * caller passed one (prepare may have pushed values above the arguments). */
static int push_default(lua_State *L, int idx, int given)
{
    if (!given) {
        lua_pushnil(L);
        return 1;
    }
    if (lua_type(L, idx) == LUA_TFUNCTION) {
        int top = lua_gettop(L);
        lua_pushvalue(L, idx);
        lua_call(L, 0, LUA_MULTRET);
        return lua_gettop(L) - top;
    }
    lua_pushvalue(L, idx);
    return 1;
}

/* Tells values apart well enough to decide what to keep (see push_string). */
static uint64_t fingerprint(cachy_slice s)
{
    uint64_t head = 0, tail = 0;
    if (s.len >= 8) {
        memcpy(&head, s.ptr, 8);
        memcpy(&tail, s.ptr + s.len - 8, 8);
    } else if (s.len > 0) {
        memcpy(&head, s.ptr, s.len);
    }
    return (head * 0x9e3779b97f4a7c15u ^ tail) * 0xff51afd7ed558ccdu ^ s.len;
}

/*
 * Pushes the string value s read for key. Lua strings are values, so a
 * string with the same bytes is as good as a new copy: a slot per key (by
 * the address of the key's string) keeps the string handed out for it
 * lately, and a read that finds the same bytes there pushes that string
 * instead of allocating a copy that soon becomes garbage (a third of a
 * memory get-hit). Only the bytes decide, so a stale slot is merely a miss.
 * A string is kept only when its key read the same bytes (by fingerprint)
 * at the slot's last miss too: reads that do not repeat and values that
 * keep changing cost just the comparison. A store holds on to at most
 * RECENT_SLOTS strings of at most RECENT_VALUE_MAX bytes.
 */
static void push_string(lua_State *L, store_state *st, cachy_slice key, cachy_slice s)
{
    recent_slot *e;
    uint64_t print;
    uintptr_t a = (uintptr_t)key.ptr;
    size_t i;
    if (s.len > RECENT_VALUE_MAX) {
        lua_pushlstring(L, s.ptr, s.len);
        return;
    }
    if (st->recent == NULL) {
        st->recent = calloc(RECENT_SLOTS, sizeof *st->recent);
        if (st->recent == NULL) {
            lua_pushlstring(L, s.ptr, s.len);
            return;
        }
        for (i = 0; i < RECENT_SLOTS; i++)
            st->recent[i].ref = LUA_NOREF;
    }
    e = &st->recent[(a >> 3 ^ a >> 11) & (RECENT_SLOTS - 1)];
    if (e->ptr != NULL && e->len == s.len && memcmp(e->ptr, s.ptr, s.len) == 0) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref);
        return;
    }
    lua_pushlstring(L, s.ptr, s.len);
    print = fingerprint(s);
    if (e->seen != key.ptr || e->seen_print != print) {
        e->seen = key.ptr;
        e->seen_print = print;
        return;
    }
    lua_pushvalue(L, -1);
    if (e->ref == LUA_NOREF)
        e->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    else
        lua_rawseti(L, LUA_REGISTRYINDEX, e->ref);
    e->ptr = lua_tolstring(L, -1, &e->len);
}

static void free_recent(lua_State *L, store_state *st)
{
    size_t i;
    if (st->recent == NULL)
        return;
    for (i = 0; i < RECENT_SLOTS; i++)
        luaL_unref(L, LUA_REGISTRYINDEX, st->recent[i].ref);
    free(st->recent);
    st->recent = NULL;
}

/* Pushes the value held in bytes read for key; 0, or -1 with err (nothing pushed). */
static int push_read(lua_State *L, repo_ud *r, cachy_slice key, const char *p, size_t n,
                     cachy_error *err)
{
    cachy_slice s;
    if (r->st->msgpack && r->ntags == 0 && cachy_codec_lone_string(p, n, &s)) {
        push_string(L, r->st, key, s);
        return 0;
    }
    return decode_value(L, r, key, p, n, err);
}

/* Fetches key; on a hit pushes the value. 1 hit, 0 miss, -1 failure (err). */
static int fetch(lua_State *L, repo_ud *r, cachy_slice key, cachy_error *err)
{
    int rc = r_get(r, key, &r->st->buf, err);
    if (rc != 1)
        return rc;
    return push_read(L, r, key, r->st->buf.data, r->st->buf.len, err) == 0 ? 1 : -1;
}

static int m_get(lua_State *L)
{
    repo_ud *r = to_repo(L);
    cachy_slice key = check_key(L, 2);
    cachy_error err;
    int given = lua_gettop(L) >= 3, rc;
    prepare(L, r);
    rc = fetch(L, r, key, &err);
    if (rc < 0)
        return push_failure(L, &err);
    if (rc == 1)
        return 1;
    return push_default(L, 3, given);
}

static int m_has(lua_State *L)
{
    repo_ud *r = to_repo(L);
    cachy_slice key = check_key(L, 2);
    cachy_error err;
    int rc;
    prepare(L, r);
    rc = r_get(r, key, &r->st->buf, &err);
    if (rc < 0)
        return push_failure(L, &err);
    lua_pushboolean(L, rc == 1);
    return 1;
}

static int m_pull(lua_State *L)
{
    repo_ud *r = to_repo(L);
    cachy_slice key = check_key(L, 2);
    cachy_error err;
    int given = lua_gettop(L) >= 3, rc, top;
    prepare(L, r);
    rc = fetch(L, r, key, &err);
    if (rc < 0)
        return push_failure(L, &err);
    if (rc == 0)
        return push_default(L, 3, given);
    top = lua_gettop(L);
    prepare(L, r);      /* decoding may have run Lua code (a serializer) */
    if (r_forget(r, key, &err) < 0)
        return push_failure(L, &err);
    lua_settop(L, top);
    return 1;
}

/* put/add with a ttl already read; for TTL_EXPIRED the key is removed. */
static int store_value(lua_State *L, repo_ud *r, cachy_slice key, int vidx, int ttl_rc,
                       int64_t ttl_ms, int is_add)
{
    cachy_error err;
    int rc;
    if (lua_isnil(L, vidx))
        luaL_argerror(L, vidx, "nil cannot be stored; use forget to remove a key");
    if (ttl_rc == TTL_EXPIRED) {
        prepare(L, r);
        if (r_forget(r, key, &err) < 0)
            return push_failure(L, &err);
        lua_pushboolean(L, 0);
        return 1;
    }
    if (encode_value(L, r, vidx, vidx, "value", &err) != 0)
        return push_failure(L, &err);
    prepare(L, r);      /* after the serializer, which may run Lua code */
    {
        cachy_slice val;
        val.ptr = r->st->buf.data;
        val.len = r->st->buf.len;
        rc = r_write(r, key, val, ttl_ms, is_add, &err);
    }
    if (rc < 0)
        return push_failure(L, &err);
    lua_pushboolean(L, is_add ? rc == 1 : 1);
    return 1;
}

static int put_or_add(lua_State *L, int is_add)
{
    repo_ud *r = to_repo(L);
    cachy_slice key = check_key(L, 2);
    int64_t ms = 0;
    int ttl_rc;
    luaL_checkany(L, 3);
    ttl_rc = check_ttl(L, 4, r->mgr->default_ttl_ms, &ms);
    return store_value(L, r, key, 3, ttl_rc, ms, is_add);
}

static int m_put(lua_State *L) { return put_or_add(L, 0); }
static int m_add(lua_State *L) { return put_or_add(L, 1); }

static int m_forever(lua_State *L)
{
    repo_ud *r = to_repo(L);
    cachy_slice key = check_key(L, 2);
    luaL_checkany(L, 3);
    return store_value(L, r, key, 3, TTL_OK, 0, 0);
}

static int m_forget(lua_State *L)
{
    repo_ud *r = to_repo(L);
    cachy_slice key = check_key(L, 2);
    cachy_error err;
    int rc;
    prepare(L, r);
    rc = r_forget(r, key, &err);
    if (rc < 0)
        return push_failure(L, &err);
    lua_pushboolean(L, rc == 1);
    return 1;
}

static int step(lua_State *L, int sign)
{
    repo_ud *r = to_repo(L);
    cachy_slice key = check_key(L, 2);
    cachy_error err;
    int64_t by = 1, result;
    if (!lua_isnoneornil(L, 3)) {
        if (!cachy_isinteger(L, 3)) {
#if CACHY_HAS_INTEGERS
            int isint = 0;
            lua_Integer v = lua_type(L, 3) == LUA_TNUMBER ? lua_tointegerx(L, 3, &isint) : 0;
            if (!isint)
                luaL_argerror(L, 3, "n must be an integer");
            by = (int64_t)v;
#else
            luaL_argerror(L, 3, "n must be an integer");
#endif
        } else {
            by = cachy_tointeger(L, 3);
        }
    }
    if (sign < 0) {
        if (by == INT64_MIN) {
            char q[96];
            cachy_quote_key(key, q, sizeof q);
            cachy_error_set(&err, NULL, CACHY_ERANGE, "decrement of key '%s' overflows 64 bits", q);
            return push_failure(L, &err);
        }
        by = -by;
    }
    prepare(L, r);
    if (r_incr(r, key, by, &result, &err) < 0)
        return push_failure(L, &err);
    cachy_pushinteger(L, result);
    return 1;
}

static int m_increment(lua_State *L) { return step(L, 1); }
static int m_decrement(lua_State *L) { return step(L, -1); }

static int m_flush(lua_State *L)
{
    repo_ud *r = to_repo(L);
    cachy_error err;
    prepare(L, r);
    if ((r->ntags ? cachy_tags_flush(r->st->store, r->tags, r->ntags, &err)
                  : cachy_flush(r->st->store, &err)) < 0)
        return push_failure(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* Keys of an array, as strings, kept alive in a table at the returned index. */
static int collect_keys(lua_State *L, int tidx, size_t *count)
{
    size_t i, n = cachy_rawlen(L, tidx);
    lua_createtable(L, (int)n, 0);
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, tidx, (int)i);
        check_key_of(L, lua_gettop(L), tidx);
        lua_rawseti(L, -2, (int)i);
    }
    *count = n;
    return lua_gettop(L);
}

static int m_many(lua_State *L)
{
    repo_ud *r = to_repo(L);
    cachy_error err;
    size_t n, i;
    int kidx, rc = 0;
    cachy_slice *keys;
    cachy_buf *outs;
    int *found;
    luaL_checktype(L, 2, LUA_TTABLE);
    kidx = collect_keys(L, 2, &n);
    prepare(L, r);
    lua_newtable(L);
    if (n == 0)
        return 1;
    /* one block, owned by a userdata so that a raise cannot leak it */
    keys = lua_newuserdata(L, n * (sizeof *keys + sizeof *outs + sizeof *found));
    outs = (cachy_buf *)(keys + n);
    found = (int *)(outs + n);
    memset(outs, 0, n * sizeof *outs);
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, kidx, (int)i + 1);
        keys[i].ptr = lua_tolstring(L, -1, &keys[i].len);
        lua_pop(L, 1);      /* still referenced by the keys table */
    }
    if (r_many(r, keys, n, outs, found, &err) < 0) {
        rc = -1;
    } else {
        for (i = 0; i < n && rc == 0; i++) {
            if (!found[i])
                continue;
            lua_rawgeti(L, 2, (int)i + 1);  /* the key as the caller gave it */
            if (push_read(L, r, keys[i], outs[i].data, outs[i].len, &err) != 0) {
                lua_pop(L, 1);
                rc = -1;
                break;
            }
            lua_rawset(L, -4);
        }
    }
    for (i = 0; i < n; i++)
        cachy_buf_free(&outs[i]);
    if (rc < 0)
        return push_failure(L, &err);
    lua_pop(L, 1);
    return 1;
}

/* "value.name", "value[3]" or "value[\"a b\"]": where put_many's value for
 * the key at kidx sits, for error messages. */
static void value_root(lua_State *L, int kidx, cachy_slice k, char *out, size_t outlen)
{
    char q[96];
    size_t i;
    int ident = k.len > 0 && !(k.ptr[0] >= '0' && k.ptr[0] <= '9');
    for (i = 0; i < k.len && ident; i++) {
        char c = k.ptr[i];
        ident = c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    }
    cachy_quote_key(k, q, sizeof q);
    if (lua_type(L, kidx) == LUA_TNUMBER)
        snprintf(out, outlen, "value[%s]", q);
    else if (ident)
        snprintf(out, outlen, "value.%s", q);
    else
        snprintf(out, outlen, "value[\"%s\"]", q);
}

static int m_put_many(lua_State *L)
{
    repo_ud *r = to_repo(L);
    store_state *st = r->st;
    cachy_error err;
    int64_t ms = 0;
    int ttl_rc;
    size_t n = 0, i;
    cachy_slice *keys, *vals;
    size_t *offs;
    const char *batch;
    luaL_checktype(L, 2, LUA_TTABLE);
    ttl_rc = check_ttl(L, 3, r->mgr->default_ttl_ms, &ms);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        n++;
        lua_pop(L, 1);
    }
    if (n == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (ttl_rc == TTL_EXPIRED) {
        lua_settop(L, 3);
        lua_pushnil(L);
        while (lua_next(L, 2)) {                /* key 4, value 5 */
            cachy_slice k;
            lua_pop(L, 1);
            lua_pushvalue(L, 4);
            k = check_key_of(L, 5, 2);
            prepare(L, r);
            if (r_forget(r, k, &err) < 0)
                return push_failure(L, &err);
            lua_settop(L, 4);
        }
        lua_pushboolean(L, 0);
        return 1;
    }
    keys = lua_newuserdata(L, n * (2 * sizeof *keys + 4 * sizeof *offs));
    vals = keys + n;
    offs = (size_t *)(vals + n);
    /* Keys and encoded values go side by side into one buffer; the slices
     * are made once it stops moving. */
    st->batch.len = 0;
    i = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        cachy_slice k;
        lua_pushvalue(L, -2);
        k = check_key_of(L, lua_gettop(L), 2);
        offs[4 * i] = st->batch.len;
        offs[4 * i + 1] = k.len;
        if (cachy_buf_append(&st->batch, k.ptr, k.len) != 0)
            return luaL_error(L, "not enough memory");
        lua_pop(L, 1);
        {
            char root[128];
            value_root(L, -2, k, root, sizeof root);
            if (encode_value(L, r, -1, 2, root, &err) != 0)
                return push_failure(L, &err);
        }
        offs[4 * i + 2] = st->batch.len;
        offs[4 * i + 3] = st->buf.len;
        if (cachy_buf_append(&st->batch, st->buf.data, st->buf.len) != 0)
            return luaL_error(L, "not enough memory");
        lua_pop(L, 1);
        i++;
    }
    /* A Lua store may use the cache again, reusing st->batch: the slices
     * point into an immutable copy on the stack instead. */
    lua_pushlstring(L, st->batch.data, st->batch.len);
    batch = lua_tostring(L, -1);
    for (i = 0; i < n; i++) {
        keys[i].ptr = batch + offs[4 * i];
        keys[i].len = offs[4 * i + 1];
        vals[i].ptr = batch + offs[4 * i + 2];
        vals[i].len = offs[4 * i + 3];
    }
    prepare(L, r);
    if (r_put_many(r, keys, vals, n, ms, &err) < 0)
        return push_failure(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static int m_stats(lua_State *L)
{
    repo_ud *r = to_repo(L);
    cachy_error err;
    cachy_stats s;
    prepare(L, r);
    if (cachy_stats_of(r->st->store, &s, &err) < 0)
        return push_failure(L, &err);
    lua_createtable(L, 0, 5);
#define STAT(f)                                 \
    if (s.f >= 0) {                             \
        cachy_pushinteger(L, s.f);              \
        lua_setfield(L, -2, #f);                \
    }
    STAT(items) STAT(bytes) STAT(hits) STAT(misses) STAT(evictions)
#undef STAT
    return 1;
}

static int m_prune(lua_State *L)
{
    repo_ud *r = to_repo(L);
    cachy_error err;
    prepare(L, r);
    if (cachy_prune(r->st->store, &err) < 0)
        return push_failure(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* tags("a", "b") or tags({ "a", "b" }): a repository whose items live in
 * those tags' namespace (tags.c). */
static int m_tags(lua_State *L)
{
    repo_ud *r = to_repo(L), *t;
    int nargs = lua_gettop(L), from_list = nargs == 2 && lua_istable(L, 2);
    int i, count = from_list ? (int)cachy_rawlen(L, 2) : nargs - 1, names;
    lua_createtable(L, count, 0);
    names = lua_gettop(L);
    for (i = 1; i <= count; i++) {
        int idx;
        if (from_list) {
            lua_rawgeti(L, 2, i);
            idx = lua_gettop(L);
        } else {
            idx = i + 1;
            lua_pushvalue(L, idx);
        }
        {
            size_t len = 0;
            int tt = lua_type(L, -1);
            if (tt == LUA_TSTRING || tt == LUA_TNUMBER)
                lua_tolstring(L, -1, &len);
            if (len == 0)
                luaL_argerror(L, from_list ? 2 : idx, "tag names must be non-empty strings");
        }
        lua_rawseti(L, names, i);
        if (from_list)
            lua_settop(L, names);
    }
    if (count == 0)
        luaL_argerror(L, 2, "at least one tag is needed");
    t = cachy_newuserdata(L, sizeof *t + (size_t)count * sizeof(cachy_slice));
    t->kind = &repo_kind;
    t->mgr = r->mgr;
    t->st = r->st;
    t->ntags = (size_t)count;
    t->tags = (cachy_slice *)(t + 1);
    for (i = 0; i < count; i++) {
        lua_rawgeti(L, names, i + 1);
        t->tags[i].ptr = lua_tolstring(L, -1, &t->tags[i].len);
        lua_pop(L, 1);          /* kept alive by the names table, in the uservalue */
    }
    luaL_getmetatable(L, REPO_MT);
    lua_setmetatable(L, -2);
    lua_createtable(L, 0, 2);
    if (&r->mgr->dflt == r) {
        lua_pushvalue(L, 1);
    } else {
        cachy_getuservalue(L, 1);
        lua_getfield(L, -1, "manager");
        lua_remove(L, -2);
    }
    lua_setfield(L, -2, "manager");
    lua_pushvalue(L, names);
    lua_setfield(L, -2, "tags");
    cachy_setuservalue(L, -2);
    return 1;
}

/* ---- failing open: remember and the decorator -------------------------- */

/* The config's on_error(err, store_name), or one stderr line a second. */
static void report(lua_State *L, repo_ud *r, const cachy_error *err)
{
    store_state *st = r->st;
    lookup_shared(L, r->mgr, "on_error");
    if (!lua_isnil(L, -1)) {
        lua_pushstring(L, err->msg);
        lua_pushstring(L, cachy_store_name(st->store));
        lua_call(L, 2, 0);
        return;
    }
    lua_pop(L, 1);
    {
        int64_t now = cachy_monotonic_ms();
        if (st->last_report_ms == 0 || now - st->last_report_ms >= 1000) {
            st->last_report_ms = now;
            fprintf(stderr, "cachy: %s\n", err->msg);
        }
    }
}

static int remember_common(lua_State *L, repo_ud *r, cachy_slice key, int ttl_rc, int64_t ms,
                           int fidx)
{
    cachy_error err;
    int rc, top;
    prepare(L, r);
    rc = fetch(L, r, key, &err);
    if (rc == 1)
        return 1;
    top = lua_gettop(L);
    lua_pushvalue(L, fidx);
    lua_call(L, 0, 2);
    if (rc < 0) {               /* fail open: the value, and why it was not cached */
        lua_pop(L, 1);
        lua_pushstring(L, err.msg);
        return 2;
    }
    if (lua_isnil(L, top + 1))  /* nothing to store; pass `nil, err` through */
        return lua_isnil(L, top + 2) ? 1 : 2;
    lua_pop(L, 1);
    if (ttl_rc == TTL_OK) {
        cachy_slice val;
        if (encode_value(L, r, top + 1, top + 1, "value", &err) == 0) {
            prepare(L, r);      /* fn and the serializer may have used the store */
            val.ptr = r->st->buf.data;
            val.len = r->st->buf.len;
            rc = r_write(r, key, val, ms, 0, &err);
            lua_settop(L, top + 1);
            if (rc == 0)
                return 1;
        }
        lua_pushstring(L, err.msg);
        return 2;
    }
    return 1;
}

static int m_remember(lua_State *L)
{
    repo_ud *r = to_repo(L);
    cachy_slice key = check_key(L, 2);
    int64_t ms = 0;
    int ttl_rc = check_ttl(L, 3, r->mgr->default_ttl_ms, &ms);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    return remember_common(L, r, key, ttl_rc, ms, 4);
}

static int m_remember_forever(lua_State *L)
{
    repo_ud *r = to_repo(L);
    cachy_slice key = check_key(L, 2);
    int fidx = lua_isnoneornil(L, 4) ? 3 : 4;   /* (key, fn) or (key, ttl, fn): ttl ignored */
    luaL_checktype(L, fidx, LUA_TFUNCTION);
    return remember_common(L, r, key, TTL_OK, 0, fidx);
}

/* The entry's key, "<prefix>:<hex>", in st->key; for a Lua store, whose
 * methods may reenter the decorator and reuse st->key, a copy on the stack. */
static cachy_slice entry_key(lua_State *L, store_state *st, const char *prefix, size_t plen,
                             const char *hex)
{
    cachy_slice key;
    if (cachy_buf_set(&st->key, prefix, plen) != 0 || cachy_buf_append(&st->key, ":", 1) != 0 ||
        cachy_buf_append(&st->key, hex, 32) != 0)
        luaL_error(L, "not enough memory");
    key.ptr = st->key.data;
    key.len = st->key.len;
    if (st->lua_driver) {
        lua_pushlstring(L, key.ptr, key.len);
        key.ptr = lua_tostring(L, -1);
    }
    return key;
}

/* Upvalues: 1 repository, 2 function, 3 key prefix, 4 ttl (ms, or a date table). */
static int decorated(lua_State *L)
{
    repo_ud *r = lua_touserdata(L, lua_upvalueindex(1));
    store_state *st = r->st;
    int nargs = lua_gettop(L), top, nres, rc, ttl_rc = TTL_OK;
    char hex[33], why[256];
    size_t plen;
    const char *prefix = lua_tolstring(L, lua_upvalueindex(3), &plen);
    cachy_slice key;
    cachy_error err;
    int64_t ms = 0;

    if (cachy_codec_args_hash(L, 1, nargs, hex, why, sizeof why) != 0) {
        /* "argument #2 is a function" -> "... with argument #2: it is a function" */
        const char *is = strstr(why, " is ");
        if (is == NULL)
            return luaL_error(L, "cannot cache a call: %s", why);
        lua_pushlstring(L, why, (size_t)(is - why));
        return luaL_error(L, "cannot cache a call with %s: it%s", lua_tostring(L, -1), is);
    }
    prepare(L, r);
    key = entry_key(L, st, prefix, plen, hex);
    top = lua_gettop(L);
    rc = r_get(r, key, &st->buf, &err);
    if (rc == 1) {
        nres = cachy_codec_decode_tuple(L, st->buf.data, st->buf.len, why, sizeof why);
        if (nres >= 0)
            return nres;
        corrupt(&err, r, key, why);
        rc = -1;
    }
    if (rc < 0)
        report(L, r, &err);

    luaL_checkstack(L, nargs + 1, "too many arguments");
    lua_pushvalue(L, lua_upvalueindex(2));
    for (int i = 1; i <= nargs; i++)
        lua_pushvalue(L, i);
    lua_call(L, nargs, LUA_MULTRET);
    nres = lua_gettop(L) - top;
    if (rc < 0)
        return nres;
    /* Lua's failure convention: nil, err is returned but not cached. */
    if (nres >= 2 && lua_isnil(L, top + 1) && !lua_isnil(L, top + 2))
        return nres;

    if (lua_type(L, lua_upvalueindex(4)) == LUA_TTABLE)
        ttl_rc = read_ttl(L, lua_upvalueindex(4), 0, &ms, &(const char *){ NULL });
    else
        ms = (int64_t)lua_tonumber(L, lua_upvalueindex(4));
    if (ttl_rc != TTL_OK || ms < 0)
        return nres;
    if (cachy_codec_encode_tuple(L, top + 1, nres, &st->buf, why, sizeof why) != 0)
        return luaL_error(L, "cannot cache the results of '%s': %s", prefix, why);
    {
        cachy_slice val;
        val.ptr = st->buf.data;
        val.len = st->buf.len;
        /* fn may have used the store: nested calls reuse the key buffer and
         * the Lua store's view of the stack */
        prepare(L, r);
        key = entry_key(L, st, prefix, plen, hex);
        rc = r_write(r, key, val, ms, 0, &err);
        lua_settop(L, top + nres);
        if (rc < 0)
            report(L, r, &err);
    }
    return nres;
}

/* The identity of a function: "source:linedefined" (a callable's __call). */
static void push_identity(lua_State *L, int fidx)
{
    lua_Debug ar;
    lua_pushvalue(L, fidx);
    if (lua_type(L, -1) != LUA_TFUNCTION) {
        luaL_getmetafield(L, -1, "__call");
        lua_remove(L, -2);
    }
    lua_getinfo(L, ">S", &ar);
    if (ar.source[0] == '@' || ar.source[0] == '=') {
        lua_pushfstring(L, "%s:%d", ar.source + 1, ar.linedefined);
    } else {        /* a chunk loaded from a string: name it by its text's hash */
        char hex[33];
        cachy_hash128_hex(ar.source, strlen(ar.source), hex);
        lua_pushfstring(L, "chunk-%s:%d", hex, ar.linedefined);
    }
}

static int is_callable(lua_State *L, int idx)
{
    int ok;
    if (lua_type(L, idx) == LUA_TFUNCTION)
        return 1;
    if (!luaL_getmetafield(L, idx, "__call"))
        return 0;
    ok = lua_type(L, -1) == LUA_TFUNCTION;
    lua_pop(L, 1);
    return ok;
}

static void push_repo(lua_State *L, int mgr_idx, const char *name);

/* cache(fn [, opts]), cache("store", fn [, opts]), repo(fn [, opts]) */
static int decorate(lua_State *L, int is_manager)
{
    int fidx = 2, oidx, ridx;
    const char *store_name = NULL;
    repo_ud *r;
    int64_t ms;
    if (is_manager && lua_type(L, 2) == LUA_TSTRING) {
        store_name = lua_tostring(L, 2);
        fidx = 3;
    }
    if (!is_callable(L, fidx))
        luaL_argerror(L, fidx, lua_pushfstring(L, "function expected, got %s", luaL_typename(L, fidx)));
    oidx = fidx + 1;
    if (!lua_isnoneornil(L, oidx)) {
        luaL_checktype(L, oidx, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, oidx)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            if (strcmp(k, "key") != 0 && strcmp(k, "minutes") != 0 && strcmp(k, "store") != 0)
                luaL_error(L, "cache: unknown option '%s'", lua_type(L, -2) == LUA_TSTRING ? k : luaL_typename(L, -2));
            lua_pop(L, 1);
        }
        lua_getfield(L, oidx, "store");
        if (!lua_isnil(L, -1)) {
            if (!is_manager || lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "cache: option 'store' must be a store name, on the manager");
            store_name = lua_tostring(L, -1);
        }
        lua_pop(L, 1);
    }
    if (is_manager) {
        push_repo(L, 1, store_name);
    } else {
        lua_pushvalue(L, 1);
    }
    ridx = lua_gettop(L);
    r = lua_touserdata(L, ridx);

    /* key prefix */
    if (!lua_isnoneornil(L, oidx))
        lua_getfield(L, oidx, "key");
    else
        lua_pushnil(L);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        push_identity(L, fidx);
    } else if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
        luaL_error(L, "cache: option 'key' must be a string");
    } else {
        lua_tostring(L, -1);
    }
    /* ttl */
    if (!lua_isnoneornil(L, oidx))
        lua_getfield(L, oidx, "minutes");
    else
        lua_pushnil(L);
    if (lua_istable(L, -1)) {
        const char *why = NULL;
        int64_t dummy;
        if (read_ttl(L, lua_gettop(L), 0, &dummy, &why) == TTL_BAD)
            luaL_error(L, "cache: option 'minutes': %s", why);
    } else {
        const char *why = NULL;
        int rc = read_ttl(L, lua_gettop(L), r->mgr->default_ttl_ms, &ms, &why);
        if (rc == TTL_BAD)
            luaL_error(L, "cache: option 'minutes' must be a number of minutes or a date table, got %s",
                       luaL_typename(L, -1));
        lua_pop(L, 1);
        lua_pushnumber(L, rc == TTL_EXPIRED ? -1 : (lua_Number)ms);
    }
    /* upvalues: repository, function, key prefix, ttl */
    lua_pushvalue(L, ridx);
    lua_pushvalue(L, fidx);
    lua_pushvalue(L, -4);
    lua_pushvalue(L, -4);
    lua_pushcclosure(L, decorated, 4);
    return 1;
}

static int repo_call(lua_State *L)
{
    luaL_checkudata(L, 1, REPO_MT);
    return decorate(L, 0);
}

static int manager_call(lua_State *L)
{
    luaL_checkudata(L, 1, MANAGER_MT);
    return decorate(L, 1);
}

/* ---- the manager ------------------------------------------------------- */

/* Pushes the repository named `name` (NULL: the default) of the manager at mgr_idx. */
static void push_repo(lua_State *L, int mgr_idx, const char *name)
{
    cachy_getuservalue(L, mgr_idx);
    if (name == NULL) {
        lua_getfield(L, -1, "default");
    } else {
        lua_getfield(L, -1, "repos");
        lua_getfield(L, -1, name);
        if (lua_isnil(L, -1))
            luaL_error(L, "cache store '%s' is not defined", name);
        lua_remove(L, -2);
    }
    lua_remove(L, -2);
}

static manager_ud *check_manager(lua_State *L)
{
    return luaL_checkudata(L, 1, MANAGER_MT);
}

static int mgr_store(lua_State *L)
{
    check_manager(L);
    push_repo(L, 1, luaL_optstring(L, 2, NULL));
    return 1;
}

static int mgr_extend(lua_State *L)
{
    manager_ud *mgr = check_manager(L);
    luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    lookup_shared(L, mgr, "drivers");
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_settable(L, -3);
    lua_settop(L, 1);
    return 1;
}

static int mgr_register_serializer(lua_State *L)
{
    manager_ud *mgr = check_manager(L);
    luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "serialize");
    lua_getfield(L, 3, "unserialize");
    if (lua_type(L, -2) != LUA_TFUNCTION || lua_type(L, -1) != LUA_TFUNCTION)
        luaL_argerror(L, 3, "serializer needs functions 'serialize' and 'unserialize'");
    if (strcmp(lua_tostring(L, 2), "msgpack") == 0)
        luaL_argerror(L, 2, "'msgpack' is built in and cannot be replaced");
    lookup_shared(L, mgr, "serializers");
    lua_pushvalue(L, 2);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, -5);
    lua_setfield(L, -2, "serialize");
    lua_pushvalue(L, -4);
    lua_setfield(L, -2, "unserialize");
    lua_settable(L, -3);
    lua_settop(L, 1);
    return 1;
}

/* Closes every store (and, when freeing, releases everything). */
static void close_all(lua_State *L, manager_ud *mgr, int release)
{
    size_t i;
    for (i = 0; i < mgr->n; i++) {
        store_state *st = &mgr->states[i];
        if (st->store == NULL)
            continue;
        if (st->lua_driver) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, st->slots_ref);
            st->host.L = L;
            st->host.slots = lua_gettop(L);
        }
        cachy_store_close(st->store);
        if (st->lua_driver)
            lua_pop(L, 1);
        st->host.L = NULL;
        if (release) {
            luaL_unref(L, LUA_REGISTRYINDEX, st->slots_ref);
            free_recent(L, st);
            cachy_buf_free(&st->buf);
            cachy_buf_free(&st->key);
            cachy_buf_free(&st->batch);
            st->store = NULL;
        }
    }
    if (release) {
        luaL_unref(L, LUA_REGISTRYINDEX, mgr->shared_ref);
        cachy_manager_free(mgr->m);
        mgr->m = NULL;
    }
}

static int mgr_close(lua_State *L)
{
    manager_ud *mgr = check_manager(L);
    if (mgr->m != NULL)
        close_all(L, mgr, 0);
    return 0;
}

static int mgr_gc(lua_State *L)
{
    manager_ud *mgr = check_manager(L);
    if (mgr->m != NULL)
        close_all(L, mgr, 1);
    return 0;
}

static int mgr_tostring(lua_State *L)
{
    manager_ud *mgr = check_manager(L);
    lua_pushfstring(L, "cachy.CacheManager (%p)", (void *)mgr);
    return 1;
}

static int repo_tostring(lua_State *L)
{
    repo_ud *r = luaL_checkudata(L, 1, REPO_MT);
    lua_pushfstring(L, "cachy.Repository '%s' (%p)",
                    r->st->store ? cachy_store_name(r->st->store) : "closed", (void *)r);
    return 1;
}

/* Converts the store config field at the top of the stack into an option. */
static int add_option(lua_State *L, cachy_options *o, const char *name, cachy_opt_type type)
{
    if (type == CACHY_OPT_STRING)
        return cachy_options_add_string(o, name, lua_tostring(L, -1));
    if (type == CACHY_OPT_BOOLEAN)
        return cachy_options_add_number(o, name, type, lua_toboolean(L, -1));
    if (type == CACHY_OPT_LIST) {
        size_t i, n = cachy_rawlen(L, -1);
        const char **items = lua_newuserdata(L, (n ? n : 1) * sizeof *items);
        int rc;
        for (i = 0; i < n; i++) {
            lua_rawgeti(L, -2, (int)i + 1);
            items[i] = lua_tostring(L, -1);
            lua_pop(L, 1);      /* the list table keeps the strings alive */
        }
        rc = cachy_options_add_list(o, name, items, n);
        lua_pop(L, 1);
        return rc;
    }
    return cachy_options_add_number(o, name, type, (double)lua_tonumber(L, -1));
}

static const char *opt_string(lua_State *L, int tidx, const char *field, const char *dflt)
{
    const char *s;
    lua_getfield(L, tidx, field);
    s = lua_isstring(L, -1) ? lua_tostring(L, -1) : dflt;
    lua_pop(L, 1);      /* the config table keeps the string alive */
    return s;
}

/*
 * core.new(config, serializers): config was validated by cachy/init.lua:
 * { default = name, prefix =, serializer =, minutes =, on_error =,
 *   stores = { name = { driver =, prefix =, serializer =, fields... } } }
 */
static int core_new(lua_State *L)
{
    manager_ud *mgr;
    size_t n = 0, i = 0;
    const char *dflt, *gprefix, *gserializer;
    double minutes;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);                           /* 2: serializers */
    lua_getfield(L, 1, "stores");               /* 3 */
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 3)) {
        n++;
        lua_pop(L, 1);
    }
    if (n == 0)
        return luaL_error(L, "config.stores is empty");
    dflt = opt_string(L, 1, "default", NULL);
    gprefix = opt_string(L, 1, "prefix", "");
    gserializer = opt_string(L, 1, "serializer", "msgpack");
    lua_getfield(L, 1, "minutes");
    minutes = lua_isnumber(L, -1) ? (double)lua_tonumber(L, -1) : 60.0;
    lua_pop(L, 1);

    mgr = cachy_newuserdata(L, sizeof *mgr + (n - 1) * sizeof(store_state));    /* 4 */
    memset(mgr, 0, sizeof *mgr + (n - 1) * sizeof(store_state));
    mgr->kind = &manager_kind;
    mgr->shared_ref = LUA_NOREF;
    luaL_getmetatable(L, MANAGER_MT);
    lua_setmetatable(L, -2);
    mgr->m = cachy_manager_new();
    if (mgr->m == NULL)
        return luaL_error(L, "not enough memory");
    mgr->default_ttl_ms = minutes <= 0 ? -1 : minutes * 60000.0 >= 9.2e18 ? 0 : (int64_t)ceil(minutes * 60000.0);
    for (i = 0; i < n; i++)
        mgr->states[i].slots_ref = LUA_NOREF;

    /* shared: { drivers = {}, serializers = serializers arg, on_error = fn } */
    lua_createtable(L, 0, 3);
    lua_newtable(L);
    lua_setfield(L, -2, "drivers");
    if (lua_istable(L, 2))
        lua_pushvalue(L, 2);
    else
        lua_newtable(L);
    lua_setfield(L, -2, "serializers");
    lua_getfield(L, 1, "on_error");
    lua_setfield(L, -2, "on_error");
    mgr->shared_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    /* the manager's uservalue: { repos = { name = repository }, default = repository } */
    lua_createtable(L, 0, 2);                   /* 5 */
    lua_newtable(L);                            /* 6: repos */
    i = 0;
    lua_pushnil(L);
    while (lua_next(L, 3)) {                    /* key 7, store config 8 */
        store_state *st = &mgr->states[i];
        const char *name = lua_tostring(L, 7);
        const char *driver = opt_string(L, 8, "driver", "memory");
        const char *prefix = opt_string(L, 8, "prefix", gprefix);
        const char *serializer = opt_string(L, 8, "serializer", gserializer);
        const cachy_store_ops *builtin = cachy_driver_find(driver);
        cachy_options opts = { 0 };
        repo_ud *r;
        if (builtin) {
            const cachy_field *f;
            for (f = cachy_driver_fields(builtin); f->name; f++) {
                lua_getfield(L, 8, f->name);
                if (!lua_isnil(L, -1) && add_option(L, &opts, f->name, f->type) != 0) {
                    cachy_options_free(&opts);
                    return luaL_error(L, "not enough memory");
                }
                lua_pop(L, 1);
            }
        }
        st->store = cachy_manager_add(mgr->m, name, driver, NULL, prefix, &opts);
        if (st->store == NULL) {
            cachy_options_free(&opts);
            return luaL_error(L, "not enough memory");
        }
        mgr->n = i + 1;
        st->msgpack = strcmp(serializer, "msgpack") == 0;
        lua_createtable(L, 0, 4);
        lua_pushvalue(L, 8);
        lua_setfield(L, -2, "config");
        lua_pushstring(L, serializer);
        lua_setfield(L, -2, "serializer");
        st->slots_ref = luaL_ref(L, LUA_REGISTRYINDEX);

        r = cachy_newuserdata(L, sizeof *r);
        memset(r, 0, sizeof *r);
        r->kind = &repo_kind;
        r->mgr = mgr;
        r->st = st;
        luaL_getmetatable(L, REPO_MT);
        lua_setmetatable(L, -2);
        lua_createtable(L, 0, 1);
        lua_pushvalue(L, 4);
        lua_setfield(L, -2, "manager");
        cachy_setuservalue(L, -2);
        if (dflt && strcmp(dflt, name) == 0) {
            mgr->dflt.kind = &repo_kind;
            mgr->dflt.mgr = mgr;
            mgr->dflt.st = st;
            lua_pushvalue(L, -1);
            lua_setfield(L, 5, "default");
        }
        lua_setfield(L, 6, name);
        lua_pop(L, 1);
        i++;
    }
    lua_setfield(L, 5, "repos");
    if (mgr->dflt.st == NULL)
        return luaL_error(L, "config.default names store '%s', which is not defined",
                          dflt ? dflt : "?");
    cachy_setuservalue(L, 4);
    lua_settop(L, 4);
    return 1;
}

/* core.driver_fields(name): { field = type name, ... } of a built-in driver,
 * plus the set of required fields, or nil. */
static int core_driver_fields(lua_State *L)
{
    static const char *const types[] = { "string", "number", "integer", "boolean", "list" };
    const cachy_store_ops *ops = cachy_driver_find(luaL_checkstring(L, 1));
    const cachy_field *f;
    if (ops == NULL)
        return 0;
    lua_newtable(L);
    lua_newtable(L);
    for (f = cachy_driver_fields(ops); f->name; f++) {
        lua_pushstring(L, types[f->type]);
        lua_setfield(L, -3, f->name);
        if (f->required) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, f->name);
        }
    }
    return 2;
}

static const luaL_Reg repo_methods[] = {
    { "get", m_get },
    { "many", m_many },
    { "has", m_has },
    { "put", m_put },
    { "put_many", m_put_many },
    { "add", m_add },
    { "forever", m_forever },
    { "remember", m_remember },
    { "remember_forever", m_remember_forever },
    { "pull", m_pull },
    { "forget", m_forget },
    { "increment", m_increment },
    { "decrement", m_decrement },
    { "flush", m_flush },
    { "stats", m_stats },
    { "prune", m_prune },
    { "tags", m_tags },
    { NULL, NULL },
};

static const luaL_Reg manager_methods[] = {
    { "store", mgr_store },
    { "extend", mgr_extend },
    { "register_serializer", mgr_register_serializer },
    { "close", mgr_close },
    { NULL, NULL },
};

static const luaL_Reg core_functions[] = {
    { "new", core_new },
    { "driver_fields", core_driver_fields },
    { NULL, NULL },
};

LUALIB_API int luaopen_cachy_core(lua_State *L)
    __attribute__((visibility("default")));

LUALIB_API int luaopen_cachy_core(lua_State *L)
{
    lua_settop(L, 0);                           /* require passes the name and path */
    luaL_newmetatable(L, REPO_MT);              /* 1 */
    luaL_newmetatable(L, MANAGER_MT);           /* 2 */

    lua_newtable(L);                            /* 3: repository methods */
    luaL_setfuncs(L, repo_methods, 0);
    lua_setfield(L, 1, "__index");
    lua_pushcfunction(L, repo_call);
    lua_setfield(L, 1, "__call");
    lua_pushcfunction(L, repo_tostring);
    lua_setfield(L, 1, "__tostring");

    lua_newtable(L);                            /* 3: manager methods */
    luaL_setfuncs(L, repo_methods, 0);
    luaL_setfuncs(L, manager_methods, 0);
    lua_setfield(L, 2, "__index");
    lua_pushcfunction(L, manager_call);
    lua_setfield(L, 2, "__call");
    lua_pushcfunction(L, mgr_gc);
    lua_setfield(L, 2, "__gc");
#if LUA_VERSION_NUM >= 504
    lua_pushcfunction(L, mgr_close);
    lua_setfield(L, 2, "__close");
#endif
    lua_pushcfunction(L, mgr_tostring);
    lua_setfield(L, 2, "__tostring");

    lua_newtable(L);
    luaL_setfuncs(L, core_functions, 0);
    return 1;
}

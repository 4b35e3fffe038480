/*
 * lcachy_repo.c: the repository's methods, cache:get to cache:tags, each
 * a thin layer that checks its arguments, turns values into bytes and back
 * (lcachy_value.c) and calls the store in the repository's tag namespace
 * (lcachy_scope.c). Reads keep the strings they handed out lately, since
 * making a fresh copy is a third of a memory get-hit.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lcachy.h"

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

/* ---- small helpers ----------------------------------------------------- */

static int push_failure(lua_State *L, const cachy_error *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err->msg);
    return 2;
}

/* Methods work on a repository and, for the default store, on the manager.
 * The length check turns away light userdata and smaller full ones. */
repo_ud *lc_to_repo(lua_State *L)
{
    const char *const *kind = lua_touserdata(L, 1);
    if (kind != NULL && cachy_rawlen(L, 1) >= sizeof(repo_ud)) {
        if (*kind == &lc_repo_kind)
            return (repo_ud *)kind;
        if (*kind == &lc_manager_kind)
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

cachy_slice lc_check_key(lua_State *L, int idx) { return check_key_of(L, idx, idx); }

/* ---- repository methods ------------------------------------------------ */

/* On a miss: the default, calling it when it is a function. `given`: the
 * caller passed one (lc_prepare may have pushed values above the arguments). */
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

void lc_free_recent(lua_State *L, store_state *st)
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
    return lc_decode_value(L, r, key, p, n, err);
}

/* Fetches key; on a hit pushes the value. 1 hit, 0 miss, -1 failure (err). */
int lc_fetch(lua_State *L, repo_ud *r, cachy_slice key, cachy_error *err)
{
    int rc = lc_r_get(r, key, &r->st->buf, err);
    if (rc != 1)
        return rc;
    return push_read(L, r, key, r->st->buf.data, r->st->buf.len, err) == 0 ? 1 : -1;
}

int lc_m_get(lua_State *L)
{
    repo_ud *r = lc_to_repo(L);
    cachy_slice key = lc_check_key(L, 2);
    cachy_error err;
    int given = lua_gettop(L) >= 3, rc;
    lc_prepare(L, r);
    rc = lc_fetch(L, r, key, &err);
    if (rc < 0)
        return push_failure(L, &err);
    if (rc == 1)
        return 1;
    return push_default(L, 3, given);
}

int lc_m_has(lua_State *L)
{
    repo_ud *r = lc_to_repo(L);
    cachy_slice key = lc_check_key(L, 2);
    cachy_error err;
    int rc;
    lc_prepare(L, r);
    rc = lc_r_get(r, key, &r->st->buf, &err);
    if (rc < 0)
        return push_failure(L, &err);
    lua_pushboolean(L, rc == 1);
    return 1;
}

int lc_m_pull(lua_State *L)
{
    repo_ud *r = lc_to_repo(L);
    cachy_slice key = lc_check_key(L, 2);
    cachy_error err;
    int given = lua_gettop(L) >= 3, rc, top;
    lc_prepare(L, r);
    rc = lc_fetch(L, r, key, &err);
    if (rc < 0)
        return push_failure(L, &err);
    if (rc == 0)
        return push_default(L, 3, given);
    top = lua_gettop(L);
    lc_prepare(L, r);      /* decoding may have run Lua code (a serializer) */
    if (lc_r_forget(r, key, &err) < 0)
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
        lc_prepare(L, r);
        if (lc_r_forget(r, key, &err) < 0)
            return push_failure(L, &err);
        lua_pushboolean(L, 0);
        return 1;
    }
    if (lc_encode_value(L, r, vidx, vidx, "value", &err) != 0)
        return push_failure(L, &err);
    lc_prepare(L, r);      /* after the serializer, which may run Lua code */
    {
        cachy_slice val;
        val.ptr = r->st->buf.data;
        val.len = r->st->buf.len;
        rc = lc_r_write(r, key, val, ttl_ms, is_add, &err);
    }
    if (rc < 0)
        return push_failure(L, &err);
    lua_pushboolean(L, is_add ? rc == 1 : 1);
    return 1;
}

static int put_or_add(lua_State *L, int is_add)
{
    repo_ud *r = lc_to_repo(L);
    cachy_slice key = lc_check_key(L, 2);
    int64_t ms = 0;
    int ttl_rc;
    luaL_checkany(L, 3);
    ttl_rc = lc_check_ttl(L, 4, r->mgr->default_ttl_ms, &ms);
    return store_value(L, r, key, 3, ttl_rc, ms, is_add);
}

int lc_m_put(lua_State *L) { return put_or_add(L, 0); }
int lc_m_add(lua_State *L) { return put_or_add(L, 1); }

int lc_m_forever(lua_State *L)
{
    repo_ud *r = lc_to_repo(L);
    cachy_slice key = lc_check_key(L, 2);
    luaL_checkany(L, 3);
    return store_value(L, r, key, 3, TTL_OK, 0, 0);
}

int lc_m_forget(lua_State *L)
{
    repo_ud *r = lc_to_repo(L);
    cachy_slice key = lc_check_key(L, 2);
    cachy_error err;
    int rc;
    lc_prepare(L, r);
    rc = lc_r_forget(r, key, &err);
    if (rc < 0)
        return push_failure(L, &err);
    lua_pushboolean(L, rc == 1);
    return 1;
}

static int step(lua_State *L, int sign)
{
    repo_ud *r = lc_to_repo(L);
    cachy_slice key = lc_check_key(L, 2);
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
    lc_prepare(L, r);
    if (lc_r_incr(r, key, by, &result, &err) < 0)
        return push_failure(L, &err);
    cachy_pushinteger(L, result);
    return 1;
}

int lc_m_increment(lua_State *L) { return step(L, 1); }
int lc_m_decrement(lua_State *L) { return step(L, -1); }

int lc_m_flush(lua_State *L)
{
    repo_ud *r = lc_to_repo(L);
    cachy_error err;
    lc_prepare(L, r);
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

int lc_m_many(lua_State *L)
{
    repo_ud *r = lc_to_repo(L);
    cachy_error err;
    size_t n, i;
    int kidx, rc = 0;
    cachy_slice *keys;
    cachy_buf *outs;
    int *found;
    luaL_checktype(L, 2, LUA_TTABLE);
    kidx = collect_keys(L, 2, &n);
    lc_prepare(L, r);
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
    if (lc_r_many(r, keys, n, outs, found, &err) < 0) {
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

int lc_m_put_many(lua_State *L)
{
    repo_ud *r = lc_to_repo(L);
    store_state *st = r->st;
    cachy_error err;
    int64_t ms = 0;
    int ttl_rc;
    size_t n = 0, i;
    cachy_slice *keys, *vals;
    size_t *offs;
    const char *batch;
    luaL_checktype(L, 2, LUA_TTABLE);
    ttl_rc = lc_check_ttl(L, 3, r->mgr->default_ttl_ms, &ms);
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
            lc_prepare(L, r);
            if (lc_r_forget(r, k, &err) < 0)
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
            if (lc_encode_value(L, r, -1, 2, root, &err) != 0)
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
    lc_prepare(L, r);
    if (lc_r_put_many(r, keys, vals, n, ms, &err) < 0)
        return push_failure(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

int lc_m_stats(lua_State *L)
{
    repo_ud *r = lc_to_repo(L);
    cachy_error err;
    cachy_stats s;
    lc_prepare(L, r);
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

int lc_m_prune(lua_State *L)
{
    repo_ud *r = lc_to_repo(L);
    cachy_error err;
    lc_prepare(L, r);
    if (cachy_prune(r->st->store, &err) < 0)
        return push_failure(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* tags("a", "b") or tags({ "a", "b" }): a repository whose items live in
 * those tags' namespace (tags.c). */
int lc_m_tags(lua_State *L)
{
    repo_ud *r = lc_to_repo(L), *t;
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
    t->kind = &lc_repo_kind;
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

/*
 * lcachy_fast.c: the value-level methods a repository binds when its store
 * is a C store and its serializer MessagePack (core.bind). They do in one
 * C call what lua/cachy/repository.lua does through the store's bytes
 * methods, and never call Lua code, so binding them into the repository
 * cannot break a coroutine's yield: only the Lua side calls user
 * functions (get's function default is returned to Lua to call). The
 * behaviour suite runs both paths.
 *
 * Each function is a closure over the handle (upvalue 1) and the default
 * lifetime in ms (upvalue 2; -1: already over). Argument 1 is the
 * repository or manager they are called on, so errors read as method
 * errors: "bad argument #1 to 'put' (...)".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "lcachy.h"

#define RECENT_SLOTS 256        /* a power of two */
#define RECENT_VALUE_MAX 1024   /* longer strings are always made afresh */

/* A string value handed out lately (see push_string). */
struct recent_slot {
    const char *ptr;          /* its bytes, NULL while the slot is empty */
    size_t len;
    int ref;                  /* registry: the string itself (LUA_NOREF: none yet) */
    const char *seen;         /* the key of this slot's last miss, */
    uint64_t seen_print;      /* and a fingerprint of its value */
};

static lc_handle *self_handle(lua_State *L)
{
    lc_handle *h = lua_touserdata(L, lua_upvalueindex(1));
    if (!lua_istable(L, 1))
        luaL_argerror(L, 1, "cache repository expected (use a colon: cache:get(key))");
    if (h->store == NULL)
        luaL_error(L, "attempt to use a closed cache");
    return h;
}

static cachy_slice check_key(lua_State *L, int idx, int argn)
{
    cachy_slice k;
    const char *why = NULL;
    k.ptr = lc_key_of(L, idx, &k.len, &why);
    if (k.ptr == NULL)
        luaL_argerror(L, argn, why);
    return k;
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
static void push_string(lua_State *L, lc_handle *h, cachy_slice key, cachy_slice s)
{
    recent_slot *e;
    uint64_t print;
    uintptr_t a = (uintptr_t)key.ptr;
    size_t i;
    if (s.len > RECENT_VALUE_MAX) {
        lua_pushlstring(L, s.ptr, s.len);
        return;
    }
    if (h->recent == NULL) {
        h->recent = calloc(RECENT_SLOTS, sizeof *h->recent);
        if (h->recent == NULL) {
            lua_pushlstring(L, s.ptr, s.len);
            return;
        }
        for (i = 0; i < RECENT_SLOTS; i++)
            h->recent[i].ref = LUA_NOREF;
    }
    e = &h->recent[(a >> 3 ^ a >> 11) & (RECENT_SLOTS - 1)];
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

void lc_free_recent(lua_State *L, lc_handle *h)
{
    size_t i;
    if (h->recent == NULL)
        return;
    for (i = 0; i < RECENT_SLOTS; i++)
        luaL_unref(L, LUA_REGISTRYINDEX, h->recent[i].ref);
    free(h->recent);
    h->recent = NULL;
}

static void corrupt(cachy_error *err, const cachy_store *s, cachy_slice key, const char *why)
{
    char q[96];
    cachy_quote_key(key, q, sizeof q);
    cachy_error_set(err, s, CACHY_ECORRUPT, "value of key '%s' cannot be decoded: %s", q, why);
}

/* A failure returned to the caller, counted in the store's stats. */
static int fail(lua_State *L, lc_handle *h, const cachy_error *err)
{
    h->counts[LC_ERRORS]++;
    return lc_fail(L, err);
}

/* What a read of the bytes v sees (envelope.h): 1 a value (v narrowed to
 * it), 0 nothing (a cached nil, or past its visible lifetime), -1 a
 * malformed envelope (err set). Plain bytes cost one comparison. */
static int unwrap(const cachy_store *s, cachy_slice key, cachy_slice *v, cachy_error *err)
{
    int rc;
    if (v->len == 0 || (unsigned char)v->ptr[0] != CACHY_ENVELOPE_MARK)
        return 1;
    rc = cachy_envelope_live(v, cachy_now_ms());
    if (rc < 0)
        corrupt(err, s, key, "a stale-serving envelope that is cut short or of an unknown version");
    return rc;
}

/* Pushes the value held in bytes read for key; 0, or -1 with err (nothing pushed). */
static int push_read(lua_State *L, lc_handle *h, cachy_slice key, const char *p, size_t n,
                     cachy_error *err)
{
    cachy_slice s;
    char why[256];
    if (cachy_codec_lone_string(p, n, &s)) {
        push_string(L, h, key, s);
        return 0;
    }
    if (cachy_codec_decode(L, p, n, why, sizeof why) == 0)
        return 0;
    corrupt(err, h->store, key, why);
    return -1;
}

/* Fetches key; on a hit pushes the value. 1 hit, 0 miss, -1 failure (err);
 * counted. */
static int fetch(lua_State *L, lc_handle *h, cachy_slice key, cachy_error *err)
{
    cachy_slice v;
    int rc = cachy_get(h->store, key, &h->buf, err);
    if (rc == 1) {
        v.ptr = h->buf.data;
        v.len = h->buf.len;
        rc = unwrap(h->store, key, &v, err);
        if (rc == 1 && push_read(L, h, key, v.ptr, v.len, err) != 0)
            rc = -1;
    }
    h->counts[rc == 1 ? LC_HITS : rc == 0 ? LC_MISSES : LC_ERRORS]++;
    return rc;
}

/*
 * get(self, key [, default]), called by the repository's Lua get: the
 * value; on a miss the default, or, when the default is a function,
 * nil, nil, nil, true for the caller to call it; nil, err, code on a
 * failure. A bad key is blamed on the caller of that Lua get.
 */
static int f_get(lua_State *L)
{
    lc_handle *h = self_handle(L);
    cachy_error err;
    cachy_slice key;
    const char *why = NULL;
    int rc;
    key.ptr = lc_key_of(L, 2, &key.len, &why);
    if (key.ptr == NULL) {
        luaL_where(L, 2);
        lua_pushfstring(L, "bad argument #1 to 'get' (%s)", why);
        lua_concat(L, 2);
        return lua_error(L);
    }
    rc = fetch(L, h, key, &err);
    if (rc == 1)
        return 1;
    if (rc < 0)
        return lc_fail(L, &err);
    if (lua_type(L, 3) == LUA_TFUNCTION) {
        lua_pushnil(L);
        lua_pushnil(L);
        lua_pushnil(L);
        lua_pushboolean(L, 1);
        return 4;
    }
    lua_settop(L, 3);
    return 1;
}

/* has(key): true only for a value get can read; bytes it cannot decode
 * are nil, err as they are for get. */
static int f_has(lua_State *L)
{
    lc_handle *h = self_handle(L);
    cachy_slice key = check_key(L, 2, 2);
    cachy_error err;
    cachy_slice v;
    char why[256];
    int rc = cachy_get(h->store, key, &h->buf, &err);
    if (rc == 1) {
        v.ptr = h->buf.data;
        v.len = h->buf.len;
        rc = unwrap(h->store, key, &v, &err);
    }
    if (rc < 0)
        return fail(L, h, &err);
    if (rc == 1) {
        if (cachy_codec_decode(L, v.ptr, v.len, why, sizeof why) != 0) {
            corrupt(&err, h->store, key, why);
            return fail(L, h, &err);
        }
        lua_pop(L, 1);
    }
    h->counts[rc == 1 ? LC_HITS : LC_MISSES]++;
    lua_pushboolean(L, rc == 1);
    return 1;
}

/* The lifetime argument at idx, or the default; TTL_EXPIRED or TTL_OK. */
static int check_ttl(lua_State *L, int idx, int64_t *ms)
{
    const char *why = NULL;
    int64_t dflt = (int64_t)lua_tonumber(L, lua_upvalueindex(2));
    int rc = lc_read_ttl(L, idx, dflt, ms, &why);
    if (rc == TTL_BAD) {
        if (why == NULL)
            why = lua_pushfstring(L, "ttl must be a number of minutes or a date table, got %s",
                                  luaL_typename(L, idx));
        luaL_argerror(L, idx, why);
    }
    return rc;
}

/* Encodes the value at idx into h->buf; unstorable values raise, blaming argn. */
static void encode(lua_State *L, lc_handle *h, int idx, int argn, const char *root)
{
    char why[256];
    if (lua_isnil(L, idx))
        luaL_argerror(L, argn, "nil cannot be stored; use forget to remove a key");
    if (cachy_codec_encode(L, idx, root, &h->buf, why, sizeof why) != 0)
        luaL_argerror(L, argn, why);
}

static int store_value(lua_State *L, lc_handle *h, cachy_slice key, int ttl_rc, int64_t ms,
                       int is_add)
{
    cachy_error err;
    cachy_slice val;
    int rc;
    encode(L, h, 3, 3, "value");
    if (ttl_rc == TTL_EXPIRED) {
        if (cachy_forget(h->store, key, &err) < 0)
            return fail(L, h, &err);
        lua_pushboolean(L, 0);
        return 1;
    }
    val.ptr = h->buf.data;
    val.len = h->buf.len;
    rc = is_add ? cachy_add(h->store, key, val, ms, &err) : cachy_put(h->store, key, val, ms, &err);
    if (rc < 0)
        return fail(L, h, &err);
    rc = is_add ? rc == 1 : 1;
    h->counts[LC_WRITES] += rc;
    lua_pushboolean(L, rc);
    return 1;
}

static int put_or_add(lua_State *L, int is_add)
{
    lc_handle *h = self_handle(L);
    cachy_slice key = check_key(L, 2, 2);
    int64_t ms = 0;
    int ttl_rc;
    luaL_checkany(L, 3);
    ttl_rc = check_ttl(L, 4, &ms);
    return store_value(L, h, key, ttl_rc, ms, is_add);
}

static int f_put(lua_State *L) { return put_or_add(L, 0); }
static int f_add(lua_State *L) { return put_or_add(L, 1); }

static int f_forever(lua_State *L)
{
    lc_handle *h = self_handle(L);
    cachy_slice key = check_key(L, 2, 2);
    luaL_checkany(L, 3);
    return store_value(L, h, key, TTL_OK, 0, 0);
}

static int f_forget(lua_State *L)
{
    lc_handle *h = self_handle(L);
    cachy_slice key = check_key(L, 2, 2);
    cachy_error err;
    int rc = cachy_forget(h->store, key, &err);
    if (rc < 0)
        return fail(L, h, &err);
    lua_pushboolean(L, rc == 1);
    return 1;
}

static int step(lua_State *L, int sign)
{
    lc_handle *h = self_handle(L);
    cachy_slice key = check_key(L, 2, 2);
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
            cachy_error_set(&err, h->store, CACHY_ERANGE, "decrement of key '%s' overflows 64 bits", q);
            return fail(L, h, &err);
        }
        by = -by;
    }
    if (cachy_incr(h->store, key, by, &result, &err) < 0) {
        if (err.code == CACHY_ENOTINT)
            lc_key_message(&err, h->store, "value of key '%s' is not an integer", key);
        else if (err.code == CACHY_ERANGE)
            lc_key_message(&err, h->store, sign < 0 ? "decrement of key '%s' overflows 64 bits"
                                                    : "increment of key '%s' overflows 64 bits", key);
        return fail(L, h, &err);
    }
    h->counts[LC_WRITES]++;
    cachy_pushinteger(L, result);
    return 1;
}

static int f_increment(lua_State *L) { return step(L, 1); }
static int f_decrement(lua_State *L) { return step(L, -1); }

static int f_flush(lua_State *L)
{
    lc_handle *h = self_handle(L);
    cachy_error err;
    if (cachy_flush(h->store, &err) < 0)
        return fail(L, h, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static int f_many(lua_State *L)
{
    lc_handle *h = self_handle(L);
    cachy_error err;
    size_t n, i;
    int kidx, rc = 0;
    cachy_slice *keys;
    cachy_buf *outs;
    int *found;
    luaL_checktype(L, 2, LUA_TTABLE);
    n = cachy_rawlen(L, 2);
    lua_createtable(L, (int)n, 0);
    kidx = lua_gettop(L);
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, (int)i);
        check_key(L, lua_gettop(L), 2);
        lua_rawseti(L, kidx, (int)i);
    }
    lua_newtable(L);
    if (n == 0)
        return 1;
    keys = lc_many_block(L, n, &outs, &found);
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, kidx, (int)i + 1);
        keys[i].ptr = lua_tolstring(L, -1, &keys[i].len);
        lua_pop(L, 1);      /* still referenced by the keys table */
    }
    if (cachy_many(h->store, keys, n, outs, found, &err) < 0) {
        rc = -1;
    } else {
        for (i = 0; i < n && rc == 0; i++) {
            cachy_slice v;
            int live = 0;
            if (found[i]) {
                v.ptr = outs[i].data;
                v.len = outs[i].len;
                live = unwrap(h->store, keys[i], &v, &err);
                if (live < 0) {
                    rc = -1;
                    break;
                }
            }
            h->counts[live ? LC_HITS : LC_MISSES]++;
            if (!live)
                continue;
            lua_rawgeti(L, 2, (int)i + 1);  /* the key as the caller gave it */
            if (push_read(L, h, keys[i], v.ptr, v.len, &err) != 0) {
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
        return fail(L, h, &err);
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

/* core.value_root(key): the same, for the Lua side's put_many. */
int lc_core_value_root(lua_State *L)
{
    char root[128];
    cachy_slice k;
    k.ptr = luaL_checklstring(L, 1, &k.len);
    value_root(L, 1, k, root, sizeof root);
    lua_pushstring(L, root);
    return 1;
}

static int f_put_many(lua_State *L)
{
    lc_handle *h = self_handle(L);
    cachy_error err;
    int64_t ms = 0;
    int ttl_rc;
    size_t n = 0, i;
    cachy_slice *keys, *vals;
    size_t *offs;
    const char *batch;
    luaL_checktype(L, 2, LUA_TTABLE);
    ttl_rc = check_ttl(L, 3, &ms);
    lua_settop(L, 3);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        n++;
        lua_pop(L, 1);
    }
    if (n == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    keys = lua_newuserdata(L, n * (2 * sizeof *keys + 4 * sizeof *offs));
    vals = keys + n;
    offs = (size_t *)(vals + n);
    /* Keys and encoded values go side by side into one buffer; the slices
     * are made once it stops moving. Everything is checked before anything
     * is written. */
    h->batch.len = 0;
    i = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        cachy_slice k;
        char root[128];
        lua_pushvalue(L, -2);
        k = check_key(L, lua_gettop(L), 2);
        offs[4 * i] = h->batch.len;
        offs[4 * i + 1] = k.len;
        if (cachy_buf_append(&h->batch, k.ptr, k.len) != 0)
            return luaL_error(L, "not enough memory");
        lua_pop(L, 1);
        value_root(L, -2, k, root, sizeof root);
        encode(L, h, lua_gettop(L), 2, root);
        offs[4 * i + 2] = h->batch.len;
        offs[4 * i + 3] = h->buf.len;
        if (cachy_buf_append(&h->batch, h->buf.data, h->buf.len) != 0)
            return luaL_error(L, "not enough memory");
        lua_pop(L, 1);
        i++;
    }
    batch = h->batch.data;
    for (i = 0; i < n; i++) {
        keys[i].ptr = batch + offs[4 * i];
        keys[i].len = offs[4 * i + 1];
        vals[i].ptr = batch + offs[4 * i + 2];
        vals[i].len = offs[4 * i + 3];
    }
    if (ttl_rc == TTL_EXPIRED) {
        for (i = 0; i < n; i++)
            if (cachy_forget(h->store, keys[i], &err) < 0)
                return fail(L, h, &err);
        lua_pushboolean(L, 0);
        return 1;
    }
    if (cachy_put_many(h->store, keys, vals, n, ms, &err) < 0)
        return fail(L, h, &err);
    h->counts[LC_WRITES] += (int64_t)n;
    lua_pushboolean(L, 1);
    return 1;
}

/*
 * tuple_get(prefix, ...): the decorator's read of the call with arguments
 * `...`: true, results... on a hit; false, key, err, code, args... on a
 * miss (err and code nil) or a failure (undecodable bytes included), so
 * the Lua side can call the function with the arguments it gets back
 * without keeping them in a table; nil, why when an argument cannot be
 * part of a key.
 */
static int f_tuple_get(lua_State *L)
{
    lc_handle *h = lua_touserdata(L, lua_upvalueindex(1));
    cachy_error err;
    cachy_slice key;
    char hex[33], why[256];
    int rc, n, nargs = lua_gettop(L) - 1;
    size_t plen;
    const char *prefix = luaL_checklstring(L, 1, &plen);
    if (h->store == NULL)
        return luaL_error(L, "attempt to use a closed cache");
    if (cachy_codec_args_hash(L, 2, nargs, hex, why, sizeof why) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, why);
        return 2;
    }
    if (cachy_buf_set(&h->key, prefix, plen) != 0 || cachy_buf_append(&h->key, ":", 1) != 0 ||
        cachy_buf_append(&h->key, hex, 32) != 0)
        return luaL_error(L, "not enough memory");
    key.ptr = h->key.data;
    key.len = h->key.len;
    rc = cachy_get(h->store, key, &h->buf, &err);
    if (rc == 1) {
        cachy_slice v;
        v.ptr = h->buf.data;
        v.len = h->buf.len;
        rc = unwrap(h->store, key, &v, &err);
        if (rc == 1) {
            int top = lua_gettop(L);
            lua_pushboolean(L, 1);
            n = cachy_codec_decode_tuple(L, v.ptr, v.len, why, sizeof why);
            if (n >= 0) {
                h->counts[LC_HITS]++;
                return n + 1;
            }
            lua_settop(L, top);
            corrupt(&err, h->store, key, why);
            rc = -1;
        }
    }
    h->counts[rc == 0 ? LC_MISSES : LC_ERRORS]++;
    /* false, key, err, code, then the arguments, which are at 2..nargs+1 */
    luaL_checkstack(L, 4, "too many arguments");
    lua_pushboolean(L, 0);
    lua_pushlstring(L, key.ptr, key.len);
    if (rc < 0) {
        lc_fail(L, &err);       /* nil, message, code */
        lua_remove(L, -3);
    } else {
        lua_pushnil(L);
        lua_pushnil(L);
    }
    /* stack: prefix, args..., false, key, err, code: the four go in front
     * of the arguments, in place of the prefix */
    lua_insert(L, 2);
    lua_insert(L, 2);
    lua_insert(L, 2);
    lua_insert(L, 2);
    lua_remove(L, 1);
    return lua_gettop(L);
}

/* tuple_put(key, ms, n, ...): the decorator's write of n results. true;
 * nil, err, code on a failure; raises when a result cannot be stored. */
static int f_tuple_put(lua_State *L)
{
    lc_handle *h = lua_touserdata(L, lua_upvalueindex(1));
    cachy_error err;
    cachy_slice key, val;
    char why[256];
    int64_t ms;
    int n;
    key.ptr = luaL_checklstring(L, 1, &key.len);
    ms = (int64_t)luaL_checknumber(L, 2);
    n = (int)luaL_checknumber(L, 3);
    if (h->store == NULL)
        return luaL_error(L, "attempt to use a closed cache");
    if (cachy_codec_encode_tuple(L, 4, n, &h->buf, why, sizeof why) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, why);
        lua_pushliteral(L, "unstorable");
        return 3;
    }
    val.ptr = h->buf.data;
    val.len = h->buf.len;
    if (cachy_put(h->store, key, val, ms, &err) < 0)
        return fail(L, h, &err);
    h->counts[LC_WRITES]++;
    lua_pushboolean(L, 1);
    return 1;
}

/* counts(): this store's hits, misses, writes and errors seen by the
 * methods above, for the repository's stats(). */
static int f_counts(lua_State *L)
{
    lc_handle *h = lua_touserdata(L, lua_upvalueindex(1));
    int i;
    for (i = 0; i < LC_NCOUNTS; i++)
        cachy_pushinteger(L, h->counts[i]);
    return LC_NCOUNTS;
}

static const luaL_Reg fast_methods[] = {
    { "get", f_get },
    { "has", f_has },
    { "put", f_put },
    { "add", f_add },
    { "forever", f_forever },
    { "forget", f_forget },
    { "increment", f_increment },
    { "decrement", f_decrement },
    { "flush", f_flush },
    { "many", f_many },
    { "put_many", f_put_many },
    { "tuple_get", f_tuple_get },
    { "tuple_put", f_tuple_put },
    { "counts", f_counts },
    { NULL, NULL },
};

/* core.bind(handle, default_ms): { get = ..., put = ..., ... } closing
 * over the handle. */
int lc_bind(lua_State *L)
{
    lc_check_handle(L, 1);
    luaL_checknumber(L, 2);
    lua_settop(L, 2);
    lua_newtable(L);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    luaL_setfuncs(L, fast_methods, 2);
    return 1;
}

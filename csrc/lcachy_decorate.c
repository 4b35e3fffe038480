/*
 * lcachy_decorate.c: failing open. `remember` and the memoizing decorator
 * (__call) compute the value when the cache cannot give it, so a broken
 * store costs time, not answers; what went wrong is reported (on_error or
 * stderr) or returned beside the value.
 */
#include <stdio.h>
#include <string.h>

#include "lcachy.h"

/* The config's on_error(err, store_name), or one stderr line a second. */
static void report(lua_State *L, repo_ud *r, const cachy_error *err)
{
    store_state *st = r->st;
    lc_lookup_shared(L, r->mgr, "on_error");
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
    lc_prepare(L, r);
    rc = lc_fetch(L, r, key, &err);
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
        if (lc_encode_value(L, r, top + 1, top + 1, "value", &err) == 0) {
            lc_prepare(L, r);      /* fn and the serializer may have used the store */
            val.ptr = r->st->buf.data;
            val.len = r->st->buf.len;
            rc = lc_r_write(r, key, val, ms, 0, &err);
            lua_settop(L, top + 1);
            if (rc == 0)
                return 1;
        }
        lua_pushstring(L, err.msg);
        return 2;
    }
    return 1;
}

int lc_m_remember(lua_State *L)
{
    repo_ud *r = lc_to_repo(L);
    cachy_slice key = lc_check_key(L, 2);
    int64_t ms = 0;
    int ttl_rc = lc_check_ttl(L, 3, r->mgr->default_ttl_ms, &ms);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    return remember_common(L, r, key, ttl_rc, ms, 4);
}

int lc_m_remember_forever(lua_State *L)
{
    repo_ud *r = lc_to_repo(L);
    cachy_slice key = lc_check_key(L, 2);
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
    lc_prepare(L, r);
    key = entry_key(L, st, prefix, plen, hex);
    top = lua_gettop(L);
    rc = lc_r_get(r, key, &st->buf, &err);
    if (rc == 1) {
        nres = cachy_codec_decode_tuple(L, st->buf.data, st->buf.len, why, sizeof why);
        if (nres >= 0)
            return nres;
        lc_corrupt(&err, r, key, why);
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
        ttl_rc = lc_read_ttl(L, lua_upvalueindex(4), 0, &ms, &(const char *){ NULL });
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
        lc_prepare(L, r);
        key = entry_key(L, st, prefix, plen, hex);
        rc = lc_r_write(r, key, val, ms, 0, &err);
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
        lc_push_repo(L, 1, store_name);
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
        if (lc_read_ttl(L, lua_gettop(L), 0, &dummy, &why) == TTL_BAD)
            luaL_error(L, "cache: option 'minutes': %s", why);
    } else {
        const char *why = NULL;
        int rc = lc_read_ttl(L, lua_gettop(L), r->mgr->default_ttl_ms, &ms, &why);
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

int lc_repo_call(lua_State *L)
{
    luaL_checkudata(L, 1, REPO_MT);
    return decorate(L, 0);
}

int lc_manager_call(lua_State *L)
{
    luaL_checkudata(L, 1, MANAGER_MT);
    return decorate(L, 1);
}

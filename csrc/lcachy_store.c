/*
 * lcachy_store.c: a C store (memory, file, null, Redis, Memcached) as a
 * userdata whose methods speak bytes and milliseconds, the store interface
 * the Lua repository drives (lua/cachy/repository.lua). Failures return
 * nil, message, code (LuaSocket style); nothing here calls Lua code.
 */
#include <string.h>

#include "lcachy.h"

static const char *const code_names[] = {
    [CACHY_OK] = "ok",
    [CACHY_EMISUSE] = "misuse",
    [CACHY_ECONN] = "closed",
    [CACHY_ETIMEOUT] = "timeout",
    [CACHY_EBACKEND] = "backend",
    [CACHY_ECORRUPT] = "corrupt",
    [CACHY_ENOTINT] = "not_integer",
    [CACHY_ERANGE] = "overflow",
    [CACHY_ETOOBIG] = "too_big",
    [CACHY_ENOMEM] = "no_memory",
    [CACHY_EIO] = "io",
    [CACHY_EREFUSED] = "refused",
};

int lc_fail(lua_State *L, const cachy_error *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err->msg);
    lua_pushstring(L, (size_t)err->code < sizeof code_names / sizeof code_names[0]
                          ? code_names[err->code] : "backend");
    return 3;
}

/* Rewrites err's message with the key as the caller gave it: drivers see
 * prefixed (and tagged) keys, and word these messages each their own way. */
void lc_key_message(cachy_error *err, const cachy_store *s, const char *shown_fmt,
                    cachy_slice shown)
{
    char q[96];
    cachy_quote_key(shown, q, sizeof q);
    cachy_error_set(err, s, err->code, shown_fmt, q);
}

const char *lc_key_of(lua_State *L, int idx, size_t *len, const char **why)
{
    int t = lua_type(L, idx);
    const char *k;
    if (t != LUA_TSTRING && t != LUA_TNUMBER) {
        *why = lua_pushfstring(L, "key must be a non-empty string or a number, got %s",
                               luaL_typename(L, idx));
        return NULL;
    }
    k = lua_tolstring(L, idx, len);
    if (*len == 0) {
        *why = "key must not be empty";
        return NULL;
    }
    return k;
}

lc_handle *lc_check_handle(lua_State *L, int idx)
{
    lc_handle *h = luaL_checkudata(L, idx, HANDLE_MT);
    if (h->store == NULL)
        luaL_error(L, "attempt to use a closed cache");
    return h;
}

static cachy_slice arg_bytes(lua_State *L, int idx)
{
    cachy_slice s;
    s.ptr = luaL_checklstring(L, idx, &s.len);
    return s;
}

static int64_t arg_ms(lua_State *L, int idx)
{
    lua_Number v = luaL_checknumber(L, idx);
    return v <= 0 ? 0 : v >= 9.2e18 ? 0 : (int64_t)v;
}

static int h_get(lua_State *L)
{
    lc_handle *h = lc_check_handle(L, 1);
    cachy_error err;
    int rc = cachy_get(h->store, arg_bytes(L, 2), &h->buf, &err);
    if (rc < 0)
        return lc_fail(L, &err);
    if (rc == 0)
        return 0;
    lua_pushlstring(L, h->buf.data, h->buf.len);
    return 1;
}

static int h_write(lua_State *L, int is_add)
{
    lc_handle *h = lc_check_handle(L, 1);
    cachy_error err;
    cachy_slice key = arg_bytes(L, 2), val = arg_bytes(L, 3);
    int64_t ms = arg_ms(L, 4);
    int rc = is_add ? cachy_add(h->store, key, val, ms, &err) : cachy_put(h->store, key, val, ms, &err);
    if (rc < 0)
        return lc_fail(L, &err);
    lua_pushboolean(L, is_add ? rc == 1 : 1);
    return 1;
}

static int h_put(lua_State *L) { return h_write(L, 0); }
static int h_add(lua_State *L) { return h_write(L, 1); }

static int h_forget(lua_State *L)
{
    lc_handle *h = lc_check_handle(L, 1);
    cachy_error err;
    int rc = cachy_forget(h->store, arg_bytes(L, 2), &err);
    if (rc < 0)
        return lc_fail(L, &err);
    lua_pushboolean(L, rc == 1);
    return 1;
}

/* h:forget_if(key, bytes) and h:touch_if(key, bytes, ms), for locks: true if
 * key held exactly bytes and is removed, or now lives ms more; else false. */
static int h_if(lua_State *L, int touch)
{
    lc_handle *h = lc_check_handle(L, 1);
    cachy_error err;
    cachy_slice key = arg_bytes(L, 2), val = arg_bytes(L, 3);
    int rc;
    if (touch) {
        /* a lifetime, never "forever": 0 would mean that to some stores and
         * "remove now" to Redis's PEXPIRE */
        lua_Number ms = luaL_checknumber(L, 4);
        luaL_argcheck(L, ms >= 1, 4, "a lifetime of at least 1 ms expected");
        rc = cachy_touch_if(h->store, key, val, ms >= 4.0e18 ? (int64_t)4e18 : (int64_t)ms, &err);
    } else {
        rc = cachy_forget_if(h->store, key, val, &err);
    }
    if (rc < 0)
        return lc_fail(L, &err);
    lua_pushboolean(L, rc == 1);
    return 1;
}

static int h_forget_if(lua_State *L) { return h_if(L, 0); }
static int h_touch_if(lua_State *L) { return h_if(L, 1); }

/* h:incr(key, by [, shown [, verb]]): shown is the key as the caller wrote
 * it, verb "decrement" when the caller decremented. */
static int h_incr(lua_State *L)
{
    lc_handle *h = lc_check_handle(L, 1);
    cachy_error err;
    cachy_slice key = arg_bytes(L, 2);
#if CACHY_HAS_INTEGERS
    int64_t by = (int64_t)luaL_checkinteger(L, 3), result;
#else
    int64_t by = (int64_t)luaL_checknumber(L, 3), result;
#endif
    if (cachy_incr(h->store, key, by, &result, &err) != 0) {
        cachy_slice shown = key;
        if (!lua_isnoneornil(L, 4))
            shown = arg_bytes(L, 4);
        else if (shown.len >= h->store->prefix_len)
            shown.ptr += h->store->prefix_len, shown.len -= h->store->prefix_len;
        if (err.code == CACHY_ENOTINT)
            lc_key_message(&err, h->store, "value of key '%s' is not an integer", shown);
        else if (err.code == CACHY_ERANGE)
            lc_key_message(&err, h->store,
                           lua_type(L, 5) == LUA_TSTRING && strcmp(lua_tostring(L, 5), "decrement") == 0
                               ? "decrement of key '%s' overflows 64 bits"
                               : "increment of key '%s' overflows 64 bits", shown);
        return lc_fail(L, &err);
    }
    cachy_pushinteger(L, result);
    return 1;
}

static int h_flush(lua_State *L)
{
    lc_handle *h = lc_check_handle(L, 1);
    cachy_error err;
    if (cachy_flush(h->store, &err) != 0)
        return lc_fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* Room for n keys, their values and hit flags, in one block owned by a
 * userdata pushed on the stack, so that a raise cannot leak it. */
cachy_slice *lc_many_block(lua_State *L, size_t n, cachy_buf **outs, int **found)
{
    cachy_slice *keys = lua_newuserdata(L, n * (sizeof *keys + sizeof **outs + sizeof **found));
    *outs = (cachy_buf *)(keys + n);
    *found = (int *)(*outs + n);
    memset(*outs, 0, n * sizeof **outs);
    return keys;
}

/* h:many({ key, ... }) -> { [i] = bytes } for the keys found. */
static int h_many(lua_State *L)
{
    lc_handle *h = lc_check_handle(L, 1);
    cachy_error err;
    size_t n, i;
    int rc;
    cachy_slice *keys;
    cachy_buf *outs;
    int *found;
    luaL_checktype(L, 2, LUA_TTABLE);
    n = cachy_rawlen(L, 2);
    lua_newtable(L);
    if (n == 0)
        return 1;
    keys = lc_many_block(L, n, &outs, &found);
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, 2, (int)i + 1);
        keys[i].ptr = luaL_checklstring(L, -1, &keys[i].len);
        lua_pop(L, 1);      /* still referenced by the keys table */
    }
    rc = cachy_many(h->store, keys, n, outs, found, &err);
    for (i = 0; i < n; i++) {
        if (rc == 0 && found[i]) {
            lua_pushlstring(L, outs[i].data, outs[i].len);
            lua_rawseti(L, -3, (int)i + 1);
        }
        cachy_buf_free(&outs[i]);
    }
    if (rc < 0)
        return lc_fail(L, &err);
    lua_pop(L, 1);
    return 1;
}

/* h:put_many({ key, ... }, { bytes, ... }, ms) */
static int h_put_many(lua_State *L)
{
    lc_handle *h = lc_check_handle(L, 1);
    cachy_error err;
    size_t n, i;
    cachy_slice *keys, *vals;
    int64_t ms = arg_ms(L, 4);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    n = cachy_rawlen(L, 2);
    if (n == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    keys = lua_newuserdata(L, 2 * n * sizeof *keys);
    vals = keys + n;
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, 2, (int)i + 1);
        keys[i].ptr = luaL_checklstring(L, -1, &keys[i].len);
        lua_rawgeti(L, 3, (int)i + 1);
        vals[i].ptr = luaL_checklstring(L, -1, &vals[i].len);
        lua_pop(L, 2);      /* still referenced by the tables */
    }
    if (cachy_put_many(h->store, keys, vals, n, ms, &err) != 0)
        return lc_fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static int h_stats(lua_State *L)
{
    lc_handle *h = lc_check_handle(L, 1);
    cachy_error err;
    cachy_stats s;
    if (cachy_stats_of(h->store, &s, &err) < 0)
        return lc_fail(L, &err);
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

static int h_prune(lua_State *L)
{
    lc_handle *h = lc_check_handle(L, 1);
    cachy_error err;
    if (cachy_prune(h->store, &err) < 0)
        return lc_fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* h:ttl(key) -> milliseconds left (0: no expiry), or nothing for a miss. */
static int h_ttl(lua_State *L)
{
    lc_handle *h = lc_check_handle(L, 1);
    cachy_error err;
    int64_t ms = 0;
    int rc = cachy_ttl(h->store, arg_bytes(L, 2), &ms, &err);
    if (rc < 0)
        return lc_fail(L, &err);
    if (rc == 0)
        return 0;
    cachy_pushinteger(L, ms);
    return 1;
}

/* "store 'main' (redis 127.0.0.1:6379)": how messages made in Lua begin. */
static int h_describe(lua_State *L)
{
    lc_handle *h = lc_check_handle(L, 1);
    cachy_error err;
    size_t n;
    cachy_error_set(&err, h->store, CACHY_OK, "%s", "");
    n = strlen(err.msg);
    lua_pushlstring(L, err.msg, n >= 2 ? n - 2 : n);    /* without the ": " */
    return 1;
}

static int h_close(lua_State *L)
{
    lc_handle *h = luaL_checkudata(L, 1, HANDLE_MT);
    if (h->store != NULL)
        cachy_store_close(h->store);
    return 0;
}

static int h_gc(lua_State *L)
{
    lc_handle *h = luaL_checkudata(L, 1, HANDLE_MT);
    if (h->store != NULL) {
        cachy_store_free(h->store);
        h->store = NULL;
    }
    lc_free_recent(L, h);
    cachy_buf_free(&h->buf);
    cachy_buf_free(&h->key);
    cachy_buf_free(&h->batch);
    return 0;
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

/*
 * core.open(name, driver, prefix, config): a handle on a store of a
 * built-in driver, configured from the fields the driver accepts (config
 * was validated by cachy/init.lua); nil when the driver is not built in.
 * Nothing connects before the first operation.
 */
static int core_open(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1), *driver = luaL_checkstring(L, 2);
    const char *prefix = luaL_checkstring(L, 3);
    const cachy_store_ops *ops = cachy_driver_find(driver);
    const cachy_field *f;
    cachy_options opts = { 0 };
    lc_handle *h;
    luaL_checktype(L, 4, LUA_TTABLE);
    if (ops == NULL)
        return 0;
    h = lua_newuserdata(L, sizeof *h);
    memset(h, 0, sizeof *h);
    luaL_getmetatable(L, HANDLE_MT);
    lua_setmetatable(L, -2);
    for (f = cachy_driver_fields(ops); f->name; f++) {
        lua_getfield(L, 4, f->name);
        if (!lua_isnil(L, -1) && add_option(L, &opts, f->name, f->type) != 0) {
            cachy_options_free(&opts);
            return luaL_error(L, "not enough memory");
        }
        lua_pop(L, 1);
    }
    h->store = cachy_store_new(name, driver, ops, prefix, &opts);
    if (h->store == NULL) {
        cachy_options_free(&opts);
        return luaL_error(L, "not enough memory");
    }
    return 1;
}

static const luaL_Reg handle_methods[] = {
    { "get", h_get },
    { "put", h_put },
    { "add", h_add },
    { "forget", h_forget },
    { "incr", h_incr },
    { "forget_if", h_forget_if },
    { "touch_if", h_touch_if },
    { "flush", h_flush },
    { "many", h_many },
    { "put_many", h_put_many },
    { "stats", h_stats },
    { "prune", h_prune },
    { "ttl", h_ttl },
    { "describe", h_describe },
    { "close", h_close },
    { NULL, NULL },
};

void lc_open_store(lua_State *L)
{
    lc_new_class(L, HANDLE_MT, handle_methods, h_gc);
    lua_pushcfunction(L, core_open);
    lua_setfield(L, -2, "open");
}

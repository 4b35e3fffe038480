/*
 * store_lua.c: a store whose operations are methods of a Lua table (SPEC
 * section 8), so drivers registered with cache:extend get every repository
 * feature for free. Values cross as byte strings, lifetimes as seconds.
 * A method that raises, or returns nil plus an error, becomes a backend
 * error naming the store.
 */
#include <string.h>

#include "store_lua.h"

static const cachy_field lua_fields[] = { { NULL, CACHY_OPT_STRING, 0 } };

static lua_State *host_state(cachy_store *s)
{
    cachy_lua_host *h = cachy_store_host(s);
    return h ? h->L : NULL;
}

/* The store's methods may use the cache again (the same store included),
 * which points the host at their own stack frame: restore ours after. */
static int protected_call(cachy_lua_host *h, int nargs, int nres)
{
    cachy_lua_host saved = *h;
    int rc = lua_pcall(h->L, nargs, nres, 0);
    *h = saved;
    return rc;
}

/* Sets err from a failed call: the raised message or the returned err. */
static int fail_with_top(cachy_store *s, lua_State *L, int pop, cachy_error *err)
{
    const char *msg = lua_tostring(L, -1);
    cachy_error_set(err, s, CACHY_EBACKEND, "%s", msg ? msg : luaL_typename(L, -1));
    lua_pop(L, pop);
    return -1;
}

/*
 * Calls instance:method(args...) with the nargs values on top of the stack,
 * leaving nres results. Returns 0, or -1 with err set and the stack as it
 * was before the arguments were pushed. `optional`: a missing method is
 * reported as 1 (caller falls back) instead of an error.
 */
static int call_method(cachy_store *s, const char *method, int nargs, int nres, int optional,
                       cachy_error *err)
{
    cachy_lua_host *h = cachy_store_host(s);
    lua_State *L = h->L;
    int base;
    lua_getfield(L, h->slots, "instance");
    lua_getfield(L, -1, method);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 2 + nargs);
        if (optional)
            return 1;
        cachy_error_set(err, s, CACHY_EMISUSE, "the store has no method '%s'", method);
        return -1;
    }
    /* stack: args... instance fn  ->  fn instance args... */
    base = lua_gettop(L) - nargs - 1;
    lua_insert(L, base);        /* fn args... instance */
    lua_insert(L, base + 1);    /* fn instance args... */
    if (protected_call(h, nargs + 1, nres + 1) != LUA_OK)
        return fail_with_top(s, L, 1, err);
    /* Lua's failure convention: nil, err */
    if (lua_isnil(L, -(nres + 1)) && !lua_isnil(L, -nres)) {
        lua_pushvalue(L, -nres);    /* the err */
        return fail_with_top(s, L, nres + 2, err);
    }
    lua_pop(L, 1);              /* the extra result only carried an error */
    return 0;
}

static int ls_open(cachy_store *s, cachy_error *err)
{
    cachy_lua_host *h = cachy_store_host(s);
    lua_State *L = h ? h->L : NULL;
    if (L == NULL) {
        cachy_error_set(err, s, CACHY_EMISUSE, "no Lua state to call the store with");
        return -1;
    }
    lua_getfield(L, h->slots, "factory");
    lua_getfield(L, h->slots, "config");
    if (protected_call(h, 1, 2) != LUA_OK)
        return fail_with_top(s, L, 1, err);
    if (lua_isnil(L, -2) && !lua_isnil(L, -1)) {
        lua_remove(L, -2);
        return fail_with_top(s, L, 1, err);
    }
    lua_pop(L, 1);
    if (!lua_istable(L, -1) && !lua_isuserdata(L, -1)) {
        cachy_error_set(err, s, CACHY_EMISUSE, "the driver's factory returned a %s, not a store table",
                        luaL_typename(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    lua_setfield(L, h->slots, "instance");
    s->impl = h;
    return 0;
}

static int ls_get(cachy_store *s, cachy_slice key, cachy_buf *out, cachy_error *err)
{
    lua_State *L = host_state(s);
    size_t n;
    const char *p;
    int rc;
    lua_pushlstring(L, key.ptr, key.len);
    if (call_method(s, "get", 1, 1, 0, err) != 0)
        return -1;
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    if (lua_type(L, -1) != LUA_TSTRING) {
        cachy_error_set(err, s, CACHY_ECORRUPT, "get returned a %s, not a string",
                        luaL_typename(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    p = lua_tolstring(L, -1, &n);
    rc = cachy_buf_set(out, p, n);
    lua_pop(L, 1);
    if (rc != 0) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    return 1;
}

static void push_seconds(lua_State *L, int64_t ttl_ms)
{
    if (ttl_ms % 1000 == 0)
        cachy_pushinteger(L, ttl_ms / 1000);
    else
        lua_pushnumber(L, (lua_Number)ttl_ms / 1000.0);
}

/* Runs a write method; the result is read as a boolean. */
static int write_method(cachy_store *s, const char *method, int nargs, cachy_error *err)
{
    lua_State *L = host_state(s);
    int ok;
    if (call_method(s, method, nargs, 1, 0, err) != 0)
        return -1;
    ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return ok;
}

static int ls_put(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                   cachy_error *err)
{
    lua_State *L = host_state(s);
    lua_pushlstring(L, key.ptr, key.len);
    lua_pushlstring(L, val.ptr, val.len);
    push_seconds(L, ttl_ms);
    return write_method(s, "put", 3, err) < 0 ? -1 : 0;
}

static int ls_add(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                   cachy_error *err)
{
    lua_State *L = host_state(s);
    lua_pushlstring(L, key.ptr, key.len);
    lua_pushlstring(L, val.ptr, val.len);
    push_seconds(L, ttl_ms);
    return write_method(s, "add", 3, err);
}

static int ls_forget(cachy_store *s, cachy_slice key, cachy_error *err)
{
    lua_State *L = host_state(s);
    lua_pushlstring(L, key.ptr, key.len);
    return write_method(s, "forget", 1, err);
}

static int ls_incr(cachy_store *s, cachy_slice key, int64_t by, int64_t *result,
                    cachy_error *err)
{
    lua_State *L = host_state(s);
    lua_pushlstring(L, key.ptr, key.len);
    cachy_pushinteger(L, by);
    if (call_method(s, "increment", 2, 1, 0, err) != 0)
        return -1;
    if (!cachy_isinteger(L, -1)) {
        cachy_error_set(err, s, CACHY_EBACKEND, "increment returned a %s, not an integer",
                        luaL_typename(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    *result = cachy_tointeger(L, -1);
    lua_pop(L, 1);
    return 0;
}

/* flush(prefix): the prefix ("" for none) lets the store keep other
 * managers' keys, as the built-in stores do. */
static int ls_flush(cachy_store *s, cachy_slice prefix, cachy_error *err)
{
    lua_pushlstring(host_state(s), prefix.ptr, prefix.len);
    return write_method(s, "flush", 1, err) < 0 ? -1 : 0;
}

static int ls_many(cachy_store *s, const cachy_slice *keys, size_t n, cachy_buf *outs, int *found,
                    cachy_error *err)
{
    lua_State *L = host_state(s);
    size_t i;
    int rc;
    luaL_checkstack(L, 4, "cachy: many");
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
        lua_pushlstring(L, keys[i].ptr, keys[i].len);
        lua_rawseti(L, -2, (int)i + 1);
    }
    rc = call_method(s, "many", 1, 1, 1, err);
    if (rc < 0)
        return -1;
    if (rc == 1) {              /* no many(): one get per key */
        for (i = 0; i < n; i++) {
            rc = ls_get(s, keys[i], &outs[i], err);
            if (rc < 0)
                return -1;
            found[i] = rc;
        }
        return 0;
    }
    if (!lua_istable(L, -1)) {
        cachy_error_set(err, s, CACHY_EBACKEND, "many returned a %s, not a table",
                        luaL_typename(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    for (i = 0; i < n; i++) {
        lua_pushlstring(L, keys[i].ptr, keys[i].len);
        lua_rawget(L, -2);
        found[i] = 0;
        if (lua_type(L, -1) == LUA_TSTRING) {
            size_t len;
            const char *p = lua_tolstring(L, -1, &len);
            if (cachy_buf_set(&outs[i], p, len) != 0) {
                lua_pop(L, 2);
                cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
                return -1;
            }
            found[i] = 1;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

static int ls_put_many(cachy_store *s, const cachy_slice *keys, const cachy_slice *vals, size_t n,
                        int64_t ttl_ms, cachy_error *err)
{
    lua_State *L = host_state(s);
    size_t i;
    int rc;
    luaL_checkstack(L, 4, "cachy: put_many");
    lua_createtable(L, 0, (int)n);
    for (i = 0; i < n; i++) {
        lua_pushlstring(L, keys[i].ptr, keys[i].len);
        lua_pushlstring(L, vals[i].ptr, vals[i].len);
        lua_rawset(L, -3);
    }
    push_seconds(L, ttl_ms);
    rc = call_method(s, "put_many", 2, 1, 1, err);
    if (rc < 0)
        return -1;
    if (rc == 1) {              /* no put_many(): one put per pair */
        for (i = 0; i < n; i++)
            if (ls_put(s, keys[i], vals[i], ttl_ms, err) != 0)
                return -1;
        return 0;
    }
    lua_pop(L, 1);
    return 0;
}

static void ls_close(cachy_store *s)
{
    cachy_lua_host *h = cachy_store_host(s);
    cachy_error ignored;
    if (h == NULL || h->L == NULL)
        return;
    /* The store's own close() is optional; its failure has nobody to report to. */
    if (call_method(s, "close", 0, 1, 1, &ignored) == 0)
        lua_pop(h->L, 1);
    lua_pushnil(h->L);
    lua_setfield(h->L, h->slots, "instance");
    s->impl = NULL;
}

const cachy_store_ops cachy_lua_ops = {
    .name = "lua",
    .fields = lua_fields,
    .open = ls_open,
    .get = ls_get,
    .put = ls_put,
    .add = ls_add,
    .forget = ls_forget,
    .incr = ls_incr,
    .flush = ls_flush,
    .many = ls_many,
    .put_many = ls_put_many,
    .close = ls_close,
};

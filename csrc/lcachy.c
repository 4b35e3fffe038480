/*
 * lcachy.c: the Lua module cachy.core. Kernels that are pure and hot (the
 * codec, the decorator's argument hash, TTL forms, tag versions), C stores
 * as handles (lcachy_store.c) and the fast paths bound into their
 * repositories (lcachy_fast.c). The manager, repositories, tags, remember
 * and the decorator are lua/cachy/: no function here calls a user
 * function, so any of those may yield.
 */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "json.h"
#include "lcachy.h"

/* The encoding functions' buffer, upvalue 1 of each (lc_new_buffer). */
static cachy_buf *scratch(lua_State *L)
{
    cachy_buf *b = lua_touserdata(L, lua_upvalueindex(1));
    b->len = 0;
    return b;
}

/* Buffers past this size are given back after the call that grew them. */
#define KEEP_BUFFER (64 * 1024)

/* A buffer that C functions keep as an upvalue from call to call (no C
 * code runs Lua code, so no call comes inside another), so that a raise
 * cannot leak it and a call allocates nothing: a userdata made per call
 * costs a finalizer and a malloc each time, 0.6 us of a cachy:put inside
 * nginx (bench/RESULTS.md). Freed with the functions. */
cachy_buf *lc_new_buffer(lua_State *L)
{
    cachy_buf *b = lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, "cachy.Buffer");
    lua_setmetatable(L, -2);
    return b;
}

int lc_push_buffer(lua_State *L, cachy_buf *b)
{
    lua_pushlstring(L, b->data, b->len);
    if (b->cap > KEEP_BUFFER)
        cachy_buf_free(b);
    return 1;
}

static int buffer_gc(lua_State *L)
{
    cachy_buf_free(lua_touserdata(L, 1));
    return 0;
}

static int fail_why(lua_State *L, const char *why)
{
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
}

/* core.encode(value [, root]): the bytes of a storable value (a top-level
 * integer as decimal text), or nil and what cannot be stored, by path. */
static int core_encode(lua_State *L)
{
    char why[256];
    const char *root = luaL_optstring(L, 2, "value");
    cachy_buf *b;
    luaL_checkany(L, 1);
    lua_settop(L, 2);
    b = scratch(L);
    if (cachy_codec_encode(L, 1, root, b, why, sizeof why) != 0)
        return fail_why(L, why);
    return lc_push_buffer(L, b);
}

/* core.decode(bytes): true, value; or false and why the bytes are not one. */
static int core_decode(lua_State *L)
{
    char why[256];
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    lua_pushboolean(L, 1);
    if (cachy_codec_decode(L, p, n, why, sizeof why) == 0)
        return 2;
    lua_pushboolean(L, 0);
    lua_pushstring(L, why);
    return 2;
}

/* core.encode_tuple(n, ...): n values (nils kept) as one MessagePack array. */
static int core_encode_tuple(lua_State *L)
{
    char why[256];
    int n = (int)luaL_checknumber(L, 1);
    cachy_buf *b;
    if (n < 0 || n > lua_gettop(L) - 1)
        lua_settop(L, n + 1);
    b = scratch(L);
    if (cachy_codec_encode_tuple(L, 2, n, b, why, sizeof why) != 0)
        return fail_why(L, why);
    return lc_push_buffer(L, b);
}

/* core.decode_tuple(bytes): n, values...; or nil and why. */
static int core_decode_tuple(lua_State *L)
{
    char why[256];
    size_t len;
    const char *p = luaL_checklstring(L, 1, &len);
    int n;
    lua_pushnil(L);     /* the count's place */
    n = cachy_codec_decode_tuple(L, p, len, why, sizeof why);
    if (n < 0)
        return fail_why(L, why);
    cachy_pushinteger(L, n);
    lua_replace(L, 2);
    return n + 1;
}

/* core.args_key(prefix, ...): "prefix:<hash of the arguments' canonical
 * form>", or nil and what argument cannot be part of a key. */
static int core_args_key(lua_State *L)
{
    char hex[33], why[256];
    size_t plen;
    const char *prefix = luaL_checklstring(L, 1, &plen);
    if (cachy_codec_args_hash(L, 2, lua_gettop(L) - 1, hex, why, sizeof why) != 0)
        return fail_why(L, why);
    lua_pushlstring(L, prefix, plen);
    lua_pushliteral(L, ":");
    lua_pushlstring(L, hex, 32);
    lua_concat(L, 3);
    return 1;
}

/* core.parse_int(bytes): the integer when bytes are exactly a decimal int64. */
static int core_parse_int(lua_State *L)
{
    cachy_slice s;
    int64_t v;
    s.ptr = luaL_checklstring(L, 1, &s.len);
    if (!cachy_parse_int(s, &v))
        return 0;
    cachy_pushinteger(L, v);
    return 1;
}

/* core.quote_key(key): the key as messages show it. */
static int core_quote_key(lua_State *L)
{
    char q[96];
    cachy_slice s;
    s.ptr = luaL_checklstring(L, 1, &s.len);
    cachy_quote_key(s, q, sizeof q);
    lua_pushstring(L, q);
    return 1;
}

/* core.hash(bytes): XXH3-128 as 32 hex digits. */
static int core_hash(lua_State *L)
{
    char hex[33];
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    cachy_hash128_hex(p, n, hex);
    lua_pushlstring(L, hex, 32);
    return 1;
}

/* core.fresh_version(tag): a new tag version, random enough that a version
 * key lost to eviction never comes back with a value it had before
 * (nanosecond clocks, the process and the tag's name, hashed); it fits a
 * double's integers, and 0 is never one ("no version"). */
static int core_fresh_version(lua_State *L)
{
    struct {
        struct timespec wall, mono;
        long pid;
        uint64_t name;
    } seed;
    size_t n;
    const char *tag = luaL_checklstring(L, 1, &n);
    memset(&seed, 0, sizeof seed);
    clock_gettime(CLOCK_REALTIME, &seed.wall);
    clock_gettime(CLOCK_MONOTONIC, &seed.mono);
    seed.pid = (long)getpid();
    seed.name = XXH3_64bits(tag, n);
    cachy_pushinteger(L, (int64_t)(XXH3_64bits(&seed, sizeof seed) >> 12) | 1);
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

/* core.now_ms(): a monotonic clock, for throttling reports. */
static int core_now_ms(lua_State *L)
{
    cachy_pushinteger(L, cachy_monotonic_ms());
    return 1;
}

static const luaL_Reg core_functions[] = {
    { "now_ms", core_now_ms },
    { "decode", core_decode },
    { "json_encode", cachy_json_encode },
    { "json_decode", cachy_json_decode },
    { "decode_tuple", core_decode_tuple },
    { "args_key", core_args_key },
    { "parse_int", core_parse_int },
    { "quote_key", core_quote_key },
    { "hash", core_hash },
    { "fresh_version", core_fresh_version },
    { "ttl", lc_core_ttl },
    { "value_root", lc_core_value_root },
    { "envelope", lc_core_envelope },
    { "envelope_open", lc_core_envelope_open },
    { "bind", lc_bind },
    { "jit_bind", lc_jit_bind },
    { "driver_fields", core_driver_fields },
    { "redis_reader", lc_redis_reader },
    { "redis_lock_command", lc_redis_lock_command },
    { "mc_key", lc_mw_key },
    { "mc_expiry", lc_mw_expiry },
    { "mc_request", lc_mw_request },
    { "mc_store_extras", lc_mw_store_extras },
    { "mc_incr_extras", lc_mw_incr_extras },
    { "mc_header", lc_mw_header },
    { "mc_unpad", lc_mw_unpad },
    { "mc_incr_plan", lc_mw_incr_plan },
    { "mc_incr_result", lc_mw_incr_result },
    { "mc_repair", lc_mw_repair },
    { "mc_status", lc_mw_status },
    { "mc_ring", lc_mw_ring_new },
    { NULL, NULL },
};

LUALIB_API int luaopen_cachy_core(lua_State *L)
    __attribute__((visibility("default")));

void lc_new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

LUALIB_API int luaopen_cachy_core(lua_State *L)
{
    lua_settop(L, 0);                           /* require passes the name and path */
    luaL_newmetatable(L, "cachy.Buffer");
    lua_pushcfunction(L, buffer_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_setfuncs(L, core_functions, 0);
    {
        static const luaL_Reg encoders[] = {
            { "encode", core_encode },
            { "encode_tuple", core_encode_tuple },
            { NULL, NULL },
        };
        lc_new_buffer(L);
        luaL_setfuncs(L, encoders, 1);
    }
    lc_open_store(L);
    lc_open_redis(L);
    lc_open_memcached_wire(L);
    lc_open_lock(L);
    return 1;
}

/*
 * lcachy_memcached.c: memcached's protocol (memcached_wire.c) for Lua, for
 * transports written in Lua (lua/cachy/resty/memcached.lua over nginx
 * cosockets). Bytes in, bytes out; no sockets here.
 *
 *   core.mc_key(key)                -> the wire key (the blocking driver's mapping)
 *   core.mc_expiry(ms)              -> memcached's exptime (whole seconds, absolute past 30 days)
 *   core.mc_request(op, key, extras, value, cas, opaque) -> one binary-protocol request
 *   core.mc_store_extras(flags, exptime)   -> set/add extras (8 bytes)
 *   core.mc_incr_extras(by [, undo])       -> increment extras (20 bytes, never creates)
 *   core.mc_header(bytes24)         -> opcode, status, keylen, extlen, bodylen, opaque, cas
 *                                      (cas: 8 bytes); nil, msg for a bad magic byte
 *   core.mc_unpad(value)            -> the value without decr's space padding
 *   core.mc_incr_plan(value, by)    -> what an increment does next (see below)
 *   core.mc_incr_result(after8, by) -> sum, wrapped; nil when it left int64
 *   core.mc_repair(value)           -> signed text of a wrapped counter, or nil
 *   core.mc_status(status)          -> libmemcached's words for a response
 *                                      status, and whether it is a server failure
 *   core.mc_ring(servers)           -> the ketama continuum of those servers
 *                                      (nil, msg for a bad entry)
 *     ring:count(), ring:server(wk) (owner now, 1-based), ring:home(wk)
 *     (owner in the full continuum), ring:eject(i), ring:is_out(i),
 *     ring:address(i) -> label, host, port (port nil for a Unix socket),
 *     ring:addresses() (the servers as the driver's messages name them)
 *
 * The rules themselves are memcached_wire.c's, the blocking driver's too.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lcachy.h"
#include "memcached_wire.h"

#define RING_MT "cachy.MemcachedRing"

/* ---- keys and lifetimes ---------------------------------------------------- */

int lc_mw_key(lua_State *L)
{
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    char out[CACHY_MC_HASHED_MAX + 1];
    if (cachy_mc_key_is_plain(p, n)) {
        lua_pushvalue(L, 1);
        return 1;
    }
    lua_pushlstring(L, out, cachy_mc_key_hashed(p, n, out));
    return 1;
}

int lc_mw_expiry(lua_State *L)
{
    lua_Number ms = luaL_optnumber(L, 1, 0);
    int64_t ttl_ms;
    if (!(ms >= 1))
        ttl_ms = 0;                                     /* none, and NaN */
    else if (ms > (lua_Number)UINT32_MAX * 1000)
        ttl_ms = (int64_t)UINT32_MAX * 1000 + 1;        /* the largest exptime */
    else
        ttl_ms = (int64_t)ms;
    cachy_pushinteger(L, cachy_mc_expiry(ttl_ms));
    return 1;
}

/* ---- frames ---------------------------------------------------------------- */

/* core.mc_request(opcode, key, extras, value, cas, opaque) */
int lc_mw_request(lua_State *L)
{
    lua_Integer op = luaL_checkinteger(L, 1);
    size_t klen = 0, elen = 0, vlen = 0, clen = 0;
    const char *key = luaL_optlstring(L, 2, "", &klen);
    const char *ext = luaL_optlstring(L, 3, "", &elen);
    const char *val = luaL_optlstring(L, 4, "", &vlen);
    const char *cas = luaL_optlstring(L, 5, NULL, &clen);
    lua_Number opaque = luaL_optnumber(L, 6, 0);
    luaL_Buffer b;
    unsigned char h[24];
    luaL_argcheck(L, op >= 0 && op <= 0xff, 1, "an opcode from 0 to 255 expected");
    luaL_argcheck(L, klen <= 0xffff, 2, "key longer than 65535 bytes");
    luaL_argcheck(L, elen <= 0xff, 3, "extras longer than 255 bytes");
    luaL_argcheck(L, klen + elen + vlen <= 0xffffffffu, 4, "body longer than 4 GiB");
    luaL_argcheck(L, cas == NULL || clen == 8, 5, "a CAS of 8 bytes expected");
    luaL_argcheck(L, opaque >= 0 && opaque <= 4294967295.0, 6, "an opaque from 0 to 2^32-1 expected");
    cachy_mc_request_header(h, (unsigned)op, klen, elen, vlen, cas, (uint32_t)opaque);
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, (const char *)h, sizeof h);
    luaL_addlstring(&b, ext, elen);
    luaL_addlstring(&b, key, klen);
    luaL_addlstring(&b, val, vlen);
    luaL_pushresult(&b);
    return 1;
}

/* core.mc_store_extras(flags, exptime): set, add (and their quiet forms). */
int lc_mw_store_extras(lua_State *L)
{
    unsigned char e[8];
    cachy_mc_store_extras(e, (uint32_t)(uint64_t)luaL_optnumber(L, 1, 0),
                          (uint32_t)(uint64_t)luaL_optnumber(L, 2, 0));
    lua_pushlstring(L, (const char *)e, 8);
    return 1;
}

static int64_t arg_int64(lua_State *L, int idx)
{
#if CACHY_HAS_INTEGERS
    return (int64_t)luaL_checkinteger(L, idx);
#else
    return (int64_t)luaL_checknumber(L, idx);
#endif
}

/* core.mc_incr_extras(by [, undo]): delta by, or its opposite (modulo 2^64). */
int lc_mw_incr_extras(lua_State *L)
{
    uint64_t delta = (uint64_t)arg_int64(L, 1);
    unsigned char e[20];
    if (lua_toboolean(L, 2))
        delta = (uint64_t)0 - delta;
    cachy_mc_incr_extras(e, delta);
    lua_pushlstring(L, (const char *)e, 20);
    return 1;
}

/* core.mc_header(bytes): a response header's fields. */
int lc_mw_header(lua_State *L)
{
    size_t n;
    const unsigned char *h = (const unsigned char *)luaL_checklstring(L, 1, &n);
    luaL_argcheck(L, n >= 24, 1, "24 bytes expected");
    if (h[0] != 0x81) {
        char msg[64];
        snprintf(msg, sizeof msg, "not a binary-protocol response (magic byte 0x%02x)", (unsigned)h[0]);
        lua_pushnil(L);
        lua_pushstring(L, msg);
        return 2;
    }
    lua_pushinteger(L, h[1]);                                           /* opcode */
    lua_pushinteger(L, (lua_Integer)cachy_mc_get_be(h + 6, 2));         /* status */
    lua_pushinteger(L, (lua_Integer)cachy_mc_get_be(h + 2, 2));         /* key length */
    lua_pushinteger(L, h[4]);                                           /* extras length */
    lua_pushnumber(L, (lua_Number)cachy_mc_get_be(h + 8, 4));           /* body length */
    lua_pushnumber(L, (lua_Number)cachy_mc_get_be(h + 12, 4));          /* opaque */
    lua_pushlstring(L, (const char *)h + 16, 8);                        /* cas */
    return 7;
}

/* ---- counters ---------------------------------------------------------------- */

int lc_mw_unpad(lua_State *L)
{
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    size_t m = cachy_mc_unpadded_len(p, n);
    if (m == n)
        lua_pushvalue(L, 1);
    else
        lua_pushlstring(L, p, m);
    return 1;
}

static void push_int_text(lua_State *L, int64_t v)
{
    char text[24];
    lua_pushlstring(L, text, cachy_format_int(v, text));
}

/*
 * core.mc_incr_plan(value, by): the next step of an increment that read
 * `value` (mc_incr_once's choice):
 *   "not_integer"            not a counter
 *   "wrapped"                unsigned text above INT64_MAX: wait on it
 *   "overflow"               the sum leaves int64
 *   "same", v                by == 0
 *   "incr"                   memcached's own incr (both sides >= 0)
 *   "cas", r, text           compare-and-swap of the new decimal text
 */
int lc_mw_incr_plan(lua_State *L)
{
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    int64_t by = arg_int64(L, 2), v = 0, r = 0;
    switch (cachy_mc_incr_plan(p, n, by, &v, &r)) {
    case CACHY_MC_NOT_INTEGER:
        lua_pushliteral(L, "not_integer");
        return 1;
    case CACHY_MC_WRAPPED:
        lua_pushliteral(L, "wrapped");
        return 1;
    case CACHY_MC_OVERFLOW:
        lua_pushliteral(L, "overflow");
        return 1;
    case CACHY_MC_SAME:
        lua_pushliteral(L, "same");
        cachy_pushinteger(L, v);
        return 2;
    case CACHY_MC_INCR:
        lua_pushliteral(L, "incr");
        return 1;
    default:
        lua_pushliteral(L, "cas");
        cachy_pushinteger(L, r);
        push_int_text(L, r);
        return 3;
    }
}

/* core.mc_incr_result(after8, by): the counter after memcached's incr by
 * (uint64)by, and whether the stored text is a two's complement to rewrite
 * signed; nil when the sum left int64 (the caller undoes the incr). */
int lc_mw_incr_result(lua_State *L)
{
    size_t n;
    const unsigned char *p = (const unsigned char *)luaL_checklstring(L, 1, &n);
    int64_t by = arg_int64(L, 2), sum;
    uint64_t after;
    luaL_argcheck(L, n == 8, 1, "8 bytes expected");
    after = cachy_mc_get_be(p, 8);
    if (cachy_mc_incr_sum(after, by, &sum) != 0) {
        lua_pushnil(L);
        return 1;
    }
    cachy_pushinteger(L, sum);
    lua_pushboolean(L, after > (uint64_t)INT64_MAX);
    return 2;
}

/* core.mc_repair(value): the signed text of a counter left as an unsigned
 * two's complement; nil when it is anything else. */
int lc_mw_repair(lua_State *L)
{
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    int64_t v;
    int wrapped;
    if (!cachy_mc_parse_counter(p, n, &v, &wrapped) || !wrapped)
        return 0;
    push_int_text(L, v);
    return 1;
}

/* ---- statuses ---------------------------------------------------------------- */

/* libmemcached's words for a binary status, lowercased as store_memcached.c's
 * mc_fail shows them, and whether the driver counts it as a server failure. */
int lc_mw_status(lua_State *L)
{
    memcached_return_t rc = cachy_mc_status_rc((unsigned)luaL_checkinteger(L, 1));
    char low[160];
    cachy_mc_lower(low, sizeof low, memcached_strerror(NULL, rc));
    lua_pushstring(L, low);
    lua_pushboolean(L, rc == MEMCACHED_UNKNOWN_READ_FAILURE);
    return 2;
}

/* ---- the continuum ----------------------------------------------------------- */

static cachy_mc_ring *check_ring(lua_State *L)
{
    cachy_mc_ring **u = luaL_checkudata(L, 1, RING_MT);
    if (*u == NULL)
        luaL_error(L, "attempt to use a freed memcached ring");
    return *u;
}

static int ring_gc(lua_State *L)
{
    cachy_mc_ring **u = luaL_checkudata(L, 1, RING_MT);
    cachy_mc_ring_free(*u);
    *u = NULL;
    return 0;
}

static size_t check_pos(lua_State *L, cachy_mc_ring *r, int idx)
{
    lua_Integer i = luaL_checkinteger(L, idx);
    luaL_argcheck(L, i >= 1 && (size_t)i <= r->n, idx, "no such server");
    return (size_t)i - 1;
}

static int ring_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_ring(L)->n);
    return 1;
}

/* ring:server(wire_key): the server that owns the key now (1-based);
 * ring:home(wire_key): the key's own server, with every server in. */
static int ring_owner(lua_State *L, int home)
{
    cachy_mc_ring *r = check_ring(L);
    size_t n;
    const char *k = luaL_checklstring(L, 2, &n);
    size_t pos = home ? cachy_mc_ring_home(r, k, n) : cachy_mc_ring_server(r, k, n);
    lua_pushinteger(L, (lua_Integer)pos + 1);
    return 1;
}

static int ring_server(lua_State *L) { return ring_owner(L, 0); }
static int ring_home(lua_State *L) { return ring_owner(L, 1); }

/* ring:eject(i): server i is left out for 2 seconds (from now). */
static int ring_eject(lua_State *L)
{
    cachy_mc_ring *r = check_ring(L);
    cachy_mc_ring_eject(r, check_pos(L, r, 2));
    return 0;
}

static int ring_is_out(lua_State *L)
{
    cachy_mc_ring *r = check_ring(L);
    lua_pushboolean(L, cachy_mc_ring_is_out(r, check_pos(L, r, 2)));
    return 1;
}

/* ring:address(i) -> label (as the driver's messages name it), host, port
 * (nil for a Unix socket, whose path is the host). */
static int ring_address(lua_State *L)
{
    cachy_mc_ring *r = check_ring(L);
    size_t i = check_pos(L, r, 2);
    const memcached_instance_st *inst = memcached_server_instance_by_position(r->mc, (uint32_t)i);
    const char *name = memcached_server_name(inst);
    if (name[0] == '/') {
        lua_pushstring(L, name);
        lua_pushstring(L, name);
        return 2;
    }
    lua_pushfstring(L, "%s:%d", name, (int)memcached_server_port(inst));
    lua_pushstring(L, name);
    lua_pushinteger(L, (lua_Integer)memcached_server_port(inst));
    return 3;
}

/* ring:addresses(): the servers as the driver's messages name them. */
static int ring_addresses(lua_State *L)
{
    lua_pushstring(L, check_ring(L)->address);
    return 1;
}

/* core.mc_ring(servers): nil, msg for a list the driver would refuse. */
int lc_mw_ring_new(lua_State *L)
{
    const char **entries = NULL, *not_string = NULL;
    size_t n = 0, i = 0;
    cachy_mc_ring **u;
    cachy_errcode code;
    char msg[CACHY_ERRMSG_MAX];
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        n = cachy_rawlen(L, 1);
        /* the strings stay in the table, which stays on the stack */
        entries = lua_newuserdata(L, (n ? n : 1) * sizeof *entries);
        for (i = 0; i < n && not_string == NULL; i++) {
            lua_rawgeti(L, 1, (int)i + 1);
            if (lua_type(L, -1) == LUA_TSTRING)
                entries[i] = lua_tostring(L, -1);
            else
                not_string = luaL_typename(L, -1);
            lua_pop(L, 1);
        }
    }
    u = lua_newuserdata(L, sizeof *u);
    *u = NULL;
    luaL_getmetatable(L, RING_MT);
    lua_setmetatable(L, -2);
    /* servers[i] is not a string: a bad entry before it is reported first */
    if (not_string != NULL) {
        if (i > 1 && (*u = cachy_mc_ring_new(entries, i - 1, &code, msg, sizeof msg)) == NULL &&
            code != CACHY_ENOMEM) {
            lua_pushnil(L);
            lua_pushstring(L, msg);
            return 2;
        }
        return luaL_error(L, "bad argument #1 to 'mc_ring' (servers[%d] is a %s, not a string)",
                          (int)i, not_string);
    }
    *u = cachy_mc_ring_new(entries, n, &code, msg, sizeof msg);
    if (*u == NULL) {
        if (code == CACHY_ENOMEM)
            return luaL_error(L, "not enough memory");
        lua_pushnil(L);
        lua_pushstring(L, msg);
        return 2;
    }
    return 1;
}

static const luaL_Reg ring_methods[] = {
    { "count", ring_count },
    { "server", ring_server },
    { "home", ring_home },
    { "eject", ring_eject },
    { "is_out", ring_is_out },
    { "address", ring_address },
    { "addresses", ring_addresses },
    { NULL, NULL },
};

/* The ring's metatable (the functions are in lcachy.c's core_functions). */
void lc_open_memcached_wire(lua_State *L)
{
    lc_new_class(L, RING_MT, ring_methods, ring_gc);
    cachy_pushinteger(L, CACHY_MC_EXPIRED);     /* core.mc_expired: forget_if's exptime */
    lua_setfield(L, -2, "mc_expired");
}

/*
 * lcachy_redis_cluster.c: Redis Cluster's pure parts (redis_proto.c: slots,
 * MOVED/ASK, the slot map) for the cosocket transport
 * (lua/cachy/resty/redis_cluster.lua), so that both transports route keys
 * with one implementation. No sockets here.
 *
 *   core.redis_slot(key)             -> the key's hash slot, 0-16383
 *   core.redis_redirect(text)        -> "MOVED" | "ASK", slot, host, port; or nil
 *   core.redis_address(text)         -> host, port of "host:port" or "[v6]:port"; or nil
 *   local m = core.redis_slot_map()
 *   m:add(host, port)                -> the node's index (1-based), added when new
 *   m:read(reply, asked_host)        -> true, or nil, why (reply: a CLUSTER SLOTS
 *                                       reply as core.redis_reader returns it)
 *   m:owner(key)                     -> the index of the master of key's slot, or nil
 *   m:set(slot, index)               -> the slot's master is node index (MOVED)
 *   m:node(index)                    -> host, port
 *   m:masters()                      -> { index, ... } of the nodes serving a slot
 */
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

#include "lcachy.h"
#include "redis_proto.h"

#define SLOT_MAP_MT "cachy.RedisSlotMap"
#define MAX_DEPTH 6

typedef struct lc_slot_map {
    cachy_slot_map map;
    int ready;                  /* map initialised (freed by __gc) */
} lc_slot_map;

static int l_slot(lua_State *L)
{
    size_t n;
    const char *key = luaL_checklstring(L, 1, &n);
    lua_pushinteger(L, (lua_Integer)cachy_redis_slot(key, n));
    return 1;
}

static int l_redirect(lua_State *L)
{
    size_t n;
    const char *text = luaL_checklstring(L, 1, &n);
    char host[CACHY_REDIS_HOST_MAX];
    unsigned slot;
    int port, kind = cachy_redis_redirect(text, n, &slot, host, &port);
    if (kind == 0)
        return 0;
    lua_pushstring(L, kind == 1 ? "MOVED" : "ASK");
    lua_pushinteger(L, (lua_Integer)slot);
    lua_pushstring(L, host);
    lua_pushinteger(L, port);
    return 4;
}

static int l_address(lua_State *L)
{
    char host[CACHY_REDIS_HOST_MAX];
    int port;
    if (cachy_redis_address(luaL_checkstring(L, 1), host, &port) != 0)
        return 0;
    lua_pushstring(L, host);
    lua_pushinteger(L, port);
    return 2;
}

static lc_slot_map *check_map(lua_State *L)
{
    return luaL_checkudata(L, 1, SLOT_MAP_MT);
}

static int l_slot_map(lua_State *L)
{
    lc_slot_map *m = lua_newuserdata(L, sizeof *m);
    m->ready = 0;
    luaL_getmetatable(L, SLOT_MAP_MT);
    lua_setmetatable(L, -2);
    cachy_slot_map_init(&m->map);
    m->ready = 1;
    return 1;
}

static int map_gc(lua_State *L)
{
    lc_slot_map *m = check_map(L);
    if (m->ready)
        cachy_slot_map_free(&m->map);
    m->ready = 0;
    return 0;
}

static int map_add(lua_State *L)
{
    lc_slot_map *m = check_map(L);
    const char *host = luaL_checkstring(L, 2);
    lua_Integer port = luaL_checkinteger(L, 3);
    int i;
    luaL_argcheck(L, port >= 1 && port <= 65535, 3, "must be a port from 1 to 65535");
    i = cachy_slot_map_node(&m->map, host, (int)port);
    if (i < 0)
        return luaL_error(L, "too many nodes, or not enough memory");
    lua_pushinteger(L, i + 1);
    return 1;
}

/* The Lua value at idx (a reply as lcachy_redis.c's push_reply makes it) as
 * a reply tree; NULL (why set) on a value no reply has. */
static cachy_resp *to_resp(lua_State *L, int idx, int depth, const char **why)
{
    cachy_resp *r = calloc(1, sizeof *r);
    size_t i, n;
    if (r == NULL) {
        *why = "not enough memory";
        return NULL;
    }
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        const char *s = lua_tolstring(L, idx, &n);
        r->type = REDIS_REPLY_STRING;
        if ((r->str = malloc(n + 1)) == NULL)
            goto oom;
        memcpy(r->str, s, n + 1);
        r->len = n;
        return r;
    }
    case LUA_TNUMBER:
        r->type = REDIS_REPLY_INTEGER;
        r->integer = (long long)lua_tonumber(L, idx);
        return r;
    case LUA_TBOOLEAN:
        r->type = REDIS_REPLY_NIL;
        return r;
    case LUA_TTABLE:
        if (depth >= MAX_DEPTH) {
            *why = "reply nested too deeply";
            free(r);
            return NULL;
        }
        lua_getfield(L, idx, "err");
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *s = lua_tolstring(L, -1, &n);
            r->type = REDIS_REPLY_ERROR;
            r->str = malloc(n + 1);
            if (r->str)
                memcpy(r->str, s, n + 1), r->len = n;
            lua_pop(L, 1);
            if (r->str == NULL)
                goto oom;
            return r;
        }
        lua_pop(L, 1);
        r->type = REDIS_REPLY_ARRAY;
        n = cachy_rawlen(L, idx);
        if ((r->elem = calloc(n ? n : 1, sizeof *r->elem)) == NULL)
            goto oom;
        r->n = n;
        for (i = 0; i < n; i++) {
            lua_rawgeti(L, idx, (int)i + 1);
            r->elem[i] = to_resp(L, lua_gettop(L), depth + 1, why);
            lua_pop(L, 1);
            if (r->elem[i] == NULL) {
                cachy_resp_free(r);
                return NULL;
            }
        }
        return r;
    default:
        *why = "not a reply";
        free(r);
        return NULL;
    }
oom:
    cachy_resp_free(r);
    *why = "not enough memory";
    return NULL;
}

static int map_read(lua_State *L)
{
    lc_slot_map *m = check_map(L);
    const char *asked = luaL_checkstring(L, 3), *why = NULL;
    char text[120];
    cachy_resp *r;
    int rc;
    luaL_checkany(L, 2);
    r = to_resp(L, 2, 0, &why);
    if (r == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, why);
        return 2;
    }
    rc = cachy_slot_map_read(&m->map, r, asked, text, sizeof text);
    cachy_resp_free(r);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, text);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int map_owner(lua_State *L)
{
    lc_slot_map *m = check_map(L);
    size_t n;
    const char *key = luaL_checklstring(L, 2, &n);
    unsigned o = m->map.owner[cachy_redis_slot(key, n)];
    if (o == CACHY_SLOT_NONE)
        return 0;
    lua_pushinteger(L, (lua_Integer)o + 1);
    return 1;
}

static int map_set(lua_State *L)
{
    lc_slot_map *m = check_map(L);
    lua_Integer slot = luaL_checkinteger(L, 2), i = luaL_checkinteger(L, 3);
    luaL_argcheck(L, slot >= 0 && slot < CACHY_REDIS_SLOTS, 2, "must be a slot, 0 to 16383");
    luaL_argcheck(L, i >= 1 && (size_t)i <= m->map.n, 3, "must be a node's index");
    m->map.owner[slot] = (unsigned short)(i - 1);
    return 0;
}

static int map_node(lua_State *L)
{
    lc_slot_map *m = check_map(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    luaL_argcheck(L, i >= 1 && (size_t)i <= m->map.n, 2, "must be a node's index");
    lua_pushstring(L, m->map.nodes[i - 1].host);
    lua_pushinteger(L, m->map.nodes[i - 1].port);
    return 2;
}

static int map_masters(lua_State *L)
{
    lc_slot_map *m = check_map(L);
    unsigned char *seen = lua_newuserdata(L, m->map.n ? m->map.n : 1);
    size_t i;
    int k = 0;
    memset(seen, 0, m->map.n ? m->map.n : 1);
    lua_newtable(L);
    for (i = 0; i < CACHY_REDIS_SLOTS; i++) {
        unsigned o = m->map.owner[i];
        if (o != CACHY_SLOT_NONE && !seen[o]) {
            seen[o] = 1;
            lua_pushinteger(L, (lua_Integer)o + 1);
            lua_rawseti(L, -2, ++k);
        }
    }
    return 1;
}

static const luaL_Reg map_methods[] = {
    { "add", map_add },
    { "read", map_read },
    { "owner", map_owner },
    { "set", map_set },
    { "node", map_node },
    { "masters", map_masters },
    { NULL, NULL },
};

/* Sets the functions in the core table at the top of the stack. */
void lc_open_redis_cluster(lua_State *L)
{
    lc_new_class(L, SLOT_MAP_MT, map_methods, map_gc);
    lua_pushcfunction(L, l_slot);
    lua_setfield(L, -2, "redis_slot");
    lua_pushcfunction(L, l_redirect);
    lua_setfield(L, -2, "redis_redirect");
    lua_pushcfunction(L, l_address);
    lua_setfield(L, -2, "redis_address");
    lua_pushcfunction(L, l_slot_map);
    lua_setfield(L, -2, "redis_slot_map");
}

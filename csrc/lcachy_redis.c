/*
 * lcachy_redis.c: the Redis protocol module (redis_proto.c) for Lua, for
 * transports written in Lua (lua/cachy/resty/redis.lua over nginx
 * cosockets). Bytes in, bytes out; no sockets here.
 *
 *   core.redis_command("SET", key, val)   -> RESP bytes ({ "SET", ... } too)
 *   local r = core.redis_reader(max_depth, max_elems, max_bulk)
 *   r:feed(bytes)
 *   r:reply()  -> a reply; nil when more bytes are needed; nil, msg, code
 *
 * Replies: bulk strings as strings, integers as integers, arrays as
 * tables, a nil bulk or array as false, a status as { ok = "OK" }, an
 * error as { err = "ERR ..." }.
 */
#include <string.h>

#include <hiredis.h>

#include "lcachy.h"
#include "redis_proto.h"

#define READER_MT "cachy.RedisReader"
#define STACK_ARGS 16

typedef struct lc_reader {
    cachy_resp_reader *r;       /* NULL once closed */
    cachy_resp *pending;        /* a reply being converted, freed if that raises */
} lc_reader;

/* Pushes the RESP bytes of one command. */
static int push_command(lua_State *L, int argc, const char **argv, const size_t *lens)
{
    size_t len;
    char *cmd = cachy_resp_command(argc, argv, lens, &len);
    if (cmd == NULL)
        return luaL_error(L, "not enough memory");
    lua_pushlstring(L, cmd, len);
    cachy_resp_command_free(cmd);
    return 1;
}

/* core.redis_command(arg, ...) or core.redis_command({ arg, ... }) */
int lc_redis_command(lua_State *L)
{
    const char *sargv[STACK_ARGS], **argv = sargv;
    size_t slens[STACK_ARGS], *lens = slens;
    int i, argc, from_table = lua_type(L, 1) == LUA_TTABLE;
    argc = from_table ? (int)cachy_rawlen(L, 1) : lua_gettop(L);
    if (argc < 1)
        return luaL_argerror(L, 1, "a command expected");
    if (argc > STACK_ARGS) {
        argv = lua_newuserdata(L, (size_t)argc * (sizeof *argv + sizeof *lens));
        lens = (size_t *)(argv + argc);
    }
    for (i = 0; i < argc; i++) {
        if (from_table) {
            lua_rawgeti(L, 1, i + 1);
            if (!lua_isstring(L, -1))
                return luaL_error(L, "bad argument #1 to 'redis_command' (element %d is a %s, "
                                  "not a string)", i + 1, luaL_typename(L, -1));
            argv[i] = lua_tolstring(L, -1, &lens[i]);
            lua_pop(L, 1);      /* a string element stays in the table */
        } else {
            argv[i] = luaL_checklstring(L, i + 1, &lens[i]);
        }
    }
    return push_command(L, argc, argv, lens);
}

/* core.redis_lock_command("forget_if" | "touch_if", key, bytes [, ms]): the
 * EVAL the blocking driver sends for that lock primitive (redis_proto.c). */
int lc_redis_lock_command(lua_State *L)
{
    static const char *const names[] = { "forget_if", "touch_if", NULL };
    int which = luaL_checkoption(L, 1, NULL, names) == 1 ? CACHY_RESP_TOUCH_IF : CACHY_RESP_FORGET_IF;
    const char *argv[6];
    size_t lens[6];
    char ms[24];
    cachy_slice key, val;
    lua_Number t = luaL_optnumber(L, 4, 0);
    int argc;
    key.ptr = luaL_checklstring(L, 2, &key.len);
    val.ptr = luaL_checklstring(L, 3, &val.len);
    argc = cachy_resp_lock_argv(which, key, val, t >= 1 && t < 9.2e18 ? (int64_t)t : 1, ms, argv,
                                lens);
    return push_command(L, argc, argv, lens);
}

static lc_reader *check_reader(lua_State *L)
{
    lc_reader *u = luaL_checkudata(L, 1, READER_MT);
    if (u->r == NULL)
        luaL_error(L, "attempt to use a closed redis reader");
    return u;
}

static size_t arg_size(lua_State *L, int idx, lua_Number dflt)
{
    lua_Number v = luaL_optnumber(L, idx, dflt);
    luaL_argcheck(L, v >= 0, idx, "must not be negative");
    return v >= 9.0e18 ? (size_t)-1 / 2 : (size_t)v;
}

/* core.redis_reader([max_depth [, max_elems [, max_bulk]]]): by default no
 * arrays, and strings up to Redis's own 512 MiB. */
int lc_redis_reader(lua_State *L)
{
    int depth = (int)luaL_optnumber(L, 1, 0);
    size_t elems = arg_size(L, 2, 0), bulk = arg_size(L, 3, (lua_Number)CACHY_RESP_MAX_BULK);
    lc_reader *u = lua_newuserdata(L, sizeof *u);
    u->r = NULL;
    u->pending = NULL;
    luaL_getmetatable(L, READER_MT);
    lua_setmetatable(L, -2);
    luaL_argcheck(L, depth >= 0 && depth <= 7, 1, "must be from 0 to 7");
    u->r = cachy_resp_reader_new(depth, elems, bulk);
    if (u->r == NULL)
        return luaL_error(L, "not enough memory");
    return 1;
}

static int reader_feed(lua_State *L)
{
    lc_reader *u = check_reader(L);
    size_t n;
    const char *p = luaL_checklstring(L, 2, &n);
    if (cachy_resp_reader_feed(u->r, p, n) != 0)
        return luaL_error(L, "not enough memory");
    return 0;
}

static void push_reply(lua_State *L, const cachy_resp *r)
{
    size_t i;
    luaL_checkstack(L, 4, "redis reply nested too deeply");
    switch (r->type) {
    case REDIS_REPLY_STRING:
        lua_pushlstring(L, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        cachy_pushinteger(L, (int64_t)r->integer);
        break;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, r->n > 0x7fffffff ? 0x7fffffff : (int)r->n, 0);
        for (i = 0; i < r->n; i++) {
            push_reply(L, r->elem[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
        break;
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, r->str, r->len);
        lua_setfield(L, -2, r->type == REDIS_REPLY_STATUS ? "ok" : "err");
        break;
    default:                    /* REDIS_REPLY_NIL */
        lua_pushboolean(L, 0);
        break;
    }
}

/* Pushes reply r and frees it; u holds it meanwhile, so that a raise while
 * converting it (a reply nested too deeply) does not leak it. */
static int push_owned(lua_State *L, lc_reader *u, cachy_resp *r)
{
    u->pending = r;
    push_reply(L, r);
    u->pending = NULL;
    cachy_resp_free(r);
    return 1;
}

static int reader_reply(lua_State *L)
{
    lc_reader *u = check_reader(L);
    cachy_error err;
    cachy_resp *r;
    int rc;
    cachy_resp_free(u->pending);       /* left by a conversion that raised */
    u->pending = NULL;
    rc = cachy_resp_reader_next(u->r, &r, &err);
    if (rc < 0) {
        err.msg[sizeof err.msg - 1] = '\0';
        return lc_fail(L, &err);
    }
    if (rc == 0)
        return 0;
    return push_owned(L, u, r);
}

/* r:buffered(): bytes fed and not yet part of a complete reply. */
static int reader_buffered(lua_State *L)
{
    lc_reader *u = check_reader(L);
    lua_pushnumber(L, (lua_Number)cachy_resp_reader_buffered(u->r));
    return 1;
}

static int reader_close(lua_State *L)
{
    lc_reader *u = luaL_checkudata(L, 1, READER_MT);
    cachy_resp_free(u->pending);
    u->pending = NULL;
    cachy_resp_reader_free(u->r);
    u->r = NULL;
    return 0;
}

/*
 * core.redis_reply_of(bytes, max_depth, max_elems): the reply when bytes
 * are exactly one whole reply (what one read of a small reply brings),
 * else nothing, and the caller goes through a reader of its own. The
 * closure keeps one reader (upvalue 1) for these calls: each is whole, so
 * nothing is left in it between calls, and one that did not end clean is
 * dropped. Saves a reader per round trip on the common path.
 */
static int redis_reply_of(lua_State *L)
{
    lc_reader *u = lua_touserdata(L, lua_upvalueindex(1));
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    int depth = (int)luaL_optnumber(L, 2, 0), rc;
    size_t elems = arg_size(L, 3, 0);
    cachy_error err;
    cachy_resp *r = NULL;
    luaL_argcheck(L, depth >= 0 && depth <= 7, 2, "must be from 0 to 7");
    cachy_resp_free(u->pending);       /* left by a conversion that raised */
    u->pending = NULL;
    if (u->r == NULL && (u->r = cachy_resp_reader_new(depth, elems, CACHY_RESP_MAX_BULK)) == NULL)
        return luaL_error(L, "not enough memory");
    cachy_resp_reader_limit(u->r, depth, elems);
    rc = cachy_resp_reader_feed(u->r, p, n) == 0 ? cachy_resp_reader_next(u->r, &r, &err) : -1;
    if (rc != 1 || cachy_resp_reader_buffered(u->r) != 0) {
        cachy_resp_free(r);
        cachy_resp_reader_free(u->r);  /* not clean: a fresh one next time */
        u->r = NULL;
        return 0;
    }
    return push_owned(L, u, r);
}

static const luaL_Reg reader_methods[] = {
    { "feed", reader_feed },
    { "reply", reader_reply },
    { "buffered", reader_buffered },
    { "close", reader_close },
    { NULL, NULL },
};

/* The reader's metatable (core.redis_reader's, with core.redis_command,
 * registered in lcachy.c's core_functions). */
void lc_open_redis(lua_State *L)
{
    lc_new_class(L, READER_MT, reader_methods, reader_close);
    {
        lc_reader *u = lua_newuserdata(L, sizeof *u);
        u->r = NULL;
        u->pending = NULL;
        luaL_getmetatable(L, READER_MT);
        lua_setmetatable(L, -2);
        lua_pushcclosure(L, redis_reply_of, 1);
        lua_setfield(L, -2, "redis_reply_of");
    }
    lc_open_redis_cluster(L);
}

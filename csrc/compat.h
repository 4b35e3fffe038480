/*
 * compat.h: the one place that looks at LUA_VERSION_NUM, so the binding
 * builds against Lua 5.1 (LuaJIT, OpenResty), 5.2, 5.3 and 5.4.
 */
#ifndef CACHY_COMPAT_H
#define CACHY_COMPAT_H

#include <stdint.h>

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM >= 503
#define CACHY_HAS_INTEGERS 1
#define cachy_isinteger(L, i) lua_isinteger(L, i)
#else
#define CACHY_HAS_INTEGERS 0
/* Numbers are doubles: integral values within +-2^53 count as integers. */
static inline int cachy_isinteger(lua_State *L, int i)
{
    lua_Number n;
    if (lua_type(L, i) != LUA_TNUMBER)
        return 0;
    n = lua_tonumber(L, i);
    return n == (lua_Number)(int64_t)n && n >= -9007199254740992.0 && n <= 9007199254740992.0;
}
#endif

/* Integers as int64 on every version. */
static inline int64_t cachy_tointeger(lua_State *L, int i)
{
#if CACHY_HAS_INTEGERS
    return (int64_t)lua_tointeger(L, i);
#else
    return (int64_t)lua_tonumber(L, i);
#endif
}

static inline void cachy_pushinteger(lua_State *L, int64_t v)
{
#if CACHY_HAS_INTEGERS
    lua_pushinteger(L, (lua_Integer)v);
#else
    lua_pushnumber(L, (lua_Number)v);
#endif
}

/* 1 when the integer v reads back exactly as a Lua number (always on
 * 5.3+; within +-2^53 where numbers are doubles). */
static inline int cachy_int_fits(int64_t v)
{
#if CACHY_HAS_INTEGERS
    (void)v;
    return 1;
#else
    return v >= -INT64_C(9007199254740992) && v <= INT64_C(9007199254740992);
#endif
}

#if LUA_VERSION_NUM >= 502
#define cachy_rawlen(L, i) lua_rawlen(L, i)
#else
#define cachy_rawlen(L, i) lua_objlen(L, i)
#endif

/* The userdata's one associated value (always a table here). */
#if LUA_VERSION_NUM >= 504
#define cachy_setuservalue(L, i) lua_setiuservalue(L, i, 1)
#define cachy_getuservalue(L, i) lua_getiuservalue(L, i, 1)
#define cachy_newuserdata(L, sz) lua_newuserdatauv(L, sz, 1)
#elif LUA_VERSION_NUM >= 502
#define cachy_setuservalue(L, i) lua_setuservalue(L, i)
#define cachy_getuservalue(L, i) lua_getuservalue(L, i)
#define cachy_newuserdata(L, sz) lua_newuserdata(L, sz)
#else
#define cachy_setuservalue(L, i) lua_setfenv(L, i)
#define cachy_getuservalue(L, i) lua_getfenv(L, i)
#define cachy_newuserdata(L, sz) lua_newuserdata(L, sz)
#endif

#if LUA_VERSION_NUM < 502 && !defined(luaL_newlibtable)
/* PUC Lua 5.1 lacks it (LuaJIT has it): l's functions, each closing over
 * the nup values on top of the stack, into the table below them. */
static inline void cachy_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    int i;
    luaL_checkstack(L, nup + 1, "too many upvalues");
    for (; l->name != NULL; l++) {
        for (i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
#define luaL_setfuncs(L, l, nup) cachy_setfuncs(L, l, nup)
#endif

#if LUA_VERSION_NUM < 502
#define LUA_OK 0
#define lua_absindex(L, i) ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)
#endif

#endif

/*
 * store_lua.h: the driver behind cache:extend, a store written in Lua.
 * Binding side: the store calls back into the Lua state of the current call.
 */
#ifndef CACHY_STORE_LUA_H
#define CACHY_STORE_LUA_H

#include "compat.h"
#include "store.h"

/*
 * What a Lua store needs for one call, set by the binding before every
 * operation (cachy_store_set_host): the running state, and the stack index
 * of the repository's table holding `factory`, `config` and, once opened,
 * `instance` (the table the factory returned).
 */
typedef struct cachy_lua_host {
    lua_State *L;
    int slots;
} cachy_lua_host;

extern const cachy_store_ops cachy_lua_ops;

#endif

/*
 * json.h: Lua values <-> JSON text (jansson), the built-in "json"
 * serializer's codec. Binding side: sees lua.h, like codec.h.
 */
#ifndef CACHY_JSON_H
#define CACHY_JSON_H

#include "compat.h"

/*
 * core.json_encode(value [, root]) -> text | nil, why
 * The JSON text of value, or nil and what JSON cannot carry, by path from
 * root ("value"): "value.t has a number key 3 that json cannot carry (...)",
 * "value.s is a string that is not UTF-8, which json cannot carry". Also
 * refuses what MessagePack refuses (functions, cycles, more than 100
 * levels), in the same words.
 */
int cachy_json_encode(lua_State *L);

/*
 * core.json_decode(text) -> true, value | false, why
 * JSON text (from this codec or another writer) as a Lua value; why says
 * what is not JSON or not a Lua value (a null in an array, an integer a
 * Lua 5.1 number cannot hold exactly, more than 100 levels).
 */
int cachy_json_decode(lua_State *L);

#endif

/*
 * lcachy_envelope.c: the envelope of an item kept for stale serving
 * (envelope.h), for the Lua side: remember, flexible and the decorator
 * write it; every read path opens it. Times are the wall clock, which the
 * processes sharing a store have in common.
 */
#include <math.h>

#include "envelope.h"
#include "lcachy.h"

/* core.envelope(kind, fresh_ms, visible_ms [, bytes]): the envelope of
 * bytes (kind "v") or of a cached nil (kind "n"), fresh for fresh_ms and
 * visible for visible_ms from now (0: visible for ever). */
int lc_core_envelope(lua_State *L)
{
    size_t klen;
    const char *kind = luaL_checklstring(L, 1, &klen);
    lua_Number fresh = luaL_checknumber(L, 2), visible = luaL_checknumber(L, 3);
    int64_t now = cachy_now_ms();
    cachy_envelope e;
    cachy_buf out = { 0 };
    if (klen != 1 || (kind[0] != 'v' && kind[0] != 'n'))
        return luaL_argerror(L, 1, "\"v\" or \"n\" expected");
    e.kind = kind[0];
    e.fresh_until = now + (int64_t)fresh;
    e.visible_until = visible > 0 ? now + (int64_t)visible : 0;
    e.value.ptr = NULL;
    e.value.len = 0;
    if (e.kind == 'v')
        e.value.ptr = luaL_checklstring(L, 4, &e.value.len);
    if (cachy_envelope_write(&out, &e) != 0) {
        cachy_buf_free(&out);
        return luaL_error(L, "not enough memory");
    }
    lua_pushlstring(L, out.data, out.len);
    cachy_buf_free(&out);
    return 1;
}

/* core.envelope_open(bytes): nil for plain bytes; false, why for a
 * malformed envelope; else kind, ms left fresh, ms left visible (huge when
 * it never ends; both negative once past) and the serializer's bytes
 * ("" for a cached nil). */
int lc_core_envelope_open(lua_State *L)
{
    cachy_slice b;
    cachy_envelope e;
    int64_t now;
    int rc;
    b.ptr = luaL_checklstring(L, 1, &b.len);
    rc = cachy_envelope_read(b, &e);
    if (rc == 0)
        return 0;
    if (rc < 0) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "a stale-serving envelope that is cut short or of an unknown version");
        return 2;
    }
    now = cachy_now_ms();
    lua_pushlstring(L, &e.kind, 1);
    lua_pushnumber(L, (lua_Number)(e.fresh_until - now));
    lua_pushnumber(L, e.visible_until == 0 ? HUGE_VAL : (lua_Number)(e.visible_until - now));
    lua_pushlstring(L, e.value.ptr, e.value.len);
    return 4;
}

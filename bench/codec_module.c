/*
 * codec_module.c: cachy's codec (csrc/codec.c, built from the same source
 * with the same flags) as a Lua module "benchcodec", so that its encode and
 * decode can be timed beside lua-cjson's: encode(value) -> bytes,
 * decode(bytes) -> value. A value the codec refuses raises, as cjson does.
 * Also the JSON codec (csrc/json.c) as the core module exposes it:
 * json_encode(value) -> text | nil, why; json_decode(text) -> true, value.
 */
#include "../csrc/codec.h"
#include "../csrc/json.h"

typedef struct codec_state {
    cachy_buf buf;
} codec_state;

static int l_encode(lua_State *L)
{
    codec_state *st = lua_touserdata(L, lua_upvalueindex(1));
    char why[256];
    luaL_checkany(L, 1);
    if (cachy_codec_encode(L, 1, "value", &st->buf, why, sizeof why) != 0)
        return luaL_error(L, "%s", why);
    lua_pushlstring(L, st->buf.data, st->buf.len);
    return 1;
}

static int l_decode(lua_State *L)
{
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    char why[256];
    if (cachy_codec_decode(L, p, n, why, sizeof why) != 0)
        return luaL_error(L, "%s", why);
    return 1;
}

static int l_gc(lua_State *L)
{
    codec_state *st = lua_touserdata(L, 1);
    cachy_buf_free(&st->buf);
    return 0;
}

int luaopen_benchcodec(lua_State *L) __attribute__((visibility("default")));

int luaopen_benchcodec(lua_State *L)
{
    codec_state *st;
    lua_newtable(L);
    st = lua_newuserdata(L, sizeof *st);
    st->buf.data = NULL;
    st->buf.len = st->buf.cap = 0;
    lua_newtable(L);
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_encode, 1);
    lua_setfield(L, -3, "encode");
    lua_pushcclosure(L, l_decode, 1);
    lua_setfield(L, -2, "decode");
    lua_pushcfunction(L, cachy_json_encode);
    lua_setfield(L, -2, "json_encode");
    lua_pushcfunction(L, cachy_json_decode);
    lua_setfield(L, -2, "json_decode");
    return 1;
}

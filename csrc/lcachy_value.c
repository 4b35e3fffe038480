/*
 * lcachy_value.c: what the binding accepts as a lifetime and as a value.
 * TTL forms become milliseconds, and values become bytes and back through
 * the store's serializer, so the layers below see only bytes and
 * milliseconds.
 */
#include <math.h>
#include <string.h>
#include <time.h>

#include "lcachy.h"

/* ---- TTL forms --------------------------------------------------------- */

/* Minutes (fractional allowed) or a date table read like os.time(t).
 * TTL_OK with *ms (0 = forever), TTL_EXPIRED, or TTL_BAD with *why. */
int lc_read_ttl(lua_State *L, int idx, int64_t dflt_ms, int64_t *ms, const char **why)
{
    int t = lua_type(L, idx);
    if (t == LUA_TNONE || t == LUA_TNIL) {
        *ms = dflt_ms;
        return dflt_ms < 0 ? TTL_EXPIRED : TTL_OK;
    }
    if (t == LUA_TNUMBER) {
        double minutes = (double)lua_tonumber(L, idx), v;
        if (minutes != minutes) {
            *why = "ttl must not be NaN";
            return TTL_BAD;
        }
        if (minutes <= 0)
            return TTL_EXPIRED;
        v = ceil(minutes * 60000.0);
        *ms = v >= 9.2e18 ? 0 : (int64_t)v;    /* too long to represent: forever */
        return TTL_OK;
    }
    if (t == LUA_TTABLE) {
        static const char *const fields[] = { "year", "month", "day", "hour", "min", "sec" };
        int vals[6] = { 0, 0, 0, 12, 0, 0 };  /* os.time's defaults */
        struct tm tm;
        time_t when;
        int i, isdst;
        for (i = 0; i < 6; i++) {
            lua_getfield(L, idx, fields[i]);
            if (lua_type(L, -1) == LUA_TNUMBER) {
                double d = (double)lua_tonumber(L, -1);
                if (d != floor(d) || d < -1e9 || d > 1e9) {
                    lua_pop(L, 1);
                    *why = "date table fields must be integers";
                    return TTL_BAD;
                }
                vals[i] = (int)d;
            } else if (i < 3 || !lua_isnil(L, -1)) {
                lua_pop(L, 1);
                *why = "date table needs year, month and day";
                return TTL_BAD;
            }
            lua_pop(L, 1);
        }
        lua_getfield(L, idx, "isdst");
        isdst = lua_isnil(L, -1) ? -1 : lua_toboolean(L, -1);
        lua_pop(L, 1);
        memset(&tm, 0, sizeof tm);
        tm.tm_year = vals[0] - 1900;
        tm.tm_mon = vals[1] - 1;
        tm.tm_mday = vals[2];
        tm.tm_hour = vals[3];
        tm.tm_min = vals[4];
        tm.tm_sec = vals[5];
        tm.tm_isdst = isdst;
        when = mktime(&tm);
        if (when == (time_t)-1) {
            *why = "date table is not a representable time";
            return TTL_BAD;
        }
        *ms = (int64_t)when * 1000 - cachy_now_ms();
        return *ms > 0 ? TTL_OK : TTL_EXPIRED;
    }
    *why = NULL;
    return TTL_BAD;
}

int lc_check_ttl(lua_State *L, int idx, int64_t dflt_ms, int64_t *ms)
{
    const char *why = NULL;
    int rc = lc_read_ttl(L, idx, dflt_ms, ms, &why);
    if (rc == TTL_BAD) {
        if (why == NULL)
            why = lua_pushfstring(L, "ttl must be a number of minutes or a date table, got %s",
                                  luaL_typename(L, idx));
        luaL_argerror(L, idx, why);
    }
    return rc;
}

/* ---- values <-> bytes -------------------------------------------------- */

/* Pushes the serializer table named by the store's slots, or raises. */
static void push_serializer(lua_State *L, repo_ud *r)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->st->slots_ref);
    lua_getfield(L, -1, "serializer");
    lc_lookup_shared(L, r->mgr, "serializers");
    lua_pushvalue(L, -2);
    lua_gettable(L, -2);
    if (!lua_istable(L, -1))
        luaL_error(L, "serializer '%s' of store '%s' is not registered", lua_tostring(L, -3),
                   cachy_store_name(r->st->store));
    lua_replace(L, -4);
    lua_pop(L, 2);
}

/* Encodes the value at idx into st->buf. Unstorable values raise (misuse),
 * blaming argument `argn` and naming the path from `root`; a user
 * serializer's failure returns -1 with err set. */
int lc_encode_value(lua_State *L, repo_ud *r, int idx, int argn, const char *root,
                    cachy_error *err)
{
    store_state *st = r->st;
    char why[256];
    idx = lua_absindex(L, idx);
    if (lua_isnil(L, idx))
        luaL_argerror(L, argn, "nil cannot be stored; use forget to remove a key");
    /* MessagePack is also the check of what can be stored, whatever the
     * serializer, so every serializer refuses the same values the same way. */
    if (cachy_codec_encode(L, idx, root, &st->buf, why, sizeof why) != 0)
        luaL_argerror(L, argn, why);
    if (st->msgpack || cachy_isinteger(L, idx))
        return 0;
    push_serializer(L, r);
    lua_getfield(L, -1, "serialize");
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TSTRING) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, st->slots_ref);
        lua_getfield(L, -1, "serializer");
        cachy_error_set(err, st->store, CACHY_ECORRUPT, "serializer '%s' failed: %s",
                        lua_tostring(L, -1),
                        lua_type(L, -3) == LUA_TSTRING ? lua_tostring(L, -3) : "it did not return a string");
        lua_pop(L, 4);
        return -1;
    }
    {
        size_t n;
        const char *p = lua_tolstring(L, -1, &n);
        if (cachy_buf_set(&st->buf, p, n) != 0)
            luaL_error(L, "not enough memory");
    }
    lua_pop(L, 2);
    return 0;
}

void lc_corrupt(cachy_error *err, repo_ud *r, cachy_slice key, const char *why)
{
    char q[96];
    cachy_quote_key(key, q, sizeof q);
    cachy_error_set(err, r->st->store, CACHY_ECORRUPT, "value of key '%s' cannot be decoded: %s", q,
                    why);
}

/* Pushes the value held in bytes; -1 with err (nothing pushed) when they
 * are not a value of this store's serializer. */
int lc_decode_value(lua_State *L, repo_ud *r, cachy_slice key, const char *p, size_t n,
                    cachy_error *err)
{
    char why[256];
    int64_t iv;
    cachy_slice bytes;
    bytes.ptr = p;
    bytes.len = n;
    if (r->st->msgpack) {
        if (cachy_codec_decode(L, p, n, why, sizeof why) == 0)
            return 0;
        lc_corrupt(err, r, key, why);
        return -1;
    }
    if (cachy_parse_int(bytes, &iv)) {
        cachy_pushinteger(L, iv);
        return 0;
    }
    push_serializer(L, r);
    lua_getfield(L, -1, "unserialize");
    lua_pushlstring(L, p, n);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lc_corrupt(err, r, key, lua_tostring(L, -1) ? lua_tostring(L, -1) : "unserialize failed");
        lua_pop(L, 2);
        return -1;
    }
    lua_remove(L, -2);
    return 0;
}

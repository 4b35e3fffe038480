/*
 * lcachy_ttl.c: what the library accepts as a lifetime (SPEC section 3):
 * minutes, fractional allowed, or a date table read like os.time(t); both
 * become milliseconds for the stores.
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

/* core.ttl(v [, default_ms]): milliseconds (0 = forever), false when the
 * lifetime is already over (nothing is to be stored), or nil and why v is
 * not a lifetime (nil when v says nothing of one: no default given). */
int lc_core_ttl(lua_State *L)
{
    const char *why = NULL;
    int64_t ms = 0, dflt = lua_isnoneornil(L, 2) ? -2 : (int64_t)luaL_checknumber(L, 2);
    int rc;
    if (lua_isnoneornil(L, 1) && dflt == -2) {
        lua_pushnil(L);
        lua_pushstring(L, "no lifetime");
        return 2;
    }
    rc = lc_read_ttl(L, 1, dflt, &ms, &why);
    if (rc == TTL_BAD) {
        lua_pushnil(L);
        if (why == NULL)
            lua_pushfstring(L, "ttl must be a number of minutes or a date table, got %s",
                            luaL_typename(L, 1));
        else
            lua_pushstring(L, why);
        return 2;
    }
    if (rc == TTL_EXPIRED)
        lua_pushboolean(L, 0);
    else
        cachy_pushinteger(L, ms);
    return 1;
}

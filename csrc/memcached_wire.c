/*
 * memcached_wire.c: memcached's wire for transports written in Lua
 * (lua/cachy/resty/memcached.lua over nginx cosockets). Bytes in, bytes
 * out; no sockets here.
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
 * Everything here agrees with store_memcached.c, the blocking driver, which
 * has its own copies of these rules (keys, lifetimes, counters, server
 * entries); spec/32-memcached_wire_spec.lua and spec/nginx check that both
 * agree. The continuum is libmemcached's own, on a memcached_st that never
 * connects: memcached_generate_hash needs no I/O, and a server left out is
 * removed from it the way the blocking driver's rebuild() does it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libmemcached/memcached.h>

#include "lcachy.h"

#define MW_KEY_MAX 250
#define MW_HEAD_MAX 64
#define MW_HASH_MARK "~h"
#define MW_HASHED_MAX (MW_HEAD_MAX + 2 + 32)
#define MW_RELATIVE_MAX 2592000
#define MW_RETRY_SECONDS 2
#define MW_DEFAULT_PORT 11211
#define RING_MT "cachy.MemcachedRing"

/* ---- keys (store_memcached.c: key_is_plain, key_hashed) ----------------- */

static int is_hex_lower(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

static int key_is_plain(const char *p, size_t n)
{
    size_t i;
    if (n == 0 || n > MW_KEY_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c <= 0x20 || c >= 0x7f)
            return 0;
    }
    if (n >= 34 && memcmp(p + n - 34, MW_HASH_MARK, 2) == 0 && is_hex_lower(p + n - 32, 32))
        return 0;
    return 1;
}

static size_t key_hashed(const char *p, size_t n, char *out)
{
    size_t head = 0;
    while (head < n && head < MW_HEAD_MAX) {
        unsigned char c = (unsigned char)p[head];
        if (c <= 0x20 || c >= 0x7f)
            break;
        head++;
    }
    memcpy(out, p, head);
    memcpy(out + head, MW_HASH_MARK, 2);
    cachy_hash128_hex(p, n, out + head + 2);
    return head + 2 + 32;
}

int lc_mw_key(lua_State *L)
{
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    char out[MW_HASHED_MAX + 1];
    if (key_is_plain(p, n)) {
        lua_pushvalue(L, 1);
        return 1;
    }
    lua_pushlstring(L, out, key_hashed(p, n, out));
    return 1;
}

/* ---- lifetimes (store_memcached.c: expiry_of) ---------------------------- */

int lc_mw_expiry(lua_State *L)
{
    lua_Number ms = luaL_optnumber(L, 1, 0);
    int64_t ttl_ms, secs, at;
    if (!(ms >= 1)) {
        lua_pushinteger(L, 0);
        return 1;
    }
    if (ms > (lua_Number)UINT32_MAX * 1000) {
        cachy_pushinteger(L, (int64_t)UINT32_MAX);
        return 1;
    }
    ttl_ms = (int64_t)ms;
    secs = ttl_ms / 1000 + (ttl_ms % 1000 != 0);
    if (secs <= MW_RELATIVE_MAX) {
        cachy_pushinteger(L, secs);
        return 1;
    }
    at = (cachy_now_ms() + ttl_ms + 999) / 1000;
    cachy_pushinteger(L, at > (int64_t)UINT32_MAX ? (int64_t)UINT32_MAX : at);
    return 1;
}

/* ---- frames ---------------------------------------------------------------- */

static void put_be(unsigned char *p, uint64_t v, int bytes)
{
    int i;
    for (i = bytes - 1; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t get_be(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    int i;
    for (i = 0; i < bytes; i++)
        v = (v << 8) | p[i];
    return v;
}

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
    memset(h, 0, sizeof h);
    h[0] = 0x80;
    h[1] = (unsigned char)op;
    put_be(h + 2, klen, 2);
    h[4] = (unsigned char)elen;
    put_be(h + 8, klen + elen + vlen, 4);
    put_be(h + 12, (uint64_t)opaque, 4);
    if (cas != NULL)
        memcpy(h + 16, cas, 8);
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
    put_be(e, (uint64_t)luaL_optnumber(L, 1, 0), 4);
    put_be(e + 4, (uint64_t)luaL_optnumber(L, 2, 0), 4);
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

/* core.mc_incr_extras(by [, undo]): delta (by, or its opposite, modulo
 * 2^64), initial 0, exptime 0xffffffff (a missing key is not created), as
 * libmemcached's memcached_increment_by_key sends them. */
int lc_mw_incr_extras(lua_State *L)
{
    uint64_t delta = (uint64_t)arg_int64(L, 1);
    unsigned char e[20];
    if (lua_toboolean(L, 2))
        delta = (uint64_t)0 - delta;
    put_be(e, delta, 8);
    put_be(e + 8, 0, 8);
    put_be(e + 16, 0xffffffffu, 4);
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
    lua_pushinteger(L, h[1]);                                   /* opcode */
    lua_pushinteger(L, (lua_Integer)get_be(h + 6, 2));          /* status */
    lua_pushinteger(L, (lua_Integer)get_be(h + 2, 2));          /* key length */
    lua_pushinteger(L, h[4]);                                   /* extras length */
    lua_pushnumber(L, (lua_Number)get_be(h + 8, 4));            /* body length */
    lua_pushnumber(L, (lua_Number)get_be(h + 12, 4));           /* opaque */
    lua_pushlstring(L, (const char *)h + 16, 8);                /* cas */
    return 7;
}

/* ---- counters (store_memcached.c: unpadded_len, parse_counter) ------------ */

static size_t unpadded_len(const char *p, size_t n)
{
    size_t end = n, i = 0;
    while (end > 0 && p[end - 1] == ' ')
        end--;
    if (end == n || end == 0)
        return n;
    if (p[0] == '-')
        i = 1;
    if (i == end)
        return n;
    for (; i < end; i++)
        if (p[i] < '0' || p[i] > '9')
            return n;
    return end;
}

static int parse_counter(const char *p, size_t n, int64_t *v, int *wrapped)
{
    cachy_slice sl;
    uint64_t u = 0;
    size_t i;
    sl.ptr = p;
    sl.len = unpadded_len(p, n);
    *wrapped = 0;
    if (cachy_parse_int(sl, v))
        return 1;
    if (sl.len == 0 || sl.len > 20 || (sl.len > 1 && p[0] == '0'))
        return 0;
    for (i = 0; i < sl.len; i++) {
        unsigned d;
        if (p[i] < '0' || p[i] > '9')
            return 0;
        d = (unsigned)(p[i] - '0');
        if (u > (UINT64_MAX - d) / 10)
            return 0;
        u = u * 10 + d;
    }
    if (u <= (uint64_t)INT64_MAX)
        return 0;
    *v = (int64_t)u;
    *wrapped = 1;
    return 1;
}

int lc_mw_unpad(lua_State *L)
{
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    size_t m = unpadded_len(p, n);
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
    int64_t by = arg_int64(L, 2), v, r;
    int wrapped;
    if (!parse_counter(p, n, &v, &wrapped)) {
        lua_pushliteral(L, "not_integer");
        return 1;
    }
    if (wrapped) {
        lua_pushliteral(L, "wrapped");
        return 1;
    }
    if (cachy_checked_add(v, by, &r) != 0) {
        lua_pushliteral(L, "overflow");
        return 1;
    }
    if (by == 0) {
        lua_pushliteral(L, "same");
        cachy_pushinteger(L, v);
        return 2;
    }
    if (v >= 0 && r >= 0) {
        lua_pushliteral(L, "incr");
        return 1;
    }
    lua_pushliteral(L, "cas");
    cachy_pushinteger(L, r);
    push_int_text(L, r);
    return 3;
}

/* core.mc_incr_result(after8, by): the counter after memcached's incr by
 * (uint64)by: the sum read back from the value before it (modulo 2^64),
 * and whether the stored text is a two's complement to rewrite signed;
 * nil when the sum left int64 (the caller undoes the incr). */
int lc_mw_incr_result(lua_State *L)
{
    size_t n;
    const unsigned char *p = (const unsigned char *)luaL_checklstring(L, 1, &n);
    int64_t by = arg_int64(L, 2), before, sum;
    uint64_t after;
    luaL_argcheck(L, n == 8, 1, "8 bytes expected");
    after = get_be(p, 8);
    before = (int64_t)(after - (uint64_t)by);
    if (cachy_checked_add(before, by, &sum) != 0) {
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
    if (!parse_counter(p, n, &v, &wrapped) || !wrapped)
        return 0;
    push_int_text(L, v);
    return 1;
}

/* ---- statuses ---------------------------------------------------------------- */

/* libmemcached 1.1's reading of a binary status (binary_read_one_response),
 * its words for it, lowercased as store_memcached.c's mc_fail shows them,
 * and whether the driver counts it as a server failure. */
int lc_mw_status(lua_State *L)
{
    lua_Integer status = luaL_checkinteger(L, 1);
    memcached_return_t rc;
    const char *text;
    char low[160];
    size_t i;
    switch (status) {
    case 0x00: rc = MEMCACHED_SUCCESS; break;
    case 0x01: rc = MEMCACHED_NOTFOUND; break;
    case 0x02: rc = MEMCACHED_DATA_EXISTS; break;
    case 0x05: rc = MEMCACHED_NOTSTORED; break;
    case 0x03: rc = MEMCACHED_E2BIG; break;
    case 0x82: rc = MEMCACHED_MEMORY_ALLOCATION_FAILURE; break;
    case 0x20: rc = MEMCACHED_AUTH_FAILURE; break;
    case 0x21: rc = MEMCACHED_AUTH_CONTINUE; break;
    default: rc = MEMCACHED_UNKNOWN_READ_FAILURE; break;
    }
    text = memcached_strerror(NULL, rc);
    for (i = 0; text[i] && i + 1 < sizeof low; i++)
        low[i] = (text[i] >= 'A' && text[i] <= 'Z') ? (char)(text[i] - 'A' + 'a') : text[i];
    low[i] = '\0';
    lua_pushstring(L, low);
    lua_pushboolean(L, rc == MEMCACHED_UNKNOWN_READ_FAILURE);
    return 2;
}

/* ---- the continuum ----------------------------------------------------------- */

typedef struct mw_ring {
    memcached_st *mc;            /* servers left out are off its continuum */
    memcached_st *full;          /* every server: each key's own one */
    time_t *retry_at;            /* per server: 0, or left out until then */
    size_t n, nout;
    char address[128];           /* the servers as the driver's messages name them */
} mw_ring;

static int parse_u32(const char *p, size_t n, uint32_t lo, uint32_t hi, uint32_t *out)
{
    uint64_t v = 0;
    size_t i;
    if (n == 0 || n > 10)
        return 0;
    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v < lo || v > hi)
        return 0;
    *out = (uint32_t)v;
    return 1;
}

/* One `servers` entry, read as store_memcached.c's add_server reads it.
 * NULL on success, else the message. */
static const char *add_server(memcached_st *mc, const char *entry, cachy_buf *addr)
{
    char host[256];
    const char *end, *sp, *colon;
    uint32_t weight = 1, port = MW_DEFAULT_PORT;
    size_t hlen;
    memcached_return_t rc;

    while (*entry == ' ' || *entry == '\t')
        entry++;
    end = entry + strlen(entry);
    while (end > entry && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    sp = memchr(entry, ' ', (size_t)(end - entry));
    if (sp == NULL)
        sp = memchr(entry, '\t', (size_t)(end - entry));
    if (sp != NULL) {
        const char *w = sp;
        while (*w == ' ' || *w == '\t')
            w++;
        if (!parse_u32(w, (size_t)(end - w), 1, 1000000, &weight))
            return "bad";
        end = sp;
    }
    if (end == entry)
        return "bad";
    if (entry[0] == '/') {
        hlen = (size_t)(end - entry);
        if (hlen >= sizeof host)
            return "bad";
        memcpy(host, entry, hlen);
        host[hlen] = '\0';
        rc = memcached_server_add_unix_socket_with_weight(mc, host, weight);
    } else {
        if (entry[0] == '[') {
            const char *close = memchr(entry, ']', (size_t)(end - entry));
            if (close == NULL || close == entry + 1)
                return "bad";
            hlen = (size_t)(close - entry - 1);
            if (hlen >= sizeof host)
                return "bad";
            memcpy(host, entry + 1, hlen);
            if (close + 1 != end) {
                if (close[1] != ':' || !parse_u32(close + 2, (size_t)(end - close - 2), 1, 65535, &port))
                    return "bad";
            }
        } else {
            colon = memchr(entry, ':', (size_t)(end - entry));
            if (colon != NULL && memchr(colon + 1, ':', (size_t)(end - colon - 1)) != NULL)
                return "bad";
            if (colon != NULL && !parse_u32(colon + 1, (size_t)(end - colon - 1), 1, 65535, &port))
                return "bad";
            hlen = (size_t)((colon ? colon : end) - entry);
            if (hlen == 0 || hlen >= sizeof host)
                return "bad";
            memcpy(host, entry, hlen);
        }
        host[hlen] = '\0';
        rc = memcached_server_add_with_weight(mc, host, (in_port_t)port, weight);
    }
    if (rc != MEMCACHED_SUCCESS)
        return memcached_strerror(mc, rc);
    if ((addr->len && cachy_buf_append(addr, ",", 1) != 0) ||
        cachy_buf_append(addr, entry, (size_t)(end - entry)) != 0)
        return "out of memory";
    return NULL;
}

static mw_ring *check_ring(lua_State *L)
{
    mw_ring *r = luaL_checkudata(L, 1, RING_MT);
    if (r->mc == NULL)
        luaL_error(L, "attempt to use a freed memcached ring");
    return r;
}

static int ring_gc(lua_State *L)
{
    mw_ring *r = luaL_checkudata(L, 1, RING_MT);
    if (r->mc)
        memcached_free(r->mc);
    if (r->full)
        memcached_free(r->full);
    free(r->retry_at);
    r->mc = r->full = NULL;
    r->retry_at = NULL;
    return 0;
}

/* store_memcached.c's rebuild(): the continuum without the servers left out. */
static void ring_rebuild(mw_ring *r)
{
    size_t i;
    for (i = 0; i < r->n; i++)
        memcached_instance_next_retry(memcached_server_instance_by_position(r->mc, (uint32_t)i),
                                      r->retry_at[i]);
    memcached_behavior_set_distribution(r->mc, MEMCACHED_DISTRIBUTION_CONSISTENT_WEIGHTED);
}

/* Servers whose time out is over take their keys back. */
static void ring_rejoin_due(mw_ring *r)
{
    time_t now = time(NULL);
    size_t i;
    int changed = 0;
    for (i = 0; i < r->n; i++)
        if (r->retry_at[i] != 0 && now >= r->retry_at[i]) {
            r->retry_at[i] = 0;
            r->nout--;
            changed = 1;
        }
    if (changed)
        ring_rebuild(r);
}

static size_t check_pos(lua_State *L, mw_ring *r, int idx)
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

/* ring:server(wire_key): the server that owns the key now (1-based). */
static int ring_server(lua_State *L)
{
    mw_ring *r = check_ring(L);
    size_t n;
    const char *k = luaL_checklstring(L, 2, &n);
    uint32_t pos = 0;
    if (r->n > 1) {
        if (r->nout)
            ring_rejoin_due(r);
        pos = memcached_generate_hash(r->mc, k, n);
        if (pos >= r->n)
            pos = 0;
    }
    lua_pushinteger(L, (lua_Integer)pos + 1);
    return 1;
}

/* ring:home(wire_key): the key's own server, with every server in. */
static int ring_home(lua_State *L)
{
    mw_ring *r = check_ring(L);
    size_t n;
    const char *k = luaL_checklstring(L, 2, &n);
    uint32_t pos = r->n > 1 ? memcached_generate_hash(r->full, k, n) : 0;
    lua_pushinteger(L, (lua_Integer)(pos >= r->n ? 0 : pos) + 1);
    return 1;
}

/* ring:eject(i): server i is left out for 2 seconds (from now). */
static int ring_eject(lua_State *L)
{
    mw_ring *r = check_ring(L);
    size_t i = check_pos(L, r, 2);
    if (r->n < 2)
        return 0;
    if (r->retry_at[i] == 0)
        r->nout++;
    r->retry_at[i] = time(NULL) + MW_RETRY_SECONDS;
    ring_rebuild(r);
    return 0;
}

static int ring_is_out(lua_State *L)
{
    mw_ring *r = check_ring(L);
    size_t i = check_pos(L, r, 2);
    if (r->nout)
        ring_rejoin_due(r);
    lua_pushboolean(L, r->retry_at[i] != 0);
    return 1;
}

/* ring:address(i) -> label (as the driver's messages name it), host, port
 * (nil for a Unix socket, whose path is the host). */
static int ring_address(lua_State *L)
{
    mw_ring *r = check_ring(L);
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

/* core.mc_ring(servers): nil, msg for a list the driver would refuse. */
int lc_mw_ring_new(lua_State *L)
{
    static const char *const dflt = "127.0.0.1:11211";
    size_t n = 1, i;
    mw_ring *r;
    int listed = !lua_isnoneornil(L, 1);
    cachy_buf addr = { 0 };
    if (listed) {
        luaL_checktype(L, 1, LUA_TTABLE);
        n = cachy_rawlen(L, 1);
        if (n == 0) {
            lua_pushnil(L);
            lua_pushliteral(L, "servers must list at least one server");
            return 2;
        }
    }
    r = lua_newuserdata(L, sizeof *r);
    memset(r, 0, sizeof *r);
    luaL_getmetatable(L, RING_MT);
    lua_setmetatable(L, -2);
    r->mc = memcached_create(NULL);
    r->retry_at = calloc(n, sizeof *r->retry_at);
    if (r->mc == NULL || r->retry_at == NULL)
        return luaL_error(L, "not enough memory");
    /* The blocking driver's distribution settings (store_memcached.c's mc_open). */
    if (memcached_behavior_set(r->mc, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1) != MEMCACHED_SUCCESS ||
        memcached_behavior_set(r->mc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1) != MEMCACHED_SUCCESS ||
        memcached_behavior_set(r->mc, MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS, 1) != MEMCACHED_SUCCESS ||
        memcached_behavior_set(r->mc, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, MW_RETRY_SECONDS) != MEMCACHED_SUCCESS ||
        memcached_behavior_set(r->mc, MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, 1000000000) != MEMCACHED_SUCCESS)
        return luaL_error(L, "cannot configure libmemcached");
    for (i = 0; i < n; i++) {
        const char *entry = dflt, *why;
        if (listed) {
            lua_rawgeti(L, 1, (int)i + 1);
            if (lua_type(L, -1) != LUA_TSTRING) {
                cachy_buf_free(&addr);
                return luaL_error(L, "bad argument #1 to 'mc_ring' (servers[%d] is a %s, not a string)",
                                  (int)i + 1, luaL_typename(L, -1));
            }
            entry = lua_tostring(L, -1);
        }
        why = add_server(r->mc, entry, &addr);
        if (why != NULL) {
            cachy_buf_free(&addr);
            lua_pushnil(L);
            if (strcmp(why, "bad") == 0)
                lua_pushfstring(L, "invalid server '%s' in servers (expected \"host:port\", "
                                "\"host:port weight\" or a Unix socket path)", entry);
            else
                lua_pushfstring(L, "cannot use server '%s': %s", entry, why);
            return 2;
        }
        if (listed)
            lua_pop(L, 1);
        r->n++;
    }
    /* store_memcached.c's set_address: cut to 127 bytes with "..." */
    if (addr.len <= sizeof r->address - 1) {
        memcpy(r->address, addr.data, addr.len);
        r->address[addr.len] = '\0';
    } else {
        memcpy(r->address, addr.data, sizeof r->address - 4);
        memcpy(r->address + sizeof r->address - 4, "...", 4);
    }
    cachy_buf_free(&addr);
    r->full = memcached_clone(NULL, r->mc);
    if (r->full == NULL)
        return luaL_error(L, "not enough memory");
    return 1;
}

/* ring:addresses(): the servers as the driver's messages name them. */
static int ring_addresses(lua_State *L)
{
    lua_pushstring(L, check_ring(L)->address);
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
    luaL_newmetatable(L, RING_MT);
    lua_pushcfunction(L, ring_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    luaL_setfuncs(L, ring_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

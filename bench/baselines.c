/*
 * baselines.c: the hand-written C loops cachy is measured against, as a Lua
 * module ("baselines") so that bench.lua can run a baseline batch and a
 * cachy batch alternately in one process: noise from the machine then
 * falls on both alike. Each loop runs in C and times itself; Lua only asks
 * for a batch of n operations and gets the elapsed nanoseconds back.
 *
 *   now()                         monotonic clock, ns
 *   redis(port, prefix)           hiredis on 127.0.0.1:port, 100 keys preloaded
 *     :get(n) :set(n, ttl_ms)     one command per operation
 *     :get_pipe(b) :set_pipe(b, ttl_ms)   b batches of 100 pipelined commands
 *   cluster("p1,p2,...", prefix)  hiredis on a Redis Cluster's masters, the slot map read
 *                                 once (CLUSTER SLOTS), 100 keys preloaded on their masters
 *     :get(n)                     GET on the key's master
 *     :get_pipe(b)                b batches of 100 GETs, one pipeline per master, every
 *                                 pipeline written before any reply is read
 *   memcached(port, prefix)       libmemcached, the same behaviours as cachy's driver
 *     :get(n) :set(n, ttl_s) :mget(b)     mget: b batches of 100 keys
 *   fresh()                       :get(key) returns a new copy of a 100-byte string: the
 *                                 least any C-backed get of such a value costs
 *   file(dir)                     100 files of 100 bytes under dir/ab/cd/<32 hex>
 *     :get(n)                     open, read to the end, close
 *     :put(n)                     write <name>.tmp, rename over <name>
 *
 * Every operation checks its result, so a loop that silently stopped
 * talking to its server cannot pass for a fast one.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hiredis.h>
#include <libmemcached/memcached.h>
#include <lua.h>
#include <lauxlib.h>

#define NKEYS 100
#define VLEN 100
#define KEYMAX 96

#define REDIS_MT "baselines.redis"
#define CLUSTER_MT "baselines.cluster"
#define CLUSTER_NODES 16
#define MEMCACHED_MT "baselines.memcached"
#define FILE_MT "baselines.file"
#define FRESH_MT "baselines.fresh"

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void push_ns(lua_State *L, int64_t ns)
{
    lua_pushnumber(L, (lua_Number)ns);
}

static int l_now(lua_State *L)
{
    push_ns(L, now_ns());
    return 1;
}

/* The 100-byte value every baseline stores: printable, not all one byte. */
static void fill_value(char v[VLEN])
{
    int i;
    for (i = 0; i < VLEN; i++)
        v[i] = (char)('a' + i % 26);
}

/* ---- redis --------------------------------------------------------------- */

typedef struct rbase {
    redisContext *c;
    char keys[NKEYS][KEYMAX];
    size_t klen[NKEYS];
    char val[VLEN];
} rbase;

static rbase *check_redis(lua_State *L)
{
    rbase *b = luaL_checkudata(L, 1, REDIS_MT);
    if (b->c == NULL)
        luaL_error(L, "redis baseline is closed");
    return b;
}

static void redis_expect(lua_State *L, rbase *b, redisReply *r, int type, size_t len)
{
    if (r == NULL)
        luaL_error(L, "redis baseline: %s", b->c->errstr);
    if (r->type != type || (type == REDIS_REPLY_STRING && r->len != len) ||
        (type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") != 0)) {
        int t = r->type;
        freeReplyObject(r);
        luaL_error(L, "redis baseline: unexpected reply type %d", t);
    }
    freeReplyObject(r);
}

static int l_redis(lua_State *L)
{
    int port = (int)luaL_checkinteger(L, 1);
    const char *prefix = luaL_checkstring(L, 2);
    struct timeval tv = { 2, 0 };
    rbase *b = lua_newuserdata(L, sizeof *b);
    int i;
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, REDIS_MT);
    lua_setmetatable(L, -2);
    b->c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (b->c == NULL || b->c->err)
        return luaL_error(L, "redis baseline: cannot connect to port %d", port);
    redisSetTimeout(b->c, tv);
    fill_value(b->val);
    for (i = 0; i < NKEYS; i++) {
        b->klen[i] = (size_t)snprintf(b->keys[i], KEYMAX, "%s%d", prefix, i + 1);
        redis_expect(L, b, redisCommand(b->c, "SET %b %b", b->keys[i], b->klen[i], b->val,
                                        (size_t)VLEN), REDIS_REPLY_STATUS, 0);
    }
    return 1;
}

static int l_redis_get(lua_State *L)
{
    rbase *b = check_redis(L);
    long n = (long)luaL_checkinteger(L, 2), i;
    int64_t t0 = now_ns();
    for (i = 0; i < n; i++) {
        int k = (int)(i % NKEYS);
        redis_expect(L, b, redisCommand(b->c, "GET %b", b->keys[k], b->klen[k]),
                     REDIS_REPLY_STRING, VLEN);
    }
    push_ns(L, now_ns() - t0);
    return 1;
}

static int l_redis_set(lua_State *L)
{
    rbase *b = check_redis(L);
    long n = (long)luaL_checkinteger(L, 2), i;
    long long ttl = (long long)luaL_checkinteger(L, 3);
    int64_t t0 = now_ns();
    for (i = 0; i < n; i++) {
        int k = (int)(i % NKEYS);
        redis_expect(L, b, redisCommand(b->c, "SET %b %b PX %lld", b->keys[k], b->klen[k], b->val,
                                        (size_t)VLEN, ttl), REDIS_REPLY_STATUS, 0);
    }
    push_ns(L, now_ns() - t0);
    return 1;
}

/* Reads the replies of NKEYS pipelined commands. */
static void redis_drain(lua_State *L, rbase *b, int type, size_t len)
{
    int i;
    for (i = 0; i < NKEYS; i++) {
        void *r = NULL;
        if (redisGetReply(b->c, &r) != REDIS_OK)
            luaL_error(L, "redis baseline: %s", b->c->errstr);
        redis_expect(L, b, r, type, len);
    }
}

static int l_redis_get_pipe(lua_State *L)
{
    rbase *b = check_redis(L);
    long n = (long)luaL_checkinteger(L, 2), j;
    int i;
    int64_t t0 = now_ns();
    for (j = 0; j < n; j++) {
        for (i = 0; i < NKEYS; i++)
            redisAppendCommand(b->c, "GET %b", b->keys[i], b->klen[i]);
        redis_drain(L, b, REDIS_REPLY_STRING, VLEN);
    }
    push_ns(L, now_ns() - t0);
    return 1;
}

static int l_redis_set_pipe(lua_State *L)
{
    rbase *b = check_redis(L);
    long n = (long)luaL_checkinteger(L, 2), j;
    long long ttl = (long long)luaL_checkinteger(L, 3);
    int i;
    int64_t t0 = now_ns();
    for (j = 0; j < n; j++) {
        for (i = 0; i < NKEYS; i++)
            redisAppendCommand(b->c, "SET %b %b PX %lld", b->keys[i], b->klen[i], b->val,
                               (size_t)VLEN, ttl);
        redis_drain(L, b, REDIS_REPLY_STATUS, 0);
    }
    push_ns(L, now_ns() - t0);
    return 1;
}

static int l_redis_gc(lua_State *L)
{
    rbase *b = luaL_checkudata(L, 1, REDIS_MT);
    if (b->c)
        redisFree(b->c);
    b->c = NULL;
    return 0;
}

/* ---- redis cluster ----------------------------------------------------- */

typedef struct cbase {
    redisContext *node[CLUSTER_NODES];
    int ports[CLUSTER_NODES], n;
    unsigned char owner[16384];        /* slot -> node */
    unsigned short crc_table[256];
    char keys[NKEYS][KEYMAX];
    size_t klen[NKEYS];
    int kslot[NKEYS];
    char val[VLEN];
} cbase;

static unsigned cluster_slot(const cbase *b, const char *k, size_t n)
{
    unsigned crc = 0;
    size_t i;
    const char *open = memchr(k, '{', n), *close;
    if (open && (close = memchr(open + 1, '}', n - (size_t)(open + 1 - k))) && close > open + 1)
        k = open + 1, n = (size_t)(close - open - 1);
    for (i = 0; i < n; i++)
        crc = ((crc << 8) ^ b->crc_table[((crc >> 8) ^ (unsigned char)k[i]) & 0xff]) & 0xffff;
    return crc & 16383;
}

static cbase *check_cluster(lua_State *L)
{
    cbase *b = luaL_checkudata(L, 1, CLUSTER_MT);
    if (b->n == 0)
        luaL_error(L, "cluster baseline is closed");
    return b;
}

static int l_cluster(lua_State *L)
{
    const char *ports = luaL_checkstring(L, 1), *prefix = luaL_checkstring(L, 2);
    struct timeval tv = { 2, 0 };
    cbase *b = lua_newuserdata(L, sizeof *b);
    redisReply *r;
    size_t i, j;
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, CLUSTER_MT);
    lua_setmetatable(L, -2);
    for (i = 0; i < 256; i++) {
        unsigned c = (unsigned)i << 8;
        for (j = 0; j < 8; j++)
            c = (c & 0x8000) ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
        b->crc_table[i] = (unsigned short)c;
    }
    for (; *ports && b->n < CLUSTER_NODES; ports += *ports == ',') {
        int port = (int)strtol(ports, (char **)&ports, 10);
        b->ports[b->n] = port;
        b->node[b->n] = redisConnectWithTimeout("127.0.0.1", port, tv);
        if (b->node[b->n] == NULL || b->node[b->n]->err)
            return luaL_error(L, "cluster baseline: cannot connect to port %d", port);
        redisSetTimeout(b->node[b->n], tv);
        b->n++;
    }
    r = redisCommand(b->node[0], "CLUSTER SLOTS");
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        return luaL_error(L, "cluster baseline: CLUSTER SLOTS failed");
    for (i = 0; i < r->elements; i++) {
        redisReply *range = r->element[i];
        int port = (int)range->element[2]->element[1]->integer, k = -1, m;
        long long s;
        for (m = 0; m < b->n; m++)
            if (b->ports[m] == port)
                k = m;
        if (k < 0) {
            freeReplyObject(r);
            return luaL_error(L, "cluster baseline: master on port %d not given", port);
        }
        for (s = range->element[0]->integer; s <= range->element[1]->integer; s++)
            b->owner[s] = (unsigned char)k;
    }
    freeReplyObject(r);
    fill_value(b->val);
    for (i = 0; i < NKEYS; i++) {
        b->klen[i] = (size_t)snprintf(b->keys[i], KEYMAX, "%s%d", prefix, (int)i + 1);
        b->kslot[i] = (int)cluster_slot(b, b->keys[i], b->klen[i]);
        r = redisCommand(b->node[b->owner[b->kslot[i]]], "SET %b %b", b->keys[i], b->klen[i],
                         b->val, (size_t)VLEN);
        if (r == NULL || r->type != REDIS_REPLY_STATUS)
            return luaL_error(L, "cluster baseline: SET failed");
        freeReplyObject(r);
    }
    return 1;
}

static void cluster_expect(lua_State *L, redisReply *r)
{
    if (r == NULL || r->type != REDIS_REPLY_STRING || r->len != VLEN) {
        if (r)
            freeReplyObject(r);
        luaL_error(L, "cluster baseline: unexpected reply");
    }
    freeReplyObject(r);
}

/* The slot is computed per call, as a client must for keys it has not seen. */
static int l_cluster_get(lua_State *L)
{
    cbase *b = check_cluster(L);
    long n = (long)luaL_checkinteger(L, 2), i;
    int64_t t0 = now_ns();
    for (i = 0; i < n; i++) {
        int k = (int)(i % NKEYS);
        redisContext *c = b->node[b->owner[cluster_slot(b, b->keys[k], b->klen[k])]];
        cluster_expect(L, redisCommand(c, "GET %b", b->keys[k], b->klen[k]));
    }
    push_ns(L, now_ns() - t0);
    return 1;
}

static int l_cluster_get_pipe(lua_State *L)
{
    cbase *b = check_cluster(L);
    long n = (long)luaL_checkinteger(L, 2), j;
    int i, m, owner[NKEYS];
    int64_t t0 = now_ns();
    for (j = 0; j < n; j++) {
        for (i = 0; i < NKEYS; i++) {
            owner[i] = b->owner[cluster_slot(b, b->keys[i], b->klen[i])];
            redisAppendCommand(b->node[owner[i]], "GET %b", b->keys[i], b->klen[i]);
        }
        for (m = 0; m < b->n; m++) {
            int done = 0;
            while (!done)
                if (redisBufferWrite(b->node[m], &done) != REDIS_OK)
                    luaL_error(L, "cluster baseline: write failed");
        }
        for (m = 0; m < b->n; m++)
            for (i = 0; i < NKEYS; i++)
                if (owner[i] == m) {
                    void *r = NULL;
                    if (redisGetReply(b->node[m], &r) != REDIS_OK)
                        luaL_error(L, "cluster baseline: read failed");
                    cluster_expect(L, r);
                }
    }
    push_ns(L, now_ns() - t0);
    return 1;
}

static int l_cluster_gc(lua_State *L)
{
    cbase *b = luaL_checkudata(L, 1, CLUSTER_MT);
    int m;
    for (m = 0; m < b->n; m++)
        if (b->node[m])
            redisFree(b->node[m]);
    b->n = 0;
    return 0;
}

/* ---- memcached ------------------------------------------------------------ */

typedef struct mbase {
    memcached_st *mc;
    char keys[NKEYS][KEYMAX];
    const char *kptr[NKEYS];
    size_t klen[NKEYS];
    char val[VLEN];
} mbase;

static mbase *check_memcached(lua_State *L)
{
    mbase *b = luaL_checkudata(L, 1, MEMCACHED_MT);
    if (b->mc == NULL)
        luaL_error(L, "memcached baseline is closed");
    return b;
}

static void mc_check(lua_State *L, mbase *b, memcached_return_t rc)
{
    if (rc != MEMCACHED_SUCCESS)
        luaL_error(L, "memcached baseline: %s", memcached_strerror(b->mc, rc));
}

static int l_memcached(lua_State *L)
{
    int port = (int)luaL_checkinteger(L, 1);
    const char *prefix = luaL_checkstring(L, 2);
    mbase *b = lua_newuserdata(L, sizeof *b);
    int i;
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, MEMCACHED_MT);
    lua_setmetatable(L, -2);
    b->mc = memcached_create(NULL);
    if (b->mc == NULL)
        return luaL_error(L, "memcached baseline: out of memory");
    /* The protocol and socket behaviours cachy's driver sets, so that the
     * comparison measures the library, not a protocol choice. */
    mc_check(L, b, memcached_behavior_set(b->mc, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1));
    mc_check(L, b, memcached_behavior_set(b->mc, MEMCACHED_BEHAVIOR_NO_BLOCK, 1));
    mc_check(L, b, memcached_behavior_set(b->mc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1));
    mc_check(L, b, memcached_server_add(b->mc, "127.0.0.1", (in_port_t)port));
    fill_value(b->val);
    for (i = 0; i < NKEYS; i++) {
        b->klen[i] = (size_t)snprintf(b->keys[i], KEYMAX, "%s%d", prefix, i + 1);
        b->kptr[i] = b->keys[i];
        mc_check(L, b, memcached_set(b->mc, b->keys[i], b->klen[i], b->val, VLEN, 0, 0));
    }
    return 1;
}

static int l_memcached_get(lua_State *L)
{
    mbase *b = check_memcached(L);
    long n = (long)luaL_checkinteger(L, 2), i;
    int64_t t0 = now_ns();
    for (i = 0; i < n; i++) {
        int k = (int)(i % NKEYS);
        size_t vlen = 0;
        uint32_t flags;
        memcached_return_t rc;
        char *v = memcached_get(b->mc, b->keys[k], b->klen[k], &vlen, &flags, &rc);
        if (v == NULL || vlen != VLEN) {
            free(v);
            mc_check(L, b, rc == MEMCACHED_SUCCESS ? MEMCACHED_FAILURE : rc);
        }
        free(v);
    }
    push_ns(L, now_ns() - t0);
    return 1;
}

static int l_memcached_set(lua_State *L)
{
    mbase *b = check_memcached(L);
    long n = (long)luaL_checkinteger(L, 2), i;
    time_t ttl = (time_t)luaL_checkinteger(L, 3);
    int64_t t0 = now_ns();
    for (i = 0; i < n; i++) {
        int k = (int)(i % NKEYS);
        mc_check(L, b, memcached_set(b->mc, b->keys[k], b->klen[k], b->val, VLEN, ttl, 0));
    }
    push_ns(L, now_ns() - t0);
    return 1;
}

static int l_memcached_mget(lua_State *L)
{
    mbase *b = check_memcached(L);
    long n = (long)luaL_checkinteger(L, 2), j;
    memcached_result_st res;
    int64_t t0;
    if (memcached_result_create(b->mc, &res) == NULL)
        return luaL_error(L, "memcached baseline: out of memory");
    t0 = now_ns();
    for (j = 0; j < n; j++) {
        memcached_return_t rc;
        int got = 0;
        mc_check(L, b, memcached_mget(b->mc, b->kptr, b->klen, NKEYS));
        while (memcached_fetch_result(b->mc, &res, &rc) != NULL) {
            if (memcached_result_length(&res) != VLEN)
                break;
            got++;
        }
        if (got != NKEYS) {
            memcached_result_free(&res);
            return luaL_error(L, "memcached baseline: mget found %d of %d keys", got, NKEYS);
        }
    }
    push_ns(L, now_ns() - t0);
    memcached_result_free(&res);
    return 1;
}

static int l_memcached_gc(lua_State *L)
{
    mbase *b = luaL_checkudata(L, 1, MEMCACHED_MT);
    if (b->mc)
        memcached_free(b->mc);
    b->mc = NULL;
    return 0;
}

/* ---- files ---------------------------------------------------------------- */

typedef struct fbase {
    char path[NKEYS][560];
    char tmp[NKEYS][568];
    char val[VLEN];
} fbase;

static void file_write(lua_State *L, fbase *b, int k)
{
    int fd = open(b->tmp[k], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        luaL_error(L, "file baseline: %s: %s", b->tmp[k], strerror(errno));
    if (write(fd, b->val, VLEN) != VLEN) {
        close(fd);
        luaL_error(L, "file baseline: short write to %s", b->tmp[k]);
    }
    if (close(fd) != 0 || rename(b->tmp[k], b->path[k]) != 0)
        luaL_error(L, "file baseline: %s: %s", b->path[k], strerror(errno));
}

/* The same depth as cachy's file store: dir/ab/cd/<32 hex digits>. */
static int l_file(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    fbase *b = lua_newuserdata(L, sizeof *b);
    char sub[512];
    int i;
    if (strlen(dir) > 400)
        return luaL_error(L, "file baseline: directory name too long");
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, FILE_MT);
    lua_setmetatable(L, -2);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return luaL_error(L, "file baseline: %s: %s", dir, strerror(errno));
    fill_value(b->val);
    for (i = 0; i < NKEYS; i++) {
        unsigned a = (unsigned)(i * 37) & 0xff, c = (unsigned)(i * 91) & 0xff;
        snprintf(sub, sizeof sub, "%s/%02x", dir, a);
        mkdir(sub, 0755);
        snprintf(sub, sizeof sub, "%s/%02x/%02x", dir, a, c);
        mkdir(sub, 0755);
        snprintf(b->path[i], sizeof b->path[i], "%.480s/%02x%02x%028x", sub, a, c, (unsigned)i);
        snprintf(b->tmp[i], sizeof b->tmp[i], "%s.tmp", b->path[i]);
        file_write(L, b, i);
    }
    return 1;
}

static int l_file_get(lua_State *L)
{
    fbase *b = luaL_checkudata(L, 1, FILE_MT);
    long n = (long)luaL_checkinteger(L, 2), i;
    char buf[4096];
    int64_t t0 = now_ns();
    for (i = 0; i < n; i++) {
        int k = (int)(i % NKEYS), fd = open(b->path[k], O_RDONLY | O_CLOEXEC);
        ssize_t got, total = 0;
        if (fd < 0)
            return luaL_error(L, "file baseline: %s: %s", b->path[k], strerror(errno));
        while ((got = read(fd, buf + total, sizeof buf - (size_t)total)) > 0)
            total += got;
        close(fd);
        if (total != VLEN)
            return luaL_error(L, "file baseline: %s holds %d bytes", b->path[k], (int)total);
    }
    push_ns(L, now_ns() - t0);
    return 1;
}

static int l_file_put(lua_State *L)
{
    fbase *b = luaL_checkudata(L, 1, FILE_MT);
    long n = (long)luaL_checkinteger(L, 2), i;
    int64_t t0 = now_ns();
    for (i = 0; i < n; i++)
        file_write(L, b, (int)(i % NKEYS));
    push_ns(L, now_ns() - t0);
    return 1;
}

/* ---- the floor of a C get ----------------------------------------------------- */

typedef struct fresh {
    char val[VLEN];
} fresh;

static int l_fresh(lua_State *L)
{
    fresh *f = lua_newuserdata(L, sizeof *f);
    fill_value(f->val);
    luaL_getmetatable(L, FRESH_MT);
    lua_setmetatable(L, -2);
    return 1;
}

/* A method call with a key, answered by a new string: no check, no lookup. */
static int l_fresh_get(lua_State *L)
{
    fresh *f = lua_touserdata(L, 1);
    if (f == NULL)
        return luaL_argerror(L, 1, "fresh baseline expected");
    lua_pushlstring(L, f->val, VLEN);
    return 1;
}

/* ---- the module ------------------------------------------------------------ */

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    for (; methods->name; methods++) {
        lua_pushcfunction(L, methods->func);
        lua_setfield(L, -2, methods->name);
    }
    lua_setfield(L, -2, "__index");
    if (gc) {
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
}

static const luaL_Reg redis_methods[] = {
    { "get", l_redis_get },
    { "set", l_redis_set },
    { "get_pipe", l_redis_get_pipe },
    { "set_pipe", l_redis_set_pipe },
    { NULL, NULL },
};

static const luaL_Reg cluster_methods[] = {
    { "get", l_cluster_get },
    { "get_pipe", l_cluster_get_pipe },
    { NULL, NULL },
};

static const luaL_Reg memcached_methods[] = {
    { "get", l_memcached_get },
    { "set", l_memcached_set },
    { "mget", l_memcached_mget },
    { NULL, NULL },
};

static const luaL_Reg file_methods[] = {
    { "get", l_file_get },
    { "put", l_file_put },
    { NULL, NULL },
};

static const luaL_Reg fresh_methods[] = {
    { "get", l_fresh_get },
    { NULL, NULL },
};

static const luaL_Reg functions[] = {
    { "now", l_now },
    { "redis", l_redis },
    { "cluster", l_cluster },
    { "memcached", l_memcached },
    { "file", l_file },
    { "fresh", l_fresh },
    { NULL, NULL },
};

int luaopen_baselines(lua_State *L)
{
    const luaL_Reg *f;
    new_class(L, REDIS_MT, redis_methods, l_redis_gc);
    new_class(L, CLUSTER_MT, cluster_methods, l_cluster_gc);
    new_class(L, MEMCACHED_MT, memcached_methods, l_memcached_gc);
    new_class(L, FILE_MT, file_methods, NULL);
    new_class(L, FRESH_MT, fresh_methods, NULL);
    lua_newtable(L);
    for (f = functions; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
    lua_pushinteger(L, NKEYS);
    lua_setfield(L, -2, "nkeys");
    lua_pushinteger(L, VLEN);
    lua_setfield(L, -2, "vlen");
    return 1;
}

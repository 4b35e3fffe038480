/*
 * memcached_wire.c: memcached's protocol, bytes in, bytes out, no sockets
 * and no Lua (memcached_wire.h says what each part does). The blocking
 * driver (store_memcached.c) maps keys, lifetimes, counters and server
 * entries with it and builds its continuum the same way; the cosocket
 * transport (lua/cachy/resty/memcached.lua) reaches it through
 * lcachy_memcached.c, so both transports agree by construction
 * (spec/32-memcached_wire_spec.lua and spec/nginx check it on the wire).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "memcached_wire.h"

/* ---- keys ---------------------------------------------------------------- */

static int is_hex_lower(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

int cachy_mc_key_is_plain(const char *p, size_t n)
{
    size_t i;
    if (n == 0 || n > CACHY_MC_KEY_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c <= 0x20 || c >= 0x7f)
            return 0;
    }
    if (n >= 34 && memcmp(p + n - 34, CACHY_MC_HASH_MARK, 2) == 0 && is_hex_lower(p + n - 32, 32))
        return 0;
    return 1;
}

size_t cachy_mc_key_hashed(const char *p, size_t n, char *out)
{
    size_t head = 0;
    while (head < n && head < CACHY_MC_HEAD_MAX) {
        unsigned char c = (unsigned char)p[head];
        if (c <= 0x20 || c >= 0x7f)
            break;
        head++;
    }
    memcpy(out, p, head);
    memcpy(out + head, CACHY_MC_HASH_MARK, 2);
    cachy_hash128_hex(p, n, out + head + 2);
    return head + 2 + 32;
}

/* ---- lifetimes ----------------------------------------------------------- */

int64_t cachy_mc_expiry(int64_t ttl_ms)
{
    int64_t secs, at;
    if (ttl_ms <= 0)
        return 0;
    if (ttl_ms > (int64_t)UINT32_MAX * 1000)
        return (int64_t)UINT32_MAX;
    secs = ttl_ms / 1000 + (ttl_ms % 1000 != 0);
    if (secs <= CACHY_MC_RELATIVE_MAX)
        return secs;
    at = (cachy_now_ms() + ttl_ms + 999) / 1000;
    return at > (int64_t)UINT32_MAX ? (int64_t)UINT32_MAX : at;
}

/* ---- counters ------------------------------------------------------------ */

size_t cachy_mc_unpadded_len(const char *p, size_t n)
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

int cachy_mc_parse_counter(const char *p, size_t n, int64_t *v, int *wrapped)
{
    cachy_slice sl;
    uint64_t u = 0;
    size_t i;
    sl.ptr = p;
    sl.len = cachy_mc_unpadded_len(p, n);
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
    *v = (int64_t)u;     /* two's complement: implementation-defined, and what gcc/clang do */
    *wrapped = 1;
    return 1;
}

cachy_mc_plan cachy_mc_incr_plan(const char *p, size_t n, int64_t by, int64_t *v, int64_t *sum)
{
    int wrapped;
    if (!cachy_mc_parse_counter(p, n, v, &wrapped))
        return CACHY_MC_NOT_INTEGER;
    if (wrapped)
        return CACHY_MC_WRAPPED;
    if (cachy_checked_add(*v, by, sum) != 0)
        return CACHY_MC_OVERFLOW;
    if (by == 0)
        return CACHY_MC_SAME;
    if (*v >= 0 && *sum >= 0)
        return CACHY_MC_INCR;
    return CACHY_MC_CAS;
}

int cachy_mc_incr_sum(uint64_t after, int64_t by, int64_t *sum)
{
    int64_t before = (int64_t)(after - (uint64_t)by);
    return cachy_checked_add(before, by, sum) != 0 ? -1 : 0;
}

/* ---- frames -------------------------------------------------------------- */

void cachy_mc_put_be(unsigned char *p, uint64_t v, int bytes)
{
    int i;
    for (i = bytes - 1; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

uint64_t cachy_mc_get_be(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    int i;
    for (i = 0; i < bytes; i++)
        v = (v << 8) | p[i];
    return v;
}

void cachy_mc_request_header(unsigned char h[24], unsigned op, size_t klen, size_t elen,
                             size_t vlen, const char *cas, uint32_t opaque)
{
    memset(h, 0, 24);
    h[0] = 0x80;
    h[1] = (unsigned char)op;
    cachy_mc_put_be(h + 2, klen, 2);
    h[4] = (unsigned char)elen;
    cachy_mc_put_be(h + 8, klen + elen + vlen, 4);
    cachy_mc_put_be(h + 12, opaque, 4);
    if (cas != NULL)
        memcpy(h + 16, cas, 8);
}

void cachy_mc_store_extras(unsigned char e[8], uint32_t flags, uint32_t exptime)
{
    cachy_mc_put_be(e, flags, 4);
    cachy_mc_put_be(e + 4, exptime, 4);
}

void cachy_mc_incr_extras(unsigned char e[20], uint64_t delta)
{
    cachy_mc_put_be(e, delta, 8);
    cachy_mc_put_be(e + 8, 0, 8);
    cachy_mc_put_be(e + 16, 0xffffffffu, 4);
}

/* ---- statuses ------------------------------------------------------------ */

void cachy_mc_lower(char *out, size_t outsz, const char *in)
{
    size_t i;
    for (i = 0; in[i] && i + 1 < outsz; i++)
        out[i] = (in[i] >= 'A' && in[i] <= 'Z') ? (char)(in[i] - 'A' + 'a') : in[i];
    out[i] = '\0';
}

memcached_return_t cachy_mc_status_rc(unsigned status)
{
    switch (status) {
    case 0x00: return MEMCACHED_SUCCESS;
    case 0x01: return MEMCACHED_NOTFOUND;
    case 0x02: return MEMCACHED_DATA_EXISTS;
    case 0x05: return MEMCACHED_NOTSTORED;
    case 0x03: return MEMCACHED_E2BIG;
    case 0x82: return MEMCACHED_MEMORY_ALLOCATION_FAILURE;
    case 0x20: return MEMCACHED_AUTH_FAILURE;
    case 0x21: return MEMCACHED_AUTH_CONTINUE;
    default: return MEMCACHED_UNKNOWN_READ_FAILURE;
    }
}

/* ---- servers and the continuum ------------------------------------------- */

memcached_return_t cachy_mc_distribution(memcached_st *mc)
{
    memcached_return_t rc;
    if ((rc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1)) != MEMCACHED_SUCCESS ||
        (rc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1)) != MEMCACHED_SUCCESS ||
        (rc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS, 1)) != MEMCACHED_SUCCESS ||
        (rc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, CACHY_MC_RETRY_SECONDS)) != MEMCACHED_SUCCESS ||
        (rc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT,
                                     CACHY_MC_NO_FAILURE_LIMIT)) != MEMCACHED_SUCCESS)
        return rc;
    return MEMCACHED_SUCCESS;
}

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

cachy_errcode cachy_mc_add_server(memcached_st *mc, const char *entry, cachy_buf *addr,
                                  char *msg, size_t msgsz)
{
    char host[256];
    const char *end, *sp, *colon;
    uint32_t weight = 1, port = CACHY_MC_DEFAULT_PORT;
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
            goto bad;
        end = sp;
    }
    if (end == entry)
        goto bad;
    if (entry[0] == '/') {
        hlen = (size_t)(end - entry);
        if (hlen >= sizeof host)
            goto bad;
        memcpy(host, entry, hlen);
        host[hlen] = '\0';
        rc = memcached_server_add_unix_socket_with_weight(mc, host, weight);
    } else {
        if (entry[0] == '[') {
            const char *close = memchr(entry, ']', (size_t)(end - entry));
            if (close == NULL || close == entry + 1)
                goto bad;
            hlen = (size_t)(close - entry - 1);
            if (hlen >= sizeof host)
                goto bad;
            memcpy(host, entry + 1, hlen);
            if (close + 1 != end) {
                if (close[1] != ':' || !parse_u32(close + 2, (size_t)(end - close - 2), 1, 65535, &port))
                    goto bad;
            }
        } else {
            colon = memchr(entry, ':', (size_t)(end - entry));
            if (colon != NULL && memchr(colon + 1, ':', (size_t)(end - colon - 1)) != NULL)
                goto bad;           /* a bare IPv6 address: write it as [addr]:port */
            if (colon != NULL && !parse_u32(colon + 1, (size_t)(end - colon - 1), 1, 65535, &port))
                goto bad;
            hlen = (size_t)((colon ? colon : end) - entry);
            if (hlen == 0 || hlen >= sizeof host)
                goto bad;
            memcpy(host, entry, hlen);
        }
        host[hlen] = '\0';
        rc = memcached_server_add_with_weight(mc, host, (in_port_t)port, weight);
    }
    if (rc != MEMCACHED_SUCCESS) {
        snprintf(msg, msgsz, "cannot use server '%s': %s", entry, memcached_strerror(mc, rc));
        return CACHY_EMISUSE;
    }
    if ((addr->len && cachy_buf_append(addr, ",", 1) != 0) ||
        cachy_buf_append(addr, entry, (size_t)(end - entry)) != 0) {
        snprintf(msg, msgsz, "out of memory");
        return CACHY_ENOMEM;
    }
    return CACHY_OK;
bad:
    snprintf(msg, msgsz, "invalid server '%s' in servers (expected \"host:port\", "
             "\"host:port weight\" or a Unix socket path)", entry);
    return CACHY_EMISUSE;
}

void cachy_mc_address(const cachy_buf *addr, char *out, size_t outsz)
{
    size_t n = addr->len, cap = outsz - 1;
    if (n <= cap) {
        if (n)
            memcpy(out, addr->data, n);
        out[n] = '\0';
        return;
    }
    memcpy(out, addr->data, cap - 3);
    memcpy(out + cap - 3, "...", 4);
}

memcached_st *cachy_mc_full_ring(memcached_st *mc, int *mismatch)
{
    memcached_st *ring = memcached_clone(NULL, mc);
    char k[32];
    unsigned i;
    *mismatch = 0;
    if (ring == NULL)
        return NULL;
    if (memcached_behavior_set(ring, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1) != MEMCACHED_SUCCESS)
        goto differs;
    for (i = 0; i < 4096; i++) {
        int n = snprintf(k, sizeof k, "cachy-ring-check-%u", i);
        if (memcached_generate_hash(ring, k, (size_t)n) != memcached_generate_hash(mc, k, (size_t)n))
            goto differs;
    }
    return ring;
differs:
    memcached_free(ring);
    *mismatch = 1;
    return NULL;
}

void cachy_mc_rebuild(memcached_st *mc, size_t n, int (*is_out)(const void *ctx, size_t pos),
                      const void *ctx)
{
    size_t i;
    for (i = 0; i < n; i++)
        memcached_instance_next_retry(memcached_server_instance_by_position(mc, (uint32_t)i),
                                      is_out(ctx, i) ? CACHY_MC_NEVER : 0);
    memcached_behavior_set_distribution(mc, MEMCACHED_DISTRIBUTION_CONSISTENT_WEIGHTED);
}

/* ---- failover cleaning ----------------------------------------------------- */

void cachy_mc_log_forget(cachy_mc_log *o)
{
    size_t i;
    for (i = 0; i < o->n; i++)
        free(o->log[i].key);
    free(o->log);
    o->log = NULL;
    o->n = 0;
}

static void log_overflow(cachy_mc_log *o)
{
    cachy_mc_log_forget(o);
    o->overflow = 1;
}

void cachy_mc_log_note(cachy_mc_log *o, const char *wk, size_t wlen, size_t landed)
{
    cachy_mc_logged *grown;
    size_t i;
    if (o->overflow)
        return;
    for (i = o->n; i > 0 && i + 8 > o->n; i--)
        if (o->log[i - 1].landed == landed && o->log[i - 1].len == wlen &&
            memcmp(o->log[i - 1].key, wk, wlen) == 0)
            return;
    if (o->n >= CACHY_MC_LOG_MAX || (grown = realloc(o->log, (o->n + 1) * sizeof *grown)) == NULL) {
        log_overflow(o);
        return;
    }
    o->log = grown;
    if ((o->log[o->n].key = malloc(wlen ? wlen : 1)) == NULL) {
        log_overflow(o);
        return;
    }
    memcpy(o->log[o->n].key, wk, wlen);
    o->log[o->n].len = wlen;
    o->log[o->n].landed = landed;
    o->n++;
}

int cachy_mc_log_lands(const cachy_mc_log *o, size_t pos)
{
    size_t i;
    if (o->overflow)
        return 1;
    for (i = 0; i < o->n; i++)
        if (o->log[i].landed == pos)
            return 1;
    return 0;
}

/* ---- a continuum for transports of their own ----------------------------- */

void cachy_mc_ring_free(cachy_mc_ring *r)
{
    size_t i;
    if (r == NULL)
        return;
    if (r->mc)
        memcached_free(r->mc);
    if (r->full)
        memcached_free(r->full);
    if (r->logs)
        for (i = 0; i < r->n; i++)
            cachy_mc_log_forget(&r->logs[i]);
    free(r->logs);
    free(r->retry_at);
    free(r);
}

cachy_mc_ring *cachy_mc_ring_new(const char *const *entries, size_t n, cachy_errcode *code,
                                 char *msg, size_t msgsz)
{
    static const char *const dflt[] = { "127.0.0.1:11211" };
    cachy_mc_ring *r;
    cachy_buf addr = { 0 };
    size_t i;
    int mismatch;
    if (entries == NULL) {
        entries = dflt;
        n = 1;
    }
    if (n == 0) {
        *code = CACHY_EMISUSE;
        snprintf(msg, msgsz, "servers must list at least one server");
        return NULL;
    }
    *code = CACHY_ENOMEM;
    snprintf(msg, msgsz, "out of memory");
    r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->mc = memcached_create(NULL);
    r->retry_at = calloc(n, sizeof *r->retry_at);
    r->logs = calloc(n, sizeof *r->logs);
    if (r->mc == NULL || r->retry_at == NULL || r->logs == NULL)
        goto fail;
    if (cachy_mc_distribution(r->mc) != MEMCACHED_SUCCESS) {
        *code = CACHY_EBACKEND;
        snprintf(msg, msgsz, "cannot configure libmemcached");
        goto fail;
    }
    for (i = 0; i < n; i++) {
        *code = cachy_mc_add_server(r->mc, entries[i], &addr, msg, msgsz);
        if (*code != CACHY_OK)
            goto fail;
        r->n++;
    }
    cachy_mc_address(&addr, r->address, sizeof r->address);
    cachy_buf_free(&addr);
    r->full = cachy_mc_full_ring(r->mc, &mismatch);
    if (r->full == NULL) {
        *code = mismatch ? CACHY_EBACKEND : CACHY_ENOMEM;
        snprintf(msg, msgsz, mismatch ? "libmemcached's copy of the server continuum does not match it"
                                      : "out of memory");
        goto fail;
    }
    *code = CACHY_OK;
    return r;
fail:
    cachy_buf_free(&addr);
    cachy_mc_ring_free(r);
    return NULL;
}

static int ring_left_out(const void *ctx, size_t pos)
{
    return ((const cachy_mc_ring *)ctx)->retry_at[pos] != 0;
}

size_t cachy_mc_ring_server(cachy_mc_ring *r, const char *wk, size_t wlen)
{
    uint32_t pos = 0;
    if (r->n > 1) {
        pos = memcached_generate_hash(r->mc, wk, wlen);
        if (pos >= r->n)
            pos = 0;
    }
    return pos;
}

size_t cachy_mc_ring_home(const cachy_mc_ring *r, const char *wk, size_t wlen)
{
    uint32_t pos = r->n > 1 ? memcached_generate_hash(r->full, wk, wlen) : 0;
    return pos >= r->n ? 0 : pos;
}

void cachy_mc_ring_eject(cachy_mc_ring *r, size_t pos)
{
    if (r->n < 2)
        return;
    if (r->retry_at[pos] == 0)
        r->nout++;
    r->retry_at[pos] = time(NULL) + CACHY_MC_RETRY_SECONDS;
    cachy_mc_rebuild(r->mc, r->n, ring_left_out, r);
}

int cachy_mc_ring_is_out(const cachy_mc_ring *r, size_t pos)
{
    return r->retry_at[pos] != 0;
}

void cachy_mc_ring_note(cachy_mc_ring *r, const char *wk, size_t wlen, size_t landed)
{
    size_t home;
    if (r->n < 2 || landed >= r->n)
        return;
    home = cachy_mc_ring_home(r, wk, wlen);
    if (home == landed)
        return;
    if (r->retry_at[home] == 0)
        cachy_mc_ring_eject(r, home);
    cachy_mc_log_note(&r->logs[home], wk, wlen, landed);
}

size_t cachy_mc_ring_due(const cachy_mc_ring *r, size_t after)
{
    time_t now;
    size_t i = after == SIZE_MAX ? 0 : after + 1;
    if (r->nout == 0)
        return r->n;
    now = time(NULL);
    for (; i < r->n; i++)
        if (r->retry_at[i] != 0 && now >= r->retry_at[i])
            return i;
    return r->n;
}

void cachy_mc_ring_rejoin(cachy_mc_ring *r, size_t pos)
{
    cachy_mc_log *o = &r->logs[pos];
    size_t j;
    if (r->retry_at[pos] == 0)
        return;
    r->retry_at[pos] = 0;
    r->nout--;
    for (j = 0; j < r->n; j++)
        if (j != pos && r->retry_at[j] != 0 && cachy_mc_log_lands(o, j))
            log_overflow(&r->logs[j]);
    cachy_mc_log_forget(o);
    o->overflow = 0;
    cachy_mc_rebuild(r->mc, r->n, ring_left_out, r);
}

void cachy_mc_ring_spoil(cachy_mc_ring *r, size_t pos)
{
    if (r->n < 2)
        return;
    log_overflow(&r->logs[pos]);
    cachy_mc_ring_eject(r, pos);
}

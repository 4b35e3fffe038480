/*
 * memcached_wire.h: memcached's protocol as bytes in, bytes out, no
 * sockets, shared by both transports: the blocking driver
 * (store_memcached.c, on libmemcached) and the cosocket transport
 * (lua/cachy/resty/memcached.lua, through lcachy_memcached.c). Wire keys,
 * lifetimes, counters, binary-protocol frames, response statuses, the
 * `servers` entries and libmemcached's ketama continuum on a handle that
 * never connects (memcached_generate_hash needs no I/O).
 */
#ifndef CACHY_MEMCACHED_WIRE_H
#define CACHY_MEMCACHED_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <libmemcached/memcached.h>

#include "cachy.h"

#define CACHY_MC_KEY_MAX 250             /* memcached's key length limit */
#define CACHY_MC_HEAD_MAX 64             /* readable bytes kept in front of a hashed key */
#define CACHY_MC_HASH_MARK "~h"          /* hashed form: head "~h" 32 hex digits */
#define CACHY_MC_HASHED_MAX (CACHY_MC_HEAD_MAX + 2 + 32)
#define CACHY_MC_RELATIVE_MAX 2592000    /* 30 days: longer lifetimes are absolute times */
/* An exptime that is an absolute time long past: an item written with it
 * is gone at once (a compare-and-swap that deletes, for forget_if). */
#define CACHY_MC_EXPIRED (CACHY_MC_RELATIVE_MAX + 1)
#define CACHY_MC_RETRY_SECONDS 2         /* a failed server is left out this long */
#define CACHY_MC_NO_FAILURE_LIMIT 1000000000   /* libmemcached never ejects on its own */
#define CACHY_MC_DEFAULT_PORT 11211
#define CACHY_MC_NEVER ((time_t)1 << 40) /* libmemcached's retry time of a server left out */
#define CACHY_MC_ADDRESS_MAX 128         /* the servers as messages name them, with the NUL */

/* ---- keys ---------------------------------------------------------------- */

/*
 * A key goes to the wire as it is when memcached's text protocol could carry
 * it too (1..250 printable, non-space ASCII bytes), so other clients see the
 * same keys. Every other key, and any key that merely looks like a hashed
 * form, is replaced by that hashed form: no two keys share a wire key, short
 * of an XXH3-128 collision.
 */
int cachy_mc_key_is_plain(const char *p, size_t n);

/* Writes the hashed form of the key into out (CACHY_MC_HASHED_MAX + 1
 * bytes); returns its length. */
size_t cachy_mc_key_hashed(const char *p, size_t n, char *out);

/* ---- lifetimes ----------------------------------------------------------- */

/* memcached's exptime for a lifetime of ttl_ms: 0 for none, whole seconds
 * rounded up, a Unix time past 30 days, at most 2^32 - 1. */
int64_t cachy_mc_expiry(int64_t ttl_ms);

/* ---- counters ------------------------------------------------------------ */

/* memcached's decr rewrites a shorter number in place, padding it with
 * spaces ("10" decremented becomes "9 "): the length without that padding
 * (n when the value is not such a number). */
size_t cachy_mc_unpadded_len(const char *p, size_t n);

/*
 * Reads a counter. Besides the decimal int64 text this library writes,
 * accepts an unsigned decimal above INT64_MAX (*wrapped set, *v its two's
 * complement): memcached's incr adds modulo 2^64, so a decrement that raced
 * below zero leaves it there for a moment. 1 an integer, 0 not one.
 */
int cachy_mc_parse_counter(const char *p, size_t n, int64_t *v, int *wrapped);

/* What an increment by `by` of a stored value does next. */
typedef enum cachy_mc_plan {
    CACHY_MC_NOT_INTEGER,       /* not a counter */
    CACHY_MC_WRAPPED,           /* unsigned text above INT64_MAX: wait on it (*v: its two's complement) */
    CACHY_MC_OVERFLOW,          /* the sum leaves int64 */
    CACHY_MC_SAME,              /* by == 0: *v is the counter */
    CACHY_MC_INCR,              /* memcached's own incr (both sides >= 0) */
    CACHY_MC_CAS                /* compare-and-swap of *sum's decimal text */
} cachy_mc_plan;

cachy_mc_plan cachy_mc_incr_plan(const char *p, size_t n, int64_t by, int64_t *v, int64_t *sum);

/* The counter after memcached's incr by (uint64)by answered `after`: the
 * value just before it is read back modulo 2^64. 0 with *sum set, -1 when
 * the sum left int64 (the caller undoes the incr). after > INT64_MAX means
 * the stored text is a two's complement to rewrite signed. */
int cachy_mc_incr_sum(uint64_t after, int64_t by, int64_t *sum);

/* ---- frames -------------------------------------------------------------- */

void cachy_mc_put_be(unsigned char *p, uint64_t v, int bytes);
uint64_t cachy_mc_get_be(const unsigned char *p, int bytes);

/* A request's 24-byte header (cas: 8 bytes or NULL). */
void cachy_mc_request_header(unsigned char h[24], unsigned op, size_t klen, size_t elen,
                             size_t vlen, const char *cas, uint32_t opaque);

/* set/add extras: flags, exptime. */
void cachy_mc_store_extras(unsigned char e[8], uint32_t flags, uint32_t exptime);

/* increment extras: delta (modulo 2^64), initial 0, exptime 0xffffffff (a
 * missing key is not created), as memcached_increment_by_key sends them. */
void cachy_mc_incr_extras(unsigned char e[20], uint64_t delta);

/* ---- statuses ------------------------------------------------------------ */

/* in lowercased into out (at most outsz - 1 bytes), as messages show
 * libmemcached's words. */
void cachy_mc_lower(char *out, size_t outsz, const char *in);

/* libmemcached 1.1's reading of a binary response status
 * (binary_read_one_response). */
memcached_return_t cachy_mc_status_rc(unsigned status);

/* ---- servers and the continuum ------------------------------------------- */

/* The distribution settings of both transports: binary protocol, weighted
 * ketama, servers left out of the continuum while their retry time is
 * ahead, libmemcached's own ejection out of reach. The first failure. */
memcached_return_t cachy_mc_distribution(memcached_st *mc);

/*
 * One `servers` entry: "host:port", "host:port weight", "[v6addr]:port",
 * "host" (port 11211) or "/path/to/socket" (optionally with a weight).
 * Adds it to mc and appends its address to addr (comma-separated).
 * CACHY_OK, or CACHY_EMISUSE / CACHY_ENOMEM with the message in msg.
 */
cachy_errcode cachy_mc_add_server(memcached_st *mc, const char *entry, cachy_buf *addr,
                                  char *msg, size_t msgsz);

/* The servers' addresses as messages name them, cut to outsz - 1 bytes
 * with "..." at the end. */
void cachy_mc_address(const cachy_buf *addr, char *out, size_t outsz);

/*
 * A copy of mc's full continuum that never connects: each key's own server
 * with every server in. memcached_clone does not carry KETAMA_WEIGHTED over
 * when every weight is 1 (libmemcached turns it on by itself only for a
 * weight above 1), and the unweighted continuum puts about half the keys
 * elsewhere; so the copy is set to the same distribution and checked
 * against mc on a sample of keys (mc with no server left out). NULL with
 * *mismatch 0 on ENOMEM, 1 when they do not agree.
 */
memcached_st *cachy_mc_full_ring(memcached_st *mc, int *mismatch);

/* Rebuilds mc's continuum of n servers without those is_out(ctx, pos)
 * names: their retry time is set beyond reach (CACHY_MC_NEVER), so
 * libmemcached never lets one back by itself. */
void cachy_mc_rebuild(memcached_st *mc, size_t n, int (*is_out)(const void *ctx, size_t pos),
                      const void *ctx);

/* ---- a continuum for transports of their own ----------------------------- */

/* libmemcached's continuum of a `servers` list, never connected; servers
 * are left out for CACHY_MC_RETRY_SECONDS, as the blocking driver does. */
typedef struct cachy_mc_ring {
    memcached_st *mc;            /* servers left out are off its continuum */
    memcached_st *full;          /* every server: each key's own one */
    time_t *retry_at;            /* per server: 0, or left out until then */
    size_t n, nout;
    char address[CACHY_MC_ADDRESS_MAX];
} cachy_mc_ring;

/* NULL entries: the default server, 127.0.0.1:11211. NULL with *code and
 * msg set on a bad list (CACHY_EMISUSE) or ENOMEM (CACHY_ENOMEM). */
cachy_mc_ring *cachy_mc_ring_new(const char *const *entries, size_t n, cachy_errcode *code,
                                 char *msg, size_t msgsz);
void cachy_mc_ring_free(cachy_mc_ring *r);
size_t cachy_mc_ring_server(cachy_mc_ring *r, const char *wk, size_t wlen);   /* owner now */
size_t cachy_mc_ring_home(const cachy_mc_ring *r, const char *wk, size_t wlen); /* full continuum */
void cachy_mc_ring_eject(cachy_mc_ring *r, size_t pos);
int cachy_mc_ring_is_out(cachy_mc_ring *r, size_t pos);

#endif

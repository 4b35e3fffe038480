/*
 * cachy.h: the public C API of cachy. Plain C, no Lua: a manager owns named
 * stores; every store speaks bytes and lifetimes in milliseconds.
 */
#ifndef CACHY_H
#define CACHY_H

#include <stddef.h>
#include <stdint.h>

/* ---- errors ------------------------------------------------------------ */

typedef enum cachy_errcode {
    CACHY_OK = 0,
    CACHY_EMISUSE,   /* caller's mistake: bad argument, unknown driver */
    CACHY_ECONN,     /* could not connect, or the connection broke */
    CACHY_ETIMEOUT,  /* connect or I/O timed out */
    CACHY_EBACKEND,  /* the backend answered with an error */
    CACHY_ECORRUPT,  /* data in the store that cannot be read */
    CACHY_ENOTINT,   /* increment of a value that is not an integer */
    CACHY_ERANGE,    /* 64-bit overflow */
    CACHY_ETOOBIG,   /* value larger than the backend accepts */
    CACHY_ENOMEM,
    CACHY_EIO,       /* local I/O (disk full, permission denied) */
    CACHY_EREFUSED   /* could not connect (set by the manager when open fails with ECONN) */
} cachy_errcode;

#define CACHY_ERRMSG_MAX 512

typedef struct cachy_error {
    cachy_errcode code;
    char msg[CACHY_ERRMSG_MAX];
} cachy_error;

/* ---- byte strings ------------------------------------------------------ */

typedef struct cachy_slice {
    const char *ptr;
    size_t len;
} cachy_slice;

/* A growable byte buffer; zero-initialise, release with cachy_buf_free. */
typedef struct cachy_buf {
    char *data;
    size_t len;
    size_t cap;
} cachy_buf;

int  cachy_buf_reserve(cachy_buf *b, size_t extra);           /* 0 ok, -1 ENOMEM */
int  cachy_buf_set(cachy_buf *b, const void *p, size_t n);    /* replace content */
int  cachy_buf_append(cachy_buf *b, const void *p, size_t n);
void cachy_buf_free(cachy_buf *b);

/* ---- store options ----------------------------------------------------- */

typedef enum cachy_opt_type {
    CACHY_OPT_STRING,
    CACHY_OPT_NUMBER,
    CACHY_OPT_INTEGER,
    CACHY_OPT_BOOLEAN,
    CACHY_OPT_LIST      /* array of strings */
} cachy_opt_type;

/* A config field a driver accepts; arrays of these end with name == NULL. */
typedef struct cachy_field {
    const char *name;
    cachy_opt_type type;
    int required;
} cachy_field;

typedef struct cachy_option {
    char *name;
    cachy_opt_type type;
    char *str;          /* STRING */
    double num;         /* NUMBER, INTEGER, BOOLEAN (0/1) */
    char **list;        /* LIST */
    size_t nlist;
} cachy_option;

typedef struct cachy_options {
    cachy_option *items;
    size_t n;
} cachy_options;

/* Adders copy their arguments; 0 ok, -1 ENOMEM. */
int cachy_options_add_string(cachy_options *o, const char *name, const char *s);
int cachy_options_add_number(cachy_options *o, const char *name, cachy_opt_type type, double v);
int cachy_options_add_list(cachy_options *o, const char *name, const char *const *items, size_t n);
void cachy_options_free(cachy_options *o);

const cachy_option *cachy_opt_find(const cachy_options *o, const char *name);
const char *cachy_opt_string(const cachy_options *o, const char *name, const char *dflt);
double cachy_opt_number(const cachy_options *o, const char *name, double dflt);

/* ---- stores and the manager -------------------------------------------- */

typedef struct cachy_store cachy_store;
typedef struct cachy_store_ops cachy_store_ops;
typedef struct cachy_manager cachy_manager;

typedef struct cachy_stats {
    int64_t items, bytes, hits, misses, evictions;   /* -1 where unknown */
} cachy_stats;

/* The built-in driver called `name` ("dict" is "memory"), or NULL. */
const cachy_store_ops *cachy_driver_find(const char *name);
const char *cachy_driver_name(const cachy_store_ops *ops);
const cachy_field *cachy_driver_fields(const cachy_store_ops *ops);

cachy_manager *cachy_manager_new(void);
/* Closes and frees every store. */
void cachy_manager_free(cachy_manager *m);
/* Closes every store's connection; each reopens lazily on its next use. */
void cachy_manager_close(cachy_manager *m);

/*
 * Adds a store. `ops` may be NULL when the driver is not known yet (a driver
 * registered later by the host); set it with cachy_store_set_driver before
 * use. Takes ownership of *opts (left empty). NULL on ENOMEM.
 */
cachy_store *cachy_manager_add(cachy_manager *m, const char *name, const char *driver,
                               const cachy_store_ops *ops, const char *prefix,
                               cachy_options *opts);
cachy_store *cachy_manager_store(cachy_manager *m, const char *name);

/* A store on its own, outside any manager (the Lua binding owns each one
 * through a userdata); same arguments as cachy_manager_add. */
cachy_store *cachy_store_new(const char *name, const char *driver, const cachy_store_ops *ops,
                             const char *prefix, cachy_options *opts);
void cachy_store_free(cachy_store *s);

const char *cachy_store_name(const cachy_store *s);
const char *cachy_store_driver(const cachy_store *s);      /* the configured name */
const cachy_store_ops *cachy_store_ops_of(const cachy_store *s);
const cachy_options *cachy_store_options(const cachy_store *s);
void cachy_store_set_driver(cachy_store *s, const cachy_store_ops *ops);
void cachy_store_close(cachy_store *s);

/*
 * The operations. Keys are given without the store's prefix; the prefix is
 * added here. Lifetimes are milliseconds, 0 meaning forever; callers handle
 * ttl <= 0 (nothing stored) themselves by calling cachy_forget.
 * Each opens the store on first use, and after a connection failure closes
 * it so that the next call reconnects.
 */
int cachy_get(cachy_store *s, cachy_slice key, cachy_buf *out, cachy_error *err);      /* 1 hit, 0 miss, -1 */
int cachy_put(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms, cachy_error *err);  /* 0, -1 */
int cachy_add(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms, cachy_error *err);  /* 1 stored, 0 existed, -1 */
int cachy_forget(cachy_store *s, cachy_slice key, cachy_error *err);                   /* 1 removed, 0 absent, -1 */
int cachy_incr(cachy_store *s, cachy_slice key, int64_t by, int64_t *result, cachy_error *err);  /* 0, -1 */
int cachy_flush(cachy_store *s, cachy_error *err);                                     /* 0, -1 */
/* found[i] = 1 and outs[i] filled for hits; outs must be zero-initialised. */
int cachy_many(cachy_store *s, const cachy_slice *keys, size_t n, cachy_buf *outs, int *found,
               cachy_error *err);                                                      /* 0, -1 */
int cachy_put_many(cachy_store *s, const cachy_slice *keys, const cachy_slice *vals, size_t n,
                   int64_t ttl_ms, cachy_error *err);                                  /* 0, -1 */
/* Locks: remove key, or give it ttl_ms from now, only while it holds exactly val. */
int cachy_forget_if(cachy_store *s, cachy_slice key, cachy_slice val, cachy_error *err);   /* 1 removed, 0 not held, -1 */
int cachy_touch_if(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                   cachy_error *err);                                                  /* 1 extended, 0 not held, -1 */
int cachy_stats_of(cachy_store *s, cachy_stats *out, cachy_error *err);                /* 0, -1 (driver has none: EMISUSE) */
int cachy_prune(cachy_store *s, cachy_error *err);                                     /* 0, -1 (driver has none: EMISUSE) */
/* The lifetime key has left in *ms_left (0 = no expiry). */
int cachy_ttl(cachy_store *s, cachy_slice key, int64_t *ms_left, cachy_error *err);    /* 1, 0 missing, -1 (driver cannot tell: EMISUSE) */

/* ---- helpers for drivers ----------------------------------------------- */

/*
 * Sets err: "store 'NAME' (DRIVER ADDRESS): cause". s may be NULL (cause only).
 * The message is truncated to fit.
 */
void cachy_error_set(cachy_error *err, const cachy_store *s, cachy_errcode code,
                     const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/*
 * Writes key into out (NUL-terminated) for messages: printable ASCII as is,
 * other bytes as \xNN, cut with "..." past about 64 bytes.
 */
void cachy_quote_key(cachy_slice key, char *out, size_t outlen);

/* Top-level integers are stored as decimal text so backends' INCR works. */
int cachy_parse_int(cachy_slice s, int64_t *out);         /* 1 if s is exactly a decimal int64 */
size_t cachy_format_int(int64_t v, char buf[24]);         /* returns length */
/* Seconds as a configuration writes them, for messages: "1.0", "0.25". */
const char *cachy_format_seconds(double v, char buf[32]);
/* *out = a + b; 0 ok, -1 on int64 overflow */
int cachy_checked_add(int64_t a, int64_t b, int64_t *out);

/* XXH3-128 of bytes as 32 lowercase hex digits + NUL (long keys, file names, tags). */
void cachy_hash128_hex(const void *p, size_t n, char hex[33]);

int64_t cachy_now_ms(void);        /* wall clock, Unix epoch */
int64_t cachy_monotonic_ms(void);

#endif

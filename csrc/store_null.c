/*
 * store_null.c: the null driver. Accepts every write and keeps nothing, so
 * code can switch caching off by configuration alone.
 */
#include "store.h"

static const cachy_field null_fields[] = { { NULL, CACHY_OPT_STRING, 0 } };

static int null_open(cachy_store *s, cachy_error *err) { (void)s; (void)err; return 0; }

static int null_get(cachy_store *s, cachy_slice key, cachy_buf *out, cachy_error *err)
{
    (void)s; (void)key; (void)out; (void)err;
    return 0;
}

static int null_put(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                    cachy_error *err)
{
    (void)s; (void)key; (void)val; (void)ttl_ms; (void)err;
    return 0;
}

/* Nothing is ever present, so an add always "stores". */
static int null_add(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                    cachy_error *err)
{
    (void)s; (void)key; (void)val; (void)ttl_ms; (void)err;
    return 1;
}

static int null_forget(cachy_store *s, cachy_slice key, cachy_error *err)
{
    (void)s; (void)key; (void)err;
    return 0;
}

/* A missing key starts at 0, and nothing is kept: the result is `by`. */
static int null_incr(cachy_store *s, cachy_slice key, int64_t by, int64_t *result,
                     cachy_error *err)
{
    (void)s; (void)key; (void)err;
    *result = by;
    return 0;
}

static int null_flush(cachy_store *s, cachy_slice prefix, cachy_error *err)
{
    (void)s; (void)prefix; (void)err;
    return 0;
}

/* Nothing is held, so no lock is either: a lock's release and refresh
 * answer false, as forget does. */
static int null_forget_if(cachy_store *s, cachy_slice key, cachy_slice val, cachy_error *err)
{
    (void)s; (void)key; (void)val; (void)err;
    return 0;
}

static int null_touch_if(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                         cachy_error *err)
{
    (void)s; (void)key; (void)val; (void)ttl_ms; (void)err;
    return 0;
}

static void null_close(cachy_store *s) { (void)s; }

const cachy_store_ops cachy_null_ops = {
    .name = "null",
    .fields = null_fields,
    .open = null_open,
    .get = null_get,
    .put = null_put,
    .add = null_add,
    .forget = null_forget,
    .incr = null_incr,
    .flush = null_flush,
    .forget_if = null_forget_if,
    .touch_if = null_touch_if,
    .close = null_close,
};

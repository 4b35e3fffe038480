/*
 * lcachy_jit.c: the memory store's hot paths for LuaJIT's FFI
 * (lua/cachy/jit.lua). LuaJIT's trace compiler stops at every C function
 * called through the Lua API, but compiles a call through the FFI into a
 * plain machine call; so these functions take and give C data only (bytes,
 * lengths, a number), never a lua_State, and the Lua side turns their
 * results into values (ffi.string, its own decoding of the common
 * MessagePack shapes). They reach Lua as function pointers in one
 * constant table (core.jit_bind), so nothing beyond luaopen_cachy_core is
 * exported and no second dlopen is needed.
 *
 * Each returns what the store operation does (1 hit, 0 miss, 0 written,
 * -1 with err set); a value read is left in the handle's buffer, which
 * stays valid until the handle's next operation.
 */
#include <string.h>

#include "lcachy.h"
#include "store_memory.h"

/* Where a read left its bytes (and the decorator's read its key), and a
 * reference to the item a get read or a put wrote, for touch (as integers
 * the Lua side keeps as numbers: a pointer in a Lua table would be a
 * boxed cdata, made per reference). */
typedef struct jit_out {
    const char *ptr;
    size_t len;
    const char *key;
    size_t klen;
    uint64_t item, stamp, gen;      /* item 0: no reference */
} jit_out;

/* The table jit.lua declares with ffi.cdef: keep the two in step. */
typedef struct jit_api {
    size_t api_size;                /* first, so a shorter table is refused before more is read */
    int (*get)(lc_handle *h, const char *key, size_t klen, jit_out *out, cachy_error *err);
    int (*touch)(lc_handle *h, uint64_t item, uint64_t stamp, uint64_t gen);
    int (*put_string)(lc_handle *h, const char *key, size_t klen, const char *s, size_t n,
                      int64_t ms, jit_out *out, cachy_error *err);
    int (*put_number)(lc_handle *h, const char *key, size_t klen, double d, int64_t ms,
                      cachy_error *err);
    int (*put_boolean)(lc_handle *h, const char *key, size_t klen, int b, int64_t ms,
                       cachy_error *err);
    int (*tuple_get)(lc_handle *h, const char *prefix, size_t plen, const cachy_arg *args, int n,
                     jit_out *out, cachy_error *err);
    const char *(*code_name)(int code);
    int (*view)(lc_handle *h, cachy_memory_view *v);
    /* checked against the Lua side's declarations, as api_size: a
     * cachy/jit.lua and a core.so of different versions refuse to work
     * together */
    size_t error_size, arg_size, out_size, view_size;
} jit_api;

static int closed(const lc_handle *h, cachy_error *err)
{
    if (h->store != NULL)
        return 0;
    cachy_error_set(err, NULL, CACHY_EMISUSE, "attempt to use a closed cache");
    return 1;
}

/* The item the last get or put of h's store found or wrote, into out. */
static void reference(lc_handle *h, jit_out *out)
{
    cachy_memory_ref ref;
    if (cachy_memory_last(h->store, &ref) != 0) {
        out->item = 0;
        return;
    }
    out->item = (uint64_t)(uintptr_t)ref.item;
    out->stamp = ref.stamp;
    out->gen = ref.gen;
}

static int j_get(lc_handle *h, const char *key, size_t klen, jit_out *out, cachy_error *err)
{
    cachy_slice k = { key, klen };
    int rc;
    if (closed(h, err))
        return -1;
    rc = cachy_get(h->store, k, &h->buf, err);
    out->ptr = h->buf.data;
    out->len = h->buf.len;
    if (rc == 1)
        reference(h, out);
    return rc;
}

/* A get of the item a get found before (cachy_memory_touch): 1 a hit, 0
 * when the Lua side must read by key. */
static int j_touch(lc_handle *h, uint64_t item, uint64_t stamp, uint64_t gen)
{
    cachy_memory_ref ref;
    if (h->store == NULL || item == 0)
        return 0;
    ref.item = (const void *)(uintptr_t)item;
    ref.stamp = stamp;
    ref.gen = gen;
    return cachy_memory_touch(h->store, &ref);
}

/* Writes h->buf under key; 0 or -1. */
static int put_buf(lc_handle *h, const char *key, size_t klen, int64_t ms, cachy_error *err)
{
    cachy_slice k = { key, klen }, v = { h->buf.data, h->buf.len };
    return cachy_put(h->store, k, v, ms, err);
}

static int nomem(cachy_error *err, lc_handle *h)
{
    cachy_error_set(err, h->store, CACHY_ENOMEM, "out of memory");
    return -1;
}

/* A string as MessagePack writes it: str with the shortest header; out
 * gets a reference to the item written. */
static int j_put_string(lc_handle *h, const char *key, size_t klen, const char *s, size_t n,
                        int64_t ms, jit_out *out, cachy_error *err)
{
    unsigned char head[5];
    size_t hl;
    if (closed(h, err))
        return -1;
    if (n < 32) {
        head[0] = (unsigned char)(0xa0 | n);
        hl = 1;
    } else if (n < 256) {
        head[0] = 0xd9;
        head[1] = (unsigned char)n;
        hl = 2;
    } else if (n < 65536) {
        head[0] = 0xda;
        head[1] = (unsigned char)(n >> 8);
        head[2] = (unsigned char)n;
        hl = 3;
    } else {
        head[0] = 0xdb;
        head[1] = (unsigned char)(n >> 24);
        head[2] = (unsigned char)(n >> 16);
        head[3] = (unsigned char)(n >> 8);
        head[4] = (unsigned char)n;
        hl = 5;
    }
    if (cachy_buf_set(&h->buf, head, hl) != 0 || cachy_buf_append(&h->buf, s, n) != 0)
        return nomem(err, h);
    if (put_buf(h, key, klen, ms, err) != 0)
        return -1;
    reference(h, out);
    return 0;
}

/* A number as the codec writes it where numbers are doubles: an integral
 * one within 2^53 as decimal text (a top-level integer), any other as a
 * MessagePack float 64. */
static int j_put_number(lc_handle *h, const char *key, size_t klen, double d, int64_t ms,
                        cachy_error *err)
{
    char text[24];
    size_t n;
    if (closed(h, err))
        return -1;
    if (d >= -9007199254740992.0 && d <= 9007199254740992.0 && d == (double)(int64_t)d) {
        n = cachy_format_int((int64_t)d, text);
    } else {
        uint64_t bits;
        int i;
        memcpy(&bits, &d, sizeof bits);
        text[0] = (char)0xcb;
        for (i = 8; i >= 1; i--, bits >>= 8)
            text[i] = (char)(bits & 0xff);
        n = 9;
    }
    if (cachy_buf_set(&h->buf, text, n) != 0)
        return nomem(err, h);
    return put_buf(h, key, klen, ms, err);
}

static int j_put_boolean(lc_handle *h, const char *key, size_t klen, int b, int64_t ms,
                         cachy_error *err)
{
    char c = (char)(b ? 0xc3 : 0xc2);
    if (closed(h, err))
        return -1;
    if (cachy_buf_set(&h->buf, &c, 1) != 0)
        return nomem(err, h);
    return put_buf(h, key, klen, ms, err);
}

/* The decorator's read: the key is "prefix:" and the hash of the
 * arguments (the key lcachy_fast.c's tuple_get makes of the same values),
 * given back in out for the miss path. */
static int j_tuple_get(lc_handle *h, const char *prefix, size_t plen, const cachy_arg *args, int n,
                       jit_out *out, cachy_error *err)
{
    cachy_buf *k = &h->key;
    if (closed(h, err))
        return -1;
    /* prefix, ':' and 32 hex digits (and cachy_buf's NUL), written in place */
    k->len = 0;
    if (plen + 34 > k->cap && cachy_buf_reserve(k, plen + 34) != 0)
        return nomem(err, h);
    memcpy(k->data, prefix, plen);
    k->data[plen] = ':';
    if (cachy_codec_args_hash_scalars(args, n, k->data + plen + 1) != 0)
        return nomem(err, h);
    k->len = plen + 33;
    out->key = k->data;
    out->klen = k->len;
    return j_get(h, k->data, k->len, out, err);
}

static const char *j_code_name(int code)
{
    return lc_code_name((cachy_errcode)code);
}

/* Where a hit is checked without a call (cachy_memory_get_view); -1 while the
 * store is not open. */
static int j_view(lc_handle *h, cachy_memory_view *v)
{
    if (h->store == NULL)
        return -1;
    return cachy_memory_get_view(h->store, v);
}

static const jit_api api = {
    .api_size = sizeof(jit_api),
    .get = j_get,
    .touch = j_touch,
    .put_string = j_put_string,
    .put_number = j_put_number,
    .put_boolean = j_put_boolean,
    .tuple_get = j_tuple_get,
    .code_name = j_code_name,
    .view = j_view,
    .error_size = sizeof(cachy_error),
    .arg_size = sizeof(cachy_arg),
    .out_size = sizeof(jit_out),
    .view_size = sizeof(cachy_memory_view),
};

/* core.jit_bind(handle): the function table and the handle, as light
 * userdata for ffi.cast, when the handle's store is a memory store;
 * nothing otherwise. The caller keeps the handle referenced while it uses
 * the pointer. */
int lc_jit_bind(lua_State *L)
{
    lc_handle *h = lc_check_handle(L, 1);
    if (cachy_store_ops_of(h->store) != cachy_driver_find("memory"))
        return 0;
    lua_pushlightuserdata(L, (void *)&api);
    lua_pushlightuserdata(L, h);
    return 2;
}

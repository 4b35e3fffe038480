/*
 * codec.c: Lua values <-> bytes, and the canonical argument hash.
 *
 * Values are standard MessagePack. msgpack-c's packer writes straight into
 * the caller's cachy_buf; reading runs msgpack-c's parser (its unpack
 * template) with callbacks that build the Lua values directly. A top-level
 * integer is decimal text instead, so a backend's INCR works on it.
 *
 * Why the template and not msgpack_unpack_next(): the library's compiled
 * unpacker stops at 32 levels of nesting (we allow 100), and it allocates
 * count * sizeof(msgpack_object) as soon as it reads a container header,
 * so five bytes claiming 2^28 elements reserve 8 GB before the truncation
 * is noticed. Instantiated here, the parser keeps its state on the C stack,
 * has room for exactly CACHY_CODEC_MAX_DEPTH open containers, and our
 * callbacks check every declared count against what the input can hold
 * before anything is allocated.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "codec.h"
#include "walk.h"

/* ---- paths for error messages ------------------------------------------ */

/* The walk (walk.h): shared with json.c. */

/* A truncating writer into errmsg. */
typedef struct msg {
    char *p;
    size_t cap, len;
} msg;

static void msg_add(msg *m, const char *s, size_t n)
{
    if (m->cap == 0)
        return;
    if (n > m->cap - 1 - m->len)
        n = m->cap - 1 - m->len;
    memcpy(m->p + m->len, s, n);
    m->len += n;
    m->p[m->len] = '\0';
}

static void msg_adds(msg *m, const char *s) { msg_add(m, s, strlen(s)); }

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void msg_addf(msg *m, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    int k;
    va_start(ap, fmt);
    k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k > 0)
        msg_add(m, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

void walk_init(walk *w, lua_State *L, const char *root, char *errmsg, size_t errlen)
{
    w->L = L;
    w->root = root;
    w->root_no = 0;
    w->depth = 0;
    w->errmsg = errmsg;
    w->errlen = errlen;
    if (errlen)
        errmsg[0] = '\0';
}

/* A string key that reads as `t.name` in Lua source. */
static int is_name(const char *s, size_t n)
{
    static const char *const reserved[] = {
        "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
        "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
    };
    size_t i;
    if (n == 0 || n > 40 || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_'))
            return 0;
    }
    for (i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strlen(reserved[i]) == n && memcmp(reserved[i], s, n) == 0)
            return 0;
    return 1;
}

/* ["..."] with %q-like escapes; long keys are cut, the message has to stay readable. */
static void msg_quoted(msg *m, const char *s, size_t n)
{
    size_t i, shown = n > 40 ? 40 : n;
    msg_adds(m, "[\"");
    for (i = 0; i < shown; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            char e[2] = { '\\', (char)ch };
            msg_add(m, e, 2);
        } else if (ch == '\n') {
            msg_adds(m, "\\n");
        } else if (ch == '\r') {
            msg_adds(m, "\\r");
        } else if (ch == '\t') {
            msg_adds(m, "\\t");
        } else if (ch < 0x20 || ch == 0x7f) {
            int digit_next = i + 1 < shown && s[i + 1] >= '0' && s[i + 1] <= '9';
            msg_addf(m, digit_next ? "\\%03u" : "\\%u", (unsigned)ch);
        } else {
            msg_add(m, (const char *)&s[i], 1);
        }
    }
    msg_adds(m, shown < n ? "...\"]" : "\"]");
}

static void msg_key(msg *m, lua_State *L, int idx)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        if (is_name(s, n)) {
            msg_adds(m, ".");
            msg_add(m, s, n);
        } else {
            msg_quoted(m, s, n);
        }
        break;
    }
    case LUA_TNUMBER:
        if (cachy_isinteger(L, idx))
            msg_addf(m, "[%lld]", (long long)cachy_tointeger(L, idx));
        else
            msg_addf(m, "[%.14g]", (double)lua_tonumber(L, idx));
        break;
    case LUA_TBOOLEAN:
        msg_adds(m, lua_toboolean(L, idx) ? "[true]" : "[false]");
        break;
    default:
        msg_addf(m, "[%s]", luaL_typename(L, idx));
        break;
    }
}

static void msg_root(msg *m, const walk *w)
{
    msg_adds(m, w->root);
    if (w->root_no > 0)
        msg_addf(m, " #%d", w->root_no);
}

/*
 * "<path> is <what>", or "<path> has <what> as a key" when the key itself
 * failed. Inside a table used as a key the path goes on from "'s table key":
 * "value's table key.f is a function".
 */
int walk_fail(walk *w, const char *what)
{
    return walk_fail_elided(w, what, 0);
}

/*
 * The steps of the path up to depth; with keep > 0, a path deeper than
 * 2 * keep shows its first and last keep steps around "...". 1 when the
 * last step is a key that failed itself (what is then said: " has <what>
 * as a key"), 0 otherwise.
 */
static int msg_path(msg *m, const walk *w, int depth, int keep, const char *what)
{
    int d;
    for (d = 0; d < depth; d++) {
        const seg *s = &w->segs[d];
        if (keep > 0 && depth > 2 * keep && d >= keep && d < depth - keep) {
            if (d == keep)
                msg_adds(m, "...");
            continue;
        }
        if (s->kind == SEG_INKEY) {
            if (d == depth - 1 && what != NULL) {
                msg_addf(m, " has %s as a key", what);
                return 1;
            }
            msg_adds(m, "'s table key");
        } else if (s->kind == SEG_INDEX) {
            msg_addf(m, "[%lld]", (long long)s->index);
        } else {
            msg_key(m, w->L, s->key);
        }
    }
    return 0;
}

/* The same as walk_fail; with keep > 0, a path deeper than 2 * keep shows
 * its first and last keep steps around "...". */
int walk_fail_elided(walk *w, const char *what, int keep)
{
    msg m = { w->errmsg, w->errlen, 0 };
    msg_root(&m, w);
    if (msg_path(&m, w, w->depth, keep, what))
        return -1;
    msg_adds(&m, " is ");
    msg_adds(&m, what);
    return -1;
}

/* "<path of the first depth steps> <text>": what a place has, not what it is. */
int walk_fail_at(walk *w, int depth, const char *text)
{
    msg m = { w->errmsg, w->errlen, 0 };
    msg_root(&m, w);
    msg_path(&m, w, depth, 0, NULL);
    msg_adds(&m, " ");
    msg_adds(&m, text);
    return -1;
}

int walk_fail_type(walk *w, int idx)
{
    char what[40];
    snprintf(what, sizeof what, "a %s", luaL_typename(w->L, idx));
    return walk_fail(w, what);
}

/* Errors about the whole value, not a place in it. */
int walk_fail_root(walk *w, const char *what)
{
    msg m = { w->errmsg, w->errlen, 0 };
    msg_root(&m, w);
    msg_adds(&m, " ");
    msg_adds(&m, what);
    return -1;
}

int walk_nomem(walk *w)
{
    if (w->errlen)
        snprintf(w->errmsg, w->errlen, "out of memory");
    return -1;
}

/* Open the table at idx on the path: refuses cycles and depth beyond the limit. */
int walk_enter(walk *w, int idx)
{
    const void *p = lua_topointer(w->L, idx);
    int d;
    for (d = 0; d < w->depth; d++)
        if (w->open[d] == p)
            return walk_fail(w, "a cyclic reference");
    if (w->depth >= CACHY_CODEC_MAX_DEPTH) {
        char what[64];
        snprintf(what, sizeof what, "nested deeper than %d levels", CACHY_CODEC_MAX_DEPTH);
        return walk_fail_elided(w, what, 4);
    }
    /* Room for a key, a value and what encoding them pushes. */
    if (!lua_checkstack(w->L, 4))
        return walk_fail_root(w, "is too large for the Lua stack");
    w->open[w->depth++] = p;
    return 0;
}

/* ---- encoding ---------------------------------------------------------- */

typedef struct enc {
    walk w;
    msgpack_packer pk;
    cachy_buf *out;
} enc;

/* The packer writes a few bytes at a time: append in place while there is room. */
static int buf_write(void *data, const char *p, size_t n)
{
    cachy_buf *b = data;
    if (b->cap - b->len > n) {          /* room for the bytes and the NUL */
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
        return 0;
    }
    return cachy_buf_append(b, p, n);
}

static int enc_value(enc *e, int idx);

/* Keys and values of the table at idx, as map entries; counts them. */
static int enc_entries(enc *e, int idx, seg *s, size_t *count)
{
    lua_State *L = e->w.L;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int k = lua_gettop(L) - 1;
        s->key = k;
        s->kind = SEG_INKEY;
        if (enc_value(e, k) != 0)
            return -1;
        s->kind = SEG_KEY;
        if (enc_value(e, k + 1) != 0)
            return -1;
        lua_pop(L, 1);
        (*count)++;
    }
    return 0;
}

/*
 * A table without t[1] cannot be an array, so it is written in one pass:
 * a map32 header first, then shrunk to the smallest form once the count is
 * known (the format asks writers for the shortest encoding).
 */
static int enc_map_one_pass(enc *e, int idx, seg *s)
{
    cachy_buf *b = e->out;
    size_t pos = b->len, count = 0, h;
    char hdr[5];
    if (buf_write(b, "\xdf\0\0\0\0", 5) != 0)
        return walk_nomem(&e->w);
    if (enc_entries(e, idx, s, &count) != 0)
        return -1;
    if (count > UINT32_MAX)
        return walk_fail(&e->w, "a table with more than 4294967295 entries");
    if (count <= 15) {
        hdr[0] = (char)(0x80 | count);
        h = 1;
    } else if (count <= 0xffff) {
        hdr[0] = (char)0xde;
        hdr[1] = (char)(count >> 8);
        hdr[2] = (char)count;
        h = 3;
    } else {
        hdr[0] = (char)0xdf;
        hdr[1] = (char)(count >> 24);
        hdr[2] = (char)(count >> 16);
        hdr[3] = (char)(count >> 8);
        hdr[4] = (char)count;
        h = 5;
    }
    if (h < 5) {
        memmove(b->data + pos + h, b->data + pos + 5, b->len - pos - 5);
        b->len -= 5 - h;
        b->data[b->len] = '\0';
    }
    memcpy(b->data + pos, hdr, h);
    return 0;
}

/*
 * Tables are read raw (lua_next, lua_rawgeti): metatables are not kept, and
 * __index/__pairs do not run user code in the middle of encoding.
 *
 * A table whose keys are exactly 1..n is an array. Everything else is a
 * map, keys of any storable type kept as they are ([1] and ["1"] stay
 * apart). An empty table has no keys to tell an array from a map: it is
 * written as an empty map (an object, in other languages); read back here,
 * either is {}.
 */
static int enc_table(enc *e, int idx)
{
    lua_State *L = e->w.L;
    seg *s;
    size_t count = 0;
    int64_t max = 0;
    int keys_are_positive_ints = 1;

    if (walk_enter(&e->w, idx) != 0)
        return -1;
    s = &e->w.segs[e->w.depth - 1];
    if (cachy_rawlen(L, idx) == 0) {
        if (enc_map_one_pass(e, idx, s) != 0)
            return -1;
        e->w.depth--;
        return 0;
    }

    /* First pass: count, tell array from map, refuse keys that cannot be stored. */
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int kt = lua_type(L, -2);
        count++;
        if (kt == LUA_TNUMBER) {
            if (keys_are_positive_ints && cachy_isinteger(L, -2)) {
                int64_t k = cachy_tointeger(L, -2);
                if (k < 1)
                    keys_are_positive_ints = 0;
                else if (k > max)
                    max = k;
            } else {
                keys_are_positive_ints = 0;
            }
        } else if (kt == LUA_TSTRING || kt == LUA_TBOOLEAN || kt == LUA_TTABLE) {
            keys_are_positive_ints = 0;
        } else {
            s->kind = SEG_INKEY;
            s->key = lua_gettop(L) - 1;
            return walk_fail_type(&e->w, -2);
        }
        lua_pop(L, 1);
    }
    if (count > UINT32_MAX)
        return walk_fail(&e->w, "a table with more than 4294967295 entries");

    if (keys_are_positive_ints && (uint64_t)max == count) {
        /* Keys are distinct, all in 1..max, and there are max of them: exactly 1..n. */
        int64_t i;
        if (msgpack_pack_array(&e->pk, count) != 0)
            return walk_nomem(&e->w);
        s->kind = SEG_INDEX;
        for (i = 1; i <= max; i++) {
            s->index = i;
            lua_rawgeti(L, idx, i);
            if (enc_value(e, lua_gettop(L)) != 0)
                return -1;
            lua_pop(L, 1);
        }
    } else {
        size_t written = 0;
        if (msgpack_pack_map(&e->pk, count) != 0)
            return walk_nomem(&e->w);
        if (enc_entries(e, idx, s, &written) != 0)
            return -1;
    }
    e->w.depth--;
    return 0;
}

static int enc_value(enc *e, int idx)
{
    lua_State *L = e->w.L;
    msgpack_packer *pk = &e->pk;
    int rc;
    switch (lua_type(L, idx)) {
    case LUA_TNONE:
    case LUA_TNIL:
        rc = msgpack_pack_nil(pk);
        break;
    case LUA_TBOOLEAN:
        rc = lua_toboolean(L, idx) ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        break;
    case LUA_TNUMBER:
        /* 5.3+: the subtype decides (1.0 stays a float); 5.1: integral values within 2^53. */
        if (cachy_isinteger(L, idx))
            rc = msgpack_pack_int64(pk, cachy_tointeger(L, idx));
        else
            rc = msgpack_pack_double(pk, (double)lua_tonumber(L, idx));
        break;
    case LUA_TSTRING: {
        /*
         * As str, not bin: Lua strings are mostly text and other languages'
         * readers give str as their text type. Any bytes round-trip here;
         * a strict reader elsewhere may refuse a str that is not UTF-8.
         */
        size_t n;
        const char *p = lua_tolstring(L, idx, &n);
        if ((uint64_t)n > UINT32_MAX)
            return walk_fail(&e->w, "a string longer than 4294967295 bytes");
        rc = msgpack_pack_str(pk, n);
        if (rc == 0)
            rc = msgpack_pack_str_body(pk, p, n);
        break;
    }
    case LUA_TTABLE:
        return enc_table(e, idx);
    default:
        return walk_fail_type(&e->w, idx);
    }
    return rc == 0 ? 0 : walk_nomem(&e->w);
}

int cachy_codec_encode(lua_State *L, int idx, const char *root, cachy_buf *out,
                       char *errmsg, size_t errlen)
{
    enc e;
    int top = lua_gettop(L), rc;
    idx = lua_absindex(L, idx);
    walk_init(&e.w, L, root, errmsg, errlen);
    out->len = 0;
    if (lua_isnoneornil(L, idx))
        return walk_fail(&e.w, "nil");
    if (lua_type(L, idx) == LUA_TNUMBER && cachy_isinteger(L, idx)) {
        char num[24];
        size_t n = cachy_format_int(cachy_tointeger(L, idx), num);
        return cachy_buf_set(out, num, n) == 0 ? 0 : walk_nomem(&e.w);
    }
    e.out = out;
    msgpack_packer_init(&e.pk, out, buf_write);
    rc = enc_value(&e, idx);
    lua_settop(L, top);
    if (rc != 0)
        out->len = 0;
    return rc;
}

int cachy_codec_encode_tuple(lua_State *L, int idx, int n, cachy_buf *out,
                             char *errmsg, size_t errlen)
{
    enc e;
    int top = lua_gettop(L), rc = 0, i;
    idx = lua_absindex(L, idx);
    walk_init(&e.w, L, "result", errmsg, errlen);
    out->len = 0;
    e.out = out;
    msgpack_packer_init(&e.pk, out, buf_write);
    if (msgpack_pack_array(&e.pk, n > 0 ? (size_t)n : 0) != 0)
        rc = walk_nomem(&e.w);
    for (i = 0; i < n && rc == 0; i++) {
        e.w.root_no = i + 1;
        e.w.depth = 0;
        rc = enc_value(&e, idx + i);
    }
    lua_settop(L, top);
    if (rc != 0)
        out->len = 0;
    return rc;
}

/* ---- decoding ---------------------------------------------------------- */

/* An array's next index; 0 for other values, which live on the Lua stack. */
typedef uint32_t dec_obj;

typedef struct dec_user {
    lua_State *L;
    size_t budget;      /* elements the rest of the input can still hold */
    uint64_t bad;       /* the count or ext type an error is about */
    int key_nan;
} dec_user;

/* Our callbacks' failures; the parser's own are MSGPACK_UNPACK_*_ERROR (-1, -2). */
enum {
    DEC_ELEN = -10,     /* declared length larger than the input */
    DEC_EEXT = -11,     /* ext types are not Lua values */
    DEC_EKEY = -12,     /* nil or NaN map key */
    DEC_ESTACK = -13,   /* the Lua stack cannot grow */
    DEC_ETRAIL = -14,
    DEC_ETUPLE = -15,   /* decode_tuple: not an array */
    DEC_EMPTY = -16
};

static inline dec_obj codec_cb_root(dec_user *u)
{
    (void)u;
    return 0;
}

static inline int push_int(dec_user *u, int64_t d, dec_obj *o)
{
    *o = 0;
    cachy_pushinteger(u->L, d);
    return 0;
}

static inline int codec_cb_uint8(dec_user *u, uint8_t d, dec_obj *o) { return push_int(u, d, o); }
static inline int codec_cb_uint16(dec_user *u, uint16_t d, dec_obj *o) { return push_int(u, d, o); }
static inline int codec_cb_uint32(dec_user *u, uint32_t d, dec_obj *o) { return push_int(u, d, o); }
static inline int codec_cb_int8(dec_user *u, int8_t d, dec_obj *o) { return push_int(u, d, o); }
static inline int codec_cb_int16(dec_user *u, int16_t d, dec_obj *o) { return push_int(u, d, o); }
static inline int codec_cb_int32(dec_user *u, int32_t d, dec_obj *o) { return push_int(u, d, o); }
static inline int codec_cb_int64(dec_user *u, int64_t d, dec_obj *o) { return push_int(u, d, o); }

static inline int codec_cb_uint64(dec_user *u, uint64_t d, dec_obj *o)
{
    if (d > (uint64_t)INT64_MAX) {      /* beyond int64: the nearest float */
        *o = 0;
        lua_pushnumber(u->L, (lua_Number)d);
        return 0;
    }
    return push_int(u, (int64_t)d, o);
}

static inline int codec_cb_float(dec_user *u, float d, dec_obj *o)
{
    *o = 0;
    lua_pushnumber(u->L, (lua_Number)d);
    return 0;
}

static inline int codec_cb_double(dec_user *u, double d, dec_obj *o)
{
    *o = 0;
    lua_pushnumber(u->L, (lua_Number)d);
    return 0;
}

static inline int codec_cb_nil(dec_user *u, dec_obj *o)
{
    *o = 0;
    lua_pushnil(u->L);
    return 0;
}

static inline int codec_cb_true(dec_user *u, dec_obj *o)
{
    *o = 0;
    lua_pushboolean(u->L, 1);
    return 0;
}

static inline int codec_cb_false(dec_user *u, dec_obj *o)
{
    *o = 0;
    lua_pushboolean(u->L, 0);
    return 0;
}

/*
 * Every element is at least one byte of the input, so the counts declared
 * by all containers together never exceed its length. Charging each count
 * to that budget before the table is created refuses a lying header at
 * once and bounds what presizing can allocate by the input's size.
 */
static inline int charge(dec_user *u, uint64_t elems, unsigned int count)
{
    if (elems > u->budget || count > (unsigned)INT_MAX) {
        u->bad = count;
        return DEC_ELEN;
    }
    u->budget -= (size_t)elems;
    /* The table, a key and a value. */
    if (!lua_checkstack(u->L, 3))
        return DEC_ESTACK;
    return 0;
}

static inline int codec_cb_array(dec_user *u, unsigned int n, dec_obj *o)
{
    int rc = charge(u, n, n);
    if (rc != 0)
        return rc;
    lua_createtable(u->L, (int)n, 0);
    *o = 1;
    return 0;
}

static inline int codec_cb_array_item(dec_user *u, dec_obj *c, dec_obj o)
{
    (void)o;
    lua_rawseti(u->L, -2, (int)*c);
    (*c)++;
    return 0;
}

static inline int codec_cb_map(dec_user *u, unsigned int n, dec_obj *o)
{
    int rc = charge(u, (uint64_t)n * 2, n);
    if (rc != 0)
        return rc;
    lua_createtable(u->L, 0, (int)n);
    *o = 0;
    return 0;
}

static inline int codec_cb_map_item(dec_user *u, dec_obj *c, dec_obj k, dec_obj v)
{
    lua_State *L = u->L;
    (void)c;
    (void)k;
    (void)v;
    if (lua_type(L, -2) == LUA_TNIL)
        return DEC_EKEY;
    if (lua_type(L, -2) == LUA_TNUMBER && lua_tonumber(L, -2) != lua_tonumber(L, -2)) {
        u->key_nan = 1;
        return DEC_EKEY;
    }
    lua_rawset(L, -3);
    return 0;
}

static inline int codec_cb_str(dec_user *u, const char *b, const char *p, unsigned int l, dec_obj *o)
{
    (void)b;
    *o = 0;
    lua_pushlstring(u->L, p, l);
    return 0;
}

/* bin from other writers reads as a string: Lua has one type for bytes. */
static inline int codec_cb_bin(dec_user *u, const char *b, const char *p, unsigned int l, dec_obj *o)
{
    return codec_cb_str(u, b, p, l, o);
}

static inline int codec_cb_ext(dec_user *u, const char *b, const char *p, unsigned int l, dec_obj *o)
{
    (void)b;
    (void)l;
    *o = 0;
    u->bad = (uint64_t)(int64_t)(int8_t)p[0];
    return DEC_EEXT;
}

#define msgpack_unpack_struct(name) struct codec_unpack##name
#define msgpack_unpack_func(ret, name) static inline ret codec_unpack##name
#define msgpack_unpack_callback(name) codec_cb##name
#define msgpack_unpack_object dec_obj
#define msgpack_unpack_user dec_user
/* The parser's container stack is the nesting limit. */
#undef MSGPACK_EMBED_STACK_SIZE
#define MSGPACK_EMBED_STACK_SIZE CACHY_CODEC_MAX_DEPTH
#include <msgpack/unpack_define.h>
#include <msgpack/unpack_template.h>

/* Parse one value at p + *off, pushing it; 1 when complete, else the failure. */
static int dec_one(dec_user *u, const char *p, size_t n, size_t *off)
{
    struct codec_unpack_context ctx;
    int rc;
    ctx.user = *u;
    codec_unpack_init(&ctx);
    rc = codec_unpack_execute(&ctx, p, n, off);
    *u = ctx.user;
    return rc;
}

static int dec_fail(lua_State *L, int top, const dec_user *u, int rc, char *errmsg, size_t errlen)
{
    char why[96];
    lua_settop(L, top);
    switch (rc) {
    case MSGPACK_UNPACK_CONTINUE:
        snprintf(why, sizeof why, "truncated MessagePack");
        break;
    case MSGPACK_UNPACK_NOMEM_ERROR:   /* the parser's stack is full: one level too deep */
        snprintf(why, sizeof why, "nested deeper than %d levels", CACHY_CODEC_MAX_DEPTH);
        break;
    case DEC_ELEN:
        snprintf(why, sizeof why, "declared length %llu exceeds the data", (unsigned long long)u->bad);
        break;
    case DEC_EEXT:
        snprintf(why, sizeof why, "unsupported MessagePack type (ext %lld)", (long long)(int64_t)u->bad);
        break;
    case DEC_EKEY:
        snprintf(why, sizeof why, "%s map key", u->key_nan ? "NaN" : "nil");
        break;
    case DEC_ESTACK:
        snprintf(why, sizeof why, "too many values for the Lua stack");
        break;
    case DEC_ETRAIL:
        snprintf(why, sizeof why, "trailing bytes after the value");
        break;
    case DEC_ETUPLE:
        snprintf(why, sizeof why, "not a MessagePack array of results");
        break;
    case DEC_EMPTY:
        snprintf(why, sizeof why, "empty");
        break;
    default:                           /* MSGPACK_UNPACK_PARSE_ERROR: the unused byte 0xc1 */
        snprintf(why, sizeof why, "invalid MessagePack");
        break;
    }
    if (errlen)
        snprintf(errmsg, errlen, "not a cachy value: %s", why);
    return -1;
}

static void dec_init(dec_user *u, lua_State *L, size_t budget)
{
    u->L = L;
    u->budget = budget;
    u->bad = 0;
    u->key_nan = 0;
}

/* Whether the bytes are exactly one MessagePack string (header and all). */
int cachy_codec_lone_string(const char *p, size_t n, cachy_slice *s)
{
    const unsigned char *b = (const unsigned char *)p;
    size_t head, len;
    if (n == 0)
        return 0;
    if (b[0] >= 0xa0 && b[0] <= 0xbf)
        head = 1, len = b[0] & 0x1f;
    else if (b[0] == 0xd9 && n >= 2)
        head = 2, len = b[1];
    else if (b[0] == 0xda && n >= 3)
        head = 3, len = (size_t)b[1] << 8 | b[2];
    else if (b[0] == 0xdb && n >= 5)
        head = 5, len = (size_t)b[1] << 24 | (size_t)b[2] << 16 | (size_t)b[3] << 8 | b[4];
    else
        return 0;
    if (len != n - head)
        return 0;       /* truncated or trailing bytes: the parser says which */
    s->ptr = p + head;
    s->len = len;
    return 1;
}

/*
 * A value that is exactly one MessagePack string, the commonest thing a
 * cache holds, is pushed here without setting up the parser: that setup
 * was a fifth of a memory get-hit. 1 pushed, 0 not such a value.
 */
static int dec_lone_string(lua_State *L, const char *p, size_t n)
{
    cachy_slice s;
    if (!cachy_codec_lone_string(p, n, &s))
        return 0;
    lua_pushlstring(L, s.ptr, s.len);
    return 1;
}

int cachy_codec_decode(lua_State *L, const char *p, size_t n, char *errmsg, size_t errlen)
{
    cachy_slice s = { p, n };
    int64_t v;
    size_t off = 0;
    int top = lua_gettop(L), rc;
    dec_user u;

    dec_init(&u, L, n);
    if (!lua_checkstack(L, 1))
        return dec_fail(L, top, &u, DEC_ESTACK, errmsg, errlen);
    if (n > 0 && dec_lone_string(L, p, n))
        return 0;
    /*
     * Decimal text first: how top-level integers are stored, and what other
     * clients write. MessagePack written here never looks like that (no
     * top-level integer is written as MessagePack), but another writer's
     * lone positive fixint 0x30..0x39 is read as the digit.
     */
    if (cachy_parse_int(s, &v)) {
        cachy_pushinteger(L, v);
        return 0;
    }
    if (n == 0)
        return dec_fail(L, top, &u, DEC_EMPTY, errmsg, errlen);
    rc = dec_one(&u, p, n, &off);
    if (rc != 1)
        return dec_fail(L, top, &u, rc, errmsg, errlen);
    if (off != n)
        return dec_fail(L, top, &u, DEC_ETRAIL, errmsg, errlen);
    return 0;
}

/*
 * A tuple element that is nil, a boolean, a fixint or a string of up to
 * 255 bytes (what memoized functions mostly return) is pushed here; the
 * parser's setup cost more than the element. 1 pushed (*off advanced),
 * 0 left to the parser, which also reports anything malformed.
 */
static int dec_simple(lua_State *L, const unsigned char *b, size_t n, size_t *off)
{
    size_t o = *off, head, len;
    unsigned char c = b[o];
    if (c <= 0x7f || c >= 0xe0) {
        cachy_pushinteger(L, (int8_t)c);
        *off = o + 1;
        return 1;
    }
    if (c == 0xc0 || c == 0xc2 || c == 0xc3) {
        if (c == 0xc0)
            lua_pushnil(L);
        else
            lua_pushboolean(L, c == 0xc3);
        *off = o + 1;
        return 1;
    }
    if (c >= 0xa0 && c <= 0xbf)
        head = 1, len = c & 0x1f;
    else if (c == 0xd9 && n - o >= 2)
        head = 2, len = b[o + 1];
    else
        return 0;
    if (len > n - o - head)
        return 0;
    lua_pushlstring(L, (const char *)b + o + head, len);
    *off = o + head + len;
    return 1;
}

int cachy_codec_decode_tuple(lua_State *L, const char *p, size_t n, char *errmsg, size_t errlen)
{
    const unsigned char *b = (const unsigned char *)p;
    size_t off, i;
    uint32_t count;
    int top = lua_gettop(L), rc;
    dec_user u;

    dec_init(&u, L, n);
    if (n == 0)
        return dec_fail(L, top, &u, DEC_EMPTY, errmsg, errlen);
    /* The array header is read here so each value gets the full depth. */
    if (b[0] >= 0x90 && b[0] <= 0x9f) {
        count = b[0] & 0x0f;
        off = 1;
    } else if (b[0] == 0xdc) {
        if (n < 3)
            return dec_fail(L, top, &u, MSGPACK_UNPACK_CONTINUE, errmsg, errlen);
        count = (uint32_t)b[1] << 8 | b[2];
        off = 3;
    } else if (b[0] == 0xdd) {
        if (n < 5)
            return dec_fail(L, top, &u, MSGPACK_UNPACK_CONTINUE, errmsg, errlen);
        count = (uint32_t)b[1] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 8 | b[4];
        off = 5;
    } else {
        return dec_fail(L, top, &u, DEC_ETUPLE, errmsg, errlen);
    }
    u.budget = n - off;
    if (count > u.budget || count > (uint32_t)INT_MAX - 2) {
        u.bad = count;
        return dec_fail(L, top, &u, DEC_ELEN, errmsg, errlen);
    }
    u.budget -= count;
    if (!lua_checkstack(L, (int)count + 1))
        return dec_fail(L, top, &u, DEC_ESTACK, errmsg, errlen);
    for (i = 0; i < count; i++) {
        if (off < n && dec_simple(L, b, n, &off))
            continue;
        rc = dec_one(&u, p, n, &off);
        if (rc != 1)
            return dec_fail(L, top, &u, rc, errmsg, errlen);
    }
    if (off != n)
        return dec_fail(L, top, &u, DEC_ETRAIL, errmsg, errlen);
    return (int)count;
}

/* ---- canonical arguments ----------------------------------------------- */

/*
 * The canonical form is private to the hash but must be the same in every
 * process and on every Lua version: a version byte, then per argument one
 * tag byte and big-endian fields.
 *   N nil, F false, T true,
 *   I int64 with the sign bit flipped (so bytes order like numbers),
 *   D float64 bits (one NaN), S length + bytes, M byte length + entries,
 * where a table's entries (key form, value form) are sorted bytewise. Key
 * forms are self-delimiting, so that order is a total order on the keys.
 * Integral floats in int64 range take the I form: 1 and 1.0 hash alike.
 */
#define CANON_VERSION 1
#define CANON_SMALL 256

typedef struct canon {
    walk w;
    char *p;            /* small, until it outgrows it; then heap.data */
    size_t len, cap;
    cachy_buf heap;
    char small[CANON_SMALL];
} canon;

static int canon_reserve(canon *c, size_t extra)
{
    if (c->cap - c->len >= extra)
        return 0;
    c->heap.len = c->len;
    if (cachy_buf_reserve(&c->heap, extra) != 0)
        return -1;
    if (c->p == c->small)
        memcpy(c->heap.data, c->small, c->len);
    c->p = c->heap.data;
    c->cap = c->heap.cap;
    return 0;
}

static void put_be64(char *p, uint64_t v)
{
    int i;
    for (i = 7; i >= 0; i--) {
        p[i] = (char)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t get_be64(const char *p)
{
    uint64_t v = 0;
    int i;
    for (i = 0; i < 8; i++)
        v = v << 8 | (unsigned char)p[i];
    return v;
}

static int canon_tag(canon *c, char tag)
{
    if (canon_reserve(c, 1) != 0)
        return walk_nomem(&c->w);
    c->p[c->len++] = tag;
    return 0;
}

static int canon_tag64(canon *c, char tag, uint64_t v)
{
    if (canon_reserve(c, 9) != 0)
        return walk_nomem(&c->w);
    c->p[c->len] = tag;
    put_be64(c->p + c->len + 1, v);
    c->len += 9;
    return 0;
}

/* Length of the canonical form at p (our own bytes, so no bounds to check). */
static size_t canon_skip(const char *p)
{
    switch (p[0]) {
    case 'I':
    case 'D':
        return 9;
    case 'S':
    case 'M':
        return 9 + (size_t)get_be64(p + 1);
    default:
        return 1;
    }
}

typedef struct canon_entry {
    const char *p;
    size_t n;
} canon_entry;

static int entry_cmp(const void *a, const void *b)
{
    const canon_entry *x = a, *y = b;
    int r = memcmp(x->p, y->p, x->n < y->n ? x->n : y->n);
    if (r != 0)
        return r;
    return x->n < y->n ? -1 : x->n > y->n;
}

/* Sort the count entries written since start; runs after the children are done. */
static int canon_sort(canon *c, size_t start, size_t count)
{
    canon_entry small_entries[16], *entries = small_entries;
    char small_region[512], *region = small_region;
    size_t total = c->len - start, i, pos;

    if (count > sizeof small_entries / sizeof small_entries[0]) {
        entries = malloc(count * sizeof *entries);   /* count <= total bytes: no overflow */
        if (entries == NULL)
            return -1;
    }
    if (total > sizeof small_region) {
        region = malloc(total);
        if (region == NULL) {
            if (entries != small_entries)
                free(entries);
            return -1;
        }
    }
    memcpy(region, c->p + start, total);
    for (i = 0, pos = 0; i < count; i++) {
        size_t k = canon_skip(region + pos);
        size_t v = canon_skip(region + pos + k);
        entries[i].p = region + pos;
        entries[i].n = k + v;
        pos += k + v;
    }
    qsort(entries, count, sizeof *entries, entry_cmp);
    for (i = 0, pos = start; i < count; i++) {
        memcpy(c->p + pos, entries[i].p, entries[i].n);
        pos += entries[i].n;
    }
    if (region != small_region)
        free(region);
    if (entries != small_entries)
        free(entries);
    return 0;
}

static int canon_value(canon *c, int idx);

/* A number that is not a Lua integer: integral floats in int64 range
 * take the I form, so 1 and 1.0 hash alike. */
static int canon_number(canon *c, double d)
{
    uint64_t bits;
    if (d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
        int64_t i = (int64_t)d;
        if ((double)i == d)
            return canon_tag64(c, 'I', (uint64_t)i ^ (UINT64_C(1) << 63));
    }
    if (d != d)
        bits = UINT64_C(0x7ff8000000000000);
    else
        memcpy(&bits, &d, sizeof bits);
    return canon_tag64(c, 'D', bits);
}

static int canon_string(canon *c, const char *p, size_t n)
{
    if (canon_tag64(c, 'S', (uint64_t)n) != 0)
        return -1;
    if (canon_reserve(c, n) != 0)
        return walk_nomem(&c->w);
    memcpy(c->p + c->len, p, n);
    c->len += n;
    return 0;
}

static int canon_table(canon *c, int idx)
{
    lua_State *L = c->w.L;
    seg *s;
    size_t start, count = 0;

    if (walk_enter(&c->w, idx) != 0)
        return -1;
    s = &c->w.segs[c->w.depth - 1];
    if (canon_tag64(c, 'M', 0) != 0)
        return -1;
    start = c->len;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int k = lua_gettop(L) - 1;
        s->key = k;
        s->kind = SEG_INKEY;
        if (canon_value(c, k) != 0)
            return -1;
        s->kind = SEG_KEY;
        if (canon_value(c, k + 1) != 0)
            return -1;
        lua_pop(L, 1);
        count++;
    }
    c->w.depth--;
    if (count > 1 && canon_sort(c, start, count) != 0)
        return walk_nomem(&c->w);
    put_be64(c->p + start - 8, (uint64_t)(c->len - start));
    return 0;
}

static int canon_value(canon *c, int idx)
{
    lua_State *L = c->w.L;
    switch (lua_type(L, idx)) {
    case LUA_TNONE:
    case LUA_TNIL:
        return canon_tag(c, 'N');
    case LUA_TBOOLEAN:
        return canon_tag(c, lua_toboolean(L, idx) ? 'T' : 'F');
    case LUA_TNUMBER:
        if (cachy_isinteger(L, idx))
            return canon_tag64(c, 'I', (uint64_t)cachy_tointeger(L, idx) ^ (UINT64_C(1) << 63));
        return canon_number(c, (double)lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t n;
        const char *p = lua_tolstring(L, idx, &n);
        return canon_string(c, p, n);
    }
    case LUA_TTABLE:
        return canon_table(c, idx);
    default:
        return walk_fail_type(&c->w, idx);
    }
}

static void canon_init(canon *c, lua_State *L, char *errmsg, size_t errlen)
{
    walk_init(&c->w, L, "argument", errmsg, errlen);
    c->p = c->small;
    c->cap = sizeof c->small;
    c->len = 0;
    c->heap.data = NULL;
    c->heap.len = c->heap.cap = 0;
    c->p[c->len++] = CANON_VERSION;
}

int cachy_codec_args_hash(lua_State *L, int idx, int n, char hex[33], char *errmsg, size_t errlen)
{
    canon c;
    int top = lua_gettop(L), rc = 0, i;

    idx = lua_absindex(L, idx);
    canon_init(&c, L, errmsg, errlen);
    for (i = 0; i < n && rc == 0; i++) {
        c.w.root_no = i + 1;
        c.w.depth = 0;
        rc = canon_value(&c, idx + i);
    }
    if (rc == 0)
        cachy_hash128_hex(c.p, c.len, hex);
    cachy_buf_free(&c.heap);
    lua_settop(L, top);
    return rc;
}

int cachy_codec_args_hash_scalars(const cachy_arg *args, int n, char hex[33])
{
    canon c;
    int rc = 0, i;

    canon_init(&c, NULL, NULL, 0);
    for (i = 0; i < n && rc == 0; i++) {
        const cachy_arg *a = &args[i];
        if (a->tag == 'D')
            rc = canon_number(&c, a->num);
        else if (a->tag == 'S')
            rc = canon_string(&c, a->str, a->len);
        else
            rc = canon_tag(&c, (char)a->tag);
    }
    if (rc == 0)
        cachy_hash128_hex(c.p, c.len, hex);
    cachy_buf_free(&c.heap);
    return rc;
}

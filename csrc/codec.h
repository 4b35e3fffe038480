/*
 * codec.h: Lua values <-> bytes (MessagePack through msgpack-c, top-level
 * integers as decimal text), and the canonical argument hash that names
 * decorator entries. Binding side: with the lcachy*.c files, json.c and
 * store_lua.c, the only code that sees lua.h.
 */
#ifndef CACHY_CODEC_H
#define CACHY_CODEC_H

#include "compat.h"
#include "cachy.h"

#define CACHY_CODEC_MAX_DEPTH 100

/*
 * Encode the value at idx into out (replacing its content). A top-level
 * integer is written as its decimal text; anything else as MessagePack.
 * Returns 0, or -1 with errmsg naming the path of what cannot be stored,
 * starting from `root` ("value"): "value.handlers[2] is a function",
 * "value is nil", "value.a is a cyclic reference", "value is nested deeper
 * than 100 levels". Never raises (except on memory errors).
 */
int cachy_codec_encode(lua_State *L, int idx, const char *root, cachy_buf *out,
                       char *errmsg, size_t errlen);

/*
 * Decode bytes written by cachy_codec_encode (or by another MessagePack
 * writer, or decimal text from another client) and push one value.
 * Returns 0 with the value pushed, or -1 with nothing pushed and errmsg
 * describing why the bytes are not a value (truncated, trailing bytes,
 * unsupported type, too deep). Never raises (except on memory errors).
 */
int cachy_codec_decode(lua_State *L, const char *p, size_t n, char *errmsg, size_t errlen);

/* 1 when the bytes are exactly one MessagePack string, *s its content. */
int cachy_codec_lone_string(const char *p, size_t n, cachy_slice *s);

/*
 * A tuple of n values starting at idx (nils kept by position), as one
 * MessagePack array: what the decorator stores. Unstorable values are
 * named "result #i...".
 */
int cachy_codec_encode_tuple(lua_State *L, int idx, int n, cachy_buf *out,
                             char *errmsg, size_t errlen);
/*
 * Pushes the tuple's values; returns their count, or -1 (nothing pushed),
 * also when they do not fit on the Lua stack (LuaJIT allows about 8000).
 */
int cachy_codec_decode_tuple(lua_State *L, const char *p, size_t n, char *errmsg, size_t errlen);

/*
 * Hash of the canonical form of the n arguments starting at idx: equal
 * arguments give equal hashes in every process and on every Lua version
 * (tables by content with keys sorted, 1 and 1.0 alike, nil by position).
 * Writes 32 lowercase hex digits and a NUL into hex. Returns 0, or -1 with
 * errmsg such as "argument #2 is a function" (numbered from idx). No heap
 * allocation unless the canonical form outgrows a small stack buffer.
 */
int cachy_codec_args_hash(lua_State *L, int idx, int n, char hex[33], char *errmsg, size_t errlen);

/* A scalar argument described without the Lua stack (LuaJIT's FFI path,
 * where numbers are doubles). */
typedef struct cachy_arg {
    int tag;            /* 'N' nil, 'F' false, 'T' true, 'D' number, 'S' string */
    double num;         /* 'D' */
    const char *str;    /* 'S' */
    size_t len;
} cachy_arg;

/* The hash cachy_codec_args_hash gives the same n arguments. 0, or -1
 * when out of memory. */
int cachy_codec_args_hash_scalars(const cachy_arg *args, int n, char hex[33]);

#endif

/*
 * fuzz_decode.c: libFuzzer harness for the value decoder (csrc/codec.c).
 *
 * Every input goes through cachy_codec_decode (what `get` does with stored
 * bytes) and cachy_codec_decode_tuple (what the decorator does), each on a
 * fresh Lua state whose allocator counts bytes. What must hold for any
 * bytes:
 *   - a failure leaves the stack as it was and says "not a cachy value: ...";
 *     a success pushes exactly one value (decode) or the tuple's count;
 *   - the Lua heap a decode uses stays proportional to the input, so a
 *     declared length is never trusted before the bytes are there;
 *   - what was decoded encodes again (a lone nil excepted: put refuses it),
 *     and decoding that gives a value with the same canonical hash
 *     (cachy_codec_args_hash: contents and key types).
 * Decoding is run through lua_pcall so that a raise, which the codec must
 * never do short of running out of memory, is caught and reported here.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

/* Lua heap a decode may take: a generous multiple of the input length
 * (an empty table costs about 56 bytes for its one byte of input, an array
 * slot 16), plus room for the state's own growth (stack, string table). */
#define BYTES_PER_INPUT_BYTE 160
#define FIXED_ALLOWANCE (64 * 1024)

typedef struct heap {
    size_t used;
    size_t limit;        /* abort beyond this many bytes in use */
} heap;

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    heap *h = ud;
    size_t old = ptr ? osize : 0;
    void *p;
    if (nsize == 0) {
        free(ptr);
        h->used -= old;
        return NULL;
    }
    if (nsize > old && h->used + (nsize - old) > h->limit) {
        fprintf(stderr, "decode allocates %zu bytes (%zu in use, limit %zu)\n", nsize, h->used,
                h->limit);
        abort();
    }
    p = realloc(ptr, nsize);
    if (p != NULL)
        h->used = h->used - old + nsize;
    return p;
}

static int panic(lua_State *L)
{
    fprintf(stderr, "Lua panic: %s\n", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    abort();
}

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_decode: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

/* Arguments of one protected call. */
typedef struct job {
    const char *p;
    size_t n;
    int tuple;
    int rc;              /* decode: 0 / -1; tuple: count / -1 */
    char why[256];
} job;

static int run_decode(lua_State *L)
{
    job *j = lua_touserdata(L, 1);
    lua_pop(L, 1);
    if (j->tuple)
        j->rc = cachy_codec_decode_tuple(L, j->p, j->n, j->why, sizeof j->why);
    else
        j->rc = cachy_codec_decode(L, j->p, j->n, j->why, sizeof j->why);
    return lua_gettop(L);
}

/* Decodes on L; returns the number of values now on the (otherwise empty)
 * stack, or -1 after checking that the failure was clean. */
static int decode(lua_State *L, heap *h, const char *p, size_t n, int tuple, job *j)
{
    int top;
    j->p = p;
    j->n = n;
    j->tuple = tuple;
    j->rc = -2;
    j->why[0] = '\0';
    h->limit = h->used + BYTES_PER_INPUT_BYTE * n + FIXED_ALLOWANCE;
    lua_settop(L, 0);
    lua_pushcfunction(L, run_decode);
    lua_pushlightuserdata(L, j);
    if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK)
        fail("the decoder raised", lua_tostring(L, -1));
    h->limit = (size_t)-1;
    top = lua_gettop(L);
    if (j->rc < 0) {
        if (top != 0)
            fail("a failed decode left values on the stack", j->why);
        if (strncmp(j->why, "not a cachy value: ", 19) != 0 || j->why[19] == '\0')
            fail("a failed decode gave an unexpected message", j->why);
        return -1;
    }
    if (top != (tuple ? j->rc : 1))
        fail("a decode pushed a different number of values than it returned", NULL);
    return top;
}

/* The canonical hash of the `count` values at the bottom of the stack. */
static void hash_of(lua_State *L, int count, char hex[33])
{
    char why[256];
    if (cachy_codec_args_hash(L, 1, count, hex, why, sizeof why) != 0)
        fail("a decoded value has no canonical form", why);
}

/* Encodes what is on the stack, decodes it again on a fresh state and
 * compares canonical hashes. */
static void round_trip(lua_State *L, int count, int tuple)
{
    char why[256], before[33], after[33];
    cachy_buf buf = { 0 };
    heap h2 = { 0, (size_t)-1 };
    lua_State *L2;
    job j;
    int rc;

    hash_of(L, count, before);
    if (tuple)
        rc = cachy_codec_encode_tuple(L, 1, count, &buf, why, sizeof why);
    else
        rc = cachy_codec_encode(L, 1, "value", &buf, why, sizeof why);
    if (rc != 0)
        fail("a decoded value does not encode", why);
    if (lua_gettop(L) != count)
        fail("encoding changed the stack", NULL);

    L2 = lua_newstate(counting_alloc, &h2);
    if (L2 == NULL)
        fail("lua_newstate failed", NULL);
    lua_atpanic(L2, panic);
    if (decode(L2, &h2, buf.data, buf.len, tuple, &j) != count)
        fail("re-encoded bytes do not decode to as many values", j.why);
    hash_of(L2, count, after);
    if (strcmp(before, after) != 0)
        fail("a value changed through encode and decode", NULL);
    lua_close(L2);
    cachy_buf_free(&buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int tuple;
    for (tuple = 0; tuple <= 1; tuple++) {
        heap h = { 0, (size_t)-1 };
        lua_State *L = lua_newstate(counting_alloc, &h);
        job j;
        int count;
        if (L == NULL)
            fail("lua_newstate failed", NULL);
        lua_atpanic(L, panic);
        count = decode(L, &h, (const char *)data, size, tuple, &j);
        /* Another writer's MessagePack nil reads as nil, which cannot be
         * stored again (put says to use forget): nothing to compare. */
        if (count >= 0 && !(!tuple && lua_isnil(L, 1)))
            round_trip(L, count, tuple);
        lua_close(L);
    }
    return 0;
}

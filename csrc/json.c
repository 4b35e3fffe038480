/*
 * json.c: Lua values <-> JSON text through jansson, for the built-in
 * "json" serializer. A value either comes back exactly or is refused when
 * it is written, naming the path (walk.h, shared with codec.c):
 *
 *   - a table is a JSON array when its keys are exactly 1..n (n >= 1), an
 *     object when all its keys are strings; any other table is refused,
 *     naming a key. An empty table is written as {} and reads back as {}.
 *   - integers are JSON integers and floats JSON reals, written with 17
 *     significant digits (every double round-trips) and always with a
 *     '.' or an exponent, so 1.0 stays a float on 5.3+. inf, -inf and NaN
 *     are refused. Where numbers are doubles (5.1, 5.2, LuaJIT), integral
 *     values within 2^53 are integers and others reals, as in codec.c.
 *   - strings must be UTF-8 (JSON text is Unicode); NUL bytes are kept
 *     (\u0000) except in keys, which jansson cannot read back.
 *
 * Reading: arrays -> sequences, objects -> tables of string keys, integers
 * -> integers, reals -> floats. null is no Lua value: an object member
 * that is null is left out; null in an array, or as the whole value, makes
 * the text undecodable. An integer beyond 2^53 is undecodable where
 * numbers are doubles (it would not read back exactly); beyond int64
 * jansson refuses it everywhere. Nesting is limited to 100 levels, like
 * MessagePack.
 *
 * jansson builds a tree: its root sits in a userdata with __gc while Lua
 * values are read or made, so a memory error raised by Lua frees it.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "json.h"
#include "walk.h"

#define TREE_MT "cachy.JsonTree"
#define DUMP_FLAGS (JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(17))
#define LOAD_FLAGS (JSON_DECODE_ANY | JSON_ALLOW_NUL)

static int tree_gc(lua_State *L)
{
    json_t **box = lua_touserdata(L, 1);
    if (*box != NULL) {
        json_decref(*box);
        *box = NULL;
    }
    return 0;
}

/* A box for a tree's root, pushed on the stack. */
static json_t **tree_box(lua_State *L)
{
    json_t **box = lua_newuserdata(L, sizeof *box);
    *box = NULL;
    if (luaL_newmetatable(L, TREE_MT)) {
        lua_pushcfunction(L, tree_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return box;
}

static void tree_free(json_t **box)
{
    json_decref(*box);
    *box = NULL;
}

/* ---- encoding ---------------------------------------------------------- */

/*
 * Where a new JSON value goes: appended to an array, under a key of an
 * object, or into the root box. Containers are attached before they are
 * filled, so everything made so far hangs from the box.
 */
typedef struct sink {
    json_t *parent;         /* NULL: the root box */
    const char *key;        /* for an object */
    size_t klen;
    int depth;              /* tables open at the parent: its path has depth - 1 steps */
    json_t **box;
} sink;

static int enc_value(walk *w, int idx, const sink *s);

/* Takes v (a new reference, NULL when jansson ran out of memory). */
static int attach(walk *w, const sink *s, json_t *v)
{
    if (v == NULL)
        return walk_nomem(w);
    if (s->parent == NULL) {
        *s->box = v;
        return 0;
    }
    if (json_is_array(s->parent))
        return json_array_append_new(s->parent, v) == 0 ? 0 : walk_nomem(w);
    /* The key was checked for NUL bytes; jansson checks it is UTF-8 (and drops v if not). */
    if (json_object_setn_new(s->parent, s->key, s->klen, v) != 0)
        return walk_fail_at(w, s->depth - 1, "has a string key that is not UTF-8, which json cannot carry");
    return 0;
}

static const char R_ARRAY[] = "an array's keys are 1..n, without holes";
static const char R_OBJECT[] = "an object's keys are all strings";

/* "has a number key 3 that json cannot carry (...)", for the key at idx. */
static int fail_key(walk *w, int idx, const char *reason)
{
    lua_State *L = w->L;
    char text[160], shown[40] = "";
    int t = lua_type(L, idx);
    if (t == LUA_TNUMBER) {
        if (cachy_isinteger(L, idx))
            snprintf(shown, sizeof shown, " %lld", (long long)cachy_tointeger(L, idx));
        else
            snprintf(shown, sizeof shown, " %.17g", (double)lua_tonumber(L, idx));
    } else if (t == LUA_TBOOLEAN) {
        snprintf(shown, sizeof shown, " %s", lua_toboolean(L, idx) ? "true" : "false");
    }
    snprintf(text, sizeof text, "has a %s key%s that json cannot carry (%s)",
             luaL_typename(L, idx), shown, reason);
    return walk_fail_at(w, w->depth - 1, text);
}

/*
 * Pass one over the table at idx (open on the walk): 1 array, 0 object,
 * -1 refused. Keys of types nothing can store are named as codec.c does.
 */
static int classify(walk *w, int idx)
{
    lua_State *L = w->L;
    seg *s = &w->segs[w->depth - 1];
    size_t count = 0, strings = 0;
    int64_t max = 0;
    int odd = 0, some_int = 0, rc;     /* stack copies of a key to name */
    int top = lua_gettop(L);

    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int kt = lua_type(L, -2);
        lua_pop(L, 1);
        count++;
        if (kt == LUA_TSTRING) {
            strings++;
        } else if (kt == LUA_TNUMBER && cachy_isinteger(L, -1) && cachy_tointeger(L, -1) >= 1) {
            int64_t k = cachy_tointeger(L, -1);
            if (k > max)
                max = k;
            if (!some_int) {
                lua_pushvalue(L, -1);
                lua_insert(L, top + 1);
                some_int = top + 1;
                if (odd)
                    odd++;
            }
        } else if (kt == LUA_TNUMBER || kt == LUA_TBOOLEAN || kt == LUA_TTABLE) {
            if (!odd) {
                lua_pushvalue(L, -1);
                lua_insert(L, top + 1);
                odd = top + 1;
                if (some_int)
                    some_int++;
            }
        } else {
            s->kind = SEG_INKEY;
            s->key = lua_gettop(L);
            return walk_fail_type(w, -1);
        }
    }
    if (strings == count) {
        rc = 0;
    } else if (strings == 0 && !odd && (uint64_t)max == count) {
        rc = 1;     /* distinct keys, all in 1..max, max of them: exactly 1..n */
    } else if (strings > 0) {
        rc = fail_key(w, odd ? odd : some_int, R_OBJECT);
    } else if (odd) {
        rc = fail_key(w, odd, lua_type(L, odd) == LUA_TNUMBER ? R_ARRAY : R_OBJECT);
    } else {
        cachy_pushinteger(L, max);
        rc = fail_key(w, -1, R_ARRAY);
    }
    lua_settop(L, top);
    return rc;
}

static int enc_table(walk *w, int idx, const sink *s)
{
    lua_State *L = w->L;
    json_t *t;
    seg *sg;
    sink in;
    int kind;

    if (walk_enter(w, idx) != 0)
        return -1;
    sg = &w->segs[w->depth - 1];
    kind = classify(w, idx);
    if (kind < 0)
        return -1;
    t = kind ? json_array() : json_object();
    if (attach(w, s, t) != 0)
        return -1;
    in.parent = t;
    in.key = NULL;
    in.klen = 0;
    in.depth = w->depth;
    in.box = s->box;
    if (kind) {
        int64_t i, n = (int64_t)cachy_rawlen(L, idx);
        sg->kind = SEG_INDEX;
        for (i = 1; i <= n; i++) {
            sg->index = i;
            lua_rawgeti(L, idx, (int)i);
            if (enc_value(w, lua_gettop(L), &in) != 0)
                return -1;
            lua_pop(L, 1);
        }
    } else {
        sg->kind = SEG_KEY;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            int k = lua_gettop(L) - 1;
            in.key = lua_tolstring(L, k, &in.klen);    /* a string: no conversion */
            sg->key = k;
            if (memchr(in.key, '\0', in.klen) != NULL)
                return walk_fail_at(w, w->depth - 1,
                                    "has a string key with a NUL byte, which json cannot carry");
            if (enc_value(w, k + 1, &in) != 0)
                return -1;
            lua_pop(L, 1);
        }
    }
    w->depth--;
    return 0;
}

static int enc_value(walk *w, int idx, const sink *s)
{
    lua_State *L = w->L;
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
        return attach(w, s, lua_toboolean(L, idx) ? json_true() : json_false());
    case LUA_TNUMBER: {
        double d;
        if (cachy_isinteger(L, idx))
            return attach(w, s, json_integer((json_int_t)cachy_tointeger(L, idx)));
        d = (double)lua_tonumber(L, idx);
        if (isnan(d))
            return walk_fail(w, "NaN, which json cannot carry");
        if (isinf(d))
            return walk_fail(w, d > 0 ? "inf, which json cannot carry" : "-inf, which json cannot carry");
        return attach(w, s, json_real(d));
    }
    case LUA_TSTRING: {
        size_t n;
        const char *p = lua_tolstring(L, idx, &n);
        json_t *v = json_stringn(p, n);     /* NULL: not UTF-8 (or out of memory) */
        if (v == NULL)
            return walk_fail(w, "a string that is not UTF-8, which json cannot carry");
        return attach(w, s, v);
    }
    case LUA_TTABLE:
        return enc_table(w, idx, s);
    case LUA_TNIL:
        return walk_fail(w, "nil");
    default:
        return walk_fail_type(w, idx);
    }
}

static int dump_to_buffer(const char *p, size_t n, void *data)
{
    luaL_addlstring(data, p, n);
    return 0;
}

int cachy_json_encode(lua_State *L)
{
    char why[256];
    const char *root = luaL_optstring(L, 2, "value");
    json_t **box;
    luaL_Buffer b;
    walk w;
    sink s = { NULL, NULL, 0, 0, NULL };

    lua_settop(L, 2);
    box = tree_box(L);
    s.box = box;
    walk_init(&w, L, root, why, sizeof why);
    if (enc_value(&w, 1, &s) != 0) {
        tree_free(box);
        lua_pushnil(L);
        lua_pushstring(L, why);
        return 2;
    }
    lua_settop(L, 3);
    luaL_buffinit(L, &b);
    if (json_dump_callback(*box, dump_to_buffer, &b, DUMP_FLAGS) != 0) {
        tree_free(box);
        return luaL_error(L, "json: out of memory");
    }
    luaL_pushresult(&b);
    tree_free(box);
    return 1;
}

/* ---- decoding ---------------------------------------------------------- */

static int dec_value(walk *w, json_t *j);

static int dec_enter(walk *w)
{
    if (w->depth >= CACHY_CODEC_MAX_DEPTH) {
        char what[64];
        snprintf(what, sizeof what, "nested deeper than %d levels", CACHY_CODEC_MAX_DEPTH);
        return walk_fail_elided(w, what, 4);
    }
    /* The table, a key and a value. */
    if (!lua_checkstack(w->L, 3))
        return walk_fail_root(w, "is too large for the Lua stack");
    w->depth++;
    return 0;
}

static int dec_value(walk *w, json_t *j)
{
    lua_State *L = w->L;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *key;
        size_t klen;
        json_t *v;
        seg *s;
        if (dec_enter(w) != 0)
            return -1;
        s = &w->segs[w->depth - 1];
        s->kind = SEG_KEY;
        lua_createtable(L, 0, (int)json_object_size(j));
        json_object_keylen_foreach(j, key, klen, v) {
            if (json_is_null(v))
                continue;           /* a member that is null: absent, as in Lua */
            lua_pushlstring(L, key, klen);
            s->key = lua_gettop(L);
            if (dec_value(w, v) != 0)
                return -1;
            lua_rawset(L, -3);
        }
        w->depth--;
        return 0;
    }
    case JSON_ARRAY: {
        size_t i, n = json_array_size(j);
        seg *s;
        if (dec_enter(w) != 0)
            return -1;
        s = &w->segs[w->depth - 1];
        s->kind = SEG_INDEX;
        lua_createtable(L, (int)n, 0);
        for (i = 0; i < n; i++) {
            json_t *v = json_array_get(j, i);
            s->index = (int64_t)i + 1;
            if (json_is_null(v))
                return walk_fail(w, "null, which a Lua array cannot hold");
            if (dec_value(w, v) != 0)
                return -1;
            lua_rawseti(L, -2, (int)i + 1);
        }
        w->depth--;
        return 0;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(j), json_string_length(j));
        return 0;
    case JSON_INTEGER: {
        int64_t v = (int64_t)json_integer_value(j);
        if (!cachy_int_fits(v)) {
            char what[96];
            snprintf(what, sizeof what, "the integer %lld, beyond 2^53: not exact in this Lua's numbers",
                     (long long)v);
            return walk_fail(w, what);
        }
        cachy_pushinteger(L, v);
        return 0;
    }
    case JSON_REAL:
        lua_pushnumber(L, (lua_Number)json_real_value(j));
        return 0;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        return 0;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        return 0;
    case JSON_NULL:
    default:
        return walk_fail(w, "null, which is no Lua value");
    }
}

int cachy_json_decode(lua_State *L)
{
    char why[256];
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    json_error_t err;
    json_t **box;
    walk w;

    lua_settop(L, 1);
    box = tree_box(L);
    *box = json_loadb(p, n, LOAD_FLAGS, &err);
    if (*box == NULL) {
        lua_pushboolean(L, 0);
        lua_pushfstring(L, "not JSON: %s (at byte %d)", err.text, err.position);
        return 2;
    }
    walk_init(&w, L, "value", why, sizeof why);
    lua_pushboolean(L, 1);
    if (dec_value(&w, *box) != 0) {
        tree_free(box);
        lua_pushboolean(L, 0);
        lua_pushstring(L, why);
        return 2;
    }
    tree_free(box);
    return 2;
}

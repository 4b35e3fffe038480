/*
 * walk.h: the walk over a Lua value that names what failed by its path
 * ("value.handlers[2] is a function"), shared by the MessagePack codec
 * and the JSON codec. Implemented in codec.c ("paths for error messages").
 */
#ifndef CACHY_WALK_H
#define CACHY_WALK_H

#include "codec.h"

/*
 * The walk over a value keeps the tables open on the current path (for
 * cycles and depth) and how each was left (for naming what failed). Keys
 * stay on the Lua stack while their subtree is walked, so the path costs
 * nothing until an error renders it.
 */
enum { SEG_INDEX, SEG_KEY, SEG_INKEY };

typedef struct seg {
    int kind;           /* SEG_INDEX: array item; SEG_KEY: value under a key; SEG_INKEY: the key itself */
    int key;            /* stack index of the key (SEG_KEY, SEG_INKEY) */
    int64_t index;      /* SEG_INDEX */
} seg;

typedef struct walk {
    lua_State *L;
    const char *root;   /* "value", "result", "argument" */
    int root_no;        /* "result #2": 2; 0 for none */
    int depth;          /* tables open on the current path */
    const void *open[CACHY_CODEC_MAX_DEPTH];
    seg segs[CACHY_CODEC_MAX_DEPTH];    /* segs[d]: the step from open[d] to its current child */
    char *errmsg;
    size_t errlen;
} walk;

void walk_init(walk *w, lua_State *L, const char *root, char *errmsg, size_t errlen);
/* Each returns -1 with errmsg set. "<path> is <what>" ("<path> has <what>
 * as a key" when segs[depth - 1] is SEG_INKEY); _elided: a path deeper
 * than 2 * keep shows its first and last keep steps around "...". */
int walk_fail(walk *w, const char *what);
int walk_fail_elided(walk *w, const char *what, int keep);
int walk_fail_type(walk *w, int idx);       /* "<path> is a function" */
int walk_fail_root(walk *w, const char *what);  /* "<root> <what>" */
int walk_fail_at(walk *w, int depth, const char *text); /* "<path of the first depth steps> <text>" */
int walk_nomem(walk *w);
/* Opens the table at idx on the path: refuses cycles and depth beyond the limit. */
int walk_enter(walk *w, int idx);

#endif

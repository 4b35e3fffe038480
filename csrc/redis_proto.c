/*
 * redis_proto.c: RESP without sockets (redis_proto.h). hiredis formats the
 * commands and splits the reply stream; the reply objects are built here,
 * so that every string length and element count announced by the server is
 * checked against the reader's limits before memory is taken for it. Both
 * transports read their replies here: the cosocket one through
 * lcachy_redis.c, the blocking one in store_redis.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

#include "redis_proto.h"

/* Bytes a reply may occupy in the buffer beyond its largest string. */
#define SLACK (64 * 1024)

struct cachy_resp_reader {
    redisReader *reader;
    redisReplyObjectFunctions fns;
    int max_depth;
    size_t max_elems, max_bulk;
    char refusal[96];           /* why a constructor refused a reply */
    int oom;                    /* a constructor ran out of memory */
    cachy_error failed;         /* sticky: set once a reply failed */
};

void cachy_resp_free(cachy_resp *r)
{
    size_t i;
    if (r == NULL)
        return;
    for (i = 0; i < r->n; i++)
        cachy_resp_free(r->elem[i]);
    free(r->elem);
    free(r->str);
    free(r);
}

static void free_object(void *obj) { cachy_resp_free(obj); }

/* Constructors return NULL to stop the reader; they say why in the reader. */
static void *refuse(cachy_resp_reader *c, const char *what, long long n, size_t limit)
{
    snprintf(c->refusal, sizeof c->refusal, what, n, limit);
    return NULL;
}

static cachy_resp *new_reply(const redisReadTask *task, int type)
{
    cachy_resp_reader *c = task->privdata;
    cachy_resp *r = calloc(1, sizeof *r);
    if (r == NULL) {
        c->oom = 1;
        return NULL;
    }
    r->type = type;
    if (task->parent) {
        cachy_resp *parent = task->parent->obj;
        /* the reader fills exactly the slots it announced */
        if (task->idx < 0 || (size_t)task->idx >= parent->n) {
            free(r);
            return refuse(c, "an element at index %lld of an array of %zu", task->idx, parent->n);
        }
        parent->elem[task->idx] = r;
    }
    return r;
}

static void *make_string(const redisReadTask *task, char *str, size_t len)
{
    cachy_resp_reader *c = task->privdata;
    cachy_resp *r;
    if (len > c->max_bulk)
        return refuse(c, "a string of %lld bytes (at most %zu)", (long long)len, c->max_bulk);
    r = new_reply(task, task->type);
    if (r == NULL)
        return NULL;
    r->str = malloc(len + 1);
    if (r->str == NULL) {
        c->oom = 1;
        if (task->parent == NULL)       /* a child is freed with its parent */
            free(r);
        return NULL;
    }
    memcpy(r->str, str, len);
    r->str[len] = '\0';
    r->len = len;
    return r;
}

static void *make_array(const redisReadTask *task, int elements)
{
    cachy_resp_reader *c = task->privdata;
    const redisReadTask *t;
    cachy_resp *r;
    int depth = 1;
    for (t = task->parent; t; t = t->parent)
        depth++;
    if (depth > c->max_depth)
        return refuse(c, "an array at depth %lld (at most %zu)", depth, (size_t)c->max_depth);
    if (elements < 0 || (size_t)elements > c->max_elems)
        return refuse(c, "an array of %lld elements (at most %zu)", elements, c->max_elems);
    r = new_reply(task, REDIS_REPLY_ARRAY);
    if (r == NULL)
        return NULL;
    r->elem = calloc(elements ? (size_t)elements : 1, sizeof *r->elem);
    if (r->elem == NULL) {
        c->oom = 1;
        if (task->parent == NULL)
            free(r);
        return NULL;
    }
    r->n = (size_t)elements;
    return r;
}

static void *make_integer(const redisReadTask *task, long long v)
{
    cachy_resp *r = new_reply(task, REDIS_REPLY_INTEGER);
    if (r)
        r->integer = v;
    return r;
}

static void *make_nil(const redisReadTask *task) { return new_reply(task, REDIS_REPLY_NIL); }

cachy_resp_reader *cachy_resp_reader_new(int max_depth, size_t max_elems, size_t max_bulk)
{
    cachy_resp_reader *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->fns.createString = make_string;
    c->fns.createArray = make_array;
    c->fns.createInteger = make_integer;
    c->fns.createNil = make_nil;
    c->fns.freeObject = free_object;
    cachy_resp_reader_limit(c, max_depth, max_elems);
    c->max_bulk = max_bulk;
    c->reader = redisReaderCreateWithFunctions(&c->fns);
    if (c->reader == NULL) {
        free(c);
        return NULL;
    }
    c->reader->privdata = c;
    return c;
}

void cachy_resp_reader_limit(cachy_resp_reader *c, int max_depth, size_t max_elems)
{
    c->max_depth = max_depth < 0 ? 0 : max_depth;
    c->max_elems = max_elems;
}

void cachy_resp_reader_free(cachy_resp_reader *c)
{
    if (c == NULL)
        return;
    if (c->reader)
        redisReaderFree(c->reader);
    free(c);
}

size_t cachy_resp_reader_buffered(const cachy_resp_reader *c)
{
    return c->reader->len - c->reader->pos;
}

int cachy_resp_reader_feed(cachy_resp_reader *c, const char *p, size_t n)
{
    if (c->failed.code != CACHY_OK || c->reader->err)
        return 0;               /* the next reply reports the failure again */
    return redisReaderFeed(c->reader, p, n) == REDIS_OK ? 0 : -1;
}

static int fail(cachy_resp_reader *c, cachy_errcode code, const char *msg, cachy_error *err)
{
    c->failed.code = code;
    snprintf(c->failed.msg, sizeof c->failed.msg, "%s", msg);
    *err = c->failed;
    return -1;
}

int cachy_resp_reader_next(cachy_resp_reader *c, cachy_resp **out, cachy_error *err)
{
    char cause[256];
    void *obj = NULL;
    if (c->failed.code != CACHY_OK) {
        *err = c->failed;
        return -1;
    }
    c->refusal[0] = '\0';
    c->oom = 0;
    if (redisReaderGetReply(c->reader, &obj) != REDIS_OK) {
        if (c->refusal[0]) {
            snprintf(cause, sizeof cause, "reply refused: %s", c->refusal);
            return fail(c, CACHY_ECORRUPT, cause, err);
        }
        if (c->oom)
            return fail(c, CACHY_ENOMEM, "out of memory", err);
        snprintf(cause, sizeof cause, "protocol error: %s", c->reader->errstr);
        return fail(c, CACHY_ECONN, cause, err);
    }
    if (obj) {
        *out = obj;
        return 1;
    }
    if (cachy_resp_reader_buffered(c) > c->max_bulk + SLACK) {
        snprintf(cause, sizeof cause, "reply refused: larger than %zu bytes", c->max_bulk + SLACK);
        return fail(c, CACHY_ETOOBIG, cause, err);
    }
    return 0;
}

char *cachy_resp_command(int argc, const char **argv, const size_t *lens, size_t *len)
{
    char *cmd = NULL;
    int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return cmd;
}

void cachy_resp_command_free(char *cmd) { redisFreeCommand(cmd); }

/* GET and the comparison inside the script: a key of another type makes
 * GET fail, and the script's error reply says so. */
static const char forget_if_script[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0";
static const char touch_if_script[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0";

int cachy_resp_lock_argv(int which, cachy_slice key, cachy_slice val, int64_t ttl_ms, char ms[24],
                         const char *argv[6], size_t lens[6])
{
    int n = 0;
    argv[n] = "EVAL", lens[n++] = 4;
    if (which == CACHY_RESP_TOUCH_IF)
        argv[n] = touch_if_script, lens[n++] = sizeof touch_if_script - 1;
    else
        argv[n] = forget_if_script, lens[n++] = sizeof forget_if_script - 1;
    argv[n] = "1", lens[n++] = 1;
    argv[n] = key.ptr, lens[n++] = key.len;
    argv[n] = val.ptr, lens[n++] = val.len;
    if (which == CACHY_RESP_TOUCH_IF)
        argv[n] = ms, lens[n++] = cachy_format_int(ttl_ms, ms);
    return n;
}

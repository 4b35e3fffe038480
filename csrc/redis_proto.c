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

/* ---- Redis Cluster ------------------------------------------------------ */

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), the hash Redis
 * Cluster puts keys into slots with. */
static const unsigned short crc16_table[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64e6, 0x74c7, 0x44a4, 0x5485,
    0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4,
    0xb75b, 0xa77a, 0x9719, 0x8738, 0xf7df, 0xe7fe, 0xd79d, 0xc7bc,
    0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b,
    0x5af5, 0x4ad4, 0x7ab7, 0x6a96, 0x1a71, 0x0a50, 0x3a33, 0x2a12,
    0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41,
    0xedae, 0xfd8f, 0xcdec, 0xddcd, 0xad2a, 0xbd0b, 0x8d68, 0x9d49,
    0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78,
    0x9188, 0x81a9, 0xb1ca, 0xa1eb, 0xd10c, 0xc12d, 0xf14e, 0xe16f,
    0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e,
    0x02b1, 0x1290, 0x22f3, 0x32d2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xa7db, 0xb7fa, 0x8799, 0x97b8, 0xe75f, 0xf77e, 0xc71d, 0xd73c,
    0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18c0, 0x08e1, 0x3882, 0x28a3,
    0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92,
    0xfd2e, 0xed0f, 0xdd6c, 0xcd4d, 0xbdaa, 0xad8b, 0x9de8, 0x8dc9,
    0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8,
    0x6e17, 0x7e36, 0x4e55, 0x5e74, 0x2e93, 0x3eb2, 0x0ed1, 0x1ef0,
};

static unsigned crc16(const unsigned char *p, size_t n)
{
    unsigned crc = 0;
    size_t i;
    for (i = 0; i < n; i++)
        crc = ((crc << 8) ^ crc16_table[((crc >> 8) ^ p[i]) & 0xff]) & 0xffff;
    return crc;
}

unsigned cachy_redis_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len), *close;
    if (open != NULL) {
        size_t after = (size_t)(open - key) + 1;
        close = memchr(open + 1, '}', len - after);
        if (close != NULL && close > open + 1)
            return crc16((const unsigned char *)open + 1, (size_t)(close - open - 1)) &
                   (CACHY_REDIS_SLOTS - 1);
    }
    return crc16((const unsigned char *)key, len) & (CACHY_REDIS_SLOTS - 1);
}

/* Reads a decimal number of at most max from p[0..n); the digits' count, 0 if none or too large. */
static size_t read_number(const char *p, size_t n, unsigned long max, unsigned long *out)
{
    size_t i = 0;
    unsigned long v = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9') {
        v = v * 10 + (unsigned long)(p[i] - '0');
        if (v > max)
            return 0;
        i++;
    }
    *out = v;
    return i;
}

int cachy_redis_redirect(const char *text, size_t len, unsigned *slot,
                         char host[CACHY_REDIS_HOST_MAX], int *port)
{
    int kind;
    size_t i, k, colon;
    unsigned long v;
    if (len > 6 && memcmp(text, "MOVED ", 6) == 0)
        kind = 1, i = 6;
    else if (len > 4 && memcmp(text, "ASK ", 4) == 0)
        kind = 2, i = 4;
    else
        return 0;
    k = read_number(text + i, len - i, CACHY_REDIS_SLOTS - 1, &v);
    if (k == 0 || i + k >= len || text[i + k] != ' ')
        return 0;
    *slot = (unsigned)v;
    i += k + 1;
    /* host:port, the host possibly an IPv6 address: the port follows the last ':' */
    for (colon = len; colon > i && text[colon - 1] != ':'; colon--)
        ;
    if (colon == i || colon - 1 - i >= CACHY_REDIS_HOST_MAX)
        return 0;
    k = read_number(text + colon, len - colon, 65535, &v);
    if (k == 0 || colon + k != len || v == 0)
        return 0;
    memcpy(host, text + i, colon - 1 - i);
    host[colon - 1 - i] = '\0';
    *port = (int)v;
    return kind;
}

void cachy_slot_map_init(cachy_slot_map *m)
{
    m->nodes = NULL;
    m->n = m->cap = 0;
    memset(m->owner, 0xff, sizeof m->owner);
}

void cachy_slot_map_free(cachy_slot_map *m)
{
    free(m->nodes);
    cachy_slot_map_init(m);
}

int cachy_slot_map_node(cachy_slot_map *m, const char *host, int port)
{
    size_t i, hl = strlen(host);
    for (i = 0; i < m->n; i++)
        if (m->nodes[i].port == port && strcmp(m->nodes[i].host, host) == 0)
            return (int)i;
    if (m->n >= CACHY_REDIS_NODES_MAX || hl >= CACHY_REDIS_HOST_MAX)
        return -1;
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        cachy_redis_node *nodes = realloc(m->nodes, cap * sizeof *nodes);
        if (nodes == NULL)
            return -1;
        m->nodes = nodes;
        m->cap = cap;
    }
    memcpy(m->nodes[m->n].host, host, hl + 1);
    m->nodes[m->n].port = port;
    return (int)m->n++;
}

static int map_refused(char *why, size_t whylen, const char *what)
{
    snprintf(why, whylen, "CLUSTER SLOTS: %s", what);
    return -1;
}

int cachy_slot_map_read(cachy_slot_map *m, const cachy_resp *reply, const char *asked_host,
                        char *why, size_t whylen)
{
    unsigned short owner[CACHY_REDIS_SLOTS];
    size_t i;
    if (reply->type != REDIS_REPLY_ARRAY)
        return map_refused(why, whylen, "not an array");
    memset(owner, 0xff, sizeof owner);
    for (i = 0; i < reply->n; i++) {
        const cachy_resp *r = reply->elem[i], *master;
        const char *host;
        long long from, to, s;
        int node;
        if (r->type != REDIS_REPLY_ARRAY || r->n < 3 || r->elem[0]->type != REDIS_REPLY_INTEGER ||
            r->elem[1]->type != REDIS_REPLY_INTEGER || r->elem[2]->type != REDIS_REPLY_ARRAY)
            return map_refused(why, whylen, "a range is not [from, to, master, ...]");
        from = r->elem[0]->integer, to = r->elem[1]->integer, master = r->elem[2];
        if (from < 0 || to < from || to >= CACHY_REDIS_SLOTS)
            return map_refused(why, whylen, "a slot range is out of 0-16383");
        if (master->n < 2 || master->elem[0]->type != REDIS_REPLY_STRING ||
            master->elem[1]->type != REDIS_REPLY_INTEGER || master->elem[1]->integer < 1 ||
            master->elem[1]->integer > 65535)
            return map_refused(why, whylen, "a master is not [host, port, ...]");
        host = master->elem[0]->len > 0 && strcmp(master->elem[0]->str, "?") != 0
                   ? master->elem[0]->str : asked_host;
        node = cachy_slot_map_node(m, host, (int)master->elem[1]->integer);
        if (node < 0)
            return map_refused(why, whylen, "too many nodes, or out of memory");
        for (s = from; s <= to; s++)
            owner[s] = (unsigned short)node;
    }
    memcpy(m->owner, owner, sizeof owner);
    return 0;
}

int cachy_redis_address(const char *text, char host[CACHY_REDIS_HOST_MAX], int *port)
{
    const char *colon = strrchr(text, ':'), *h = text;
    size_t hl;
    char *end;
    long p;
    if (colon == NULL || colon == text)
        return -1;
    hl = (size_t)(colon - text);
    if (text[0] == '[' && colon[-1] == ']')
        h++, hl -= 2;
    if (hl == 0 || hl >= CACHY_REDIS_HOST_MAX)
        return -1;
    p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || colon[1] < '0' || colon[1] > '9' || p < 1 || p > 65535)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

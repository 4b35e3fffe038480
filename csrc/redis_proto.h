/*
 * redis_proto.h: the Redis protocol (RESP) as bytes in, bytes out, no
 * sockets: commands formatted by hiredis's redisFormatCommandArgv, replies
 * parsed by hiredis's redisReader into trees whose sizes are checked
 * against the caller's limits before anything is allocated for them. Both
 * transports use it: the cosocket one (lua/cachy/resty/redis.lua) through
 * core.redis_command and core.redis_reader (lcachy_redis.c), the blocking
 * one (store_redis.c) directly.
 */
#ifndef CACHY_REDIS_PROTO_H
#define CACHY_REDIS_PROTO_H

#include <stddef.h>

#include "cachy.h"

/* A reply; type is hiredis's REDIS_REPLY_* (STRING 1, ARRAY 2, INTEGER 3,
 * NIL 4, STATUS 5, ERROR 6). */
typedef struct cachy_resp {
    int type;
    long long integer;          /* INTEGER */
    char *str;                  /* STRING, STATUS, ERROR: len bytes + NUL */
    size_t len;
    struct cachy_resp **elem;   /* ARRAY: n elements */
    size_t n;
} cachy_resp;

typedef struct cachy_resp_reader cachy_resp_reader;

/* Redis refuses bulk strings over its proto-max-bulk-len, 512 MiB by
 * default: the largest value either transport sends or accepts. */
#define CACHY_RESP_MAX_BULK ((size_t)512 * 1024 * 1024)

/* A reader whose replies hold arrays nested at most max_depth deep (0: no
 * arrays), of at most max_elems elements, and strings of at most max_bulk
 * bytes; at most max_bulk + 64 KiB may wait in its buffer. NULL on ENOMEM. */
cachy_resp_reader *cachy_resp_reader_new(int max_depth, size_t max_elems, size_t max_bulk);
void cachy_resp_reader_free(cachy_resp_reader *r);

/* Sets the array limits (max_depth, max_elems, as for cachy_resp_reader_new)
 * for the replies read from now on: a transport that reuses one reader for
 * many commands sets what the next command may return. */
void cachy_resp_reader_limit(cachy_resp_reader *r, int max_depth, size_t max_elems);

/* Appends bytes read from the server. 0 ok (bytes fed to a reader that
 * failed are dropped), -1 out of memory. */
int cachy_resp_reader_feed(cachy_resp_reader *r, const char *p, size_t n);

/* The next complete reply: 1 (*out set, the caller frees it with
 * cachy_resp_free), 0 when more bytes are needed, -1 on a reply that is
 * malformed or over the limits (err set: "protocol error: ...",
 * CACHY_ECONN; "reply refused: ...", CACHY_ECORRUPT or CACHY_ETOOBIG; "out
 * of memory", CACHY_ENOMEM). A reader that failed keeps failing. */
int cachy_resp_reader_next(cachy_resp_reader *r, cachy_resp **out, cachy_error *err);

/* Bytes fed and not yet consumed (hiredis may have consumed a partial
 * reply's first bytes already). */
size_t cachy_resp_reader_buffered(const cachy_resp_reader *r);

void cachy_resp_free(cachy_resp *reply);

/* The RESP bytes of one command (*len set); NULL on ENOMEM. Free with
 * cachy_resp_command_free. */
char *cachy_resp_command(int argc, const char **argv, const size_t *lens, size_t *len);
void cachy_resp_command_free(char *cmd);

/*
 * The lock primitives as one EVAL each, so the comparison and the change
 * are one atomic step on the server: forget_if deletes key if it holds
 * exactly val (reply 1, else 0); touch_if (ttl_ms > 0) sets its lifetime
 * to ttl_ms if it holds val (reply 1, else 0). Fills argv and lens (ms is
 * scratch for the lifetime's digits) and returns argc, for
 * cachy_resp_command or the blocking driver's call.
 */
enum { CACHY_RESP_FORGET_IF, CACHY_RESP_TOUCH_IF };
int cachy_resp_lock_argv(int which, cachy_slice key, cachy_slice val, int64_t ttl_ms, char ms[24],
                         const char *argv[6], size_t lens[6]);

/* ---- Redis Cluster: slots, redirections, the slot map (no I/O) ---------- */

#define CACHY_REDIS_SLOTS 16384
#define CACHY_REDIS_HOST_MAX 256     /* bytes of a node's host, NUL included */

/* The hash slot of a key: CRC16 (XMODEM) of the key, or of the text between
 * its first '{' and the next '}' when that text is not empty, mod 16384. */
unsigned cachy_redis_slot(const char *key, size_t len);

/* An error reply's text "MOVED 3999 127.0.0.1:6381" or "ASK ...": 1 MOVED,
 * 2 ASK (*slot, host and *port set), 0 any other text. An empty host
 * ("MOVED 3999 :6381") means the node that answered. */
int cachy_redis_redirect(const char *text, size_t len, unsigned *slot,
                         char host[CACHY_REDIS_HOST_MAX], int *port);

/* "host:port" or "[v6]:port" (a configured node) into host and *port;
 * 0 ok, -1 malformed. */
int cachy_redis_address(const char *text, char host[CACHY_REDIS_HOST_MAX], int *port);

typedef struct cachy_redis_node {
    char host[CACHY_REDIS_HOST_MAX];
    int port;
} cachy_redis_node;

/* Which master serves each slot. Nodes are only added: an index stays
 * valid for the life of the map. */
typedef struct cachy_slot_map {
    cachy_redis_node *nodes;
    size_t n, cap;
    unsigned short owner[CACHY_REDIS_SLOTS];    /* node index; CACHY_SLOT_NONE: no node */
} cachy_slot_map;

#define CACHY_SLOT_NONE 0xffff
#define CACHY_REDIS_NODES_MAX 1024

void cachy_slot_map_init(cachy_slot_map *m);
void cachy_slot_map_free(cachy_slot_map *m);

/* The index of the node host:port, added when new; -1 when the map holds
 * CACHY_REDIS_NODES_MAX nodes already or memory ran out. */
int cachy_slot_map_node(cachy_slot_map *m, const char *host, int port);

/* Reads a CLUSTER SLOTS reply into the map, replacing every slot's owner
 * (slots it does not list have none). asked_host stands for an empty host.
 * 0 ok; -1 with why set on a reply of another shape. */
int cachy_slot_map_read(cachy_slot_map *m, const cachy_resp *reply, const char *asked_host,
                        char *why, size_t whylen);

#endif

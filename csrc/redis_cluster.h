/*
 * redis_cluster.h: Redis Cluster for the blocking Redis driver. The driver
 * (store_redis.c) keeps its connection code and lends it per node through
 * the cachy_rconn_* functions; redis_cluster.c routes each command to the
 * master of its key's slot, follows MOVED and ASK, and splits batches into
 * one pipeline per node. The pure parts (slots, redirections, the slot
 * map) are in redis_proto.c, shared with the cosocket transport.
 */
#ifndef CACHY_REDIS_CLUSTER_H
#define CACHY_REDIS_CLUSTER_H

#include "cachy.h"
#include "redis_proto.h"

struct rconn;
typedef struct cachy_rcluster cachy_rcluster;
typedef struct cachy_rsentinel cachy_rsentinel;

/* ---- from store_redis.c: one node's connection ---------------------------
 * A connection configured as the store's (timeouts, AUTH), to host:port;
 * host must outlive it. It connects on first use; the cachy_rconn_*
 * calls behave as the driver's own (a failure drops the connection). */
struct rconn *cachy_rconn_new(cachy_store *s, const char *host, int port);
void cachy_rconn_free(struct rconn *c);
void cachy_rconn_drop(struct rconn *c);
int cachy_rconn_ready(cachy_store *s, struct rconn *c, int max_depth, size_t max_elems,
                      cachy_error *err);
int cachy_rconn_append(cachy_store *s, struct rconn *c, int argc, const char **argv,
                       const size_t *lens, cachy_error *err);
int cachy_rconn_send(cachy_store *s, struct rconn *c, cachy_error *err);
int cachy_rconn_read(cachy_store *s, struct rconn *c, cachy_resp **out, cachy_error *err);
int cachy_rconn_call(cachy_store *s, struct rconn *c, int argc, const char **argv,
                     const size_t *lens, int max_depth, size_t max_elems, cachy_resp **out,
                     cachy_error *err);
int cachy_rconn_bad_reply(cachy_store *s, const char *cmd, const cachy_resp *r, cachy_error *err);
int cachy_rconn_flush(cachy_store *s, struct rconn *c, cachy_slice prefix, cachy_error *err);
int cachy_rconn_set_args(cachy_slice key, cachy_slice val, int64_t ttl_ms, char ms[24],
                         const char *argv[6], size_t lens[6]);
void cachy_rconn_take_string(cachy_buf *out, cachy_resp *r);
struct rconn *cachy_rconn_new_plain(cachy_store *s, const char *host, int port);
void cachy_rconn_set_address(struct rconn *c, const char *host, int port);
int cachy_rconn_handshake(cachy_store *s, struct rconn *c, cachy_error *err);

/* ---- from redis_cluster.c ------------------------------------------------ */

/* Checks the `cluster` field and the fields it excludes. 0 ok, -1 err. */
int cachy_rcluster_options(cachy_store *s, cachy_error *err);

/* Reads the slot map from the first seed node that answers. */
int cachy_rcluster_open(cachy_store *s, cachy_rcluster **out, cachy_error *err);
void cachy_rcluster_free(cachy_rcluster *cl);

/* A command whose key is argv[1] (argv[3] for EVAL), on its slot's
 * master; *out as cachy_rconn_read's. */
int cachy_rcluster_call(cachy_store *s, cachy_rcluster *cl, int argc, const char **argv,
                        const size_t *lens, int max_depth, size_t max_elems, cachy_resp **out,
                        cachy_error *err);

/* The driver's many, put_many and flush, and UNLINK of keys of any slots. */
int cachy_rcluster_many(cachy_store *s, cachy_rcluster *cl, const cachy_slice *keys, size_t n,
                        cachy_buf *outs, int *found, cachy_error *err);
int cachy_rcluster_put_many(cachy_store *s, cachy_rcluster *cl, const cachy_slice *keys,
                            const cachy_slice *vals, size_t n, int64_t ttl_ms, cachy_error *err);
int cachy_rcluster_flush(cachy_store *s, cachy_rcluster *cl, cachy_slice prefix, cachy_error *err);
int cachy_rcluster_unlink(cachy_store *s, cachy_rcluster *cl, size_t n, const char **keys,
                          const size_t *lens, cachy_error *err);

/* ---- from redis_sentinel.c ----------------------------------------------- */

/* Checks the `sentinel` field (and the fields it excludes); *out: the
 * state the driver keeps for it. 0 ok, -1 err. */
int cachy_rsentinel_options(cachy_store *s, cachy_rsentinel **out, cachy_error *err);
void cachy_rsentinel_free(cachy_rsentinel *st);

/* Connects c to the master the sentinels name, and checks with ROLE that
 * it is one; as the driver's handshake otherwise. */
int cachy_rsentinel_connect(cachy_store *s, struct rconn *c, cachy_rsentinel *st, cachy_error *err);

#endif

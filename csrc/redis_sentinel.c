/*
 * redis_sentinel.c: the Redis driver behind Redis Sentinel
 * (redis_cluster.h's cachy_rsentinel_*).
 *
 * Each time the driver connects, it asks the sentinels, in the order
 * configured, for the master's address (SENTINEL get-master-addr-by-name;
 * the first that knows the name answers), connects there as to a plain
 * server (AUTH, SELECT), and checks with ROLE that the server is a master:
 * just after a failover, a sentinel may still name the old master, which
 * comes back as a replica. A connection that fails is dropped and the next
 * call connects again, so it asks again; a READONLY reply (a master turned
 * replica under an open connection) drops the connection too (store_redis.c's
 * bad_reply).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

#include "redis_cluster.h"
#include "store.h"

struct cachy_rsentinel {
    const char *master;                 /* the master's name; in the store's options */
    const char *const *nodes;           /* the sentinels, "host:port" */
    size_t n;
    char host[CACHY_REDIS_HOST_MAX];    /* the master's host, while connected */
};

int cachy_rsentinel_options(cachy_store *s, cachy_rsentinel **out, cachy_error *err)
{
    static const char *const excluded[] = { "host", "port", "socket", "cluster" };
    const cachy_option *opt = cachy_opt_find(&s->opts, "sentinel");
    char host[CACHY_REDIS_HOST_MAX];
    cachy_rsentinel *st;
    size_t i;
    int port;
    snprintf(s->address, sizeof s->address, "sentinel %.100s",
             opt->nlist > 0 ? opt->list[0] : "");
    for (i = 0; i < sizeof excluded / sizeof *excluded; i++)
        if (cachy_opt_find(&s->opts, excluded[i])) {
            cachy_error_set(err, s, CACHY_EMISUSE,
                            "field '%s' cannot be set with 'sentinel' (the sentinels say where "
                            "the master is)", excluded[i]);
            return -1;
        }
    if (opt->nlist < 2) {
        cachy_error_set(err, s, CACHY_EMISUSE,
                        "field 'sentinel' must name the master and list at least one node");
        return -1;
    }
    for (i = 1; i < opt->nlist; i++)
        if (cachy_redis_address(opt->list[i], host, &port) != 0) {
            cachy_error_set(err, s, CACHY_EMISUSE,
                            "field 'sentinel' node %zu must be \"host:port\", got \"%.80s\"", i,
                            opt->list[i]);
            return -1;
        }
    st = calloc(1, sizeof *st);
    if (st == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    st->master = opt->list[0];
    st->nodes = (const char *const *)opt->list + 1;
    st->n = opt->nlist - 1;
    *out = st;
    return 0;
}

void cachy_rsentinel_free(cachy_rsentinel *st) { free(st); }

/* Asks sentinel i where the master is: 0 with st->host and *port set, -1. */
static int ask(cachy_store *s, cachy_rsentinel *st, size_t i, int *port, cachy_error *err)
{
    char host[CACHY_REDIS_HOST_MAX];
    const char *argv[3] = { "SENTINEL", "get-master-addr-by-name", st->master };
    size_t lens[3] = { 8, 23, strlen(st->master) };
    struct rconn *c;
    cachy_resp *r;
    int sport, rc = -1;
    cachy_redis_address(st->nodes[i], host, &sport);
    snprintf(s->address, sizeof s->address, "sentinel %.100s", st->nodes[i]);
    c = cachy_rconn_new_plain(s, host, sport);
    if (c == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    if (cachy_rconn_call(s, c, 3, argv, lens, 1, 2, &r, err) == 0) {
        if (r->type == REDIS_REPLY_ARRAY && r->n == 2 && r->elem[0]->type == REDIS_REPLY_STRING &&
            r->elem[1]->type == REDIS_REPLY_STRING && r->elem[0]->len < sizeof st->host &&
            (*port = atoi(r->elem[1]->str)) >= 1 && *port <= 65535) {
            memcpy(st->host, r->elem[0]->str, r->elem[0]->len + 1);
            rc = 0;
        } else if (r->type == REDIS_REPLY_NIL) {
            cachy_error_set(err, s, CACHY_EBACKEND, "the sentinel knows no master named '%.100s'",
                            st->master);
        } else {
            cachy_rconn_bad_reply(s, "SENTINEL get-master-addr-by-name", r, err);
        }
        cachy_resp_free(r);
    }
    cachy_rconn_free(c);
    return rc;
}

/* ROLE on the new connection: 0 when the server says it is a master. */
static int verify(cachy_store *s, struct rconn *c, cachy_error *err)
{
    const char *argv[1] = { "ROLE" };
    size_t lens[1] = { 4 };
    cachy_resp *r;
    int rc = 0;
    if (cachy_rconn_call(s, c, 1, argv, lens, 3, 16384, &r, err) != 0)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY || r->n < 1 || r->elem[0]->type != REDIS_REPLY_STRING) {
        rc = cachy_rconn_bad_reply(s, "ROLE", r, err);
    } else if (strcmp(r->elem[0]->str, "master") != 0) {
        /* ECONN: the manager closes the store, and the next call asks again */
        cachy_error_set(err, s, CACHY_ECONN, "the sentinels name a %.40s, not a master",
                        r->elem[0]->str);
        rc = -1;
    }
    cachy_resp_free(r);
    if (rc != 0)
        cachy_rconn_drop(c);
    return rc;
}

int cachy_rsentinel_connect(cachy_store *s, struct rconn *c, cachy_rsentinel *st, cachy_error *err)
{
    size_t i;
    int port = 0;
    for (i = 0; i < st->n; i++)
        if (ask(s, st, i, &port, err) == 0)
            break;
    if (i == st->n)
        return -1;              /* the last sentinel's error */
    if (strchr(st->host, ':'))
        snprintf(s->address, sizeof s->address, "[%.100s]:%d", st->host, port);
    else
        snprintf(s->address, sizeof s->address, "%.100s:%d", st->host, port);
    cachy_rconn_set_address(c, st->host, port);
    if (cachy_rconn_handshake(s, c, err) != 0)
        return -1;
    return verify(s, c, err);
}

/*
 * redis_cluster.c: the Redis driver on a Redis Cluster (redis_cluster.h).
 *
 * The slot map comes from CLUSTER SLOTS, asked of the seed nodes in their
 * order at open. A key goes to its slot's master, one connection per node,
 * made on first use. A MOVED reply sets the slot's new master and reads
 * the whole map again from it (a resharding moves many slots, a failover
 * all of a master's), then the command is sent there; an ASK reply sends
 * the command once to the node named, after ASKING, without changing the
 * map. At most MAX_REDIRECTS of either per command.
 *
 * A node that cannot be reached fails the call with the driver's usual
 * connection error; the manager then closes the store, and the next call
 * opens it again, reading the map afresh from the seeds: after a failover
 * that map names the promoted replica.
 *
 * Batches (many, put_many, a flush's UNLINKs) send one pipeline per node
 * before reading any reply, so n keys on m nodes cost one round trip on
 * each at once. A reply that redirects is done again alone, as above.
 * After a failure every connection with replies still unread is dropped,
 * so that no late reply is read as the answer to a later command.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

#include "redis_cluster.h"
#include "store.h"

#define MAX_REDIRECTS 5

static cachy_slice slice(const char *p, size_t n)
{
    cachy_slice sl;
    sl.ptr = p;
    sl.len = n;
    return sl;
}
/* CLUSTER SLOTS: ranges > range > node > its metadata (Redis 7). */
#define SLOTS_DEPTH 4
#define SLOTS_MAX_ELEMS CACHY_REDIS_SLOTS

typedef struct node {
    char host[CACHY_REDIS_HOST_MAX];     /* the connection's host points here */
    struct rconn *conn;
} node;

struct cachy_rcluster {
    cachy_slot_map map;
    node **nodes;                /* nodes[i] for map.nodes[i], made on first use */
    size_t nnodes;
    size_t nseeds;               /* the seeds are the map's first nodes */
};

/* ---- configuration ------------------------------------------------------- */

int cachy_rcluster_options(cachy_store *s, cachy_error *err)
{
    static const char *const excluded[] = { "host", "port", "socket", "db" };
    const cachy_option *opt = cachy_opt_find(&s->opts, "cluster");
    char host[CACHY_REDIS_HOST_MAX];
    size_t i;
    int port;
    for (i = 0; i < sizeof excluded / sizeof *excluded; i++)
        if (cachy_opt_find(&s->opts, excluded[i])) {
            cachy_error_set(err, s, CACHY_EMISUSE,
                            "field '%s' cannot be set with 'cluster' (the nodes come from the "
                            "cluster, and a cluster has only database 0)", excluded[i]);
            return -1;
        }
    if (opt->nlist == 0) {
        cachy_error_set(err, s, CACHY_EMISUSE, "field 'cluster' must list at least one node");
        return -1;
    }
    for (i = 0; i < opt->nlist; i++)
        if (cachy_redis_address(opt->list[i], host, &port) != 0) {
            cachy_error_set(err, s, CACHY_EMISUSE,
                            "field 'cluster' item %zu must be \"host:port\", got \"%.80s\"", i + 1,
                            opt->list[i]);
            return -1;
        }
    return 0;
}

/* ---- nodes ----------------------------------------------------------------- */

/* Messages name the node a failure happened on. */
static void name_node(cachy_store *s, cachy_rcluster *cl, int i)
{
    const cachy_redis_node *n = &cl->map.nodes[i];
    if (strchr(n->host, ':'))
        snprintf(s->address, sizeof s->address, "[%.100s]:%d", n->host, n->port);
    else
        snprintf(s->address, sizeof s->address, "%.100s:%d", n->host, n->port);
}

/* The connection to node i of the map (not yet connected when new). */
static struct rconn *conn_of(cachy_store *s, cachy_rcluster *cl, int i, cachy_error *err)
{
    if ((size_t)i >= cl->nnodes) {
        node **nodes = realloc(cl->nodes, cl->map.cap * sizeof *nodes);
        if (nodes == NULL)
            goto oom;
        memset(nodes + cl->nnodes, 0, (cl->map.cap - cl->nnodes) * sizeof *nodes);
        cl->nodes = nodes;
        cl->nnodes = cl->map.cap;
    }
    if (cl->nodes[i] == NULL) {
        node *nd = calloc(1, sizeof *nd);
        if (nd == NULL)
            goto oom;
        memcpy(nd->host, cl->map.nodes[i].host, sizeof nd->host);
        nd->conn = cachy_rconn_new(s, nd->host, cl->map.nodes[i].port);
        if (nd->conn == NULL) {
            free(nd);
            goto oom;
        }
        cl->nodes[i] = nd;
    }
    name_node(s, cl, i);
    return cl->nodes[i]->conn;
oom:
    cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
    return NULL;
}

void cachy_rcluster_free(cachy_rcluster *cl)
{
    size_t i;
    if (cl == NULL)
        return;
    for (i = 0; i < cl->nnodes; i++)
        if (cl->nodes[i]) {
            cachy_rconn_free(cl->nodes[i]->conn);
            free(cl->nodes[i]);
        }
    free(cl->nodes);
    cachy_slot_map_free(&cl->map);
    free(cl);
}

/* ---- the slot map ---------------------------------------------------------- */

/* Reads the map from node i. */
static int read_map(cachy_store *s, cachy_rcluster *cl, int i, cachy_error *err)
{
    const char *argv[2] = { "CLUSTER", "SLOTS" };
    const size_t lens[2] = { 7, 5 };
    struct rconn *c = conn_of(s, cl, i, err);
    char why[120];
    cachy_resp *r;
    int rc = 0;
    if (c == NULL ||
        cachy_rconn_call(s, c, 2, argv, lens, SLOTS_DEPTH, SLOTS_MAX_ELEMS, &r, err) != 0)
        return -1;
    if (r->type == REDIS_REPLY_ERROR) {
        rc = cachy_rconn_bad_reply(s, "CLUSTER SLOTS", r, err);
    } else if (cachy_slot_map_read(&cl->map, r, cl->map.nodes[i].host, why, sizeof why) != 0) {
        cachy_error_set(err, s, CACHY_EBACKEND, "%s", why);
        rc = -1;
    }
    cachy_resp_free(r);
    return rc;
}

/* Reads the map from the first node that answers, node first first (-1:
 * none), then the masters known, then the seeds. */
static int refresh(cachy_store *s, cachy_rcluster *cl, int first, cachy_error *err)
{
    size_t i, n = cl->map.n;
    unsigned char *tried;
    int rc = -1;
    if (first >= 0 && read_map(s, cl, first, err) == 0)
        return 0;
    tried = calloc(n ? n : 1, 1);
    if (tried == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    if (first >= 0)
        tried[first] = 1;
    for (i = 0; i < CACHY_REDIS_SLOTS && rc != 0; i++) {
        unsigned o = cl->map.owner[i];
        if (o != CACHY_SLOT_NONE && o < n && !tried[o]) {
            tried[o] = 1;
            rc = read_map(s, cl, (int)o, err);
        }
    }
    for (i = 0; i < cl->nseeds && rc != 0; i++)
        if (!tried[i]) {
            tried[i] = 1;
            rc = read_map(s, cl, (int)i, err);
        }
    free(tried);
    return rc;
}

int cachy_rcluster_open(cachy_store *s, cachy_rcluster **out, cachy_error *err)
{
    const cachy_option *opt = cachy_opt_find(&s->opts, "cluster");
    cachy_rcluster *cl = calloc(1, sizeof *cl);
    char host[CACHY_REDIS_HOST_MAX];
    size_t i;
    int port;
    if (cl == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    cachy_slot_map_init(&cl->map);
    for (i = 0; i < opt->nlist; i++)
        if (cachy_redis_address(opt->list[i], host, &port) != 0 ||
            cachy_slot_map_node(&cl->map, host, port) < 0) {
            cachy_rcluster_free(cl);
            cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
            return -1;
        }
    cl->nseeds = cl->map.n;
    if (refresh(s, cl, -1, err) != 0) {
        cachy_rcluster_free(cl);
        return -1;
    }
    *out = cl;
    return 0;
}

/* The master of key's slot: its index in the map, the map read again when
 * no node serves the slot. */
static int owner_of(cachy_store *s, cachy_rcluster *cl, const char *key, size_t len,
                    cachy_error *err)
{
    unsigned slot = cachy_redis_slot(key, len);
    if (cl->map.owner[slot] == CACHY_SLOT_NONE && refresh(s, cl, -1, err) != 0)
        return -1;
    if (cl->map.owner[slot] == CACHY_SLOT_NONE) {
        cachy_error_set(err, s, CACHY_EBACKEND, "no node of the cluster serves slot %u", slot);
        return -1;
    }
    return cl->map.owner[slot];
}

/* ---- one command ----------------------------------------------------------- */

/* Where a MOVED or ASK reply sends the command: 1 MOVED, 2 ASK (*to set),
 * 0 not a redirection, -1 error. MOVED updates the map. */
static int redirected(cachy_store *s, cachy_rcluster *cl, int from, const cachy_resp *r, int *to,
                      cachy_error *err)
{
    char host[CACHY_REDIS_HOST_MAX];
    unsigned slot;
    int port, kind;
    if (r->type != REDIS_REPLY_ERROR)
        return 0;
    kind = cachy_redis_redirect(r->str, r->len, &slot, host, &port);
    if (kind == 0)
        return 0;
    *to = cachy_slot_map_node(&cl->map, host[0] ? host : cl->map.nodes[from].host, port);
    if (*to < 0) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    if (kind == 1) {
        cl->map.owner[slot] = (unsigned short)*to;
        /* the rest of what moved with it; a node that cannot say keeps the one slot */
        if (refresh(s, cl, *to, err) != 0)
            cl->map.owner[slot] = (unsigned short)*to;
    }
    return kind;
}

/* Sends the command to node i (after ASKING when asking) and reads its reply. */
static int send_to(cachy_store *s, cachy_rcluster *cl, int i, int asking, int argc,
                   const char **argv, const size_t *lens, int max_depth, size_t max_elems,
                   cachy_resp **out, cachy_error *err)
{
    const char *ask_argv[1] = { "ASKING" };
    const size_t ask_lens[1] = { 6 };
    struct rconn *c = conn_of(s, cl, i, err);
    cachy_resp *ok;
    int rc = 0;
    if (c == NULL)
        return -1;
    if (!asking)
        return cachy_rconn_call(s, c, argc, argv, lens, max_depth, max_elems, out, err);
    if (cachy_rconn_ready(s, c, max_depth, max_elems, err) != 0 ||
        cachy_rconn_append(s, c, 1, ask_argv, ask_lens, err) != 0 ||
        cachy_rconn_append(s, c, argc, argv, lens, err) != 0 || cachy_rconn_send(s, c, err) != 0 ||
        cachy_rconn_read(s, c, &ok, err) != 0)
        return -1;
    if (ok->type != REDIS_REPLY_STATUS)
        rc = cachy_rconn_bad_reply(s, "ASKING", ok, err);
    cachy_resp_free(ok);
    /* the command's reply is read even then, to keep the stream in step */
    if (cachy_rconn_read(s, c, out, err) != 0)
        return -1;
    if (rc != 0) {
        cachy_resp_free(*out);
        *out = NULL;
    }
    return rc;
}

/* Where a command's key is: argv[1], but argv[3] for EVAL (script,
 * numkeys, key: the lock primitives). */
static int key_at(int argc, const char **argv, const size_t *lens)
{
    return argc > 3 && lens[0] == 4 && memcmp(argv[0], "EVAL", 4) == 0 ? 3 : 1;
}

/* Sends a command, already sent once to node `at` and answered by the
 * redirection r (freed here), where r sends it. */
static int follow(cachy_store *s, cachy_rcluster *cl, int at, cachy_resp *r, int argc,
                  const char **argv, const size_t *lens, int max_depth, size_t max_elems,
                  cachy_resp **out, cachy_error *err)
{
    char k[80];
    int hops, kind, to;
    for (hops = 0; hops < MAX_REDIRECTS; hops++) {
        kind = redirected(s, cl, at, r, &to, err);
        if (kind <= 0) {
            if (kind < 0) {
                cachy_resp_free(r);
                return -1;
            }
            *out = r;
            return 0;
        }
        cachy_resp_free(r);
        if (send_to(s, cl, to, kind == 2, argc, argv, lens, max_depth, max_elems, &r, err) != 0)
            return -1;
        at = to;
    }
    cachy_resp_free(r);
    cachy_quote_key(slice(argv[key_at(argc, argv, lens)], lens[key_at(argc, argv, lens)]), k,
                    sizeof k);
    cachy_error_set(err, s, CACHY_EBACKEND, "more than %d redirections (MOVED, ASK) for key '%s'",
                    MAX_REDIRECTS, k);
    return -1;
}

int cachy_rcluster_call(cachy_store *s, cachy_rcluster *cl, int argc, const char **argv,
                        const size_t *lens, int max_depth, size_t max_elems, cachy_resp **out,
                        cachy_error *err)
{
    cachy_resp *r;
    int k = key_at(argc, argv, lens), at = owner_of(s, cl, argv[k], lens[k], err);
    if (at < 0 || send_to(s, cl, at, 0, argc, argv, lens, max_depth, max_elems, &r, err) != 0)
        return -1;
    return follow(s, cl, at, r, argc, argv, lens, max_depth, max_elems, out, err);
}

/* ---- batches: one pipeline per node ---------------------------------------- */

typedef struct batch {
    size_t n;
    const char *const *keys;
    const size_t *lens;
    /* the arguments of key i's command (scratch: 24 bytes it may use); argc */
    int (*args)(const struct batch *b, size_t i, const char *argv[6], size_t lens[6], char *scratch);
    /* takes key i's reply (freed by the caller): 0 ok, -1 err set */
    int (*take)(const struct batch *b, cachy_store *s, size_t i, cachy_resp *r, cachy_error *err);
    void *ud;
    int *owner;                  /* per key: its node */
    cachy_resp **moved;          /* per key: a redirection it got, to follow */
} batch;

static int is_redirect(const cachy_resp *r)
{
    char host[CACHY_REDIS_HOST_MAX];
    unsigned slot;
    int port;
    return r->type == REDIS_REPLY_ERROR && cachy_redis_redirect(r->str, r->len, &slot, host, &port);
}

/* Reads node i's replies, in the order its keys were sent; redirections
 * are kept to be followed after. The first failure is kept, and every
 * reply is read. */
static int read_node(cachy_store *s, cachy_rcluster *cl, const batch *b, int i, cachy_error *err)
{
    struct rconn *c = conn_of(s, cl, i, err);
    size_t k;
    int rc = 0;
    for (k = 0; k < b->n; k++) {
        cachy_resp *r;
        cachy_error why;
        if (b->owner[k] != i)
            continue;
        if (cachy_rconn_read(s, c, &r, err) != 0)
            return -1;
        if (is_redirect(r)) {
            b->moved[k] = r;
            continue;
        }
        if (b->take(b, s, k, r, rc == 0 ? err : &why) != 0)
            rc = -1;
        cachy_resp_free(r);
    }
    return rc;
}

/* Sends every node its pipeline, then reads them all. */
static int pipelines(cachy_store *s, cachy_rcluster *cl, const batch *b, unsigned char *state,
                     cachy_error *err)
{
    char scratch[24];
    size_t k, j, i;
    int rc = 0;
    for (k = 0; k < b->n && rc == 0; k++) {
        int at = b->owner[k];
        struct rconn *c;
        if (state[at])
            continue;
        state[at] = 2;          /* until sent: nothing to read there */
        c = conn_of(s, cl, at, err);
        if (c == NULL || cachy_rconn_ready(s, c, 0, 0, err) != 0)
            return -1;
        for (j = k; j < b->n && rc == 0; j++) {
            const char *argv[6];
            size_t lens[6];
            if (b->owner[j] == at)
                rc = cachy_rconn_append(s, c, b->args(b, j, argv, lens, scratch), argv, lens, err);
        }
        if (rc != 0 || cachy_rconn_send(s, c, err) != 0)
            return -1;          /* a failed send drops the connection */
        state[at] = 1;
    }
    for (i = 0; i < cl->map.n; i++)
        if (state[i] == 1) {
            state[i] = 2;
            name_node(s, cl, (int)i);
            if (read_node(s, cl, b, (int)i, err) != 0)
                rc = -1;
            if (rc != 0 && !(err->code == CACHY_EBACKEND || err->code == CACHY_ENOTINT))
                return -1;      /* the connection is gone: the other nodes' replies too */
        }
    return rc;
}

/* The keys whose replies redirected, one by one where they were sent
 * (unless rc, the batch's result so far, is a failure). */
static int follow_moved(cachy_store *s, cachy_rcluster *cl, const batch *b, int rc,
                        cachy_error *err)
{
    char scratch[24];
    size_t k;
    for (k = 0; k < b->n; k++) {
        const char *argv[6];
        size_t lens[6];
        cachy_resp *r, *moved = b->moved[k];
        int argc;
        if (moved == NULL)
            continue;
        b->moved[k] = NULL;
        if (rc != 0) {
            cachy_resp_free(moved);
            continue;
        }
        argc = b->args(b, k, argv, lens, scratch);
        rc = follow(s, cl, b->owner[k], moved, argc, argv, lens, 0, 0, &r, err);
        if (rc == 0) {
            rc = b->take(b, s, k, r, err);
            cachy_resp_free(r);
        }
    }
    return rc;
}

static int run_batch(cachy_store *s, cachy_rcluster *cl, batch *b, cachy_error *err)
{
    unsigned char *state = NULL;      /* per node: 1 sent to, 2 replies read */
    size_t k, i, n = b->n ? b->n : 1;
    int rc = -1;
    b->owner = malloc(n * sizeof *b->owner);
    b->moved = calloc(n, sizeof *b->moved);
    if (b->owner == NULL || b->moved == NULL)
        goto oom;
    for (k = 0; k < b->n; k++)
        if ((b->owner[k] = owner_of(s, cl, b->keys[k], b->lens[k], err)) < 0)
            goto done;
    state = calloc(cl->map.n ? cl->map.n : 1, 1);
    if (state == NULL)
        goto oom;
    rc = pipelines(s, cl, b, state, err);
    if (rc != 0) {
        /* replies still on their way must never answer a later command */
        for (i = 0; i < cl->map.n; i++)
            if (state[i] == 1)
                cachy_rconn_drop(cl->nodes[i]->conn);
    }
    rc = follow_moved(s, cl, b, rc, err);
    goto done;
oom:
    cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
done:
    free(state);
    free(b->moved);
    free(b->owner);
    return rc;
}

/* ---- the driver's batches -------------------------------------------------- */

typedef struct many_ud {
    cachy_buf *outs;
    int *found;
    const cachy_slice *vals;
    int64_t ttl_ms;
} many_ud;

static int get_args(const batch *b, size_t i, const char *argv[6], size_t lens[6], char *scratch)
{
    (void)scratch;
    argv[0] = "GET", lens[0] = 3;
    argv[1] = b->keys[i], lens[1] = b->lens[i];
    return 2;
}

static int get_take(const batch *b, cachy_store *s, size_t i, cachy_resp *r, cachy_error *err)
{
    many_ud *u = b->ud;
    u->found[i] = r->type == REDIS_REPLY_STRING;
    if (u->found[i])
        cachy_rconn_take_string(&u->outs[i], r);
    else if (r->type != REDIS_REPLY_NIL)
        return cachy_rconn_bad_reply(s, "GET", r, err);
    return 0;
}

/* keys[i].ptr and .len side by side, as batches take them */
static int split_keys(cachy_store *s, const cachy_slice *keys, size_t n, const char ***ptrs,
                      size_t **lens, cachy_error *err)
{
    size_t i;
    *ptrs = malloc((n ? n : 1) * (sizeof **ptrs + sizeof **lens));
    if (*ptrs == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    *lens = (size_t *)(*ptrs + (n ? n : 1));
    for (i = 0; i < n; i++)
        (*ptrs)[i] = keys[i].ptr, (*lens)[i] = keys[i].len;
    return 0;
}

static int run_on_keys(cachy_store *s, cachy_rcluster *cl, batch *b, const cachy_slice *keys,
                       cachy_error *err)
{
    const char **ptrs;
    size_t *lens;
    int rc;
    if (split_keys(s, keys, b->n, &ptrs, &lens, err) != 0)
        return -1;
    b->keys = ptrs, b->lens = lens;
    rc = run_batch(s, cl, b, err);
    free(ptrs);
    return rc;
}

int cachy_rcluster_many(cachy_store *s, cachy_rcluster *cl, const cachy_slice *keys, size_t n,
                        cachy_buf *outs, int *found, cachy_error *err)
{
    many_ud u = { outs, found, NULL, 0 };
    batch b = { 0 };
    b.n = n, b.args = get_args, b.take = get_take, b.ud = &u;
    return run_on_keys(s, cl, &b, keys, err);
}

static int set_args(const batch *b, size_t i, const char *argv[6], size_t lens[6], char *scratch)
{
    const many_ud *u = b->ud;
    return cachy_rconn_set_args(slice(b->keys[i], b->lens[i]), u->vals[i], u->ttl_ms,
                                scratch, argv, lens);
}

static int set_take(const batch *b, cachy_store *s, size_t i, cachy_resp *r, cachy_error *err)
{
    (void)b, (void)i;
    if (r->type == REDIS_REPLY_STATUS && r->len == 2 && memcmp(r->str, "OK", 2) == 0)
        return 0;
    return cachy_rconn_bad_reply(s, "SET", r, err);
}

int cachy_rcluster_put_many(cachy_store *s, cachy_rcluster *cl, const cachy_slice *keys,
                            const cachy_slice *vals, size_t n, int64_t ttl_ms, cachy_error *err)
{
    many_ud u = { NULL, NULL, vals, ttl_ms };
    batch b = { 0 };
    b.n = n, b.args = set_args, b.take = set_take, b.ud = &u;
    return run_on_keys(s, cl, &b, keys, err);
}

static int unlink_args(const batch *b, size_t i, const char *argv[6], size_t lens[6],
                       char *scratch)
{
    (void)scratch;
    argv[0] = "UNLINK", lens[0] = 6;
    argv[1] = b->keys[i], lens[1] = b->lens[i];
    return 2;
}

static int unlink_take(const batch *b, cachy_store *s, size_t i, cachy_resp *r, cachy_error *err)
{
    (void)b, (void)i;
    return r->type == REDIS_REPLY_INTEGER ? 0 : cachy_rconn_bad_reply(s, "UNLINK", r, err);
}

int cachy_rcluster_unlink(cachy_store *s, cachy_rcluster *cl, size_t n, const char **keys,
                          const size_t *lens, cachy_error *err)
{
    batch b = { 0 };
    b.n = n, b.keys = keys, b.lens = lens, b.args = unlink_args, b.take = unlink_take;
    return run_batch(s, cl, &b, err);
}

/* Every master: the nodes that serve a slot. A failure on one does not
 * keep the others from being flushed; the last is reported. */
int cachy_rcluster_flush(cachy_store *s, cachy_rcluster *cl, cachy_slice prefix, cachy_error *err)
{
    /* the masters as the map has them now: flushing may read it again */
    size_t n = cl->map.n ? cl->map.n : 1, i, m = 0;
    int *seen = calloc(2 * n, sizeof *seen), *masters = seen + n, rc = 0;
    if (seen == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    for (i = 0; i < CACHY_REDIS_SLOTS; i++) {
        unsigned o = cl->map.owner[i];
        if (o != CACHY_SLOT_NONE && !seen[o])
            seen[o] = 1, masters[m++] = (int)o;
    }
    for (i = 0; i < m; i++) {
        struct rconn *c = conn_of(s, cl, masters[i], err);
        if (c == NULL || cachy_rconn_flush(s, c, prefix, err) != 0)
            rc = -1;
    }
    free(seen);
    return rc;
}

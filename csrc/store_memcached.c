/*
 * store_memcached.c: the memcached driver, on libmemcached 1.1.
 *
 * Binary protocol; weighted ketama over the configured servers, so losing or
 * adding a server remaps only its share of keys; a server that fails is
 * ejected for a while (its keys go to the others) and then retried. Connect
 * and I/O timeouts are always set. Keys memcached cannot carry are sent in a
 * hashed form, lifetimes as whole seconds (absolute Unix times past 30
 * days), and increments use memcached's own TTL-keeping arithmetic wherever
 * the counter stays at or above zero.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libmemcached/memcached.h>

#include "memcached_wire.h"
#include "store.h"

/* Keys, lifetimes, counters, server entries and the continuum's settings
 * are memcached_wire.c's (cachy_mc_*), shared with the cosocket transport. */
#define MC_ATTEMPTS 3               /* tries of a single-key call (see try_again) */
#define MC_REPAIR_TRIES 200         /* compare-and-swap rounds of repair_wrapped */
#define MC_NO_POS ((size_t)-1)       /* an attempt on several servers at once */

static const cachy_field memcached_fields[] = {
    { "servers", CACHY_OPT_LIST, 0 },
    { "connect_timeout", CACHY_OPT_NUMBER, 0 },
    { "timeout", CACHY_OPT_NUMBER, 0 },
    { "transport", CACHY_OPT_STRING, 0 },
    { "pool_size", CACHY_OPT_INTEGER, 0 },
    { "pool_backlog", CACHY_OPT_INTEGER, 0 },
    { "keepalive", CACHY_OPT_NUMBER, 0 },
    { NULL, CACHY_OPT_STRING, 0 },
};

#define MC_LOG_MAX 1024             /* writes remembered per ejected server (see eject) */

/* A write that went to another server while the key's own server was out. */
typedef struct mc_logged {
    char *key;                       /* the wire key */
    size_t len;
    size_t landed;                   /* the server it went to */
} mc_logged;

typedef struct mc_out {
    int out;                         /* ejected; cleaned before it serves again */
    int overflow;                    /* more than MC_LOG_MAX writes: flush instead */
    time_t retry_at;
    mc_logged *log;
    size_t n;
} mc_out;

typedef struct mc_state {
    memcached_st *mc;
    memcached_result_st result;      /* the reply a single-key read looks at */
    memcached_result_st spare;       /* replies read only to be discarded */
    int results_ready;
    size_t nservers;
    double timeout, connect_timeout;
    uint64_t item_size_max;          /* smallest over the servers; 0 if unknown */
    int item_size_asked;
    int64_t attempt_ms;              /* when the current attempt began */
    uint64_t rand_state;             /* xorshift, for backoff between lost races */
    size_t attempt_pos;              /* its server's position, or MC_NO_POS */
    int was_connected;               /* its server had an open connection then */
    int dropped;                     /* connections were closed during it */
    unsigned char *live;             /* per server position: a connection is open */
    struct mc_out *out;              /* per server position: ejected, and what to clean (see eject) */
    size_t nout;                     /* servers ejected and not yet cleaned */
    memcached_st *ring;              /* the full continuum, never connected: each key's own server */
    char key[CACHY_MC_HASHED_MAX + 1];     /* the mapped form of a single key */
} mc_state;

/* ---- keys -------------------------------------------------------------- */

/* The wire form of one key, in st->key when it has to be hashed. */
static cachy_slice wire_key(mc_state *st, cachy_slice k)
{
    cachy_slice w;
    if (cachy_mc_key_is_plain(k.ptr, k.len))
        return k;
    w.len = cachy_mc_key_hashed(k.ptr, k.len, st->key);
    w.ptr = st->key;
    return w;
}

/* The caller's key for messages: without the store's prefix, quoted. */
static void key_for_message(const cachy_store *s, cachy_slice k, char *out, size_t outsz)
{
    if (k.len >= s->prefix_len && memcmp(k.ptr, s->prefix, s->prefix_len) == 0) {
        k.ptr += s->prefix_len;
        k.len -= s->prefix_len;
    }
    cachy_quote_key(k, out, outsz);
}

/* ---- errors ------------------------------------------------------------ */

/* Failures of a server or its connection, as opposed to answers from it. */
static int is_server_failure(memcached_return_t rc)
{
    switch (rc) {
    case MEMCACHED_FAILURE:
    case MEMCACHED_HOST_LOOKUP_FAILURE:
    case MEMCACHED_CONNECTION_FAILURE:
    case MEMCACHED_CONNECTION_BIND_FAILURE:
    case MEMCACHED_WRITE_FAILURE:
    case MEMCACHED_READ_FAILURE:
    case MEMCACHED_UNKNOWN_READ_FAILURE:
    case MEMCACHED_PROTOCOL_ERROR:
    case MEMCACHED_ERROR:
    case MEMCACHED_PARTIAL_READ:
    case MEMCACHED_SOME_ERRORS:
    case MEMCACHED_NO_SERVERS:
    case MEMCACHED_ERRNO:
    case MEMCACHED_TIMEOUT:
    case MEMCACHED_SERVER_MARKED_DEAD:
    case MEMCACHED_SERVER_TEMPORARILY_DISABLED:
    case MEMCACHED_IN_PROGRESS:
        return 1;
    default:
        return 0;
    }
}


/* " (server host:port)" for stores with several servers, else "". */
static void server_label(const mc_state *st, const memcached_instance_st *inst, char *out,
                         size_t outsz)
{
    out[0] = '\0';
    if (st->nservers < 2)
        return;
    if (inst == NULL)
        inst = memcached_server_get_last_disconnect(st->mc);
    if (inst == NULL)
        return;
    if (memcached_server_name(inst)[0] == '/')
        snprintf(out, outsz, " (server %s)", memcached_server_name(inst));
    else
        snprintf(out, outsz, " (server %s:%u)", memcached_server_name(inst),
                 (unsigned)memcached_server_port(inst));
}

/*
 * Sets err from a libmemcached failure (inst: the server involved, when
 * known) and returns -1. A server that cannot be reached or broke off is
 * CACHY_ECONN/CACHY_ETIMEOUT, so the manager drops every connection and the
 * next call starts afresh.
 */
static int mc_fail(cachy_store *s, mc_state *st, memcached_return_t rc, size_t vlen,
                   const memcached_instance_st *inst, cachy_error *err)
{
    char where[300], cause[160];
    server_label(st, inst, where, sizeof where);
    switch (rc) {
    case MEMCACHED_TIMEOUT: {
        /* libmemcached reports both timeouts alike: on a connection that
         * was open it was the reply; otherwise, whichever timeout the time
         * spent matches. */
        int connecting = 0;
        char secs[32];
        if (!st->was_connected && st->connect_timeout != st->timeout) {
            double spent = (double)(cachy_monotonic_ms() - st->attempt_ms) / 1000;
            connecting = fabs(spent - st->connect_timeout) < fabs(spent - st->timeout);
        }
        cachy_format_seconds(connecting ? st->connect_timeout : st->timeout, secs);
        cachy_error_set(err, s, CACHY_ETIMEOUT, "%s after %s s%s",
                        connecting ? "connect timed out" : "timed out", secs, where);
        return -1;
    }
    case MEMCACHED_E2BIG:
        cachy_error_set(err, s, CACHY_ETOOBIG,
                        "value of %zu bytes is larger than the server's item size limit", vlen);
        return -1;
    case MEMCACHED_MEMORY_ALLOCATION_FAILURE:
    case MEMCACHED_SERVER_MEMORY_ALLOCATION_FAILURE:
        cachy_error_set(err, s, CACHY_EBACKEND, "out of memory storing the value%s", where);
        return -1;
    default:
        break;
    }
    {
        cachy_errcode code = is_server_failure(rc) ? CACHY_ECONN : CACHY_EBACKEND;
        if (rc == MEMCACHED_ERRNO || rc == MEMCACHED_CONNECTION_FAILURE) {
            int e = memcached_last_error_errno(st->mc);
            cachy_mc_lower(cause, sizeof cause, e ? strerror(e) : memcached_strerror(st->mc, rc));
            if (e == ECONNREFUSED || e == ENOENT)     /* nothing listens there: "refused" */
                code = CACHY_EREFUSED;
        } else {
            cachy_mc_lower(cause, sizeof cause, memcached_strerror(st->mc, rc));
        }
        cachy_error_set(err, s, code, "%s%s", cause, where);
    }
    return -1;
}

/* ---- failed servers ------------------------------------------------------ */

/*
 * With several servers, a server that fails a call is ejected for
 * CACHY_MC_RETRY_SECONDS: libmemcached rebuilds the ketama continuum without it,
 * so its keys go to the next server meanwhile, and rejoins it afterwards
 * (REMOVE_FAILED_SERVERS honours each server's next retry time). The call
 * then runs once more on the key's new owner, so a lost server costs one
 * failure (one timeout at most for a server that hangs) per period, not
 * one per call. libmemcached keeps a connection whose reply timed out open,
 * the late reply still to come: every connection is closed here so that no
 * late reply is ever read as the answer to a later command.
 */
static void drop_connections(mc_state *st)
{
    memcached_quit(st->mc);
    memset(st->live, 0, st->nservers);
    st->dropped = 1;
}

/* The server at position pos. */
static const memcached_instance_st *server_at(mc_state *st, size_t pos)
{
    return memcached_server_instance_by_position(st->mc, (uint32_t)pos);
}

/*
 * Failover must never bring back a value that was replaced or forgotten
 * (issue #13). While a server X is out, writes and deletes of its keys go
 * to another server Y, and X keeps its copies: when X rejoins, they would
 * be served again, replaced and forgotten values alike. And Y keeps its
 * copies of X's keys after X is back: outdated once X is written to, they
 * would be served on X's next outage. So every write or delete (put, add,
 * forget, increment, put_many) that goes, while some server is out, to a
 * server other than the key's own one in the full continuum (st->ring) is
 * remembered with that key's own server. Before an ejected server serves
 * again, its remembered keys are deleted there; only if that works does it
 * rejoin (otherwise it stays out another CACHY_MC_RETRY_SECONDS); then the same
 * keys are deleted on the servers they went to. More than MC_LOG_MAX keys:
 * the server is emptied with flush_all instead, and so is every other
 * server (where its keys went); a cache may lose entries, never serve
 * outdated ones. A server that fails such a delete is ejected and emptied
 * before it serves again. The continuum is rebuilt only here, from this
 * list of ejected servers, so no server is left out that is not on it; an
 * ejected server's libmemcached retry time is set beyond reach (CACHY_MC_NEVER),
 * so libmemcached never lets it back by itself, uncleaned, in the middle of
 * a call (it would after its retry time otherwise: a round of a batch can
 * outlast rejoin_due's check by more than the second that separated them).
 * Every attempt of a write is remembered, answered or not: one that timed
 * out on a fallback may still be applied there.
 *
 * What this covers: this process's own writes. Another process's writes
 * during the outage are cleaned by that process, on its first call after
 * the retry time; until then this process may read the old value from the
 * rejoined server. A process that never saw the server fail (it used it
 * only before and after) cannot know, and is not protected. And a write or
 * delete sent to a server just as it stopped answering (it timed out, its
 * bytes waiting in the server's socket) is carried out when the server
 * resumes: memcached orders requests only within a connection, so if that
 * comes after the cleaning (sent on a new connection), the server keeps
 * the value of that write, current then, outdated if the key was written
 * or deleted again during the outage.
 */
static int ejected(const void *ctx, size_t pos)
{
    return ((const mc_state *)ctx)->out[pos].out;
}

static void rebuild(mc_state *st)
{
    cachy_mc_rebuild(st->mc, st->nservers, ejected, st);
}

static void mark_out(mc_state *st, size_t pos)
{
    mc_out *o = &st->out[pos];
    if (!o->out) {
        o->out = 1;
        st->nout++;
    }
    o->retry_at = time(NULL) + CACHY_MC_RETRY_SECONDS;
}

static void forget_log(mc_out *o)
{
    size_t i;
    for (i = 0; i < o->n; i++)
        free(o->log[i].key);
    free(o->log);
    o->log = NULL;
    o->n = 0;
}

static void eject(mc_state *st, const memcached_instance_st *inst)
{
    size_t pos;
    for (pos = 0; pos < st->nservers; pos++)
        if (server_at(st, pos) == inst)
            mark_out(st, pos);
    drop_connections(st);
    rebuild(st);
}

/* Remembers that the write of wk went to the server at landed (see above). */
static void note_write(mc_state *st, cachy_slice wk, size_t landed)
{
    size_t own, i;
    mc_out *o;
    mc_logged *grown;
    if (landed == MC_NO_POS)
        return;
    own = memcached_generate_hash(st->ring, wk.ptr, wk.len);
    if (own >= st->nservers || own == landed)
        return;
    o = &st->out[own];
    if (!o->out)
        mark_out(st, own);          /* left out by libmemcached itself */
    if (o->overflow)
        return;
    for (i = o->n; i > 0 && i + 8 > o->n; i--)
        if (o->log[i - 1].landed == landed && o->log[i - 1].len == wk.len &&
            memcmp(o->log[i - 1].key, wk.ptr, wk.len) == 0)
            return;
    if (o->n >= MC_LOG_MAX || (grown = realloc(o->log, (o->n + 1) * sizeof *grown)) == NULL) {
        forget_log(o);
        o->overflow = 1;
        return;
    }
    o->log = grown;
    if ((o->log[o->n].key = malloc(wk.len)) == NULL) {
        forget_log(o);
        o->overflow = 1;
        return;
    }
    memcpy(o->log[o->n].key, wk.ptr, wk.len);
    o->log[o->n].len = wk.len;
    o->log[o->n].landed = landed;
    o->n++;
}

/* A connection to the one server at pos, for cleaning; NULL if none. */
static memcached_st *single(mc_state *st, size_t pos)
{
    const memcached_instance_st *inst = server_at(st, pos);
    memcached_st *h = memcached_create(NULL);
    memcached_return_t rc;
    if (h == NULL)
        return NULL;
    memcached_behavior_set(h, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1);
    memcached_behavior_set(h, MEMCACHED_BEHAVIOR_NO_BLOCK, 1);
    memcached_behavior_set(h, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    memcached_behavior_set(h, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, (uint64_t)ceil(st->connect_timeout * 1000));
    memcached_behavior_set(h, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, (uint64_t)ceil(st->timeout * 1000));
    memcached_behavior_set(h, MEMCACHED_BEHAVIOR_SND_TIMEOUT, (uint64_t)ceil(st->timeout * 1000) * 1000);
    memcached_behavior_set(h, MEMCACHED_BEHAVIOR_RCV_TIMEOUT, (uint64_t)ceil(st->timeout * 1000) * 1000);
    if (strcmp(memcached_server_type(inst), "SOCKET") == 0)
        rc = memcached_server_add_unix_socket(h, memcached_server_name(inst));
    else
        rc = memcached_server_add(h, memcached_server_name(inst), memcached_server_port(inst));
    if (rc != MEMCACHED_SUCCESS) {
        memcached_free(h);
        return NULL;
    }
    return h;
}

/* Deletes the keys (or, with flush, everything) on the server at pos. 0 ok, -1 failed. */
static int clean_server(mc_state *st, size_t pos, const mc_out *o, int flush, int own)
{
    memcached_st *h = single(st, pos);
    size_t i;
    int ret = 0;
    if (h == NULL)
        return -1;
    if (flush) {
        if (memcached_flush(h, 0) != MEMCACHED_SUCCESS || memcached_last_error(h) != MEMCACHED_SUCCESS)
            ret = -1;
    } else {
        for (i = 0; i < o->n && ret == 0; i++) {
            memcached_return_t rc;
            if (!own && o->log[i].landed != pos)
                continue;
            rc = memcached_delete(h, o->log[i].key, o->log[i].len, 0);
            if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND)
                ret = -1;
        }
    }
    memcached_free(h);
    return ret;
}

/* Lets back, cleaned, every ejected server whose retry time has come. */
static void rejoin_due(mc_state *st)
{
    time_t now = time(NULL);
    size_t pos, j;
    for (pos = 0; pos < st->nservers; pos++) {
        mc_out *o = &st->out[pos];
        if (!o->out || now < o->retry_at)
            continue;
        if (clean_server(st, pos, o, o->overflow, 1) != 0) {
            mark_out(st, pos);
            drop_connections(st);
            rebuild(st);
            continue;
        }
        o->out = 0;
        st->nout--;
        rebuild(st);
        /* Its keys' copies where they went meanwhile. */
        for (j = 0; j < st->nservers; j++) {
            if (j == pos || st->out[j].out)
                continue;
            if (o->overflow || o->n > 0) {
                int used = o->overflow;
                size_t i;
                for (i = 0; !used && i < o->n; i++)
                    used = o->log[i].landed == j;
                if (used && clean_server(st, j, o, o->overflow, 0) != 0) {
                    st->out[j].overflow = 1;
                    forget_log(&st->out[j]);
                    eject(st, server_at(st, j));
                }
            }
        }
        /* A fallback that is itself out now gets emptied when it rejoins. */
        for (j = 0; j < st->nservers; j++) {
            size_t i;
            int used = o->overflow;
            if (j == pos || !st->out[j].out)
                continue;
            for (i = 0; !used && i < o->n; i++)
                used = o->log[i].landed == j;
            if (used) {
                forget_log(&st->out[j]);
                st->out[j].overflow = 1;
            }
        }
        forget_log(o);
        o->overflow = 0;
    }
}

/*
 * Which connections are open is kept here rather than asked of libmemcached
 * (memcached_server_srcport is a getsockname call per operation): a server
 * counts as connected from an answer on it until a failure on it or until
 * the driver closes connections. libmemcached opens connections only inside
 * a call and closes them only on a failure, which the call reports, or when
 * told to; where it says it closed one on an answer, the call marks that.
 * Any doubt counts as not connected, which costs at most the same-server
 * rerun of try_again.
 */

/* Notes the start of an attempt on the server at pos (MC_NO_POS: several). */
static void begin_attempt(mc_state *st, size_t pos)
{
    st->attempt_ms = cachy_monotonic_ms();
    st->attempt_pos = pos;
    st->was_connected = pos != MC_NO_POS && st->live[pos];
    st->dropped = 0;
}

/* Notes how the current attempt ended: rc is its outcome. */
static void end_attempt(mc_state *st, memcached_return_t rc)
{
    int answered;
    if (st->attempt_pos == MC_NO_POS)
        return;
    switch (rc) {
    case MEMCACHED_SUCCESS:
    case MEMCACHED_END:
    case MEMCACHED_NOTFOUND:
    case MEMCACHED_NOTSTORED:
    case MEMCACHED_DATA_EXISTS:
    case MEMCACHED_STORED:
    case MEMCACHED_DELETED:
        answered = !st->dropped;
        break;
    default:
        answered = 0;
        break;
    }
    st->live[st->attempt_pos] = (unsigned char)answered;
}

/* The server that owns wk now; notes the start of an attempt on it. */
static const memcached_instance_st *owner_of(mc_state *st, cachy_slice wk)
{
    size_t pos = 0;
    if (st->nservers > 1) {
        if (st->nout)
            rejoin_due(st);              /* clean and rejoin servers whose retry time has come */
        memcached_autoeject(st->mc);
        pos = memcached_generate_hash(st->mc, wk.ptr, wk.len);
    }
    begin_attempt(st, pos);
    return server_at(st, pos);
}

/* Notes the start of a call that goes to every server. */
static void begin_all(mc_state *st)
{
    begin_attempt(st, st->nservers < 2 ? 0 : MC_NO_POS);
}

/* The tries of one call. */
typedef struct mc_try {
    int failures, limit;
    int reconnected;
} mc_try;

static void try_init(mc_try *t, int limit)
{
    t->failures = 0;
    t->limit = limit;
    t->reconnected = 0;
}

/*
 * Whether a call that failed with rc on owner runs again. A connection that
 * was open when the call began may just have been closed by the server
 * (idle timeout, restart): the call first runs again on a new connection to
 * the same server. Then, with several servers, the server is ejected and
 * the call runs on the key's new owner. A timeout is never tried again on
 * the same server, so a call waits out one timeout per failed server.
 */
static int try_again(mc_state *st, mc_try *t, memcached_return_t rc,
                     const memcached_instance_st *owner)
{
    if (!is_server_failure(rc) || ++t->failures >= t->limit)
        return 0;
    if (st->was_connected && rc != MEMCACHED_TIMEOUT && !t->reconnected) {
        t->reconnected = 1;
        drop_connections(st);
        return 1;
    }
    if (st->nservers < 2 || owner == NULL)
        return 0;
    eject(st, owner);
    return 1;
}

/* ---- open / close ------------------------------------------------------ */

/* One `servers` entry (memcached_wire.c reads it), counted. 0 ok, -1 with err set. */
static int add_server(cachy_store *s, mc_state *st, const char *entry, cachy_buf *addr,
                      cachy_error *err)
{
    char msg[CACHY_ERRMSG_MAX];
    cachy_errcode code = cachy_mc_add_server(st->mc, entry, addr, msg, sizeof msg);
    if (code != CACHY_OK) {
        cachy_error_set(err, s, code, "%s", msg);
        return -1;
    }
    st->nservers++;
    return 0;
}

/* A timeout in seconds, 1.0 by default; libmemcached takes milliseconds as int32. */
static int positive_seconds(cachy_store *s, const char *name, double *out, cachy_error *err)
{
    double v = cachy_opt_number(&s->opts, name, 1.0);
    if (!(v > 0) || v > 86400) {
        cachy_error_set(err, s, CACHY_EMISUSE, "%s must be above 0 and at most 86400 seconds", name);
        return -1;
    }
    *out = v;
    return 0;
}

/* Frees the driver's state; with end_connections, libmemcached's handle
 * too, which ends each connection with a quit message and a shutdown. */
static void release(cachy_store *s, int end_connections)
{
    mc_state *st = s->impl;
    if (st == NULL)
        return;
    if (st->results_ready) {
        memcached_result_free(&st->result);
        memcached_result_free(&st->spare);
    }
    if (st->mc && end_connections)
        memcached_free(st->mc);
    if (st->ring)
        memcached_free(st->ring);       /* never connected */
    if (st->out) {
        size_t i;
        for (i = 0; i < st->nservers; i++)
            forget_log(&st->out[i]);
        free(st->out);
    }
    free(st->live);
    free(st);
    s->impl = NULL;
}

static void mc_close(cachy_store *s) { release(s, 1); }

static int port_of(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)a)->sin_port);
    if (a->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
    return -1;
}

/* The descriptor of the TCP connection from local port `local` to port
 * `peer`, among this process's open descriptors; -1 if none. */
static int tcp_fd(int local, int peer)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int found = -1;
    if (d == NULL)
        return -1;
    while (found < 0 && (e = readdir(d)) != NULL) {
        struct sockaddr_storage a;
        socklen_t n = sizeof a;
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end != '\0' || end == e->d_name || fd == dirfd(d))
            continue;
        if (getsockname((int)fd, (struct sockaddr *)&a, &n) != 0 || port_of(&a) != local)
            continue;
        n = sizeof a;
        if (getpeername((int)fd, (struct sockaddr *)&a, &n) == 0 && port_of(&a) == peer)
            found = (int)fd;
    }
    closedir(d);
    return found;
}

/*
 * In a forked child: points the descriptor of each of the handle's
 * connections at a new, unconnected socket, so that freeing the handle (a
 * quit message and a shutdown on each) reaches nothing of the parent's.
 * 0 when every connection was found; -1 when one was not, or may be over
 * a Unix socket, which nothing tells apart.
 */
static int detach_connections(mc_state *st)
{
    size_t i;
    for (i = 0; i < st->nservers; i++) {
        const memcached_instance_st *inst = memcached_server_instance_by_position(st->mc, i);
        in_port_t local;
        int fd, spare;
        if (strcmp(memcached_server_type(inst), "TCP") != 0)
            return -1;
        local = memcached_server_srcport(inst);
        if (local == 0)
            continue;                           /* not connected */
        if (local == (in_port_t)-1 || (fd = tcp_fd(local, memcached_server_port(inst))) < 0)
            return -1;
        spare = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (spare < 0)
            return -1;
        if (dup2(spare, fd) < 0) {
            close(spare);
            return -1;
        }
        close(spare);
    }
    return 0;
}

/* A child that cannot detach a connection leaves the parent's handle as it
 * is, sockets and memory (its copy, gone with the process): libmemcached
 * has no call that only closes. */
static void mc_disown(cachy_store *s)
{
    mc_state *st = s->impl;
    release(s, st != NULL && st->mc != NULL && detach_connections(st) == 0);
}

static int mc_open(cachy_store *s, cachy_error *err)
{
    static const char *const default_servers[] = { "127.0.0.1:11211" };
    const cachy_option *opt = cachy_opt_find(&s->opts, "servers");
    const char *const *list = default_servers;
    size_t n = 1, i;
    cachy_buf addr = { 0 };
    mc_state *st;
    int32_t connect_ms, io_ms;
    int mismatch;

    if (opt != NULL && opt->type == CACHY_OPT_LIST) {
        list = (const char *const *)opt->list;
        n = opt->nlist;
    }
    if (n == 0) {
        cachy_error_set(err, s, CACHY_EMISUSE, "servers must list at least one server");
        return -1;
    }
    st = calloc(1, sizeof *st);
    if (st == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    s->impl = st;
    st->rand_state = (uint64_t)cachy_now_ms() * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid() ^
                     (uint64_t)(uintptr_t)st;
    if (st->rand_state == 0)
        st->rand_state = 1;
    if (positive_seconds(s, "connect_timeout", &st->connect_timeout, err) != 0 ||
        positive_seconds(s, "timeout", &st->timeout, err) != 0)
        goto fail;
    st->mc = memcached_create(NULL);
    if (st->mc == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        goto fail;
    }
    if (memcached_result_create(st->mc, &st->result) == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        goto fail;
    }
    if (memcached_result_create(st->mc, &st->spare) == NULL) {
        memcached_result_free(&st->result);
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        goto fail;
    }
    st->results_ready = 1;

    connect_ms = (int32_t)ceil(st->connect_timeout * 1000);
    io_ms = (int32_t)ceil(st->timeout * 1000);
    /* Binary protocol and weighted ketama; REMOVE_FAILED_SERVERS makes the
     * continuum leave out a server until it is let back (see rebuild), and
     * RETRY_TIMEOUT is how long libmemcached itself stops connecting to a
     * server that refused. Its own ejection, after SERVER_FAILURE_LIMIT
     * failed connects, is set out of reach: it would eject a server that
     * comes back once more before trying it, and eject() below already
     * takes a server out after any failure (cachy_mc_distribution, the
     * cosocket transport's too). Non-blocking sockets, so that every wait
     * is a poll bounded by the timeouts; libmemcached's defaults would
     * otherwise apply. */
    if (cachy_mc_distribution(st->mc) != MEMCACHED_SUCCESS ||
        memcached_behavior_set(st->mc, MEMCACHED_BEHAVIOR_NO_BLOCK, 1) != MEMCACHED_SUCCESS ||
        memcached_behavior_set(st->mc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1) != MEMCACHED_SUCCESS ||
        memcached_behavior_set(st->mc, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, (uint64_t)connect_ms) != MEMCACHED_SUCCESS ||
        memcached_behavior_set(st->mc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, (uint64_t)io_ms) != MEMCACHED_SUCCESS ||
        memcached_behavior_set(st->mc, MEMCACHED_BEHAVIOR_SND_TIMEOUT, (uint64_t)io_ms * 1000) != MEMCACHED_SUCCESS ||
        memcached_behavior_set(st->mc, MEMCACHED_BEHAVIOR_RCV_TIMEOUT, (uint64_t)io_ms * 1000) != MEMCACHED_SUCCESS) {
        cachy_error_set(err, s, CACHY_EBACKEND, "cannot configure libmemcached: %s",
                        memcached_last_error_message(st->mc));
        goto fail;
    }
    for (i = 0; i < n; i++)
        if (add_server(s, st, list[i], &addr, err) != 0)
            goto fail;
    st->live = calloc(st->nservers, 1);
    st->out = calloc(st->nservers, sizeof *st->out);
    mismatch = 0;
    /* st->ring must place every key where st->mc places it with all servers
     * in: cachy_mc_full_ring sets the copy's distribution and checks it. */
    if (st->nservers > 1)
        st->ring = cachy_mc_full_ring(st->mc, &mismatch);
    if (st->live == NULL || st->out == NULL || (st->nservers > 1 && st->ring == NULL && !mismatch)) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        goto fail;
    }
    if (mismatch) {
        cachy_error_set(err, s, CACHY_EBACKEND,
                        "libmemcached's copy of the server continuum does not match it");
        goto fail;
    }
    cachy_mc_address(&addr, s->address, sizeof s->address);
    cachy_buf_free(&addr);
    return 0;
fail:
    cachy_buf_free(&addr);
    mc_close(s);
    return -1;
}

/* ---- reading ------------------------------------------------------------ */

/* Reads every reply still pending from a multi-get, so none is taken for
 * the answer to a later command; if that fails, drops the connections. */
static void drain(mc_state *st)
{
    memcached_return_t rc;
    while (memcached_fetch_result(st->mc, &st->spare, &rc) != NULL)
        ;
    if (rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND && rc != MEMCACHED_SUCCESS)
        drop_connections(st);
}

/* One key with its CAS unique: 1 hit (st->result holds it), 0 miss, -1 rc set. */
static int gets_one(mc_state *st, cachy_slice wk, memcached_return_t *rcp)
{
    const char *keys[1];
    size_t lens[1];
    memcached_return_t rc;
    keys[0] = wk.ptr;
    lens[0] = wk.len;
    rc = memcached_mget(st->mc, keys, lens, 1);
    if (rc != MEMCACHED_SUCCESS) {
        *rcp = rc;
        return -1;
    }
    if (memcached_fetch_result(st->mc, &st->result, &rc) != NULL) {
        drain(st);
        return 1;
    }
    if (rc == MEMCACHED_END || rc == MEMCACHED_NOTFOUND)
        return 0;
    *rcp = rc;
    return -1;
}

static int copy_value(cachy_store *s, cachy_buf *out, const char *p, size_t n, cachy_error *err)
{
    if (cachy_buf_set(out, p, cachy_mc_unpadded_len(p, n)) != 0) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    return 0;
}

/*
 * A plain get is one GETK request with its one reply; gets_one's multi-get
 * (a quiet get, then a NOOP to end it) is for the increments, which need the
 * CAS unique. memcached_get hands over a copy of the value, NULL with
 * MEMCACHED_SUCCESS when it is empty.
 */
static int mc_get(cachy_store *s, cachy_slice key, cachy_buf *out, cachy_error *err)
{
    mc_state *st = s->impl;
    cachy_slice wk = wire_key(st, key);
    const memcached_instance_st *owner;
    memcached_return_t rc;
    char *value;
    size_t vlen;
    uint32_t flags;
    mc_try t;
    int r;
    try_init(&t, MC_ATTEMPTS);
    for (;;) {
        owner = owner_of(st, wk);
        value = memcached_get(st->mc, wk.ptr, wk.len, &vlen, &flags, &rc);
        end_attempt(st, rc);
        if (rc == MEMCACHED_SUCCESS || rc == MEMCACHED_NOTFOUND || !try_again(st, &t, rc, owner))
            break;
    }
    if (rc == MEMCACHED_NOTFOUND)
        return 0;
    if (rc != MEMCACHED_SUCCESS) {
        free(value);
        return mc_fail(s, st, rc, 0, owner, err);
    }
    r = copy_value(s, out, value != NULL ? value : "", value != NULL ? vlen : 0, err);
    free(value);
    return r != 0 ? -1 : 1;
}

/*
 * Wire keys for n keys: hashed forms written into one block. On success
 * *block (free it) holds them and the wire keys are in wk.
 */
static int wire_keys(cachy_store *s, const cachy_slice *keys, size_t n, cachy_slice *wk,
                     char **block, cachy_error *err)
{
    size_t i, hashed = 0;
    char *p;
    for (i = 0; i < n; i++)
        if (!cachy_mc_key_is_plain(keys[i].ptr, keys[i].len))
            hashed++;
    *block = malloc(hashed * (CACHY_MC_HASHED_MAX + 1) + 1);
    if (*block == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    p = *block;
    for (i = 0; i < n; i++) {
        if (cachy_mc_key_is_plain(keys[i].ptr, keys[i].len)) {
            wk[i] = keys[i];
        } else {
            wk[i].len = cachy_mc_key_hashed(keys[i].ptr, keys[i].len, p);
            wk[i].ptr = p;
            p += CACHY_MC_HASHED_MAX + 1;
        }
    }
    return 0;
}

/*
 * Server index now owning each of the n wire keys (all 0 with one server).
 * Multi-key calls go server by server rather than through libmemcached's
 * all-server multi-get, which skips the keys of a server it cannot reach
 * without saying which: per server, a failure is known and its keys can be
 * sent to the server that takes them over.
 */
static void owners(mc_state *st, const cachy_slice *wk, const char *pending, size_t n,
                   uint32_t *srv)
{
    size_t i;
    if (st->nservers > 1) {
        if (st->nout)
            rejoin_due(st);
        memcached_autoeject(st->mc);
    }
    for (i = 0; i < n; i++)
        srv[i] = pending[i] && st->nservers > 1 ? memcached_generate_hash(st->mc, wk[i].ptr, wk[i].len)
                                                : 0;
}

/*
 * A batch call's work on one server: the batch's keys at sel[0..m), all
 * owned by that server. Returns MEMCACHED_SUCCESS when each was answered;
 * on a failure, *vlen is the size of the value it failed on (0: none). A
 * failure that has set err itself (out of memory) sets *fatal.
 */
typedef memcached_return_t (*mc_group_fn)(mc_state *st, void *ctx, const size_t *sel, size_t m,
                                          size_t *vlen, int *fatal);

/*
 * Sends each server the pending keys it owns, through send, in rounds: the
 * keys of a server that failed go, when try_again allows, to the server
 * that takes them over in the next round. A failure of each server may cost
 * a round. Clears pending[i] as key i is answered.
 */
static int each_owner(cachy_store *s, mc_state *st, const cachy_slice *wk, char *pending,
                      size_t n, mc_group_fn send, void *ctx, int writes, cachy_error *err)
{
    size_t nsrv = memcached_server_count(st->mc), i, srv_i;
    size_t *sel = malloc(n * sizeof *sel);
    uint32_t *srv = malloc(n * sizeof *srv);
    mc_try t;
    int ret = -1;

    if (!sel || !srv) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        goto done;
    }
    try_init(&t, MC_ATTEMPTS + (int)nsrv);
    for (;;) {
        int again = 0;
        owners(st, wk, pending, n, srv);
        for (srv_i = 0; srv_i < nsrv; srv_i++) {
            const memcached_instance_st *inst;
            memcached_return_t rc;
            size_t m = 0, vlen = 0;
            int fatal = 0;
            for (i = 0; i < n; i++)
                if (pending[i] && srv[i] == srv_i)
                    sel[m++] = i;
            if (m == 0)
                continue;
            inst = server_at(st, srv_i);
            begin_attempt(st, srv_i);
            rc = send(st, ctx, sel, m, &vlen, &fatal);
            end_attempt(st, rc);
            if (fatal)
                goto done;
            if (writes && st->nout)     /* sent, answered or not */
                for (i = 0; i < m; i++)
                    note_write(st, wk[sel[i]], srv_i);
            if (rc == MEMCACHED_SUCCESS) {
                for (i = 0; i < m; i++)
                    pending[sel[i]] = 0;
            } else if (try_again(st, &t, rc, inst)) {
                again = 1;
            } else {
                mc_fail(s, st, rc, vlen, inst, err);
                goto done;
            }
        }
        if (!again)
            break;
    }
    ret = 0;
done:
    free(sel);
    free(srv);
    return ret;
}

/* What many's multi-gets share. */
typedef struct mc_many_call {
    cachy_store *s;
    const cachy_slice *wk;
    const char **kp;            /* room for one multi-get's keys */
    size_t *kl;
    cachy_buf *outs;
    int *found;
    int copy_failed;            /* copying a value failed for lack of memory (err set) */
    cachy_error *err;
} mc_many_call;

/*
 * Which of the m keys of a multi-get (kp, kl) a reply's key answers. A
 * server answers a connection's requests in order and leaves misses out,
 * so the answer is found from *next on, most often at *next itself; a key
 * asked twice is answered twice, once for each. A reply out of that order
 * is looked for from the start. Returns m for a key nobody asked for.
 */
static size_t reply_position(const char *const *kp, const size_t *kl, size_t m, size_t *next,
                             const char *k, size_t klen)
{
    size_t j;
    for (j = *next; j < m; j++)
        if (kl[j] == klen && memcmp(kp[j], k, klen) == 0) {
            *next = j + 1;
            return j;
        }
    for (j = 0; j < *next && j < m; j++)
        if (kl[j] == klen && memcmp(kp[j], k, klen) == 0)
            return j;
    return m;
}

/* One multi-get of the wire keys at sel[0..m): a value found goes to the
 * position that asked for it. */
static memcached_return_t group_get(mc_state *st, mc_many_call *c, const size_t *sel, size_t m)
{
    memcached_return_t rc, frc = MEMCACHED_END;
    memcached_result_st *res;
    size_t j, next = 0;
    for (j = 0; j < m; j++) {
        c->kp[j] = c->wk[sel[j]].ptr;
        c->kl[j] = c->wk[sel[j]].len;
    }
    rc = memcached_mget_by_key(st->mc, c->kp[0], c->kl[0], c->kp, c->kl, m);
    if (rc != MEMCACHED_SUCCESS)
        return rc;
    while ((res = memcached_fetch_result(st->mc, &st->result, &frc)) != NULL) {
        size_t idx;
        j = reply_position(c->kp, c->kl, m, &next, memcached_result_key_value(res),
                           memcached_result_key_length(res));
        if (j == m)
            continue;
        idx = sel[j];
        if (!c->copy_failed && copy_value(c->s, &c->outs[idx], memcached_result_value(res),
                                          memcached_result_length(res), c->err) != 0)
            c->copy_failed = 1;
        c->found[idx] = 1;
    }
    if (frc == MEMCACHED_END || frc == MEMCACHED_NOTFOUND || frc == MEMCACHED_SUCCESS)
        return MEMCACHED_SUCCESS;
    return frc;
}

static memcached_return_t get_on_server(mc_state *st, void *ctx, const size_t *sel, size_t m,
                                        size_t *vlen, int *fatal)
{
    mc_many_call *c = ctx;
    memcached_return_t rc;
    (void)vlen;
    /* On a new connection the first key goes alone: libmemcached reports a
     * failure to connect as such only for the first key. */
    if (m > 1 && !st->was_connected) {
        rc = group_get(st, c, sel, 1);
        if (rc == MEMCACHED_SUCCESS)
            rc = group_get(st, c, sel + 1, m - 1);
    } else {
        rc = group_get(st, c, sel, m);
    }
    *fatal = c->copy_failed;
    return rc;
}

static int mc_many(cachy_store *s, const cachy_slice *keys, size_t n, cachy_buf *outs, int *found,
                   cachy_error *err)
{
    mc_state *st = s->impl;
    cachy_slice *wk = NULL;
    char *block = NULL, *pending = NULL;
    mc_many_call c;
    size_t i;
    int ret = -1;

    memset(&c, 0, sizeof c);
    for (i = 0; i < n; i++)
        found[i] = 0;
    wk = malloc(n * sizeof *wk);
    c.kp = malloc(n * sizeof *c.kp);
    c.kl = malloc(n * sizeof *c.kl);
    pending = malloc(n);
    if (!wk || !c.kp || !c.kl || !pending) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        goto done;
    }
    if (wire_keys(s, keys, n, wk, &block, err) != 0)
        goto done;
    memset(pending, 1, n);
    c.s = s;
    c.wk = wk;
    c.outs = outs;
    c.found = found;
    c.err = err;
    ret = each_owner(s, st, wk, pending, n, get_on_server, &c, 0, err);
done:
    if (ret != 0)
        for (i = 0; i < n; i++)
            found[i] = 0;
    free(block);
    free(wk);
    free((void *)c.kp);
    free(c.kl);
    free(pending);
    return ret;
}

/* ---- writing ------------------------------------------------------------ */

/* libmemcached's set and add (memcached_delete is adapted to the same shape). */
typedef memcached_return_t (*mc_write_fn)(memcached_st *mc, const char *key, size_t key_len,
                                          const char *val, size_t val_len, time_t exp,
                                          uint32_t flags);

static memcached_return_t delete_key(memcached_st *mc, const char *key, size_t key_len,
                                     const char *val, size_t val_len, time_t exp, uint32_t flags)
{
    (void)val;
    (void)val_len;
    (void)exp;
    (void)flags;
    return memcached_delete(mc, key, key_len, 0);
}

/* The codes that answer each write: any other one is a failure, retried
 * while try_again allows. */
static int set_answered(memcached_return_t rc)
{
    return rc == MEMCACHED_SUCCESS;
}

static int add_answered(memcached_return_t rc)
{
    return rc == MEMCACHED_SUCCESS || rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS;
}

static int delete_answered(memcached_return_t rc)
{
    return rc == MEMCACHED_SUCCESS || rc == MEMCACHED_NOTFOUND;
}

/* Sends one write of the wire key wk until it is answered or try_again gives
 * up; returns the last code and sets *owner to the server it went to. */
static memcached_return_t write_one(mc_state *st, mc_write_fn write, int (*answered)(memcached_return_t),
                                    cachy_slice wk, cachy_slice val, time_t exp,
                                    const memcached_instance_st **owner)
{
    memcached_return_t rc;
    mc_try t;
    try_init(&t, MC_ATTEMPTS);
    for (;;) {
        *owner = owner_of(st, wk);
        rc = write(st->mc, wk.ptr, wk.len, val.ptr, val.len, exp, 0);
        end_attempt(st, rc);
        if (st->nout)                   /* sent, answered or not */
            note_write(st, wk, st->attempt_pos);
        if (answered(rc) || !try_again(st, &t, rc, *owner))
            return rc;
    }
}

static int mc_put(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                  cachy_error *err)
{
    mc_state *st = s->impl;
    const memcached_instance_st *owner;
    memcached_return_t rc = write_one(st, memcached_set, set_answered, wire_key(st, key), val,
                                      (time_t)cachy_mc_expiry(ttl_ms), &owner);
    return rc == MEMCACHED_SUCCESS ? 0 : mc_fail(s, st, rc, val.len, owner, err);
}

static int mc_add(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                  cachy_error *err)
{
    mc_state *st = s->impl;
    const memcached_instance_st *owner;
    memcached_return_t rc = write_one(st, memcached_add, add_answered, wire_key(st, key), val,
                                      (time_t)cachy_mc_expiry(ttl_ms), &owner);
    if (rc == MEMCACHED_SUCCESS)
        return 1;
    if (rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS)
        return 0;
    return mc_fail(s, st, rc, val.len, owner, err);
}

static int mc_forget(cachy_store *s, cachy_slice key, cachy_error *err)
{
    mc_state *st = s->impl;
    const memcached_instance_st *owner;
    memcached_return_t rc = write_one(st, delete_key, delete_answered, wire_key(st, key),
                                      (cachy_slice){ NULL, 0 }, 0, &owner);
    if (rc == MEMCACHED_SUCCESS)
        return 1;
    if (rc == MEMCACHED_NOTFOUND)
        return 0;
    return mc_fail(s, st, rc, 0, owner, err);
}

static memcached_return_t stat_min_item_size(const memcached_instance_st *server, const char *key,
                                             size_t key_length, const char *value,
                                             size_t value_length, void *context)
{
    uint64_t *min = context, v = 0;
    size_t i;
    (void)server;
    if (key_length != 13 || memcmp(key, "item_size_max", 13) != 0)
        return MEMCACHED_SUCCESS;
    for (i = 0; i < value_length && value[i] >= '0' && value[i] <= '9'; i++)
        v = v * 10 + (uint64_t)(value[i] - '0');
    if (v > 0 && (*min == 0 || v < *min))
        *min = v;
    return MEMCACHED_SUCCESS;
}

/* What put_many's sets share. */
typedef struct mc_put_call {
    const cachy_slice *wk, *vals;
    time_t exp;
} mc_put_call;

/*
 * The pairs at sel[0..m), all bound for one server, without a round trip
 * each: with NOREPLY, memcached_set sends a quiet set, which the server
 * answers only on failure, and libmemcached discards such late failure
 * replies. So a pair goes quiet only when its size rules a failure out
 * (half of the smallest item size limit, learnt from "stats settings");
 * large pairs and the last pair are sent with a reply. A server handles a
 * connection's commands in order, so that last reply also confirms that the
 * quiet sets before it were read. Left unreported: a quiet set the server
 * could not store for lack of memory, which to a reader is an eviction.
 */
static memcached_return_t put_on_server(mc_state *st, void *ctx, const size_t *sel, size_t m,
                                        size_t *vlen, int *fatal)
{
    const mc_put_call *c = ctx;
    uint64_t quiet_max = st->item_size_max / 2;
    cachy_slice gk = c->wk[sel[0]];
    size_t j;
    (void)fatal;
    for (j = 0; j < m; j++) {
        size_t i = sel[j];
        int quiet = j + 1 < m && c->vals[i].len + c->wk[i].len + 1024 <= quiet_max;
        memcached_return_t rc;
        if (quiet)
            memcached_behavior_set(st->mc, MEMCACHED_BEHAVIOR_NOREPLY, 1);
        rc = memcached_set_by_key(st->mc, gk.ptr, gk.len, c->wk[i].ptr, c->wk[i].len,
                                  c->vals[i].ptr, c->vals[i].len, c->exp, 0);
        if (quiet)
            memcached_behavior_set(st->mc, MEMCACHED_BEHAVIOR_NOREPLY, 0);
        if (rc != MEMCACHED_SUCCESS) {
            *vlen = c->vals[i].len;
            return rc;
        }
    }
    return MEMCACHED_SUCCESS;
}

static int mc_put_many(cachy_store *s, const cachy_slice *keys, const cachy_slice *vals, size_t n,
                       int64_t ttl_ms, cachy_error *err)
{
    mc_state *st = s->impl;
    cachy_slice *wk = NULL;
    char *block = NULL, *pending = NULL;
    mc_put_call c;
    int ret = -1;

    wk = malloc(n * sizeof *wk);
    pending = malloc(n);
    if (!wk || !pending) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        goto done;
    }
    if (wire_keys(s, keys, n, wk, &block, err) != 0)
        goto done;
    memset(pending, 1, n);
    if (!st->item_size_asked && n > 1) {
        uint64_t min = 0;
        memcached_return_t rc;
        /* Asked once per connection; without every server's answer, every
         * set waits for its reply. */
        st->item_size_asked = 1;
        begin_all(st);
        rc = memcached_stat_execute(st->mc, "settings", stat_min_item_size, &min);
        end_attempt(st, rc);
        if (rc == MEMCACHED_SUCCESS) {
            st->item_size_max = min;
        } else if (st->nservers < 2) {
            mc_fail(s, st, rc, 0, memcached_server_instance_by_position(st->mc, 0), err);
            goto done;
        } else {
            drop_connections(st);       /* a late reply must not answer a set */
        }
    }
    c.wk = wk;
    c.vals = vals;
    c.exp = (time_t)cachy_mc_expiry(ttl_ms);
    ret = each_owner(s, st, wk, pending, n, put_on_server, &c, 1, err);
done:
    free(block);
    free(wk);
    free(pending);
    return ret;
}

/* ---- increment ----------------------------------------------------------- */

static int fail_not_int(cachy_store *s, cachy_slice key, cachy_error *err)
{
    char shown[300];
    key_for_message(s, key, shown, sizeof shown);
    cachy_error_set(err, s, CACHY_ENOTINT, "value of key '%s' is not an integer", shown);
    return -1;
}

static int fail_range(cachy_store *s, cachy_slice key, cachy_error *err)
{
    char shown[300];
    key_for_message(s, key, shown, sizeof shown);
    cachy_error_set(err, s, CACHY_ERANGE, "increment of key '%s' overflows 64 bits", shown);
    return -1;
}

/*
 * Before round `tries` of a read-modify-write that lost a race: -1 when the
 * call's time (the I/O timeout) is up; else 0, after a random pause growing
 * with the losses from the third on (up to 2 ms), so that writers racing for
 * one key stop colliding in step.
 */
static int backoff(mc_state *st, int tries, int64_t deadline)
{
    uint64_t x, cap_us;
    if (cachy_monotonic_ms() >= deadline)
        return -1;
    if (tries < 3)
        return 0;
    x = st->rand_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    st->rand_state = x;
    cap_us = tries >= 9 ? 2000 : (uint64_t)50 << (tries - 3);
    usleep((useconds_t)(x % cap_us));
    return 0;
}

/*
 * Rewrites a counter left as an unsigned two's complement (a decrement that
 * raced below zero) as its signed decimal. Losing the race to another writer
 * is fine: any writer leaves signed text or a fresh wrap to repair again.
 */
static memcached_return_t repair_wrapped(mc_state *st, cachy_slice wk)
{
    int tries;
    for (tries = 0; tries < MC_REPAIR_TRIES; tries++) {
        memcached_return_t rc = MEMCACHED_SUCCESS;
        int64_t v;
        int wrapped;
        char text[24];
        size_t tlen;
        int r = gets_one(st, wk, &rc);
        if (r < 0)
            return rc;
        if (r == 0 || !cachy_mc_parse_counter(memcached_result_value(&st->result),
                                              memcached_result_length(&st->result), &v, &wrapped) ||
            !wrapped)
            return MEMCACHED_SUCCESS;
        tlen = cachy_format_int(v, text);
        rc = memcached_cas(st->mc, wk.ptr, wk.len, text, tlen, 0,
                           memcached_result_flags(&st->result), memcached_result_cas(&st->result));
        if (rc == MEMCACHED_SUCCESS)
            return rc;
        if (rc != MEMCACHED_DATA_EXISTS && rc != MEMCACHED_NOTFOUND)
            return rc;
    }
    return MEMCACHED_SUCCESS;
}

/*
 * The increment, atomic across clients. Three ways, chosen from a read of
 * the current value (with its CAS unique):
 *  - missing: memcached's add of `by`, without expiry (lost race: read again);
 *  - counter >= 0 and result >= 0: memcached's own incr, which keeps the
 *    item's expiry. It adds modulo 2^64, so a decrement is an incr by the
 *    two's complement: unlike decr it cannot clamp at 0 when another client
 *    moved the value in between, and the sum tells what the value was just
 *    before. If a race took it below zero, the unsigned text is rewritten
 *    signed; if past 64 bits, the opposite incr undoes it;
 *  - counter < 0 or result < 0: compare-and-swap of the new decimal text.
 *    memcached cannot hold negatives for its incr, and the binary protocol
 *    cannot tell an item's remaining lifetime, so this rewrite stores the
 *    counter without expiry.
 * On a CAS-unique mismatch or a vanished key the round starts again.
 * Unsigned text above INT64_MAX is never counted on: memcached's incr would
 * wrap it (a value another client wrote as 18446744073709551615 would give
 * 0). It is waited on instead, as another writer's two's complement about
 * to be rewritten signed; left unchanged for the I/O timeout, it is not an
 * integer (CACHY_ENOTINT), and so is a counter whose writer died between
 * its wrap and its repair.
 * Returns 0 (*result set), -1 with *rcp set, or -2 with err set.
 */
static int mc_incr_once(cachy_store *s, mc_state *st, cachy_slice key, cachy_slice wk, int64_t by,
                        int64_t *result, memcached_return_t *rcp, cachy_error *err)
{
    int64_t wait_ms = (int64_t)(st->timeout * 1000);
    int64_t start = cachy_monotonic_ms(), deadline = start + wait_ms;
    int64_t wrap_until = 0;
    uint64_t wrap_cas = 0;
    int wrap_seen = 0, wrap_polls = 0;
    int tries;
    for (tries = 0;; tries++) {
        memcached_return_t rc = MEMCACHED_SUCCESS;
        int64_t v, r;
        cachy_mc_plan plan;
        char text[24];
        size_t tlen;
        int hit;
        if (tries > 0 && backoff(st, tries, deadline) != 0) {
            char secs[32];
            cachy_format_seconds(st->timeout, secs);
            cachy_error_set(err, s, CACHY_EBACKEND,
                            "increment lost %d races with other writers in %s s", tries, secs);
            return -2;
        }
        hit = gets_one(st, wk, &rc);
        if (hit < 0) {
            *rcp = rc;
            return -1;
        }
        if (hit == 0) {
            tlen = cachy_format_int(by, text);
            rc = memcached_add(st->mc, wk.ptr, wk.len, text, tlen, 0, 0);
            if (rc == MEMCACHED_SUCCESS) {
                *result = by;
                return 0;
            }
            if (rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS)
                continue;
            *rcp = rc;
            return -1;
        }
        /* memcached_wire.c's choice, the cosocket transport's too */
        plan = cachy_mc_incr_plan(memcached_result_value(&st->result),
                                  memcached_result_length(&st->result), by, &v, &r);
        if (plan == CACHY_MC_NOT_INTEGER) {
            fail_not_int(s, key, err);
            return -2;
        }
        if (plan == CACHY_MC_WRAPPED) {
            /* Unsigned text above INT64_MAX: the two's complement another
             * writer's decrement leaves for a moment (it rewrites it signed
             * at once, see repair_wrapped), or a number another client
             * wrote beyond int64, which memcached's incr would wrap. Only
             * time tells them apart: the same item (same CAS unique) still
             * there after the I/O timeout is not a counter. */
            uint64_t cas = memcached_result_cas(&st->result);
            int64_t now = cachy_monotonic_ms();
            if (!wrap_seen || cas != wrap_cas) {
                if (now >= start + 3 * wait_ms) {
                    char secs[32];
                    cachy_format_seconds(st->timeout, secs);
                    cachy_error_set(err, s, CACHY_EBACKEND,
                                    "increment lost races with other writers for 3 times %s s",
                                    secs);
                    return -2;
                }
                wrap_seen = 1;
                wrap_cas = cas;
                wrap_until = now + wait_ms;
                wrap_polls = 0;
            } else if (now >= wrap_until) {
                fail_not_int(s, key, err);
                return -2;
            }
            usleep(wrap_polls++ < 10 ? 1000 : 10000);
            deadline = cachy_monotonic_ms() + wait_ms;   /* the wait is not a lost race */
            tries = -1;
            continue;
        }
        if (plan == CACHY_MC_OVERFLOW) {
            fail_range(s, key, err);
            return -2;
        }
        if (plan == CACHY_MC_SAME) {
            *result = v;
            return 0;
        }
        if (plan == CACHY_MC_INCR) {
            uint64_t after = 0;
            rc = memcached_increment_by_key(st->mc, wk.ptr, wk.len, wk.ptr, wk.len, (uint64_t)by,
                                            &after);
            if (rc == MEMCACHED_NOTFOUND)
                continue;
            if (rc == MEMCACHED_UNKNOWN_READ_FAILURE || rc == MEMCACHED_INVALID_ARGUMENTS) {
                /* Not numeric to memcached any more: another client wrote
                 * in between. (libmemcached also dropped the connection.) */
                st->dropped = 1;
                continue;
            }
            if (rc != MEMCACHED_SUCCESS) {
                *rcp = rc;
                return -1;
            }
            {
                /* The counter just before the incr, read back from the sum
                 * modulo 2^64: another client may have changed it since the
                 * read above, even to a two's complement left for a moment. */
                int64_t sum;
                if (cachy_mc_incr_sum(after, by, &sum) != 0) {
                    uint64_t undone;
                    if (memcached_increment_by_key(st->mc, wk.ptr, wk.len, wk.ptr, wk.len,
                                                   (uint64_t)0 - (uint64_t)by, &undone) != MEMCACHED_SUCCESS)
                        drop_connections(st);
                    fail_range(s, key, err);
                    return -2;
                }
                if (after > (uint64_t)INT64_MAX) {      /* below zero: write it signed */
                    rc = repair_wrapped(st, wk);
                    if (rc != MEMCACHED_SUCCESS) {
                        *rcp = rc;
                        return -1;
                    }
                }
                *result = sum;
                return 0;
            }
        }
        tlen = cachy_format_int(r, text);
        rc = memcached_cas(st->mc, wk.ptr, wk.len, text, tlen, 0,
                           memcached_result_flags(&st->result), memcached_result_cas(&st->result));
        if (rc == MEMCACHED_SUCCESS) {
            *result = r;
            return 0;
        }
        if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTFOUND)
            continue;
        *rcp = rc;
        return -1;
    }
}

/*
 * A read-modify-write of one key (an increment, a lock's forget_if or
 * touch_if) with the tries of try_again: `once` returns 0 or more when
 * done, -1 with *rcp set by a failing server, -2 with err set.
 */
typedef int (*mc_rmw_fn)(cachy_store *s, mc_state *st, cachy_slice key, cachy_slice wk,
                         void *ctx, memcached_return_t *rcp, cachy_error *err);

static int mc_rmw(cachy_store *s, cachy_slice key, mc_rmw_fn once, void *ctx, size_t vlen,
                  cachy_error *err)
{
    mc_state *st = s->impl;
    cachy_slice wk = wire_key(st, key);
    const memcached_instance_st *owner;
    memcached_return_t rc = MEMCACHED_SUCCESS;
    mc_try t;
    int r;
    try_init(&t, MC_ATTEMPTS);
    for (;;) {
        owner = owner_of(st, wk);
        r = once(s, st, key, wk, ctx, &rc, err);
        end_attempt(st, r == -1 ? rc : MEMCACHED_SUCCESS);
        if (st->nout)                   /* sent, answered or not */
            note_write(st, wk, st->attempt_pos);
        if (r != -1 || !try_again(st, &t, rc, owner))
            break;
    }
    if (r == -1)
        return mc_fail(s, st, rc, vlen, owner, err);
    return r;
}

typedef struct mc_incr_args {
    int64_t by;
    int64_t *result;
} mc_incr_args;

static int incr_step(cachy_store *s, mc_state *st, cachy_slice key, cachy_slice wk, void *ctx,
                     memcached_return_t *rcp, cachy_error *err)
{
    mc_incr_args *a = ctx;
    return mc_incr_once(s, st, key, wk, a->by, a->result, rcp, err);
}

static int mc_incr(cachy_store *s, cachy_slice key, int64_t by, int64_t *result, cachy_error *err)
{
    mc_incr_args a = { by, result };
    return mc_rmw(s, key, incr_step, &a, 0, err) == 0 ? 0 : -1;
}

/* ---- locks ----------------------------------------------------------------- */

#define MC_IF_TRIES 10              /* rounds of mc_if_once that lost to another writer */

/*
 * forget_if and touch_if: a gets, the comparison, then a compare-and-swap of
 * the same bytes with the new exptime (CACHY_MC_EXPIRED deletes), so a
 * change by another client in between makes the swap fail instead of being
 * overwritten. A lost swap reads again: the item may still hold val (a
 * refresh of the same owner). 1 done, 0 not held, -1 with *rcp set.
 */
typedef struct mc_if_args {
    cachy_slice val;
    int64_t exptime;
} mc_if_args;

static int mc_if_once(cachy_store *s, mc_state *st, cachy_slice key, cachy_slice wk, void *ctx,
                      memcached_return_t *rcp, cachy_error *err)
{
    const mc_if_args *a = ctx;
    int tries;
    for (tries = 0; tries < MC_IF_TRIES; tries++) {
        memcached_return_t rc = MEMCACHED_SUCCESS;
        const char *p;
        size_t n;
        int hit = gets_one(st, wk, &rc);
        if (hit < 0) {
            *rcp = rc;
            return -1;
        }
        if (hit == 0)
            return 0;
        p = memcached_result_value(&st->result);
        n = cachy_mc_unpadded_len(p, memcached_result_length(&st->result));
        if (n != a->val.len || (n > 0 && memcmp(p, a->val.ptr, n) != 0))
            return 0;
        rc = memcached_cas(st->mc, wk.ptr, wk.len, a->val.ptr, a->val.len, (time_t)a->exptime,
                           memcached_result_flags(&st->result), memcached_result_cas(&st->result));
        if (rc == MEMCACHED_SUCCESS)
            return 1;
        if (rc == MEMCACHED_NOTFOUND)
            return 0;
        if (rc != MEMCACHED_DATA_EXISTS) {
            *rcp = rc;
            return -1;
        }
    }
    return 0;
}

static int mc_forget_if(cachy_store *s, cachy_slice key, cachy_slice val, cachy_error *err)
{
    mc_if_args a = { val, CACHY_MC_EXPIRED };
    return mc_rmw(s, key, mc_if_once, &a, val.len, err);
}

static int mc_touch_if(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                       cachy_error *err)
{
    mc_if_args a = { val, cachy_mc_expiry(ttl_ms) };
    return mc_rmw(s, key, mc_if_once, &a, val.len, err);
}

/* ---- whole store ----------------------------------------------------------- */

/*
 * memcached has no way to remove only some keys: flush_all on every server,
 * whatever the prefix. libmemcached's binary flush does not look at the
 * replies; a failure reading one is still recorded as the call's last error.
 */
static int mc_flush(cachy_store *s, cachy_slice prefix, cachy_error *err)
{
    mc_state *st = s->impl;
    memcached_return_t rc;
    (void)prefix;
    begin_all(st);
    rc = memcached_flush(st->mc, 0);
    if (rc == MEMCACHED_SUCCESS || rc == MEMCACHED_SOME_ERRORS) {
        memcached_return_t last = memcached_last_error(st->mc);
        if (last != MEMCACHED_SUCCESS)
            rc = last;
    }
    end_attempt(st, rc);
    return rc == MEMCACHED_SUCCESS ? 0 : mc_fail(s, st, rc, 0, NULL, err);
}

typedef struct mc_totals {
    int64_t items, bytes, hits, misses, evictions;
} mc_totals;

static memcached_return_t stat_sum(const memcached_instance_st *server, const char *key,
                                   size_t key_length, const char *value, size_t value_length,
                                   void *context)
{
    mc_totals *t = context;
    int64_t *slot = NULL, v = 0;
    size_t i;
    (void)server;
    if (key_length == 10 && memcmp(key, "curr_items", 10) == 0)
        slot = &t->items;
    else if (key_length == 5 && memcmp(key, "bytes", 5) == 0)
        slot = &t->bytes;
    else if (key_length == 8 && memcmp(key, "get_hits", 8) == 0)
        slot = &t->hits;
    else if (key_length == 10 && memcmp(key, "get_misses", 10) == 0)
        slot = &t->misses;
    else if (key_length == 9 && memcmp(key, "evictions", 9) == 0)
        slot = &t->evictions;
    if (slot == NULL)
        return MEMCACHED_SUCCESS;
    for (i = 0; i < value_length && value[i] >= '0' && value[i] <= '9'; i++)
        v = v * 10 + (value[i] - '0');
    *slot += v;
    return MEMCACHED_SUCCESS;
}

static int mc_stats(cachy_store *s, cachy_stats *out, cachy_error *err)
{
    mc_state *st = s->impl;
    mc_totals t = { 0, 0, 0, 0, 0 };
    memcached_return_t rc;
    begin_all(st);
    rc = memcached_stat_execute(st->mc, NULL, stat_sum, &t);
    end_attempt(st, rc);
    if (rc != MEMCACHED_SUCCESS)
        return mc_fail(s, st, rc, 0, NULL, err);
    out->items = t.items;
    out->bytes = t.bytes;
    out->hits = t.hits;
    out->misses = t.misses;
    out->evictions = t.evictions;
    return 0;
}

const cachy_store_ops cachy_memcached_ops = {
    .name = "memcached",
    .fields = memcached_fields,
    .open = mc_open,
    .get = mc_get,
    .put = mc_put,
    .add = mc_add,
    .forget = mc_forget,
    .incr = mc_incr,
    .flush = mc_flush,
    .many = mc_many,
    .put_many = mc_put_many,
    .forget_if = mc_forget_if,
    .touch_if = mc_touch_if,
    .stats = mc_stats,
    .close = mc_close,
    .disown = mc_disown,
};

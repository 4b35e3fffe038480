/*
 * store_redis.c: the Redis driver, on hiredis 0.14.
 *
 * hiredis opens the connection (TCP or Unix socket, within connect_timeout),
 * formats every command and parses every reply. The socket I/O in between is
 * done here, because hiredis 0.14 gets three things wrong for a cache that
 * lives inside someone else's process:
 *
 *  - SIGPIPE. hiredis writes with write(), so a server that went away raises
 *    SIGPIPE, whose default action kills the host. Commands are sent here with
 *    send(MSG_NOSIGNAL) instead: a dead peer is the error EPIPE and no signal
 *    is raised at all, so the application's SIGPIPE disposition and signal
 *    mask are never read or changed.
 *  - Timeouts. A fresh hiredis 0.14 context has no read or write timeout
 *    (the connect timeout is not kept), and redisSetTimeout bounds each
 *    read() separately. Here the socket timeouts are set with redisSetTimeout
 *    on every new connection, and each round trip has one deadline: when a
 *    reply needs several reads, the socket timeout is shortened to the time
 *    left, so a server that trickles bytes cannot stretch a call.
 *  - Sizes from the wire. Replies are read by redis_proto.c's reader (the
 *    module the cosocket transport uses too), whose constructors check every
 *    string length and element count against what the command in flight can
 *    return before allocating; bytes buffered for one reply are capped as
 *    well. Commands are formatted there too.
 *
 * Name resolution (getaddrinfo) is not bounded by connect_timeout: give
 * `host` as an address where that matters.
 *
 * A connection that failed, timed out or sent something unreadable is freed
 * at once and never reused: a late reply can never be read as the answer to
 * a later command. The next call connects again (AUTH and SELECT included).
 * An idle connection is checked before each request, so a server that was
 * restarted since the last call costs a reconnect, not an error.
 *
 * A connect that fails (see the breaker below) is not tried again for
 * retry_after seconds: calls in between fail at once with its error, so a
 * dead server costs one connect_timeout per retry_after, not one per call.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis.h>

#include "redis_cluster.h"
#include "redis_proto.h"
#include "store.h"

/* SCAN's COUNT hint for flush, and the most keys one SCAN reply may carry. */
#define SCAN_COUNT "1000"
#define SCAN_MAX_KEYS 100000
#define TEXT_SHOWN 200
#define READ_CHUNK 16384
/* Seconds a failed connect keeps the store from connecting again (as
 * memcached leaves a failed server out for 2 s). */
#define RETRY_AFTER 2.0

typedef struct rconn {
    /* configuration; the strings point into the store's options */
    const char *host, *socket, *username, *password;
    int port;
    long long db;
    double connect_timeout, timeout;       /* seconds */
    int64_t retry_ms;                      /* retry_after; 0: no breaker */

    redisContext *ctx;                     /* NULL while disconnected */
    cachy_resp_reader *reader;             /* one per connection */
    int64_t deadline;                      /* monotonic ms, for the round trip in flight */
    int64_t sock_ms;                       /* timeout the socket has now */

    cachy_buf out;                         /* outgoing pipelined commands */
    cachy_rcluster *cluster;               /* with `cluster`: the nodes (redis_cluster.c) */
    cachy_rsentinel *sentinel;             /* with `sentinel`: where the master is (redis_sentinel.c) */
} rconn;

static const cachy_field redis_fields[] = {
    { "host", CACHY_OPT_STRING, 0 },
    { "port", CACHY_OPT_INTEGER, 0 },
    { "socket", CACHY_OPT_STRING, 0 },
    { "db", CACHY_OPT_INTEGER, 0 },
    { "username", CACHY_OPT_STRING, 0 },
    { "password", CACHY_OPT_STRING, 0 },
    { "connect_timeout", CACHY_OPT_NUMBER, 0 },
    { "timeout", CACHY_OPT_NUMBER, 0 },
    { "retry_after", CACHY_OPT_NUMBER, 0 },
    { "cluster", CACHY_OPT_LIST, 0 },
    /* { master = name, nodes = { "host:port", ... } }: cachy.new passes it
     * here as the list { name, "host:port", ... } */
    { "sentinel", CACHY_OPT_LIST, 0 },
    /* read by lua/cachy/resty/redis.lua inside nginx, ignored here */
    { "transport", CACHY_OPT_STRING, 0 },
    { "pool_size", CACHY_OPT_INTEGER, 0 },
    { "pool_backlog", CACHY_OPT_INTEGER, 0 },
    { "keepalive", CACHY_OPT_NUMBER, 0 },
    { NULL, CACHY_OPT_STRING, 0 },
};

/* ---- text for error messages ------------------------------------------- */

/* A server's error text as a message shows it: at most TEXT_SHOWN bytes,
 * then "..."; bytes outside printable ASCII as \xNN. */
static const char *shown(const char *p, size_t n, char out[TEXT_SHOWN * 4 + 4])
{
    static const char hex[] = "0123456789abcdef";
    size_t i, k = n > TEXT_SHOWN ? TEXT_SHOWN : n;
    char *o = out;
    for (i = 0; i < k; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch < 0x20 || ch > 0x7e) {
            *o++ = '\\';
            *o++ = 'x';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 0xf];
        } else {
            *o++ = (char)ch;
        }
    }
    if (n > k) {
        memcpy(o, "...", 3);
        o += 3;
    }
    *o = '\0';
    return out;
}

/* ---- replies ------------------------------------------------------------ */

/* Moves a string reply's bytes into out without copying them again. */
static void take_string(cachy_buf *out, cachy_resp *r)
{
    free(out->data);
    out->data = r->str;
    out->len = r->len;
    out->cap = r->len + 1;
    r->str = NULL;
}

/* ---- the connection ----------------------------------------------------- */

static void drop(rconn *c)
{
    if (c->ctx)
        redisFree(c->ctx);
    cachy_resp_reader_free(c->reader);
    c->ctx = NULL;
    c->reader = NULL;
}

/* Drops the connection and reports why; returns -1. */
static int io_fail(cachy_store *s, rconn *c, cachy_errcode code, const char *cause,
                   cachy_error *err)
{
    drop(c);
    cachy_error_set(err, s, code, "%s", cause);
    return -1;
}

static int timed_out(cachy_store *s, rconn *c, cachy_error *err)
{
    char t[32], cause[64];
    snprintf(cause, sizeof cause, "timed out after %s s", cachy_format_seconds(c->timeout, t));
    return io_fail(s, c, CACHY_ETIMEOUT, cause, err);
}

static int lost(cachy_store *s, rconn *c, int e, cachy_error *err)
{
    char cause[160];
    snprintf(cause, sizeof cause, "connection lost: %s", strerror(e));
    return io_fail(s, c, CACHY_ECONN, cause, err);
}

static int set_sock_timeout(rconn *c, int64_t ms)
{
    struct timeval tv;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    if (redisSetTimeout(c->ctx, tv) != REDIS_OK)
        return -1;
    c->sock_ms = ms;
    return 0;
}

static int64_t timeout_ms(double secs)
{
    int64_t ms = (int64_t)(secs * 1000.0);
    if ((double)ms < secs * 1000.0)     /* round up: never wait less than asked */
        ms++;
    return ms < 1 ? 1 : ms;
}

/* Before a blocking read or write: 0 with the socket's timeout no longer
 * than what is left of the deadline, -1 when the deadline has passed.
 * Small differences are let go to spare a system call per chunk. */
static int arm(rconn *c)
{
    int64_t left = c->deadline - cachy_monotonic_ms();
    if (left <= 0)
        return -1;
    if (left + 5 < c->sock_ms && set_sock_timeout(c, left) != 0)
        return -1;
    return 0;
}

static int send_all(cachy_store *s, rconn *c, const char *p, size_t n, cachy_error *err)
{
    while (n > 0) {
        ssize_t k;
        if (arm(c) != 0)
            return timed_out(s, c, err);
        k = send(c->ctx->fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return timed_out(s, c, err);
            return lost(s, c, errno, err);
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Reads one reply, within the limits set for the command; *out owned by the caller. */
static int read_reply(cachy_store *s, rconn *c, cachy_resp **out, cachy_error *err)
{
    char buf[READ_CHUNK];
    for (;;) {
        cachy_error why;        /* not err: io_fail formats from it into err */
        ssize_t k;
        int rc = cachy_resp_reader_next(c->reader, out, &why);
        if (rc > 0)
            return 0;
        if (rc < 0)
            return io_fail(s, c, why.code, why.msg, err);
        if (arm(c) != 0)
            return timed_out(s, c, err);
        k = recv(c->ctx->fd, buf, sizeof buf, 0);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return timed_out(s, c, err);
            return lost(s, c, errno, err);
        }
        if (k == 0)
            return io_fail(s, c, CACHY_ECONN, "connection closed by the server", err);
        if (cachy_resp_reader_feed(c->reader, buf, (size_t)k) != 0)
            return io_fail(s, c, CACHY_ENOMEM, "out of memory", err);
    }
}

/* Appends one command to the pipeline. */
static int append_cmd(cachy_store *s, rconn *c, int argc, const char **argv, const size_t *lens,
                      cachy_error *err)
{
    size_t n;
    char *cmd = cachy_resp_command(argc, argv, lens, &n);
    int rc;
    if (cmd == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    rc = cachy_buf_append(&c->out, cmd, n);
    cachy_resp_command_free(cmd);
    if (rc != 0) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    return 0;
}

/* Starts a round trip: the deadline, the full socket timeout, an empty pipeline,
 * and what the replies may contain. */
static int begin(cachy_store *s, rconn *c, int max_depth, size_t max_elems, cachy_error *err)
{
    c->deadline = cachy_monotonic_ms() + timeout_ms(c->timeout);
    c->out.len = 0;
    cachy_resp_reader_limit(c->reader, max_depth, max_elems);
    if (c->sock_ms != timeout_ms(c->timeout) &&
        set_sock_timeout(c, timeout_ms(c->timeout)) != 0)
        return lost(s, c, errno, err);
    return 0;
}

static int flush_out(cachy_store *s, rconn *c, cachy_error *err)
{
    return send_all(s, c, c->out.data, c->out.len, err);
}

static int connect_failed(cachy_store *s, rconn *c, cachy_error *err)
{
    const char *why = c->ctx ? c->ctx->errstr : "out of memory";
    char t[32], cause[200];
    cachy_errcode code = CACHY_EREFUSED;     /* also after a connection, not only at open */
    if (c->ctx == NULL)
        code = CACHY_ENOMEM;
    if (strstr(why, strerror(ECONNREFUSED)))
        snprintf(cause, sizeof cause, "connection refused");
    else if (strstr(why, strerror(ETIMEDOUT))) {
        snprintf(cause, sizeof cause, "connect timed out after %s s",
                 cachy_format_seconds(c->connect_timeout, t));
        code = CACHY_ETIMEOUT;
    } else
        snprintf(cause, sizeof cause, "cannot connect: %s", why);
    return io_fail(s, c, code, cause, err);
}

/* A server error reply during the handshake: fatal for this connection. */
static int handshake_error(cachy_store *s, rconn *c, const char *what, const cachy_resp *r,
                           cachy_error *err)
{
    char text[TEXT_SHOWN * 4 + 4];
    drop(c);
    if (r->type == REDIS_REPLY_ERROR)
        cachy_error_set(err, s, CACHY_EBACKEND, "%s: %s", what,
                        shown(r->str, r->len, text));
    else
        cachy_error_set(err, s, CACHY_EBACKEND, "%s: unexpected reply", what);
    return -1;
}

/* Connects, sets the socket timeouts, then AUTH and SELECT in one round trip. */
static int handshake(cachy_store *s, rconn *c, cachy_error *err)
{
    struct timeval tv;
    int64_t ms = timeout_ms(c->connect_timeout);
    char dbtext[24];
    const char *argv[3];
    size_t lens[3];
    int want_auth = c->password != NULL, want_select = c->db != 0, i, rc = 0;

    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    c->ctx = c->socket ? redisConnectUnixWithTimeout(c->socket, tv)
                       : redisConnectWithTimeout(c->host, c->port, tv);
    if (c->ctx == NULL || c->ctx->err)
        return connect_failed(s, c, err);
    c->reader = cachy_resp_reader_new(0, 0, CACHY_RESP_MAX_BULK);
    if (c->reader == NULL)
        return io_fail(s, c, CACHY_ENOMEM, "out of memory", err);
    c->sock_ms = -1;
    if (begin(s, c, 0, 0, err) != 0)
        return -1;
    if (!want_auth && !want_select)
        return 0;

    if (want_auth) {
        i = 0;
        argv[i] = "AUTH", lens[i++] = 4;
        if (c->username)
            argv[i] = c->username, lens[i] = strlen(c->username), i++;
        argv[i] = c->password, lens[i] = strlen(c->password), i++;
        if (append_cmd(s, c, i, argv, lens, err) != 0)
            return io_fail(s, c, err->code, "out of memory", err);
    }
    if (want_select) {
        argv[0] = "SELECT", lens[0] = 6;
        argv[1] = dbtext, lens[1] = cachy_format_int(c->db, dbtext);
        if (append_cmd(s, c, 2, argv, lens, err) != 0)
            return io_fail(s, c, err->code, "out of memory", err);
    }
    if (flush_out(s, c, err) != 0)
        return -1;
    /* any failure here drops the connection, so no reply is left behind */
    for (i = 0; i < want_auth + want_select; i++) {
        cachy_resp *r;
        int is_auth = want_auth && i == 0;
        if (read_reply(s, c, &r, err) != 0)
            return -1;
        if (rc == 0 && r->type != REDIS_REPLY_STATUS) {
            char what[64];
            if (is_auth)
                snprintf(what, sizeof what, "authentication failed");
            else
                snprintf(what, sizeof what, "cannot select database %lld", c->db);
            handshake_error(s, c, what, r, err);
            rc = -1;
        }
        cachy_resp_free(r);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ---- the breaker -------------------------------------------------------- */

/*
 * After a failed connect the store does not connect again for retry_after
 * seconds; calls in between fail at once with that connect's error (message
 * and code). "Failed connect" is any failure to get a usable connection that
 * the manager treats as a connection failure: refused, no such socket,
 * connect_timeout passed, or the AUTH/SELECT round trip timing out or
 * breaking. Not: the server answering AUTH or SELECT with an error (it is
 * up, and says so at once), nor a failure of a command on a connection that
 * was established, which is dropped and followed by a fresh connect on the
 * next call as before (a slow command is not a dead server; if that connect
 * fails, the breaker trips then).
 *
 * The manager closes the store (freeing its rconn) after every connection
 * failure, so the breaker lives in the store's `kept` slot, which outlasts
 * closing and is freed with the store. It records the process that failed:
 * a forked child's copy does not hold the child back, it connects for
 * itself.
 */
typedef struct breaker {
    pid_t pid;                  /* the process whose connect failed */
    int64_t retry_at;           /* monotonic ms: no connect before this */
    cachy_error last;           /* what the failed connect returned */
} breaker;

/* The store's breaker; with create, made when it has none (NULL: no memory). */
static breaker *breaker_of(cachy_store *s, int create)
{
    if (s->kept == NULL && create)
        s->kept = calloc(1, sizeof(breaker));
    return s->kept;
}

/* Connects, unless a connect failed less than retry_after ago. Only called
 * to (re)connect, never on a call that has its connection. */
static int conn_open(cachy_store *s, rconn *c, cachy_error *err)
{
    breaker *b = breaker_of(s, 0);
    if (b && b->retry_at > cachy_monotonic_ms() && b->pid == getpid()) {
        *err = b->last;
        return -1;
    }
    if ((c->sentinel ? cachy_rsentinel_connect(s, c, c->sentinel, err) : handshake(s, c, err)) == 0)
        return 0;
    if (c->retry_ms > 0 && (err->code == CACHY_EREFUSED || err->code == CACHY_ECONN ||
                            err->code == CACHY_ETIMEOUT) &&
        (b != NULL || (b = breaker_of(s, 1)) != NULL)) {
        b->pid = getpid();
        b->retry_at = cachy_monotonic_ms() + c->retry_ms;
        b->last = *err;
    }
    return -1;
}

/* Gives an idle connection to the caller, or connects anew. A connection the
 * server closed (restart, idle timeout) or that holds unexpected bytes is
 * dropped here rather than failing the request. */
static int ready(cachy_store *s, rconn *c, int max_depth, size_t max_elems, cachy_error *err)
{
    if (c->ctx) {
        /* Bytes nobody asked for, in the socket or already in the reader
         * (a server or proxy that sent more replies than commands), would
         * be taken as the answer to this command: start afresh instead. */
        char probe;
        ssize_t k = recv(c->ctx->fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT);
        if (!(k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) ||
            cachy_resp_reader_buffered(c->reader) > 0)
            drop(c);
    }
    if (c->ctx == NULL && conn_open(s, c, err) != 0)
        return -1;
    return begin(s, c, max_depth, max_elems, err);
}

/* One command, one reply, on the connection c. */
static int call_on(cachy_store *s, rconn *c, int argc, const char **argv, const size_t *lens,
                   int max_depth, size_t max_elems, cachy_resp **out, cachy_error *err)
{
    if (ready(s, c, max_depth, max_elems, err) != 0)
        return -1;
    if (append_cmd(s, c, argc, argv, lens, err) != 0 || flush_out(s, c, err) != 0)
        return -1;
    return read_reply(s, c, out, err);
}

/* One command, one reply. On a cluster the command goes to the node of
 * its key: argv[1], or argv[3] for EVAL (redis_cluster.c). */
static int call(cachy_store *s, int argc, const char **argv, const size_t *lens, int max_depth,
                size_t max_elems, cachy_resp **out, cachy_error *err)
{
    rconn *c = s->impl;
    if (c->cluster)
        return cachy_rcluster_call(s, c->cluster, argc, argv, lens, max_depth, max_elems, out, err);
    return call_on(s, c, argc, argv, lens, max_depth, max_elems, out, err);
}

/* A reply the command does not give when it works. The stream is still in
 * step (one reply per command), so the connection stays. */
static int bad_reply(cachy_store *s, const char *cmd, const cachy_resp *r, cachy_error *err)
{
    char text[TEXT_SHOWN * 4 + 4];
    rconn *c = s->impl;
    /* a master that became a replica: the next call asks the sentinels again */
    if (c && c->sentinel && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "READONLY", 8) == 0)
        drop(c);
    if (r->type == REDIS_REPLY_ERROR)
        cachy_error_set(err, s, CACHY_EBACKEND, "%s", shown(r->str, r->len, text));
    else
        cachy_error_set(err, s, CACHY_EBACKEND, "unexpected reply type %d to %s", r->type, cmd);
    return -1;
}

static int is_ok(const cachy_resp *r)
{
    return r->type == REDIS_REPLY_STATUS && r->len == 2 && memcmp(r->str, "OK", 2) == 0;
}

static int too_big(cachy_store *s, cachy_slice val, cachy_error *err)
{
    if (val.len <= CACHY_RESP_MAX_BULK)
        return 0;
    cachy_error_set(err, s, CACHY_ETOOBIG, "value of %zu bytes is larger than Redis accepts (%zu)",
                    val.len, CACHY_RESP_MAX_BULK);
    return -1;
}

/* ---- the driver --------------------------------------------------------- */

static int bad_option(cachy_store *s, const char *name, const char *must, cachy_error *err)
{
    cachy_error_set(err, s, CACHY_EMISUSE, "field '%s' must be %s", name, must);
    return -1;
}

static int read_options(cachy_store *s, rconn *c, cachy_error *err)
{
    const cachy_options *o = &s->opts;
    double port = cachy_opt_number(o, "port", 6379), db = cachy_opt_number(o, "db", 0);
    double retry_after;
    c->host = cachy_opt_string(o, "host", "127.0.0.1");
    c->socket = cachy_opt_string(o, "socket", NULL);
    c->username = cachy_opt_string(o, "username", NULL);
    c->password = cachy_opt_string(o, "password", NULL);
    c->connect_timeout = cachy_opt_number(o, "connect_timeout", 1.0);
    c->timeout = cachy_opt_number(o, "timeout", 1.0);
    retry_after = cachy_opt_number(o, "retry_after", RETRY_AFTER);
    if (cachy_opt_find(o, "cluster")) {
        snprintf(s->address, sizeof s->address, "cluster");
        if (cachy_rcluster_options(s, err) != 0)
            return -1;
    } else if (cachy_opt_find(o, "sentinel")) {
        if (cachy_rsentinel_options(s, &c->sentinel, err) != 0)
            return -1;
    } else if (c->socket)
        snprintf(s->address, sizeof s->address, "%s", c->socket);
    else if (strchr(c->host, ':'))
        snprintf(s->address, sizeof s->address, "[%s]:%.0f", c->host, port);
    else
        snprintf(s->address, sizeof s->address, "%s:%.0f", c->host, port);
    if (!(port >= 1 && port <= 65535 && port == (double)(int)port))
        return bad_option(s, "port", "an integer from 1 to 65535", err);
    if (!(db >= 0 && db <= INT_MAX && db == (double)(int)db))
        return bad_option(s, "db", "an integer from 0", err);
    if (!(c->connect_timeout > 0 && c->connect_timeout <= 86400))
        return bad_option(s, "connect_timeout", "a number of seconds above 0, at most 86400", err);
    if (!(c->timeout > 0 && c->timeout <= 86400))
        return bad_option(s, "timeout", "a number of seconds above 0, at most 86400", err);
    if (!(retry_after >= 0 && retry_after <= 86400))
        return bad_option(s, "retry_after", "a number of seconds from 0, at most 86400", err);
    if (c->username && !c->password)
        return bad_option(s, "password", "set when 'username' is", err);
    c->port = (int)port;
    c->db = (long long)db;
    c->retry_ms = retry_after > 0 ? timeout_ms(retry_after) : 0;
    return 0;
}

static void redis_close(cachy_store *s)
{
    rconn *c = s->impl;
    if (c == NULL)
        return;
    cachy_rcluster_free(c->cluster);
    cachy_rsentinel_free(c->sentinel);
    drop(c);
    cachy_buf_free(&c->out);
    free(c);
    s->impl = NULL;
}

static int redis_open(cachy_store *s, cachy_error *err)
{
    rconn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    s->impl = c;
    if (read_options(s, c, err) != 0 ||
        (cachy_opt_find(&s->opts, "cluster") ? cachy_rcluster_open(s, &c->cluster, err)
                                              : conn_open(s, c, err)) != 0) {
        redis_close(s);
        return -1;
    }
    return 0;
}

static int redis_get(cachy_store *s, cachy_slice key, cachy_buf *out, cachy_error *err)
{
    const char *argv[2] = { "GET", key.ptr };
    size_t lens[2] = { 3, key.len };
    cachy_resp *r;
    int rc;
    if (call(s, 2, argv, lens, 0, 0, &r, err) != 0)
        return -1;
    if (r->type == REDIS_REPLY_STRING) {
        take_string(out, r);
        rc = 1;
    } else if (r->type == REDIS_REPLY_NIL) {
        rc = 0;
    } else {
        rc = bad_reply(s, "GET", r, err);
    }
    cachy_resp_free(r);
    return rc;
}

/* SET key val [NX] [PX ms]: the arguments, returned as argc. */
static int set_args(cachy_slice key, cachy_slice val, int64_t ttl_ms, int nx, char ms[24],
                    const char *argv[6], size_t lens[6])
{
    int n = 0;
    argv[n] = "SET", lens[n++] = 3;
    argv[n] = key.ptr, lens[n++] = key.len;
    argv[n] = val.ptr, lens[n++] = val.len;
    if (nx)
        argv[n] = "NX", lens[n++] = 2;
    if (ttl_ms > 0) {
        argv[n] = "PX", lens[n++] = 2;
        argv[n] = ms, lens[n++] = cachy_format_int(ttl_ms, ms);
    }
    return n;
}

/* Sends SET (with NX when nx); *r is the reply, to be freed, when it returns 0. */
static int send_set(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms, int nx,
                    cachy_resp **r, cachy_error *err)
{
    const char *argv[6];
    size_t lens[6];
    char ms[24];
    int argc = set_args(key, val, ttl_ms, nx, ms, argv, lens);
    if (too_big(s, val, err) != 0 || call(s, argc, argv, lens, 0, 0, r, err) != 0)
        return -1;
    return 0;
}

static int redis_put(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                     cachy_error *err)
{
    cachy_resp *r;
    int rc;
    if (send_set(s, key, val, ttl_ms, 0, &r, err) != 0)
        return -1;
    rc = is_ok(r) ? 0 : bad_reply(s, "SET", r, err);
    cachy_resp_free(r);
    return rc;
}

static int redis_add(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                     cachy_error *err)
{
    cachy_resp *r;
    int rc;
    if (send_set(s, key, val, ttl_ms, 1, &r, err) != 0)
        return -1;
    if (is_ok(r))
        rc = 1;
    else if (r->type == REDIS_REPLY_NIL)    /* NX: the key was there */
        rc = 0;
    else
        rc = bad_reply(s, "SET", r, err);
    cachy_resp_free(r);
    return rc;
}

static int redis_forget(cachy_store *s, cachy_slice key, cachy_error *err)
{
    const char *argv[2] = { "DEL", key.ptr };
    size_t lens[2] = { 3, key.len };
    cachy_resp *r;
    int rc;
    if (call(s, 2, argv, lens, 0, 0, &r, err) != 0)
        return -1;
    rc = r->type == REDIS_REPLY_INTEGER ? r->integer > 0 : bad_reply(s, "DEL", r, err);
    cachy_resp_free(r);
    return rc;
}

/* PTTL: -2 missing, -1 no expiry. */
static int redis_ttl(cachy_store *s, cachy_slice key, int64_t *ms_left, cachy_error *err)
{
    const char *argv[2] = { "PTTL", key.ptr };
    size_t lens[2] = { 4, key.len };
    cachy_resp *r;
    int rc = 1;
    if (call(s, 2, argv, lens, 0, 0, &r, err) != 0)
        return -1;
    if (r->type != REDIS_REPLY_INTEGER)
        rc = bad_reply(s, "PTTL", r, err);
    else if (r->integer == -2)
        rc = 0;
    else
        *ms_left = r->integer < 0 ? 0 : r->integer > 0 ? r->integer : 1;
    cachy_resp_free(r);
    return rc;
}

static int error_is(const cachy_resp *r, const char *text)
{
    return r->type == REDIS_REPLY_ERROR && strstr(r->str, text) != NULL;
}

/* INCRBY/DECRBY keep the key's expiry; a missing key starts at 0 with none. */
static int redis_incr(cachy_store *s, cachy_slice key, int64_t by, int64_t *result,
                      cachy_error *err)
{
    const char *argv[3];
    size_t lens[3];
    char num[24], k[80];
    cachy_resp *r;
    int rc = 0;
    if (by < 0 && by != INT64_MIN)
        argv[0] = "DECRBY", lens[0] = 6, lens[2] = cachy_format_int(-by, num);
    else
        argv[0] = "INCRBY", lens[0] = 6, lens[2] = cachy_format_int(by, num);
    argv[1] = key.ptr, lens[1] = key.len;
    argv[2] = num;
    if (call(s, 3, argv, lens, 0, 0, &r, err) != 0)
        return -1;
    if (r->type == REDIS_REPLY_INTEGER) {
        *result = r->integer;
    } else if (error_is(r, "not an integer")) {
        cachy_quote_key(key, k, sizeof k);
        cachy_error_set(err, s, CACHY_ENOTINT, "value of key '%s' is not an integer", k);
        rc = -1;
    } else if (error_is(r, "overflow")) {
        cachy_quote_key(key, k, sizeof k);
        cachy_error_set(err, s, CACHY_ERANGE, "increment of key '%s' overflows 64 bits", k);
        rc = -1;
    } else {
        rc = bad_reply(s, argv[0], r, err);
    }
    cachy_resp_free(r);
    return rc;
}

/* forget_if and touch_if: one EVAL (redis_proto.c), whose reply is 1 or 0. */
static int lock_script(cachy_store *s, int which, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                       cachy_error *err)
{
    const char *argv[6];
    size_t lens[6];
    char ms[24];
    int argc = cachy_resp_lock_argv(which, key, val, ttl_ms, ms, argv, lens), rc;
    cachy_resp *r;
    if (too_big(s, val, err) != 0 || call(s, argc, argv, lens, 0, 0, &r, err) != 0)
        return -1;
    rc = r->type == REDIS_REPLY_INTEGER ? r->integer == 1 : bad_reply(s, "EVAL", r, err);
    cachy_resp_free(r);
    return rc;
}

static int redis_forget_if(cachy_store *s, cachy_slice key, cachy_slice val, cachy_error *err)
{
    return lock_script(s, CACHY_RESP_FORGET_IF, key, val, 0, err);
}

static int redis_touch_if(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                          cachy_error *err)
{
    return lock_script(s, CACHY_RESP_TOUCH_IF, key, val, ttl_ms, err);
}

/* The prefix as a SCAN MATCH pattern: glob characters escaped, then "*". */
static int match_pattern(cachy_slice prefix, cachy_buf *pat)
{
    size_t i;
    pat->len = 0;
    for (i = 0; i < prefix.len; i++) {
        char ch = prefix.ptr[i];
        if ((ch == '*' || ch == '?' || ch == '[' || ch == ']' || ch == '\\') &&
            cachy_buf_append(pat, "\\", 1) != 0)
            return -1;
        if (cachy_buf_append(pat, &ch, 1) != 0)
            return -1;
    }
    return cachy_buf_append(pat, "*", 1);
}

/* UNLINK the keys of one SCAN batch that really carry the prefix. */
static int unlink_batch(cachy_store *s, cachy_slice prefix, const cachy_resp *keys,
                        cachy_error *err)
{
    const char **argv;
    size_t *lens, i;
    int argc = 1, rc = 0;
    cachy_resp *r;
    if (keys->n == 0)
        return 0;
    argv = malloc((keys->n + 1) * (sizeof *argv + sizeof *lens));
    if (argv == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    lens = (size_t *)(argv + keys->n + 1);
    argv[0] = "UNLINK", lens[0] = 6;
    for (i = 0; i < keys->n; i++) {
        const cachy_resp *k = keys->elem[i];
        if (k->type != REDIS_REPLY_STRING) {
            rc = bad_reply(s, "SCAN", k, err);
            break;
        }
        if (k->len >= prefix.len && memcmp(k->str, prefix.ptr, prefix.len) == 0)
            argv[argc] = k->str, lens[argc++] = k->len;
    }
    if (rc == 0 && argc > 1 && ((rconn *)s->impl)->cluster) {
        /* keys of other slots cannot share one UNLINK on a cluster */
        rc = cachy_rcluster_unlink(s, ((rconn *)s->impl)->cluster, (size_t)argc - 1, argv + 1,
                                   lens + 1, err);
    } else if (rc == 0 && argc > 1) {
        rc = call(s, argc, argv, lens, 0, 0, &r, err);
        if (rc == 0) {
            if (r->type != REDIS_REPLY_INTEGER)
                rc = bad_reply(s, "UNLINK", r, err);
            cachy_resp_free(r);
        }
    }
    free(argv);
    return rc;
}

static int scan_flush(cachy_store *s, rconn *c, cachy_slice prefix, cachy_error *err)
{
    cachy_buf pat = { 0 };
    char cursor[24] = "0";
    int rc = 0;
    if (match_pattern(prefix, &pat) != 0) {
        cachy_buf_free(&pat);
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    do {
        const char *argv[6] = { "SCAN", cursor, "MATCH", pat.data, "COUNT", SCAN_COUNT };
        size_t lens[6] = { 4, strlen(cursor), 5, pat.len, 5, strlen(SCAN_COUNT) };
        cachy_resp *r;
        if (call_on(s, c, 6, argv, lens, 2, SCAN_MAX_KEYS, &r, err) != 0) {
            rc = -1;
            break;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->n != 2 ||
            r->elem[0]->type != REDIS_REPLY_STRING || r->elem[0]->len >= sizeof cursor ||
            r->elem[1]->type != REDIS_REPLY_ARRAY) {
            rc = bad_reply(s, "SCAN", r, err);
        } else {
            memcpy(cursor, r->elem[0]->str, r->elem[0]->len + 1);
            rc = unlink_batch(s, prefix, r->elem[1], err);
        }
        cachy_resp_free(r);
    } while (rc == 0 && strcmp(cursor, "0") != 0);
    cachy_buf_free(&pat);
    return rc;
}

/* Flushes the server of connection c. */
static int flush_on(cachy_store *s, rconn *c, cachy_slice prefix, cachy_error *err)
{
    const char *argv[1] = { "FLUSHDB" };
    size_t lens[1] = { 7 };
    cachy_resp *r;
    int rc;
    if (prefix.len > 0)
        return scan_flush(s, c, prefix, err);
    if (call_on(s, c, 1, argv, lens, 0, 0, &r, err) != 0)
        return -1;
    rc = is_ok(r) ? 0 : bad_reply(s, "FLUSHDB", r, err);
    cachy_resp_free(r);
    return rc;
}

/* On a cluster, every master is flushed. */
static int redis_flush(cachy_store *s, cachy_slice prefix, cachy_error *err)
{
    rconn *c = s->impl;
    if (c->cluster)
        return cachy_rcluster_flush(s, c->cluster, prefix, err);
    return flush_on(s, c, prefix, err);
}

/* One MGET for every key. */
static int redis_many(cachy_store *s, const cachy_slice *keys, size_t n, cachy_buf *outs,
                      int *found, cachy_error *err)
{
    const char **argv;
    size_t *lens, i;
    cachy_resp *r;
    int rc = 0;
    if (((rconn *)s->impl)->cluster)
        return cachy_rcluster_many(s, ((rconn *)s->impl)->cluster, keys, n, outs, found, err);
    if (n >= INT_MAX) {
        cachy_error_set(err, s, CACHY_EMISUSE, "too many keys for one request: %zu", n);
        return -1;
    }
    argv = malloc((n + 1) * (sizeof *argv + sizeof *lens));
    if (argv == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    lens = (size_t *)(argv + n + 1);
    argv[0] = "MGET", lens[0] = 4;
    for (i = 0; i < n; i++)
        argv[i + 1] = keys[i].ptr, lens[i + 1] = keys[i].len;
    rc = call(s, (int)n + 1, argv, lens, 1, n, &r, err);
    free(argv);
    if (rc != 0)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY || r->n != n) {
        rc = bad_reply(s, "MGET", r, err);
    } else {
        for (i = 0; i < n && rc == 0; i++) {
            cachy_resp *e = r->elem[i];
            found[i] = e->type == REDIS_REPLY_STRING;
            if (found[i])
                take_string(&outs[i], e);
            else if (e->type != REDIS_REPLY_NIL)
                rc = bad_reply(s, "MGET", e, err);
        }
    }
    cachy_resp_free(r);
    return rc;
}

/* Every SET in one pipelined round trip; every reply is read, even after an
 * error reply, so that none is left to be taken for a later answer. */
static int redis_put_many(cachy_store *s, const cachy_slice *keys, const cachy_slice *vals,
                          size_t n, int64_t ttl_ms, cachy_error *err)
{
    rconn *c = s->impl;
    const char *argv[6];
    size_t lens[6], i;
    char ms[24];
    int rc = 0;
    for (i = 0; i < n; i++)
        if (too_big(s, vals[i], err) != 0)
            return -1;
    if (c->cluster)
        return cachy_rcluster_put_many(s, c->cluster, keys, vals, n, ttl_ms, err);
    if (ready(s, c, 0, 0, err) != 0)
        return -1;
    for (i = 0; i < n; i++) {
        int argc = set_args(keys[i], vals[i], ttl_ms, 0, ms, argv, lens);
        if (append_cmd(s, c, argc, argv, lens, err) != 0)
            return -1;
    }
    if (flush_out(s, c, err) != 0)
        return -1;
    for (i = 0; i < n; i++) {
        cachy_resp *r;
        if (read_reply(s, c, &r, err) != 0)
            return -1;
        if (rc == 0 && !is_ok(r))
            rc = bad_reply(s, "SET", r, err);
        cachy_resp_free(r);
    }
    return rc;
}

/* ---- one node's connection, for redis_cluster.c ------------------------ */

struct rconn *cachy_rconn_new(cachy_store *s, const char *host, int port)
{
    rconn *c = calloc(1, sizeof *c), *like = s->impl;
    if (c == NULL)
        return NULL;
    *c = *like;
    c->host = host;
    c->port = port;
    c->socket = NULL;
    c->retry_ms = 0;            /* the cluster decides when a node is tried again */
    c->ctx = NULL;
    c->reader = NULL;
    c->cluster = NULL;
    c->sentinel = NULL;
    memset(&c->out, 0, sizeof c->out);
    return c;
}

/* To a sentinel: no AUTH or SELECT (those are the data nodes'). */
struct rconn *cachy_rconn_new_plain(cachy_store *s, const char *host, int port)
{
    rconn *c = cachy_rconn_new(s, host, port);
    if (c)
        c->username = c->password = NULL, c->db = 0;
    return c;
}

void cachy_rconn_set_address(struct rconn *c, const char *host, int port)
{
    c->host = host;
    c->port = port;
}

int cachy_rconn_handshake(cachy_store *s, struct rconn *c, cachy_error *err)
{
    return handshake(s, c, err);
}

void cachy_rconn_free(struct rconn *c)
{
    if (c == NULL)
        return;
    drop(c);
    cachy_buf_free(&c->out);
    free(c);
}

void cachy_rconn_drop(struct rconn *c) { drop(c); }

int cachy_rconn_ready(cachy_store *s, struct rconn *c, int max_depth, size_t max_elems,
                      cachy_error *err)
{
    return ready(s, c, max_depth, max_elems, err);
}

int cachy_rconn_append(cachy_store *s, struct rconn *c, int argc, const char **argv,
                       const size_t *lens, cachy_error *err)
{
    return append_cmd(s, c, argc, argv, lens, err);
}

int cachy_rconn_send(cachy_store *s, struct rconn *c, cachy_error *err)
{
    return flush_out(s, c, err);
}

int cachy_rconn_read(cachy_store *s, struct rconn *c, cachy_resp **out, cachy_error *err)
{
    return read_reply(s, c, out, err);
}

int cachy_rconn_bad_reply(cachy_store *s, const char *cmd, const cachy_resp *r, cachy_error *err)
{
    return bad_reply(s, cmd, r, err);
}

int cachy_rconn_call(cachy_store *s, struct rconn *c, int argc, const char **argv,
                     const size_t *lens, int max_depth, size_t max_elems, cachy_resp **out,
                     cachy_error *err)
{
    return call_on(s, c, argc, argv, lens, max_depth, max_elems, out, err);
}

int cachy_rconn_flush(cachy_store *s, struct rconn *c, cachy_slice prefix, cachy_error *err)
{
    return flush_on(s, c, prefix, err);
}

int cachy_rconn_set_args(cachy_slice key, cachy_slice val, int64_t ttl_ms, char ms[24],
                         const char *argv[6], size_t lens[6])
{
    return set_args(key, val, ttl_ms, 0, ms, argv, lens);
}

void cachy_rconn_take_string(cachy_buf *out, cachy_resp *r) { take_string(out, r); }

const cachy_store_ops cachy_redis_ops = {
    .name = "redis",
    .fields = redis_fields,
    .open = redis_open,
    .get = redis_get,
    .put = redis_put,
    .add = redis_add,
    .forget = redis_forget,
    .incr = redis_incr,
    .flush = redis_flush,
    .many = redis_many,
    .put_many = redis_put_many,
    .ttl = redis_ttl,
    .forget_if = redis_forget_if,
    .touch_if = redis_touch_if,
    .close = redis_close,
    .disown = redis_close,      /* hiredis only closes the descriptor */
};

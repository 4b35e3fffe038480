/*
 * fuzz_redis_reply.c: libFuzzer harness for the Redis driver's reply
 * handling (csrc/store_redis.c, included here so that its static functions
 * and its calls into the socket layer can be reached without changing it).
 *
 * The driver's own operations run unchanged; only the network is replaced.
 * The names recv, send and hiredis's two connect functions are redefined
 * for the included file: a connection is a real redisContext over one end
 * of a socketpair (so that setsockopt works), commands are swallowed, and
 * every read is served from the fuzz input. So the replies go through
 * hiredis's reader with redis_proto.c's reply constructors and the limits
 * the driver sets for each command, then through each operation's reading
 * of them, exactly as from a server.
 *
 * Input: byte 0 picks the configuration (bit 0: a password, so AUTH runs
 * first; bit 1: db 3, so SELECT does), then a series of records:
 *   an operation byte: get, put, add, forget, increment (by +1, -1,
 *     INT64_MIN), flush with and without prefix, many, put_many
 *   then, for each read the driver makes, one length byte and that many
 *   reply bytes (0: the server closed the connection; 255: the read times
 *   out; 254: the connection is reset). The idle check before a request reads a byte too: 0 means the
 *   server closed the connection while idle.
 * When the input runs out, every read sees a closed connection.
 *
 * Checked after every operation: its return value is one the vtable
 * allows; an error names the store and has a code; a connection that
 * failed or sent something unreadable has been dropped; a value read is
 * NUL-terminated; with CACHY_FUZZ_STRICT_REPLIES=1, no bytes beyond the
 * replies stay buffered for the next command. ASan and UBSan check the
 * rest; leaks are reported at exit.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis.h>

#include "store.h"

typedef struct fz_stream {
    const uint8_t *p;
    size_t n;
} fz_stream;

static fz_stream fz_in;
static int fz_pair[2] = { -1, -1 };
static int fz_connect_fails;
static int fz_strict;

static int fz_byte(int *out)
{
    if (fz_in.n == 0)
        return 0;
    *out = *fz_in.p++;
    fz_in.n--;
    return 1;
}

static ssize_t fz_recv(int fd, void *buf, size_t n, int flags)
{
    int len;
    (void)fd;
    if (flags & MSG_PEEK) {
        /* The idle check: nothing pending, unless the input says closed. */
        if (fz_byte(&len) && len == 0)
            return 0;
        errno = EAGAIN;
        return -1;
    }
    if (!fz_byte(&len) || len == 0)
        return 0;
    if (len == 255 || len == 254) {
        errno = len == 255 ? EAGAIN : ECONNRESET;
        return -1;
    }
    if ((size_t)len > fz_in.n)
        len = (int)fz_in.n;
    if ((size_t)len > n)
        len = (int)n;
    memcpy(buf, fz_in.p, (size_t)len);
    fz_in.p += len;
    fz_in.n -= (size_t)len;
    return len;
}

static ssize_t fz_send(int fd, const void *buf, size_t n, int flags)
{
    (void)fd;
    (void)buf;
    (void)flags;
    return (ssize_t)n;
}

static redisContext *fz_connect(void)
{
    redisContext *ctx;
    int fd = dup(fz_pair[0]);
    if (fd < 0)
        return NULL;
    ctx = redisConnectFd(fd);
    if (ctx != NULL && fz_connect_fails) {
        ctx->err = REDIS_ERR_IO;
        snprintf(ctx->errstr, sizeof ctx->errstr, "%s", strerror(ECONNREFUSED));
    }
    return ctx;
}

#define recv fz_recv
#define send fz_send
#define redisConnectWithTimeout(host, port, tv) ((void)(host), (void)(port), (void)(tv), fz_connect())
#define redisConnectUnixWithTimeout(path, tv) ((void)(path), (void)(tv), fz_connect())
#include "../csrc/store_redis.c"
#undef recv
#undef send

static const char fz_prefix[] = "store 'fuzz' (redis 127.0.0.1:6379): ";

static void fz_fail(const char *what, const cachy_error *err)
{
    fprintf(stderr, "fuzz_redis_reply: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *strict = getenv("CACHY_FUZZ_STRICT_REPLIES");
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fz_pair) != 0)
        fz_fail("socketpair failed", NULL);
    fz_strict = strict != NULL && strcmp(strict, "1") == 0;
    return 0;
}

/* After an operation that returned rc (-1 error, else its result). */
static void fz_check(cachy_store *s, int rc, int lo, int hi, const cachy_error *err)
{
    rconn *c = s->impl;
    if (rc == -1) {
        /* The cause may be empty only as the server's own empty error text. */
        if (strncmp(err->msg, fz_prefix, sizeof fz_prefix - 1) != 0 ||
            (err->msg[sizeof fz_prefix - 1] == '\0' && err->code != CACHY_EBACKEND))
            fz_fail("an error that does not name the store or has no cause", err);
        if (err->code == CACHY_OK || err->code == CACHY_EMISUSE)
            fz_fail("an error with a code that cannot come from a reply", err);
        /* Only a well-formed reply of the wrong kind keeps the connection. */
        if (c != NULL && err->code != CACHY_EBACKEND && err->code != CACHY_ENOTINT &&
            err->code != CACHY_ERANGE && c->ctx != NULL)
            fz_fail("a connection that failed was kept", err);
        return;
    }
    if (rc < lo || rc > hi)
        fz_fail("a result the vtable does not allow", NULL);
    /* Bytes beyond the replies asked for stay in the reader after this
     * operation; the driver's ready() drops such a connection before its
     * next command, so they are never read as its answer. With
     * CACHY_FUZZ_STRICT_REPLIES=1 their mere presence fails (fuzz/README.md). */
    if (fz_strict && c->ctx != NULL && cachy_resp_reader_buffered(c->reader) > 0)
        fz_fail("bytes beyond the replies are kept for the next command", NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int64_t steps[3] = { 1, -1, INT64_MIN };
    cachy_store s;
    cachy_error err;
    cachy_buf out = { 0 };
    int cfg, op;

    if (size < 1)
        return 0;
    fz_in.p = data;
    fz_in.n = size;
    fz_byte(&cfg);
    memset(&s, 0, sizeof s);
    s.name = "fuzz";
    s.driver = "redis";
    s.prefix = "";
    if ((cfg & 1) && cachy_options_add_string(&s.opts, "password", "secret") != 0)
        return 0;
    if ((cfg & 2) && cachy_options_add_number(&s.opts, "db", CACHY_OPT_INTEGER, 3) != 0)
        return 0;
    fz_connect_fails = (cfg & 4) != 0;

    if (redis_open(&s, &err) != 0) {
        fz_check(&s, -1, 0, 0, &err);   /* s.impl is NULL */
        free(s.kept);                   /* the breaker, as the manager frees it */
        cachy_options_free(&s.opts);
        return 0;
    }
    fz_connect_fails = 0;

    while (fz_byte(&op)) {
        cachy_slice k = { "k", 1 }, v = { "value", 5 };
        int rc;
        memset(&err, 0, sizeof err);
        switch (op % 10) {
        case 0:
            rc = redis_get(&s, k, &out, &err);
            fz_check(&s, rc, 0, 1, &err);
            if (rc == 1 && (out.data == NULL || out.data[out.len] != '\0'))
                fz_fail("a value read is not NUL-terminated", NULL);
            break;
        case 1:
            rc = redis_put(&s, k, v, op & 16 ? 1500 : 0, &err);
            fz_check(&s, rc, 0, 0, &err);
            break;
        case 2:
            rc = redis_add(&s, k, v, 0, &err);
            fz_check(&s, rc, 0, 1, &err);
            break;
        case 3:
            rc = redis_forget(&s, k, &err);
            fz_check(&s, rc, 0, 1, &err);
            break;
        case 4: {
            int64_t result;
            rc = redis_incr(&s, k, steps[(op / 10) % 3], &result, &err);
            fz_check(&s, rc, 0, 0, &err);
            break;
        }
        case 5:
            rc = redis_flush(&s, (cachy_slice){ "app:*", 5 }, &err);
            fz_check(&s, rc, 0, 0, &err);
            break;
        case 6:
            rc = redis_flush(&s, (cachy_slice){ "", 0 }, &err);
            fz_check(&s, rc, 0, 0, &err);
            break;
        case 7: {
            cachy_slice keys[3] = { { "a", 1 }, { "b", 1 }, { "c", 1 } };
            cachy_buf outs[3] = { { 0 }, { 0 }, { 0 } };
            int found[3] = { 0, 0, 0 }, i;
            rc = redis_many(&s, keys, 3, outs, found, &err);
            fz_check(&s, rc, 0, 0, &err);
            for (i = 0; i < 3; i++) {
                if (rc == 0 && found[i] && outs[i].data[outs[i].len] != '\0')
                    fz_fail("a value read is not NUL-terminated", NULL);
                cachy_buf_free(&outs[i]);
            }
            break;
        }
        case 8: {
            cachy_slice keys[2] = { { "a", 1 }, { "b", 1 } }, vals[2] = { { "1", 1 }, { "2", 1 } };
            rc = redis_put_many(&s, keys, vals, 2, 0, &err);
            fz_check(&s, rc, 0, 0, &err);
            break;
        }
        default:
            /* What the manager does after a connection failure. */
            redis_close(&s);
            if (redis_open(&s, &err) != 0) {
                fz_check(&s, -1, 0, 0, &err);
                goto done;
            }
            break;
        }
    }
    redis_close(&s);
done:
    free(s.kept);
    cachy_buf_free(&out);
    cachy_options_free(&s.opts);
    return 0;
}

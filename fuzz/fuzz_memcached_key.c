/*
 * fuzz_memcached_key.c: libFuzzer harness for what the memcached driver
 * (csrc/store_memcached.c, included here so that its static functions are
 * reachable, and the memcached_wire.c it calls) computes from bytes without a server: the mapping of keys to
 * memcached's wire keys, the reading of counters, and lifetimes.
 *
 * Byte 0 picks the part; the rest is its input.
 *   0-127 keys: up to 8 keys, each a length byte (below 200: that many
 *         bytes; from 200: 200 + 16 * (byte - 200), up to 1080) and its
 *         bytes. Every wire key must be 1..250 bytes of printable non-space
 *         ASCII; a key memcached can carry as it is stays as it is; two
 *         different keys never share a wire key; the batch form (wire_keys,
 *         for many and put_many) agrees with the single one; replies in
 *         request order, misses left out, are matched to their own
 *         positions (reply_position), a reply out of order to a position
 *         that asked for its key, a key nobody asked for to none; a key in
 *         a message stays bounded.
 *   128-191 counters: the rest is a stored value. cachy_mc_parse_counter must accept
 *         exactly the canonical decimal int64 texts (after memcached's
 *         space padding) and the unsigned ones above INT64_MAX (as their
 *         two's complement), and give their value.
 *   192-255 lifetimes: 8 bytes of milliseconds. cachy_mc_expiry must give 0 for
 *         none, whole seconds rounded up within 30 days, a Unix time past
 *         it, and never more than 2^32 - 1.
 */
#include "../csrc/store_memcached.c"

#include <errno.h>
#include <inttypes.h>

static void fz_fail(const char *what)
{
    fprintf(stderr, "fuzz_memcached_key: %s\n", what);
    abort();
}

/* ---- keys -------------------------------------------------------------- */

#define FZ_MAX_KEYS 8

static int fz_wire_ok(cachy_slice w)
{
    size_t i;
    if (w.len == 0 || w.len > CACHY_MC_KEY_MAX)
        return 0;
    for (i = 0; i < w.len; i++)
        if ((unsigned char)w.ptr[i] <= 0x20 || (unsigned char)w.ptr[i] >= 0x7f)
            return 0;
    return 1;
}

static int fz_same(cachy_slice a, cachy_slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* What memcached's text protocol carries as is, and does not look hashed. */
static int fz_plain(cachy_slice k)
{
    if (!fz_wire_ok(k))
        return 0;
    if (k.len >= 34 && k.ptr[k.len - 34] == '~' && k.ptr[k.len - 33] == 'h') {
        size_t i;
        for (i = k.len - 32; i < k.len; i++)
            if (!((k.ptr[i] >= '0' && k.ptr[i] <= '9') || (k.ptr[i] >= 'a' && k.ptr[i] <= 'f')))
                return 1;
        return 0;
    }
    return 1;
}

static void fz_keys(const uint8_t *p, size_t n)
{
    cachy_slice keys[FZ_MAX_KEYS], wk[FZ_MAX_KEYS], single[FZ_MAX_KEYS];
    char copies[FZ_MAX_KEYS][CACHY_MC_KEY_MAX + 1], shown[96];
    const char *kp[FZ_MAX_KEYS];
    size_t kl[FZ_MAX_KEYS], next = 0;
    mc_state st;
    cachy_store s;
    cachy_error err;
    char *block = NULL;
    size_t nk = 0, i, j;

    while (n > 0 && nk < FZ_MAX_KEYS) {
        size_t len = p[0] < 200 ? p[0] : 200 + 16 * (size_t)(p[0] - 200);
        p++, n--;
        if (len > n)
            len = n;
        keys[nk].ptr = (const char *)p;
        keys[nk].len = len;
        nk++;
        p += len, n -= len;
    }
    memset(&st, 0, sizeof st);
    memset(&s, 0, sizeof s);
    s.name = "fuzz";
    s.driver = "memcached";
    s.prefix = "app:";
    s.prefix_len = 4;

    for (i = 0; i < nk; i++) {
        cachy_slice w = wire_key(&st, keys[i]), again;
        if (!fz_wire_ok(w))
            fz_fail("a wire key memcached cannot carry");
        if (fz_plain(keys[i]) != fz_same(w, keys[i]))
            fz_fail(fz_plain(keys[i]) ? "a plain key was hashed" : "a key went to the wire as it is");
        memcpy(copies[i], w.ptr, w.len);
        single[i].ptr = copies[i];
        single[i].len = w.len;
        again = wire_key(&st, keys[i]);
        if (!fz_same(again, single[i]))
            fz_fail("a key mapped twice gives two wire keys");
        key_for_message(&s, keys[i], shown, sizeof shown);
        if (memchr(shown, '\0', sizeof shown) == NULL)
            fz_fail("a key in a message is not terminated");
    }
    for (i = 0; i < nk; i++)
        for (j = i + 1; j < nk; j++)
            if (!fz_same(keys[i], keys[j]) && fz_same(single[i], single[j]))
                fz_fail("two keys share a wire key");

    if (wire_keys(&s, keys, nk, wk, &block, &err) != 0)
        fz_fail("wire_keys failed");
    for (i = 0; i < nk; i++) {
        if (!fz_same(wk[i], single[i]))
            fz_fail("the batch mapping differs from the single one");
        kp[i] = wk[i].ptr;
        kl[i] = wk[i].len;
    }
    /* A key whose length is a multiple of 3 misses (equal keys alike). */
    for (i = 0; i < nk; i++)
        if (keys[i].len % 3 != 0 && reply_position(kp, kl, nk, &next, wk[i].ptr, wk[i].len) != i)
            fz_fail("a reply in order was matched to another position");
    if (nk > 0) {
        j = reply_position(kp, kl, nk, &next, wk[0].ptr, wk[0].len);
        if (j >= nk || !fz_same(wk[j], wk[0]))
            fz_fail("a reply out of order was not matched to its key");
    }
    if (reply_position(kp, kl, nk, &next, " nobody", 7) != nk)   /* no wire key has a space */
        fz_fail("a key nobody asked for was matched");
    free(block);
}

/* ---- counters ---------------------------------------------------------- */

static void fz_counter(const uint8_t *p, size_t n)
{
    const char *t = (const char *)p;
    size_t end = n, i = 0, len;
    int64_t v = 0;
    int wrapped = -1, rc, digits_ok = 1, want, want_wrapped = 0;
    char text[32];

    /* Memcached's padding: trailing spaces after -?[0-9]+ are dropped. */
    while (end > 0 && t[end - 1] == ' ')
        end--;
    len = n;
    if (end > 0 && end < n) {
        size_t k = t[0] == '-' ? 1 : 0;
        int ok = k < end;
        for (; k < end; k++)
            if (t[k] < '0' || t[k] > '9')
                ok = 0;
        if (ok)
            len = end;
    }
    /* Canonical: -?(0|[1-9][0-9]*), no "-0". */
    i = len > 0 && t[0] == '-';
    if (i == len || (len - i > 1 && t[i] == '0') || (i == 1 && len == 2 && t[1] == '0'))
        digits_ok = 0;
    for (; digits_ok && i < len; i++)
        if (t[i] < '0' || t[i] > '9')
            digits_ok = 0;
    want = 0;
    if (digits_ok && len <= 21) {
        char buf[32];
        memcpy(buf, t, len);
        buf[len] = '\0';
        errno = 0;
        if (t[0] == '-') {
            long long x = strtoll(buf, NULL, 10);
            want = errno == 0;
            (void)x;
        } else {
            unsigned long long x = strtoull(buf, NULL, 10);
            if (errno == 0) {
                want = 1;
                want_wrapped = x > (unsigned long long)INT64_MAX;
            }
        }
    }

    rc = cachy_mc_parse_counter(t, n, &v, &wrapped);
    if (rc != want)
        fz_fail(rc ? "a counter read from text that is not one" : "a counter not read");
    if (!rc)
        return;
    if (wrapped != want_wrapped)
        fz_fail("a counter read with the wrong sign convention");
    if (wrapped)
        snprintf(text, sizeof text, "%" PRIu64, (uint64_t)v);
    else
        snprintf(text, sizeof text, "%" PRId64, v);
    if (strlen(text) != len || memcmp(text, t, len) != 0)
        fz_fail("a counter read as another number");
}

/* ---- lifetimes --------------------------------------------------------- */

static void fz_expiry(const uint8_t *p, size_t n)
{
    int64_t ms = 0, secs, now;
    uint64_t u = 0;
    int64_t at;
    size_t i;
    for (i = 0; i < 8 && i < n; i++)
        u = u << 8 | p[i];
    ms = (int64_t)u;
    now = cachy_now_ms();
    at = cachy_mc_expiry(ms);
    if (ms <= 0) {
        if (at != 0)
            fz_fail("no lifetime gave an expiry");
        return;
    }
    if (at <= 0 || (uint64_t)at > UINT32_MAX)
        fz_fail("an expiry memcached cannot take");
    secs = ms / 1000 + (ms % 1000 != 0);
    if (secs <= CACHY_MC_RELATIVE_MAX) {
        if (at != secs)
            fz_fail("a lifetime within 30 days not in whole seconds rounded up");
    } else if (at != (int64_t)UINT32_MAX && (at <= CACHY_MC_RELATIVE_MAX || at * 1000 < now + ms)) {
        fz_fail("a lifetime past 30 days not an absolute time at or after its end");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] < 128)
        fz_keys(data + 1, size - 1);
    else if (data[0] < 192)
        fz_counter(data + 1, size - 1);
    else
        fz_expiry(data + 1, size - 1);
    return 0;
}

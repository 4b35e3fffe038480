/* util.c: byte buffers, store options, the one error setter, decimal integers, clocks. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"

/* ---- buffers ----------------------------------------------------------- */

int cachy_buf_reserve(cachy_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;
    if (extra > SIZE_MAX - b->len)
        return -1;
    need = b->len + extra;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    p = realloc(b->data, cap);
    if (p == NULL)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int cachy_buf_set(cachy_buf *b, const void *p, size_t n)
{
    b->len = 0;
    return cachy_buf_append(b, p, n);
}

int cachy_buf_append(cachy_buf *b, const void *p, size_t n)
{
    if (cachy_buf_reserve(b, n + 1) != 0)   /* +1: room for a terminating NUL */
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

void cachy_buf_free(cachy_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- options ----------------------------------------------------------- */

static cachy_option *options_push(cachy_options *o, const char *name, cachy_opt_type type)
{
    cachy_option *items = realloc(o->items, (o->n + 1) * sizeof *items);
    cachy_option *opt;
    if (items == NULL)
        return NULL;
    o->items = items;
    opt = &items[o->n];
    memset(opt, 0, sizeof *opt);
    opt->name = strdup(name);
    if (opt->name == NULL)
        return NULL;
    opt->type = type;
    o->n++;
    return opt;
}

int cachy_options_add_string(cachy_options *o, const char *name, const char *s)
{
    cachy_option *opt = options_push(o, name, CACHY_OPT_STRING);
    if (opt == NULL)
        return -1;
    opt->str = strdup(s);
    return opt->str ? 0 : -1;
}

int cachy_options_add_number(cachy_options *o, const char *name, cachy_opt_type type, double v)
{
    cachy_option *opt = options_push(o, name, type);
    if (opt == NULL)
        return -1;
    opt->num = v;
    return 0;
}

int cachy_options_add_list(cachy_options *o, const char *name, const char *const *items, size_t n)
{
    cachy_option *opt = options_push(o, name, CACHY_OPT_LIST);
    size_t i;
    if (opt == NULL)
        return -1;
    opt->list = calloc(n ? n : 1, sizeof *opt->list);
    if (opt->list == NULL)
        return -1;
    for (i = 0; i < n; i++) {
        opt->list[i] = strdup(items[i]);
        if (opt->list[i] == NULL)
            return -1;
        opt->nlist = i + 1;
    }
    return 0;
}

void cachy_options_free(cachy_options *o)
{
    size_t i, j;
    for (i = 0; i < o->n; i++) {
        cachy_option *opt = &o->items[i];
        free(opt->name);
        free(opt->str);
        for (j = 0; j < opt->nlist; j++)
            free(opt->list[j]);
        free(opt->list);
    }
    free(o->items);
    o->items = NULL;
    o->n = 0;
}

const cachy_option *cachy_opt_find(const cachy_options *o, const char *name)
{
    size_t i;
    for (i = 0; i < o->n; i++)
        if (strcmp(o->items[i].name, name) == 0)
            return &o->items[i];
    return NULL;
}

const char *cachy_opt_string(const cachy_options *o, const char *name, const char *dflt)
{
    const cachy_option *opt = cachy_opt_find(o, name);
    return opt && opt->type == CACHY_OPT_STRING ? opt->str : dflt;
}

double cachy_opt_number(const cachy_options *o, const char *name, double dflt)
{
    const cachy_option *opt = cachy_opt_find(o, name);
    return opt && opt->type != CACHY_OPT_STRING && opt->type != CACHY_OPT_LIST ? opt->num : dflt;
}

/* ---- errors ------------------------------------------------------------ */

void cachy_error_set(cachy_error *err, const cachy_store *s, cachy_errcode code,
                     const char *fmt, ...)
{
    size_t used = 0;
    va_list ap;
    if (err == NULL)
        return;
    err->code = code;
    err->msg[0] = '\0';
    if (s != NULL) {
        int k = snprintf(err->msg, sizeof err->msg, "store '%s' (%s%s%s): ", s->name,
                         s->driver, s->address[0] ? " " : "", s->address);
        used = k < 0 ? 0 : (size_t)k >= sizeof err->msg ? sizeof err->msg - 1 : (size_t)k;
    }
    va_start(ap, fmt);
    vsnprintf(err->msg + used, sizeof err->msg - used, fmt, ap);
    va_end(ap);
}

void cachy_quote_key(cachy_slice key, char *out, size_t outlen)
{
    static const char digits[] = "0123456789abcdef";
    size_t i, o = 0;
    if (outlen == 0)
        return;
    for (i = 0; i < key.len; i++) {
        unsigned char c = (unsigned char)key.ptr[i];
        if (o + 8 >= outlen || o >= 64) {
            if (o + 4 <= outlen) {
                memcpy(out + o, "...", 3);
                o += 3;
            }
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = digits[c >> 4];
            out[o++] = digits[c & 15];
        }
    }
    out[o] = '\0';
}

/* ---- seconds ------------------------------------------------------------ */

const char *cachy_format_seconds(double v, char buf[32])
{
    snprintf(buf, 32, "%.1f", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, 32, "%g", v);
    return buf;
}

/* ---- decimal integers -------------------------------------------------- */

int cachy_parse_int(cachy_slice s, int64_t *out)
{
    const char *p = s.ptr, *end = s.ptr + s.len;
    int neg = 0;
    uint64_t v = 0, limit;
    if (p == end)
        return 0;
    if (*p == '-') {
        neg = 1;
        p++;
        if (p == end)
            return 0;
    }
    if (end - p > 1 && *p == '0')       /* no leading zeros: "007" is text, not 7 */
        return 0;
    limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; p < end; p++) {
        unsigned d;
        if (*p < '0' || *p > '9')
            return 0;
        d = (unsigned)(*p - '0');
        if (v > (limit - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    if (neg && v == 0)                  /* "-0" is not how an integer is written */
        return 0;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 1;
}

size_t cachy_format_int(int64_t v, char buf[24])
{
    int n = snprintf(buf, 24, "%lld", (long long)v);
    return n < 0 ? 0 : (size_t)n;
}

int cachy_checked_add(int64_t a, int64_t b, int64_t *out)
{
    if ((b > 0 && a > INT64_MAX - b) || (b < 0 && a < INT64_MIN - b))
        return -1;
    *out = a + b;
    return 0;
}

/* ---- clocks ------------------------------------------------------------ */

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cachy_now_ms(void) { return clock_ms(CLOCK_REALTIME); }

int64_t cachy_monotonic_ms(void) { return clock_ms(CLOCK_MONOTONIC); }

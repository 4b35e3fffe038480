/*
 * envelope.c: reading and writing the envelope of an item kept for stale
 * serving (envelope.h has the layout). Plain C, no Lua.
 */
#include <string.h>

#include "envelope.h"

static int64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;
    for (i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return (int64_t)v;
}

static void put_be64(unsigned char *p, int64_t v)
{
    uint64_t u = (uint64_t)v;
    int i;
    for (i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(u & 0xff);
        u >>= 8;
    }
}

int cachy_envelope_read(cachy_slice bytes, cachy_envelope *out)
{
    const unsigned char *p = (const unsigned char *)bytes.ptr;
    if (bytes.len == 0 || p[0] != CACHY_ENVELOPE_MARK)
        return 0;
    if (bytes.len < CACHY_ENVELOPE_HEAD || p[1] != 1 || (p[2] != 'v' && p[2] != 'n'))
        return -1;
    if (p[2] == 'n' && bytes.len != CACHY_ENVELOPE_HEAD)
        return -1;
    out->kind = (char)p[2];
    out->fresh_until = get_be64(p + 3);
    out->visible_until = get_be64(p + 11);
    out->value.ptr = bytes.ptr + CACHY_ENVELOPE_HEAD;
    out->value.len = bytes.len - CACHY_ENVELOPE_HEAD;
    return 1;
}

int cachy_envelope_write(cachy_buf *out, const cachy_envelope *e)
{
    unsigned char head[CACHY_ENVELOPE_HEAD];
    head[0] = CACHY_ENVELOPE_MARK;
    head[1] = 1;
    head[2] = (unsigned char)e->kind;
    put_be64(head + 3, e->fresh_until);
    put_be64(head + 11, e->visible_until);
    if (cachy_buf_set(out, head, sizeof head) != 0)
        return -1;
    if (e->kind == 'v' && cachy_buf_append(out, e->value.ptr, e->value.len) != 0)
        return -1;
    return 0;
}

int cachy_envelope_live(cachy_slice *bytes, int64_t now_ms)
{
    cachy_envelope e;
    int rc = cachy_envelope_read(*bytes, &e);
    if (rc <= 0)
        return rc == 0 ? 1 : -1;
    if (e.kind == 'n' || (e.visible_until != 0 && now_ms >= e.visible_until))
        return 0;
    *bytes = e.value;
    return 1;
}

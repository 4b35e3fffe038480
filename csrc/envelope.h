/*
 * envelope.h: the bytes of an item kept past the time it reads as fresh
 * (flexible's stale window, stale_if_error, a cached "not found"). Every
 * other item is the serializer's bytes alone. Layout (README, "Stale
 * values"): 0xC1 (a byte MessagePack never uses and no JSON text starts
 * with), a version byte (1), a kind byte ('v' a value, 'n' a cached nil),
 * fresh-until and visible-until as big-endian int64 milliseconds since the
 * Unix epoch (visible-until 0: never ends), then the serializer's bytes.
 */
#ifndef CACHY_ENVELOPE_H
#define CACHY_ENVELOPE_H

#include "cachy.h"

#define CACHY_ENVELOPE_MARK 0xC1
#define CACHY_ENVELOPE_HEAD 19

typedef struct cachy_envelope {
    char kind;               /* 'v' a value, 'n' a cached nil */
    int64_t fresh_until;     /* ms since the Unix epoch */
    int64_t visible_until;   /* ms since the Unix epoch; 0: never ends */
    cachy_slice value;       /* the serializer's bytes (empty for 'n') */
} cachy_envelope;

/* 1 an envelope (out filled, value pointing into bytes), 0 plain bytes,
 * -1 bytes that begin as an envelope but are not a whole one. */
int cachy_envelope_read(cachy_slice bytes, cachy_envelope *out);

/* Replaces out's content with e's bytes. 0, or -1 (ENOMEM). */
int cachy_envelope_write(cachy_buf *out, const cachy_envelope *e);

/* What a plain read of bytes sees at now_ms: 1 a value (*bytes narrowed to
 * the serializer's bytes when it was an envelope), 0 nothing (a cached nil,
 * or past visible-until), -1 a malformed envelope. */
int cachy_envelope_live(cachy_slice *bytes, int64_t now_ms);

#endif

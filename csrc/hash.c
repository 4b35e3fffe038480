/* hash.c: XXH3-128 as hex, the one digest every part of cachy names things with. */
#include <xxhash.h>

#include "cachy.h"

void cachy_hash128_hex(const void *p, size_t n, char hex[33])
{
    static const char digits[] = "0123456789abcdef";
    XXH128_hash_t h = XXH3_128bits(p, n);
    int i;
    /* a byte at a time, high half first: two digits per step */
    for (i = 0; i < 8; i++) {
        unsigned hi = (unsigned)(h.high64 >> (56 - 8 * i)) & 0xff;
        unsigned lo = (unsigned)(h.low64 >> (56 - 8 * i)) & 0xff;
        hex[2 * i] = digits[hi >> 4];
        hex[2 * i + 1] = digits[hi & 0xf];
        hex[16 + 2 * i] = digits[lo >> 4];
        hex[16 + 2 * i + 1] = digits[lo & 0xf];
    }
    hex[32] = '\0';
}

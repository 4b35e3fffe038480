/* hash.c: XXH3-128 as hex, the one digest every part of cachy names things with. */
#include <xxhash.h>

#include "cachy.h"

void cachy_hash128_hex(const void *p, size_t n, char hex[33])
{
    static const char digits[] = "0123456789abcdef";
    XXH128_hash_t h = XXH3_128bits(p, n);
    uint64_t parts[2];
    int i, j;
    parts[0] = h.high64;
    parts[1] = h.low64;
    for (i = 0; i < 2; i++)
        for (j = 0; j < 16; j++)
            hex[i * 16 + j] = digits[(parts[i] >> (60 - 4 * j)) & 0xf];
    hex[32] = '\0';
}

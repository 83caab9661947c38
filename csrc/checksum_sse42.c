/* checksum_sse42.c: the SSE4.2 body of CRC-32C.  The crc32 instruction has a
 * latency of three cycles and a throughput of one, so three streams of the
 * input run side by side; each block's three partial registers are joined by
 * shifting the earlier ones over the later bytes (tables in checksum.c).
 * Every CPU with AVX2 has SSE4.2, so this body sits in the AVX2 row. */
#include "internal.h"
#ifdef TET_HAVE_AVX2_BODY
#include <nmmintrin.h>
#include <string.h>

__attribute__((target("sse4.2")))
static uint32_t three_streams(uint32_t r0, const uint8_t **pp, uint64_t *np, uint64_t len,
                              const uint32_t shift[4][256])
{
    const uint8_t *p = *pp;
    uint64_t n = *np;
    while (n >= 3 * len) {
        uint64_t r1 = 0, r2 = 0, a = r0;
        for (const uint8_t *end = p + len; p < end; p += 8) {
            uint64_t x, y, z;
            memcpy(&x, p, 8);
            memcpy(&y, p + len, 8);
            memcpy(&z, p + 2 * len, 8);
            a = _mm_crc32_u64(a, x);
            r1 = _mm_crc32_u64(r1, y);
            r2 = _mm_crc32_u64(r2, z);
        }
        r0 = tet_crc32c_shift(shift, (uint32_t)a) ^ (uint32_t)r1;
        r0 = tet_crc32c_shift(shift, r0) ^ (uint32_t)r2;
        p += 2 * len;
        n -= 3 * len;
    }
    *pp = p;
    *np = n;
    return r0;
}

__attribute__((target("sse4.2")))
uint32_t tet_crc32c_sse42(uint32_t crc, const uint8_t *p, uint64_t n)
{
    const tet_crc_tables *t = tet_crc32c_tables();
    uint32_t r = ~crc;
    for (; n > 0 && ((uintptr_t)p & 7) != 0; p++, n--)
        r = _mm_crc32_u8(r, *p);
    r = three_streams(r, &p, &n, TET_CRC_LONG, t->long_shift);
    r = three_streams(r, &p, &n, TET_CRC_SHORT, t->short_shift);
    uint64_t a = r;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        a = _mm_crc32_u64(a, x);
    }
    r = (uint32_t)a;
    for (; n > 0; p++, n--)
        r = _mm_crc32_u8(r, *p);
    return ~r;
}
#endif

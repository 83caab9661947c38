/* gather_avx2.c: AVX2 body of the strided copy (4- and 8-byte elements use
 * hardware gathers; other sizes and huge steps take the scalar body). */
#include "internal.h"
#ifdef TET_HAVE_AVX2_BODY
#include <immintrin.h>
#include <string.h>

__attribute__((target("avx2,fma")))
void tet_copy_strided_avx2(uint8_t *restrict dst, const uint8_t *restrict src, uint64_t count,
                           uint64_t step, uint32_t elem_size)
{
    uint64_t i = 0;
    if (elem_size == 4 && step <= (uint64_t)INT32_MAX / 32) {
        const int32_t s = (int32_t)step;
        const __m256i lanes = _mm256_setr_epi32(0, s, 2 * s, 3 * s, 4 * s, 5 * s, 6 * s, 7 * s);
        for (; i + 8 <= count; i += 8) {
            __m256i v = _mm256_i32gather_epi32((const int *)(const void *)(src + 4 * i * step),
                                               lanes, 4);
            _mm256_storeu_si256((__m256i *)(void *)(dst + 4 * i), v);
        }
    } else if (elem_size == 8 && step <= (uint64_t)INT64_MAX / 64) {
        const long long s = (long long)step;
        const __m256i lanes = _mm256_setr_epi64x(0, s, 2 * s, 3 * s);
        for (; i + 4 <= count; i += 4) {
            __m256i v = _mm256_i64gather_epi64(
                (const long long *)(const void *)(src + 8 * i * step), lanes, 8);
            _mm256_storeu_si256((__m256i *)(void *)(dst + 8 * i), v);
        }
    }
    if (i < count)
        tet_copy_strided_scalar(dst + (uint64_t)elem_size * i,
                                src + (uint64_t)elem_size * i * step, count - i, step, elem_size);
}
#endif

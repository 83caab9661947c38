/* fold_avx2.c: AVX2 bodies of the fold kernels that work on raw f32 runs. */
#include "internal.h"
#ifdef TET_HAVE_AVX2_BODY
#include <immintrin.h>
#include <math.h>
#include <string.h>

__attribute__((target("avx2,fma")))
void tet_minmax_f32_avx2(const uint8_t *src, uint64_t n, float *lo, float *hi, int *nan)
{
    __m256 l0 = _mm256_set1_ps(INFINITY), l1 = l0, h0 = _mm256_set1_ps(-INFINITY), h1 = h0;
    __m256 un = _mm256_setzero_ps();
    uint64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 a = _mm256_loadu_ps((const float *)(const void *)(src + 4 * i));
        const __m256 b = _mm256_loadu_ps((const float *)(const void *)(src + 4 * i + 32));
        /* min(x, acc) returns acc when x is NaN: NaN is skipped, as in the scalar body */
        l0 = _mm256_min_ps(a, l0);
        l1 = _mm256_min_ps(b, l1);
        h0 = _mm256_max_ps(a, h0);
        h1 = _mm256_max_ps(b, h1);
        un = _mm256_or_ps(un, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
    }
    float ls[8], hs[8];
    _mm256_storeu_ps(ls, _mm256_min_ps(l0, l1));
    _mm256_storeu_ps(hs, _mm256_max_ps(h0, h1));
    float l = INFINITY, h = -INFINITY;
    for (int k = 0; k < 8; k++) {
        l = ls[k] < l ? ls[k] : l;
        h = hs[k] > h ? hs[k] : h;
    }
    int found = _mm256_movemask_ps(un) != 0;
    for (; i < n; i++) {
        float v;
        memcpy(&v, src + 4 * i, 4);
        found |= v != v;
        l = v < l ? v : l;
        h = v > h ? v : h;
    }
    *lo = l;
    *hi = h;
    *nan = found;
}
#endif

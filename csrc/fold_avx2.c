/* fold_avx2.c: AVX2 bodies of the fold kernels that work on raw f32 runs.  Each
 * has a scalar twin in fold.c computing the same quantities (lanes may differ, so
 * sums agree to rounding, min/max exactly). */
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
__attribute__((target("avx2,fma"))) static inline double hsum(__m256d v)
{
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* 8 f32 at p as two f64 vectors. */
#define LOAD8(p, lo, hi)                                                      \
    do {                                                                      \
        const __m256 x_ = _mm256_loadu_ps((const float *)(const void *)(p)); \
        lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x_));                     \
        hi = _mm256_cvtps_pd(_mm256_extractf128_ps(x_, 1));                   \
    } while (0)

__attribute__((target("avx2,fma")))
void tet_moments_f32_avx2(const uint8_t *src, uint64_t n, double k, double *raw, double *sum,
                          double *m2)
{
    const __m256d vk = _mm256_set1_pd(k);
    __m256d r0 = _mm256_setzero_pd(), r1 = r0, s0 = r0, s1 = r0;
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256d lo, hi;
        LOAD8(src + 4 * i, lo, hi);
        r0 = _mm256_add_pd(r0, lo);
        r1 = _mm256_add_pd(r1, hi);
        s0 = _mm256_add_pd(s0, _mm256_sub_pd(lo, vk));
        s1 = _mm256_add_pd(s1, _mm256_sub_pd(hi, vk));
    }
    double r = hsum(_mm256_add_pd(r0, r1)), s = hsum(_mm256_add_pd(s0, s1));
    for (uint64_t j = i; j < n; j++) {
        float v;
        memcpy(&v, src + 4 * j, 4);
        r += v;
        s += (double)v - k;
    }
    if (m2 == NULL) { /* a sum alone */
        *raw = r;
        *sum = s;
        return;
    }
    const double mean = s / (double)n;
    const __m256d vm = _mm256_set1_pd(mean);
    __m256d q0 = _mm256_setzero_pd(), q1 = q0;
    for (i = 0; i + 8 <= n; i += 8) {
        __m256d lo, hi;
        LOAD8(src + 4 * i, lo, hi);
        const __m256d d0 = _mm256_sub_pd(_mm256_sub_pd(lo, vk), vm);
        const __m256d d1 = _mm256_sub_pd(_mm256_sub_pd(hi, vk), vm);
        q0 = _mm256_fmadd_pd(d0, d0, q0);
        q1 = _mm256_fmadd_pd(d1, d1, q1);
    }
    double q = hsum(_mm256_add_pd(q0, q1));
    for (; i < n; i++) {
        float v;
        memcpy(&v, src + 4 * i, 4);
        const double d = ((double)v - k) - mean;
        q += d * d;
    }
    *raw = r;
    *sum = s;
    *m2 = q;
}

/* Row-major, two rows per sweep: acc (one row of doubles) stays in L1. */
#define ROW_STEP(p, e, a0, a1, c0, c1, square)                    \
    do {                                                          \
        __m256d lo_, hi_;                                         \
        LOAD8((p) + 4 * (e), lo_, hi_);                           \
        lo_ = _mm256_sub_pd(lo_, c0);                             \
        hi_ = _mm256_sub_pd(hi_, c1);                             \
        if (square) {                                             \
            a0 = _mm256_fmadd_pd(lo_, lo_, a0);                   \
            a1 = _mm256_fmadd_pd(hi_, hi_, a1);                   \
        } else {                                                  \
            a0 = _mm256_add_pd(a0, lo_);                          \
            a1 = _mm256_add_pd(a1, hi_);                          \
        }                                                         \
    } while (0)

__attribute__((target("avx2,fma")))
void tet_rows_f32_avx2(const uint8_t *bytes, const uint64_t *offsets, uint64_t rows,
                       uint64_t run, const double *center, int square, double *acc)
{
    const uint64_t wide = run & ~(uint64_t)7;
    for (uint64_t r = 0; r < rows; r += 2) {
        const uint8_t *p = bytes + offsets[r];
        const uint8_t *q = r + 1 < rows ? bytes + offsets[r + 1] : NULL;
        for (uint64_t e = 0; e < wide; e += 8) {
            const __m256d c0 = _mm256_loadu_pd(center + e), c1 = _mm256_loadu_pd(center + e + 4);
            __m256d a0 = _mm256_loadu_pd(acc + e), a1 = _mm256_loadu_pd(acc + e + 4);
            ROW_STEP(p, e, a0, a1, c0, c1, square);
            if (q != NULL)
                ROW_STEP(q, e, a0, a1, c0, c1, square);
            _mm256_storeu_pd(acc + e, a0);
            _mm256_storeu_pd(acc + e + 4, a1);
        }
    }
    if (wide < run) {
        uint64_t shifted[TET_GROUP_ROWS];
        for (uint64_t r = 0; r < rows; r++)
            shifted[r] = offsets[r] + 4 * wide;
        tet_rows_f32_scalar(bytes, shifted, rows, run - wide, center + wide, square, acc + wide);
    }
}

/* Extremes of unit-stride f32 rows lane by lane (lanes.c has the scalar body): rows are
 * taken eight at a time, and each block of eight lanes keeps its state in registers
 * across them.  Exact, so it matches the scalar body bit for bit. */
#define AS_PS(i) _mm256_castsi256_ps(i)
#define PICK_I(a, b, m) _mm256_castps_si256(_mm256_blendv_ps(AS_PS(a), AS_PS(b), m))
#define LOAD_I(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define STORE_I(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), v)

__attribute__((target("avx2,fma")))
void tet_minmax_rows_f32_avx2(const uint8_t *bytes, const uint64_t *offsets, uint64_t rows,
                              uint64_t run, tet_minmax_lanes *l)
{
    const __m256i none = _mm256_set1_epi32(-1);
    const uint64_t wide = run & ~(uint64_t)7;
    for (uint64_t r0 = 0; r0 < rows; r0 += 8) {
        const uint64_t r1 = r0 + 8 < rows ? r0 + 8 : rows;
        for (uint64_t e = 0; e < wide; e += 8) {
            __m256 lo = _mm256_loadu_ps(l->lo + e), hi = _mm256_loadu_ps(l->hi + e);
            __m256i ilo = LOAD_I(l->ilo + e), ihi = LOAD_I(l->ihi + e), inan = LOAD_I(l->inan + e);
            for (uint64_t r = r0; r < r1; r++) {
                const float *p = (const float *)(const void *)(bytes + offsets[r]) + e;
                const __m256 v = _mm256_loadu_ps(p);
                const __m256i at = _mm256_set1_epi32((int32_t)r);
                const __m256 num = _mm256_cmp_ps(v, v, _CMP_ORD_Q);
                const __m256 lo_new = AS_PS(_mm256_cmpeq_epi32(ilo, none));
                const __m256 hi_new = AS_PS(_mm256_cmpeq_epi32(ihi, none));
                const __m256 lt = _mm256_and_ps(num, _mm256_or_ps(_mm256_cmp_ps(v, lo, _CMP_LT_OQ), lo_new));
                const __m256 gt = _mm256_and_ps(num, _mm256_or_ps(_mm256_cmp_ps(v, hi, _CMP_GT_OQ), hi_new));
                const __m256 first = _mm256_andnot_ps(num, AS_PS(_mm256_cmpeq_epi32(inan, none)));
                lo = _mm256_blendv_ps(lo, v, lt);
                hi = _mm256_blendv_ps(hi, v, gt);
                ilo = PICK_I(ilo, at, lt);
                ihi = PICK_I(ihi, at, gt);
                inan = PICK_I(inan, at, first);
            }
            _mm256_storeu_ps(l->lo + e, lo);
            _mm256_storeu_ps(l->hi + e, hi);
            STORE_I(l->ilo + e, ilo);
            STORE_I(l->ihi + e, ihi);
            STORE_I(l->inan + e, inan);
        }
        for (uint64_t r = r0; r < r1; r++)
            tet_minmax_row_f32_tail(l, bytes + offsets[r], wide, run, (uint32_t)r);
    }
}

/* Histogram bins of four f64 values (hist.c has the rule and the scalar body): floor of
 * the scaled position where it is clear of a whole number, NumPy's rule elsewhere. */
__attribute__((target("avx2,fma")))
static inline void hist_bins4(__m256d v, const double *x, const tet_hist_cell *c,
                              const double *e, uint32_t bins, uint32_t *idx)
{
    const __m256d in = _mm256_and_pd(_mm256_cmp_pd(v, _mm256_set1_pd(c->lo), _CMP_GE_OQ),
                                     _mm256_cmp_pd(v, _mm256_set1_pd(c->hi), _CMP_LE_OQ));
    const __m256d f = _mm256_mul_pd(_mm256_sub_pd(v, _mm256_set1_pd(c->lo)),
                                    _mm256_set1_pd(c->scale));
    const __m256d k = _mm256_round_pd(f, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m256d frac = _mm256_sub_pd(f, k);
    const __m256d sure = _mm256_and_pd(
        _mm256_cmp_pd(frac, _mm256_set1_pd(TET_HIST_MARGIN), _CMP_GE_OQ),
        _mm256_cmp_pd(frac, _mm256_set1_pd(1.0 - TET_HIST_MARGIN), _CMP_LE_OQ));
    const __m256d bin = _mm256_blendv_pd(_mm256_set1_pd((double)bins), k, in);
    _mm_storeu_si128((__m128i *)(void *)idx, _mm256_cvttpd_epi32(bin));
    const int unsure = _mm256_movemask_pd(_mm256_andnot_pd(sure, in));
    if (unsure)
        for (int l = 0; l < 4; l++)
            if (unsure & (1 << l))
                idx[l] = tet_hist_bin_exact(x[l], e, bins);
}

__attribute__((target("avx2,fma")))
void tet_hist_index_f64_avx2(const double *x, uint64_t n, const tet_hist_cell *c,
                             const double *e, uint32_t bins, uint32_t *idx)
{
    uint64_t i = 0;
    if (c->fast)
        for (; i + 4 <= n; i += 4)
            hist_bins4(_mm256_loadu_pd(x + i), x + i, c, e, bins, idx + i);
    tet_hist_index_f64_scalar(x + i, n - i, c, e, bins, idx + i);
}

__attribute__((target("avx2,fma")))
void tet_hist_index_f32_avx2(const uint8_t *src, uint64_t n, const tet_hist_cell *c,
                             const double *e, uint32_t bins, uint32_t *idx)
{
    uint64_t i = 0;
    if (c->fast) {
        double x[8];
        for (; i + 8 <= n; i += 8) {
            __m256d lo, hi;
            LOAD8(src + 4 * i, lo, hi);
            _mm256_storeu_pd(x, lo);
            _mm256_storeu_pd(x + 4, hi);
            hist_bins4(lo, x, c, e, bins, idx + i);
            hist_bins4(hi, x + 4, c, e, bins, idx + i + 4);
        }
    }
    tet_hist_index_f32_scalar(src + 4 * i, n - i, c, e, bins, idx + i);
}

/* Radix-selection keys of four f64 values (select.c): the sign bit flipped for numbers
 * >= +0, every bit for those below; 0 for NaN.  Returns how many were NaN. */
__attribute__((target("avx2,fma")))
static inline int select_keys4(__m256d v, uint64_t *keys)
{
    const __m256i bits = _mm256_castpd_si256(v);
    const __m256i neg = _mm256_cmpgt_epi64(_mm256_setzero_si256(), bits);
    const __m256i top = _mm256_set1_epi64x((long long)(UINT64_C(1) << 63));
    const __m256i key = _mm256_xor_si256(bits, _mm256_or_si256(neg, top));
    const __m256d nan = _mm256_cmp_pd(v, v, _CMP_UNORD_Q);
    _mm256_storeu_si256((__m256i *)(void *)keys, _mm256_andnot_si256(_mm256_castpd_si256(nan), key));
    return __builtin_popcount((unsigned)_mm256_movemask_pd(nan));
}

__attribute__((target("avx2,fma")))
void tet_select_keys_f64_avx2(const double *x, uint64_t n, uint64_t *keys, uint64_t *nan)
{
    uint64_t i = 0, found = 0;
    for (; i + 4 <= n; i += 4)
        found += (uint64_t)select_keys4(_mm256_loadu_pd(x + i), keys + i);
    *nan += found;
    tet_select_keys_f64_scalar(x + i, n - i, keys + i, nan);
}

__attribute__((target("avx2,fma")))
void tet_select_keys_f32_avx2(const uint8_t *src, uint64_t n, uint64_t *keys, uint64_t *nan)
{
    uint64_t i = 0, found = 0;
    for (; i + 8 <= n; i += 8) {
        __m256d lo, hi;
        LOAD8(src + 4 * i, lo, hi);
        found += (uint64_t)select_keys4(lo, keys + i);
        found += (uint64_t)select_keys4(hi, keys + i + 4);
    }
    *nan += found;
    tet_select_keys_f32_scalar(src + 4 * i, n - i, keys + i, nan);
}
#endif

/* dispatch.c: pick the SIMD body once, at run time, so one build runs on
 * any CPU of its architecture.  Built at baseline flags on purpose. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>

static int x86_has_avx2_fma(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    const unsigned osxsave = 1u << 27, avx = 1u << 28, fma = 1u << 12;
    if ((c & osxsave) == 0 || (c & avx) == 0 || (c & fma) == 0)
        return 0;
    /* XGETBV: the OS must save the XMM and YMM state on context switches. */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    if ((lo & 6u) != 6u)
        return 0;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b & (1u << 5)) != 0; /* AVX2 */
}
#endif

/* level -> bodies; a level without a body of its own borrows the scalar one */
static const tet_kernels kernel_table[3] = {
    {tet_copy_strided_scalar, tet_minmax_f32_scalar, tet_moments_f32_scalar, tet_rows_f32_scalar,
     tet_crc32c_scalar, tet_lanes_row_scalar, tet_minmax_rows_f32_scalar,
     tet_hist_index_f64_scalar, tet_hist_index_f32_scalar, tet_select_keys_f64_scalar,
     tet_select_keys_f32_scalar},
#ifdef TET_HAVE_AVX2_BODY
    {tet_copy_strided_avx2, tet_minmax_f32_avx2, tet_moments_f32_avx2, tet_rows_f32_avx2,
     tet_crc32c_sse42, tet_lanes_row_avx2, tet_minmax_rows_f32_avx2,
     tet_hist_index_f64_avx2, tet_hist_index_f32_avx2, tet_select_keys_f64_avx2,
     tet_select_keys_f32_avx2},
#else
    {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
#endif
#ifdef TET_HAVE_NEON_BODY
    {tet_copy_strided_neon, tet_minmax_f32_scalar, tet_moments_f32_scalar, tet_rows_f32_scalar,
     tet_crc32c_scalar, tet_lanes_row_scalar, tet_minmax_rows_f32_scalar,
     tet_hist_index_f64_scalar, tet_hist_index_f32_scalar, tet_select_keys_f64_scalar,
     tet_select_keys_f32_scalar},
#else
    {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
#endif
};

static int32_t active_level = -1;

int32_t tet_simd_supported(int32_t level)
{
    switch (level) {
    case TET_SIMD_SCALAR:
        return 1;
#ifdef TET_HAVE_AVX2_BODY
    case TET_SIMD_AVX2:
        return x86_has_avx2_fma();
#endif
#ifdef TET_HAVE_NEON_BODY
    case TET_SIMD_NEON:
        return 1; /* NEON is baseline on aarch64 */
#endif
    default:
        return 0;
    }
}

static int32_t best_level(void)
{
    if (tet_simd_supported(TET_SIMD_AVX2))
        return TET_SIMD_AVX2;
    if (tet_simd_supported(TET_SIMD_NEON))
        return TET_SIMD_NEON;
    return TET_SIMD_SCALAR;
}

tet_status tet_dispatch_init(void)
{
    const char *force = getenv("TET_SIMD");
    int32_t level = best_level();
    if (force != NULL && strcmp(force, "scalar") == 0)
        level = TET_SIMD_SCALAR;
    active_level = level;
    return TET_OK;
}

tet_status tet_simd_set(int32_t level)
{
    if (level < 0 || level > TET_SIMD_NEON || !tet_simd_supported(level))
        return TET_ERR_SIMD;
    active_level = level;
    return TET_OK;
}

int32_t tet_simd_get(void)
{
    if (active_level < 0)
        tet_dispatch_init();
    return active_level;
}

const tet_kernels *tet_active(void)
{
    return &kernel_table[tet_simd_get()];
}

const tet_kernels *tet_kernels_for(int32_t level)
{
    if (level < 0 || level > TET_SIMD_NEON || !tet_simd_supported(level))
        return NULL;
    return &kernel_table[level];
}

tet_status tet_minmax_f32(int32_t level, const uint8_t *src, uint64_t n, float *lo, float *hi,
                          int32_t *nan)
{
    const tet_kernels *k = tet_kernels_for(level);
    if (k == NULL)
        return TET_ERR_SIMD;
    int found = 0;
    k->minmax_f32(src, n, lo, hi, &found);
    *nan = found;
    return TET_OK;
}

tet_status tet_copy_strided(int32_t level, uint32_t elem_size, uint8_t *dst, const uint8_t *src,
                            uint64_t count, uint64_t step)
{
    const tet_kernels *k = tet_kernels_for(level);
    if (k == NULL)
        return TET_ERR_SIMD;
    if (elem_size == 0 || step == 0)
        return TET_ERR_ARGUMENT;
    k->copy_strided(dst, src, count, step, elem_size);
    return TET_OK;
}

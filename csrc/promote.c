/* promote.c: elements of any dtype promoted to f64 a block at a time, and fill values
 * read as NaN (the mask), for the folds, histograms and selections that work in f64. */
#include <math.h>
#include <string.h>
#include "internal.h"

/* ---- f64 promotion -------------------------------------------------------- */

static double half_to_double(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h >> 15), exp = (uint32_t)(h >> 10) & 0x1Fu;
    const uint32_t mant = (uint32_t)h & 0x3FFu;
    double v;
    if (exp == 0)
        v = ldexp((double)mant, -24);
    else if (exp == 31)
        v = mant ? NAN : INFINITY;
    else
        v = ldexp((double)(mant | 0x400u), (int)exp - 25);
    return sign ? -v : v;
}

/* A unit-stride loop of its own so the compiler vectorises the common case. */
#define LOAD_RUN(T)                                                    \
    if (step == 1) {                                                   \
        for (uint64_t i = 0; i < n; i++) {                             \
            T v;                                                       \
            memcpy(&v, src + i * sizeof(T), sizeof(T));                \
            out[i] = (double)v;                                        \
        }                                                              \
    } else {                                                           \
        for (uint64_t i = 0; i < n; i++) {                             \
            T v;                                                       \
            memcpy(&v, src + i * step * sizeof(T), sizeof(T));         \
            out[i] = (double)v;                                        \
        }                                                              \
    }

void tet_load_f64(uint32_t dtype, const uint8_t *src, uint64_t n, uint64_t step, double *out)
{
    switch (dtype) {
    case TET_DTYPE_F32: LOAD_RUN(float) break;
    case TET_DTYPE_F64: LOAD_RUN(double) break;
    case TET_DTYPE_I32: LOAD_RUN(int32_t) break;
    case TET_DTYPE_I64: LOAD_RUN(int64_t) break;
    case TET_DTYPE_U8: LOAD_RUN(uint8_t) break;
    case TET_DTYPE_U16: LOAD_RUN(uint16_t) break;
    case TET_DTYPE_I16: LOAD_RUN(int16_t) break;
    case TET_DTYPE_U32: LOAD_RUN(uint32_t) break;
    case TET_DTYPE_F16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + i * step * 2, 2);
            out[i] = half_to_double(h);
        }
        break;
    case TET_DTYPE_U64: LOAD_RUN(uint64_t) break;
    default:
        for (uint64_t i = 0; i < n; i++)
            out[i] = NAN;
    }
}

/* ---- fill masks ---------------------------------------------------------------- */

void tet_mask_apply(uint32_t dtype, const uint8_t *src, uint64_t n, uint64_t step,
                    const tet_mask *m, double *x)
{
    if (dtype == TET_DTYPE_I64 || dtype == TET_DTYPE_U64) {
        for (uint64_t i = 0; i < n; i++) {
            uint64_t v;
            memcpy(&v, src + i * step * 8, 8);
            for (uint32_t k = 0; k < m->n; k++)
                if (v == m->bits[k])
                    x[i] = NAN;
        }
        return;
    }
    for (uint32_t k = 0; k < m->n; k++) { /* a compare and a blend: vectorised */
        const double f = m->value[k];
        for (uint64_t i = 0; i < n; i++)
            x[i] = x[i] == f ? NAN : x[i];
    }
}

uint64_t tet_mask_hits(uint32_t dtype, const uint8_t *src, uint64_t n, uint64_t step,
                       const double *x, const tet_mask *m, uint8_t *hit)
{
    uint64_t total = 0;
    memset(hit, 0, n);
    /* i64 / u64 compare their bits: f64 would merge neighbours above 2^53 */
    if (dtype == TET_DTYPE_I64 || dtype == TET_DTYPE_U64) {
        for (uint64_t i = 0; i < n; i++) {
            uint64_t v;
            memcpy(&v, src + i * step * 8, 8);
            for (uint32_t k = 0; k < m->n; k++)
                hit[i] |= (uint8_t)(v == m->bits[k]);
        }
    } else { /* f64 holds every other dtype's values exactly */
        for (uint32_t k = 0; k < m->n; k++) {
            const double f = m->value[k];
            for (uint64_t i = 0; i < n; i++)
                hit[i] |= (uint8_t)(x[i] == f);
        }
    }
    for (uint64_t i = 0; i < n; i++)
        total += hit[i];
    return total;
}

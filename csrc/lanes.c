/* lanes.c: min/max/arg, counts and norms of whole rows that feed a run of cells (a
 * kept innermost axis, e.g. a reduction over axis 0).
 *
 * A group of rows keeps dense per-lane state (tet_lanes) instead of updating each
 * cell's 200-byte accumulator element by element: every row is one branch-free sweep
 * the compiler vectorises, and the cells are touched once per group.  The same body
 * is compiled for the scalar level and for AVX2; it is exact for min, max, their
 * positions and the counts, and the norms add each lane's rows in row order, so both
 * bodies agree bit for bit. */
#include <math.h>
#include <string.h>
#include "internal.h"

/* One row x[0, run) at fiber index `fiber` into lanes [at, at + run).  Rows come in
 * increasing fiber order within a group, so a strict compare keeps the first position
 * of a tie. */
#define LANES_ROW_BODY                                                                    \
    double *restrict lo = l->lo + at, *restrict hi = l->hi + at;                          \
    uint64_t *restrict ilo = l->ilo + at, *restrict ihi = l->ihi + at;                    \
    uint64_t *restrict inan = l->inan + at;                                               \
    if (what & TET_FOLD_MINMAX) {                                                         \
        for (uint64_t e = 0; e < run; e++) {                                              \
            const double v = x[e];                                                        \
            const int num = v == v;                                                       \
            const int lt = num & ((v < lo[e]) | (ilo[e] == TET_NO_INDEX));                \
            const int gt = num & ((v > hi[e]) | (ihi[e] == TET_NO_INDEX));                \
            lo[e] = lt ? v : lo[e];                                                       \
            ilo[e] = lt ? fiber : ilo[e];                                                 \
            hi[e] = gt ? v : hi[e];                                                       \
            ihi[e] = gt ? fiber : ihi[e];                                                 \
            inan[e] = (!num & (inan[e] == TET_NO_INDEX)) ? fiber : inan[e];               \
        }                                                                                 \
    }                                                                                     \
    uint64_t *restrict nan = l->nan + at, *restrict inf = l->inf + at;                    \
    uint64_t *restrict null = l->null + at;                                               \
    if (what & TET_FOLD_COUNTS) {                                                         \
        uint64_t fill_bits;                                                               \
        memcpy(&fill_bits, &fill, 8);                                                     \
        const int fill_nan = fill != fill;                                                \
        for (uint64_t e = 0; e < run; e++) {                                              \
            const double v = x[e];                                                        \
            uint64_t bits;                                                                \
            memcpy(&bits, &v, 8);                                                         \
            const uint64_t is_nan = v != v;                                               \
            nan[e] += is_nan;                                                             \
            inf[e] += (uint64_t)(fabs(v) == INFINITY);                                    \
            null[e] += fill_nan ? is_nan : (uint64_t)(bits == fill_bits);                 \
        }                                                                                 \
    }                                                                                     \
    double *restrict abs_sum = l->abs + at, *restrict sq_sum = l->sq + at;                \
    if (what & TET_FOLD_NORMS) {                                                          \
        for (uint64_t e = 0; e < run; e++) {                                              \
            abs_sum[e] += fabs(x[e]);                                                     \
            sq_sum[e] += x[e] * x[e];                                                     \
        }                                                                                 \
    }

void tet_lanes_row_scalar(tet_lanes *restrict l, uint64_t at, uint32_t what, double fill,
                          const double *restrict x, uint64_t run, uint64_t fiber)
{
    LANES_ROW_BODY
}

#ifdef TET_HAVE_AVX2_BODY
__attribute__((target("avx2,fma")))
void tet_lanes_row_avx2(tet_lanes *restrict l, uint64_t at, uint32_t what, double fill,
                        const double *restrict x, uint64_t run, uint64_t fiber)
{
    LANES_ROW_BODY
}
#endif

void tet_lanes_reset(tet_lanes *l, uint32_t what, uint64_t run)
{
    if (what & TET_FOLD_MINMAX)
        for (uint64_t e = 0; e < run; e++) {
            l->lo[e] = INFINITY;
            l->hi[e] = -INFINITY;
            l->ilo[e] = l->ihi[e] = l->inan[e] = TET_NO_INDEX;
        }
    if (what & TET_FOLD_COUNTS)
        for (uint64_t e = 0; e < run; e++)
            l->nan[e] = l->inf[e] = l->null[e] = 0;
    if (what & TET_FOLD_NORMS)
        for (uint64_t e = 0; e < run; e++)
            l->abs[e] = l->sq[e] = 0.0;
}

/* The lanes of a group of `rows` rows into cells[0, run), as the fold merges two
 * accumulators; with count_n the rows are added to each cell's n (no sum path counted
 * them). */
void tet_lanes_flush(const tet_lanes *l, uint32_t what, uint64_t rows, int count_n,
                     tet_acc *cells, uint64_t run)
{
    tet_acc b;
    tet_acc_init(&b);
    for (uint64_t e = 0; e < run; e++) {
        if (what & TET_FOLD_MINMAX) {
            b.min = l->lo[e];
            b.max = l->hi[e];
            b.argmin = l->ilo[e];
            b.argmax = l->ihi[e];
            b.first_nan = l->inan[e];
        }
        if (what & TET_FOLD_COUNTS) {
            b.nan_count = l->nan[e];
            b.inf_count = l->inf[e];
            b.null_count = l->null[e];
        }
        if (what & TET_FOLD_NORMS) {
            b.abs_sum = l->abs[e];
            b.sq_sum = l->sq[e];
        }
        b.n = count_n ? (double)rows : 0.0;
        tet_acc_merge(&cells[e], &b, what & TET_FOLD_LANED);
    }
}

/* ---- f32 extremes with group-row positions (the SIMD body is in fold_avx2.c) ---- */

void tet_minmax_row_f32_tail(tet_minmax_lanes *l, const uint8_t *row, uint64_t from,
                             uint64_t run, uint32_t r)
{
    for (uint64_t e = from; e < run; e++) {
        float v;
        memcpy(&v, row + 4 * e, 4);
        if (v != v) {
            if (l->inan[e] == TET_NO_ROW)
                l->inan[e] = r;
            continue;
        }
        if (v < l->lo[e] || l->ilo[e] == TET_NO_ROW) {
            l->lo[e] = v;
            l->ilo[e] = r;
        }
        if (v > l->hi[e] || l->ihi[e] == TET_NO_ROW) {
            l->hi[e] = v;
            l->ihi[e] = r;
        }
    }
}

void tet_minmax_rows_f32_scalar(const uint8_t *bytes, const uint64_t *offsets, uint64_t rows,
                                uint64_t run, tet_minmax_lanes *l)
{
    for (uint64_t r = 0; r < rows; r++)
        tet_minmax_row_f32_tail(l, bytes + offsets[r], 0, run, (uint32_t)r);
}

void tet_minmax_lanes_reset(tet_minmax_lanes *l, uint64_t run)
{
    for (uint64_t e = 0; e < run; e++) {
        l->lo[e] = INFINITY;
        l->hi[e] = -INFINITY;
        l->ilo[e] = l->ihi[e] = l->inan[e] = TET_NO_ROW;
    }
}

void tet_minmax_lanes_flush(const tet_minmax_lanes *l, const uint64_t *fibers, uint64_t rows,
                            int count_n, tet_acc *cells, uint64_t run)
{
    tet_acc b;
    tet_acc_init(&b);
    b.n = count_n ? (double)rows : 0.0;
    for (uint64_t e = 0; e < run; e++) {
        b.min = l->lo[e];
        b.max = l->hi[e];
        b.argmin = l->ilo[e] == TET_NO_ROW ? TET_NO_INDEX : fibers[l->ilo[e]];
        b.argmax = l->ihi[e] == TET_NO_ROW ? TET_NO_INDEX : fibers[l->ihi[e]];
        b.first_nan = l->inan[e] == TET_NO_ROW ? TET_NO_INDEX : fibers[l->inan[e]];
        tet_acc_merge(&cells[e], &b, TET_FOLD_MINMAX);
    }
}

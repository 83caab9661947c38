/* fold.c: tier A/B accumulators.
 *
 * Values are promoted to f64 a block at a time (promote.c), then folded:
 * sums are Neumaier-compensated, moments are computed per block (block mean,
 * then squared deviations while the block is in cache) and Chan-merged, so
 * var/std never suffer sum/sum-of-squares cancellation.  NaN follows NumPy:
 * it propagates through sums and min/max, and arg ops report the first NaN.
 * Ties in arg ops go to the lowest fiber index, whatever the visit order. */
#include <math.h>
#include <string.h>
#include "internal.h"

/* ---- accumulators ----------------------------------------------------------- */

void tet_acc_init(tet_acc *a)
{
    memset(a, 0, sizeof *a);
    a->prod = 1.0;
    a->min = INFINITY;
    a->max = -INFINITY;
    a->argmin = a->argmax = a->first_nan = TET_NO_INDEX;
}

static void neumaier(double *sum, double *c, double x)
{
    const double t = *sum + x;
    if (!isfinite(t)) { /* inf/NaN: the compensation is meaningless; the sum says it all */
        *sum = t;
        return;
    }
    if (fabs(*sum) >= fabs(x))
        *c += (*sum - t) + x;
    else
        *c += (x - t) + *sum;
    *sum = t;
}

/* Chan et al.: merge (nb, mb, m2b) into (n, mean, m2). */
static void chan(double *n, double *mean, double *m2, double nb, double mb, double m2b)
{
    if (nb == 0)
        return;
    if (*n == 0) {
        *n = nb;
        *mean = mb;
        *m2 = m2b;
        return;
    }
    const double total = *n + nb, delta = mb - *mean;
    *mean += delta * (nb / total);
    *m2 += m2b + delta * delta * (*n * nb / total);
    *n = total;
}

/* The plain sum of a block, in the order block_moments adds it (so a sum folded alone
 * is the sum folded with the moments, bit for bit). */
static double block_sum(const double *x, uint64_t n)
{
    double r0 = 0, r1 = 0;
    uint64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        r0 += x[i] + x[i + 1];
        r1 += x[i + 2] + x[i + 3];
    }
    for (; i < n; i++)
        r0 += x[i];
    return r0 + r1;
}

/* Two passes over a block in cache: the sum of x - k, then the squared
 * deviations from the block mean.  *raw is the plain sum of x. */
static void block_moments(const double *x, uint64_t n, double k, double *raw, double *sum,
                          double *m2)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    uint64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += x[i] - k;
        s1 += x[i + 1] - k;
        s2 += x[i + 2] - k;
        s3 += x[i + 3] - k;
    }
    for (; i < n; i++)
        s0 += x[i] - k;
    const double s = (s0 + s1) + (s2 + s3), mean = s / (double)n;
    double q0 = 0, q1 = 0;
    for (i = 0; i + 2 <= n; i += 2) {
        const double d0 = (x[i] - k) - mean, d1 = (x[i + 1] - k) - mean;
        q0 += d0 * d0;
        q1 += d1 * d1;
    }
    for (; i < n; i++)
        q0 += ((x[i] - k) - mean) * ((x[i] - k) - mean);
    *raw = block_sum(x, n);
    *sum = s;
    *m2 = q0 + q1;
}

/* The first finite value a cell sees becomes its shift (NumPy-grade variance for
 * data far from zero: x - shift is exact when x is near it). */
static double first_finite(const double *x, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (isfinite(x[i]))
            return x[i];
    return 0.0;
}

/* One block's moments (plain sum, sum of x - shift, m2 about its mean) into a cell. */
static void absorb_block(tet_acc *a, uint64_t n, double raw, double s, double m2)
{
    neumaier(&a->sum, &a->sum_c, raw);
    chan(&a->n, &a->mean, &a->m2, (double)n, s / (double)n, m2);
}

static void fold_moments(tet_acc *a, const double *x, uint64_t n)
{
    double raw, s, m2;
    if (a->n == 0)
        a->shift = first_finite(x, n);
    block_moments(x, n, a->shift, &raw, &s, &m2);
    absorb_block(a, n, raw, s, m2);
}

void tet_moments_f32_scalar(const uint8_t *src, uint64_t n, double k, double *raw, double *sum,
                            double *m2)
{
    double x[TET_FOLD_BLOCK];
    tet_load_f64(1, src, n, 1, x);
    if (m2 == NULL) {
        *raw = block_sum(x, n);
        *sum = 0.0;
        return;
    }
    block_moments(x, n, k, raw, sum, m2);
}

/* fold_moments for a unit-stride f32 run of any length, in blocks through the active
 * body (no promotion buffer on the SIMD path); with `what` TET_FOLD_SUM, the sum and
 * count alone. */
void tet_fold_moments_f32(tet_acc *a, const uint8_t *src, uint64_t n, uint32_t what)
{
    const tet_moments_f32_fn body = tet_active()->moments_f32;
    if (!(what & TET_FOLD_MOMENTS)) {
        for (uint64_t at = 0; at < n; at += TET_FOLD_BLOCK) {
            const uint64_t m = n - at < TET_FOLD_BLOCK ? n - at : TET_FOLD_BLOCK;
            double raw, s;
            body(src + 4 * at, m, 0.0, &raw, &s, NULL);
            neumaier(&a->sum, &a->sum_c, raw);
            a->n += (double)m;
        }
        return;
    }
    if (a->n == 0) {
        for (uint64_t i = 0; i < n; i++) {
            float v;
            memcpy(&v, src + 4 * i, 4);
            if (isfinite(v)) {
                a->shift = v;
                break;
            }
        }
    }
    for (uint64_t at = 0; at < n; at += TET_FOLD_BLOCK) {
        const uint64_t m = n - at < TET_FOLD_BLOCK ? n - at : TET_FOLD_BLOCK;
        double raw, s, m2;
        body(src + 4 * at, m, a->shift, &raw, &s, &m2);
        absorb_block(a, m, raw, s, m2);
    }
}

void tet_rows_f32_scalar(const uint8_t *bytes, const uint64_t *offsets, uint64_t rows,
                         uint64_t run, const double *center, int square, double *acc)
{
    for (uint64_t r = 0; r < rows; r++) {
        const uint8_t *p = bytes + offsets[r];
        for (uint64_t e = 0; e < run; e++) {
            float v;
            memcpy(&v, p + 4 * e, 4);
            const double d = (double)v - center[e];
            acc[e] += square ? d * d : d;
        }
    }
}

static void fold_nan_moments(tet_acc *a, const double *x, uint64_t n)
{
    double kept[256];
    uint64_t k = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (!isnan(x[i]))
            kept[k++] = x[i];
        if (k == 256 || (i + 1 == n && k > 0)) {
            double raw, s, m2;
            if (a->nn == 0)
                a->nn_shift = first_finite(kept, k);
            block_moments(kept, k, a->nn_shift, &raw, &s, &m2);
            neumaier(&a->nn_sum, &a->nn_sum_c, raw);
            chan(&a->nn, &a->nn_mean, &a->nn_m2, (double)k, s / (double)k, m2);
            k = 0;
        }
    }
}

/* Merge b's moments (relative to b_shift) into a's frame. */
static void merge_moments(double *n, double *mean, double *m2, double *shift, double nb,
                          double mb, double m2b, double b_shift)
{
    if (nb == 0)
        return;
    if (*n == 0) {
        *n = nb;
        *mean = mb;
        *m2 = m2b;
        *shift = b_shift;
        return;
    }
    chan(n, mean, m2, nb, (b_shift - *shift) + mb, m2b);
}

/* Branch-free block min/max first (NaN skipped by the compares); positions are
 * searched only when the block can change the cell's answer. */
static void fold_minmax(tet_acc *a, const double *x, uint64_t n, uint64_t fiber0, uint64_t fstep)
{
    double lo = INFINITY, hi = -INFINITY;
    int nan = 0;
    for (uint64_t i = 0; i < n; i++) {
        const double v = x[i];
        nan |= v != v;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    if (nan) {
        for (uint64_t i = 0; i < n; i++) {
            if (isnan(x[i])) {
                const uint64_t at = fiber0 + i * fstep;
                if (a->first_nan == TET_NO_INDEX || at < a->first_nan)
                    a->first_nan = at;
                break;
            }
        }
    }
    /* Only a block that reaches the current extreme can move its position. */
    const int want_lo = a->argmin == TET_NO_INDEX || lo <= a->min;
    const int want_hi = a->argmax == TET_NO_INDEX || hi >= a->max;
    uint64_t i_lo = want_lo ? n : n + 1, i_hi = want_hi ? n : n + 1;
    for (uint64_t i = 0; i < n && (i_lo == n || i_hi == n); i++) {
        if (i_lo == n && x[i] == lo)
            i_lo = i;
        if (i_hi == n && x[i] == hi)
            i_hi = i;
    }
    if (i_lo < n) {
        const uint64_t at = fiber0 + i_lo * fstep;
        if (a->argmin == TET_NO_INDEX || lo < a->min || (lo == a->min && at < a->argmin)) {
            a->min = lo;
            a->argmin = at;
        }
    }
    if (i_hi < n) {
        const uint64_t at = fiber0 + i_hi * fstep;
        if (a->argmax == TET_NO_INDEX || hi > a->max || (hi == a->max && at < a->argmax)) {
            a->max = hi;
            a->argmax = at;
        }
    }
}

void tet_minmax_f32_scalar(const uint8_t *src, uint64_t n, float *lo, float *hi, int *nan)
{
    float l = INFINITY, h = -INFINITY;
    int found = 0;
    for (uint64_t i = 0; i < n; i++) {
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

/* min/max/arg of a unit-stride f32 run straight from the tile (min and max are
 * exact, so no promotion is needed): the dispatched body finds the extremes,
 * positions are searched only when the run can change the cell's answer. */
void tet_fold_minmax_f32(tet_acc *a, const uint8_t *src, uint64_t n, uint64_t fiber0)
{
    float lo, hi;
    int nan;
    tet_active()->minmax_f32(src, n, &lo, &hi, &nan);
    if (nan) {
        for (uint64_t i = 0; i < n; i++) {
            float v;
            memcpy(&v, src + 4 * i, 4);
            if (v != v) {
                if (a->first_nan == TET_NO_INDEX || fiber0 + i < a->first_nan)
                    a->first_nan = fiber0 + i;
                break;
            }
        }
    }
    const int want_lo = a->argmin == TET_NO_INDEX || (double)lo <= a->min;
    const int want_hi = a->argmax == TET_NO_INDEX || (double)hi >= a->max;
    uint64_t i_lo = want_lo ? n : n + 1, i_hi = want_hi ? n : n + 1;
    for (uint64_t i = 0; i < n && (i_lo == n || i_hi == n); i++) {
        float v;
        memcpy(&v, src + 4 * i, 4);
        if (i_lo == n && v == lo)
            i_lo = i;
        if (i_hi == n && v == hi)
            i_hi = i;
    }
    if (i_lo < n && (a->argmin == TET_NO_INDEX || (double)lo < a->min ||
                     ((double)lo == a->min && fiber0 + i_lo < a->argmin))) {
        a->min = lo;
        a->argmin = fiber0 + i_lo;
    }
    if (i_hi < n && (a->argmax == TET_NO_INDEX || (double)hi > a->max ||
                     ((double)hi == a->max && fiber0 + i_hi < a->argmax))) {
        a->max = hi;
        a->argmax = fiber0 + i_hi;
    }
    a->n += (double)n;
}

/* Fold a block of one cell; element i has fiber index fiber0 + i * fstep. */
void tet_fold_block(tet_acc *a, uint32_t what, double fill, const double *x, uint64_t n,
                    uint64_t fiber0, uint64_t fstep)
{
    if (n == 0)
        return;
    if (what & TET_FOLD_MOMENTS) {
        fold_moments(a, x, n);
    } else {
        if (what & TET_FOLD_SUM)
            neumaier(&a->sum, &a->sum_c, block_sum(x, n));
        a->n += (double)n;
    }
    if (what & TET_FOLD_NAN_MOMENTS)
        fold_nan_moments(a, x, n);
    if (what & TET_FOLD_NORMS) {
        double s1 = 0, s2 = 0;
        for (uint64_t i = 0; i < n; i++) {
            s1 += fabs(x[i]);
            s2 += x[i] * x[i];
        }
        neumaier(&a->abs_sum, &a->abs_c, s1);
        neumaier(&a->sq_sum, &a->sq_c, s2);
    }
    if (what & TET_FOLD_PRODUCT) {
        double p = a->prod;
        for (uint64_t i = 0; i < n; i++)
            p *= x[i];
        a->prod = p;
    }
    if (what & TET_FOLD_MINMAX)
        fold_minmax(a, x, n, fiber0, fstep);
    if (what & TET_FOLD_COUNTS) {
        uint64_t nan = 0, inf = 0, null = 0;
        const int fill_nan = isnan(fill);
        uint64_t fill_bits;
        memcpy(&fill_bits, &fill, 8);
        for (uint64_t i = 0; i < n; i++) {
            const double v = x[i];
            uint64_t bits;
            memcpy(&bits, &v, 8);
            nan += isnan(v) != 0;
            inf += isinf(v) != 0;
            null += fill_nan ? isnan(v) != 0 : bits == fill_bits;
        }
        a->nan_count += nan;
        a->inf_count += inf;
        a->null_count += null;
    }
}

/* One element into moments kept relative to the cell's first finite value. */
static void welford(double *n, double *mean, double *m2, double *shift, double *sum, double *sum_c,
                    double x)
{
    if (*n == 0 && isfinite(x))
        *shift = x;
    const double v = x - *shift, d = v - *mean;
    *n += 1.0;
    *mean += d / *n;
    *m2 += d * (v - *mean);
    neumaier(sum, sum_c, x);
}

/* Fold x[e] into cells[e * cstride] for e < n: one element per cell, as when the
 * innermost axis is kept.  Moments use Welford updates (stable one element at a
 * time); every element shares the fiber index `fiber`. */
void tet_fold_lanes(tet_acc *cells, uint64_t cstride, uint32_t what, double fill, const double *x,
                    uint64_t n, uint64_t fiber)
{
    if (what & TET_FOLD_MOMENTS) {
        for (uint64_t e = 0; e < n; e++) {
            tet_acc *a = &cells[e * cstride];
            welford(&a->n, &a->mean, &a->m2, &a->shift, &a->sum, &a->sum_c, x[e]);
        }
    } else {
        if (what & TET_FOLD_SUM)
            for (uint64_t e = 0; e < n; e++)
                neumaier(&cells[e * cstride].sum, &cells[e * cstride].sum_c, x[e]);
        if (!(what & TET_FOLD_N_COUNTED))
            for (uint64_t e = 0; e < n; e++)
                cells[e * cstride].n += 1.0;
    }
    if (what & TET_FOLD_NAN_MOMENTS) {
        for (uint64_t e = 0; e < n; e++) {
            tet_acc *a = &cells[e * cstride];
            if (!isnan(x[e]))
                welford(&a->nn, &a->nn_mean, &a->nn_m2, &a->nn_shift, &a->nn_sum, &a->nn_sum_c,
                        x[e]);
        }
    }
    if (what & TET_FOLD_NORMS) {
        for (uint64_t e = 0; e < n; e++) {
            tet_acc *a = &cells[e * cstride];
            neumaier(&a->abs_sum, &a->abs_c, fabs(x[e]));
            neumaier(&a->sq_sum, &a->sq_c, x[e] * x[e]);
        }
    }
    if (what & TET_FOLD_PRODUCT)
        for (uint64_t e = 0; e < n; e++)
            cells[e * cstride].prod *= x[e];
    if (what & TET_FOLD_MINMAX) {
        for (uint64_t e = 0; e < n; e++) {
            tet_acc *a = &cells[e * cstride];
            const double v = x[e];
            if (isnan(v)) {
                if (a->first_nan == TET_NO_INDEX || fiber < a->first_nan)
                    a->first_nan = fiber;
                continue;
            }
            if (a->argmin == TET_NO_INDEX || v < a->min || (v == a->min && fiber < a->argmin)) {
                a->min = v;
                a->argmin = fiber;
            }
            if (a->argmax == TET_NO_INDEX || v > a->max || (v == a->max && fiber < a->argmax)) {
                a->max = v;
                a->argmax = fiber;
            }
        }
    }
    if (what & TET_FOLD_COUNTS) {
        const int fill_nan = isnan(fill);
        uint64_t fill_bits;
        memcpy(&fill_bits, &fill, 8);
        for (uint64_t e = 0; e < n; e++) {
            tet_acc *a = &cells[e * cstride];
            const double v = x[e];
            uint64_t bits;
            memcpy(&bits, &v, 8);
            a->nan_count += isnan(v) != 0;
            a->inf_count += isinf(v) != 0;
            a->null_count += fill_nan ? isnan(v) != 0 : bits == fill_bits;
        }
    }
}

/* Moments of `rows` rows that all feed cells[0..run): a true two-pass per lane (the
 * sum of x - shift, then squared deviations from the lane mean), vectorisable across
 * the row and Chan-merged into each cell in its shift frame (a cell's first row gives
 * its shift, so data far from zero keeps its digits).  Rows sit at bytes + offsets[r].
 * Without TET_FOLD_MOMENTS in `what` (a sum or a mean), the first pass alone. */
void tet_fold_row_group(tet_acc *cells, uint32_t what, uint32_t dtype, const uint8_t *bytes,
                        const uint64_t *offsets, uint64_t rows, uint64_t run, uint64_t step,
                        double *buf, double *work)
{
    const int passes = (what & TET_FOLD_MOMENTS) ? 2 : 1;
    double *shift = work, *sum = work + TET_FOLD_BLOCK, *center = work + 2 * TET_FOLD_BLOCK;
    double *dev = work + 3 * TET_FOLD_BLOCK;
    const double c = (double)rows;
    const tet_rows_f32_fn f32 = dtype == TET_DTYPE_F32 && step == 1 ? tet_active()->rows_f32 : NULL;
    tet_load_f64(dtype, bytes + offsets[0], run, step, buf);
    for (uint64_t e = 0; e < run; e++) {
        tet_acc *a = &cells[e];
        if (a->n == 0)
            a->shift = isfinite(buf[e]) ? buf[e] : 0.0;
        shift[e] = a->shift;
        sum[e] = dev[e] = 0.0;
    }
    for (int pass = 0; pass < passes; pass++) {
        const double *at = pass == 0 ? shift : center;
        double *acc = pass == 0 ? sum : dev;
        if (f32 != NULL) {
            f32(bytes, offsets, rows, run, at, pass, acc);
        } else {
            for (uint64_t r = 0; r < rows; r++) {
                tet_load_f64(dtype, bytes + offsets[r], run, step, buf);
                for (uint64_t e = 0; e < run; e++) {
                    const double d = buf[e] - at[e];
                    acc[e] += pass == 0 ? d : d * d;
                }
            }
        }
        if (pass == 0)
            for (uint64_t e = 0; e < run; e++)
                center[e] = shift[e] + sum[e] / c; /* its rounding is second order in m2 */
    }
    for (uint64_t e = 0; e < run; e++) {
        tet_acc *a = &cells[e];
        neumaier(&a->sum, &a->sum_c, sum[e]);
        neumaier(&a->sum, &a->sum_c, c * shift[e]);
        if (passes == 2)
            chan(&a->n, &a->mean, &a->m2, c, sum[e] / c, dev[e]);
        else
            a->n += c;
    }
}

/* b's elements follow a's; the result does not depend on that for indices. */
void tet_acc_merge(tet_acc *a, const tet_acc *b, uint32_t what)
{
    if (what & TET_FOLD_MOMENTS) {
        neumaier(&a->sum, &a->sum_c, b->sum);
        neumaier(&a->sum, &a->sum_c, b->sum_c);
        merge_moments(&a->n, &a->mean, &a->m2, &a->shift, b->n, b->mean, b->m2, b->shift);
    } else {
        if (what & TET_FOLD_SUM) {
            neumaier(&a->sum, &a->sum_c, b->sum);
            neumaier(&a->sum, &a->sum_c, b->sum_c);
        }
        a->n += b->n;
    }
    if (what & TET_FOLD_NAN_MOMENTS) {
        neumaier(&a->nn_sum, &a->nn_sum_c, b->nn_sum);
        neumaier(&a->nn_sum, &a->nn_sum_c, b->nn_sum_c);
        merge_moments(&a->nn, &a->nn_mean, &a->nn_m2, &a->nn_shift, b->nn, b->nn_mean, b->nn_m2,
                      b->nn_shift);
    }
    if (what & TET_FOLD_NORMS) {
        neumaier(&a->abs_sum, &a->abs_c, b->abs_sum);
        neumaier(&a->abs_sum, &a->abs_c, b->abs_c);
        neumaier(&a->sq_sum, &a->sq_c, b->sq_sum);
        neumaier(&a->sq_sum, &a->sq_c, b->sq_c);
    }
    if (what & TET_FOLD_PRODUCT)
        a->prod *= b->prod;
    if (what & TET_FOLD_MINMAX) {
        if (b->first_nan != TET_NO_INDEX && (a->first_nan == TET_NO_INDEX || b->first_nan < a->first_nan))
            a->first_nan = b->first_nan;
        if (b->argmin != TET_NO_INDEX &&
            (a->argmin == TET_NO_INDEX || b->min < a->min || (b->min == a->min && b->argmin < a->argmin))) {
            a->min = b->min;
            a->argmin = b->argmin;
        }
        if (b->argmax != TET_NO_INDEX &&
            (a->argmax == TET_NO_INDEX || b->max > a->max || (b->max == a->max && b->argmax < a->argmax))) {
            a->max = b->max;
            a->argmax = b->argmax;
        }
    }
    if (what & TET_FOLD_COUNTS) {
        a->nan_count += b->nan_count;
        a->inf_count += b->inf_count;
        a->null_count += b->null_count;
    }
}

tet_status tet_fold_vector(const double *x, uint64_t n, uint32_t what, double fill, tet_acc *acc)
{
    tet_acc_init(acc);
    for (uint64_t at = 0; at < n; at += TET_FOLD_BLOCK)
        tet_fold_block(acc, what, fill, x + at, n - at < TET_FOLD_BLOCK ? n - at : TET_FOLD_BLOCK,
                       at, 1);
    return TET_OK;
}

tet_status tet_acc_merge_cells(tet_acc *a, const tet_acc *b, uint64_t n, uint32_t what)
{
    if (n > 0 && (a == NULL || b == NULL))
        return TET_ERR_ARGUMENT;
    for (uint64_t i = 0; i < n; i++)
        tet_acc_merge(&a[i], &b[i], what);
    return TET_OK;
}

/* hist.c: histogram counts, bin for bin those of np.histogram on the f64 values.
 *
 * NumPy's uniform-bin rule: a value's bin is estimated as ((v - lo) / (hi - lo)) * bins
 * truncated, then moved by one bin where v falls below its lower edge or on or above
 * its upper edge (edges from linspace); NaN and values outside [lo, hi] are dropped and
 * the last bin holds hi.  That rule gives the bin the edges define whenever its estimate
 * is within one bin of it, which holds for every edge array whose edges lie within a
 * small fraction of a bin of lo + k * (hi - lo) / bins.  For those (checked once per
 * cell: tet_hist_cell_init) a value whose scaled position (v - lo) * bins / (hi - lo) is
 * not within 2^-16 of a whole number can only be in the bin it truncates to, so the fast
 * bodies multiply, floor and keep it; the few others, and every value of a cell that
 * fails the check, take NumPy's rule itself (tet_hist_bin_exact).  The bins, as
 * integers, are thus the same for every body, and the same as NumPy's.
 *
 * Counts go into four interleaved sub-histograms so that runs of values in one bin
 * (smooth fields) do not wait on one counter's store. */
#include <math.h>
#include <string.h>
#include "internal.h"

#define EDGE_SLACK (1.0 / 1048576.0) /* how far (in bins) an edge may sit from uniform */

uint32_t tet_hist_bin_exact(double v, const double *e, uint32_t bins)
{
    const double lo = e[0], hi = e[bins];
    if (!(v >= lo && v <= hi))
        return bins;
    uint64_t k = (uint64_t)(((v - lo) / (hi - lo)) * (double)bins);
    if (k >= bins)
        k = bins - 1;
    if (v < e[k])
        k--;
    else if (k != bins - 1 && v >= e[k + 1])
        k++;
    return (uint32_t)k;
}

void tet_hist_cell_init(tet_hist_cell *c, const double *e, uint32_t bins)
{
    const double lo = e[0], hi = e[bins], width = hi - lo;
    c->lo = lo;
    c->hi = hi;
    c->scale = (double)bins / width;
    c->fast = 0;
    if (!(isfinite(width) && width > 0 && isfinite(c->scale)))
        return;
    const double step = width / (double)bins;
    /* the rounding of v - lo and of the uniform positions themselves (a few units in the
     * last place of the larger end), in bins */
    const double ulp = ldexp(fmax(fabs(lo), fabs(hi)), -52);
    double worst = 8.0 * ulp;
    for (uint32_t k = 0; k <= bins; k++) {
        const double uniform = k == bins ? hi : lo + (double)k * step;
        const double off = fabs(e[k] - uniform) + 8.0 * ulp;
        worst = off > worst ? off : worst;
    }
    c->fast = worst <= EDGE_SLACK * step;
}

/* The fast rule for one value: its bin, or bins + 1 when it must take the exact rule. */
static inline uint32_t fast_bin(double v, const tet_hist_cell *c, uint32_t bins)
{
    if (!(v >= c->lo && v <= c->hi))
        return bins;
    const double f = (v - c->lo) * c->scale, k = floor(f), frac = f - k;
    return frac >= TET_HIST_MARGIN && frac <= 1.0 - TET_HIST_MARGIN ? (uint32_t)k : bins + 1;
}

void tet_hist_index_f64_scalar(const double *x, uint64_t n, const tet_hist_cell *c,
                               const double *e, uint32_t bins, uint32_t *idx)
{
    for (uint64_t i = 0; i < n; i++) {
        const uint32_t k = c->fast ? fast_bin(x[i], c, bins) : bins + 1;
        idx[i] = k <= bins ? k : tet_hist_bin_exact(x[i], e, bins);
    }
}

void tet_hist_index_f32_scalar(const uint8_t *src, uint64_t n, const tet_hist_cell *c,
                               const double *e, uint32_t bins, uint32_t *idx)
{
    for (uint64_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, src + 4 * i, 4);
        const uint32_t k = c->fast ? fast_bin(v, c, bins) : bins + 1;
        idx[i] = k <= bins ? k : tet_hist_bin_exact(v, e, bins);
    }
}

void tet_hist_count_sub(uint64_t *sub, uint32_t bins, const uint32_t *idx, uint64_t n)
{
    const uint64_t w = (uint64_t)bins + 1; /* each sub-histogram has a slot for drops */
    uint64_t *s0 = sub, *s1 = sub + w, *s2 = sub + 2 * w, *s3 = sub + 3 * w;
    uint64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0[idx[i]]++;
        s1[idx[i + 1]]++;
        s2[idx[i + 2]]++;
        s3[idx[i + 3]]++;
    }
    for (; i < n; i++)
        s0[idx[i]]++;
}

void tet_hist_sub_flush(uint64_t *sub, uint32_t bins, uint64_t *counts)
{
    const uint64_t w = (uint64_t)bins + 1;
    for (uint32_t b = 0; b < bins; b++)
        counts[b] += sub[b] + sub[w + b] + sub[2 * w + b] + sub[3 * w + b];
    memset(sub, 0, 4 * w * sizeof *sub);
}

void tet_hist_block(uint64_t *counts, const double *edges, uint32_t bins, const double *x,
                    uint64_t n, uint64_t cstride)
{
    for (uint64_t i = 0; i < n; i++) {
        const uint32_t k = tet_hist_bin_exact(x[i], edges + i * cstride * (bins + 1), bins);
        if (k < bins)
            counts[i * cstride * bins + k]++;
    }
}

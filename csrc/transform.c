/* transform.c: pass 2 of the transforms, element-wise over the dense selection.
 *
 * Each element belongs to the fold cell its kept axes name (the partial-reduction
 * layout); its cell's parameters (a, b) come from pass 1.  Arithmetic is f64;
 * f32 data is rounded back on store.  Non-finite inputs are written back as they
 * are; an invalid divisor or shift makes the element NaN and is reported. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static int bad_divisor(double b)
{
    return b == 0.0 || !isfinite(b);
}

/* One sweep over the block in row-major order; cell[i] follows the kept axes. */
typedef struct {
    uint32_t ndim;
    uint64_t shape[TET_MAX_NDIM];
    uint64_t cstride[TET_MAX_NDIM]; /* 0 on reduced axes */
} cell_walk;

/* Sets *cells to the number of cells (the product of the kept extents);
 * returns 0 when that product overflows. */
static int walk_init(cell_walk *w, const tet_transform_spec *s, uint64_t *cells)
{
    w->ndim = s->ndim;
    uint64_t c = 1;
    for (int d = (int)s->ndim - 1; d >= 0; d--) {
        w->shape[d] = s->shape[d];
        if ((s->reduce_mask >> d) & 1u) {
            w->cstride[d] = 0;
        } else {
            w->cstride[d] = c;
            if (!tet_mul_ok(c, s->shape[d], &c))
                return 0;
        }
    }
    *cells = c;
    return 1;
}

static double load(const uint8_t *data, uint32_t dtype, uint64_t i)
{
    if (dtype == TET_DTYPE_F32) {
        float v;
        memcpy(&v, data + 4 * i, 4);
        return v;
    }
    double v;
    memcpy(&v, data + 8 * i, 8);
    return v;
}

static void store(uint8_t *data, uint32_t dtype, uint64_t i, double y)
{
    if (dtype == TET_DTYPE_F32) {
        const float v = (float)y;
        memcpy(data + 4 * i, &v, 4);
    } else {
        memcpy(data + 8 * i, &y, 8);
    }
}

/* Call body(i, cell) for every element, innermost axis in runs. */
#define WALK(w, BODY)                                                          \
    do {                                                                       \
        const uint32_t last_ = (w).ndim - 1;                                   \
        uint64_t j_[TET_MAX_NDIM] = {0}, i = 0;                                \
        for (;;) {                                                             \
            uint64_t base_ = 0;                                                \
            for (uint32_t d_ = 0; d_ < last_; d_++)                            \
                base_ += j_[d_] * (w).cstride[d_];                             \
            for (uint64_t e_ = 0; e_ < (w).shape[last_]; e_++, i++) {          \
                const uint64_t cell = base_ + e_ * (w).cstride[last_];         \
                BODY                                                           \
            }                                                                  \
            int d_ = (int)last_ - 1;                                           \
            for (; d_ >= 0; d_--) {                                            \
                if (++j_[d_] < (w).shape[d_])                                  \
                    break;                                                     \
                j_[d_] = 0;                                                    \
            }                                                                  \
            if (d_ < 0)                                                        \
                break;                                                         \
        }                                                                      \
    } while (0)

tet_status tet_transform(tet_transform_spec *s, uint8_t *data, uint64_t n_cells)
{
    if (s->ndim < 1 || s->ndim > TET_MAX_NDIM ||
        (s->dtype != TET_DTYPE_F32 && s->dtype != TET_DTYPE_F64) || s->method > TET_TX_SOFTMAX ||
        s->a == NULL || s->b == NULL)
        return TET_ERR_ARGUMENT;
    cell_walk w;
    uint64_t cells = 0;
    const int fits = walk_init(&w, s, &cells);
    for (uint32_t d = 0; d < s->ndim; d++)
        if (s->shape[d] == 0)
            return TET_OK;
    if (!fits || cells != n_cells)
        return TET_ERR_ARGUMENT;
    const uint32_t dt = s->dtype, m = s->method;
    double *a = s->a;
    const double *b = s->b;
    double *sum = NULL;
    if (m == TET_TX_SOFTMAX) { /* first sweep: the cell's sum of exp(y - max) */
        sum = calloc(n_cells ? n_cells : 1, sizeof(double));
        if (sum == NULL)
            return TET_ERR_NOMEM;
        WALK(w, {
            const double x = load(data, dt, i);
            if (isfinite(x))
                sum[cell] += exp(x - a[cell]);
        });
    } else if (m == TET_TX_LOG1P || m == TET_TX_SQRT) { /* first sweep: the finite min */
        for (uint64_t c = 0; c < n_cells; c++)
            a[c] = INFINITY;
        WALK(w, {
            const double x = load(data, dt, i);
            if (isfinite(x) && x < a[cell])
                a[cell] = x;
        });
        for (uint64_t c = 0; c < n_cells; c++)
            a[c] = isfinite(a[c]) ? a[c] : 0.0;
    }
    s->n_bad = 0;
    WALK(w, {
        const double x = load(data, dt, i);
        if (isfinite(x)) {
            double y;
            int bad = 0;
            switch (m) {
            case TET_TX_AFFINE: /* x - 0 and x / 1 are exact, so one form serves all six */
                bad = bad_divisor(b[cell]);
                y = (x - a[cell]) / b[cell];
                break;
            case TET_TX_LOG1P:
                y = log1p(x - a[cell]);
                bad = isnan(y);
                break;
            case TET_TX_SQRT:
                bad = x - a[cell] < 0 || isnan(x - a[cell]);
                y = sqrt(x - a[cell]);
                break;
            default: /* softmax */
                bad = bad_divisor(sum[cell]);
                y = exp(x - a[cell]) / sum[cell];
                break;
            }
            if (bad) {
                y = NAN;
                if (s->n_bad < TET_TX_MAX_BAD)
                    s->bad[s->n_bad] = i;
                s->n_bad++;
            }
            store(data, dt, i, y);
        }
    });
    free(sum);
    return TET_OK;
}

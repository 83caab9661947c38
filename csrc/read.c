/* read.c: box reads.  One call walks every tile a box touches: worker threads claim
 * tiles from a shared counter, decode into a buffer they own (sized before the loop),
 * and copy their sub-box.  Tiles write disjoint parts of the output, so workers never
 * lock. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

typedef struct {
    tet_walk w;             /* first: the box, its touch set, the workers' reports */
    uint8_t *dst;
    uint64_t next;
    tet_copy_strided_fn strided;
    const tet_mask *mask;   /* NULL: a plain copy */
    uint32_t out_dtype;     /* with a mask: 0 the dataset's float dtype, or TET_DTYPE_F64 */
} read_ctx;

/* A quiet NaN of a float dtype, as its little-endian bytes. */
static void nan_bytes(uint32_t dtype, uint8_t *out)
{
    if (dtype == TET_DTYPE_F32) {
        const float f = NAN;
        memcpy(out, &f, 4);
    } else if (dtype == TET_DTYPE_F16) {
        const uint16_t h = 0x7E00;
        memcpy(out, &h, 2);
    } else {
        const double d = NAN;
        memcpy(out, &d, 8);
    }
}

/* Copy one tile's sub-box row by row with the mask's fills read as NaN: promoted to
 * f64 (out_dtype TET_DTYPE_F64), or copied in the dataset's float dtype with NaN
 * written over each fill (out_dtype 0). */
static void masked_copy(const read_ctx *c, const tet_tile_view *v)
{
    const tet_tiles *g = c->w.g;
    const uint32_t nd = g->ndim, last = nd - 1;
    const uint64_t es = g->elem_size, oes = c->out_dtype == TET_DTYPE_F64 ? 8 : es;
    uint64_t tstride[TET_MAX_NDIM], ostride[TET_MAX_NDIM], j[TET_MAX_NDIM] = {0};
    uint64_t s = 1, o = 1;
    for (int d = (int)nd - 1; d >= 0; d--) {
        tstride[d] = s;
        s *= v->tile[d];
        ostride[d] = o;
        o *= c->w.t.out_shape[d];
    }
    const uint64_t run = v->count[last], step = c->w.b->step[last];
    double buf[TET_FOLD_BLOCK];
    uint8_t hit[TET_FOLD_BLOCK], nan[8];
    nan_bytes(g->dtype, nan);
    for (;;) {
        uint64_t src = 0, dst = 0;
        for (uint32_t d = 0; d < nd; d++) {
            const uint64_t jj = d == last ? 0 : j[d];
            src += (v->src_start[d] + jj * c->w.b->step[d]) * tstride[d];
            dst += (v->dst_start[d] + jj) * ostride[d];
        }
        const uint8_t *p = v->bytes + src * es;
        uint8_t *q = c->dst + dst * oes;
        for (uint64_t k = 0; k < run; k += TET_FOLD_BLOCK) {
            const uint64_t n = run - k < TET_FOLD_BLOCK ? run - k : TET_FOLD_BLOCK;
            const uint8_t *pk = p + k * step * es;
            uint8_t *qk = q + k * oes;
            tet_load_f64(g->dtype, pk, n, step, buf);
            const uint64_t hits = tet_mask_hits(g->dtype, pk, n, step, buf, c->mask, hit);
            if (c->out_dtype == TET_DTYPE_F64) {
                for (uint64_t i = 0; hits && i < n; i++)
                    if (hit[i])
                        buf[i] = NAN;
                memcpy(qk, buf, n * 8);
                continue;
            }
            if (step == 1)
                memcpy(qk, pk, n * es);
            else
                c->strided(qk, pk, n, step, (uint32_t)es);
            for (uint64_t i = 0; hits && i < n; i++)
                if (hit[i])
                    memcpy(qk + i * es, nan, es);
        }
        if (!tet_next_row(j, v->count, nd))
            break;
    }
}

/* Decode (if needed) and copy one touched tile. */
static tet_status read_one(read_ctx *c, uint64_t i, uint8_t *scratch, tet_dctx *dctx,
                           uint64_t *linear_out, uint64_t *detail)
{
    tet_tile_view v;
    tet_status st = tet_tile_open(c->w.g, c->w.b, &c->w.t, i, scratch, dctx, &v, detail);
    *linear_out = v.id;
    if (st != TET_OK)
        return st;
    if (c->mask != NULL) {
        masked_copy(c, &v);
        return TET_OK;
    }
    tet_box_copy(c->dst, c->w.t.out_shape, v.dst_start, v.bytes, v.tile, v.src_start, c->w.b->step,
                 v.count, c->w.g->ndim, c->w.g->elem_size, c->strided);
    return TET_OK;
}

static void read_worker(void *vctx, uint32_t w)
{
    read_ctx *c = vctx;
    tet_report *rep = &c->w.reports[w];
    tet_scratch s;
    if (!tet_scratch_open(&s, c->w.scratch_len > 0 ? TET_SCRATCH_DECODE : TET_SCRATCH_NONE,
                          c->w.scratch_len, rep, &c->w.stop))
        return;
    for (;;) {
        uint64_t i = tet_claim(&c->next, c->w.t.total);
        if (i >= c->w.t.total || __atomic_load_n(&c->w.stop, __ATOMIC_RELAXED))
            break;
        uint64_t linear = 0, detail = 0;
        tet_status st = read_one(c, i, s.buf, s.dctx, &linear, &detail);
        if (st != TET_OK) {
            tet_report_fail(rep, st, (int64_t)linear, detail);
            __atomic_store_n(&c->w.stop, 1, __ATOMIC_RELAXED);
            break;
        }
    }
    tet_scratch_close(&s);
}

static tet_status read_box(const tet_tiles *tiles, const tet_box *box, const tet_mask *mask,
                           uint32_t out_dtype, uint8_t *dst, uint32_t threads, tet_report *report)
{
    tet_report_clear(report);
    const tet_status valid = tet_box_valid(tiles, box);
    if (valid != TET_OK)
        return tet_report_refuse(report, valid);
    if (mask != NULL) {
        const uint32_t dt = tiles->dtype;
        const int native = out_dtype == 0 &&
                           (dt == TET_DTYPE_F32 || dt == TET_DTYPE_F64 || dt == TET_DTYPE_F16);
        if (mask->n > TET_MASK_MAX || dt < TET_DTYPE_F32 || dt > TET_DTYPE_LAST ||
            !(native || out_dtype == TET_DTYPE_F64))
            return tet_report_refuse(report, TET_ERR_ARGUMENT);
    }
    read_ctx *c = tet_walk_new(tiles, box, sizeof *c, report);
    if (c == NULL || tet_walk_scan(&c->w, report) != TET_OK)
        return report->status;
    c->dst = dst;
    c->strided = tet_active()->copy_strided;
    c->mask = mask;
    c->out_dtype = out_dtype;
    if ((uint64_t)threads > c->w.t.total)
        threads = (uint32_t)c->w.t.total;
    const tet_status st = tet_walk_run(&c->w, read_worker, threads, report);
    tet_walk_free(&c->w);
    return st;
}

tet_status tet_read_box(const tet_tiles *tiles, const tet_box *box, uint8_t *dst, uint32_t threads,
                        tet_report *report)
{
    return read_box(tiles, box, NULL, 0, dst, threads, report);
}

tet_status tet_read_box_masked(const tet_tiles *tiles, const tet_box *box, const tet_mask *mask,
                               uint32_t out_dtype, uint8_t *dst, uint32_t threads,
                               tet_report *report)
{
    if (mask == NULL) {
        tet_report_clear(report);
        return tet_report_refuse(report, TET_ERR_ARGUMENT);
    }
    return read_box(tiles, box, mask, out_dtype, dst, threads, report);
}

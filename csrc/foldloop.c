/* foldloop.c: the fold loop.  When the box's tiles fall into at least `parts` groups
 * that feed disjoint cells (tiles sharing their coordinates on the kept axes, e.g. the
 * tile columns of a reduction over axis 0), workers claim whole groups and fold each
 * group's tiles in grid order straight into the caller's cells.  Otherwise the tiles
 * are cut into `parts` fixed ranges; workers claim whole parts, fold each part's tiles
 * in order into that part's accumulators (fold.c), and the parts are merged in order.
 * Either way the choice and the order depend on the geometry alone, so results do not
 * depend on the thread count. */
#define _POSIX_C_SOURCE 200112L /* posix_madvise */
#include <sys/mman.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

typedef struct {
    tet_walk w;                 /* first: the box, its touch set, the workers' reports */
    const tet_fold_spec *spec;
    tet_acc *cells;             /* part 0: the caller's array */
    tet_acc *extra;             /* parts 1.. */
    uint64_t *counts_extra;     /* histogram counts of parts 1.. */
    tet_hist_cell *hist;        /* [n_cells] histogram mode: each cell's range and rule */
    uint64_t n_cells, n_parts, next_part;
    uint64_t n_groups;          /* > 0: the kept-cell split (n_parts is then 1) */
    uint64_t cell_stride[TET_MAX_NDIM];   /* kept axes: stride in the cell index */
    uint64_t fiber_stride[TET_MAX_NDIM];  /* reduced axes: stride in the fiber index */
} fold_ctx;

/* Rows of one tile that feed the same cells (a kept innermost axis). */
typedef struct {
    uint64_t cell, rows;
    uint64_t offset[TET_GROUP_ROWS];
    uint64_t fiber[TET_GROUP_ROWS];
    double work[4 * TET_FOLD_BLOCK];
} row_group;

/* A group's rows into its cells: sums and moments (two-pass), then extremes, counts
 * and norms a block of lanes at a time, each row promoted (and masked) block by block. */
static void group_flush(const fold_ctx *c, const tet_tile_view *v, uint32_t summed,
                        uint32_t laned, uint64_t run, tet_acc *cells, double *buf, row_group *grp,
                        tet_lanes *lanes, tet_minmax_lanes *mm)
{
    const tet_tiles *g = c->w.g;
    const uint64_t step = c->w.b->step[g->ndim - 1], es = g->elem_size;
    const tet_mask *mask = c->spec->mask != NULL && c->spec->mask->n > 0 ? c->spec->mask : NULL;
    if (grp->rows > 0 && summed)
        tet_fold_row_group(&cells[grp->cell], summed, g->dtype, v->bytes, grp->offset, grp->rows,
                           run, step, buf, grp->work);
    if (grp->rows > 0 && laned == TET_FOLD_MINMAX && g->dtype == TET_DTYPE_F32 && step == 1 &&
        mask == NULL) { /* extremes of f32 rows need no promotion */
        tet_minmax_lanes_reset(mm, run);
        tet_active()->minmax_rows_f32(v->bytes, grp->offset, grp->rows, run, mm);
        tet_minmax_lanes_flush(mm, grp->fiber, grp->rows, !summed, &cells[grp->cell], run);
    } else if (grp->rows > 0 && laned) {
        const tet_lanes_row_fn row = tet_active()->lanes_row;
        tet_lanes_reset(lanes, laned, run);
        for (uint64_t r0 = 0; r0 < grp->rows; r0 += TET_LANE_ROWS) {
            const uint64_t r1 = r0 + TET_LANE_ROWS < grp->rows ? r0 + TET_LANE_ROWS : grp->rows;
            for (uint64_t e0 = 0; e0 < run; e0 += TET_LANE_BLOCK) {
                const uint64_t m = run - e0 < TET_LANE_BLOCK ? run - e0 : TET_LANE_BLOCK;
                for (uint64_t r = r0; r < r1; r++) {
                    const uint8_t *p = v->bytes + grp->offset[r] + e0 * step * es;
                    tet_load_f64(g->dtype, p, m, step, buf);
                    if (mask != NULL)
                        tet_mask_apply(g->dtype, p, m, step, mask, buf);
                    row(lanes, e0, laned, c->spec->fill, buf, m, grp->fiber[r]);
                }
            }
        }
        tet_lanes_flush(lanes, laned, grp->rows, !summed, &cells[grp->cell], run);
    }
    grp->rows = 0;
}

/* Fold the innermost runs of one decoded tile into `cells`. */
/* Per-worker buffers of the fold loop. */
typedef struct {
    double *buf;                /* [TET_FOLD_BLOCK] a block promoted to f64 */
    row_group *grp;
    tet_lanes *lanes;           /* NULL unless the fold has extremes, counts or norms */
    tet_minmax_lanes *mm;
    uint32_t *idx;              /* [TET_FOLD_BLOCK] histogram bins of a block */
    uint64_t *sub;              /* one-cell histograms: 4 sub-histograms of bins + 1 */
} fold_bufs;

/* A run of one histogram cell: bins by the active body, counted into the worker's
 * sub-histograms (one cell) or straight into the cell's counts. */
static void hist_run(const fold_ctx *c, const uint8_t *p, uint64_t run, uint64_t step,
                     uint64_t cell, uint64_t *counts, const fold_bufs *fb)
{
    const tet_tiles *g = c->w.g;
    const tet_mask *mask = c->spec->mask != NULL && c->spec->mask->n > 0 ? c->spec->mask : NULL;
    const uint32_t bins = c->spec->bins;
    const double *e = c->spec->edges + cell * (bins + 1);
    const tet_kernels *k = tet_active();
    for (uint64_t at = 0; at < run; at += TET_FOLD_BLOCK) {
        const uint64_t n = run - at < TET_FOLD_BLOCK ? run - at : TET_FOLD_BLOCK;
        const uint8_t *q = p + at * step * g->elem_size;
        if (mask == NULL && step == 1 && g->dtype == TET_DTYPE_F32) {
            k->hist_index_f32(q, n, &c->hist[cell], e, bins, fb->idx);
        } else {
            tet_load_f64(g->dtype, q, n, step, fb->buf);
            if (mask != NULL)
                tet_mask_apply(g->dtype, q, n, step, mask, fb->buf);
            k->hist_index_f64(fb->buf, n, &c->hist[cell], e, bins, fb->idx);
        }
        if (fb->sub != NULL) {
            tet_hist_count_sub(fb->sub, bins, fb->idx, n);
        } else {
            uint64_t *out = counts + cell * bins;
            for (uint64_t i = 0; i < n; i++)
                if (fb->idx[i] < bins)
                    out[fb->idx[i]]++;
        }
    }
}

static void fold_tile(const fold_ctx *c, const tet_tile_view *v, tet_acc *cells, uint64_t *counts,
                      const fold_bufs *fb)
{
    double *buf = fb->buf;
    row_group *grp = fb->grp;
    tet_lanes *lanes = fb->lanes;
    tet_minmax_lanes *mm = fb->mm;
    const tet_tiles *g = c->w.g;
    const uint32_t nd = g->ndim, last = nd - 1, what = c->spec->what;
    const double fill = c->spec->fill;
    /* fills read as NaN: every run goes through the f64 block path, where they are */
    const tet_mask *mask = c->spec->mask != NULL && c->spec->mask->n > 0 ? c->spec->mask : NULL;
    uint64_t tstride[TET_MAX_NDIM], j[TET_MAX_NDIM] = {0};
    uint64_t s = 1;
    for (int d = (int)nd - 1; d >= 0; d--) {
        tstride[d] = s;
        s *= v->tile[d];
    }
    const int last_reduced = (c->spec->reduce_mask >> last) & 1u;
    const uint64_t run = v->count[last], step = c->w.b->step[last];
    /* a kept innermost axis: whole rows are added lane-wise into the run of cells they
     * feed, a group of rows at a time: sums and moments from the raw rows (two-pass, no
     * divisions), extremes, counts and norms from each promoted row */
    const uint32_t summed = mask == NULL ? what & (TET_FOLD_MOMENTS | TET_FOLD_SUM) : 0;
    const uint32_t laned = what & TET_FOLD_LANED;
    const int grouped = !last_reduced && (summed | laned) && run <= TET_FOLD_BLOCK;
    grp->rows = 0;
    for (;;) {
        uint64_t src = 0, cell = 0, fiber = 0;
        for (uint32_t d = 0; d < nd; d++) {
            const uint64_t jj = d == last ? 0 : j[d];
            src += (v->src_start[d] + jj * c->w.b->step[d]) * tstride[d];
            cell += (v->dst_start[d] + jj) * c->cell_stride[d];
            fiber += (v->dst_start[d] + jj) * c->fiber_stride[d];
        }
        const uint8_t *p = v->bytes + src * g->elem_size;
        if (counts != NULL && last_reduced) { /* histogram mode, one cell per run */
            hist_run(c, p, run, step, cell, counts, fb);
            goto next;
        }
        if (grouped) {
            if (grp->rows > 0 && (cell != grp->cell || grp->rows == TET_GROUP_ROWS))
                group_flush(c, v, summed, laned, run, cells, buf, grp, lanes, mm);
            grp->cell = cell;
            grp->offset[grp->rows] = src * g->elem_size;
            grp->fiber[grp->rows++] = fiber;
            const uint32_t rest = what & ~(summed | laned);
            if (rest != 0) {
                tet_load_f64(g->dtype, p, run, step, buf);
                if (mask != NULL)
                    tet_mask_apply(g->dtype, p, run, step, mask, buf);
                tet_fold_lanes(&cells[cell], 1, rest | TET_FOLD_N_COUNTED, fill, buf, run, fiber);
            }
            goto next;
        }
        if (mask == NULL && last_reduced && step == 1 && g->dtype == TET_DTYPE_F32 &&
            what == TET_FOLD_MINMAX && c->fiber_stride[last] == 1) {
            tet_fold_minmax_f32(&cells[cell], p, run, fiber); /* no f64 promotion needed */
            goto next;
        }
        if (mask == NULL && last_reduced && step == 1 && g->dtype == TET_DTYPE_F32 &&
            (what == TET_FOLD_MOMENTS || what == TET_FOLD_SUM)) {
            tet_fold_moments_f32(&cells[cell], p, run, what);
            goto next;
        }
        for (uint64_t k = 0; k < run; k += TET_FOLD_BLOCK) {
            const uint64_t n = run - k < TET_FOLD_BLOCK ? run - k : TET_FOLD_BLOCK;
            tet_load_f64(g->dtype, p + k * step * g->elem_size, n, step, buf);
            if (mask != NULL)
                tet_mask_apply(g->dtype, p + k * step * g->elem_size, n, step, mask, buf);
            if (counts != NULL) { /* histogram mode, the innermost axis kept: a cell each */
                const uint32_t bins = c->spec->bins;
                const uint64_t cs = c->cell_stride[last], at = cell + k * cs;
                tet_hist_block(counts + at * bins, c->spec->edges + at * (bins + 1), bins, buf, n,
                               cs);
            } else if (last_reduced) {
                tet_fold_block(&cells[cell], what, fill, buf, n, fiber + k * c->fiber_stride[last],
                               c->fiber_stride[last]);
            } else {
                tet_fold_lanes(&cells[cell + k * c->cell_stride[last]], c->cell_stride[last],
                               what, fill, buf, n, fiber);
            }
        }
    next:
        if (!tet_next_row(j, v->count, nd))
            break;
    }
    group_flush(c, v, summed, laned, run, cells, buf, grp, lanes, mm); /* rows of this tile */
}

/* A linear scan reads the file front to back: ask for the window ahead of the tile
 * about to be folded, so the kernel reads it while this one is being folded. */
static void read_ahead(const tet_tiles *g, uint64_t window, uint64_t id, uint64_t *ahead)
{
    const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    const uint64_t end = g->offset[id] + g->stored[id];
    if (end <= *ahead)
        return;
    const uint64_t from = (*ahead > g->offset[id] ? *ahead : g->offset[id]) / page * page;
    const uint64_t to = from + window < g->file_len ? from + window : g->file_len;
    (void)posix_madvise((void *)(uintptr_t)(g->file + from), to - from, POSIX_MADV_WILLNEED);
    *ahead = to;
}

/* Touch-set item k (in grid order) of kept-axis group g. */
static uint64_t group_item(const fold_ctx *c, uint64_t g, uint64_t k)
{
    const tet_touch_set *t = &c->w.t;
    uint64_t i = 0, stride = 1;
    for (int d = (int)t->ndim - 1; d >= 0; d--) {
        uint64_t *from = (c->spec->reduce_mask >> d) & 1u ? &k : &g;
        i += (*from % t->len[d]) * stride;
        *from /= t->len[d];
        stride *= t->len[d];
    }
    return i;
}

static void fold_worker(void *vctx, uint32_t w)
{
    fold_ctx *c = vctx;
    tet_report *rep = &c->w.reports[w];
    tet_scratch s;
    if (!tet_scratch_open(&s, c->w.scratch_len ? TET_SCRATCH_DECODE : TET_SCRATCH_NONE,
                          c->w.scratch_len, rep, &c->w.stop))
        return;
    const int laned = (c->spec->what & TET_FOLD_LANED) != 0, hist = c->spec->bins > 0;
    fold_bufs fb = {
        .buf = malloc(TET_FOLD_BLOCK * sizeof(double)),
        .grp = malloc(sizeof(row_group)),
        .lanes = laned ? malloc(sizeof(tet_lanes)) : NULL,
        .mm = laned ? malloc(sizeof(tet_minmax_lanes)) : NULL,
        .idx = hist ? malloc(TET_FOLD_BLOCK * sizeof(uint32_t)) : NULL,
        .sub = hist && c->n_cells == 1 ? calloc(4 * ((size_t)c->spec->bins + 1), 8) : NULL,
    };
    if (fb.buf == NULL || fb.grp == NULL || (laned && (fb.lanes == NULL || fb.mm == NULL)) ||
        (hist && (fb.idx == NULL || (c->n_cells == 1 && fb.sub == NULL)))) {
        tet_report_fail(rep, TET_ERR_NOMEM, -1, c->w.scratch_len);
        __atomic_store_n(&c->w.stop, 1, __ATOMIC_RELAXED);
        goto done;
    }
    const uint64_t units = c->n_groups ? c->n_groups : c->n_parts;
    for (;;) {
        const uint64_t part = tet_claim(&c->next_part, units);
        if (part >= units || __atomic_load_n(&c->w.stop, __ATOMIC_RELAXED))
            break;
        const uint64_t own = c->n_groups ? 0 : part; /* groups all fold into part 0 */
        tet_acc *cells = own == 0 ? c->cells : c->extra + (own - 1) * c->n_cells;
        uint64_t *counts = c->spec->bins == 0 ? NULL
                           : own == 0 ? c->spec->counts
                                      : c->counts_extra + (own - 1) * c->n_cells * c->spec->bins;
        const uint64_t size = c->w.t.total / units; /* a group's tiles: they divide evenly */
        const uint64_t lo = c->n_groups ? 0 : part * c->w.t.total / c->n_parts;
        const uint64_t hi = c->n_groups ? size : (part + 1) * c->w.t.total / c->n_parts;
        uint64_t ahead = 0;
        for (uint64_t k = lo; k < hi; k++) {
            const uint64_t i = c->n_groups ? group_item(c, part, k) : k;
            tet_tile_view v;
            uint64_t detail = 0;
            tet_status st = tet_tile_open(c->w.g, c->w.b, &c->w.t, i, s.buf, s.dctx, &v, &detail);
            if (st != TET_OK) {
                tet_report_fail(rep, st, (int64_t)v.id, detail);
                __atomic_store_n(&c->w.stop, 1, __ATOMIC_RELAXED);
                goto done;
            }
            if (c->spec->scan_window > 0 && c->n_parts == 1)
                read_ahead(c->w.g, c->spec->scan_window, v.id, &ahead);
            fold_tile(c, &v, cells, counts, &fb);
        }
        if (fb.sub != NULL)
            tet_hist_sub_flush(fb.sub, c->spec->bins, counts);
    }
done:
    free(fb.sub);
    free(fb.idx);
    free(fb.mm);
    free(fb.lanes);
    free(fb.grp);
    free(fb.buf);
    tet_scratch_close(&s);
}

tet_status tet_fold_box(const tet_tiles *tiles, const tet_box *box, const tet_fold_spec *spec,
                        tet_acc *cells, uint64_t n_cells, tet_report *report)
{
    tet_report_clear(report);
    const tet_status valid = tet_box_valid(tiles, box);
    if (valid != TET_OK)
        return tet_report_refuse(report, valid);
    if (spec->parts == 0 || tiles->dtype < TET_DTYPE_F32 ||
        tiles->dtype > TET_DTYPE_LAST ||
        (spec->bins > 0 && (spec->edges == NULL || spec->counts == NULL)) ||
        (spec->mask != NULL && spec->mask->n > TET_MASK_MAX))
        return tet_report_refuse(report, TET_ERR_ARGUMENT);
    fold_ctx *c = tet_walk_new(tiles, box, sizeof *c, report);
    if (c == NULL)
        return report->status;
    const tet_touch_set *t = &c->w.t;
    uint64_t cs = 1, fs = 1;
    for (int d = (int)tiles->ndim - 1; d >= 0; d--) {
        if ((spec->reduce_mask >> d) & 1u) {
            c->fiber_stride[d] = fs;
            fs *= t->out_shape[d];
        } else {
            c->cell_stride[d] = cs;
            cs *= t->out_shape[d];
        }
    }
    uint64_t groups = 1;
    for (uint32_t d = 0; d < tiles->ndim; d++)
        if (!((spec->reduce_mask >> d) & 1u))
            groups *= t->len[d];
    const int split = spec->parts > 1 && groups > 1 && groups >= spec->parts;
    const uint64_t parts = split ? 1 : spec->parts < t->total ? spec->parts : t->total;
    uint64_t n_counts = 0, extra_bytes = 0, extra_counts = 0, hist_bytes = 0;
    if (cs != n_cells || !tet_mul_ok(n_cells, spec->bins, &n_counts) ||
        !tet_mul_ok(n_cells, sizeof(tet_hist_cell), &hist_bytes) ||
        !tet_mul_ok((parts - 1) * sizeof(tet_acc), n_cells, &extra_bytes) ||
        !tet_mul_ok(parts - 1, n_counts, &extra_counts) || extra_counts > UINT64_MAX / 8) {
        tet_walk_free(&c->w);
        return tet_report_refuse(report, cs != n_cells ? TET_ERR_ARGUMENT : TET_ERR_OVERFLOW);
    }
    if (tet_walk_scan(&c->w, report) != TET_OK)
        return report->status;
    c->spec = spec;
    c->cells = cells;
    c->n_cells = n_cells;
    c->n_parts = parts;
    c->n_groups = split ? groups : 0;
    c->extra = parts > 1 ? malloc(extra_bytes) : NULL;
    c->counts_extra = parts > 1 && n_counts ? calloc(extra_counts, sizeof(uint64_t)) : NULL;
    c->hist = n_counts ? malloc(hist_bytes) : NULL;
    if ((parts > 1 && (c->extra == NULL || (n_counts && c->counts_extra == NULL))) ||
        (n_counts && c->hist == NULL)) {
        free(c->hist);
        free(c->extra);
        free(c->counts_extra);
        tet_walk_free(&c->w);
        return tet_report_refuse(report, TET_ERR_NOMEM);
    }
    if (n_counts) {
        memset(spec->counts, 0, n_counts * sizeof(uint64_t));
        for (uint64_t i = 0; i < n_cells; i++)
            tet_hist_cell_init(&c->hist[i], spec->edges + i * (spec->bins + 1), spec->bins);
    }
    for (uint64_t i = 0; i < n_cells; i++)
        tet_acc_init(&cells[i]);
    for (uint64_t i = 0; i < (parts - 1) * n_cells; i++)
        tet_acc_init(&c->extra[i]);
    uint32_t threads = spec->threads ? spec->threads : 1;
    const uint64_t units = split ? groups : parts;
    if ((uint64_t)threads > units)
        threads = (uint32_t)units;
    if (tet_walk_run(&c->w, fold_worker, threads, report) == TET_OK)
        for (uint64_t p = 1; p < parts; p++) {
            (void)tet_acc_merge_cells(cells, &c->extra[(p - 1) * n_cells], n_cells, spec->what);
            for (uint64_t i = 0; i < n_counts; i++)
                spec->counts[i] += c->counts_extra[(p - 1) * n_counts + i];
        }
    free(c->hist);
    free(c->extra);
    free(c->counts_extra);
    tet_walk_free(&c->w);
    return report->status;
}

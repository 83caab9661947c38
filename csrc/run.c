/* run.c: the chunk loops.  One call walks a whole plan: worker threads claim
 * chunks from a shared counter, decode into a buffer they own (sized before
 * the loop), and copy their sub-box.  Chunks write disjoint parts of the
 * output, so workers never lock. */
#define _POSIX_C_SOURCE 200112L /* posix_madvise */
#include <math.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"


/* ---- work sharing ------------------------------------------------------- */

uint64_t tet_claim(uint64_t *counter, uint64_t n)
{
    uint64_t i = __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
    return i < n ? i : n;
}

void tet_report_merge(tet_report *into, const tet_report *from)
{
    if (from->status == TET_OK)
        return;
    if (into->status == TET_OK || (from->chunk >= 0 && from->chunk < into->chunk))
        *into = *from;
}

typedef struct {
    tet_worker_fn work;
    void *ctx;
    uint32_t index;
} thread_arg;

static void *thread_main(void *p)
{
    thread_arg *a = p;
    a->work(a->ctx, a->index);
    return NULL;
}

tet_status tet_parallel(tet_worker_fn work, void *ctx, uint32_t threads)
{
    if (threads < 1)
        threads = 1;
    if (threads > TET_MAX_THREADS)
        threads = TET_MAX_THREADS;
    pthread_t ids[TET_MAX_THREADS];
    thread_arg args[TET_MAX_THREADS];
    uint32_t started = 0;
    for (uint32_t t = 1; t < threads; t++) {
        args[t].work = work;
        args[t].ctx = ctx;
        args[t].index = t;
        if (pthread_create(&ids[t], NULL, thread_main, &args[t]) != 0)
            break;
        started = t;
    }
    work(ctx, 0);
    for (uint32_t t = 1; t <= started; t++)
        pthread_join(ids[t], NULL);
    return TET_OK;
}

/* Every entry point starts with a clean report and refuses with one status. */
static void report_clear(tet_report *r)
{
    memset(r, 0, sizeof *r);
    r->chunk = -1;
}

static int32_t refuse(tet_report *r, tet_status status)
{
    r->status = status;
    return status;
}

/* ---- box reads ---------------------------------------------------------- */

/* The tiles a box touches, axis by axis: every selected element sits in its
 * own tile when the step is at least a tile, otherwise every tile between the
 * first and the last selected element is touched. */
typedef struct {
    uint32_t ndim;
    uint64_t len[TET_MAX_NDIM];      /* touched tiles per axis */
    uint64_t *coord[TET_MAX_NDIM];   /* their grid coordinates */
    uint64_t grid_stride[TET_MAX_NDIM];
    uint64_t out_shape[TET_MAX_NDIM];
    uint64_t total;
} touch_set;

static void touch_free(touch_set *t)
{
    for (uint32_t d = 0; d < t->ndim; d++)
        free(t->coord[d]);
}

/* The box against the geometry.  Past this check every size the loops derive
 * from them fits: the grid's tile count, the largest tile's bytes and the
 * selection's elements and bytes (each below 2^63), so products of a tile's or
 * the selection's extents never wrap. */
static tet_status box_check(const tet_tiles *g, const tet_box *b)
{
    if (g->ndim < 1 || g->ndim > TET_MAX_NDIM || g->elem_size == 0)
        return TET_ERR_ARGUMENT;
    uint64_t tiles = 1, tile_bytes = g->elem_size, sel_bytes = g->elem_size;
    for (uint32_t d = 0; d < g->ndim; d++) {
        const uint64_t n = g->shape[d], cs = g->chunk_shape[d];
        if (n == 0 || cs == 0 || b->step[d] == 0 || b->start[d] >= b->stop[d] || b->stop[d] > n)
            return TET_ERR_ARGUMENT;
        const uint64_t sel = (b->stop[d] - b->start[d] - 1) / b->step[d] + 1;
        if (!tet_mul_ok(tiles, (n - 1) / cs + 1, &tiles) ||
            !tet_mul_ok(tile_bytes, cs < n ? cs : n, &tile_bytes) ||
            !tet_mul_ok(sel_bytes, sel, &sel_bytes))
            return TET_ERR_OVERFLOW;
    }
    if (tile_bytes > (uint64_t)INT64_MAX || sel_bytes > (uint64_t)INT64_MAX)
        return TET_ERR_OVERFLOW;
    return tiles == g->n_tiles ? TET_OK : TET_ERR_ARGUMENT;
}

static tet_status touch_build(const tet_tiles *g, const tet_box *b, touch_set *t)
{
    memset(t, 0, sizeof *t);
    t->ndim = g->ndim;
    t->total = 1;
    uint64_t stride = 1;
    for (int d = (int)g->ndim - 1; d >= 0; d--) {
        t->grid_stride[d] = stride;
        stride *= (g->shape[d] - 1) / g->chunk_shape[d] + 1;
    }
    for (uint32_t d = 0; d < g->ndim; d++) {
        const uint64_t s = b->start[d], k = b->step[d], cs = g->chunk_shape[d];
        const uint64_t n_sel = (b->stop[d] - s - 1) / k + 1;
        const uint64_t last = s + (n_sel - 1) * k;
        const uint64_t n = k >= cs ? n_sel : last / cs - s / cs + 1;
        t->out_shape[d] = n_sel;
        t->coord[d] = malloc(n * sizeof(uint64_t));
        if (t->coord[d] == NULL) {
            touch_free(t);
            return TET_ERR_NOMEM;
        }
        for (uint64_t j = 0; j < n; j++)
            t->coord[d][j] = k >= cs ? (s + j * k) / cs : s / cs + j;
        t->len[d] = n;
        t->total *= n;
    }
    return TET_OK;
}

/* Item i of the touch set: its tile's linear id, and the sub-box to copy. */
static uint64_t touch_item(const tet_tiles *g, const tet_box *b, const touch_set *t, uint64_t i,
                           uint64_t *tile, uint64_t *src_start, uint64_t *count,
                           uint64_t *dst_start)
{
    uint64_t linear = 0;
    for (int d = (int)t->ndim - 1; d >= 0; d--) {
        const uint64_t c = t->coord[d][i % t->len[d]];
        i /= t->len[d];
        const uint64_t s = b->start[d], k = b->step[d], cs = g->chunk_shape[d];
        const uint64_t t0 = c * cs;
        const uint64_t t1 = t0 + cs < g->shape[d] ? t0 + cs : g->shape[d];
        const uint64_t lo = t0 > s ? t0 : s;
        const uint64_t hi = t1 < b->stop[d] ? t1 : b->stop[d];
        const uint64_t j0 = tet_ceil_div(lo - s, k), j1 = tet_ceil_div(hi - s, k);
        tile[d] = t1 - t0;
        src_start[d] = s + j0 * k - t0;
        count[d] = j1 - j0;
        dst_start[d] = j0;
        linear += c * t->grid_stride[d];
    }
    return linear;
}

/* The checks a tile's index row must pass before its bytes are touched:
 * a row, a payload inside the file, raw_byte_len equal to the tile's own size
 * (computed from its extents, checked), and a known codec. */
static tet_status tile_check(const tet_tiles *g, uint64_t id, const uint64_t *tile,
                             uint64_t *detail)
{
    const uint64_t off = g->offset[id], stored = g->stored[id], raw = g->raw[id];
    const uint32_t codec = g->codec[id];
    if (codec == TET_TILE_MISSING)
        return TET_ERR_MISSING;
    if (off > g->file_len || stored > g->file_len - off) {
        *detail = off;
        return TET_ERR_BOUNDS;
    }
    const uint64_t want = tet_extent_bytes(tile, g->ndim, g->elem_size);
    if (want == 0 || raw != want) {
        *detail = raw;
        return TET_ERR_TILE;
    }
    if (codec == 0 && stored != raw) {
        *detail = stored;
        return TET_ERR_LENGTH;
    }
    if (codec > 1) {
        *detail = codec;
        return TET_ERR_CODEC;
    }
    return TET_OK;
}

/* Check every touched row before anything is allocated or decoded (the first
 * failing tile in grid order is reported), and find the largest zstd tile a
 * worker must decode: its size is the tile's own (tile_check made raw_byte_len
 * equal to it), never a length the file merely declares. */
static tet_status touch_scan(const tet_tiles *g, const tet_box *b, const touch_set *t,
                             uint64_t *largest_zstd, tet_report *r)
{
    uint64_t tile[TET_MAX_NDIM], ss[TET_MAX_NDIM], cnt[TET_MAX_NDIM], ds[TET_MAX_NDIM];
    uint64_t most = 0;
    for (uint64_t i = 0; i < t->total; i++) {
        const uint64_t id = touch_item(g, b, t, i, tile, ss, cnt, ds);
        uint64_t detail = 0;
        const tet_status st = tile_check(g, id, tile, &detail);
        if (st != TET_OK) {
            r->status = st;
            r->chunk = (int64_t)id;
            r->detail = detail;
            return st;
        }
        if (g->codec[id] == 1 && g->raw[id] > most)
            most = g->raw[id];
    }
    *largest_zstd = most;
    return TET_OK;
}

typedef struct {
    const tet_tiles *g;
    const tet_box *b;
    const touch_set *t;
    uint8_t *dst;
    uint64_t next;
    uint64_t scratch_len;   /* largest zstd tile touched */
    int stop;
    tet_copy_strided_fn strided;
    const tet_mask *mask;   /* NULL: a plain copy */
    uint32_t out_dtype;     /* with a mask: 0 the dataset's float dtype, 2 f64 */
    tet_report reports[TET_MAX_THREADS];
} read_ctx;

static void fail(tet_report *r, tet_status status, int64_t chunk, uint64_t detail)
{
    r->status = status;
    r->chunk = chunk;
    r->detail = detail;
}

/* Where item i of a touch set lives: its tile's linear id, its sub-box, and
 * the decoded bytes (the mapping itself for raw tiles, else `scratch`). */
typedef struct {
    uint64_t id;
    uint64_t tile[TET_MAX_NDIM], src_start[TET_MAX_NDIM], count[TET_MAX_NDIM];
    uint64_t dst_start[TET_MAX_NDIM];
    const uint8_t *bytes;
} tile_view;

static tet_status tile_open(const tet_tiles *g, const tet_box *b, const touch_set *t, uint64_t i,
                            uint8_t *scratch, tet_dctx *dctx, tile_view *v, uint64_t *detail)
{
    v->id = touch_item(g, b, t, i, v->tile, v->src_start, v->count, v->dst_start);
    const uint64_t id = v->id, off = g->offset[id];
    const tet_status st = tile_check(g, id, v->tile, detail);
    if (st != TET_OK)
        return st;
    v->bytes = g->file + off;
    if (g->codec[id] == 0)
        return TET_OK;
    v->bytes = scratch;
    return tet_zstd_decode(dctx, scratch, g->raw[id], g->file + off, g->stored[id], detail);
}

/* A quiet NaN of a float dtype, as its little-endian bytes. */
static void nan_bytes(uint32_t dtype, uint8_t *out)
{
    if (dtype == 1) {
        const float f = NAN;
        memcpy(out, &f, 4);
    } else if (dtype == 9) {
        const uint16_t h = 0x7E00;
        memcpy(out, &h, 2);
    } else {
        const double d = NAN;
        memcpy(out, &d, 8);
    }
}

/* Copy one tile's sub-box row by row with the mask's fills read as NaN: promoted to
 * f64 (out_dtype 2), or copied in the dataset's float dtype with NaN written over
 * each fill (out_dtype 0). */
static void masked_copy(const read_ctx *c, const tile_view *v)
{
    const tet_tiles *g = c->g;
    const uint32_t nd = g->ndim, last = nd - 1;
    const uint64_t es = g->elem_size, oes = c->out_dtype == 2 ? 8 : es;
    uint64_t tstride[TET_MAX_NDIM], ostride[TET_MAX_NDIM], j[TET_MAX_NDIM] = {0};
    uint64_t s = 1, o = 1;
    for (int d = (int)nd - 1; d >= 0; d--) {
        tstride[d] = s;
        s *= v->tile[d];
        ostride[d] = o;
        o *= c->t->out_shape[d];
    }
    const uint64_t run = v->count[last], step = c->b->step[last];
    double buf[TET_FOLD_BLOCK];
    uint8_t hit[TET_FOLD_BLOCK], nan[8];
    nan_bytes(g->dtype, nan);
    for (;;) {
        uint64_t src = 0, dst = 0;
        for (uint32_t d = 0; d < nd; d++) {
            const uint64_t jj = d == last ? 0 : j[d];
            src += (v->src_start[d] + jj * c->b->step[d]) * tstride[d];
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
            if (c->out_dtype == 2) {
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
        int d = (int)nd - 2;
        for (; d >= 0; d--) {
            if (++j[d] < v->count[d])
                break;
            j[d] = 0;
        }
        if (d < 0)
            break;
    }
}

/* Decode (if needed) and copy one touched tile. */
static tet_status read_one(read_ctx *c, uint64_t i, uint8_t *scratch, tet_dctx *dctx,
                           uint64_t *linear_out, uint64_t *detail)
{
    tile_view v;
    tet_status st = tile_open(c->g, c->b, c->t, i, scratch, dctx, &v, detail);
    *linear_out = v.id;
    if (st != TET_OK)
        return st;
    if (c->mask != NULL) {
        masked_copy(c, &v);
        return TET_OK;
    }
    tet_box_copy(c->dst, c->t->out_shape, v.dst_start, v.bytes, v.tile, v.src_start, c->b->step,
                 v.count, c->g->ndim, c->g->elem_size, c->strided);
    return TET_OK;
}

static void read_worker(void *vctx, uint32_t w)
{
    read_ctx *c = vctx;
    tet_report *rep = &c->reports[w];
    uint8_t *scratch = NULL;
    tet_dctx *dctx = NULL;
    if (c->scratch_len > 0) {
        scratch = malloc(c->scratch_len);
        dctx = tet_dctx_new();
        if (scratch == NULL || dctx == NULL) {
            fail(rep, TET_ERR_NOMEM, -1, c->scratch_len);
            __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
            goto done;
        }
    }
    for (;;) {
        uint64_t i = tet_claim(&c->next, c->t->total);
        if (i >= c->t->total || __atomic_load_n(&c->stop, __ATOMIC_RELAXED))
            break;
        uint64_t linear = 0, detail = 0;
        tet_status st = read_one(c, i, scratch, dctx, &linear, &detail);
        if (st != TET_OK) {
            fail(rep, st, (int64_t)linear, detail);
            __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
            break;
        }
    }
done:
    free(scratch);
    tet_dctx_free(dctx);
}

static int32_t read_box(const tet_tiles *tiles, const tet_box *box, const tet_mask *mask,
                        uint32_t out_dtype, uint8_t *dst, uint32_t threads, tet_report *report)
{
    report_clear(report);
    const tet_status valid = box_check(tiles, box);
    if (valid != TET_OK)
        return refuse(report, valid);
    if (mask != NULL) {
        const uint32_t dt = tiles->dtype;
        const int native = out_dtype == 0 && (dt == 1 || dt == 2 || dt == 9);
        if (mask->n > TET_MASK_MAX || dt < 1 || dt > 10 || !(native || out_dtype == 2))
            return refuse(report, TET_ERR_ARGUMENT);
    }
    read_ctx *c = calloc(1, sizeof *c);
    touch_set t;
    if (c == NULL || touch_build(tiles, box, &t) != TET_OK) {
        free(c);
        return refuse(report, TET_ERR_NOMEM);
    }
    if (touch_scan(tiles, box, &t, &c->scratch_len, report) != TET_OK) {
        touch_free(&t);
        free(c);
        return report->status;
    }
    c->g = tiles;
    c->b = box;
    c->t = &t;
    c->dst = dst;
    c->strided = tet_active()->copy_strided;
    c->mask = mask;
    c->out_dtype = out_dtype;
    if ((uint64_t)threads > t.total)
        threads = (uint32_t)t.total;
    tet_parallel(read_worker, c, threads);
    for (uint32_t w = 0; w < TET_MAX_THREADS; w++)
        tet_report_merge(report, &c->reports[w]);
    touch_free(&t);
    free(c);
    return report->status;
}

int32_t tet_read_box(const tet_tiles *tiles, const tet_box *box, uint8_t *dst, uint32_t threads,
                     tet_report *report)
{
    return read_box(tiles, box, NULL, 0, dst, threads, report);
}

int32_t tet_read_box_masked(const tet_tiles *tiles, const tet_box *box, const tet_mask *mask,
                            uint32_t out_dtype, uint8_t *dst, uint32_t threads,
                            tet_report *report)
{
    if (mask == NULL) {
        report_clear(report);
        return refuse(report, TET_ERR_ARGUMENT);
    }
    return read_box(tiles, box, mask, out_dtype, dst, threads, report);
}

int64_t tet_box_touch(const tet_tiles *tiles, const tet_box *box, uint64_t *out, uint64_t cap)
{
    const tet_status valid = box_check(tiles, box);
    if (valid != TET_OK)
        return -(int64_t)valid;
    touch_set t;
    if (touch_build(tiles, box, &t) != TET_OK)
        return -(int64_t)TET_ERR_NOMEM;
    uint64_t tile[TET_MAX_NDIM], ss[TET_MAX_NDIM], cnt[TET_MAX_NDIM], ds[TET_MAX_NDIM];
    for (uint64_t i = 0; i < t.total && i < cap; i++)
        out[i] = touch_item(tiles, box, &t, i, tile, ss, cnt, ds);
    touch_free(&t);
    return (int64_t)t.total;
}

int32_t tet_box_check(const tet_tiles *tiles, const tet_box *box, tet_report *report)
{
    report_clear(report);
    const tet_status valid = box_check(tiles, box);
    if (valid != TET_OK)
        return refuse(report, valid);
    touch_set t;
    if (touch_build(tiles, box, &t) != TET_OK)
        return refuse(report, TET_ERR_NOMEM);
    uint64_t scratch = 0;
    touch_scan(tiles, box, &t, &scratch, report);
    touch_free(&t);
    return report->status;
}

/* ---- folds --------------------------------------------------------------- */

typedef struct {
    const tet_tiles *g;
    const tet_box *b;
    const touch_set *t;
    const tet_fold_spec *spec;
    tet_acc *cells;             /* part 0: the caller's array */
    tet_acc *extra;             /* parts 1.. */
    uint64_t *counts_extra;     /* histogram counts of parts 1.. */
    uint64_t n_cells, n_parts, next_part, scratch_len;
    uint64_t cell_stride[TET_MAX_NDIM];   /* kept axes: stride in the cell index */
    uint64_t fiber_stride[TET_MAX_NDIM];  /* reduced axes: stride in the fiber index */
    int stop;
    tet_report reports[TET_MAX_THREADS];
} fold_ctx;

/* Histogram counts of n values; value i belongs to the cell i * cstride cells on (0:
 * all to one cell).  NumPy's uniform-bin rule: out-of-range values and NaN are
 * dropped, the last bin holds the upper edge. */
static void hist_block(uint64_t *counts, const double *edges, uint32_t bins, const double *x,
                       uint64_t n, uint64_t cstride)
{
    for (uint64_t i = 0; i < n; i++) {
        const double *e = edges + i * cstride * (bins + 1);
        const double v = x[i], lo = e[0], hi = e[bins];
        if (!(v >= lo && v <= hi))
            continue;
        uint64_t k = (uint64_t)(((v - lo) / (hi - lo)) * (double)bins);
        if (k >= bins)
            k = bins - 1;
        if (v < e[k])
            k--;
        else if (k != bins - 1 && v >= e[k + 1])
            k++;
        counts[i * cstride * bins + k]++;
    }
}

/* Fold the innermost runs of one decoded tile into `cells`. */
/* Rows of one tile that feed the same cells (a kept innermost axis). */
typedef struct {
    uint64_t cell, rows;
    uint64_t offset[TET_GROUP_ROWS];
    double work[4 * TET_FOLD_BLOCK];
} row_group;

static void group_flush(const tet_tiles *g, const tile_view *v, uint64_t run, uint64_t step,
                        tet_acc *cells, double *buf, row_group *grp)
{
    if (grp->rows > 0)
        tet_fold_row_group(&cells[grp->cell], g->dtype, v->bytes, grp->offset, grp->rows, run,
                           step, buf, grp->work);
    grp->rows = 0;
}

static void fold_tile(const fold_ctx *c, const tile_view *v, tet_acc *cells, uint64_t *counts,
                      double *buf, row_group *grp)
{
    const tet_tiles *g = c->g;
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
    const uint64_t run = v->count[last], step = c->b->step[last];
    /* a kept innermost axis: moments go through row groups (two-pass, no divisions) */
    const int grouped = mask == NULL && !last_reduced && (what & TET_FOLD_MOMENTS) &&
                        run <= TET_FOLD_BLOCK;
    grp->rows = 0;
    for (;;) {
        uint64_t src = 0, cell = 0, fiber = 0;
        for (uint32_t d = 0; d < nd; d++) {
            const uint64_t jj = d == last ? 0 : j[d];
            src += (v->src_start[d] + jj * c->b->step[d]) * tstride[d];
            cell += (v->dst_start[d] + jj) * c->cell_stride[d];
            fiber += (v->dst_start[d] + jj) * c->fiber_stride[d];
        }
        const uint8_t *p = v->bytes + src * g->elem_size;
        if (grouped) {
            if (grp->rows > 0 && (cell != grp->cell || grp->rows == TET_GROUP_ROWS))
                group_flush(g, v, run, step, cells, buf, grp);
            grp->cell = cell;
            grp->offset[grp->rows++] = src * g->elem_size;
            const uint32_t rest = what & ~(uint32_t)TET_FOLD_MOMENTS;
            if (rest != 0) {
                tet_load_f64(g->dtype, p, run, step, buf);
                tet_fold_lanes(&cells[cell], 1, rest | TET_FOLD_N_COUNTED, fill, buf, run, fiber);
            }
            goto next;
        }
        if (mask == NULL && last_reduced && step == 1 && g->dtype == 1 &&
            what == TET_FOLD_MINMAX && c->fiber_stride[last] == 1) {
            tet_fold_minmax_f32(&cells[cell], p, run, fiber); /* no f64 promotion needed */
            goto next;
        }
        if (mask == NULL && last_reduced && step == 1 && g->dtype == 1 &&
            what == TET_FOLD_MOMENTS) {
            tet_fold_moments_f32(&cells[cell], p, run);
            goto next;
        }
        for (uint64_t k = 0; k < run; k += TET_FOLD_BLOCK) {
            const uint64_t n = run - k < TET_FOLD_BLOCK ? run - k : TET_FOLD_BLOCK;
            tet_load_f64(g->dtype, p + k * step * g->elem_size, n, step, buf);
            if (mask != NULL)
                tet_mask_apply(g->dtype, p + k * step * g->elem_size, n, step, mask, buf);
            if (counts != NULL) { /* histogram mode: `what` is 0, no path above was taken */
                const uint32_t bins = c->spec->bins;
                const uint64_t cs = last_reduced ? 0 : c->cell_stride[last];
                const uint64_t at = cell + k * cs;
                hist_block(counts + at * bins, c->spec->edges + at * (bins + 1), bins, buf, n,
                           cs);
            } else if (last_reduced) {
                tet_fold_block(&cells[cell], what, fill, buf, n, fiber + k * c->fiber_stride[last],
                               c->fiber_stride[last]);
            } else {
                tet_fold_lanes(&cells[cell + k * c->cell_stride[last]], c->cell_stride[last],
                               what, fill, buf, n, fiber);
            }
        }
    next:;
        int d = (int)nd - 2;
        for (; d >= 0; d--) {
            if (++j[d] < v->count[d])
                break;
            j[d] = 0;
        }
        if (d < 0)
            break;
    }
    group_flush(g, v, run, step, cells, buf, grp); /* its rows point into this tile */
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

static void fold_worker(void *vctx, uint32_t w)
{
    fold_ctx *c = vctx;
    tet_report *rep = &c->reports[w];
    uint8_t *scratch = c->scratch_len ? malloc(c->scratch_len) : NULL;
    tet_dctx *dctx = c->scratch_len ? tet_dctx_new() : NULL;
    double *buf = malloc(TET_FOLD_BLOCK * sizeof(double));
    row_group *grp = malloc(sizeof *grp);
    if (buf == NULL || grp == NULL || (c->scratch_len && (scratch == NULL || dctx == NULL))) {
        fail(rep, TET_ERR_NOMEM, -1, c->scratch_len);
        __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
        goto done;
    }
    for (;;) {
        const uint64_t part = tet_claim(&c->next_part, c->n_parts);
        if (part >= c->n_parts || __atomic_load_n(&c->stop, __ATOMIC_RELAXED))
            break;
        tet_acc *cells = part == 0 ? c->cells : c->extra + (part - 1) * c->n_cells;
        uint64_t *counts = c->spec->bins == 0 ? NULL
                           : part == 0 ? c->spec->counts
                                       : c->counts_extra + (part - 1) * c->n_cells * c->spec->bins;
        const uint64_t lo = part * c->t->total / c->n_parts;
        const uint64_t hi = (part + 1) * c->t->total / c->n_parts;
        uint64_t ahead = 0;
        for (uint64_t i = lo; i < hi; i++) {
            tile_view v;
            uint64_t detail = 0;
            tet_status st = tile_open(c->g, c->b, c->t, i, scratch, dctx, &v, &detail);
            if (st != TET_OK) {
                fail(rep, st, (int64_t)v.id, detail);
                __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
                goto done;
            }
            if (c->spec->scan_window > 0 && c->n_parts == 1)
                read_ahead(c->g, c->spec->scan_window, v.id, &ahead);
            fold_tile(c, &v, cells, counts, buf, grp);
        }
    }
done:
    free(grp);
    free(buf);
    free(scratch);
    tet_dctx_free(dctx);
}

int32_t tet_fold_box(const tet_tiles *tiles, const tet_box *box, const tet_fold_spec *spec,
                     tet_acc *cells, uint64_t n_cells, tet_report *report)
{
    report_clear(report);
    const tet_status valid = box_check(tiles, box);
    if (valid != TET_OK)
        return refuse(report, valid);
    if (spec->parts == 0 || tiles->dtype < 1 || tiles->dtype > 10 ||
        (spec->bins > 0 && (spec->edges == NULL || spec->counts == NULL)) ||
        (spec->mask != NULL && spec->mask->n > TET_MASK_MAX))
        return refuse(report, TET_ERR_ARGUMENT);
    fold_ctx *c = calloc(1, sizeof *c);
    touch_set t;
    if (c == NULL || touch_build(tiles, box, &t) != TET_OK) {
        free(c);
        return refuse(report, TET_ERR_NOMEM);
    }
    uint64_t cs = 1, fs = 1;
    for (int d = (int)tiles->ndim - 1; d >= 0; d--) {
        if ((spec->reduce_mask >> d) & 1u) {
            c->fiber_stride[d] = fs;
            fs *= t.out_shape[d];
        } else {
            c->cell_stride[d] = cs;
            cs *= t.out_shape[d];
        }
    }
    const uint64_t parts = spec->parts < t.total ? spec->parts : t.total;
    uint64_t n_counts = 0, extra_bytes = 0, extra_counts = 0;
    if (cs != n_cells || !tet_mul_ok(n_cells, spec->bins, &n_counts) ||
        !tet_mul_ok((parts - 1) * sizeof(tet_acc), n_cells, &extra_bytes) ||
        !tet_mul_ok(parts - 1, n_counts, &extra_counts) || extra_counts > UINT64_MAX / 8) {
        touch_free(&t);
        free(c);
        return refuse(report, cs != n_cells ? TET_ERR_ARGUMENT : TET_ERR_OVERFLOW);
    }
    if (touch_scan(tiles, box, &t, &c->scratch_len, report) != TET_OK) {
        touch_free(&t);
        free(c);
        return report->status;
    }
    c->g = tiles;
    c->b = box;
    c->t = &t;
    c->spec = spec;
    c->cells = cells;
    c->n_cells = n_cells;
    c->n_parts = parts;
    c->extra = parts > 1 ? malloc(extra_bytes) : NULL;
    c->counts_extra = parts > 1 && n_counts ? calloc(extra_counts, sizeof(uint64_t)) : NULL;
    if (parts > 1 && (c->extra == NULL || (n_counts && c->counts_extra == NULL))) {
        free(c->extra);
        free(c->counts_extra);
        touch_free(&t);
        free(c);
        return refuse(report, TET_ERR_NOMEM);
    }
    if (n_counts)
        memset(spec->counts, 0, n_counts * sizeof(uint64_t));
    for (uint64_t i = 0; i < n_cells; i++)
        tet_acc_init(&cells[i]);
    for (uint64_t i = 0; i < (parts - 1) * n_cells; i++)
        tet_acc_init(&c->extra[i]);
    uint32_t threads = spec->threads ? spec->threads : 1;
    if ((uint64_t)threads > parts)
        threads = (uint32_t)parts;
    tet_parallel(fold_worker, c, threads);
    for (uint32_t w = 0; w < TET_MAX_THREADS; w++)
        tet_report_merge(report, &c->reports[w]);
    if (report->status == TET_OK)
        for (uint64_t p = 1; p < parts; p++) {
            tet_acc_merge_cells(cells, &c->extra[(p - 1) * n_cells], n_cells, spec->what);
            for (uint64_t i = 0; i < n_counts; i++)
                spec->counts[i] += c->counts_extra[(p - 1) * n_counts + i];
        }
    free(c->extra);
    free(c->counts_extra);
    touch_free(&t);
    free(c);
    return report->status;
}

/* ---- encode ------------------------------------------------------------ */

typedef struct {
    const tet_encode_plan *plan;
    uint64_t next;
    uint64_t *slot;         /* [n_chunks] start of each tile's output slot */
    uint64_t scratch_len;
    int stop;
    tet_copy_strided_fn strided;
    tet_crc32c_fn crc;
    tet_report reports[TET_MAX_THREADS];
} encode_ctx;

static void encode_worker(void *vctx, uint32_t t)
{
    encode_ctx *c = vctx;
    const tet_encode_plan *p = c->plan;
    tet_report *rep = &c->reports[t];
    static const uint64_t zeros[TET_MAX_NDIM] = {0};
    static const uint64_t ones[TET_MAX_NDIM] = {1, 1, 1, 1, 1, 1, 1, 1};
    uint8_t *scratch = NULL;
    tet_cctx *cctx = NULL;
    if (p->codec == 1) {
        scratch = malloc(c->scratch_len ? c->scratch_len : 1);
        cctx = tet_cctx_new();
        if (scratch == NULL || cctx == NULL) {
            fail(rep, TET_ERR_NOMEM, -1, c->scratch_len);
            __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
            goto done;
        }
    }
    for (;;) {
        uint64_t i = tet_claim(&c->next, p->n_chunks);
        if (i >= p->n_chunks || __atomic_load_n(&c->stop, __ATOMIC_RELAXED))
            break;
        const uint64_t *extent = p->extent + i * p->ndim;
        const uint64_t raw = tet_extent_bytes(extent, p->ndim, p->elem_size); /* checked */
        uint8_t *tile = p->codec == 1 ? scratch : p->out + c->slot[i];
        tet_box_copy(tile, extent, zeros, p->src, p->src_shape, p->origin + i * p->ndim, ones,
                     extent, p->ndim, p->elem_size, c->strided);
        if (p->codec == 0) {
            p->out_len[i] = raw;
            if (p->out_crc != NULL) /* while the tile is still in cache */
                p->out_crc[i] = c->crc(0, tile, raw);
            continue;
        }
        uint64_t written = 0, detail = 0;
        tet_status st = tet_zstd_encode(cctx, p->out + c->slot[i], tet_zstd_bound(raw), tile,
                                        raw, p->level, &written, &detail);
        if (st != TET_OK) {
            fail(rep, st, (int64_t)i, detail);
            __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
            break;
        }
        p->out_len[i] = written;
        if (p->out_crc != NULL)
            p->out_crc[i] = c->crc(0, p->out + c->slot[i], written);
    }
done:
    free(scratch);
    tet_cctx_free(cctx);
}

uint64_t tet_encode_capacity(uint32_t codec, uint64_t raw_len)
{
    return codec == 1 ? tet_zstd_bound(raw_len) : raw_len;
}

int32_t tet_encode(const tet_encode_plan *plan, tet_report *report)
{
    report_clear(report);
    const tet_encode_plan *p = plan;
    if (p->ndim < 1 || p->ndim > TET_MAX_NDIM || p->elem_size == 0 || p->codec > 1)
        return refuse(report, TET_ERR_ARGUMENT);
    encode_ctx *c = calloc(1, sizeof *c);
    uint64_t *slot = malloc((p->n_chunks ? p->n_chunks : 1) * sizeof *slot);
    if (c == NULL || slot == NULL) {
        free(c);
        free(slot);
        return refuse(report, TET_ERR_NOMEM);
    }
    /* Lay out slots and check every tile against the source before any work. */
    uint64_t at = 0;
    for (uint64_t i = 0; i < p->n_chunks; i++) {
        const uint64_t *o = p->origin + i * p->ndim, *e = p->extent + i * p->ndim;
        for (uint32_t d = 0; d < p->ndim; d++) {
            if (e[d] == 0 || o[d] >= p->src_shape[d] || e[d] > p->src_shape[d] - o[d]) {
                fail(report, TET_ERR_ARGUMENT, (int64_t)i, d);
                goto out;
            }
        }
        const uint64_t raw = tet_extent_bytes(e, p->ndim, p->elem_size);
        const uint64_t cap = raw == 0 ? 0 : tet_encode_capacity(p->codec, raw);
        if (raw == 0 || raw > (uint64_t)INT64_MAX || cap < raw || !tet_add_ok(at, cap, &at)) {
            fail(report, TET_ERR_OVERFLOW, (int64_t)i, raw);
            goto out;
        }
        if (raw > c->scratch_len)
            c->scratch_len = raw;
        slot[i] = at - cap;
    }
    if (at > p->out_capacity) {
        fail(report, TET_ERR_ARGUMENT, -1, at);
        goto out;
    }
    c->plan = p;
    c->slot = slot;
    c->strided = tet_active()->copy_strided;
    c->crc = tet_active()->crc32c;
    uint32_t threads = p->threads;
    if ((uint64_t)threads > p->n_chunks)
        threads = (uint32_t)p->n_chunks;
    tet_parallel(encode_worker, c, threads);
    for (uint32_t t = 0; t < TET_MAX_THREADS; t++)
        tet_report_merge(report, &c->reports[t]);
    if (report->status == TET_OK && p->codec == 1) {
        /* Pack the compressed frames back to back, in plan order. */
        uint64_t packed = 0;
        for (uint64_t i = 0; i < p->n_chunks; i++) {
            memmove(p->out + packed, p->out + slot[i], p->out_len[i]);
            packed += p->out_len[i];
        }
    }
out:
    free(slot);
    free(c);
    return report->status;
}

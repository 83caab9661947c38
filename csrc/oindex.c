/* oindex.c: orthogonal reads.  Each axis selects a sorted list of distinct indices; the
 * result is their outer product.  The indices of an axis are cut into runs that fall in
 * one tile, and the tiles touched are the product of those runs: workers claim them from
 * a shared counter, decode each once and copy every selected element it holds.  Runs
 * write disjoint parts of the output, so workers never lock. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

typedef struct {
    const tet_tiles *g;
    const uint64_t *idx[TET_MAX_NDIM];  /* axis d's indices, strictly increasing */
    uint64_t n[TET_MAX_NDIM];           /* ... and how many */
    uint64_t *run[TET_MAX_NDIM];        /* run r: idx[d][run[d][r] .. run[d][r + 1]) */
    uint64_t runs[TET_MAX_NDIM];
    uint64_t grid_stride[TET_MAX_NDIM];
    uint64_t ostride[TET_MAX_NDIM];
    uint64_t total, next, scratch_len;
    uint8_t *dst;
    int stop;
    tet_report reports[TET_MAX_THREADS];
} index_ctx;

typedef struct {
    uint64_t r[TET_MAX_NDIM], t0[TET_MAX_NDIM], tile[TET_MAX_NDIM];
} index_item;

/* Item i: its run on every axis, its tile's origin and extents; returns the tile's id. */
static uint64_t item_of(const index_ctx *c, uint64_t i, index_item *it)
{
    const tet_tiles *g = c->g;
    uint64_t linear = 0;
    for (int d = (int)g->ndim - 1; d >= 0; d--) {
        it->r[d] = i % c->runs[d];
        i /= c->runs[d];
        const uint64_t cs = g->chunk_shape[d];
        const uint64_t coord = c->idx[d][c->run[d][it->r[d]]] / cs;
        it->t0[d] = coord * cs;
        it->tile[d] = it->t0[d] + cs < g->shape[d] ? cs : g->shape[d] - it->t0[d];
        linear += coord * c->grid_stride[d];
    }
    return linear;
}

/* Copy the elements of one tile the item's runs select. */
static void index_copy(const index_ctx *c, const index_item *it, const uint8_t *bytes)
{
    const uint32_t nd = c->g->ndim, last = nd - 1;
    const uint64_t es = c->g->elem_size;
    uint64_t tstride[TET_MAX_NDIM], lo[TET_MAX_NDIM], hi[TET_MAX_NDIM], j[TET_MAX_NDIM];
    uint64_t s = 1;
    for (int d = (int)nd - 1; d >= 0; d--) {
        tstride[d] = s;
        s *= it->tile[d];
        lo[d] = c->run[d][it->r[d]];
        hi[d] = c->run[d][it->r[d] + 1];
        j[d] = lo[d];
    }
    const uint64_t *inner = c->idx[last];
    const uint64_t k0 = lo[last], k1 = hi[last], t0 = it->t0[last];
    const int dense = inner[k1 - 1] - inner[k0] == k1 - k0 - 1;
    for (;;) {
        uint64_t src = 0, dst = 0;
        for (uint32_t d = 0; d < last; d++) {
            src += (c->idx[d][j[d]] - it->t0[d]) * tstride[d];
            dst += j[d] * c->ostride[d];
        }
        const uint8_t *p = bytes + src * es;
        uint8_t *q = c->dst + dst * es;
        if (dense) {
            memcpy(q + k0 * es, p + (inner[k0] - t0) * es, (k1 - k0) * es);
        } else if (es == 4) {
            for (uint64_t k = k0; k < k1; k++)
                memcpy(q + k * 4, p + (inner[k] - t0) * 4, 4);
        } else if (es == 8) {
            for (uint64_t k = k0; k < k1; k++)
                memcpy(q + k * 8, p + (inner[k] - t0) * 8, 8);
        } else {
            for (uint64_t k = k0; k < k1; k++)
                memcpy(q + k * es, p + (inner[k] - t0) * es, es);
        }
        int more = 0;
        for (int d = (int)last - 1; d >= 0; d--) {
            if (++j[d] < hi[d]) {
                more = 1;
                break;
            }
            j[d] = lo[d];
        }
        if (!more)
            break;
    }
}

static tet_status index_one(index_ctx *c, uint64_t i, uint8_t *scratch, tet_dctx *dctx,
                            uint64_t *linear, uint64_t *detail)
{
    index_item it;
    const uint64_t id = item_of(c, i, &it);
    *linear = id;
    const tet_tiles *g = c->g;
    const tet_status st = tet_tile_check(g, id, it.tile, detail);
    if (st != TET_OK)
        return st;
    const uint8_t *bytes = g->file + g->offset[id];
    if (g->codec[id] != TET_CODEC_RAW) {
        const tet_status z = tet_zstd_decode(dctx, scratch, g->raw[id], bytes, g->stored[id],
                                             detail);
        if (z != TET_OK)
            return z;
        bytes = scratch;
    }
    index_copy(c, &it, bytes);
    return TET_OK;
}

static void index_worker(void *vctx, uint32_t w)
{
    index_ctx *c = vctx;
    tet_report *rep = &c->reports[w];
    tet_scratch s;
    if (!tet_scratch_open(&s, c->scratch_len > 0 ? TET_SCRATCH_DECODE : TET_SCRATCH_NONE,
                          c->scratch_len, rep, &c->stop))
        return;
    for (;;) {
        const uint64_t i = tet_claim(&c->next, c->total);
        if (i >= c->total || __atomic_load_n(&c->stop, __ATOMIC_RELAXED))
            break;
        uint64_t linear = 0, detail = 0;
        const tet_status st = index_one(c, i, s.buf, s.dctx, &linear, &detail);
        if (st != TET_OK) {
            tet_report_fail(rep, st, (int64_t)linear, detail);
            __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
            break;
        }
    }
    tet_scratch_close(&s);
}

static void index_free(index_ctx *c)
{
    for (uint32_t d = 0; d < TET_MAX_NDIM; d++)
        free(c->run[d]);
    free(c);
}

/* The indices against the geometry (the grid and its largest tile through a box of at
 * most two elements per axis spanning them), and the output's size. */
static tet_status index_valid(const tet_tiles *g, const uint64_t *index, const uint64_t *n_index)
{
    if (g->ndim < 1 || g->ndim > TET_MAX_NDIM)
        return TET_ERR_ARGUMENT;
    tet_box b;
    memset(&b, 0, sizeof b);
    uint64_t out = g->elem_size;
    const uint64_t *p = index;
    for (uint32_t d = 0; d < g->ndim; d++) {
        const uint64_t n = n_index[d];
        if (n == 0 || n > g->shape[d])
            return TET_ERR_ARGUMENT;
        for (uint64_t k = 1; k < n; k++)
            if (p[k] <= p[k - 1])
                return TET_ERR_ARGUMENT;
        if (p[n - 1] >= g->shape[d])
            return TET_ERR_ARGUMENT;
        b.start[d] = p[0];
        b.stop[d] = p[n - 1] + 1;
        b.step[d] = n > 1 ? p[n - 1] - p[0] : 1;
        if (!tet_mul_ok(out, n, &out))
            return TET_ERR_OVERFLOW;
        p += n;
    }
    if (out > (uint64_t)INT64_MAX)
        return TET_ERR_OVERFLOW;
    return tet_box_valid(g, &b);
}

/* Cut every axis into runs of one tile; the touched tiles are their product. */
static tet_status index_plan(index_ctx *c, const uint64_t *index, const uint64_t *n_index)
{
    const tet_tiles *g = c->g;
    const uint32_t nd = g->ndim;
    uint64_t stride = 1, o = 1;
    for (int d = (int)nd - 1; d >= 0; d--) {
        c->grid_stride[d] = stride;
        stride *= (g->shape[d] - 1) / g->chunk_shape[d] + 1;
        c->ostride[d] = o;
        o *= n_index[d];
    }
    c->total = 1;
    for (uint32_t d = 0; d < nd; d++) {
        const uint64_t n = n_index[d], cs = g->chunk_shape[d];
        c->idx[d] = index;
        c->n[d] = n;
        index += n;
        c->run[d] = malloc((n + 1) * sizeof(uint64_t));
        if (c->run[d] == NULL)
            return TET_ERR_NOMEM;
        uint64_t r = 0;
        for (uint64_t k = 0; k < n; k++)
            if (k == 0 || c->idx[d][k] / cs != c->idx[d][k - 1] / cs)
                c->run[d][r++] = k;
        c->run[d][r] = n;
        c->runs[d] = r;
        c->total *= r;  /* <= the grid's tile count (tet_box_valid bounds it) */
    }
    return TET_OK;
}

/* Check every touched row before anything is decoded (the first failure in grid
 * order is reported), and size the zstd scratch from the largest touched zstd tile. */
static tet_status index_scan(index_ctx *c, tet_report *r)
{
    index_item it;
    for (uint64_t i = 0; i < c->total; i++) {
        const uint64_t id = item_of(c, i, &it);
        uint64_t detail = 0;
        const tet_status st = tet_tile_check(c->g, id, it.tile, &detail);
        if (st != TET_OK) {
            tet_report_fail(r, st, (int64_t)id, detail);
            return st;
        }
        if (c->g->codec[id] == TET_CODEC_ZSTD && c->g->raw[id] > c->scratch_len)
            c->scratch_len = c->g->raw[id];
    }
    return TET_OK;
}

tet_status tet_read_index(const tet_tiles *tiles, const uint64_t *index, const uint64_t *n_index,
                          uint8_t *dst, uint32_t threads, tet_report *report)
{
    tet_report_clear(report);
    const tet_status valid = index_valid(tiles, index, n_index);
    if (valid != TET_OK)
        return tet_report_refuse(report, valid);
    index_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        return tet_report_refuse(report, TET_ERR_NOMEM);
    c->g = tiles;
    c->dst = dst;
    if (index_plan(c, index, n_index) != TET_OK) {
        index_free(c);
        return tet_report_refuse(report, TET_ERR_NOMEM);
    }
    if (index_scan(c, report) != TET_OK) {
        index_free(c);
        return report->status;
    }
    if ((uint64_t)threads > c->total)
        threads = (uint32_t)c->total;
    tet_parallel(index_worker, c, threads, &c->stop, report);
    for (uint32_t i = 0; i < TET_MAX_THREADS; i++)
        tet_report_merge(report, &c->reports[i]);
    const tet_status st = report->status;
    index_free(c);
    return st;
}

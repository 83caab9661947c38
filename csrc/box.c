/* box.c: a box against a dataset's tile grid.  Which tiles a selection touches, the
 * part of each it covers, and the checks an index row passes before its bytes are
 * read, and the setup of a walk over those tiles: shared by box reads (read.c) and
 * folds (foldloop.c). */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

void tet_touch_free(tet_touch_set *t)
{
    for (uint32_t d = 0; d < t->ndim; d++)
        free(t->coord[d]);
}

/* The box against the geometry.  Past this check every size the loops derive
 * from them fits: the grid's tile count, the largest tile's bytes and the
 * selection's elements and bytes (each below 2^63), so products of a tile's or
 * the selection's extents never wrap. */
tet_status tet_box_valid(const tet_tiles *g, const tet_box *b)
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

tet_status tet_touch_build(const tet_tiles *g, const tet_box *b, tet_touch_set *t)
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
            tet_touch_free(t);
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
uint64_t tet_touch_item(const tet_tiles *g, const tet_box *b, const tet_touch_set *t,
                        uint64_t i, uint64_t *tile, uint64_t *src_start, uint64_t *count,
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
tet_status tet_tile_check(const tet_tiles *g, uint64_t id, const uint64_t *tile, uint64_t *detail)
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
    if (codec == TET_CODEC_RAW && stored != raw) {
        *detail = stored;
        return TET_ERR_LENGTH;
    }
    if (codec > TET_CODEC_ZSTD) {
        *detail = codec;
        return TET_ERR_CODEC;
    }
    return TET_OK;
}

/* Check every touched row before anything is allocated or decoded (the first
 * failing tile in grid order is reported), and find the largest zstd tile a
 * worker must decode: its size is the tile's own (tet_tile_check made raw_byte_len
 * equal to it), never a length the file merely declares. */
tet_status tet_touch_scan(const tet_tiles *g, const tet_box *b, const tet_touch_set *t,
                          uint64_t *largest_zstd, tet_report *r)
{
    uint64_t tile[TET_MAX_NDIM], ss[TET_MAX_NDIM], cnt[TET_MAX_NDIM], ds[TET_MAX_NDIM];
    uint64_t most = 0;
    for (uint64_t i = 0; i < t->total; i++) {
        const uint64_t id = tet_touch_item(g, b, t, i, tile, ss, cnt, ds);
        uint64_t detail = 0;
        const tet_status st = tet_tile_check(g, id, tile, &detail);
        if (st != TET_OK) {
            r->status = st;
            r->chunk = (int64_t)id;
            r->detail = detail;
            return st;
        }
        if (g->codec[id] == TET_CODEC_ZSTD && g->raw[id] > most)
            most = g->raw[id];
    }
    *largest_zstd = most;
    return TET_OK;
}

tet_status tet_tile_open(const tet_tiles *g, const tet_box *b, const tet_touch_set *t,
                         uint64_t i, uint8_t *scratch, tet_dctx *dctx, tet_tile_view *v,
                         uint64_t *detail)
{
    v->id = tet_touch_item(g, b, t, i, v->tile, v->src_start, v->count, v->dst_start);
    const uint64_t id = v->id, off = g->offset[id];
    const tet_status st = tet_tile_check(g, id, v->tile, detail);
    if (st != TET_OK)
        return st;
    v->bytes = g->file + off;
    if (g->codec[id] == TET_CODEC_RAW)
        return TET_OK;
    v->bytes = scratch;
    return tet_zstd_decode(dctx, scratch, g->raw[id], g->file + off, g->stored[id], detail);
}

void *tet_walk_new(const tet_tiles *g, const tet_box *b, size_t size, tet_report *r)
{
    tet_walk *w = calloc(1, size);
    if (w == NULL || tet_touch_build(g, b, &w->t) != TET_OK) {
        free(w);
        tet_report_refuse(r, TET_ERR_NOMEM);
        return NULL;
    }
    w->g = g;
    w->b = b;
    return w;
}

tet_status tet_walk_scan(tet_walk *w, tet_report *r)
{
    if (tet_touch_scan(w->g, w->b, &w->t, &w->scratch_len, r) == TET_OK)
        return TET_OK;
    tet_walk_free(w);
    return r->status;
}

tet_status tet_walk_run(tet_walk *w, tet_worker_fn work, uint32_t threads, tet_report *r)
{
    tet_parallel(work, w, threads, &w->stop, r);
    for (uint32_t i = 0; i < TET_MAX_THREADS; i++)
        tet_report_merge(r, &w->reports[i]);
    return r->status;
}

void tet_walk_free(tet_walk *w)
{
    tet_touch_free(&w->t);
    free(w);
}

tet_status tet_box_touch(const tet_tiles *tiles, const tet_box *box, uint64_t *out, uint64_t cap,
                         uint64_t *count)
{
    *count = 0;
    const tet_status valid = tet_box_valid(tiles, box);
    if (valid != TET_OK)
        return valid;
    tet_touch_set t;
    if (tet_touch_build(tiles, box, &t) != TET_OK)
        return TET_ERR_NOMEM;
    uint64_t tile[TET_MAX_NDIM], ss[TET_MAX_NDIM], cnt[TET_MAX_NDIM], ds[TET_MAX_NDIM];
    for (uint64_t i = 0; i < t.total && i < cap; i++)
        out[i] = tet_touch_item(tiles, box, &t, i, tile, ss, cnt, ds);
    tet_touch_free(&t);
    *count = t.total;
    return TET_OK;
}

tet_status tet_box_check(const tet_tiles *tiles, const tet_box *box, tet_report *report)
{
    tet_report_clear(report);
    const tet_status valid = tet_box_valid(tiles, box);
    if (valid != TET_OK)
        return tet_report_refuse(report, valid);
    tet_touch_set t;
    if (tet_touch_build(tiles, box, &t) != TET_OK)
        return tet_report_refuse(report, TET_ERR_NOMEM);
    uint64_t scratch = 0;
    tet_touch_scan(tiles, box, &t, &scratch, report);
    tet_touch_free(&t);
    return report->status;
}

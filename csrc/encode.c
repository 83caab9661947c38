/* encode.c: cut tiles out of a dense C-order block and encode them (a raw copy or one
 * zstd frame each), worker threads claiming tiles from a shared counter. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

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

/* encode_worker spells out a unit step for every axis */
TET_STATIC_ASSERT(TET_MAX_NDIM == 8, ones_has_one_per_axis);

static void encode_worker(void *vctx, uint32_t t)
{
    encode_ctx *c = vctx;
    const tet_encode_plan *p = c->plan;
    tet_report *rep = &c->reports[t];
    static const uint64_t zeros[TET_MAX_NDIM] = {0};
    static const uint64_t ones[TET_MAX_NDIM] = {1, 1, 1, 1, 1, 1, 1, 1};
    tet_scratch s;
    if (!tet_scratch_open(&s, p->codec == TET_CODEC_ZSTD ? TET_SCRATCH_ENCODE : TET_SCRATCH_NONE,
                          c->scratch_len, rep, &c->stop))
        return;
    for (;;) {
        uint64_t i = tet_claim(&c->next, p->n_chunks);
        if (i >= p->n_chunks || __atomic_load_n(&c->stop, __ATOMIC_RELAXED))
            break;
        const uint64_t *extent = p->extent + i * p->ndim;
        const uint64_t raw = tet_extent_bytes(extent, p->ndim, p->elem_size); /* checked */
        uint8_t *tile = p->codec == TET_CODEC_ZSTD ? s.buf : p->out + c->slot[i];
        tet_box_copy(tile, extent, zeros, p->src, p->src_shape, p->origin + i * p->ndim, ones,
                     extent, p->ndim, p->elem_size, c->strided);
        if (p->codec == TET_CODEC_RAW) {
            p->out_len[i] = raw;
            if (p->out_crc != NULL) /* while the tile is still in cache */
                p->out_crc[i] = c->crc(0, tile, raw);
            continue;
        }
        uint64_t written = 0, detail = 0;
        tet_status st = tet_zstd_encode(s.cctx, p->out + c->slot[i], tet_zstd_bound(raw), tile,
                                        raw, p->level, &written, &detail);
        if (st != TET_OK) {
            tet_report_fail(rep, st, (int64_t)i, detail);
            __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
            break;
        }
        p->out_len[i] = written;
        if (p->out_crc != NULL)
            p->out_crc[i] = c->crc(0, p->out + c->slot[i], written);
    }
    tet_scratch_close(&s);
}

uint64_t tet_encode_capacity(uint32_t codec, uint64_t raw_len)
{
    return codec == TET_CODEC_ZSTD ? tet_zstd_bound(raw_len) : raw_len;
}

tet_status tet_encode(const tet_encode_plan *plan, tet_report *report)
{
    tet_report_clear(report);
    const tet_encode_plan *p = plan;
    if (p->ndim < 1 || p->ndim > TET_MAX_NDIM || p->elem_size == 0 ||
        p->codec > TET_CODEC_ZSTD)
        return tet_report_refuse(report, TET_ERR_ARGUMENT);
    encode_ctx *c = calloc(1, sizeof *c);
    uint64_t *slot = malloc((p->n_chunks ? p->n_chunks : 1) * sizeof *slot);
    if (c == NULL || slot == NULL) {
        free(c);
        free(slot);
        return tet_report_refuse(report, TET_ERR_NOMEM);
    }
    /* Lay out slots and check every tile against the source before any work. */
    uint64_t at = 0;
    for (uint64_t i = 0; i < p->n_chunks; i++) {
        const uint64_t *o = p->origin + i * p->ndim, *e = p->extent + i * p->ndim;
        for (uint32_t d = 0; d < p->ndim; d++) {
            if (e[d] == 0 || o[d] >= p->src_shape[d] || e[d] > p->src_shape[d] - o[d]) {
                tet_report_fail(report, TET_ERR_ARGUMENT, (int64_t)i, d);
                goto out;
            }
        }
        const uint64_t raw = tet_extent_bytes(e, p->ndim, p->elem_size);
        const uint64_t cap = raw == 0 ? 0 : tet_encode_capacity(p->codec, raw);
        if (raw == 0 || raw > (uint64_t)INT64_MAX || cap < raw || !tet_add_ok(at, cap, &at)) {
            tet_report_fail(report, TET_ERR_OVERFLOW, (int64_t)i, raw);
            goto out;
        }
        if (raw > c->scratch_len)
            c->scratch_len = raw;
        slot[i] = at - cap;
    }
    if (at > p->out_capacity) {
        tet_report_fail(report, TET_ERR_ARGUMENT, -1, at);
        goto out;
    }
    c->plan = p;
    c->slot = slot;
    c->strided = tet_active()->copy_strided;
    c->crc = tet_active()->crc32c;
    uint32_t threads = p->threads;
    if ((uint64_t)threads > p->n_chunks)
        threads = (uint32_t)p->n_chunks;
    tet_parallel(encode_worker, c, threads, &c->stop, report);
    for (uint32_t t = 0; t < TET_MAX_THREADS; t++)
        tet_report_merge(report, &c->reports[t]);
    if (report->status == TET_OK && p->codec == TET_CODEC_ZSTD) {
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

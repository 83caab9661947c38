/* run.c: the chunk loops.  One call walks a whole plan: worker threads claim
 * chunks from a shared counter, decode into a buffer they own (sized before
 * the loop), and copy their sub-box.  Chunks write disjoint parts of the
 * output, so workers never lock. */
#include <pthread.h>
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

static uint64_t product(const uint64_t *v, uint32_t n)
{
    uint64_t p = 1;
    for (uint32_t i = 0; i < n; i++)
        p *= v[i];
    return p;
}

static void fail(tet_report *r, tet_status status, uint64_t chunk, uint64_t detail)
{
    r->status = status;
    r->chunk = (int64_t)chunk;
    r->detail = detail;
}

/* ---- gather ------------------------------------------------------------ */

typedef struct {
    const tet_gather_plan *plan;
    uint64_t next;
    uint64_t scratch_len;   /* largest zstd tile in the plan */
    int stop;
    tet_copy_strided_fn strided;
    tet_report reports[TET_MAX_THREADS];
} gather_ctx;

/* The sub-box must stay inside both the tile and the destination. */
static int box_fits(const tet_gather_plan *p, uint64_t i)
{
    const uint64_t *tile = p->tile_shape + i * p->ndim, *ss = p->src_start + i * p->ndim;
    const uint64_t *cnt = p->count + i * p->ndim, *ds = p->dst_start + i * p->ndim;
    for (uint32_t d = 0; d < p->ndim; d++) {
        if (cnt[d] == 0 || tile[d] == 0 || ss[d] >= tile[d] ||
            (cnt[d] - 1) > (tile[d] - 1 - ss[d]) / p->step[d] || ds[d] >= p->dst_shape[d] ||
            cnt[d] > p->dst_shape[d] - ds[d])
            return 0;
    }
    return 1;
}

static void gather_worker(void *vctx, uint32_t t)
{
    gather_ctx *c = vctx;
    const tet_gather_plan *p = c->plan;
    tet_report *rep = &c->reports[t];
    uint8_t *scratch = NULL;
    tet_dctx *dctx = NULL;
    if (c->scratch_len > 0) {
        scratch = malloc(c->scratch_len);
        dctx = tet_dctx_new();
        if (scratch == NULL || dctx == NULL) {
            fail(rep, TET_ERR_NOMEM, 0, c->scratch_len);
            rep->chunk = -1;
            __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
            goto done;
        }
    }
    for (;;) {
        uint64_t i = tet_claim(&c->next, p->n_chunks);
        if (i >= p->n_chunks || __atomic_load_n(&c->stop, __ATOMIC_RELAXED))
            break;
        const uint64_t off = p->payload_offset[i], stored = p->stored_len[i];
        const uint64_t raw = p->raw_len[i];
        const uint64_t *tile = p->tile_shape + i * p->ndim;
        tet_status st = TET_OK;
        uint64_t detail = 0;
        if (off > p->file_len || stored > p->file_len - off) {
            st = TET_ERR_BOUNDS;
            detail = off;
        } else if (!box_fits(p, i)) {
            st = TET_ERR_ARGUMENT;
        } else if (raw != product(tile, p->ndim) * p->elem_size) {
            st = TET_ERR_TILE;
            detail = raw;
        }
        const uint8_t *src = p->file + off;
        if (st == TET_OK) {
            if (p->codec[i] == 0) {
                if (stored != raw) {
                    st = TET_ERR_LENGTH;
                    detail = stored;
                }
            } else if (p->codec[i] == 1) {
                st = tet_zstd_decode(dctx, scratch, raw, src, stored, &detail);
                src = scratch;
            } else {
                st = TET_ERR_CODEC;
                detail = p->codec[i];
            }
        }
        if (st != TET_OK) {
            if (rep->status == TET_OK)
                fail(rep, st, i, detail);
            __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
            break;
        }
        tet_box_copy(p->dst, p->dst_shape, p->dst_start + i * p->ndim, src, tile,
                     p->src_start + i * p->ndim, p->step, p->count + i * p->ndim, p->ndim,
                     p->elem_size, c->strided);
    }
done:
    free(scratch);
    tet_dctx_free(dctx);
}

int32_t tet_gather(const tet_gather_plan *plan, tet_report *report)
{
    memset(report, 0, sizeof *report);
    report->chunk = -1;
    if (plan->ndim < 1 || plan->ndim > TET_MAX_NDIM || plan->elem_size == 0) {
        report->status = TET_ERR_ARGUMENT;
        return TET_ERR_ARGUMENT;
    }
    for (uint32_t d = 0; d < plan->ndim; d++) {
        if (plan->step[d] == 0) {
            report->status = TET_ERR_ARGUMENT;
            return TET_ERR_ARGUMENT;
        }
    }
    gather_ctx *c = calloc(1, sizeof *c);
    if (c == NULL) {
        report->status = TET_ERR_NOMEM;
        return TET_ERR_NOMEM;
    }
    c->plan = plan;
    c->strided = tet_active_copy_strided();
    for (uint64_t i = 0; i < plan->n_chunks; i++)
        if (plan->codec[i] == 1 && plan->raw_len[i] > c->scratch_len)
            c->scratch_len = plan->raw_len[i];
    uint32_t threads = plan->threads;
    if ((uint64_t)threads > plan->n_chunks)
        threads = (uint32_t)plan->n_chunks;
    tet_parallel(gather_worker, c, threads);
    for (uint32_t t = 0; t < TET_MAX_THREADS; t++)
        tet_report_merge(report, &c->reports[t]);
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
            fail(rep, TET_ERR_NOMEM, 0, c->scratch_len);
            rep->chunk = -1;
            __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
            goto done;
        }
    }
    for (;;) {
        uint64_t i = tet_claim(&c->next, p->n_chunks);
        if (i >= p->n_chunks || __atomic_load_n(&c->stop, __ATOMIC_RELAXED))
            break;
        const uint64_t *extent = p->extent + i * p->ndim;
        const uint64_t raw = product(extent, p->ndim) * p->elem_size;
        uint8_t *tile = p->codec == 1 ? scratch : p->out + c->slot[i];
        tet_box_copy(tile, extent, zeros, p->src, p->src_shape, p->origin + i * p->ndim, ones,
                     extent, p->ndim, p->elem_size, c->strided);
        if (p->codec == 0) {
            p->out_len[i] = raw;
            continue;
        }
        uint64_t written = 0, detail = 0;
        tet_status st = tet_zstd_encode(cctx, p->out + c->slot[i], tet_zstd_bound(raw), tile,
                                        raw, p->level, &written, &detail);
        if (st != TET_OK) {
            fail(rep, st, i, detail);
            __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
            break;
        }
        p->out_len[i] = written;
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
    memset(report, 0, sizeof *report);
    report->chunk = -1;
    const tet_encode_plan *p = plan;
    if (p->ndim < 1 || p->ndim > TET_MAX_NDIM || p->elem_size == 0 || p->codec > 1) {
        report->status = TET_ERR_ARGUMENT;
        return TET_ERR_ARGUMENT;
    }
    encode_ctx *c = calloc(1, sizeof *c);
    uint64_t *slot = malloc((p->n_chunks ? p->n_chunks : 1) * sizeof *slot);
    if (c == NULL || slot == NULL) {
        free(c);
        free(slot);
        report->status = TET_ERR_NOMEM;
        return TET_ERR_NOMEM;
    }
    /* Lay out slots and check every tile against the source before any work. */
    uint64_t at = 0;
    for (uint64_t i = 0; i < p->n_chunks; i++) {
        const uint64_t *o = p->origin + i * p->ndim, *e = p->extent + i * p->ndim;
        for (uint32_t d = 0; d < p->ndim; d++) {
            if (e[d] == 0 || o[d] >= p->src_shape[d] || e[d] > p->src_shape[d] - o[d]) {
                fail(report, TET_ERR_ARGUMENT, i, d);
                goto out;
            }
        }
        const uint64_t raw = product(e, p->ndim) * p->elem_size;
        if (raw > c->scratch_len)
            c->scratch_len = raw;
        slot[i] = at;
        at += tet_encode_capacity(p->codec, raw);
    }
    if (at > p->out_capacity) {
        fail(report, TET_ERR_ARGUMENT, 0, at);
        report->chunk = -1;
        goto out;
    }
    c->plan = p;
    c->slot = slot;
    c->strided = tet_active_copy_strided();
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

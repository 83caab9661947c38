/* select.c: one pass of a streaming radix selection (exact quantiles without a copy).
 *
 * Every selected element is promoted to f64 (fills of the mask read as NaN) and mapped
 * to an order-preserving 64-bit key; NaNs are counted, never keyed.  Each target of the
 * pass takes the keys whose bits under `pmask` equal `prefix` and either counts them in
 * TET_SELECT_BUCKETS buckets by the 16 bits at `shift` or copies them out (`collect`).
 * Counts and copies add to what the caller passes in, so a box cut into windows runs
 * one pass per window.  Workers claim whole tiles and count into their own buckets,
 * merged after the walk: the result does not depend on the thread count (copied keys
 * come out in no particular order). */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

typedef struct {
    tet_walk w;                   /* first: the box, its touch set, the workers' reports */
    tet_select_spec *spec;
    uint64_t next_tile;
    uint64_t nan_count[TET_MAX_THREADS];
    uint64_t *local[TET_MAX_THREADS]; /* [n_targets][TET_SELECT_BUCKETS] per worker */
} select_ctx;

uint64_t tet_select_key(double x)
{
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    return (b >> 63) ? ~b : b | (UINT64_C(1) << 63);
}

double tet_select_value(uint64_t key)
{
    const uint64_t b = (key >> 63) ? key & ~(UINT64_C(1) << 63) : ~key;
    double x;
    memcpy(&x, &b, sizeof x);
    return x;
}

void tet_select_keys_f64_scalar(const double *x, uint64_t n, uint64_t *keys, uint64_t *nan)
{
    uint64_t found = 0;
    for (uint64_t i = 0; i < n; i++) {
        const int is_nan = x[i] != x[i];
        found += (uint64_t)is_nan;
        keys[i] = is_nan ? 0 : tet_select_key(x[i]);
    }
    *nan += found;
}

void tet_select_keys_f32_scalar(const uint8_t *src, uint64_t n, uint64_t *keys, uint64_t *nan)
{
    uint64_t found = 0;
    for (uint64_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, src + 4 * i, 4);
        const int is_nan = v != v;
        found += (uint64_t)is_nan;
        keys[i] = is_nan ? 0 : tet_select_key((double)v);
    }
    *nan += found;
}

/* A worker's copied keys of one target, handed over a few hundred at a time (one
 * atomic reservation each, not one per key). */
#define TET_STASH_KEYS 256
typedef struct {
    uint64_t n;
    uint64_t keys[TET_STASH_KEYS];
} select_stash;

static void stash_flush(tet_select_target *tg, select_stash *st)
{
    if (st->n == 0)
        return;
    const uint64_t at = __atomic_fetch_add(&tg->n_keys, st->n, __ATOMIC_RELAXED);
    for (uint64_t i = 0; i < st->n && at + i < tg->cap; i++)
        tg->keys[at + i] = st->keys[i];
    st->n = 0;
}

/* n keys (0: a NaN, never a number's key) into the targets' buckets or copies. */
static void select_block(tet_select_spec *spec, uint64_t *local, select_stash *stash,
                         const uint64_t *keys, uint64_t n)
{
    const uint32_t nt = spec->n_targets;
    if (nt == 1 && spec->target[0].pmask == 0 && !spec->target[0].collect) {
        /* the first pass: every key counts, two interleaved bucket sets (no stalls on
         * runs of equal buckets) */
        const uint32_t shift = spec->target[0].shift;
        uint64_t *c0 = local, *c1 = local + TET_SELECT_BUCKETS;
        uint64_t i = 0;
        for (; i + 1 < n; i += 2) {
            const uint64_t a = keys[i], b = keys[i + 1];
            if (a != 0)
                c0[(a >> shift) & (TET_SELECT_BUCKETS - 1)]++;
            if (b != 0)
                c1[(b >> shift) & (TET_SELECT_BUCKETS - 1)]++;
        }
        if (i < n && keys[i] != 0)
            c0[(keys[i] >> shift) & (TET_SELECT_BUCKETS - 1)]++;
        return;
    }
    for (uint32_t t = 0; t < nt; t++) {
        tet_select_target *tg = &spec->target[t];
        const uint64_t pmask = tg->pmask, prefix = tg->prefix;
        if (tg->collect) {
            select_stash *st = &stash[t];
            for (uint64_t i = 0; i < n; i++)
                if ((keys[i] & pmask) == prefix && keys[i] != 0) {
                    st->keys[st->n++] = keys[i];
                    if (st->n == TET_STASH_KEYS)
                        stash_flush(tg, st);
                }
            continue;
        }
        uint64_t *counts = local + (uint64_t)t * 2 * TET_SELECT_BUCKETS;
        for (uint64_t i = 0; i < n; i++) {
            const uint64_t k = keys[i];
            if ((k & pmask) == prefix && k != 0)
                counts[(k >> tg->shift) & (TET_SELECT_BUCKETS - 1)]++;
        }
    }
}

/* Every selected element of one decoded tile, a block of keys at a time (unit-stride
 * f32 keyed straight from the tile, everything else promoted first). */
static void select_tile(select_ctx *c, const tet_tile_view *v, uint64_t *local,
                        select_stash *stash, double *buf, uint64_t *keys, uint64_t *nan_count)
{
    const tet_kernels *kern = tet_active();
    const tet_tiles *g = c->w.g;
    const uint32_t nd = g->ndim, last = nd - 1;
    const tet_mask *mask = c->spec->mask != NULL && c->spec->mask->n > 0 ? c->spec->mask : NULL;
    uint64_t tstride[TET_MAX_NDIM], j[TET_MAX_NDIM] = {0};
    uint64_t s = 1;
    for (int d = (int)nd - 1; d >= 0; d--) {
        tstride[d] = s;
        s *= v->tile[d];
    }
    const uint64_t run = v->count[last], step = c->w.b->step[last];
    for (;;) {
        uint64_t src = 0;
        for (uint32_t d = 0; d < nd; d++) {
            const uint64_t jj = d == last ? 0 : j[d];
            src += (v->src_start[d] + jj * c->w.b->step[d]) * tstride[d];
        }
        const uint8_t *p = v->bytes + src * g->elem_size;
        for (uint64_t k = 0; k < run; k += TET_FOLD_BLOCK) {
            const uint64_t n = run - k < TET_FOLD_BLOCK ? run - k : TET_FOLD_BLOCK;
            const uint8_t *q = p + k * step * g->elem_size;
            if (mask == NULL && step == 1 && g->dtype == TET_DTYPE_F32) {
                kern->select_keys_f32(q, n, keys, nan_count);
            } else {
                tet_load_f64(g->dtype, q, n, step, buf);
                if (mask != NULL)
                    tet_mask_apply(g->dtype, q, n, step, mask, buf);
                kern->select_keys_f64(buf, n, keys, nan_count);
            }
            select_block(c->spec, local, stash, keys, n);
        }
        if (!tet_next_row(j, v->count, nd))
            break;
    }
}

static void select_worker(void *vctx, uint32_t w)
{
    select_ctx *c = vctx;
    tet_report *rep = &c->w.reports[w];
    tet_scratch s;
    if (!tet_scratch_open(&s, c->w.scratch_len ? TET_SCRATCH_DECODE : TET_SCRATCH_NONE,
                          c->w.scratch_len, rep, &c->w.stop))
        return;
    const uint32_t nt = c->spec->n_targets ? c->spec->n_targets : 1;
    double *buf = malloc(TET_FOLD_BLOCK * sizeof(double));
    uint64_t *keys = malloc(TET_FOLD_BLOCK * sizeof(uint64_t));
    select_stash *stash = malloc(TET_SELECT_TARGETS * sizeof *stash);
    uint64_t *local = calloc((size_t)nt * 2 * TET_SELECT_BUCKETS, sizeof(uint64_t));
    c->local[w] = local;
    if (buf == NULL || keys == NULL || stash == NULL || local == NULL) {
        tet_report_fail(rep, TET_ERR_NOMEM, -1,
                        (uint64_t)nt * 2 * TET_SELECT_BUCKETS * sizeof(uint64_t));
        __atomic_store_n(&c->w.stop, 1, __ATOMIC_RELAXED);
        goto done;
    }
    for (uint32_t t = 0; t < TET_SELECT_TARGETS; t++)
        stash[t].n = 0;
    for (;;) {
        const uint64_t i = tet_claim(&c->next_tile, c->w.t.total);
        if (i >= c->w.t.total || __atomic_load_n(&c->w.stop, __ATOMIC_RELAXED))
            break;
        tet_tile_view v;
        uint64_t detail = 0;
        const tet_status st = tet_tile_open(c->w.g, c->w.b, &c->w.t, i, s.buf, s.dctx, &v,
                                            &detail);
        if (st != TET_OK) {
            tet_report_fail(rep, st, (int64_t)v.id, detail);
            __atomic_store_n(&c->w.stop, 1, __ATOMIC_RELAXED);
            break;
        }
        select_tile(c, &v, local, stash, buf, keys, &c->nan_count[w]);
    }
    for (uint32_t t = 0; t < c->spec->n_targets; t++)
        if (c->spec->target[t].collect)
            stash_flush(&c->spec->target[t], &stash[t]);
done:
    free(stash);
    free(keys);
    free(buf);
    tet_scratch_close(&s);
}

tet_status tet_select_pass(const tet_tiles *tiles, const tet_box *box, tet_select_spec *spec,
                           tet_report *report)
{
    tet_report_clear(report);
    const tet_status valid = tet_box_valid(tiles, box);
    if (valid != TET_OK)
        return tet_report_refuse(report, valid);
    int bad = spec->n_targets > TET_SELECT_TARGETS || tiles->dtype < TET_DTYPE_F32 ||
              tiles->dtype > TET_DTYPE_LAST ||
              (spec->mask != NULL && spec->mask->n > TET_MASK_MAX);
    for (uint32_t t = 0; !bad && t < spec->n_targets; t++) {
        const tet_select_target *tg = &spec->target[t];
        bad = (tg->prefix & ~tg->pmask) != 0 ||
              (tg->collect ? tg->keys == NULL && tg->cap > 0
                           : tg->counts == NULL || tg->shift > 64 - TET_SELECT_BITS);
    }
    if (bad)
        return tet_report_refuse(report, TET_ERR_ARGUMENT);
    select_ctx *c = tet_walk_new(tiles, box, sizeof *c, report);
    if (c == NULL || tet_walk_scan(&c->w, report) != TET_OK)
        return report->status;
    c->spec = spec;
    uint32_t threads = spec->threads ? spec->threads : 1;
    if ((uint64_t)threads > c->w.t.total)
        threads = c->w.t.total ? (uint32_t)c->w.t.total : 1;
    if (threads > TET_MAX_THREADS)
        threads = TET_MAX_THREADS;
    const tet_status st = tet_walk_run(&c->w, select_worker, threads, report);
    for (uint32_t w = 0; w < threads; w++) {
        uint64_t *local = c->local[w];
        if (st == TET_OK && local != NULL) {
            for (uint32_t t = 0; t < spec->n_targets; t++) {
                const tet_select_target *tg = &spec->target[t];
                if (tg->collect)
                    continue;
                const uint64_t *l = local + (uint64_t)t * 2 * TET_SELECT_BUCKETS;
                for (uint64_t b = 0; b < TET_SELECT_BUCKETS; b++)
                    tg->counts[b] += l[b] + l[TET_SELECT_BUCKETS + b];
            }
            spec->nan_count += c->nan_count[w];
        }
        free(local);
    }
    tet_walk_free(&c->w);
    return report->status;
}

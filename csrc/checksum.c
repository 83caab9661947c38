/* checksum.c: CRC-32C of tiles and file spans, and the zstd frame check of
 * `tet verify`.
 *
 * CRC-32C is the Castagnoli CRC of iSCSI, ext4 and SSE4.2's crc32 instruction:
 * reflected polynomial 0x82F63B78, register preset and final xor 0xFFFFFFFF,
 * so crc32c("123456789") = 0xE3069283.  The scalar body reads eight bytes a
 * step through eight 256-entry tables; the SSE4.2 body (checksum_sse42.c) runs
 * three independent streams through the crc32 instruction and joins them with
 * the zero-shift tables below.  All tables are built once, on first use. */
#define _POSIX_C_SOURCE 200112L /* pthread_once */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define CRC32C_POLY 0x82F63B78u

static tet_crc_tables tables;
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

/* The register after `len` zero bytes, as a table per byte of the register:
 * shifting is linear, so the image of each of the 32 register bits is enough. */
static void build_shift(uint32_t shift[4][256], uint64_t len)
{
    uint32_t image[32];
    for (int bit = 0; bit < 32; bit++) {
        uint32_t r = 1u << bit;
        for (uint64_t i = 0; i < len; i++)
            r = tables.byte[0][r & 0xFF] ^ (r >> 8);
        image[bit] = r;
    }
    for (int k = 0; k < 4; k++)
        for (uint32_t b = 0; b < 256; b++) {
            uint32_t v = 0;
            for (int j = 0; j < 8; j++)
                if (b & (1u << j))
                    v ^= image[8 * k + j];
            shift[k][b] = v;
        }
}

static void build_tables(void)
{
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t r = b;
        for (int j = 0; j < 8; j++)
            r = (r & 1u) ? (r >> 1) ^ CRC32C_POLY : r >> 1;
        tables.byte[0][b] = r;
    }
    for (int k = 1; k < 8; k++)
        for (uint32_t b = 0; b < 256; b++) {
            const uint32_t prev = tables.byte[k - 1][b];
            tables.byte[k][b] = (prev >> 8) ^ tables.byte[0][prev & 0xFF];
        }
    build_shift(tables.long_shift, TET_CRC_LONG);
    build_shift(tables.short_shift, TET_CRC_SHORT);
}

const tet_crc_tables *tet_crc32c_tables(void)
{
    pthread_once(&tables_once, build_tables);
    return &tables;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t tet_crc32c_scalar(uint32_t crc, const uint8_t *p, uint64_t n)
{
    const tet_crc_tables *t = tet_crc32c_tables();
    uint32_t r = ~crc;
    for (; n >= 8; p += 8, n -= 8) {
        const uint32_t lo = r ^ le32(p), hi = le32(p + 4);
        r = t->byte[7][lo & 0xFF] ^ t->byte[6][(lo >> 8) & 0xFF] ^
            t->byte[5][(lo >> 16) & 0xFF] ^ t->byte[4][lo >> 24] ^
            t->byte[3][hi & 0xFF] ^ t->byte[2][(hi >> 8) & 0xFF] ^
            t->byte[1][(hi >> 16) & 0xFF] ^ t->byte[0][hi >> 24];
    }
    for (; n > 0; p++, n--)
        r = t->byte[0][(r ^ *p) & 0xFF] ^ (r >> 8);
    return ~r;
}

uint32_t tet_crc32c_shift(const uint32_t shift[4][256], uint32_t r)
{
    return shift[0][r & 0xFF] ^ shift[1][(r >> 8) & 0xFF] ^ shift[2][(r >> 16) & 0xFF] ^
           shift[3][r >> 24];
}

tet_status tet_crc32c(int32_t level, const uint8_t *data, uint64_t n, uint32_t *crc)
{
    const tet_kernels *k = tet_kernels_for(level);
    if (k == NULL)
        return TET_ERR_SIMD;
    *crc = k->crc32c(*crc, data, n);
    return TET_OK;
}

/* ---- spans of a mapped file ---------------------------------------------- */

typedef struct {
    const tet_spans *s;
    uint64_t next;
    int stop;
    tet_crc32c_fn crc;
    tet_report reports[TET_MAX_THREADS];
} spans_ctx;

static int span_outside(const tet_spans *s, uint64_t i)
{
    return s->offset[i] > s->file_len || s->length[i] > s->file_len - s->offset[i];
}

static void crc_worker(void *vctx, uint32_t w)
{
    spans_ctx *c = vctx;
    const tet_spans *s = c->s;
    for (;;) {
        const uint64_t i = tet_claim(&c->next, s->n);
        if (i >= s->n || __atomic_load_n(&c->stop, __ATOMIC_RELAXED))
            break;
        if (span_outside(s, i)) {
            c->reports[w].status = TET_ERR_BOUNDS;
            c->reports[w].chunk = (int64_t)i;
            c->reports[w].detail = s->offset[i];
            __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
            break;
        }
        s->crc[i] = c->crc(0, s->file + s->offset[i], s->length[i]);
    }
}

static tet_status run_spans(const tet_spans *s, tet_report *report, tet_worker_fn work)
{
    tet_report_clear(report);
    if (s->n > 0 && (s->file == NULL || s->offset == NULL || s->length == NULL))
        return tet_report_refuse(report, TET_ERR_ARGUMENT);
    spans_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        return tet_report_refuse(report, TET_ERR_NOMEM);
    for (uint32_t t = 0; t < TET_MAX_THREADS; t++)
        c->reports[t].chunk = -1;
    c->s = s;
    c->crc = tet_active()->crc32c;
    uint32_t threads = s->threads ? s->threads : 1;
    if ((uint64_t)threads > s->n)
        threads = s->n ? (uint32_t)s->n : 1;
    tet_parallel(work, c, threads, &c->stop, report);
    for (uint32_t t = 0; t < TET_MAX_THREADS; t++)
        tet_report_merge(report, &c->reports[t]);
    free(c);
    return report->status;
}

tet_status tet_crc32c_spans(const tet_spans *s, tet_report *report)
{
    if (s->n > 0 && s->crc == NULL) {
        tet_report_clear(report);
        return tet_report_refuse(report, TET_ERR_ARGUMENT);
    }
    return run_spans(s, report, crc_worker);
}

/* ---- zstd frames, decoded in bounded steps -------------------------------- */

static void frame_worker(void *vctx, uint32_t w)
{
    spans_ctx *c = vctx;
    const tet_spans *s = c->s;
    tet_scratch z;
    if (!tet_scratch_open(&z, TET_SCRATCH_FRAMES, s->window, &c->reports[w], &c->stop))
        return;
    for (;;) {
        const uint64_t i = tet_claim(&c->next, s->n);
        if (i >= s->n || __atomic_load_n(&c->stop, __ATOMIC_RELAXED))
            break;
        uint64_t detail = 0;
        tet_status st;
        if (span_outside(s, i)) {
            st = TET_ERR_BOUNDS;
            detail = s->offset[i];
        } else {
            st = tet_zstd_check(z.ds, s->file + s->offset[i], s->length[i], s->raw[i], z.buf,
                                s->window, s->max_need, &detail);
        }
        s->status[i] = st;
        s->detail[i] = detail;
    }
    tet_scratch_close(&z);
}

tet_status tet_check_frames(const tet_spans *s, tet_report *report)
{
    if (s->n > 0 && (s->raw == NULL || s->status == NULL || s->detail == NULL ||
                     s->window == 0)) {
        tet_report_clear(report);
        return tet_report_refuse(report, TET_ERR_ARGUMENT);
    }
    return run_spans(s, report, frame_worker);
}

/* codec.c: zstd through the system runtime library libzstd.so.1.
 *
 * A fresh machine often has the runtime library but not zstd.h; the build
 * then defines TET_NO_ZSTD_H and we declare the stable (v1.4+) functions and
 * enum values we use ourselves.
 *
 * Frames are written with the content checksum (XXH64 of the decoded bytes,
 * low 32 bits, at the end of the frame), which libzstd verifies on every
 * decode; any zstd reader decodes them. */
#include <stdlib.h>
#include "internal.h"

#ifndef TET_NO_ZSTD_H
#include <zstd.h>
#else
typedef struct ZSTD_CCtx_s ZSTD_CCtx;
typedef struct ZSTD_DCtx_s ZSTD_DCtx;
size_t ZSTD_compressBound(size_t srcSize);
unsigned ZSTD_isError(size_t code);
const char *ZSTD_getErrorName(size_t code);
ZSTD_CCtx *ZSTD_createCCtx(void);
size_t ZSTD_freeCCtx(ZSTD_CCtx *cctx);
ZSTD_DCtx *ZSTD_createDCtx(void);
size_t ZSTD_freeDCtx(ZSTD_DCtx *dctx);
size_t ZSTD_decompressDCtx(ZSTD_DCtx *dctx, void *dst, size_t dstCapacity, const void *src,
                           size_t srcSize);
unsigned long long ZSTD_getFrameContentSize(const void *src, size_t srcSize);
#define ZSTD_CONTENTSIZE_UNKNOWN (0ULL - 1)
#define ZSTD_CONTENTSIZE_ERROR (0ULL - 2)
typedef enum { ZSTD_c_compressionLevel = 100, ZSTD_c_checksumFlag = 201 } ZSTD_cParameter;
size_t ZSTD_CCtx_setParameter(ZSTD_CCtx *cctx, ZSTD_cParameter param, int value);
size_t ZSTD_compress2(ZSTD_CCtx *cctx, void *dst, size_t dstCapacity, const void *src,
                      size_t srcSize);
typedef enum { ZSTD_d_windowLogMax = 100 } ZSTD_dParameter;
size_t ZSTD_DCtx_setParameter(ZSTD_DCtx *dctx, ZSTD_dParameter param, int value);
typedef enum { ZSTD_reset_session_only = 1 } ZSTD_ResetDirective;
size_t ZSTD_DCtx_reset(ZSTD_DCtx *dctx, ZSTD_ResetDirective reset);
typedef struct ZSTD_inBuffer_s { const void *src; size_t size; size_t pos; } ZSTD_inBuffer;
typedef struct ZSTD_outBuffer_s { void *dst; size_t size; size_t pos; } ZSTD_outBuffer;
size_t ZSTD_decompressStream(ZSTD_DCtx *zds, ZSTD_outBuffer *output, ZSTD_inBuffer *input);
#endif

/* ZSTD_error_srcSize_wrong (error codes are pinned since v1.3.1): a truncated frame. */
#define TET_ZSTD_SRC_SIZE_WRONG ((size_t)0 - 72)
#define TET_FRAME_MAGIC 0xFD2FB528u
#define TET_BLOCK_MAX (128u * 1024u)       /* the largest zstd block */
#define TET_DSTREAM_OVERHEAD (256u * 1024u) /* decoder state and its input block */

struct tet_dctx { ZSTD_DCtx *z; };
struct tet_cctx { ZSTD_CCtx *z; };
struct tet_dstream { ZSTD_DCtx *z; };

tet_dctx *tet_dctx_new(void)
{
    tet_dctx *ctx = malloc(sizeof *ctx);
    if (ctx == NULL)
        return NULL;
    ctx->z = ZSTD_createDCtx();
    if (ctx->z == NULL) {
        free(ctx);
        return NULL;
    }
    return ctx;
}

void tet_dctx_free(tet_dctx *ctx)
{
    if (ctx != NULL) {
        ZSTD_freeDCtx(ctx->z);
        free(ctx);
    }
}

tet_cctx *tet_cctx_new(void)
{
    tet_cctx *ctx = malloc(sizeof *ctx);
    if (ctx == NULL)
        return NULL;
    ctx->z = ZSTD_createCCtx();
    if (ctx->z == NULL || ZSTD_isError(ZSTD_CCtx_setParameter(ctx->z, ZSTD_c_checksumFlag, 1))) {
        ZSTD_freeCCtx(ctx->z);
        free(ctx);
        return NULL;
    }
    return ctx;
}

void tet_cctx_free(tet_cctx *ctx)
{
    if (ctx != NULL) {
        ZSTD_freeCCtx(ctx->z);
        free(ctx);
    }
}

tet_status tet_zstd_decode(tet_dctx *ctx, uint8_t *dst, uint64_t raw_len, const uint8_t *src,
                           uint64_t src_len, uint64_t *detail)
{
    /* A frame that declares another size is a length error, not a codec one. */
    unsigned long long declared = ZSTD_getFrameContentSize(src, (size_t)src_len);
    if (declared != ZSTD_CONTENTSIZE_ERROR && declared != ZSTD_CONTENTSIZE_UNKNOWN &&
        declared != raw_len) {
        *detail = declared;
        return TET_ERR_LENGTH;
    }
    size_t got = ZSTD_decompressDCtx(ctx->z, dst, (size_t)raw_len, src, (size_t)src_len);
    if (ZSTD_isError(got)) {
        *detail = (uint64_t)got;
        return TET_ERR_ZSTD;
    }
    if (got != raw_len) {
        *detail = got;
        return TET_ERR_LENGTH;
    }
    return TET_OK;
}

tet_status tet_zstd_encode(tet_cctx *ctx, uint8_t *dst, uint64_t cap, const uint8_t *src,
                           uint64_t src_len, int level, uint64_t *written, uint64_t *detail)
{
    size_t got = ZSTD_CCtx_setParameter(ctx->z, ZSTD_c_compressionLevel, level);
    if (!ZSTD_isError(got))
        got = ZSTD_compress2(ctx->z, dst, (size_t)cap, src, (size_t)src_len);
    if (ZSTD_isError(got)) {
        *detail = (uint64_t)got;
        return TET_ERR_ZSTD;
    }
    *written = got;
    return TET_OK;
}

uint64_t tet_zstd_bound(uint64_t raw_len)
{
    return ZSTD_compressBound((size_t)raw_len);
}

const char *tet_zstd_error_name(uint64_t code)
{
    return ZSTD_getErrorName((size_t)code);
}

tet_dstream *tet_dstream_new(void)
{
    tet_dstream *ds = malloc(sizeof *ds);
    if (ds == NULL)
        return NULL;
    ds->z = ZSTD_createDCtx();
    /* Windows are bounded by tet_zstd_check before each frame, not by libzstd's
     * default 128 MiB limit, so every valid frame can be checked. */
    const int most = sizeof(size_t) == 8 ? 31 : 30;
    if (ds->z == NULL || ZSTD_isError(ZSTD_DCtx_setParameter(ds->z, ZSTD_d_windowLogMax, most))) {
        ZSTD_freeDCtx(ds->z);
        free(ds);
        return NULL;
    }
    return ds;
}

void tet_dstream_free(tet_dstream *ds)
{
    if (ds != NULL) {
        ZSTD_freeDCtx(ds->z);
        free(ds);
    }
}

/* Bytes a streaming decoder allocates for the frame at src: its history buffer
 * (the window plus a block, or the whole content when that is smaller) and its
 * fixed state.  Not a frame (or a skippable one): the fixed state only. */
static uint64_t frame_need(const uint8_t *src, uint64_t len)
{
    if (len < 6)
        return TET_DSTREAM_OVERHEAD;
    const uint32_t magic = (uint32_t)src[0] | (uint32_t)src[1] << 8 | (uint32_t)src[2] << 16 |
                           (uint32_t)src[3] << 24;
    if (magic != TET_FRAME_MAGIC)
        return TET_DSTREAM_OVERHEAD;
    const unsigned long long fcs = ZSTD_getFrameContentSize(src, (size_t)len);
    const int known = fcs != ZSTD_CONTENTSIZE_ERROR && fcs != ZSTD_CONTENTSIZE_UNKNOWN;
    uint64_t window = 0;
    if (src[4] & 0x20u) {          /* single segment: the window is the content */
        window = known ? fcs : 0;
    } else {                       /* window descriptor: exponent and eighths */
        const unsigned wd = src[5];
        const uint64_t base = (uint64_t)1 << (10 + (wd >> 3));
        window = base + (base >> 3) * (wd & 7u);
    }
    uint64_t history = window + TET_BLOCK_MAX;
    if (known && fcs < history)
        history = fcs;
    return history + TET_DSTREAM_OVERHEAD;
}

tet_status tet_zstd_check(tet_dstream *ds, const uint8_t *src, uint64_t src_len,
                          uint64_t raw_len, uint8_t *window, uint64_t window_len,
                          uint64_t max_need, uint64_t *detail)
{
    const unsigned long long declared = ZSTD_getFrameContentSize(src, (size_t)src_len);
    if (declared != ZSTD_CONTENTSIZE_ERROR && declared != ZSTD_CONTENTSIZE_UNKNOWN &&
        declared != raw_len) {
        *detail = declared;
        return TET_ERR_LENGTH;
    }
    ZSTD_DCtx_reset(ds->z, ZSTD_reset_session_only);
    ZSTD_inBuffer in = {src, (size_t)src_len, 0};
    uint64_t produced = 0;
    int frame_start = 1;
    for (;;) {
        if (frame_start) { /* a payload may hold several frames, each checked first */
            const uint64_t need = frame_need(src + in.pos, src_len - in.pos);
            if (need > max_need) {
                *detail = need;
                return TET_ERR_NOMEM;
            }
            frame_start = 0;
        }
        ZSTD_outBuffer out = {window, (size_t)window_len, 0};
        const size_t in_before = in.pos;
        const size_t ret = ZSTD_decompressStream(ds->z, &out, &in);
        if (ZSTD_isError(ret)) {
            *detail = (uint64_t)ret;
            return TET_ERR_ZSTD;
        }
        produced += out.pos;
        if (produced > raw_len) { /* stop: a hostile frame could decode for ever */
            *detail = produced;
            return TET_ERR_LENGTH;
        }
        if (ret == 0) {
            if (in.pos == in.size)
                break;
            frame_start = 1;
            continue;
        }
        /* input used up with room left to write, or no progress at all: truncated */
        if ((in.pos == in.size && out.pos < out.size) || (out.pos == 0 && in.pos == in_before)) {
            *detail = TET_ZSTD_SRC_SIZE_WRONG;
            return TET_ERR_ZSTD;
        }
    }
    if (produced != raw_len) {
        *detail = produced;
        return TET_ERR_LENGTH;
    }
    return TET_OK;
}

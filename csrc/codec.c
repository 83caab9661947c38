/* codec.c: zstd through the system runtime library libzstd.so.1.
 *
 * A fresh machine often has the runtime library but not zstd.h; the build
 * then defines TET_NO_ZSTD_H and we declare the stable (v1.x) functions we
 * use ourselves. */
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
unsigned ZSTD_versionNumber(void);
ZSTD_CCtx *ZSTD_createCCtx(void);
size_t ZSTD_freeCCtx(ZSTD_CCtx *cctx);
size_t ZSTD_compressCCtx(ZSTD_CCtx *cctx, void *dst, size_t dstCapacity, const void *src,
                         size_t srcSize, int compressionLevel);
ZSTD_DCtx *ZSTD_createDCtx(void);
size_t ZSTD_freeDCtx(ZSTD_DCtx *dctx);
size_t ZSTD_decompressDCtx(ZSTD_DCtx *dctx, void *dst, size_t dstCapacity, const void *src,
                           size_t srcSize);
unsigned long long ZSTD_getFrameContentSize(const void *src, size_t srcSize);
#define ZSTD_CONTENTSIZE_UNKNOWN (0ULL - 1)
#define ZSTD_CONTENTSIZE_ERROR (0ULL - 2)
#endif

struct tet_dctx { ZSTD_DCtx *z; };
struct tet_cctx { ZSTD_CCtx *z; };

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
    if (ctx->z == NULL) {
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
    size_t got = ZSTD_compressCCtx(ctx->z, dst, (size_t)cap, src, (size_t)src_len, level);
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

uint32_t tet_zstd_version(void)
{
    return ZSTD_versionNumber();
}

/* gather.c: copy an n-d box between two dense C-order buffers.
 *
 * The innermost axes that both buffers span completely with unit step are
 * merged into one run, so a whole-tile read is a handful of memcpy calls and
 * a hyperslab is one memcpy per row.  A non-unit innermost step goes through
 * the dispatched strided kernel. */
#include <string.h>
#include "internal.h"

void tet_copy_strided_scalar(uint8_t *restrict dst, const uint8_t *restrict src, uint64_t count,
                             uint64_t step, uint32_t elem_size)
{
    uint64_t i;
    switch (elem_size) {
    case 1:
        for (i = 0; i < count; i++)
            dst[i] = src[i * step];
        break;
    case 2:
        for (i = 0; i < count; i++)
            memcpy(dst + 2 * i, src + 2 * i * step, 2);
        break;
    case 4:
        for (i = 0; i < count; i++)
            memcpy(dst + 4 * i, src + 4 * i * step, 4);
        break;
    case 8:
        for (i = 0; i < count; i++)
            memcpy(dst + 8 * i, src + 8 * i * step, 8);
        break;
    default:
        for (i = 0; i < count; i++)
            memcpy(dst + (uint64_t)elem_size * i, src + (uint64_t)elem_size * i * step, elem_size);
        break;
    }
}

void tet_box_copy(uint8_t *dst, const uint64_t *dst_shape, const uint64_t *dst_start,
                  const uint8_t *src, const uint64_t *src_shape, const uint64_t *src_start,
                  const uint64_t *step, const uint64_t *count, uint32_t ndim,
                  uint32_t elem_size, tet_copy_strided_fn strided)
{
    uint64_t src_stride[TET_MAX_NDIM], dst_stride[TET_MAX_NDIM];
    uint64_t s = elem_size, t = elem_size;
    for (int d = (int)ndim - 1; d >= 0; d--) {
        src_stride[d] = s;
        dst_stride[d] = t;
        s *= src_shape[d];
        t *= dst_shape[d];
    }

    /* Merge fully spanned unit-step inner axes into one block. */
    int run_axis = (int)ndim - 1;
    uint64_t block = 1;
    while (run_axis > 0 && step[run_axis] == 1 && src_start[run_axis] == 0 &&
           dst_start[run_axis] == 0 && count[run_axis] == src_shape[run_axis] &&
           count[run_axis] == dst_shape[run_axis]) {
        block *= count[run_axis];
        run_axis--;
    }
    const uint64_t block_bytes = block * elem_size;
    const uint64_t run_count = count[run_axis];
    const uint64_t run_src_step = step[run_axis] * src_stride[run_axis];

    uint64_t src_off = 0, dst_off = 0;
    for (int d = 0; d < (int)ndim; d++) {
        src_off += src_start[d] * src_stride[d];
        dst_off += dst_start[d] * dst_stride[d];
    }

    uint64_t idx[TET_MAX_NDIM] = {0};
    for (;;) {
        const uint8_t *sp = src + src_off;
        uint8_t *dp = dst + dst_off;
        if (step[run_axis] == 1) {
            memcpy(dp, sp, run_count * block_bytes);
        } else if (block == 1) {
            strided(dp, sp, run_count, step[run_axis], elem_size);
        } else {
            for (uint64_t i = 0; i < run_count; i++)
                memcpy(dp + i * block_bytes, sp + i * run_src_step, block_bytes);
        }
        /* Odometer over the outer axes. */
        int d = run_axis - 1;
        for (; d >= 0; d--) {
            idx[d]++;
            src_off += step[d] * src_stride[d];
            dst_off += dst_stride[d];
            if (idx[d] < count[d])
                break;
            src_off -= idx[d] * step[d] * src_stride[d];
            dst_off -= idx[d] * dst_stride[d];
            idx[d] = 0;
        }
        if (d < 0)
            break;
    }
}

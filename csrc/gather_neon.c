/* gather_neon.c: NEON body of the strided copy.  Steps 2..4 of 4-byte
 * elements use the de-interleaving loads; everything else is scalar. */
#include "internal.h"
#ifdef TET_HAVE_NEON_BODY
#include <arm_neon.h>

void tet_copy_strided_neon(uint8_t *restrict dst, const uint8_t *restrict src, uint64_t count,
                           uint64_t step, uint32_t elem_size)
{
    uint64_t i = 0;
    if (elem_size == 4 && step == 2) {
        for (; i + 4 < count; i += 4) /* the last group would read past the run */
            vst1q_u32((uint32_t *)(void *)(dst + 4 * i),
                      vld2q_u32((const uint32_t *)(const void *)(src + 8 * i)).val[0]);
    } else if (elem_size == 4 && step == 3) {
        for (; i + 4 < count; i += 4) /* the last group would read past the run */
            vst1q_u32((uint32_t *)(void *)(dst + 4 * i),
                      vld3q_u32((const uint32_t *)(const void *)(src + 12 * i)).val[0]);
    } else if (elem_size == 4 && step == 4) {
        for (; i + 4 < count; i += 4) /* the last group would read past the run */
            vst1q_u32((uint32_t *)(void *)(dst + 4 * i),
                      vld4q_u32((const uint32_t *)(const void *)(src + 16 * i)).val[0]);
    }
    if (i < count)
        tet_copy_strided_scalar(dst + (uint64_t)elem_size * i,
                                src + (uint64_t)elem_size * i * step, count - i, step, elem_size);
}
#endif

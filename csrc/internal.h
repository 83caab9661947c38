/* internal.h: what the C files share and CFFI never sees. */
#ifndef TET_INTERNAL_H
#define TET_INTERNAL_H
#include <string.h>
#include "tet.h"

/* The last dtype tag (tags run from TET_DTYPE_F32 = 1 without gaps). */
#define TET_DTYPE_LAST TET_DTYPE_U64

/* ---- compile-time checks (C99: a negative array size fails the build) ---- */
#define TET_STATIC_ASSERT(cond, name) typedef char tet_static_assert_##name[(cond) ? 1 : -1]
#define TET_FIELD_LEN(type, field) (sizeof(((type *)0)->field) / sizeof(((type *)0)->field[0]))

/* The fixed arrays of the API structs hold what their constants say. */
TET_STATIC_ASSERT(TET_FIELD_LEN(tet_box, start) == TET_MAX_NDIM, box_start_per_axis);
TET_STATIC_ASSERT(TET_FIELD_LEN(tet_box, stop) == TET_MAX_NDIM, box_stop_per_axis);
TET_STATIC_ASSERT(TET_FIELD_LEN(tet_box, step) == TET_MAX_NDIM, box_step_per_axis);
TET_STATIC_ASSERT(TET_FIELD_LEN(tet_transform_spec, shape) == TET_MAX_NDIM, tx_shape_per_axis);
TET_STATIC_ASSERT(TET_FIELD_LEN(tet_transform_spec, bad) == TET_TX_MAX_BAD, tx_bad_capacity);
TET_STATIC_ASSERT(TET_FIELD_LEN(tet_mask, value) == TET_MASK_MAX, mask_values);
TET_STATIC_ASSERT(TET_FIELD_LEN(tet_mask, bits) == TET_MASK_MAX, mask_bits);
/* reduce_mask (fold and transform specs) has one bit per axis. */
TET_STATIC_ASSERT(TET_MAX_NDIM <= 32, reduce_mask_bit_per_axis);

/* ---- checked arithmetic ------------------------------------------------ */
/* Sizes derived from file fields or query values go through these: each
 * returns 0 (leaving *out unset) when the exact result does not fit. */
static inline int tet_mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    if (b != 0 && a > UINT64_MAX / b)
        return 0;
    *out = a * b;
    return 1;
}

static inline int tet_add_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a > UINT64_MAX - b)
        return 0;
    *out = a + b;
    return 1;
}

/* ceil(a / k) for k >= 1, without forming a + k - 1. */
static inline uint64_t tet_ceil_div(uint64_t a, uint64_t k)
{
    return a / k + (a % k != 0);
}

/* The product of n extents times elem_size, or 0 when it overflows (a real
 * product is never 0: every extent is >= 1 where this is used). */
static inline uint64_t tet_extent_bytes(const uint64_t *v, uint32_t n, uint64_t elem_size)
{
    uint64_t p = elem_size;
    for (uint32_t i = 0; i < n; i++)
        if (!tet_mul_ok(p, v[i], &p))
            return 0;
    return p;
}

#define TET_FOLD_BLOCK 1024   /* elements promoted to f64 and folded at a time */
#define TET_GROUP_ROWS 1024   /* rows of one cell range folded together (kept innermost axis) */

/* ---- strided copy kernels (one per ISA, chosen in dispatch.c) ---------- */
typedef void (*tet_copy_strided_fn)(uint8_t *restrict dst, const uint8_t *restrict src,
                                    uint64_t count, uint64_t step, uint32_t elem_size);

void tet_copy_strided_scalar(uint8_t *restrict dst, const uint8_t *restrict src,
                             uint64_t count, uint64_t step, uint32_t elem_size);
#if defined(__x86_64__) || defined(_M_X64)
#define TET_HAVE_AVX2_BODY 1
void tet_copy_strided_avx2(uint8_t *restrict dst, const uint8_t *restrict src,
                           uint64_t count, uint64_t step, uint32_t elem_size);
#endif
#if defined(__aarch64__)
#define TET_HAVE_NEON_BODY 1
void tet_copy_strided_neon(uint8_t *restrict dst, const uint8_t *restrict src,
                           uint64_t count, uint64_t step, uint32_t elem_size);
#endif

/* Block min/max of unit-stride f32 values (NaN skipped; *nan set when present). */
typedef void (*tet_minmax_f32_fn)(const uint8_t *src, uint64_t n, float *lo, float *hi, int *nan);
/* Moments of n <= TET_FOLD_BLOCK unit-stride f32 values about k: the plain sum, the
 * sum of x - k, and the squared deviations from that block's mean (two passes; m2
 * NULL: the plain sum alone, *sum unspecified). */
typedef void (*tet_moments_f32_fn)(const uint8_t *src, uint64_t n, double k, double *raw,
                                   double *sum, double *m2);
/* acc[e] += d or d^2 for d = x_r[e] - center[e] over the unit-stride f32 rows at
 * bytes + offsets[r], r < rows <= TET_GROUP_ROWS, e < run: row by row, in order. */
typedef void (*tet_rows_f32_fn)(const uint8_t *bytes, const uint64_t *offsets, uint64_t rows,
                                uint64_t run, const double *center, int square, double *acc);

/* Per-lane state of a group of rows feeding the same run of cells (lanes.c).  Rows are
 * taken TET_LANE_ROWS at a time, a block of TET_LANE_BLOCK lanes at a time, so the
 * block's state stays in L1 while those rows pass. */
#define TET_LANE_BLOCK 256
#define TET_LANE_ROWS 8
typedef struct {
    double lo[TET_FOLD_BLOCK], hi[TET_FOLD_BLOCK];
    uint64_t ilo[TET_FOLD_BLOCK], ihi[TET_FOLD_BLOCK], inan[TET_FOLD_BLOCK];
    uint64_t nan[TET_FOLD_BLOCK], inf[TET_FOLD_BLOCK], null[TET_FOLD_BLOCK];
    double abs[TET_FOLD_BLOCK], sq[TET_FOLD_BLOCK];
} tet_lanes;
/* Fold one promoted row x[0, run) at fiber index `fiber` into lanes [at, at + run) of
 * l (MINMAX, COUNTS and NORMS of `what`). */
typedef void (*tet_lanes_row_fn)(tet_lanes *restrict l, uint64_t at, uint32_t what,
                                 double fill, const double *restrict x, uint64_t run,
                                 uint64_t fiber);
void tet_lanes_row_scalar(tet_lanes *restrict l, uint64_t at, uint32_t what, double fill,
                          const double *restrict x, uint64_t run, uint64_t fiber);
#ifdef TET_HAVE_AVX2_BODY
void tet_lanes_row_avx2(tet_lanes *restrict l, uint64_t at, uint32_t what, double fill,
                        const double *restrict x, uint64_t run, uint64_t fiber);
#endif

/* Extremes of a group of unit-stride f32 rows, lane by lane: values and the group rows
 * (TET_NO_ROW: none yet) of the first minimum, maximum and NaN (lanes.c). */
#define TET_NO_ROW 0xFFFFFFFFu
typedef struct {
    float lo[TET_FOLD_BLOCK], hi[TET_FOLD_BLOCK];
    uint32_t ilo[TET_FOLD_BLOCK], ihi[TET_FOLD_BLOCK], inan[TET_FOLD_BLOCK];
} tet_minmax_lanes;
/* Rows r < rows (< 2^32) at bytes + offsets[r], lanes e < run <= TET_FOLD_BLOCK, in order. */
typedef void (*tet_minmax_rows_f32_fn)(const uint8_t *bytes, const uint64_t *offsets,
                                       uint64_t rows, uint64_t run, tet_minmax_lanes *l);
void tet_minmax_rows_f32_scalar(const uint8_t *bytes, const uint64_t *offsets, uint64_t rows,
                                uint64_t run, tet_minmax_lanes *l);
/* Lanes [from, run) of one row (group row r): the SIMD body's remainder. */
void tet_minmax_row_f32_tail(tet_minmax_lanes *l, const uint8_t *row, uint64_t from,
                             uint64_t run, uint32_t r);
#ifdef TET_HAVE_AVX2_BODY
void tet_minmax_rows_f32_avx2(const uint8_t *bytes, const uint64_t *offsets, uint64_t rows,
                              uint64_t run, tet_minmax_lanes *l);
#endif

/* A histogram cell: its edges' ends, bins / (hi - lo), and whether the fast rule holds
 * for its edges (hist.c).  The index bodies write each value's bin, or bins when it is
 * dropped (NaN, outside [lo, hi]), for n values of f64 or of unit-stride f32. */
typedef struct {
    double lo, hi, scale;
    uint32_t fast, reserved;
} tet_hist_cell;
/* The fast rule keeps a bin only when the scaled position is this far from a whole number. */
#define TET_HIST_MARGIN (1.0 / 65536.0)
typedef void (*tet_hist_index_f64_fn)(const double *x, uint64_t n, const tet_hist_cell *c,
                                      const double *e, uint32_t bins, uint32_t *idx);
typedef void (*tet_hist_index_f32_fn)(const uint8_t *src, uint64_t n, const tet_hist_cell *c,
                                      const double *e, uint32_t bins, uint32_t *idx);
void tet_hist_index_f64_scalar(const double *x, uint64_t n, const tet_hist_cell *c,
                               const double *e, uint32_t bins, uint32_t *idx);
void tet_hist_index_f32_scalar(const uint8_t *src, uint64_t n, const tet_hist_cell *c,
                               const double *e, uint32_t bins, uint32_t *idx);
#ifdef TET_HAVE_AVX2_BODY
void tet_hist_index_f64_avx2(const double *x, uint64_t n, const tet_hist_cell *c,
                             const double *e, uint32_t bins, uint32_t *idx);
void tet_hist_index_f32_avx2(const uint8_t *src, uint64_t n, const tet_hist_cell *c,
                             const double *e, uint32_t bins, uint32_t *idx);
#endif

/* Order-preserving keys (tet_select_key) of n f64 values, or of n unit-stride f32 values
 * promoted; a NaN gets key 0 (no number's key) and is counted into *nan (select.c). */
typedef void (*tet_select_keys_f64_fn)(const double *x, uint64_t n, uint64_t *keys,
                                       uint64_t *nan);
typedef void (*tet_select_keys_f32_fn)(const uint8_t *src, uint64_t n, uint64_t *keys,
                                       uint64_t *nan);
void tet_select_keys_f64_scalar(const double *x, uint64_t n, uint64_t *keys, uint64_t *nan);
void tet_select_keys_f32_scalar(const uint8_t *src, uint64_t n, uint64_t *keys, uint64_t *nan);
#ifdef TET_HAVE_AVX2_BODY
void tet_select_keys_f64_avx2(const double *x, uint64_t n, uint64_t *keys, uint64_t *nan);
void tet_select_keys_f32_avx2(const uint8_t *src, uint64_t n, uint64_t *keys, uint64_t *nan);
#endif

void tet_minmax_f32_scalar(const uint8_t *src, uint64_t n, float *lo, float *hi, int *nan);
void tet_moments_f32_scalar(const uint8_t *src, uint64_t n, double k, double *raw, double *sum,
                            double *m2);
void tet_rows_f32_scalar(const uint8_t *bytes, const uint64_t *offsets, uint64_t rows,
                         uint64_t run, const double *center, int square, double *acc);
#ifdef TET_HAVE_AVX2_BODY
void tet_minmax_f32_avx2(const uint8_t *src, uint64_t n, float *lo, float *hi, int *nan);
void tet_moments_f32_avx2(const uint8_t *src, uint64_t n, double k, double *raw, double *sum,
                          double *m2);
void tet_rows_f32_avx2(const uint8_t *bytes, const uint64_t *offsets, uint64_t rows,
                       uint64_t run, const double *center, int square, double *acc);
#endif

/* CRC-32C of n bytes, continuing `crc` (0 to start); checksum.c. */
typedef uint32_t (*tet_crc32c_fn)(uint32_t crc, const uint8_t *p, uint64_t n);
uint32_t tet_crc32c_scalar(uint32_t crc, const uint8_t *p, uint64_t n);
#ifdef TET_HAVE_AVX2_BODY
uint32_t tet_crc32c_sse42(uint32_t crc, const uint8_t *p, uint64_t n);
#endif
#define TET_CRC_LONG 8192   /* bytes per stream of the three-stream body's long blocks */
#define TET_CRC_SHORT 256   /* ... and of its short blocks */
typedef struct {
    uint32_t byte[8][256];          /* slicing-by-8 tables */
    uint32_t long_shift[4][256];    /* the register moved over TET_CRC_LONG zero bytes */
    uint32_t short_shift[4][256];   /* ... over TET_CRC_SHORT zero bytes */
} tet_crc_tables;
const tet_crc_tables *tet_crc32c_tables(void);
uint32_t tet_crc32c_shift(const uint32_t shift[4][256], uint32_t r);

/* One ISA's bodies; dispatch.c holds one row per level. */
typedef struct {
    tet_copy_strided_fn copy_strided;
    tet_minmax_f32_fn minmax_f32;
    tet_moments_f32_fn moments_f32;
    tet_rows_f32_fn rows_f32;
    tet_crc32c_fn crc32c;
    tet_lanes_row_fn lanes_row;
    tet_minmax_rows_f32_fn minmax_rows_f32;
    tet_hist_index_f64_fn hist_index_f64;
    tet_hist_index_f32_fn hist_index_f32;
    tet_select_keys_f64_fn select_keys_f64;
    tet_select_keys_f32_fn select_keys_f32;
} tet_kernels;

/* The bodies of the active level (set by tet_dispatch_init / tet_simd_set). */
const tet_kernels *tet_active(void);
/* The bodies of one level, or NULL when this CPU lacks it. */
const tet_kernels *tet_kernels_for(int32_t level);

/* ---- box copies (gather.c) -------------------------------------------- */
/* Copy an n-d box of `count` elements from a C-order source of shape
 * src_shape (starting at src_start, stepping by step) to a C-order
 * destination of shape dst_shape starting at dst_start. */
void tet_box_copy(uint8_t *dst, const uint64_t *dst_shape, const uint64_t *dst_start,
                  const uint8_t *src, const uint64_t *src_shape, const uint64_t *src_start,
                  const uint64_t *step, const uint64_t *count, uint32_t ndim,
                  uint32_t elem_size, tet_copy_strided_fn strided);

/* ---- zstd (codec.c) ---------------------------------------------------- */
typedef struct tet_dctx tet_dctx;
typedef struct tet_cctx tet_cctx;
tet_dctx *tet_dctx_new(void);
void tet_dctx_free(tet_dctx *ctx);
tet_cctx *tet_cctx_new(void);
void tet_cctx_free(tet_cctx *ctx);
/* Decode one frame into exactly raw_len bytes. */
tet_status tet_zstd_decode(tet_dctx *ctx, uint8_t *dst, uint64_t raw_len,
                           const uint8_t *src, uint64_t src_len, uint64_t *detail);
tet_status tet_zstd_encode(tet_cctx *ctx, uint8_t *dst, uint64_t cap, const uint8_t *src,
                           uint64_t src_len, int level, uint64_t *written, uint64_t *detail);
uint64_t tet_zstd_bound(uint64_t raw_len);
/* A streaming decoder for checks that must not hold a whole tile. */
typedef struct tet_dstream tet_dstream;
tet_dstream *tet_dstream_new(void);
void tet_dstream_free(tet_dstream *ds);
/* Decode the zstd payload src[0, src_len) through window[0, window_len), a step at a
 * time, and check it yields exactly raw_len bytes (frame checksums are verified by
 * libzstd).  A frame whose decoder would need more than max_need bytes is not
 * decoded: TET_ERR_NOMEM, detail = what it needs. */
tet_status tet_zstd_check(tet_dstream *ds, const uint8_t *src, uint64_t src_len,
                          uint64_t raw_len, uint8_t *window, uint64_t window_len,
                          uint64_t max_need, uint64_t *detail);

/* ---- folds (fold.c) ---------------------------------------------------- */
#define TET_FOLD_N_COUNTED (1u << 30) /* internal: the element count is kept by another path */
void tet_load_f64(uint32_t dtype, const uint8_t *src, uint64_t n, uint64_t step, double *out);
/* hit[i] = 1 where element i of the n (stride `step`) at src equals one of m's
 * fills, else 0; returns how many hit. */
uint64_t tet_mask_hits(uint32_t dtype, const uint8_t *src, uint64_t n, uint64_t step,
                       const double *x, const tet_mask *m, uint8_t *hit);
/* x[i] (element i of src, loaded) = NaN where it equals one of m's fills. */
void tet_mask_apply(uint32_t dtype, const uint8_t *src, uint64_t n, uint64_t step,
                    const tet_mask *m, double *x);
void tet_acc_init(tet_acc *a);
void tet_fold_block(tet_acc *a, uint32_t what, double fill, const double *x, uint64_t n,
                    uint64_t fiber0, uint64_t fstep);
void tet_fold_lanes(tet_acc *cells, uint64_t cstride, uint32_t what, double fill, const double *x,
                    uint64_t n, uint64_t fiber);
void tet_acc_merge(tet_acc *a, const tet_acc *b, uint32_t what);
void tet_fold_minmax_f32(tet_acc *a, const uint8_t *src, uint64_t n, uint64_t fiber0);
void tet_fold_moments_f32(tet_acc *a, const uint8_t *src, uint64_t n, uint32_t what);
void tet_fold_row_group(tet_acc *cells, uint32_t what, uint32_t dtype, const uint8_t *bytes,
                        const uint64_t *offsets, uint64_t rows, uint64_t run, uint64_t step,
                        double *buf, double *work);

/* Start a group over `run` lanes; merge it into cells[0, run) (lanes.c). */
void tet_lanes_reset(tet_lanes *l, uint32_t what, uint64_t run);
void tet_lanes_flush(const tet_lanes *l, uint32_t what, uint64_t rows, int count_n, tet_acc *cells,
                     uint64_t run);
void tet_minmax_lanes_reset(tet_minmax_lanes *l, uint64_t run);
/* Merge into cells[0, run); group row r has fiber index fibers[r]. */
void tet_minmax_lanes_flush(const tet_minmax_lanes *l, const uint64_t *fibers, uint64_t rows,
                            int count_n, tet_acc *cells, uint64_t run);
#define TET_FOLD_LANED (TET_FOLD_MINMAX | TET_FOLD_COUNTS | TET_FOLD_NORMS)

/* ---- histograms (hist.c) ---------------------------------------------- */
/* Histogram counts of n values; value i belongs to the cell i * cstride cells on (0:
 * all to one cell), whose bins + 1 edges and bins counts follow one another. */
void tet_hist_block(uint64_t *counts, const double *edges, uint32_t bins, const double *x,
                    uint64_t n, uint64_t cstride);
/* NumPy's bin of v for the edges e[0, bins], or bins when it is dropped. */
uint32_t tet_hist_bin_exact(double v, const double *e, uint32_t bins);
/* A cell's range, scale and whether its edges allow the fast rule. */
void tet_hist_cell_init(tet_hist_cell *c, const double *e, uint32_t bins);
/* counts[b] += the four sub-histograms' bin b (of bins + 1 slots each); sub zeroed. */
void tet_hist_count_sub(uint64_t *sub, uint32_t bins, const uint32_t *idx, uint64_t n);
void tet_hist_sub_flush(uint64_t *sub, uint32_t bins, uint64_t *counts);

/* ---- work sharing (pool.c) --------------------------------------------- */
/* Run `work(ctx, thread_index)` on `threads` threads (the caller's included).  When a
 * thread cannot be started, *stop is set (workers check it before each item, so those
 * already running quit early), the caller's share is not run, and once the started
 * threads are joined the call returns TET_ERR_THREAD, which is also written to `report`
 * (chunk -1, detail the pthread_create error number).  Workers' own reports, merged
 * into `report` after this, never replace it (tet_report_merge: chunk -1 stays). */
typedef void (*tet_worker_fn)(void *ctx, uint32_t thread_index);
tet_status tet_parallel(tet_worker_fn work, void *ctx, uint32_t threads, int *stop,
                        tet_report *report);
/* Claim the next item of a shared counter; returns n when exhausted. */
uint64_t tet_claim(uint64_t *counter, uint64_t n);

/* What a worker allocates before its claim loop: `len` bytes of scratch (at least one)
 * and the zstd context of `kind`; TET_SCRATCH_NONE allocates nothing.  tet_scratch_open
 * returns 1 with everything allocated, or 0 with nothing kept, the worker's report set to
 * TET_ERR_NOMEM (chunk -1, detail `len`) and *stop set, so the other workers quit too; the
 * worker then returns without claiming.  tet_scratch_close frees what open allocated. */
typedef enum {
    TET_SCRATCH_NONE,
    TET_SCRATCH_DECODE,  /* buf and dctx: whole-tile decodes */
    TET_SCRATCH_ENCODE,  /* buf and cctx: tile encodes */
    TET_SCRATCH_FRAMES   /* buf (the window) and ds: bounded frame checks */
} tet_scratch_kind;
typedef struct {
    uint8_t *buf;
    tet_dctx *dctx;
    tet_cctx *cctx;
    tet_dstream *ds;
} tet_scratch;
int tet_scratch_open(tet_scratch *s, tet_scratch_kind kind, uint64_t len, tet_report *rep,
                     int *stop);
void tet_scratch_close(tet_scratch *s);

/* Keep the report of the lowest failing chunk. */
void tet_report_merge(tet_report *into, const tet_report *from);

/* Every entry point starts with a clean report and refuses with one status. */
static inline void tet_report_clear(tet_report *r)
{
    memset(r, 0, sizeof *r);
    r->chunk = -1;
}

static inline tet_status tet_report_refuse(tet_report *r, tet_status status)
{
    r->status = status;
    return status;
}

static inline void tet_report_fail(tet_report *r, tet_status status, int64_t chunk,
                                   uint64_t detail)
{
    r->status = status;
    r->chunk = chunk;
    r->detail = detail;
}

/* ---- a box against the tile grid (box.c) ------------------------------- */
/* The tiles a box touches, axis by axis: every selected element sits in its
 * own tile when the step is at least a tile, otherwise every tile between the
 * first and the last selected element is touched. */
typedef struct {
    uint32_t ndim;
    uint64_t len[TET_MAX_NDIM];      /* touched tiles per axis */
    uint64_t *coord[TET_MAX_NDIM];   /* their grid coordinates */
    uint64_t grid_stride[TET_MAX_NDIM];
    uint64_t out_shape[TET_MAX_NDIM];
    uint64_t total;
} tet_touch_set;

/* Where item i of a touch set lives: its tile's linear id, its sub-box, and
 * the decoded bytes (the mapping itself for raw tiles, else `scratch`). */
typedef struct {
    uint64_t id;
    uint64_t tile[TET_MAX_NDIM], src_start[TET_MAX_NDIM], count[TET_MAX_NDIM];
    uint64_t dst_start[TET_MAX_NDIM];
    const uint8_t *bytes;
} tet_tile_view;

/* Step j (every axis but the innermost) to the next row of a tile's sub-box of
 * `count` extents; 0 once past its last row. */
static inline int tet_next_row(uint64_t *j, const uint64_t *count, uint32_t nd)
{
    for (int d = (int)nd - 2; d >= 0; d--) {
        if (++j[d] < count[d])
            return 1;
        j[d] = 0;
    }
    return 0;
}

/* The checks tile `id` (of extents `tile`) passes before its bytes are touched: a row,
 * a payload inside the file, raw_byte_len equal to the tile's own size, a known codec. */
tet_status tet_tile_check(const tet_tiles *g, uint64_t id, const uint64_t *tile, uint64_t *detail);
/* The box against the geometry: TET_OK when every size the loops derive fits. */
tet_status tet_box_valid(const tet_tiles *g, const tet_box *b);
/* The touch set of a valid box (TET_ERR_NOMEM), released by tet_touch_free. */
tet_status tet_touch_build(const tet_tiles *g, const tet_box *b, tet_touch_set *t);
void tet_touch_free(tet_touch_set *t);
/* Item i of the touch set: its tile's linear id, and the sub-box to copy. */
uint64_t tet_touch_item(const tet_tiles *g, const tet_box *b, const tet_touch_set *t,
                        uint64_t i, uint64_t *tile, uint64_t *src_start, uint64_t *count,
                        uint64_t *dst_start);
/* Check every touched index row (the first failure in grid order goes to r) and find
 * the largest zstd tile a worker must decode. */
tet_status tet_touch_scan(const tet_tiles *g, const tet_box *b, const tet_touch_set *t,
                          uint64_t *largest_zstd, tet_report *r);
/* Check item i's row and make its bytes readable in v (decoded into scratch if zstd). */
tet_status tet_tile_open(const tet_tiles *g, const tet_box *b, const tet_touch_set *t,
                         uint64_t i, uint8_t *scratch, tet_dctx *dctx, tet_tile_view *v,
                         uint64_t *detail);

/* What a box read (read.c) and a fold (foldloop.c) share: the box, its touch set,
 * the largest zstd tile a worker decodes, the stop flag and one report per worker.
 * It is the first member of their contexts, so a context and its walk have one
 * address. */
typedef struct {
    const tet_tiles *g;
    const tet_box *b;
    tet_touch_set t;
    uint64_t scratch_len;
    int stop;
    tet_report reports[TET_MAX_THREADS];
} tet_walk;

/* A zeroed context of `size` bytes starting with a tet_walk, holding the touch set of
 * a valid box; NULL (TET_ERR_NOMEM refused into r) when an allocation fails. */
void *tet_walk_new(const tet_tiles *g, const tet_box *b, size_t size, tet_report *r);
/* tet_touch_scan over the walk's touch set (sets scratch_len); on a failure the context
 * is released and r's status returned. */
tet_status tet_walk_scan(tet_walk *w, tet_report *r);
/* Run `work` on the context on `threads` threads, then merge the workers' reports into
 * r; returns r's status.  The context stays allocated. */
tet_status tet_walk_run(tet_walk *w, tet_worker_fn work, uint32_t threads, tet_report *r);
/* Release the touch set and the context. */
void tet_walk_free(tet_walk *w);

#endif

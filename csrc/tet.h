/* tet.h: the whole C API that CFFI sees.
 *
 * Everything between the cdef markers is fed to cffi's cdef() unchanged, so it
 * stays in the subset cdef parses: fixed-width integers, plain structs and
 * enums, integer #defines (array sizes may name them), prototypes.  Kernels are
 * pure: they take pointers, lengths and strides and never call back into Python.
 *
 * Every entry point that does work returns a tet_status (calls over many tiles or
 * spans also fill a tet_report saying where).  Only queries that cannot fail return
 * their answer directly: tet_simd_get, tet_simd_supported, tet_encode_capacity,
 * tet_zstd_error_name and the mapping guard's tet_guard_* (slots and flags).
 */
#ifndef TET_H
#define TET_H
#include <stddef.h>
#include <stdint.h>

/* cdef-begin */
typedef enum {
    TET_OK = 0,
    TET_ERR_ARGUMENT = 1,   /* the plan itself is inconsistent (a caller bug) */
    TET_ERR_NOMEM = 2,      /* a working buffer could not be allocated */
    TET_ERR_BOUNDS = 3,     /* a payload span lies outside the mapped file */
    TET_ERR_CODEC = 4,      /* codec tag other than 0 (raw) or 1 (zstd) */
    TET_ERR_ZSTD = 5,       /* libzstd reported an error; detail = its code */
    TET_ERR_LENGTH = 6,     /* decoded bytes != raw_byte_len; detail = decoded */
    TET_ERR_TILE = 7,       /* raw_byte_len != tile bytes; detail = raw_byte_len */
    TET_ERR_THREAD = 8,     /* a worker thread could not be started; detail = errno */
    TET_ERR_SIMD = 9,       /* the requested SIMD level is not available here */
    TET_ERR_MISSING = 10,   /* a touched tile has no chunk index row */
    TET_ERR_OVERFLOW = 11   /* a size derived from the geometry does not fit 64 bits */
} tet_status;

/* Facts of the file format (layout v1) the kernels share with tet/layout.py and
 * tet/dtypes.py; tests/test_native.py compares the two sides. */
#define TET_MAX_NDIM 8            /* axes of a dataset */
#define TET_MAX_THREADS 64        /* worker threads of one call, the caller's included */

/* A chunk index row's codec tag. */
typedef enum {
    TET_CODEC_RAW = 0,
    TET_CODEC_ZSTD = 1
} tet_codec;

/* The codec of a tile that has no chunk index row (never a tag in a file). */
#define TET_TILE_MISSING 0xFFFFFFFF

/* A dataset's element type: its wire tag, as in tet/dtypes.py. */
typedef enum {
    TET_DTYPE_F32 = 1,
    TET_DTYPE_F64 = 2,
    TET_DTYPE_I32 = 3,
    TET_DTYPE_I64 = 4,
    TET_DTYPE_U8 = 5,
    TET_DTYPE_U16 = 6,
    TET_DTYPE_I16 = 7,
    TET_DTYPE_U32 = 8,
    TET_DTYPE_F16 = 9,
    TET_DTYPE_U64 = 10
} tet_dtype;

/* The SIMD bodies; Python names them after these members ("scalar", "avx2", "neon"). */
typedef enum {
    TET_SIMD_SCALAR = 0,
    TET_SIMD_AVX2 = 1,
    TET_SIMD_NEON = 2
} tet_simd;

/* Where a multi-chunk call failed: the lowest failing plan row wins. */
typedef struct {
    int32_t status;
    int64_t chunk;          /* plan row, -1 when no row is to blame */
    uint64_t detail;        /* codec error code, decoded length, ... */
} tet_report;

/* One dataset's tiles in linear grid order (last axis fastest), as the
 * chunk index describes them, plus the file they live in.  A tile with no
 * index row has codec TET_TILE_MISSING. */
typedef struct {
    const uint8_t *file;
    uint64_t file_len;
    uint32_t ndim;
    uint32_t elem_size;
    uint32_t dtype;               /* a tet_dtype (folds convert by it) */
    uint32_t reserved;
    const uint64_t *shape;        /* [ndim] */
    const uint64_t *chunk_shape;  /* [ndim] */
    uint64_t n_tiles;
    const uint64_t *offset;       /* [n_tiles] payload_offset */
    const uint64_t *stored;       /* [n_tiles] stored_byte_len */
    const uint64_t *raw;          /* [n_tiles] raw_byte_len */
    const uint32_t *codec;        /* [n_tiles] */
} tet_tiles;

/* A selection: per axis start, exclusive stop, step >= 1 (checked by Python). */
typedef struct {
    uint64_t start[TET_MAX_NDIM];
    uint64_t stop[TET_MAX_NDIM];
    uint64_t step[TET_MAX_NDIM];
} tet_box;

/* What a fold accumulates (bits of tet_fold_spec.what). */
#define TET_FOLD_MOMENTS 1        /* n, compensated sum, Chan mean/m2 */
#define TET_FOLD_NAN_MOMENTS 2    /* the same over non-NaN elements */
#define TET_FOLD_NORMS 4          /* compensated sum |x| and sum x^2 */
#define TET_FOLD_PRODUCT 8
#define TET_FOLD_MINMAX 16        /* min, max, their first index, first NaN */
#define TET_FOLD_COUNTS 32        /* NaN, inf and fill-value counts */
#define TET_FOLD_SUM 64           /* n and the compensated sum alone (MOMENTS has them too,
                                     bit for bit): sum and mean skip the squared deviations */
#define TET_NO_INDEX 0xFFFFFFFFFFFFFFFF

/* One output cell of a fold.  Indices are positions in the cell's fiber
 * (row-major over the reduced axes of the logical selection). */
typedef struct {
    double n;
    double sum, sum_c;            /* Neumaier: value = sum + sum_c */
    double mean, m2;              /* Chan-merged moments of x - shift */
    double shift;                 /* the cell's first finite value: exact differences */
    double nn, nn_sum, nn_sum_c, nn_mean, nn_m2, nn_shift;
    double abs_sum, abs_c, sq_sum, sq_c;
    double prod;
    double min, max;
    uint64_t argmin, argmax, first_nan;
    uint64_t nan_count, inf_count, null_count;
} tet_acc;

/* Fill values read as missing (a query's execution.mask_fill): an element equal to
 * one of them folds (and reads, through tet_read_box_masked) as NaN.  Equality is
 * that of the stored dtype: i64/u64 compare their 64-bit patterns, every other
 * dtype its value promoted to f64 (exact for all of them). */
#define TET_MASK_MAX 64

typedef struct {
    uint32_t n;                   /* values in use, <= TET_MASK_MAX */
    uint32_t reserved;
    double value[TET_MASK_MAX];   /* the fills as f64 (dtypes other than i64/u64) */
    uint64_t bits[TET_MASK_MAX];  /* i64 (two's complement) / u64: the fills' bits */
} tet_mask;

typedef struct {
    uint32_t what;                /* TET_FOLD_* bits */
    uint32_t reduce_mask;         /* bit d set: axis d of the selection is reduced */
    double fill;                  /* null_count: bit-identical match; NaN counts NaNs */
    uint32_t threads;             /* 1 = sequential in tile order */
    uint32_t parts;               /* accumulator sets merged in order (>= 1) */
    uint64_t scan_window;         /* > 0 (with threads 1): a linear scan of a file mapping;
                                     the next window of this many bytes is read ahead */
    uint32_t bins;                /* > 0: histogram mode (`what` unused): count into counts */
    const double *edges;          /* [n_cells][bins + 1] bin edges (NumPy linspace) */
    uint64_t *counts;             /* [n_cells][bins], zeroed by the call */
    const tet_mask *mask;         /* NULL, or fills folded as NaN */
} tet_fold_spec;

/* Element-wise transforms (pass 2), applied in place to a dense C-order f32 or
 * f64 block of the logical selection, one parameter pair per fold cell. */
#define TET_TX_AFFINE 0     /* (x - a) / b: zscore, minmax, center (b = 1), scale, l1, l2 (a = 0) */
#define TET_TX_LOG1P 1      /* log1p(x - a), a = the cell's finite minimum (set here) */
#define TET_TX_SQRT 2       /* sqrt(x - a), a likewise */
#define TET_TX_SOFTMAX 3    /* exp(x - a) / sum of exp(y - a) over the cell's finite y */
#define TET_TX_MAX_BAD 256

typedef struct {
    uint32_t method;              /* TET_TX_* */
    uint32_t dtype;               /* TET_DTYPE_F32 or TET_DTYPE_F64 */
    uint32_t ndim;
    uint32_t reduce_mask;         /* axes the statistics were taken over */
    uint64_t shape[TET_MAX_NDIM];
    double *a;                    /* [n_cells]; log1p/sqrt: out, the min of finite values
                                     (0 where none), found in a first sweep */
    const double *b;              /* [n_cells] */
    uint64_t n_bad;               /* out: elements set to NaN by an invalid divide/shift */
    uint64_t bad[TET_TX_MAX_BAD]; /* out: logical indices of the first TET_TX_MAX_BAD */
} tet_transform_spec;

/* Cut tiles out of a dense C-order block and encode them (raw copy or one
 * zstd frame each).  Output is contiguous in plan order; out_len[i] says how
 * many bytes tile i took. */
typedef struct {
    const uint8_t *src;
    uint32_t ndim;
    uint32_t elem_size;
    const uint64_t *src_shape;    /* [ndim] */
    uint64_t n_chunks;
    const uint64_t *origin;       /* [n_chunks][ndim] tile origin in src */
    const uint64_t *extent;       /* [n_chunks][ndim] tile extent */
    uint32_t codec;               /* a tet_codec */
    int32_t level;
    uint8_t *out;
    uint64_t out_capacity;
    uint64_t *out_len;            /* [n_chunks] */
    uint32_t threads;
    uint32_t *out_crc;            /* [n_chunks] crc32c of each tile's stored bytes, or NULL */
} tet_encode_plan;

/* Pick the best SIMD body this CPU runs (TET_SIMD=scalar in the environment: the
 * scalar one); set one level (TET_ERR_SIMD where this CPU lacks it); the level in
 * use; whether a level runs here (1) or not (0). */
tet_status tet_dispatch_init(void);
tet_status tet_simd_set(int32_t level);
int32_t tet_simd_get(void);
int32_t tet_simd_supported(int32_t level);

/* Copy box of the dataset into dst (dense, C-order, the box's logical shape).
 * On failure report->chunk is the linear grid id of the failing tile. */
tet_status tet_read_box(const tet_tiles *tiles, const tet_box *box, uint8_t *dst,
                        uint32_t threads, tet_report *report);
/* tet_read_box with the mask's fills read as NaN: into dst of the dataset's own
 * float dtype (out_dtype 0; f32, f64, f16 only) or as f64 (out_dtype TET_DTYPE_F64,
 * any dtype). */
tet_status tet_read_box_masked(const tet_tiles *tiles, const tet_box *box, const tet_mask *mask,
                               uint32_t out_dtype, uint8_t *dst, uint32_t threads,
                               tet_report *report);
/* Orthogonal read: axis d selects the n_index[d] >= 1 strictly increasing indices
 * below shape[d] that follow those of the axes before it in `index`; dst is dense
 * C-order of shape n_index[0..ndim).  One walk over the tiles the indices touch,
 * grouped by tile per axis; on failure report->chunk is the failing tile's grid id. */
tet_status tet_read_index(const tet_tiles *tiles, const uint64_t *index, const uint64_t *n_index,
                          uint8_t *dst, uint32_t threads, tet_report *report);
/* Fold the box into cells[n_cells] (initialised here).  Results do not
 * depend on the thread count: tiles that feed disjoint cells (at least
 * spec->parts groups of them, by their kept-axis tile coordinates) are folded a
 * group at a time in grid order; otherwise tiles are split into spec->parts
 * fixed ranges, each folded in order, and the parts are merged in order. */
tet_status tet_fold_box(const tet_tiles *tiles, const tet_box *box, const tet_fold_spec *spec,
                        tet_acc *cells, uint64_t n_cells, tet_report *report);
/* Transform data (the dense selection) in place; non-finite inputs are kept. */
tet_status tet_transform(tet_transform_spec *spec, uint8_t *data, uint64_t n_cells);
/* Merge b[i] into a[i] for every i < n, as the fold merges its parts (b's
 * elements follow a's): per-file accumulators of one query over many files. */
tet_status tet_acc_merge_cells(tet_acc *a, const tet_acc *b, uint64_t n, uint32_t what);
/* Test hook: fold a dense f64 vector as one cell. */
tet_status tet_fold_vector(const double *x, uint64_t n, uint32_t what, double fill, tet_acc *acc);

/* Linear grid ids of the tiles the box touches, in grid order: *count says how
 * many there are (only the first `cap` are written; 0 on failure).  Fails with
 * TET_ERR_ARGUMENT, TET_ERR_OVERFLOW or TET_ERR_NOMEM. */
tet_status tet_box_touch(const tet_tiles *tiles, const tet_box *box, uint64_t *out, uint64_t cap,
                         uint64_t *count);
/* Check every index row the box touches as a read would (row present, payload in the
 * file, raw_byte_len equal to the tile's size, codec), decoding nothing: callers
 * about to size an output (a spill file) from the box check it first. */
tet_status tet_box_check(const tet_tiles *tiles, const tet_box *box, tet_report *report);
tet_status tet_encode(const tet_encode_plan *plan, tet_report *report);
uint64_t tet_encode_capacity(uint32_t codec, uint64_t raw_len);
const char *tet_zstd_error_name(uint64_t code);

/* The strided copy the gather uses for non-unit innermost steps, exposed so
 * tests can compare every SIMD body with the scalar one. */
tet_status tet_copy_strided(int32_t level, uint32_t elem_size, uint8_t *dst,
                            const uint8_t *src, uint64_t count, uint64_t step);
/* Test hook: block min/max of n f32 values through one SIMD body. */
tet_status tet_minmax_f32(int32_t level, const uint8_t *src, uint64_t n, float *lo, float *hi,
                          int32_t *nan);
/* ---- streaming radix selection (select.c) ------------------------------------
 * One pass over a box: each element promoted to f64 (the mask's fills read as NaN);
 * NaNs are counted into nan_count, every other value becomes its order-preserving key
 * (tet_select_key: sign-flipped bits, -0.0 just below +0.0).  Each target takes the
 * keys with (key & pmask) == prefix and counts them into counts[(key >> shift) &
 * 0xFFFF], or with `collect` copies them to keys[] (n_keys counts every one taken,
 * keys past cap are not written).  Counts, n_keys and nan_count add to what they hold.
 * Whole tiles are claimed by `threads` workers with their own buckets. */
#define TET_SELECT_BITS 16
#define TET_SELECT_BUCKETS 65536
#define TET_SELECT_TARGETS 2

typedef struct {
    uint64_t prefix;
    uint64_t pmask;
    uint32_t shift;               /* <= 64 - TET_SELECT_BITS */
    uint32_t collect;             /* 1: copy the keys out instead of counting them */
    uint64_t *counts;             /* [TET_SELECT_BUCKETS] when counting */
    uint64_t *keys;               /* [cap] when collecting */
    uint64_t cap;
    uint64_t n_keys;
} tet_select_target;

typedef struct {
    uint32_t n_targets;           /* 0 .. TET_SELECT_TARGETS */
    uint32_t threads;
    const tet_mask *mask;         /* NULL, or fills read as NaN */
    uint64_t nan_count;
    tet_select_target target[TET_SELECT_TARGETS];
} tet_select_spec;

tet_status tet_select_pass(const tet_tiles *tiles, const tet_box *box, tet_select_spec *spec,
                           tet_report *report);
/* The key of a value, and the value of a key (test hooks and the final answer). */
uint64_t tet_select_key(double x);
double tet_select_value(uint64_t key);
/* ---- integrity (checksum.c) ---------------------------------------------
 * CRC-32C (Castagnoli: reflected polynomial 0x82F63B78, preset and final xor
 * 0xFFFFFFFF, as in iSCSI and ext4), crc32c("123456789") = 0xE3069283. */

/* Test hook and small inputs: *crc = crc32c of data[0, n) continuing *crc (0 to
 * start), through the body of one SIMD level. */
tet_status tet_crc32c(int32_t level, const uint8_t *data, uint64_t n, uint32_t *crc);

/* Spans of a mapped file, worked on by `threads` threads. */
typedef struct {
    const uint8_t *file;
    uint64_t file_len;
    uint64_t n;
    const uint64_t *offset;       /* [n] */
    const uint64_t *length;       /* [n] stored bytes */
    const uint64_t *raw;          /* [n] decoded length (tet_check_frames) */
    uint32_t threads;
    uint32_t reserved;
    uint64_t window;              /* tet_check_frames: decoded bytes per step, per thread */
    uint64_t max_need;            /* tet_check_frames: decoder memory one frame may take */
    uint32_t *crc;                /* [n] out: tet_crc32c_spans */
    int32_t *status;              /* [n] out: tet_check_frames, a tet_status per span */
    uint64_t *detail;             /* [n] out: tet_check_frames, as in tet_report */
} tet_spans;

/* crc[i] = crc32c of span i.  A span outside the file fails the call with
 * TET_ERR_BOUNDS (report->chunk = the span). */
tet_status tet_crc32c_spans(const tet_spans *spans, tet_report *report);
/* Decode every span as zstd through a window-byte buffer per thread (never the
 * whole tile) and check it yields exactly raw[i] bytes, frame checksums included;
 * status[i]/detail[i] say how span i fared: TET_ERR_ZSTD (detail: the libzstd
 * code), TET_ERR_LENGTH (detail: bytes decoded, or the frame's declared size),
 * TET_ERR_BOUNDS, or TET_ERR_NOMEM when a frame's decoder would need more than
 * max_need bytes (detail: what it needs; the span was not decoded).  The call
 * itself fails only for bad arguments or memory. */
tet_status tet_check_frames(const tet_spans *spans, tet_report *report);
/* ---- mapping guard (guard.c) ---------------------------------------------
 * A SIGBUS on a registered read-only file mapping (the file was truncated while
 * mapped) is absorbed: zero pages replace the rest of the mapping and its hit flag
 * is set; readers check the flag after each operation and report the change.
 * Faults elsewhere go to the handler installed before (or the default action). */
#define TET_GUARD_SLOTS 16384

/* Install the SIGBUS handler, or reinstall it over one installed since (faulthandler
 * enabled later); 0 ok, 1 not supported on this platform, -1 failed. */
int32_t tet_guard_install(void);
/* Register the mapping [base, base + len) (page-aligned base): a slot id, or -1 when
 * it cannot be guarded (no signals here, table full).  Reinstalls the handler. */
int64_t tet_guard_add(const uint8_t *base, uint64_t len);
/* Nonzero once a fault inside the slot's mapping was absorbed. */
uint32_t tet_guard_hit(int64_t slot);
/* Release the slot (after the mapping is gone or will not be read again). */
void tet_guard_remove(int64_t slot);
/* Test hooks: faults absorbed so far; whether this platform guards at all. */
uint64_t tet_guard_absorbed(void);
int32_t tet_guard_supported(void);
/* cdef-end */

#endif

/*
 * deltacome — Delta-CoMe delta compression for large language models.
 *
 * This is the library's only public header (with dc_errors.h). It is a C99 header with a stable
 * ABI: functions are never removed or changed, option structs only grow at the end (every one
 * starts with `struct_size`, filled by its dc_*_init function), and status codes are pinned.
 *
 * Concepts
 *   dc_container  an opened .dcz file (or memory image): immutable after open, shareable by threads.
 *   dc_context    one backend (CPU, CUDA, HIP) on one device. Used by one thread at a time.
 *   dc_delta      one tensor's delta loaded into a context, kept in its packed (compressed) form.
 *   dc_delta_batch a fixed set of same-shape deltas for multi-tenant apply (one launch per layer).
 *   dc_pool       a memory-budgeted, LRU cache of deltas keyed by (model id, tensor) (experimental).
 *
 * Errors
 *   Every function that can fail returns a dc_status (DC_OK == 0). On failure a one-line message
 *   naming what is wrong is stored for the calling thread: dc_last_error_message(). Handle outputs
 *   (`out` parameters, always first) are set to NULL on failure.
 *
 * Threads
 *   Functions taking only a dc_container are safe to call concurrently. A dc_context and everything
 *   loaded into it must be used by one thread at a time (use one context per thread or per stream).
 *
 * GPU
 *   The header has no CUDA/HIP types: streams are `void*` (cudaStream_t / hipStream_t, NULL = the
 *   default stream) and device pointers are `void*`. GPU work is enqueued on the caller's stream with
 *   no host synchronisation unless a function says otherwise. A context's GPU work shares device
 *   scratch (the phase-1 output of an apply, the grid-barrier word of its one-launch kernel), so
 *   the calls of one context must not overlap on the device: give them one stream, or order their
 *   streams (events). For streams that run at the same time, use one context per stream.
 */
#ifndef DELTACOME_DELTACOME_H
#define DELTACOME_DELTACOME_H

#include <stddef.h>
#include <stdint.h>

#include "dc_errors.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  if defined(DC_BUILDING_LIBRARY)
#    define DC_API __declspec(dllexport)
#  else
#    define DC_API
#  endif
#elif defined(__GNUC__)
#  define DC_API __attribute__((visibility("default")))
#else
#  define DC_API
#endif

/* ------------------------------------------------------------------------------------------------
 * Versions
 * --------------------------------------------------------------------------------------------- */
#define DC_VERSION_MAJOR 0
#define DC_VERSION_MINOR 1
#define DC_VERSION_PATCH 0
#define DC_VERSION_NUMBER (DC_VERSION_MAJOR * 10000 + DC_VERSION_MINOR * 100 + DC_VERSION_PATCH)
/* Container format this library writes; it reads every minor version of the same major. */
#define DC_FORMAT_MAJOR 1
#define DC_FORMAT_MINOR 0

/*! dc_version() : @return DC_VERSION_NUMBER of the linked library (compare with the macro to
 *  detect a header/library mismatch). Thread-safe. */
DC_API uint32_t dc_version(void);
/*! dc_version_string() : @return "MAJOR.MINOR.PATCH", a static string. Thread-safe. */
DC_API const char* dc_version_string(void);

/* ------------------------------------------------------------------------------------------------
 * Errors
 * --------------------------------------------------------------------------------------------- */
/*! dc_status_string() : @return a static English name for `status` ("DC_ERR_CHECKSUM: checksum
 *  mismatch"); unknown values give "unknown status". Never NULL. Thread-safe. */
DC_API const char* dc_status_string(dc_status status);
/*! dc_last_error_message() : @return the message of the last failed call on this thread, or "" if
 *  none. Thread-local; valid until the next deltacome call on the same thread. Never NULL. */
DC_API const char* dc_last_error_message(void);

/* ------------------------------------------------------------------------------------------------
 * Enumerations (values pinned)
 * --------------------------------------------------------------------------------------------- */
typedef enum dc_dtype { DC_DTYPE_F32 = 0, DC_DTYPE_F16 = 1, DC_DTYPE_BF16 = 2 } dc_dtype;

typedef enum dc_tensor_kind {
  DC_KIND_LOWRANK = 0,  /* Delta-CoMe: U·diag(σ)·Vᵀ with mixed-precision quantized bands */
  DC_KIND_BITDELTA = 1, /* BitDelta: sign(ΔW) × one scale per matrix                     */
  DC_KIND_DENSE = 2     /* stored as is (fp32/fp16/bf16): norms, biases, embeddings      */
} dc_tensor_kind;

typedef enum dc_backend {
  DC_BACKEND_AUTO = 0, /* CUDA if a CUDA device works, else HIP if a HIP device works, else CPU */
  DC_BACKEND_CPU = 1,
  DC_BACKEND_CUDA = 2,
  DC_BACKEND_HIP = 3
} dc_backend;

/*! dc_backend_available() : @return 1 if `backend` is built in (or its module loads) and sees at
 *  least one device, else 0. CPU always returns 1. Thread-safe. */
DC_API int dc_backend_available(dc_backend backend);
/*! dc_backend_name() : @return "cpu", "cuda", "hip", "auto" or "unknown" (static). */
DC_API const char* dc_backend_name(dc_backend backend);

/* ------------------------------------------------------------------------------------------------
 * Containers
 * --------------------------------------------------------------------------------------------- */
typedef struct dc_container dc_container;

#define DC_OPEN_NO_MMAP 0x1u         /* read the file with pread instead of mapping it          */
#define DC_OPEN_TRUSTED 0x2u         /* skip segment checksums on load (dc_container_verify still checks) */
#define DC_OPEN_BORROW_MEMORY 0x4u   /* dc_container_open_memory: do not copy the buffer         */

typedef struct dc_open_options {
  uint32_t struct_size;          /* sizeof(dc_open_options), set by dc_open_options_init       */
  uint32_t flags;                /* DC_OPEN_* bits                                              */
  uint64_t max_manifest_bytes;   /* refuse larger manifests (default 256 MiB)                   */
  uint64_t max_segment_bytes;    /* refuse larger decompressed segments (default 4 GiB)         */
} dc_open_options;

/*! dc_open_options_init() : fills `opts` with defaults. */
DC_API void dc_open_options_init(dc_open_options* opts);

/*! dc_container_open() : opens and validates the .dcz file at `path` (preamble, manifest checksum,
 *  FlatBuffers verification, every size and segment bound). Segment payloads are not read yet.
 *  @param[out] out  the new container, owned by the caller: free with dc_container_close().
 *  @param opts      NULL for defaults.
 *  @return DC_OK, or DC_ERR_IO / BAD_MAGIC / UNSUPPORTED_VERSION / TRUNCATED / CORRUPT / CHECKSUM /
 *          OVERFLOW / LIMIT / DUPLICATE / OVERLAP.
 *  The file may be replaced or deleted after open (the mapping stays valid) but must not be
 *  modified in place. Thread-safe. */
DC_API dc_status dc_container_open(dc_container** out, const char* path, const dc_open_options* opts);

/*! dc_container_open_memory() : as dc_container_open, from a buffer holding a whole .dcz image.
 *  The buffer is copied unless opts->flags has DC_OPEN_BORROW_MEMORY; then it must stay valid and
 *  unmodified until dc_container_close() returns and every dc_delta loaded from it is freed. */
DC_API dc_status dc_container_open_memory(dc_container** out, const void* data, size_t size,
                                          const dc_open_options* opts);

/*! dc_container_close() : frees the container. Accepts NULL. Deltas already loaded from it stay
 *  valid (they hold their own copy of the packed data). */
DC_API void dc_container_close(dc_container* container);

typedef struct dc_container_info {
  uint32_t struct_size;
  uint16_t format_major, format_minor;
  uint64_t tensor_count;
  uint64_t file_bytes;        /* size of the .dcz image                                          */
  uint64_t payload_bytes;     /* compressed payload (segments + padding)                         */
  const char* model_name;     /* fine-tuned model's name ("" if unknown)                         */
  const char* base_model_name;/* base model's name ("" if unknown)                               */
  const char* tool_version;   /* producer, e.g. "deltacome 0.1.0"                                */
  const char* recipe_json;    /* compression recipe as JSON ("{}" if none)                       */
} dc_container_info;
/* Strings returned by the container are owned by it and valid until dc_container_close(). */

/*! dc_container_get_info() : fills `info` (set info->struct_size first, or use a zeroed struct with
 *  struct_size = sizeof). Thread-safe. */
DC_API dc_status dc_container_get_info(const dc_container* container, dc_container_info* info);

#define DC_MAX_BANDS 8
typedef struct dc_band_info {
  uint32_t bits;        /* 2, 3, 4, 8 or 16                                                      */
  uint32_t rank_begin;  /* first singular vector of the band (vectors sorted by descending σ)    */
  uint32_t rank_end;    /* one past the last                                                     */
  uint32_t group_size;  /* quantization group (asymmetric scale + zero per group); 0 for 16-bit  */
} dc_band_info;

typedef struct dc_tensor_info {
  uint32_t struct_size;
  const char* name;          /* owned by the container                                          */
  uint64_t rows;             /* out features (rows of W)                                        */
  uint64_t cols;             /* in features (columns of W); 1 for a 1-D dense tensor (bias)     */
  dc_tensor_kind kind;
  dc_dtype dtype;            /* dense: storage dtype; others: the base weight's dtype           */
  uint32_t rank;             /* low-rank: number of kept singular vectors                       */
  uint32_t band_count;       /* low-rank: entries used in bands[]                               */
  dc_band_info bands[DC_MAX_BANDS];
  int has_act_order;         /* 1 if V̂ is stored in an act-order permutation of the inputs      */
  uint64_t stored_bytes;     /* compressed bytes in the file (sum of its zstd frames)           */
  uint64_t packed_bytes;     /* bytes once decompressed (what a loaded delta holds)             */
  uint64_t fp16_bytes;       /* rows·cols·2, the uncompressed fp16 delta, for ratios            */
} dc_tensor_info;

/*! dc_container_tensor_count() : @return the number of tensors. Thread-safe. */
DC_API uint64_t dc_container_tensor_count(const dc_container* container);
/*! dc_container_tensor_info() : fills `info` for tensor `index` (< tensor_count). Thread-safe. */
DC_API dc_status dc_container_tensor_info(const dc_container* container, uint64_t index,
                                          dc_tensor_info* info);
/*! dc_container_find_tensor() : looks `name` up. @return DC_OK and *index, or DC_ERR_NOT_FOUND. */
DC_API dc_status dc_container_find_tensor(const dc_container* container, const char* name,
                                          uint64_t* index);
/*! dc_container_singular_values() : copies up to `capacity` singular values of low-rank tensor
 *  `index` into `out` (may be NULL to query); *count receives the rank. Thread-safe. */
DC_API dc_status dc_container_singular_values(const dc_container* container, uint64_t index,
                                              float* out, uint64_t capacity, uint64_t* count);

/*! dc_container_verify() : decompresses every segment and checks its size and XXH3-64, and that
 *  every padding byte is zero. Single pass, no state kept. @return DC_OK or the first failure
 *  (the message names the tensor). Thread-safe. */
DC_API dc_status dc_container_verify(const dc_container* container);

/*! dc_container_check_base_tensor() : checks one base tensor against the container's base-model
 *  fingerprint: `name` must be listed, and `data` (`bytes` long, the tensor's raw little-endian
 *  bytes as stored in the base checkpoint) must hash to the recorded XXH3-64.
 *  @return DC_OK, DC_ERR_NOT_FOUND or DC_ERR_BASE_MISMATCH. Thread-safe. */
DC_API dc_status dc_container_check_base_tensor(const dc_container* container, const char* name,
                                                const void* data, uint64_t bytes);
/*! dc_container_check_base_file() : checks a whole base checkpoint (a .safetensors file, or a
 *  model.safetensors.index.json of shards): every fingerprinted tensor must be present with the
 *  same shape, dtype and hash. @return DC_OK or DC_ERR_BASE_MISMATCH naming the first difference. */
DC_API dc_status dc_container_check_base_file(const dc_container* container, const char* path);

/* ------------------------------------------------------------------------------------------------
 * Contexts
 * --------------------------------------------------------------------------------------------- */
typedef struct dc_context dc_context;

typedef struct dc_context_options {
  uint32_t struct_size;
  dc_backend backend;     /* default DC_BACKEND_AUTO                                              */
  int32_t device;         /* GPU ordinal (default 0); ignored by the CPU backend                  */
  int32_t num_threads;    /* CPU backend worker threads; 0 = hardware concurrency (default)       */
} dc_context_options;

/*! dc_context_options_init() : fills `opts` with defaults. */
DC_API void dc_context_options_init(dc_context_options* opts);

/*! dc_context_create() : creates a context on a backend and device.
 *  @param[out] out owned by the caller; free with dc_context_destroy().
 *  @return DC_OK, DC_ERR_NOT_FOUND (backend not built/no device), DC_ERR_BACKEND. */
DC_API dc_status dc_context_create(dc_context** out, const dc_context_options* opts);
/*! dc_context_destroy() : releases the caller's reference to the context. Accepts NULL. Deltas and
 *  batches created on it hold their own reference, so they stay valid and may be freed afterwards;
 *  the device state is released when the last of them is freed. */
DC_API void dc_context_destroy(dc_context* ctx);
/*! dc_context_backend() : @return the backend the context runs on (AUTO resolved). */
DC_API dc_backend dc_context_backend(const dc_context* ctx);

/* ------------------------------------------------------------------------------------------------
 * Loading deltas
 * --------------------------------------------------------------------------------------------- */
typedef struct dc_delta dc_delta;

typedef enum dc_shard_split {
  DC_SHARD_NONE = 0,
  DC_SHARD_ROWS = 1, /* column-parallel layer (q, k, v, gate, up): keep output rows [begin, end)  */
  DC_SHARD_COLS = 2  /* row-parallel layer (o, down): keep input columns [begin, end); the apply
                        then produces a partial sum that the engine's all-reduce completes.       */
} dc_shard_split;

typedef struct dc_shard {
  dc_shard_split split;
  uint32_t index, count; /* even split: shard `index` of `count` (ceil-divided)                   */
  uint64_t begin, end;   /* explicit range when end > begin (overrides index/count)               */
} dc_shard;

#define DC_LOAD_VERIFY_CHECKSUM 0x0u /* default: XXH3 of every segment checked before use        */
#define DC_LOAD_SKIP_CHECKSUM 0x1u   /* trust the file (DC_OPEN_TRUSTED sets this for all loads)  */

typedef struct dc_load_options {
  uint32_t struct_size;
  uint32_t flags;        /* DC_LOAD_* bits                                                         */
  void* stream;          /* GPU stream for the upload (NULL = default stream); see dc_delta_load   */
  dc_shard shard;        /* tensor-parallel slice; split = DC_SHARD_NONE for the whole delta      */
} dc_load_options;

/*! dc_load_options_init() : fills `opts` with defaults. */
DC_API void dc_load_options_init(dc_load_options* opts);

/*! dc_delta_load() : reads tensor `name` from `container` (decompress, verify), and places it in
 *  `ctx` in its packed form (GPU: device memory, uploaded asynchronously on opts->stream; the delta
 *  is usable by work enqueued later on the same stream). Dense tensors load too (apply/merge then
 *  add them as they are).
 *  @param[out] out owned by the caller; free with dc_delta_free() before destroying `ctx`.
 *  The container may be closed right after. Uses `ctx`: one thread at a time. */
DC_API dc_status dc_delta_load(dc_delta** out, dc_context* ctx, const dc_container* container,
                               const char* name, const dc_load_options* opts);
/*! dc_delta_load_index() : as dc_delta_load, by tensor index. */
DC_API dc_status dc_delta_load_index(dc_delta** out, dc_context* ctx, const dc_container* container,
                                     uint64_t index, const dc_load_options* opts);
/*! dc_delta_load_all() : loads every tensor of the container; `out` must have room for
 *  dc_container_tensor_count() handles, filled in container order. Decompression runs on
 *  several host threads. On failure nothing stays loaded and every out[i] is NULL. */
DC_API dc_status dc_delta_load_all(dc_delta** out, dc_context* ctx, const dc_container* container,
                                   const dc_load_options* opts);
/*! dc_delta_free() : frees a loaded delta. Accepts NULL. GPU: work already enqueued that uses the
 *  delta must be complete (the caller synchronises its stream first). */
DC_API void dc_delta_free(dc_delta* delta);

typedef struct dc_delta_info {
  uint32_t struct_size;
  uint64_t rows, cols;       /* the full layer's shape                                           */
  dc_tensor_kind kind;
  uint64_t device_bytes;     /* memory the loaded delta occupies in its context                  */
  dc_shard_split split;      /* the shard it holds ...                                           */
  uint64_t shard_begin, shard_end; /* ... as a range of rows or columns ((0, rows) if none)       */
  const char* name;          /* owned by the delta, valid until dc_delta_free                    */
} dc_delta_info;
/*! dc_delta_get_info() : fills `info`. */
DC_API dc_status dc_delta_get_info(const dc_delta* delta, dc_delta_info* info);

/* ------------------------------------------------------------------------------------------------
 * Apply and merge
 * --------------------------------------------------------------------------------------------- */
#define DC_APPLY_INCLUDE_BASE 0x1u /* y = x·(W_base + ΔW)ᵀ (overwrite y) instead of y += x·ΔWᵀ      */

typedef struct dc_apply_params {
  uint32_t struct_size;
  uint32_t flags;           /* DC_APPLY_* bits                                                     */
  uint64_t m;               /* rows of x and y (tokens)                                            */
  const void* x;            /* [m × cols] (shard: the shard's columns), row stride ldx elements    */
  dc_dtype x_dtype;
  uint64_t ldx;             /* 0 = packed (cols)                                                   */
  void* y;                  /* [m × rows] (shard: the shard's rows), row stride ldy elements      */
  dc_dtype y_dtype;
  uint64_t ldy;             /* 0 = packed (rows)                                                   */
  const void* base_weight;  /* with DC_APPLY_INCLUDE_BASE: W_base [rows × cols], row-major         */
  dc_dtype base_dtype;
  uint64_t ld_base;         /* 0 = packed (cols)                                                   */
  float scale;             /* ΔW is multiplied by this (default 1.0)                              */
  void* stream;             /* GPU stream (NULL = default)                                         */
  void* workspace;          /* GPU prefill path (large m): device scratch of at least
                               dc_apply_workspace_size() bytes; may be NULL when that size is 0   */
  uint64_t workspace_bytes;
} dc_apply_params;

/*! dc_apply_params_init() : fills `p` with defaults (scale 1, packed strides, fp32). */
DC_API void dc_apply_params_init(dc_apply_params* p);

/*! dc_apply_workspace_size() : device scratch that dc_apply_delta_linear needs for `m` rows
 *  (0 on the CPU backend and for small m). Thread-safe. */
DC_API dc_status dc_apply_workspace_size(const dc_delta* delta, uint64_t m, uint64_t* bytes);

/*! dc_apply_delta_linear() : y[m×rows] += x[m×cols] · ΔWᵀ (times p->scale), computed from the
 *  packed form: t = (x·V̂)⊙σ, then y += t·Ûᵀ. With DC_APPLY_INCLUDE_BASE, y = x·W_baseᵀ + x·ΔWᵀ.
 *  x, y, base_weight live where the context's backend computes (host memory for CPU, device memory
 *  for CUDA/HIP). Accumulation is fp32. No host synchronisation and no allocation (GPU), so the
 *  call can be captured in a CUDA graph. Dense 2-D tensors apply as a matrix, 1-D dense tensors
 *  (biases) add to every row of y. Uses the delta's context: one thread at a time. */
DC_API dc_status dc_apply_delta_linear(const dc_delta* delta, const dc_apply_params* p);

/*! dc_merge_delta() : W[rows×cols] += scale·ΔW in place (row stride `ld` elements, 0 = cols), so W
 *  becomes the fine-tuned weight (within quantization error). W lives in the context's memory
 *  space. `stream` as in dc_apply_params. */
DC_API dc_status dc_merge_delta(const dc_delta* delta, void* weight, dc_dtype dtype, uint64_t ld,
                                float scale, void* stream);

/* ------------------------------------------------------------------------------------------------
 * Multi-tenant apply: one call, rows of x belonging to different fine-tuned variants
 * --------------------------------------------------------------------------------------------- */
typedef struct dc_delta_batch dc_delta_batch;

/*! dc_delta_batch_create() : groups `count` low-rank or BitDelta deltas of one layer (same shape,
 *  same context) into slots 0..count-1, building the device-side descriptor table once, so an
 *  apply needs no upload. The deltas must outlive the batch.
 *  @param[out] out free with dc_delta_batch_free(). */
DC_API dc_status dc_delta_batch_create(dc_delta_batch** out, const dc_delta* const* deltas,
                                       uint64_t count);
/*! dc_delta_batch_free() : accepts NULL. */
DC_API void dc_delta_batch_free(dc_delta_batch* batch);

/*! dc_apply_delta_linear_batched() : for every row i < p->m, y[i] += x[i]·ΔW_{slot[i]}ᵀ, where
 *  `row_slot` (m int32 values, in the backend's memory space: device memory on GPU) gives each row's
 *  slot in `batch`, or -1 for no delta (CPU: other values are refused with DC_ERR_INVALID_ARGUMENT;
 *  GPU: they cannot be checked without a sync and are treated as -1). One kernel launch per phase
 *  whatever the number of slots;
 *  no host synchronisation, no allocation: CUDA-graph capturable. DC_APPLY_INCLUDE_BASE is
 *  honoured (base_weight shared by all rows). */
DC_API dc_status dc_apply_delta_linear_batched(const dc_delta_batch* batch, const int32_t* row_slot,
                                               const dc_apply_params* p);

#ifdef __cplusplus
}
#endif
#endif /* DELTACOME_DELTACOME_H */

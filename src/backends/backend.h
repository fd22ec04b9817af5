/*
 * The backend contract: a C function table that every backend fills (CPU built in; CUDA and HIP
 * built as run-time modules libdeltacome-cuda.so / libdeltacome-hip.so that export
 * dc_backend_module_get). Plain C types only, so a module built by nvcc or hipcc links against
 * nothing of the core library but this header, pack_layout.h and the public header.
 *
 * The API layer (src/api) validates every argument before calling a backend: shapes, leading
 * dimensions, dtypes, flags. Backends may assume valid input, and report only runtime failures
 * (allocation, driver errors) through host->set_error + a dc_status.
 *
 * Op path: dc_apply_delta_linear (src/api/apply.cpp) → ops->apply → backend launcher → kernel.
 */
#ifndef DELTACOME_BACKEND_H
#define DELTACOME_BACKEND_H

#include <stdint.h>

#include "common/pack_layout.h"
#include "deltacome/deltacome.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DC_BACKEND_ABI_VERSION 2u
#define DC_PERM_NONE 0xffffffffu /* in_perm entry whose input lies outside this shard: x = 0 */

/* One band of a low-rank delta, host memory, layout of pack_layout.h. */
typedef struct dc_band_view {
  uint32_t bits, rank_begin, rank_end, group_size;
  const uint32_t* v_codes;    /* (rank_end-rank_begin) rows × dc_row_words(v_len, bits)          */
  const dc_qparam* v_qparams; /* (rank_end-rank_begin) rows × dc_row_groups(v_len, group_size)  */
  const uint32_t* u_codes;    /* rows × dc_row_words(rank_end-rank_begin, bits)                 */
  const dc_qparam* u_qparams; /* rows × dc_row_groups(rank_end-rank_begin, group_size)          */
} dc_band_view;

/* One tensor's delta in host memory, as handed to a backend's load. For a shard, rows/cols are the
 * shard's shape and the V rows may be longer than cols (see v_len). */
typedef struct dc_tensor_view {
  uint64_t rows, cols;      /* shape of the (shard's) ΔW: y has `rows` columns, x has `cols`       */
  int32_t kind;             /* dc_tensor_kind                                                      */
  int32_t dtype;            /* dc_dtype of `dense`                                                 */
  /* low-rank */
  uint32_t rank, n_bands;
  const float* sigma;       /* rank values                                                         */
  const dc_band_view* bands;
  uint64_t v_len;           /* code positions per V row (== cols unless sharded)                  */
  const uint32_t* in_perm;  /* NULL, or v_len entries: V position p reads x[in_perm[p]] (or 0 if
                               DC_PERM_NONE)                                                       */
  uint32_t v_col_offset;    /* without in_perm: V position p reads x[p - v_col_offset] (0 outside) */
  /* BitDelta: rows × dc_row_words(cols, 1) words; ΔW[o][i] = scale·(2·bit − 1)                   */
  float bitdelta_scale;
  const uint32_t* signs;
  /* dense: rows·cols elements of dtype                                                            */
  const void* dense;
  /* 1 for a 1-D dense tensor (bias/norm, stored rows × 1): apply adds it to every row of y and
   * ignores x. A column shard of a dense matrix can also have cols == 1 but is not a vector.     */
  int32_t is_vector;
} dc_tensor_view;

/* Services the core library gives a backend module. */
typedef struct dc_backend_host {
  uint32_t abi_version;
  void (*set_error)(const char* message); /* thread-local message for dc_last_error_message */
} dc_backend_host;

typedef struct dc_backend_ops {
  uint32_t abi_version;     /* DC_BACKEND_ABI_VERSION                                             */
  const char* name;         /* "cpu", "cuda", "hip"                                               */
  /* Number of usable devices (0 when the driver is missing). */
  int (*device_count)(void);
  dc_status (*device_open)(void** out_dev, int32_t device, int32_t num_threads);
  void (*device_close)(void* dev);
  /* Copies the view into backend memory (GPU: async on stream; the view's host memory may be
   * released after the call returns — the module stages it in pinned memory if it needs to). */
  dc_status (*delta_load)(void* dev, const dc_tensor_view* view, void* stream, void** out_delta,
                          uint64_t* out_device_bytes);
  void (*delta_free)(void* dev, void* delta);
  dc_status (*workspace_size)(void* dev, const void* delta, uint64_t m, uint64_t* out_bytes);
  dc_status (*apply)(void* dev, const void* delta, const dc_apply_params* p);
  dc_status (*batch_create)(void* dev, const void* const* deltas, uint64_t count, void** out_batch);
  void (*batch_free)(void* dev, void* batch);
  dc_status (*apply_batched)(void* dev, const void* batch, const int32_t* row_slot,
                             const dc_apply_params* p);
  dc_status (*merge)(void* dev, const void* delta, void* weight, dc_dtype dtype, uint64_t ld,
                     float scale, void* stream);
} dc_backend_ops;

/* Exported by a backend module (extern "C", default visibility). Returns NULL if the module
 * cannot serve `abi_version`. */
typedef const dc_backend_ops* (*dc_backend_module_get_fn)(uint32_t abi_version,
                                                          const dc_backend_host* host);
#define DC_BACKEND_MODULE_SYMBOL "dc_backend_module_get"

/* The CPU backend, linked into the core library. */
const dc_backend_ops* dc_cpu_backend_ops(const dc_backend_host* host);

#ifdef __cplusplus
}
#endif
#endif /* DELTACOME_BACKEND_H */

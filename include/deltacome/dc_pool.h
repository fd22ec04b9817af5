/*
 * deltacome — delta pool (EXPERIMENTAL API).
 *
 * A dc_pool keeps the deltas of many fine-tuned variants of one base model resident in one
 * context under a device-memory budget, and serves batches whose rows belong to different variants.
 *
 * This header is experimental: unlike deltacome.h, its functions and structs may still change
 * between minor versions (option and stats structs only grow, and keep `struct_size`). Hosts
 * include it explicitly, after or instead of deltacome.h; nothing else includes it.
 *
 * Model
 *   - A variant is registered under a model id (any non-empty string) with the dc_container that
 *     holds its deltas. The pool borrows the container: it must stay open until the pool is
 *     destroyed or the id is unregistered.
 *   - An entry is one (model id, tensor name) pair. It is resident once its delta is loaded into the
 *     pool's context. Resident bytes are the sum of dc_delta_info.device_bytes of resident entries.
 *   - dc_pool_acquire returns a resident delta and takes a reference on it; dc_pool_release drops it.
 *     A referenced delta is never evicted or freed.
 *   - When a load would exceed the budget, unreferenced resident deltas are evicted (freed) in
 *     least-recently-used order (the one whose last reference was released longest ago goes first)
 *     until the new delta fits. If referenced deltas alone leave no room, the load fails with
 *     DC_ERR_BUDGET and nothing is evicted. If the device runs out of memory before the budget is
 *     reached (allocator granularity, other users of the GPU), the load evicts LRU unreferenced
 *     deltas one at a time and retries; DC_ERR_OUT_OF_MEMORY when none is left.
 *   - dc_pool_prefetch decodes deltas (zstd, checksums) on the pool's host threads while the caller
 *     goes on; decoded deltas are placed into the context (GPU: uploaded on the stream given to
 *     prefetch) by the next dc_pool_apply_batched or dc_pool_wait (or by a dc_pool_acquire of that
 *     very entry), so the context is still used by one thread at a time.
 *   - dc_pool_apply_batched takes one tensor name and one model id per row, makes every needed delta
 *     resident, and runs dc_apply_delta_linear_batched once, with a cached dc_delta_batch and a
 *     cached row→slot table (device memory on GPU backends).
 *
 * Threads
 *   Every function here may be called from any thread, concurrently with the others on the same
 *   pool: the pool has an internal mutex. The functions that may use the pool's context are marked
 *   [uses ctx]; the pool serialises them among themselves, but the host must not use the same
 *   context directly (dc_delta_load, dc_apply_delta_linear on a delta acquired from this pool,
 *   dc_merge_delta, ...) while one of them runs on another thread. Functions not marked [uses ctx]
 *   never touch the context and may overlap the host's own use of it.
 *   Decoding for a miss and for prefetch runs without the mutex held: other threads' hits are not
 *   blocked by a decode.
 *
 * GPU
 *   A delta loaded on a miss is uploaded on the stream passed to the call; work enqueued after the
 *   call on that stream may use it. Work on another stream must first wait for that stream.
 *   Before freeing an evicted delta, the pool synchronises the device (every stream of the
 *   context's device), so a delta may be released right after the work using it has been enqueued.
 *   An eviction therefore blocks the calling thread until the device is idle; size the budget so that
 *   steady-state serving hits.
 */
#ifndef DELTACOME_DC_POOL_H
#define DELTACOME_DC_POOL_H

#include "deltacome.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dc_pool dc_pool;

typedef struct dc_pool_options {
  uint32_t struct_size;          /* sizeof(dc_pool_options), set by dc_pool_options_init         */
  uint32_t load_flags;           /* DC_LOAD_* bits used for every load (default 0: verify XXH3)  */
  uint64_t device_budget_bytes;  /* most bytes of resident deltas; must be > 0 (default 1 GiB)   */
  int32_t host_threads;          /* decode threads for prefetch; 0 = min(4, hardware threads)    */
  uint32_t reserved;             /* 0                                                            */
} dc_pool_options;

/*! dc_pool_options_init() : fills `opts` with defaults (1 GiB budget, checksums verified,
 *  host_threads 0). Thread-safe. */
DC_API void dc_pool_options_init(dc_pool_options* opts);

/*! dc_pool_create() : creates an empty pool on `ctx`.
 *  @param[out] out  owned by the caller; free with dc_pool_destroy().
 *  @param ctx       borrowed: must outlive the pool (dc_context_destroy may be called only after
 *                   dc_pool_destroy). Host threads for prefetch start here.
 *  @param opts      NULL for defaults.
 *  @return DC_OK, DC_ERR_INVALID_ARGUMENT (NULL ctx, budget 0, bad host_threads or load_flags).
 *  Does not use ctx. Thread-safe. */
DC_API dc_status dc_pool_create(dc_pool** out, dc_context* ctx, const dc_pool_options* opts);

/*! dc_pool_destroy() : stops the host threads (waiting for decodes in progress), then frees every
 *  resident delta, cached batch and the row→slot table. Accepts NULL. [uses ctx]
 *  Deltas still acquired are freed too: the caller must not use them afterwards. GPU: work that
 *  uses the pool's deltas must be complete (synchronise your streams first). Must not run
 *  concurrently with any other call on the same pool. */
DC_API void dc_pool_destroy(dc_pool* pool);

/*! dc_pool_register() : registers `container` under `model_id` (copied). Nothing is loaded.
 *  The container is borrowed: keep it open until dc_pool_unregister(model_id) or dc_pool_destroy
 *  returns. @return DC_OK, DC_ERR_INVALID_ARGUMENT (NULL or empty id), DC_ERR_DUPLICATE (id
 *  already registered). Thread-safe; does not use ctx. */
DC_API dc_status dc_pool_register(dc_pool* pool, const char* model_id, const dc_container* container);

/*! dc_pool_unregister() : frees every resident delta of `model_id`, cancels its queued prefetches
 *  (waiting for a decode in progress), and forgets the id. Afterwards the container may be closed.
 *  @return DC_OK, DC_ERR_NOT_FOUND (unknown id), DC_ERR_BUSY (a delta of it is still acquired:
 *  nothing changes). [uses ctx] GPU: synchronises the device before freeing, as eviction does. */
DC_API dc_status dc_pool_unregister(dc_pool* pool, const char* model_id);

/*! dc_pool_acquire() : returns the delta of `tensor_name` of `model_id`, loading it if it is not
 *  resident (evicting LRU unreferenced deltas as needed), and takes one reference on it.
 *  @param stream  GPU stream for the upload on a miss (NULL = default stream); ignored on CPU.
 *  @param[out] out the delta, owned by the pool: valid until the matching dc_pool_release (and
 *                  after it, until the delta is evicted — do not rely on that). Never free it.
 *  @return DC_OK, DC_ERR_NOT_FOUND (unknown id or tensor), DC_ERR_BUDGET (the delta is larger
 *          than the budget, or referenced deltas leave no room; nothing is evicted then), or any
 *          status of dc_delta_load. Each successful call must be matched by one dc_pool_release.
 *  [uses ctx] on a miss or eviction; a hit does not. */
DC_API dc_status dc_pool_acquire(dc_pool* pool, const char* model_id, const char* tensor_name, void* stream,
                                 const dc_delta** out);

/*! dc_pool_release() : drops one reference taken by dc_pool_acquire. When the last one goes the
 *  delta stays resident, now evictable, and becomes the most recently used.
 *  @return DC_OK, DC_ERR_INVALID_ARGUMENT (NULL, not a delta of this pool, or not acquired).
 *  Thread-safe; does not use ctx (eviction happens later, in a call that needs room). */
DC_API dc_status dc_pool_release(dc_pool* pool, const dc_delta* delta);

/*! dc_pool_prefetch() : queues `tensor_name` of `model_id` (NULL = every tensor of the model, in
 *  container order) for decoding on the pool's host threads, and returns. Deltas already resident
 *  or queued are skipped. Decoded deltas are placed (GPU: uploaded on `stream`) by the next
 *  dc_pool_apply_batched or dc_pool_wait on the pool (an acquire of a decoded entry places that one,
 *  on the acquire's stream); placing evicts LRU deltas
 *  like a load, and a prefetched delta that cannot fit is dropped (counted in
 *  dc_pool_stats.prefetch_dropped), never an error. Decode failures (a bad checksum, ...) are
 *  reported by the acquire that needs the delta, and by dc_pool_wait.
 *  @return DC_OK, DC_ERR_NOT_FOUND (unknown id or tensor). Thread-safe; does not use ctx. */
DC_API dc_status dc_pool_prefetch(dc_pool* pool, const char* model_id, const char* tensor_name, void* stream);

/*! dc_pool_wait() : waits until every queued prefetch is decoded, then places the decoded deltas.
 *  @return DC_OK, or the first decode or load failure among them (the failed entries are
 *  forgotten; a later acquire retries). [uses ctx] */
DC_API dc_status dc_pool_wait(dc_pool* pool);

typedef enum dc_pool_entry_state {
  DC_POOL_ABSENT = 0,    /* not loaded, not queued                                              */
  DC_POOL_DECODING = 1,  /* queued or being decoded on a host thread                            */
  DC_POOL_DECODED = 2,   /* decoded in host memory, waiting to be placed                        */
  DC_POOL_RESIDENT = 3   /* loaded into the context                                            */
} dc_pool_entry_state;

/*! dc_pool_query() : the state of one entry and its reference count (0 unless resident).
 *  Either output may be NULL. @return DC_OK, DC_ERR_NOT_FOUND (unknown id or tensor).
 *  A snapshot: other threads may change it right after. Thread-safe; does not use ctx. */
DC_API dc_status dc_pool_query(dc_pool* pool, const char* model_id, const char* tensor_name,
                               dc_pool_entry_state* state, uint32_t* refcount);

typedef struct dc_pool_stats {
  uint32_t struct_size;       /* set by the caller (sizeof), or 0 for the full struct            */
  uint32_t reserved;
  uint64_t budget_bytes;      /* dc_pool_options.device_budget_bytes                             */
  uint64_t resident_bytes;    /* Σ device_bytes of resident deltas (≤ budget_bytes)               */
  uint64_t resident_deltas;   /* resident entries                                                */
  uint64_t referenced_deltas; /* resident entries with a reference count > 0                     */
  uint64_t hits;              /* acquisitions of a resident delta                                */
  uint64_t misses;            /* acquisitions that did not find the delta resident (they loaded
                                 it, or waited for another thread's load of it)                  */
  uint64_t loads;             /* deltas placed into the context (by acquire, apply or prefetch)  */
  uint64_t evictions;         /* deltas freed to make room                                       */
  uint64_t prefetch_loaded;   /* deltas placed by prefetch                                       */
  uint64_t prefetch_dropped;  /* prefetched deltas that did not fit and were discarded           */
  uint64_t prefetch_pending;  /* entries decoding or decoded, not yet placed                     */
  uint64_t batch_builds;      /* dc_delta_batch objects built by dc_pool_apply_batched            */
  uint64_t slot_uploads;      /* row→slot tables written by dc_pool_apply_batched                 */
} dc_pool_stats;

/*! dc_pool_stats() : fills `stats` with a consistent snapshot (taken under the mutex).
 *  dc_pool_apply_batched counts one acquisition (hit or miss) per distinct model id of its rows.
 *  Thread-safe; does not use ctx. */
DC_API dc_status dc_pool_get_stats(dc_pool* pool, dc_pool_stats* stats);

/*! dc_pool_apply_batched() : for every row i < p->m, y[i] += x[i]·ΔW(model_ids[i], tensor_name)ᵀ
 *  (times p->scale), or nothing for a row whose id is NULL (with DC_APPLY_INCLUDE_BASE every row,
 *  NULL ones included, also gets x[i]·W_baseᵀ, as in dc_apply_delta_linear_batched).
 *  Every distinct id is acquired (loading what is missing, on p->stream), the set's dc_delta_batch
 *  is built or reused (it is reused while the same resident deltas serve the same ordered set of
 *  ids; slots follow the first appearance of each id), the row→slot table is written (device
 *  memory on GPU, uploaded on p->stream, only when the id sequence differs from the previous
 *  call's), dc_apply_delta_linear_batched runs once, finished
 *  prefetches are placed, and the references are dropped.
 *  The deltas must be low-rank or BitDelta (dc_delta_batch_create's rule); dense deltas of one
 *  shape are applied row by row instead (not with DC_APPLY_INCLUDE_BASE: DC_ERR_UNSUPPORTED).
 *  @param model_ids  p->m entries (NULL entries allowed); the array and strings are read only
 *                    during the call.
 *  @return DC_OK, DC_ERR_NOT_FOUND, DC_ERR_BUDGET (the distinct deltas of the batch do not fit
 *          together), DC_ERR_SHAPE_MISMATCH (the variants' tensors differ in shape), or any status
 *          of dc_apply_delta_linear_batched.
 *  [uses ctx]. GPU: not capturable in a CUDA graph (it may allocate, upload and synchronise);
 *  capture dc_apply_delta_linear_batched with your own batch instead. The row→slot table is one per
 *  pool: with several streams, the caller orders applies (one stream per pool is simplest). */
DC_API dc_status dc_pool_apply_batched(dc_pool* pool, const char* tensor_name, const char* const* model_ids,
                                       const dc_apply_params* p);

#ifdef __cplusplus
}
#endif
#endif /* DELTACOME_DC_POOL_H */

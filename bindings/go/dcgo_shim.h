// Declarations of dcgo_shim.c (see there).
#ifndef DELTACOME_GO_SHIM_H
#define DELTACOME_GO_SHIM_H
#include <stdlib.h>
#include <deltacome/deltacome.h>
#include <deltacome/dc_pool.h>

dc_status dcgo_open(dc_container** out, const char* path, const void* data, size_t size,
                           uint32_t flags, uint64_t max_manifest, uint64_t max_segment);
dc_status dcgo_context(dc_context** out, dc_backend backend, int32_t device, int32_t threads);
dc_status dcgo_load(dc_delta** out, dc_delta** all, dc_context* ctx, const dc_container* c,
                           const char* name, uint64_t index, uint32_t flags, dc_shard_split split,
                           uint32_t shard_index, uint32_t shard_count, uint64_t begin, uint64_t end);
dc_status dcgo_apply(const dc_delta* delta, const dc_delta_batch* batch, const int32_t* row_slot,
                            uint64_t m, const void* x, dc_dtype xdt, uint64_t ldx, void* y, dc_dtype ydt,
                            uint64_t ldy, const void* base, dc_dtype bdt, uint64_t ldb, float scale);
dc_status dcgo_tensor_info(const dc_container* c, uint64_t i, dc_tensor_info* t);
dc_status dcgo_container_info(const dc_container* c, dc_container_info* t);
dc_status dcgo_delta_info(const dc_delta* d, dc_delta_info* t);
dc_band_info dcgo_band(const dc_tensor_info* t, int i);

// experimental: the delta pool (dc_pool.h)
dc_status dcgo_pool_create(dc_pool** out, dc_context* ctx, uint64_t budget, uint32_t load_flags, int32_t threads);
dc_status dcgo_pool_apply(dc_pool* pool, const char* tensor, const char* const* ids, uint64_t m, const void* x,
                          dc_dtype xdt, uint64_t ldx, void* y, dc_dtype ydt, uint64_t ldy, const void* base,
                          dc_dtype bdt, uint64_t ldb, float scale);
dc_status dcgo_pool_stats(dc_pool* pool, dc_pool_stats* s);

#endif

// C-side shims for the Go binding: they build the option and parameter structs on the C side, so no
// Go memory holding Go pointers is ever passed to C (cgo pointer rules), and they keep the number
// of cgo calls per operation at one.
#include "dcgo_shim.h"

dc_status dcgo_open(dc_container** out, const char* path, const void* data, size_t size,
                           uint32_t flags, uint64_t max_manifest, uint64_t max_segment) {
  dc_open_options o;
  dc_open_options_init(&o);
  o.flags = flags;
  if (max_manifest) o.max_manifest_bytes = max_manifest;
  if (max_segment) o.max_segment_bytes = max_segment;
  return path ? dc_container_open(out, path, &o) : dc_container_open_memory(out, data, size, &o);
}

dc_status dcgo_context(dc_context** out, dc_backend backend, int32_t device, int32_t threads) {
  dc_context_options o;
  dc_context_options_init(&o);
  o.backend = backend;
  o.device = device;
  o.num_threads = threads;
  return dc_context_create(out, &o);
}

// name != NULL: by name; else by index; all != NULL: every tensor into all[].
dc_status dcgo_load(dc_delta** out, dc_delta** all, dc_context* ctx, const dc_container* c,
                           const char* name, uint64_t index, uint32_t flags, dc_shard_split split,
                           uint32_t shard_index, uint32_t shard_count, uint64_t begin, uint64_t end) {
  dc_load_options o;
  dc_load_options_init(&o);
  o.flags = flags;
  o.shard.split = split;
  o.shard.index = shard_index;
  o.shard.count = shard_count;
  o.shard.begin = begin;
  o.shard.end = end;
  if (all) return dc_delta_load_all(all, ctx, c, &o);
  if (name) return dc_delta_load(out, ctx, c, name, &o);
  return dc_delta_load_index(out, ctx, c, index, &o);
}

static dc_apply_params host_params(uint64_t m, const void* x, dc_dtype xdt, uint64_t ldx, void* y, dc_dtype ydt,
                                   uint64_t ldy, const void* base, dc_dtype bdt, uint64_t ldb, float scale) {
  dc_apply_params p;
  dc_apply_params_init(&p);
  p.m = m;
  p.x = x;
  p.x_dtype = xdt;
  p.ldx = ldx;
  p.y = y;
  p.y_dtype = ydt;
  p.ldy = ldy;
  p.scale = scale;
  if (base) {
    p.flags |= DC_APPLY_INCLUDE_BASE;
    p.base_weight = base;
    p.base_dtype = bdt;
    p.ld_base = ldb;
  }
  return p;
}

// batch != NULL: batched apply with row_slot; else single delta.
dc_status dcgo_apply(const dc_delta* delta, const dc_delta_batch* batch, const int32_t* row_slot,
                            uint64_t m, const void* x, dc_dtype xdt, uint64_t ldx, void* y, dc_dtype ydt,
                            uint64_t ldy, const void* base, dc_dtype bdt, uint64_t ldb, float scale) {
  dc_apply_params p = host_params(m, x, xdt, ldx, y, ydt, ldy, base, bdt, ldb, scale);
  return batch ? dc_apply_delta_linear_batched(batch, row_slot, &p) : dc_apply_delta_linear(delta, &p);
}

dc_status dcgo_tensor_info(const dc_container* c, uint64_t i, dc_tensor_info* t) {
  t->struct_size = sizeof *t;
  return dc_container_tensor_info(c, i, t);
}
dc_status dcgo_container_info(const dc_container* c, dc_container_info* t) {
  t->struct_size = sizeof *t;
  return dc_container_get_info(c, t);
}
dc_status dcgo_delta_info(const dc_delta* d, dc_delta_info* t) {
  t->struct_size = sizeof *t;
  return dc_delta_get_info(d, t);
}
dc_band_info dcgo_band(const dc_tensor_info* t, int i) { return t->bands[i]; }

// ---- experimental: the delta pool ----------------------------------------------------------------

// budget 0: the library's default.
dc_status dcgo_pool_create(dc_pool** out, dc_context* ctx, uint64_t budget, uint32_t load_flags, int32_t threads) {
  dc_pool_options o;
  dc_pool_options_init(&o);
  if (budget) o.device_budget_bytes = budget;
  o.load_flags = load_flags;
  o.host_threads = threads;
  return dc_pool_create(out, ctx, &o);
}

// ids: m entries in C memory (NULL = no delta for that row).
dc_status dcgo_pool_apply(dc_pool* pool, const char* tensor, const char* const* ids, uint64_t m, const void* x,
                          dc_dtype xdt, uint64_t ldx, void* y, dc_dtype ydt, uint64_t ldy, const void* base,
                          dc_dtype bdt, uint64_t ldb, float scale) {
  dc_apply_params p = host_params(m, x, xdt, ldx, y, ydt, ldy, base, bdt, ldb, scale);
  return dc_pool_apply_batched(pool, tensor, ids, &p);
}

dc_status dcgo_pool_stats(dc_pool* pool, dc_pool_stats* s) {
  s->struct_size = sizeof *s;
  return dc_pool_get_stats(pool, s);
}

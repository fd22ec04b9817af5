// dc_pool_*: the C boundary of the delta pool (include/deltacome/dc_pool.h). Argument checks and
// exception → status conversion; the work is in pool.cpp and pool_apply.cpp.
#include <thread>

#include "pool/pool.h"

namespace {

dc_pool_options default_pool_options() {
  dc_pool_options o{};
  o.struct_size = sizeof o;
  o.load_flags = 0;
  o.device_budget_bytes = 1ull << 30;
  o.host_threads = 0;
  o.reserved = 0;
  return o;
}

dc::pool::Pool& impl(dc_pool* pool) {
  DC_CHECK(pool && pool->impl, DC_ERR_INVALID_ARGUMENT, "pool is NULL");
  return *pool->impl;
}

std::string checked_name(const char* s, const char* what) {
  DC_CHECK(s && *s, DC_ERR_INVALID_ARGUMENT, "%s is NULL or empty", what);
  return s;
}

}  // namespace

extern "C" {

DC_API void dc_pool_options_init(dc_pool_options* opts) {
  if (opts) *opts = default_pool_options();
}

DC_API dc_status dc_pool_create(dc_pool** out, dc_context* ctx, const dc_pool_options* opts) {
  if (out) *out = nullptr;
  return dc::guard("dc_pool_create", [&] {
    DC_CHECK(out && ctx, DC_ERR_INVALID_ARGUMENT, "out or context is NULL");
    const dc_pool_options o = dc::read_options(opts, default_pool_options(), "dc_pool_options");
    DC_CHECK(o.device_budget_bytes > 0, DC_ERR_INVALID_ARGUMENT, "device_budget_bytes is 0");
    DC_CHECK(o.host_threads >= 0 && o.host_threads <= 256, DC_ERR_INVALID_ARGUMENT,
             "host_threads %d out of range [0, 256]", o.host_threads);
    DC_CHECK((o.load_flags & ~DC_LOAD_SKIP_CHECKSUM) == 0, DC_ERR_INVALID_ARGUMENT, "unknown load_flags 0x%x",
             o.load_flags);
    DC_CHECK(o.reserved == 0, DC_ERR_INVALID_ARGUMENT, "dc_pool_options.reserved must be 0");
    auto p = std::make_unique<dc_pool>();
    p->impl = std::make_unique<dc::pool::Pool>(ctx, o);
    *out = p.release();
    return DC_OK;
  });
}

DC_API void dc_pool_destroy(dc_pool* pool) { delete pool; }

DC_API dc_status dc_pool_register(dc_pool* pool, const char* model_id, const dc_container* container) {
  return dc::guard("dc_pool_register", [&] {
    DC_CHECK(container, DC_ERR_INVALID_ARGUMENT, "container is NULL");
    impl(pool).register_model(checked_name(model_id, "model_id"), container);
    return DC_OK;
  });
}

DC_API dc_status dc_pool_unregister(dc_pool* pool, const char* model_id) {
  return dc::guard("dc_pool_unregister", [&] {
    impl(pool).unregister_model(checked_name(model_id, "model_id"));
    return DC_OK;
  });
}

DC_API dc_status dc_pool_acquire(dc_pool* pool, const char* model_id, const char* tensor_name, void* stream,
                                 const dc_delta** out) {
  if (out) *out = nullptr;
  return dc::guard("dc_pool_acquire", [&] {
    DC_CHECK(out, DC_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = impl(pool).acquire(checked_name(model_id, "model_id"), checked_name(tensor_name, "tensor_name"), stream);
    return DC_OK;
  });
}

DC_API dc_status dc_pool_release(dc_pool* pool, const dc_delta* delta) {
  return dc::guard("dc_pool_release", [&] {
    DC_CHECK(delta, DC_ERR_INVALID_ARGUMENT, "delta is NULL");
    impl(pool).release(delta);
    return DC_OK;
  });
}

DC_API dc_status dc_pool_prefetch(dc_pool* pool, const char* model_id, const char* tensor_name, void* stream) {
  return dc::guard("dc_pool_prefetch", [&] {
    DC_CHECK(!tensor_name || *tensor_name, DC_ERR_INVALID_ARGUMENT, "tensor_name is empty (NULL means all)");
    impl(pool).prefetch(checked_name(model_id, "model_id"), tensor_name, stream);
    return DC_OK;
  });
}

DC_API dc_status dc_pool_wait(dc_pool* pool) {
  return dc::guard("dc_pool_wait", [&] {
    impl(pool).wait();
    return DC_OK;
  });
}

DC_API dc_status dc_pool_query(dc_pool* pool, const char* model_id, const char* tensor_name,
                               dc_pool_entry_state* state, uint32_t* refcount) {
  return dc::guard("dc_pool_query", [&] {
    impl(pool).query(checked_name(model_id, "model_id"), checked_name(tensor_name, "tensor_name"), state, refcount);
    return DC_OK;
  });
}

DC_API dc_status dc_pool_get_stats(dc_pool* pool, dc_pool_stats* stats) {
  return dc::guard("dc_pool_get_stats", [&] {
    DC_CHECK(stats, DC_ERR_INVALID_ARGUMENT, "stats is NULL");
    const dc_pool_stats s = impl(pool).stats();
    const uint32_t n = stats->struct_size ? std::min<uint32_t>(stats->struct_size, sizeof s) : sizeof s;
    DC_CHECK(n >= 8, DC_ERR_INVALID_ARGUMENT, "dc_pool_stats.struct_size %u is too small", n);
    std::memcpy(stats, &s, n);
    stats->struct_size = n;
    return DC_OK;
  });
}

DC_API dc_status dc_pool_apply_batched(dc_pool* pool, const char* tensor_name, const char* const* model_ids,
                                       const dc_apply_params* p) {
  return dc::guard("dc_pool_apply_batched", [&] {
    DC_CHECK(p, DC_ERR_INVALID_ARGUMENT, "params is NULL");
    DC_CHECK(p->struct_size >= 8 && p->struct_size <= 65536, DC_ERR_INVALID_ARGUMENT,
             "dc_apply_params.struct_size is %u: initialise it with dc_apply_params_init", p->struct_size);
    dc_apply_params full;
    dc_apply_params_init(&full);
    std::memcpy(&full, p, std::min<size_t>(p->struct_size, sizeof full));
    full.struct_size = sizeof full;
    impl(pool).apply_batched(checked_name(tensor_name, "tensor_name"), model_ids, full);
    return DC_OK;
  });
}

}  // extern "C"

// dc_delta_*: loading deltas into a context (whole or as a tensor-parallel shard).
#include <algorithm>
#include <thread>

#include "api/api_internal.h"
#include "api/shard_view.h"

namespace dc {

std::unique_ptr<dc_delta> place_delta(dc_context* ctx, const PackedTensor& t, const dc_shard& shard, void* stream) {
  const ShardRange sh = resolve_shard(shard, t.rows, t.cols, t.name.c_str());
  TensorViewStorage storage(t, sh);
  auto d = std::make_unique<dc_delta>();
  d->device = ctx->device;
  d->name = t.name;
  d->rows = t.rows;
  d->cols = t.cols;
  d->view_rows = storage.view().rows;
  d->view_cols = storage.view().cols;
  d->kind = t.kind;
  d->split = sh.split;
  d->shard_begin = sh.split == DC_SHARD_NONE ? 0 : sh.begin;
  d->shard_end = sh.split == DC_SHARD_NONE ? t.rows : sh.end;
  check_backend(ctx->device->ops->delta_load(ctx->device->handle, &storage.view(), stream, &d->handle, &d->device_bytes),
                ("loading '" + t.name + "'").c_str());
  return d;
}

}  // namespace dc

namespace {

dc_load_options default_load_options() {
  dc_load_options o{};
  o.struct_size = sizeof o;
  o.flags = DC_LOAD_VERIFY_CHECKSUM;
  o.stream = nullptr;
  o.shard = dc_shard{DC_SHARD_NONE, 0, 1, 0, 0};
  return o;
}

bool verify_of(const dc_container* c, const dc_load_options& o) {
  return !c->trusted && !(o.flags & DC_LOAD_SKIP_CHECKSUM);
}

}  // namespace

extern "C" {

DC_API void dc_load_options_init(dc_load_options* opts) {
  if (opts) *opts = default_load_options();
}

DC_API dc_status dc_delta_load_index(dc_delta** out, dc_context* ctx, const dc_container* c, uint64_t index,
                                     const dc_load_options* opts) {
  if (out) *out = nullptr;
  return dc::guard("dc_delta_load", [&] {
    DC_CHECK(out && ctx && c, DC_ERR_INVALID_ARGUMENT, "out, context or container is NULL");
    const dc_load_options o = dc::read_options(opts, default_load_options(), "dc_load_options");
    DC_CHECK((o.flags & ~DC_LOAD_SKIP_CHECKSUM) == 0, DC_ERR_INVALID_ARGUMENT, "unknown load flags 0x%x", o.flags);
    DC_CHECK(index < c->reader->tensors().size(), DC_ERR_NOT_FOUND, "tensor index %llu out of range",
             (unsigned long long)index);
    const dc::PackedTensor t = c->reader->load_tensor(index, verify_of(c, o));
    *out = dc::place_delta(ctx, t, o.shard, o.stream).release();
    return DC_OK;
  });
}

DC_API dc_status dc_delta_load(dc_delta** out, dc_context* ctx, const dc_container* c, const char* name,
                               const dc_load_options* opts) {
  if (out) *out = nullptr;
  uint64_t index = 0;
  const dc_status s = dc::guard("dc_delta_load", [&] {
    DC_CHECK(c && name, DC_ERR_INVALID_ARGUMENT, "container or name is NULL");
    const int64_t i = c->reader->find(name);
    DC_CHECK(i >= 0, DC_ERR_NOT_FOUND, "no tensor named '%s' in the container", name);
    index = (uint64_t)i;
    return DC_OK;
  });
  return s != DC_OK ? s : dc_delta_load_index(out, ctx, c, index, opts);
}

DC_API dc_status dc_delta_load_all(dc_delta** out, dc_context* ctx, const dc_container* c,
                                   const dc_load_options* opts) {
  return dc::guard("dc_delta_load_all", [&] {
    DC_CHECK(out && ctx && c, DC_ERR_INVALID_ARGUMENT, "out, context or container is NULL");
    const dc_load_options o = dc::read_options(opts, default_load_options(), "dc_load_options");
    DC_CHECK(dc::raw_enum(o.shard.split) == DC_SHARD_NONE, DC_ERR_INVALID_ARGUMENT,
             "dc_delta_load_all loads whole tensors; load shards one tensor at a time");
    const uint64_t n = c->reader->tensors().size();
    std::fill(out, out + n, nullptr);
    std::vector<std::unique_ptr<dc_delta>> loaded(n);
    // Decompress and verify on several threads, a few tensors in flight; place them in order on
    // this thread (the context is single-threaded).
    const unsigned workers = std::max(1u, std::min<unsigned>(std::thread::hardware_concurrency(), 8u));
    const bool verify = verify_of(c, o);
    for (uint64_t start = 0; start < n; start += workers) {
      const uint64_t stop = std::min<uint64_t>(n, start + workers);
      std::vector<dc::PackedTensor> batch(stop - start);
      std::vector<std::exception_ptr> errors(stop - start);
      std::vector<std::thread> threads;
      for (uint64_t i = start; i < stop; ++i)
        threads.emplace_back([&, i] {
          try {
            batch[i - start] = c->reader->load_tensor(i, verify);
          } catch (...) {
            errors[i - start] = std::current_exception();
          }
        });
      for (auto& t : threads) t.join();
      for (auto& e : errors)
        if (e) std::rethrow_exception(e);
      for (uint64_t i = start; i < stop; ++i) loaded[i] = dc::place_delta(ctx, batch[i - start], o.shard, o.stream);
    }
    for (uint64_t i = 0; i < n; ++i) out[i] = loaded[i].release();
    return DC_OK;
  });
}

DC_API void dc_delta_free(dc_delta* delta) { delete delta; }

DC_API dc_status dc_delta_get_info(const dc_delta* d, dc_delta_info* info) {
  return dc::guard("dc_delta_get_info", [&] {
    DC_CHECK(d && info, DC_ERR_INVALID_ARGUMENT, "delta or info is NULL");
    dc_delta_info r{};
    r.struct_size = sizeof r;
    r.rows = d->rows;
    r.cols = d->cols;
    r.kind = d->kind;
    r.device_bytes = d->device_bytes;
    r.split = d->split;
    r.shard_begin = d->split == DC_SHARD_NONE ? 0 : d->shard_begin;
    r.shard_end = d->split == DC_SHARD_NONE ? (d->rows) : d->shard_end;
    r.name = d->name.c_str();
    const uint32_t n = info->struct_size ? std::min<uint32_t>(info->struct_size, sizeof r) : sizeof r;
    std::memcpy(info, &r, n);
    info->struct_size = n;
    return DC_OK;
  });
}

}  // extern "C"

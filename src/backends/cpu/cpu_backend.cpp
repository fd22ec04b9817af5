// The CPU backend's function table: the reference every GPU backend is tested against.
// Each entry converts the C handles to the objects of cpu_types.h and turns exceptions into a
// status + host->set_error message; nothing is thrown across the table.
#include <atomic>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include "backends/cpu/cpu_ops.h"
#include "common/error.h"

namespace dc::cpu {
namespace {

std::atomic<const dc_backend_host*> g_host{nullptr};

void report(const char* message) {
  const dc_backend_host* host = g_host.load();
  if (host && host->set_error) host->set_error(message);
}

// Runs f, mapping failures to a status (and a message naming the operation).
template <class F>
dc_status guarded(const char* what, F&& f) noexcept {
  try {
    f();
    return DC_OK;
  } catch (const std::bad_alloc&) {
    report(format("cpu backend: %s: out of host memory", what).c_str());
    return DC_ERR_OUT_OF_MEMORY;
  } catch (const std::length_error&) {  // a vector larger than max_size(): also "cannot allocate"
    report(format("cpu backend: %s: out of host memory (allocation larger than the address space)", what).c_str());
    return DC_ERR_OUT_OF_MEMORY;
  } catch (const Error& e) {
    report(format("cpu backend: %s: %s", what, e.what()).c_str());
    return e.status();
  } catch (const std::system_error& e) {
    report(format("cpu backend: %s: cannot start worker threads: %s", what, e.what()).c_str());
    return DC_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    report(format("cpu backend: %s: %s", what, e.what()).c_str());
    return DC_ERR_INTERNAL;
  } catch (...) {
    report(format("cpu backend: %s: unknown failure", what).c_str());
    return DC_ERR_INTERNAL;
  }
}

int device_count() { return 1; }

dc_status device_open(void** out_dev, int32_t /*device*/, int32_t num_threads) {
  *out_dev = nullptr;
  return guarded("device_open", [&] {
    unsigned n = num_threads > 0 ? static_cast<unsigned>(num_threads) : std::thread::hardware_concurrency();
    if (n == 0) n = 1;
    *out_dev = new CpuDevice(n);
  });
}

void device_close(void* dev) { delete static_cast<CpuDevice*>(dev); }

dc_status delta_load(void* dev, const dc_tensor_view* view, void* /*stream*/, void** out_delta,
                     uint64_t* out_device_bytes) {
  *out_delta = nullptr;
  return guarded("delta_load", [&] {
    std::unique_ptr<CpuDelta> d = load_delta(*view);
    static_cast<CpuDevice*>(dev)->reserve_for(*d);
    if (out_device_bytes) *out_device_bytes = d->bytes;
    *out_delta = d.release();
  });
}

void delta_free(void* /*dev*/, void* delta) { delete static_cast<CpuDelta*>(delta); }

dc_status workspace_size(void*, const void*, uint64_t, uint64_t* out_bytes) {
  *out_bytes = 0;
  return DC_OK;
}

dc_status apply_op(void* dev, const void* delta, const dc_apply_params* p) {
  return guarded("apply", [&] {
    apply(*static_cast<CpuDevice*>(dev), *static_cast<const CpuDelta*>(delta), *p);
  });
}

dc_status batch_create(void* dev, const void* const* deltas, uint64_t count, void** out_batch) {
  *out_batch = nullptr;
  return guarded("batch_create", [&] {
    auto b = std::make_unique<CpuBatch>();
    b->deltas.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      const auto* d = static_cast<const CpuDelta*>(deltas[i]);
      b->deltas.push_back(d);
      static_cast<CpuDevice*>(dev)->reserve_for(*d);
    }
    if (count) {
      b->rows = b->deltas[0]->rows;
      b->cols = b->deltas[0]->cols;
    }
    *out_batch = b.release();
  });
}

void batch_free(void* /*dev*/, void* batch) { delete static_cast<CpuBatch*>(batch); }

dc_status apply_batched_op(void* dev, const void* batch, const int32_t* row_slot, const dc_apply_params* p) {
  return guarded("apply_batched", [&] {
    apply_batched(*static_cast<CpuDevice*>(dev), *static_cast<const CpuBatch*>(batch), row_slot, *p);
  });
}

dc_status merge_op(void* dev, const void* delta, void* weight, dc_dtype dtype, uint64_t ld, float scale,
                   void* /*stream*/) {
  return guarded("merge", [&] {
    merge(*static_cast<CpuDevice*>(dev), *static_cast<const CpuDelta*>(delta), weight, dtype, ld, scale);
  });
}

const dc_backend_ops kOps = {
    DC_BACKEND_ABI_VERSION, "cpu",      device_count,     device_open, device_close,
    delta_load,             delta_free, workspace_size,   apply_op,    batch_create,
    batch_free,             apply_batched_op, merge_op,
};

}  // namespace
}  // namespace dc::cpu

extern "C" const dc_backend_ops* dc_cpu_backend_ops(const dc_backend_host* host) {
  if (host) dc::cpu::g_host.store(host);
  return &dc::cpu::kOps;
}

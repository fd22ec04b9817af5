// The few raw device-memory services the pool needs beyond the public API: a small buffer for
// the row→slot table that dc_apply_delta_linear_batched reads from device memory, an upload into
// it on the caller's stream, and a device-wide synchronisation before freeing evicted deltas (work
// enqueued earlier may still read them).
//
// The backend contract (src/backends/backend.h) has no memory operations yet, so the CUDA flavour
// talks to the CUDA driver API through dlopen("libcuda.so.1") — the core library still links no
// GPU runtime. Once dc_backend_ops grows mem_alloc / mem_free / copy_to_device / synchronize, this
// file becomes a thin forwarder to them (see docs/POOL.md, "Open items").
#pragma once

#include <cstdint>
#include <memory>

#include "deltacome/deltacome.h"

namespace dc {
namespace pool {

class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  // Learns the device (GPU: its driver context) from a pointer that lives on it, e.g. an apply's
  // x operand. Needed before alloc() on GPU unless a context was current at construction.
  virtual void bind(const void* device_ptr) = 0;
  // `bytes` of device memory (host memory on the CPU backend). Throws dc::Error on failure.
  virtual void* alloc(uint64_t bytes) = 0;
  virtual void free(void* p) noexcept = 0;
  // Host → device copy, ordered on `stream`; `src` may be reused as soon as the call returns.
  virtual void upload(void* dst, const void* src, uint64_t bytes, void* stream) = 0;
  // Blocks until all work on the device is complete (no-op on the CPU backend, which is
  // synchronous).
  virtual void synchronize() = 0;
};

// The flavour for a context's backend. CUDA fails lazily (at the first alloc/upload) when the
// driver library is missing; HIP fails at the first alloc with DC_ERR_UNSUPPORTED.
std::unique_ptr<DeviceMemory> make_device_memory(dc_backend backend);

}  // namespace pool
}  // namespace dc

// Definitions behind the public opaque handles, and the exception → status boundary.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "backends/backend.h"
#include "common/error.h"
#include "format/container.h"

namespace dc {

// Stores `message` as this thread's dc_last_error_message().
void set_last_error(const std::string& message);
void clear_last_error();

// Runs `body` (returning dc_status or void) and converts exceptions into a status + message.
template <class F>
dc_status guard(const char* function, F&& body) noexcept {
  try {
    clear_last_error();
    return body();
  } catch (const Error& e) {
    set_last_error(std::string(function) + ": " + e.what());
    return e.status();
  } catch (const std::bad_alloc&) {
    set_last_error(std::string(function) + ": out of memory");
    return DC_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_last_error(std::string(function) + ": internal error: " + e.what());
    return DC_ERR_INTERNAL;
  } catch (...) {
    set_last_error(std::string(function) + ": internal error");
    return DC_ERR_INTERNAL;
  }
}

// Copies a caller's versioned options struct over defaults: the first min(sizes) bytes.
template <class T>
T read_options(const T* in, const T& defaults, const char* what) {
  T out = defaults;
  if (!in) return out;
  DC_CHECK(in->struct_size >= 8 && in->struct_size <= 65536, DC_ERR_INVALID_ARGUMENT,
           "%s.struct_size is %u: initialise the struct with its dc_*_init function", what,
           (unsigned)in->struct_size);
  std::memcpy(&out, in, std::min<size_t>(in->struct_size, sizeof(T)));
  out.struct_size = sizeof(T);
  return out;
}

// The integer a caller stored in an enum field, read without loading the enum (a C caller may
// store any int; loading an out-of-range C++ enum is undefined behaviour).
template <class E>
inline int64_t raw_enum(const E& e) {
  std::underlying_type_t<E> v;
  std::memcpy(&v, &e, sizeof v);
  return (int64_t)v;
}
inline bool valid_dtype(const dc_dtype& t) {
  const int64_t v = raw_enum(t);
  return v >= DC_DTYPE_F32 && v <= DC_DTYPE_BF16;
}

// The backend table for `b` (AUTO not allowed), or nullptr with `why` set.
const dc_backend_ops* backend_ops(dc_backend b, std::string* why);
const dc_backend_host* backend_host();

// A backend device, shared by the context and every delta loaded into it (so freeing in any order
// is safe).
struct Device {
  const dc_backend_ops* ops = nullptr;
  dc_backend kind = DC_BACKEND_CPU;
  void* handle = nullptr;
  ~Device() {
    if (handle) ops->device_close(handle);
  }
};

// Places an already-decoded tensor (whole, or the shard `shard`) into `ctx` (GPU: uploaded on
// `stream`): what dc_delta_load does after reading the container. Uses the context. Throws.
struct PackedTensor;
std::unique_ptr<dc_delta> place_delta(dc_context* ctx, const PackedTensor& t, const dc_shard& shard, void* stream);

// Throws dc::Error with the backend's message if `s` is not DC_OK.
void check_backend(dc_status s, const char* what);

}  // namespace dc

struct dc_container {
  std::unique_ptr<dc::ContainerReader> reader;
  bool trusted = false;
};

struct dc_context {
  std::shared_ptr<dc::Device> device;
};

struct dc_delta {
  std::shared_ptr<dc::Device> device;
  void* handle = nullptr;
  std::string name;
  uint64_t rows = 0, cols = 0;             // the full layer's shape
  uint64_t view_rows = 0, view_cols = 0;   // what apply sees (the shard's shape)
  dc_tensor_kind kind = DC_KIND_LOWRANK;
  dc_shard_split split = DC_SHARD_NONE;
  uint64_t shard_begin = 0, shard_end = 0;
  uint64_t device_bytes = 0;
  ~dc_delta() {
    if (handle) device->ops->delta_free(device->handle, handle);
  }
};

struct dc_delta_batch {
  std::shared_ptr<dc::Device> device;
  void* handle = nullptr;
  uint64_t rows = 0, cols = 0, count = 0;
  ~dc_delta_batch() {
    if (handle) device->ops->batch_free(device->handle, handle);
  }
};

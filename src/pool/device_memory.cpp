// DeviceMemory flavours: host memory for the CPU backend, the CUDA driver API (loaded at run time)
// for CUDA. See device_memory.h for why the driver API and not the backend table.
#include "pool/device_memory.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "common/error.h"

namespace dc {
namespace pool {
namespace {

// ---- CPU: everything is host memory and synchronous ---------------------------------------------
class HostMemory final : public DeviceMemory {
 public:
  void bind(const void*) override {}
  void* alloc(uint64_t bytes) override {
    void* p = std::malloc(bytes ? bytes : 1);
    DC_CHECK(p, DC_ERR_OUT_OF_MEMORY, "pool: %llu bytes for the row->slot table", (unsigned long long)bytes);
    return p;
  }
  void free(void* p) noexcept override { std::free(p); }
  void upload(void* dst, const void* src, uint64_t bytes, void*) override { std::memcpy(dst, src, bytes); }
  void synchronize() override {}
};

// ---- HIP: not wired yet ---------------------------------------------------------------------------
class UnsupportedMemory final : public DeviceMemory {
 public:
  void bind(const void*) override {}
  void* alloc(uint64_t) override {
    fail(DC_ERR_UNSUPPORTED,
         "dc_pool_apply_batched on HIP needs device memory operations in the backend table (not yet "
         "available); acquire the deltas and call dc_apply_delta_linear_batched with your own row table");
  }
  void free(void*) noexcept override {}
  void upload(void*, const void*, uint64_t, void*) override { alloc(0); }
  // Nothing to call without a runtime: the HIP backend's delta_free must not race in-flight work.
  void synchronize() override {}
};

// ---- CUDA through the driver API --------------------------------------------------------------------
// Driver types, as in cuda.h (stable ABI: these entry points exist since CUDA 4.0).
using CUresult = int;
using CUcontext = void*;
using CUstream = void*;
using CUdeviceptr = unsigned long long;
constexpr int kPointerAttributeContext = 1;  // CU_POINTER_ATTRIBUTE_CONTEXT

struct Driver {
  CUresult (*cuInit)(unsigned) = nullptr;
  CUresult (*cuCtxGetCurrent)(CUcontext*) = nullptr;
  CUresult (*cuCtxPushCurrent)(CUcontext) = nullptr;
  CUresult (*cuCtxPopCurrent)(CUcontext*) = nullptr;
  CUresult (*cuCtxSynchronize)() = nullptr;
  CUresult (*cuMemAlloc)(CUdeviceptr*, size_t) = nullptr;
  CUresult (*cuMemFree)(CUdeviceptr) = nullptr;
  CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr, const void*, size_t, CUstream) = nullptr;
  CUresult (*cuPointerGetAttribute)(void*, int, CUdeviceptr) = nullptr;
  CUresult (*cuGetErrorString)(CUresult, const char**) = nullptr;
  std::string why;  // non-empty when the driver could not be loaded
};

template <class F>
bool load_symbol(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  return fn != nullptr;
}

const Driver& driver() {
  static Driver d;
  static std::once_flag once;
  std::call_once(once, [] {
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = dlerror();
      d.why = std::string("libcuda.so.1 could not be loaded: ") + (e ? e : "unknown error");
      return;
    }
    bool ok = load_symbol(lib, "cuInit", d.cuInit) && load_symbol(lib, "cuCtxGetCurrent", d.cuCtxGetCurrent) &&
              load_symbol(lib, "cuCtxPushCurrent_v2", d.cuCtxPushCurrent) &&
              load_symbol(lib, "cuCtxPopCurrent_v2", d.cuCtxPopCurrent) &&
              load_symbol(lib, "cuCtxSynchronize", d.cuCtxSynchronize) &&
              load_symbol(lib, "cuMemAlloc_v2", d.cuMemAlloc) && load_symbol(lib, "cuMemFree_v2", d.cuMemFree) &&
              load_symbol(lib, "cuMemcpyHtoDAsync_v2", d.cuMemcpyHtoDAsync) &&
              load_symbol(lib, "cuPointerGetAttribute", d.cuPointerGetAttribute) &&
              load_symbol(lib, "cuGetErrorString", d.cuGetErrorString);
    if (!ok) {
      d.why = "libcuda.so.1 lacks a driver entry point the pool needs";
      return;
    }
    if (d.cuInit(0) != 0) d.why = "cuInit failed";
  });
  return d;
}

class CudaMemory final : public DeviceMemory {
 public:
  CudaMemory() {
    const Driver& d = driver();
    // The CUDA backend opens its device on the thread that creates the context, which makes that
    // device's primary context current there; the pool is usually created on the same thread.
    if (d.why.empty()) d.cuCtxGetCurrent(&ctx_);
  }

  void bind(const void* device_ptr) override {
    const Driver& d = ready();
    CUcontext c = nullptr;
    if (device_ptr &&
        d.cuPointerGetAttribute(&c, kPointerAttributeContext, reinterpret_cast<CUdeviceptr>(device_ptr)) == 0 && c)
      ctx_ = c;
  }

  void* alloc(uint64_t bytes) override {
    const Driver& d = ready();
    Scope s(*this);
    CUdeviceptr p = 0;
    check(d.cuMemAlloc(&p, bytes ? bytes : 1), "cuMemAlloc of the row->slot table");
    return reinterpret_cast<void*>(p);
  }

  void free(void* p) noexcept override {
    if (!p || !driver().why.empty() || !ctx_) return;
    const Driver& d = driver();
    if (d.cuCtxPushCurrent(ctx_) != 0) return;
    d.cuMemFree(reinterpret_cast<CUdeviceptr>(p));
    CUcontext ignored = nullptr;
    d.cuCtxPopCurrent(&ignored);
  }

  void upload(void* dst, const void* src, uint64_t bytes, void* stream) override {
    const Driver& d = ready();
    Scope s(*this);
    check(d.cuMemcpyHtoDAsync(reinterpret_cast<CUdeviceptr>(dst), src, bytes, stream),
          "uploading the row->slot table");
  }

  void synchronize() override {
    const Driver& d = driver();
    if (!d.why.empty()) return;  // no driver: nothing can be in flight through it
    if (!ctx_) d.cuCtxGetCurrent(&ctx_);
    if (!ctx_) return;  // no device work was ever seen by this pool or thread
    Scope s(*this);
    check(d.cuCtxSynchronize(), "synchronising the device before freeing evicted deltas");
  }

 private:
  struct Scope {  // makes the bound context current for one driver call sequence
    explicit Scope(CudaMemory& m) {
      DC_CHECK(m.ctx_, DC_ERR_BACKEND,
               "pool: no CUDA context known (create the pool on the thread that created the dc_context, "
               "or pass device pointers to dc_pool_apply_batched)");
      DC_CHECK(driver().cuCtxPushCurrent(m.ctx_) == 0, DC_ERR_BACKEND, "pool: cuCtxPushCurrent failed");
    }
    ~Scope() {
      CUcontext ignored = nullptr;
      driver().cuCtxPopCurrent(&ignored);
    }
  };

  static const Driver& ready() {
    const Driver& d = driver();
    DC_CHECK(d.why.empty(), DC_ERR_BACKEND, "pool: %s", d.why.c_str());
    return d;
  }
  static void check(CUresult r, const char* what) {
    if (r == 0) return;
    const char* s = nullptr;
    driver().cuGetErrorString(r, &s);
    fail(r == 2 ? DC_ERR_OUT_OF_MEMORY : DC_ERR_BACKEND,  // 2 = CUDA_ERROR_OUT_OF_MEMORY
         format("pool: %s: CUDA driver error %d (%s)", what, r, s ? s : "unknown"));
  }

  CUcontext ctx_ = nullptr;
};

}  // namespace

std::unique_ptr<DeviceMemory> make_device_memory(dc_backend backend) {
  switch (backend) {
    case DC_BACKEND_CUDA: return std::make_unique<CudaMemory>();
    case DC_BACKEND_HIP: return std::make_unique<UnsupportedMemory>();
    default: return std::make_unique<HostMemory>();
  }
}

}  // namespace pool
}  // namespace dc

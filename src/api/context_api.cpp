// dc_context_*: choosing a backend and device.
#include "api/api_internal.h"

namespace {

dc_context_options default_context_options() {
  dc_context_options o{};
  o.struct_size = sizeof o;
  o.backend = DC_BACKEND_AUTO;
  o.device = 0;
  o.num_threads = 0;
  return o;
}

bool usable(dc_backend b) {
  const dc_backend_ops* ops = dc::backend_ops(b, nullptr);
  return ops && ops->device_count() > 0;
}

}  // namespace

extern "C" {

DC_API int dc_backend_available(dc_backend backend) {
  const int64_t b = dc::raw_enum(backend);
  if (b == DC_BACKEND_AUTO) return 1;
  if (b != DC_BACKEND_CPU && b != DC_BACKEND_CUDA && b != DC_BACKEND_HIP) return 0;
  try {
    return usable(backend) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

DC_API const char* dc_backend_name(dc_backend backend) {
  switch (dc::raw_enum(backend)) {
    case DC_BACKEND_AUTO: return "auto";
    case DC_BACKEND_CPU: return "cpu";
    case DC_BACKEND_CUDA: return "cuda";
    case DC_BACKEND_HIP: return "hip";
  }
  return "unknown";
}

DC_API void dc_context_options_init(dc_context_options* opts) {
  if (opts) *opts = default_context_options();
}

DC_API dc_status dc_context_create(dc_context** out, const dc_context_options* opts) {
  if (out) *out = nullptr;
  return dc::guard("dc_context_create", [&] {
    DC_CHECK(out, DC_ERR_INVALID_ARGUMENT, "out is NULL");
    const dc_context_options o = dc::read_options(opts, default_context_options(), "dc_context_options");
    DC_CHECK(o.num_threads >= 0 && o.num_threads <= 4096, DC_ERR_INVALID_ARGUMENT,
             "num_threads %d out of range [0, 4096]", o.num_threads);
    const int64_t requested = dc::raw_enum(o.backend);
    DC_CHECK(requested >= DC_BACKEND_AUTO && requested <= DC_BACKEND_HIP, DC_ERR_INVALID_ARGUMENT,
             "backend %lld is not a dc_backend value", (long long)requested);
    dc_backend b = o.backend;
    if (b == DC_BACKEND_AUTO) {
      b = usable(DC_BACKEND_CUDA) ? DC_BACKEND_CUDA : usable(DC_BACKEND_HIP) ? DC_BACKEND_HIP : DC_BACKEND_CPU;
    }
    std::string why;
    const dc_backend_ops* ops = dc::backend_ops(b, &why);
    DC_CHECK(ops, DC_ERR_NOT_FOUND, "backend '%s' is not available: %s", dc_backend_name(b), why.c_str());
    const int n = ops->device_count();
    DC_CHECK(o.device >= 0 && o.device < n, DC_ERR_NOT_FOUND, "backend '%s' has %d device(s); device %d requested",
             dc_backend_name(b), n, o.device);
    auto dev = std::make_shared<dc::Device>();
    dev->ops = ops;
    dev->kind = b;
    dc::check_backend(ops->device_open(&dev->handle, o.device, o.num_threads), "opening the device");
    auto ctx = std::make_unique<dc_context>();
    ctx->device = std::move(dev);
    *out = ctx.release();
    return DC_OK;
  });
}

DC_API void dc_context_destroy(dc_context* ctx) { delete ctx; }

DC_API dc_backend dc_context_backend(const dc_context* ctx) {
  return ctx ? ctx->device->kind : DC_BACKEND_AUTO;
}

}  // extern "C"

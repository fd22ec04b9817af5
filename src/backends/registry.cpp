// Finds backends: the CPU backend is linked in; CUDA and HIP are run-time modules
// (libdeltacome-cuda.so, libdeltacome-hip.so) searched in $DELTACOME_BACKEND_PATH, then next to the
// library that holds this code, then by the dynamic linker's default search. A host without GPU
// runtimes therefore links and runs the core library unchanged.
#include <dlfcn.h>

#include <mutex>
#include <string>

#include "api/api_internal.h"

namespace dc {
namespace {

void host_set_error(const char* message) { set_last_error(message ? message : "backend error"); }

const dc_backend_host kHost = {DC_BACKEND_ABI_VERSION, host_set_error};

std::string library_dir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&library_dir), &info) && info.dli_fname) {
    std::string p = info.dli_fname;
    auto slash = p.rfind('/');
    if (slash != std::string::npos) return p.substr(0, slash);
  }
  return {};
}

struct ModuleSlot {
  std::once_flag once;
  const dc_backend_ops* ops = nullptr;
  std::string why;
};

void load_module(ModuleSlot& slot, const char* file) {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("DELTACOME_BACKEND_PATH")) candidates.push_back(std::string(env) + "/" + file);
  std::string dir = library_dir();
  if (!dir.empty()) candidates.push_back(dir + "/" + file);
  candidates.push_back(file);
  std::string errors;
  for (const auto& path : candidates) {
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = dlerror();
      errors += std::string("\n  ") + (e ? e : path.c_str());
      continue;
    }
    auto get = reinterpret_cast<dc_backend_module_get_fn>(dlsym(lib, DC_BACKEND_MODULE_SYMBOL));
    if (!get) {
      errors += "\n  " + path + ": no symbol " DC_BACKEND_MODULE_SYMBOL;
      dlclose(lib);
      continue;
    }
    const dc_backend_ops* ops = get(DC_BACKEND_ABI_VERSION, &kHost);
    if (!ops || ops->abi_version != DC_BACKEND_ABI_VERSION) {
      errors += "\n  " + path + ": backend ABI version mismatch";
      dlclose(lib);
      continue;
    }
    slot.ops = ops;  // the module stays loaded for the life of the process
    return;
  }
  slot.why = std::string("backend module ") + file + " could not be loaded:" + errors;
}

}  // namespace

const dc_backend_host* backend_host() { return &kHost; }

const dc_backend_ops* backend_ops(dc_backend b, std::string* why) {
  static ModuleSlot cuda, hip;
  switch (b) {
    case DC_BACKEND_CPU: return dc_cpu_backend_ops(&kHost);
    case DC_BACKEND_CUDA:
      std::call_once(cuda.once, [] { load_module(cuda, "libdeltacome-cuda.so"); });
      if (!cuda.ops && why) *why = cuda.why;
      return cuda.ops;
    case DC_BACKEND_HIP:
      std::call_once(hip.once, [] { load_module(hip, "libdeltacome-hip.so"); });
      if (!hip.ops && why) *why = hip.why;
      return hip.ops;
    default:
      if (why) *why = "unknown backend";
      return nullptr;
  }
}

void check_backend(dc_status s, const char* what) {
  if (s == DC_OK) return;
  // The backend already stored its message for this thread; keep it as the error's text.
  std::string msg = dc_last_error_message();
  throw Error(s, std::string(what) + ": " + (msg.empty() ? dc_status_string(s) : msg));
}

}  // namespace dc

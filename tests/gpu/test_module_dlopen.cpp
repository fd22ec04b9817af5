// Loads the built backend module the way the core library does (dlopen + dlsym of
// DC_BACKEND_MODULE_SYMBOL) and checks the table it returns. Needs no GPU: dc_backend_module_get
// touches no device. Usage: dc_test_module_dlopen /path/to/libdeltacome-cuda.so expected-name
#include <dlfcn.h>

#include <cstdio>
#include <cstring>

#include "backends/backend.h"

static void on_error(const char*) {}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODULE NAME\n", argv[0]);
    return 2;
  }
  void* h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    fprintf(stderr, "dlopen %s: %s\n", argv[1], dlerror());
    return 1;
  }
  auto get = reinterpret_cast<dc_backend_module_get_fn>(dlsym(h, DC_BACKEND_MODULE_SYMBOL));
  if (!get) {
    fprintf(stderr, "%s: no symbol %s (%s)\n", argv[1], DC_BACKEND_MODULE_SYMBOL, dlerror());
    return 1;
  }
  const dc_backend_host host = {DC_BACKEND_ABI_VERSION, on_error};
  const dc_backend_ops* ops = get(DC_BACKEND_ABI_VERSION, &host);
  if (!ops || ops->abi_version != DC_BACKEND_ABI_VERSION || strcmp(ops->name, argv[2]) != 0 || !ops->apply ||
      !ops->apply_batched || !ops->merge || !ops->delta_load) {
    fprintf(stderr, "%s: bad ops table\n", argv[1]);
    return 1;
  }
  if (get(DC_BACKEND_ABI_VERSION + 1, &host) != nullptr) {
    fprintf(stderr, "%s: accepted a wrong ABI version\n", argv[1]);
    return 1;
  }
  printf("%s: %s exported, backend '%s', ABI %u\n", argv[1], DC_BACKEND_MODULE_SYMBOL, ops->name, ops->abi_version);
  return 0;
}

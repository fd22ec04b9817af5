// Keeps the module's one export in the shared object: dc_backend_module_get lives in the static
// implementation library (backend_ops.cu); this reference makes the linker pull it in.
#include "backends/backend.h"

extern "C" const dc_backend_ops* dc_backend_module_get(uint32_t abi_version, const dc_backend_host* host);
namespace {
__attribute__((used)) const void* const dc_backend_module_anchor =
    reinterpret_cast<const void*>(&dc_backend_module_get);
}

// Version queries, status names and the thread-local last-error message.
#include <string>

#include "api/api_internal.h"

#ifndef DC_VERSION_STRING
#define DC_VERSION_STRING "0.0.0"
#endif

namespace dc {
namespace {
}  // namespace
thread_local std::string t_last_error;
namespace {
}
void set_last_error(const std::string& message) { t_last_error = message; }
void clear_last_error() { t_last_error.clear(); }
}  // namespace dc

extern "C" {

DC_API uint32_t dc_version(void) { return DC_VERSION_NUMBER; }
DC_API const char* dc_version_string(void) { return DC_VERSION_STRING; }

DC_API const char* dc_status_string(dc_status status) {
  switch (status) {
    case DC_OK: return "DC_OK: success";
    case DC_ERR_INVALID_ARGUMENT: return "DC_ERR_INVALID_ARGUMENT: invalid argument";
    case DC_ERR_IO: return "DC_ERR_IO: input/output error";
    case DC_ERR_BAD_MAGIC: return "DC_ERR_BAD_MAGIC: not a deltacome container";
    case DC_ERR_UNSUPPORTED_VERSION: return "DC_ERR_UNSUPPORTED_VERSION: unsupported format version or feature";
    case DC_ERR_TRUNCATED: return "DC_ERR_TRUNCATED: file is truncated";
    case DC_ERR_CORRUPT: return "DC_ERR_CORRUPT: file is corrupt";
    case DC_ERR_CHECKSUM: return "DC_ERR_CHECKSUM: checksum mismatch";
    case DC_ERR_OVERFLOW: return "DC_ERR_OVERFLOW: size overflows";
    case DC_ERR_LIMIT: return "DC_ERR_LIMIT: size exceeds a safety limit";
    case DC_ERR_NOT_FOUND: return "DC_ERR_NOT_FOUND: not found";
    case DC_ERR_OUT_OF_MEMORY: return "DC_ERR_OUT_OF_MEMORY: out of memory";
    case DC_ERR_BASE_MISMATCH: return "DC_ERR_BASE_MISMATCH: base model does not match the delta";
    case DC_ERR_UNSUPPORTED: return "DC_ERR_UNSUPPORTED: not supported";
    case DC_ERR_BACKEND: return "DC_ERR_BACKEND: GPU runtime error";
    case DC_ERR_SHAPE_MISMATCH: return "DC_ERR_SHAPE_MISMATCH: shapes do not match";
    case DC_ERR_DUPLICATE: return "DC_ERR_DUPLICATE: duplicate name";
    case DC_ERR_OVERLAP: return "DC_ERR_OVERLAP: segments overlap, leave holes or are misaligned";
    case DC_ERR_DECOMPRESS: return "DC_ERR_DECOMPRESS: invalid compressed data";
    case DC_ERR_BUDGET: return "DC_ERR_BUDGET: memory budget exceeded";
    case DC_ERR_BUSY: return "DC_ERR_BUSY: object in use";
    case DC_ERR_INTERNAL: return "DC_ERR_INTERNAL: internal error";
  }
  return "unknown status";
}

DC_API const char* dc_last_error_message(void) { return dc::t_last_error.c_str(); }

}  // extern "C"

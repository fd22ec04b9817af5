// Internal error handling: code throws dc::Error(status, message); the API layer (src/api) catches it
// at the C boundary, stores the message for dc_last_error_message() and returns the status.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "deltacome/dc_errors.h"

namespace dc {

class Error : public std::runtime_error {
 public:
  Error(dc_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  dc_status status() const noexcept { return status_; }

 private:
  dc_status status_;
};

// printf-style message builder.
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
inline std::string format(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

[[noreturn]] inline void fail(dc_status status, const std::string& message) { throw Error(status, message); }

}  // namespace dc

// DC_CHECK(cond, status, fmt, ...): throw dc::Error(status, formatted message) unless cond holds.
#define DC_CHECK(cond, status, ...)                             \
  do {                                                          \
    if (!(cond)) ::dc::fail((status), ::dc::format(__VA_ARGS__)); \
  } while (0)

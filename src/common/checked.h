// Overflow-checked size arithmetic for every size read from an untrusted file.
#pragma once

#include <cstdint>
#include <limits>

#include "common/error.h"

namespace dc {

inline uint64_t checked_add(uint64_t a, uint64_t b, const char* what) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) fail(DC_ERR_OVERFLOW, format("%s: size overflows 64 bits", what));
  return r;
}

inline uint64_t checked_mul(uint64_t a, uint64_t b, const char* what) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail(DC_ERR_OVERFLOW, format("%s: size overflows 64 bits", what));
  return r;
}

// True when [offset, offset + len) lies inside [0, size) — written so it cannot overflow.
inline bool range_within(uint64_t offset, uint64_t len, uint64_t size) {
  return offset <= size && len <= size - offset;
}

// Rounds v up to a multiple of the power of two `align`, checking overflow.
inline uint64_t align_up(uint64_t v, uint64_t align, const char* what) {
  return checked_add(v, align - 1, what) & ~(align - 1);
}

}  // namespace dc

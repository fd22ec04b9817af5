// Element loads and stores for the three activation/weight dtypes (f32, f16, bf16), and whole-row
// conversion to fp32. The CPU backend computes in fp32 and converts once on the way in and once on
// the way out, so every y element is rounded to its dtype exactly once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/half.h"
#include "deltacome/deltacome.h"

namespace dc::cpu {

inline size_t dtype_size(dc_dtype t) { return t == DC_DTYPE_F32 ? 4 : 2; }

// Element i of an array of dtype `t`.
inline float load_elem(const void* base, uint64_t i, dc_dtype t) {
  switch (t) {
    case DC_DTYPE_F32: return static_cast<const float*>(base)[i];
    case DC_DTYPE_F16: return half_to_float(static_cast<const uint16_t*>(base)[i]);
    default: return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
  }
}

inline void store_elem(void* base, uint64_t i, dc_dtype t, float v) {
  switch (t) {
    case DC_DTYPE_F32: static_cast<float*>(base)[i] = v; break;
    case DC_DTYPE_F16: static_cast<uint16_t*>(base)[i] = float_to_half(v); break;
    default: static_cast<uint16_t*>(base)[i] = float_to_bf16(v); break;
  }
}

// Pointer to element i (for row strides counted in elements).
inline const void* elem_ptr(const void* base, uint64_t i, dc_dtype t) {
  return static_cast<const uint8_t*>(base) + i * dtype_size(t);
}
inline void* elem_ptr(void* base, uint64_t i, dc_dtype t) {
  return static_cast<uint8_t*>(base) + i * dtype_size(t);
}

// out[0..n) = the n elements at `src` as fp32. The switch is hoisted out of the loop.
inline void row_to_f32(const void* src, dc_dtype t, uint64_t n, float* out) {
  switch (t) {
    case DC_DTYPE_F32: std::memcpy(out, src, n * sizeof(float)); break;
    case DC_DTYPE_F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (uint64_t i = 0; i < n; ++i) out[i] = half_to_float(s[i]);
      break;
    }
    default: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (uint64_t i = 0; i < n; ++i) out[i] = bf16_to_float(s[i]);
      break;
    }
  }
}

}  // namespace dc::cpu

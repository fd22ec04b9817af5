// Shared by every kernel file of the CUDA and HIP builds: vendor selection, element conversions,
// the device-side delta descriptor and logical-warp reductions.
//
// Warp width. Kernels are written for a *logical* group of G threads (G = 32 or 64) that
// cooperates on one row. When G equals the hardware width (CUDA G=32, CDNA G=64, RDNA G=32) the
// reduction is pure shuffles; when G is wider than the hardware warp (G=64 on NVIDIA) the
// physical warps of a group combine through shared memory. The host picks G from the device's
// warp size, and the tests force G=64 on NVIDIA so the wave64 indexing runs on the H100.
#pragma once

#include <stdint.h>

#if defined(DC_USE_HIP)
#  include "vendors/hip.h"
#else
#  include "vendors/cuda.h"
#endif

#include "backends/backend.h"
#include "common/pack_layout.h"

namespace dcg {

constexpr int kThreads = 256;      // threads per block of the row kernels
constexpr int kMaxTokens = 64;     // rows of x per fused apply (larger m: workspace path/chunks)

// ---- element conversions (raw 16-bit storage, no vendor bf16 type needed) -------------------------
__device__ __forceinline__ float f16_to_f32(uint16_t u) { return __half2float(__ushort_as_half(u)); }
__device__ __forceinline__ uint16_t f32_to_f16(float f) { return __half_as_ushort(__float2half_rn(f)); }
__device__ __forceinline__ float bf16_to_f32(uint16_t u) { return __uint_as_float((uint32_t)u << 16); }
__device__ __forceinline__ uint16_t f32_to_bf16(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                           // round to nearest even
  return (uint16_t)(u >> 16);
}

// Type tags for templated activation/weight element types.
struct F32 { using T = float; static constexpr int id = DC_DTYPE_F32; };
struct F16 { using T = uint16_t; static constexpr int id = DC_DTYPE_F16; };
struct BF16 { using T = uint16_t; static constexpr int id = DC_DTYPE_BF16; };

template <class Tag> __device__ __forceinline__ float to_f32(typename Tag::T v);
template <> __device__ __forceinline__ float to_f32<F32>(float v) { return v; }
template <> __device__ __forceinline__ float to_f32<F16>(uint16_t v) { return f16_to_f32(v); }
template <> __device__ __forceinline__ float to_f32<BF16>(uint16_t v) { return bf16_to_f32(v); }

// 64-bit min/max in device code (std::min/max are host functions without relaxed constexpr).
__device__ __forceinline__ uint64_t umin64(uint64_t a, uint64_t b) { return a < b ? a : b; }
__device__ __forceinline__ uint64_t umax64(uint64_t a, uint64_t b) { return a > b ? a : b; }

__device__ __forceinline__ float load_any(const void* p, uint64_t i, int dtype) {
  switch (dtype) {
    case DC_DTYPE_F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DC_DTYPE_BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}
__device__ __forceinline__ void store_any(void* p, uint64_t i, int dtype, float v) {
  switch (dtype) {
    case DC_DTYPE_F16: static_cast<uint16_t*>(p)[i] = f32_to_f16(v); break;
    case DC_DTYPE_BF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

// y[i] = v, or y[i] += v where the call accumulates (y's old value read in y's dtype, the sum
// rounded once).
__device__ __forceinline__ void store_or_add(void* y, uint64_t i, int dtype, bool accumulate, float v) {
  store_any(y, i, dtype, (accumulate ? load_any(y, i, dtype) : 0.f) + v);
}

// ---- device-side descriptors (plain data, passed by value or kept in a device table) -------------
struct BandDesc {
  uint32_t bits, r0, r1, group_size;
  uint32_t v_row_words, v_row_groups, u_row_words, u_row_groups;
  uint32_t t_off;  // first column of this band in t (bands padded to 32 columns, zero-filled)
  const uint32_t* v_codes;
  const dc_qparam* v_qp;
  const uint32_t* u_codes;
  const dc_qparam* u_qp;
};

struct DeltaDesc {
  uint64_t rows, cols, v_len;
  int32_t kind, dtype;
  uint32_t rank, n_bands, v_col_offset, sign_row_words;
  uint32_t t_stride;  // Σ over bands of round_up(band rank, 32): columns of t
  float bitdelta_scale;
  const float* sigma;
  const uint32_t* perm;   // null: V position p reads x[p - v_col_offset]
  const uint32_t* signs;
  const void* dense;
  BandDesc bands[DC_MAX_BANDS];
};

// ---- logical-warp reduction ----------------------------------------------------------------------
// Sums v over the G threads of a group. `red` is per-block shared scratch of kThreads floats, used
// only when G is wider than the hardware warp; then every thread of the block must call this the
// same number of times (the kernels keep inactive groups running through their reductions).
template <int G>
__device__ __forceinline__ float group_sum(float v, float* red) {
  constexpr int P = G < DC_PHYS_WARP ? G : DC_PHYS_WARP;
#pragma unroll
  for (int off = P / 2; off > 0; off >>= 1) v += dc_shfl_xor(v, off, P);
  if constexpr (G > P) {
    // G/P hardware warps form one group: combine their partial sums through shared memory.
    const int t = threadIdx.x;
    __syncthreads();
    if ((t % P) == 0) red[t / P] = v;
    __syncthreads();
    const int first = (t / G) * (G / P);
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < G / P; ++i) s += red[first + i];
    v = s;
  }
  return v;
}

}  // namespace dcg

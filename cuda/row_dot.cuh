// Device building blocks: decoding one block of 32 packed codes (pack_layout.h) and the dot
// product of one packed row with up to MT activation rows, dequantizing in registers.
//
// Dequantization is folded per block: a block lies inside one quantization group (group sizes are
// multiples of 32), so Σ_i s·(c_i − z)·x_i = s·(Σ_i c_i·x_i − z·Σ_i x_i): two FMAs per code and
// token, and the group's scale and zero are applied once per block.
#pragma once

#include "common.cuh"

namespace dcg {

// Where a packed row's position p reads its activation: x[p - off] (no permutation), or
// x[perm[p]] (act-order / column shard), 0 outside [0, cols) or past v_len.
struct XMap {
  const uint32_t* perm;
  uint64_t off, cols, len;
  bool vec;  // rows of x are 16-byte aligned: full blocks load with 16-byte vectors
};

// The words of block `b` of a row (BITS words; 16-byte loads where the layout aligns them).
template <int BITS>
struct BlockWords {
  uint32_t w[BITS];
};
template <int BITS>
__device__ __forceinline__ void load_block(const uint32_t* __restrict__ row, uint64_t b, BlockWords<BITS>& out) {
  const uint32_t* w = row + b * BITS;
  if constexpr (BITS == 2) {
    const uint2 v = *reinterpret_cast<const uint2*>(w);
    out.w[0] = v.x; out.w[1] = v.y;
  } else if constexpr (BITS % 4 == 0) {
#pragma unroll
    for (int q = 0; q < BITS / 4; ++q) {
      const uint4 v = reinterpret_cast<const uint4*>(w)[q];
      out.w[4 * q] = v.x; out.w[4 * q + 1] = v.y; out.w[4 * q + 2] = v.z; out.w[4 * q + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int q = 0; q < BITS; ++q) out.w[q] = w[q];
  }
}

// The 32 codes of a block as floats (BITS = 16: the fp16 values themselves).
template <int BITS>
__device__ __forceinline__ void decode_block(const BlockWords<BITS>& bw, float c[32]) {
  const uint32_t* wd = bw.w;
  if constexpr (BITS == 1) {
#pragma unroll
    for (int i = 0; i < 32; ++i) c[i] = (float)((wd[0] >> i) & 1u);
  } else if constexpr (BITS == 3) {
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const uint32_t lo = ((i < 16 ? wd[0] : wd[1]) >> (2 * (i % 16))) & 3u;
      c[i] = (float)(lo | (((wd[2] >> i) & 1u) << 2));
    }
  } else if constexpr (BITS == 16) {
#pragma unroll
    for (int i = 0; i < 32; ++i) c[i] = f16_to_f32((uint16_t)(wd[i / 2] >> (16 * (i % 2))));
  } else {
    constexpr int per = 32 / BITS;
    constexpr uint32_t mask = (1u << BITS) - 1u;
#pragma unroll
    for (int i = 0; i < 32; ++i) c[i] = (float)((wd[i / per] >> (BITS * (i % per))) & mask);
  }
}

// The 32 activations of one row of x for positions p0..p0+31.
template <class XT>
__device__ __forceinline__ void load_x32(const typename XT::T* __restrict__ xrow, const XMap& map, uint64_t p0,
                                         float xv[32]) {
  if (map.perm == nullptr && map.off == 0 && p0 + 32 <= map.cols) {
    if (map.vec) {  // 64 (16-bit) or 128 (fp32) contiguous bytes as 16-byte vectors
      if constexpr (sizeof(typename XT::T) == 2) {
        const uint4* v = reinterpret_cast<const uint4*>(xrow + p0);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const uint4 u = v[q];
          const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
          for (int i = 0; i < 8; ++i) xv[8 * q + i] = to_f32<XT>((uint16_t)(w[i / 2] >> (16 * (i % 2))));
        }
      } else {
        const float4* v = reinterpret_cast<const float4*>(xrow + p0);
#pragma unroll
        for (int q = 0; q < 8; ++q) {
          const float4 u = v[q];
          xv[4 * q] = u.x; xv[4 * q + 1] = u.y; xv[4 * q + 2] = u.z; xv[4 * q + 3] = u.w;
        }
      }
      return;
    }
#pragma unroll
    for (int i = 0; i < 32; ++i) xv[i] = to_f32<XT>(xrow[p0 + i]);
  } else {  // shard / act-order / tail block
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const uint64_t p = p0 + i;
      uint64_t j = ~0ull;
      if (p < map.len) j = map.perm ? (uint64_t)map.perm[p] : p - map.off;  // p < off wraps: j ≥ cols
      xv[i] = j < map.cols ? to_f32<XT>(xrow[j]) : 0.f;
    }
  }
}

// acc[m] += Σ_p value(p)·x_m[map(p)] for the packed row `row` (nblocks blocks), the group's lanes
// striding over blocks. value = s·(code − z) from `qp` (BITS 2..8); the fp16 value (BITS 16); the
// raw bit (BITS 1: the caller turns Σ bit·x into Σ (2·bit − 1)·x with the returned Σ x).
template <int BITS, int MT, class XT, int G>
__device__ __forceinline__ void packed_row_dot(const uint32_t* __restrict__ row, const dc_qparam* __restrict__ qp,
                                               uint32_t group_blocks, uint64_t nblocks,
                                               const typename XT::T* __restrict__ x, uint64_t ldx, int mt,
                                               const XMap& map, int lane, float acc[MT], float xsum[MT]) {
  // Software pipeline: the next block's codes and qparams are requested before this block's math,
  // so each lane keeps two HBM reads in flight without unrolling the (large) block body.
  uint64_t b = lane;
  BlockWords<BITS> next{};
  dc_qparam qnext{};
  if (b < nblocks) {
    load_block<BITS>(row, b, next);
    if constexpr (BITS >= 2 && BITS <= 8) qnext = qp[b / group_blocks];
  }
#pragma unroll 1
  for (; b < nblocks; b += G) {
    const BlockWords<BITS> cur = next;
    const dc_qparam q = qnext;
    if (b + G < nblocks) {
      load_block<BITS>(row, b + G, next);
      if constexpr (BITS >= 2 && BITS <= 8) qnext = qp[(b + G) / group_blocks];
    }
    float c[32];
    decode_block<BITS>(cur, c);
    float s = 1.f, z = 0.f;
    if constexpr (BITS >= 2 && BITS <= 8) {
      s = f16_to_f32(q.scale);
      z = f16_to_f32(q.zero);
    }
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (m < mt) {
        float xv[32];
        load_x32<XT>(x + m * ldx, map, b * 32, xv);
        float cx = 0.f, sx = 0.f;
#pragma unroll
        for (int i = 0; i < 32; ++i) {
          cx = fmaf(c[i], xv[i], cx);
          sx += xv[i];
        }
        if constexpr (BITS == 16) {
          acc[m] += cx;
        } else if constexpr (BITS == 1) {
          acc[m] += cx;
          xsum[m] += sx;
        } else {
          acc[m] = fmaf(s, cx - z * sx, acc[m]);
        }
      }
    }
  }
}

// Runtime band width → the templated row dot (one switch per row, uniform across the group).
template <int MT, class XT, int G>
__device__ __forceinline__ void band_row_dot(uint32_t bits, const uint32_t* row, const dc_qparam* qp,
                                             uint32_t group_size, uint64_t nblocks, const typename XT::T* x,
                                             uint64_t ldx, int mt, const XMap& map, int lane, float acc[MT]) {
  float unused[MT];
  const uint32_t gb = group_size ? group_size / 32 : 1;
  switch (bits) {
    case 2: packed_row_dot<2, MT, XT, G>(row, qp, gb, nblocks, x, ldx, mt, map, lane, acc, unused); break;
    case 3: packed_row_dot<3, MT, XT, G>(row, qp, gb, nblocks, x, ldx, mt, map, lane, acc, unused); break;
    case 4: packed_row_dot<4, MT, XT, G>(row, qp, gb, nblocks, x, ldx, mt, map, lane, acc, unused); break;
    case 8: packed_row_dot<8, MT, XT, G>(row, qp, gb, nblocks, x, ldx, mt, map, lane, acc, unused); break;
    case 16: packed_row_dot<16, MT, XT, G>(row, qp, gb, nblocks, x, ldx, mt, map, lane, acc, unused); break;
    default: break;
  }
}

// acc[m] += Σ_j W[j]·x_m[j] over one row of a dense matrix (base weight or dense delta), lanes
// striding over 8-element chunks; 16-byte loads when `vec` (host-checked alignment).
template <int MT, class XT, class WT, int G>
__device__ __forceinline__ void dense_row_dot_t(const typename WT::T* __restrict__ w, const typename XT::T* __restrict__ x,
                                                uint64_t ldx, uint64_t cols, int mt, bool vec, int lane,
                                                float acc[MT]) {
  uint64_t j0 = 0;
  if (vec) {
    const uint64_t chunks = cols / 8;
    for (uint64_t ch = lane; ch < chunks; ch += G) {
      float wv[8];
      if constexpr (sizeof(typename WT::T) == 2) {
        const uint4 v = reinterpret_cast<const uint4*>(w)[ch];
        const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 8; ++i) wv[i] = to_f32<WT>((uint16_t)(u[i / 2] >> (16 * (i % 2))));
      } else {
        const float4 a = reinterpret_cast<const float4*>(w)[2 * ch], b = reinterpret_cast<const float4*>(w)[2 * ch + 1];
        wv[0] = a.x; wv[1] = a.y; wv[2] = a.z; wv[3] = a.w; wv[4] = b.x; wv[5] = b.y; wv[6] = b.z; wv[7] = b.w;
      }
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (m < mt) {
          const typename XT::T* xr = x + m * ldx;
          float xv[8];
          if constexpr (sizeof(typename XT::T) == 2) {
            const uint4 v = reinterpret_cast<const uint4*>(xr)[ch];
            const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int i = 0; i < 8; ++i) xv[i] = to_f32<XT>((uint16_t)(u[i / 2] >> (16 * (i % 2))));
          } else {
            const float4 a = reinterpret_cast<const float4*>(xr)[2 * ch], b = reinterpret_cast<const float4*>(xr)[2 * ch + 1];
            xv[0] = a.x; xv[1] = a.y; xv[2] = a.z; xv[3] = a.w; xv[4] = b.x; xv[5] = b.y; xv[6] = b.z; xv[7] = b.w;
          }
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[m] = fmaf(wv[i], xv[i], acc[m]);
        }
      }
    }
    j0 = chunks * 8;
  }
  for (uint64_t j = j0 + lane; j < cols; j += G) {
    const float wv = to_f32<WT>(w[j]);
#pragma unroll
    for (int m = 0; m < MT; ++m)
      if (m < mt) acc[m] = fmaf(wv, to_f32<XT>(x[m * ldx + j]), acc[m]);
  }
}

template <int MT, class XT, int G>
__device__ __forceinline__ void dense_row_dot(const void* w, int wdtype, const typename XT::T* x, uint64_t ldx,
                                              uint64_t cols, int mt, bool vec, int lane, float acc[MT]) {
  switch (wdtype) {
    case DC_DTYPE_F16:
      dense_row_dot_t<MT, XT, F16, G>(static_cast<const uint16_t*>(w), x, ldx, cols, mt, vec, lane, acc);
      break;
    case DC_DTYPE_BF16:
      dense_row_dot_t<MT, XT, BF16, G>(static_cast<const uint16_t*>(w), x, ldx, cols, mt, vec, lane, acc);
      break;
    default:
      dense_row_dot_t<MT, XT, F32, G>(static_cast<const float*>(w), x, ldx, cols, mt, vec, lane, acc);
  }
}

}  // namespace dcg

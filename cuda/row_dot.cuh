// Device building blocks of the decode-size apply kernels: staging activations (any dtype, any
// column map) as fp32 in shared memory together with the sum of every block of 32, decoding one
// block of 32 packed codes (pack_layout.h) of a compile-time width, and its dot product with up to
// kTile staged rows.
//
// Why it looks like this (H100 profile of the first kernels, bench/RESULTS-h100.md):
// - Decode without int→float conversions. I2F runs at a quarter of the FP32 rate; instead a code
//   is masked in place (one LOP3) into the mantissa of 2^23 and one FMA with compile-time
//   constants turns 2^23 + c·2^k back into c, exactly.
// - Dequantization is folded per block: a block lies inside one quantization group (group sizes
//   are multiples of 32), so Σ s·(c − z)·x = s·(Σ c·x − z·Σ x), and Σ x of every staged block is
//   computed once while staging (slot 32 of the block), not once per code row.
// - Staging moves 8 consecutive values per thread with 16-byte loads when the source allows it, so
//   a block stages x in one round trip instead of one per 256 values.
// Compile time: the width is the only template parameter besides the logical warp width, and the
// token tile is one fixed kTile with a runtime count.
#pragma once

#include <type_traits>

#include "common.cuh"

namespace dcg {

constexpr int kTile = 8;          // rows of x per block tile (runtime count 1..kTile)
constexpr int kPitch = 36;        // floats per staged block: 32 values, [32] = their sum, 3 pad.
                                  // 16-byte aligned; float4 reads of 8 consecutive blocks hit 8
                                  // distinct bank quads
constexpr int kStageBytes = 40 * 1024;  // dynamic shared memory budget of one block's staging

// Calls f(std::integral_constant<int, BITS>) for a band width known only at run time (2, 3, 4, 8,
// else 16): the one switch from a descriptor's width to the kernels' compile-time code per width.
template <class F>
__device__ __forceinline__ decltype(auto) with_bits(uint32_t bits, F&& f) {
  switch (bits) {
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 8: return f(std::integral_constant<int, 8>{});
    default: return f(std::integral_constant<int, 16>{});
  }
}

// Where position p of a packed row reads its activation: x[perm[p]] or x[p - off]; 0 when the
// result is outside [0, cols) or p ≥ len (DC_PERM_NONE and p < off wrap to huge values).
struct ColMap {
  const uint32_t* perm;
  uint64_t off, cols, len;
};

// Sum over aligned segments of W lanes (W ≤ 32; every lane of the hardware warp takes part).
template <int W>
__device__ __forceinline__ float seg_sum(float v) {
#pragma unroll
  for (int off = W / 2; off > 0; off >>= 1) v += dc_shfl_xor(v, off, W);
  return v;
}

__device__ __forceinline__ float map_load(const void* src, int dt, uint64_t base, uint64_t p, const ColMap& m) {
  uint64_t j = ~0ull;
  if (p < m.len) j = m.perm ? (uint64_t)m.perm[p] : p - m.off;
  return j < m.cols ? load_any(src, base + j, dt) : 0.f;
}

// Eight consecutive elements at src[idx..idx+8) (16-byte aligned) as floats.
__device__ __forceinline__ void load8(const void* src, int dt, uint64_t idx, float v[8]) {
  if (dt == DC_DTYPE_F32) {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(src) + idx);
    const float4 a = p[0], b = p[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  } else {
    const uint4 a = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(src) + idx);
    const uint32_t w[4] = {a.x, a.y, a.z, a.w};
    const bool bf = dt == DC_DTYPE_BF16;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const uint16_t h = (uint16_t)(w[k / 2] >> (16 * (k % 2)));
      v[k] = bf ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
}

// Stages positions [p0, p0 + nb·32) of `tt` rows (row indices in rows[]) of a row-major matrix of
// dtype dt into xs[i·nb·kPitch + b·kPitch + j], and the sum of block b at [… + 32]. Every thread
// of the block takes part (shuffles inside). `vec`: no perm, no offset, src and ld 16-byte
// aligned — then each thread moves 8 consecutive values with one load.
__device__ __forceinline__ void stage_rows(float* xs, int nb, uint64_t p0, const void* src, int dt, uint64_t ld,
                                           const int* rows, int tt, const ColMap& map, bool vec) {
  if (vec) {
    const int per_row = nb * 4, total = per_row * tt;
    const uint64_t lim = map.len < map.cols ? map.len : map.cols;
    constexpr int U = 4;
    for (int e0 = 0; e0 < total; e0 += U * (int)blockDim.x) {  // same trip count in every thread
      float v[U][8];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int e = e0 + u * (int)blockDim.x + (int)threadIdx.x;
#pragma unroll
        for (int k = 0; k < 8; ++k) v[u][k] = 0.f;
        if (e < total) {
          const int i = e / per_row, q8 = e - i * per_row;
          const uint64_t p = p0 + (uint64_t)q8 * 8, base = (uint64_t)rows[i] * ld;
          if (p + 8 <= lim) {
            load8(src, dt, base + p, v[u]);
          } else {
#pragma unroll
            for (int k = 0; k < 8; ++k)
              if (p + k < lim) v[u][k] = load_any(src, base + p + k, dt);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int e = e0 + u * (int)blockDim.x + (int)threadIdx.x;
        const float* a = v[u];
        const float s = seg_sum<4>(((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])));
        if (e < total) {
          const int i = e / per_row, q8 = e - i * per_row;
          float* dst = xs + i * nb * kPitch + (q8 >> 2) * kPitch;
          float4* d4 = reinterpret_cast<float4*>(dst + (q8 & 3) * 8);
          d4[0] = make_float4(a[0], a[1], a[2], a[3]);
          d4[1] = make_float4(a[4], a[5], a[6], a[7]);
          if ((q8 & 3) == 0) dst[32] = s;
        }
      }
    }
    return;
  }
  const int n = nb * 32, total = n * tt;
  constexpr int U = 8;
  for (int e0 = 0; e0 < total; e0 += U * (int)blockDim.x) {
    float v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int e = e0 + u * (int)blockDim.x + (int)threadIdx.x;
      v[u] = 0.f;
      if (e < total) {
        const int i = e / n, q = e - i * n;
        v[u] = map_load(src, dt, (uint64_t)rows[i] * ld, p0 + q, map);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int e = e0 + u * (int)blockDim.x + (int)threadIdx.x;
      const float s = seg_sum<32>(v[u]);
      if (e < total) {
        const int i = e / n, q = e - i * n;
        float* dst = xs + i * nb * kPitch + (q >> 5) * kPitch;
        dst[q & 31] = v[u];
        if ((q & 31) == 0) dst[32] = s;
      }
    }
  }
}

// The `nbits` bits at bit `sh` of h (sh + nbits ≤ 16) as an exact float: masked into the mantissa
// of 2^23 (2^23 + c·2^sh), then one FMA removes 2^23 and the 2^sh. After unrolling, sh and nbits
// are constants, so this is one LOP3 and one FFMA.
// 2^23's bits (0x4B000000) from constant memory, a value neither compiler can fold. LOP3 takes one
// immediate: with the mask AND this constant as immediates, (h & mask) | 2^23 compiles to two LOP3
// per code (SASS of the persistent kernel on the H100); with the constant in a register, to one.
#if !defined(DC_USE_HIP)
static __constant__ uint32_t c_magic_2p23 = 0x4B000000u;
__device__ __forceinline__ uint32_t magic_2p23() { return c_magic_2p23; }
#else
__device__ __forceinline__ uint32_t magic_2p23() { return 0x4B000000u; }
#endif

__device__ __forceinline__ float code_at(uint32_t h, int sh, int nbits) {
  const float v = __uint_as_float((h & (((1u << nbits) - 1u) << sh)) | magic_2p23());
  const float inv = __uint_as_float((uint32_t)(127 - sh) << 23);  // 2^-sh
  return fmaf(v, inv, -8388608.f * inv);
}

// The 32 codes of one block (pack_layout.h) as floats; w holds the block's BITS words.
template <int BITS>
__device__ __forceinline__ void decode_block(const uint32_t* w, float c[32]) {
  if constexpr (BITS == 16) {
#pragma unroll
    for (int i = 0; i < 32; ++i) c[i] = f16_to_f32((uint16_t)(w[i / 2] >> (16 * (i % 2))));
  } else if constexpr (BITS == 3) {
    // low 2 bits as the 2-bit layout in words 0..1, high bit i in word 2: c = lo + 4·hi
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const uint32_t lw = i < 16 ? w[0] : w[1];
      const int j = i % 16;
      const float lo = code_at(j < 8 ? lw : lw >> 16, 2 * (j % 8), 2);
      const float hi = code_at(i < 16 ? w[2] : w[2] >> 16, i % 16, 1);
      c[i] = fmaf(4.f, hi, lo);
    }
  } else {
    constexpr int per = 32 / BITS, half = per / 2;  // codes per word / per 16-bit half
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const uint32_t wd = w[i / per];
      const int j = i % per;
      c[i] = code_at(j < half ? wd : wd >> 16, BITS * (j % half), BITS);
    }
  }
}

// The BITS words of one block (16-byte loads where the layout keeps them aligned: rows start on a
// whole number of blocks, so a block of 4, 8 or 16 words is 16-byte aligned and one of 2 words is
// 8-byte aligned, given a 16-byte aligned array).
template <int BITS>
__device__ __forceinline__ void load_block(const uint32_t* __restrict__ p, uint32_t* w) {
  if constexpr (BITS % 4 == 0) {
#pragma unroll
    for (int q = 0; q < BITS / 4; ++q) {
      const uint4 a = reinterpret_cast<const uint4*>(p)[q];
      w[4 * q] = a.x; w[4 * q + 1] = a.y; w[4 * q + 2] = a.z; w[4 * q + 3] = a.w;
    }
  } else if constexpr (BITS == 2) {
    const uint2 a = *reinterpret_cast<const uint2*>(p);
    w[0] = a.x;
    w[1] = a.y;
  } else {
#pragma unroll
    for (int q = 0; q < BITS; ++q) w[q] = p[q];
  }
}

// acc[i] += s·(Σ c·x_i − z·Σ x_i) for i < tt ≤ N; x_i at xb + i·tstride (a staged block, sum at [32]).
template <int N = kTile>
__device__ __forceinline__ void dot_block(const float c[32], float s, float z, const float* xb, int tstride, int tt,
                                          float acc[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    if (i < tt) {
      const float4* xv = reinterpret_cast<const float4*>(xb + i * tstride);
      float cx = 0.f;
#pragma unroll
      for (int q = 0; q < 8; ++q) {
        const float4 v = xv[q];
        cx = fmaf(c[4 * q], v.x, cx);
        cx = fmaf(c[4 * q + 1], v.y, cx);
        cx = fmaf(c[4 * q + 2], v.z, cx);
        cx = fmaf(c[4 * q + 3], v.w, cx);
      }
      acc[i] = fmaf(s, fmaf(-z, xb[i * tstride + 32], cx), acc[i]);
    }
  }
}

// Scale and zero point of one quantization group from its 32-bit word (dc_qparam: fp16 scale in
// the low half, fp16 zero in the high half).
__device__ __forceinline__ void load_qp_word(uint32_t v, float& s, float& z) {
  s = f16_to_f32((uint16_t)v);
  z = f16_to_f32((uint16_t)(v >> 16));
}
// The same with one 32-bit load (the arrays are 4-byte aligned).
__device__ __forceinline__ void load_qp(const dc_qparam* q, float& s, float& z) {
  load_qp_word(*reinterpret_cast<const uint32_t*>(q), s, z);
}

// Block k's quantization group, gb blocks per group: a shift when gb is a power of two (every
// group size the compressor writes), else a division (an integer division is ~20 instructions).
__device__ __forceinline__ int group_shift(uint32_t gb) { return (gb & (gb - 1)) == 0 ? __ffs(gb) - 1 : -1; }
__device__ __forceinline__ uint32_t group_of(uint32_t k, uint32_t gb, int gsh) { return gsh >= 0 ? k >> gsh : k / gb; }


// One packed row of one width, seen from a staged chunk: blocks [first, first + count) of the row
// against staged blocks xb[k·kPitch] (k = 0..count-1). Lanes `sub` of `lanes` take blocks
// k ≡ sub (mod lanes), a batch at a time with every load of a batch issued before any math.
// qp null: constant s0/z0 (fp16 codes: 1/0; BitDelta signs: 2·scale/½).
// Blocks per batch: 4 for narrow codes; fewer for wide ones, whose 4 blocks would cost 32-64
// registers of raw words (each batch is still ≥ 32 bytes per lane).
template <int BITS>
struct BatchOf {
  static constexpr int n = BITS >= 16 ? 1 : BITS >= 8 ? 2 : 4;
};

template <int BITS>
struct RowBatch {
  static constexpr int kBatch = BatchOf<BITS>::n;
  uint32_t w[kBatch][BITS];
  float s[kBatch], z[kBatch];
};

struct PackedRow {
  const uint32_t* row;
  const dc_qparam* qp;
  uint32_t gb;  // blocks per quantization group
  float s0, z0;
  uint32_t first;
  int count;
};

// Issues the loads of the batch that starts at block k0 (this lane's blocks k0 + u·lanes).
template <int BITS>
__device__ __forceinline__ void fetch_batch(const PackedRow& r, int k0, int lanes, RowBatch<BITS>& b) {
  constexpr int kBatch = BatchOf<BITS>::n;
  const int gsh = group_shift(r.gb);
#pragma unroll
  for (int u = 0; u < kBatch; ++u) {
    const int k = k0 + u * lanes;
    b.s[u] = r.s0;
    b.z[u] = r.z0;
    if (k < r.count) {
      load_block<BITS>(r.row + (uint64_t)(r.first + k) * BITS, b.w[u]);
      if (r.qp) load_qp(r.qp + group_of(r.first + (uint32_t)k, r.gb, gsh), b.s[u], b.z[u]);
    }
  }
}

template <int BITS>
__device__ __forceinline__ void compute_batch(const PackedRow& r, int k0, int lanes, const RowBatch<BITS>& b,
                                              const float* xb, int tstride, int tt, float acc[kTile]) {
  constexpr int kBatch = BatchOf<BITS>::n;
#pragma unroll
  for (int u = 0; u < kBatch; ++u) {
    const int k = k0 + u * lanes;
    if (k < r.count) {
      float c[32];
      decode_block<BITS>(b.w[u], c);
      dot_block(c, b.s[u], b.z[u], xb + k * kPitch, tstride, tt, acc);
    }
  }
}

// The whole chunk; `pre` (when non-null) is the already fetched first batch (k0 = sub).
template <int BITS>
__device__ __forceinline__ void row_chunk(const PackedRow& r, const RowBatch<BITS>* pre, const float* xb, int tstride,
                                          int sub, int lanes, int tt, float acc[kTile]) {
  constexpr int kBatch = BatchOf<BITS>::n;
  int k0 = sub;
  if (pre) {
    compute_batch<BITS>(r, k0, lanes, *pre, xb, tstride, tt, acc);
    k0 += lanes * kBatch;
  }
#pragma unroll 1
  for (; k0 < r.count; k0 += lanes * kBatch) {
    RowBatch<BITS> b;
    fetch_batch<BITS>(r, k0, lanes, b);
    compute_batch<BITS>(r, k0, lanes, b, xb, tstride, tt, acc);
  }
}

}  // namespace dcg

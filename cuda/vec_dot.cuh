// Device helpers shared by the one-token kernels (apply_vec_kernels.cu) and the persistent
// one-launch kernel (apply_persist_kernel.cu): programmatic-dependent-launch hooks, cache
// prefetches, and the dot product of one block of 32 packed codes (zero point folded into the
// decode) against registers or against a block staged in shared memory.
#pragma once

#include "row_dot.cuh"

namespace dcg {

// Programmatic dependent launch (Hopper): the rows kernel is launched while phase 1 still runs; it
// streams its base weight rows first and waits for phase 1's t only before the Û part, so phase 1
// hides behind the base GEMV. Elsewhere both calls compile to nothing and the launches are ordered.
__device__ __forceinline__ void pdl_allow_next() {
#if !defined(DC_USE_HIP) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cudaTriggerProgrammaticLaunchCompletion();
#endif
}
__device__ __forceinline__ void pdl_wait_prev() {
#if !defined(DC_USE_HIP) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cudaGridDependencySynchronize();
#endif
}

// Requests the 128-byte line at p into L2 (CUDA; a no-op on HIP).
__device__ __forceinline__ void prefetch_l2(const void* p) {
#if !defined(DC_USE_HIP)
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#endif
}

// 16, 8 or 4 bytes of an array read once per launch (the base weights, a batch's band codes):
// read-only path, not kept in L1, which keeps what is read again (CUDA only: inline PTX).
#if !defined(DC_USE_HIP)
__device__ __forceinline__ uint4 ld_stream16(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}
__device__ __forceinline__ uint2 ld_stream8(const void* p) {
  uint2 v;
  asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}
__device__ __forceinline__ uint32_t ld_stream4(const void* p) {
  uint32_t v;
  asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}
#endif

// Loads from shared memory by 32-bit address (CUDA: inline PTX). Where a noinline loop takes its
// staged blocks through a pointer, the compiler cannot tell that they are shared and emits generic
// 64-bit loads (LD.E with two R2UR each); these keep the loads on the shared-memory path.
#if !defined(DC_USE_HIP)
__device__ __forceinline__ uint32_t lds32(uint32_t a) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(a));
  return v;
}
__device__ __forceinline__ uint2 lds64(uint32_t a) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "r"(a));
  return v;
}
__device__ __forceinline__ uint4 lds128(uint32_t a) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a));
  return v;
}
template <int BITS>
__device__ __forceinline__ void lds_block(uint32_t a, uint32_t* w) {
  if constexpr (BITS % 4 == 0) {
#pragma unroll
    for (int q = 0; q < BITS / 4; ++q) {
      const uint4 v = lds128(a + 16 * q);
      w[4 * q] = v.x; w[4 * q + 1] = v.y; w[4 * q + 2] = v.z; w[4 * q + 3] = v.w;
    }
  } else if constexpr (BITS == 2) {
    const uint2 v = lds64(a);
    w[0] = v.x;
    w[1] = v.y;
  } else {
#pragma unroll
    for (int q = 0; q < BITS; ++q) w[q] = lds32(a + 4 * q);
  }
}
__device__ __forceinline__ uint32_t smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
#endif


constexpr int kRowLanesV = 8;  // lanes per output row (32 measured slower on the H100: RESULTS-h100.md)

// c − z for one code field (see code_at): the FMA that removes the 2^23 bias also subtracts z.
// Exact only for integer z (2^23·2^-sh + z must be representable): quantization zero points are.
__device__ __forceinline__ float code_minus_z(uint32_t h, int sh, int nbits, float z) {
  const float v = __uint_as_float((h & (((1u << nbits) - 1u) << sh)) | magic_2p23());
  const float inv = __uint_as_float((uint32_t)(127 - sh) << 23);
  return fmaf(v, inv, fmaf(-8388608.f, inv, -z));
}

// Σ_i (c_i − z)·x_i over one block of 32 codes.
template <int BITS>
__device__ __forceinline__ float block_dot(const uint32_t* w, float z, const float x[32]) {
  float s0 = 0.f, s1 = 0.f;  // two chains: half the dependent-FMA latency
  if constexpr (BITS == 16) {
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const float c = f16_to_f32((uint16_t)(w[i / 2] >> (16 * (i % 2))));
      if (i % 2) s1 = fmaf(c, x[i], s1); else s0 = fmaf(c, x[i], s0);
    }
  } else if constexpr (BITS == 3) {
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const uint32_t lw = i < 16 ? w[0] : w[1];
      const int j = i % 16;
      const float lo = code_minus_z(j < 8 ? lw : lw >> 16, 2 * (j % 8), 2, z);
      const float hi = code_at(i < 16 ? w[2] : w[2] >> 16, i % 16, 1);
      const float c = fmaf(4.f, hi, lo);
      if (i % 2) s1 = fmaf(c, x[i], s1); else s0 = fmaf(c, x[i], s0);
    }
  } else {
    constexpr int per = 32 / BITS, half = per / 2;
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const uint32_t wd = w[i / per];
      const int j = i % per;
      const float c = code_minus_z(j < half ? wd : wd >> 16, BITS * (j % half), BITS, z);
      if (i % 2) s1 = fmaf(c, x[i], s1); else s0 = fmaf(c, x[i], s0);
    }
  }
  return s0 + s1;
}

// Σ (c − z)·x over one block against a staged block (pitch kPitch) of x or t in shared memory.
template <int BITS>
__device__ __forceinline__ float smem_block_dot(const uint32_t* w, float z, const float* xb) {
  float x[32];
  const float4* x4 = reinterpret_cast<const float4*>(xb);
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    const float4 v = x4[q];
    x[4 * q] = v.x; x[4 * q + 1] = v.y; x[4 * q + 2] = v.z; x[4 * q + 3] = v.w;
  }
  return block_dot<BITS>(w, z, x);
}

#if !defined(DC_USE_HIP)
// Σ c·x − z·Σ x over one block against a staged block at shared-memory address xb (its sum at [32]).
template <int BITS>
__device__ __forceinline__ float lds_block_dot_z(const uint32_t* w, float z, uint32_t xb) {
  float x[32];
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    const uint4 v = lds128(xb + 16 * q);
    x[4 * q] = __uint_as_float(v.x); x[4 * q + 1] = __uint_as_float(v.y);
    x[4 * q + 2] = __uint_as_float(v.z); x[4 * q + 3] = __uint_as_float(v.w);
  }
  return fmaf(-z, __uint_as_float(lds32(xb + 32 * 4)), block_dot<BITS>(w, 0.f, x));
}
#endif

// Σ over the blocks kb ≡ lane (mod lanes) of one packed row against staged blocks (first = 0),
// each block with its sum at [32]: s·(Σ c·x − z·Σ x), so the decode FMA has constant operands only.
template <int BITS>
__device__ __forceinline__ float packed_row_smem(const uint32_t* __restrict__ row, const dc_qparam* __restrict__ qp,
                                                 uint32_t gb, uint32_t nblk, const float* xs, int lane, int lanes) {
  constexpr int U = BatchOf<BITS>::n;
  const PackedRow r{row, qp, gb, 1.f, 0.f, 0, (int)nblk};
  float acc = 0.f;
#pragma unroll 1
  for (int k0 = lane; k0 < r.count; k0 += lanes * U) {
    RowBatch<BITS> b;
    fetch_batch<BITS>(r, k0, lanes, b);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = k0 + u * lanes;
      if (k < r.count) {
        const float* xb = xs + k * kPitch;
        acc = fmaf(b.s[u], fmaf(-b.z[u], xb[32], smem_block_dot<BITS>(b.w[u], 0.f, xb)), acc);
      }
    }
  }
  return acc;
}

// Lanes split every block's 32 codes: lane `part` of 32 / N takes codes N·part … N·part + N − 1 of
// each block (N = 4: eight lanes per row, the persistent kernel; N = 8: four lanes per row, the
// tensor-core batch kernel's fp32 bands). For bands of one or two blocks per row (the 8- and 3-bit
// bands of the default allocation), where one lane per block leaves the row's other lanes idle for
// the whole band. Blocks at pitch kPitch in xs.
template <int BITS, int N>
__device__ __forceinline__ float packed_row_part(const uint32_t* __restrict__ row, const dc_qparam* __restrict__ qp,
                                                 uint32_t gb, uint32_t nblk, const float* xs, int part) {
  static_assert(N == 4 || N == 8, "four or eight codes per lane");
  const int i0 = N * part, gsh = group_shift(gb);
  float acc = 0.f;
#pragma unroll 1
  for (uint32_t k = 0; k < nblk; ++k) {
    const uint32_t* w = row + (uint64_t)k * BITS;
    float s = 1.f, z = 0.f;
    if (qp) load_qp(qp + group_of(k, gb, gsh), s, z);
    float x[N];
#pragma unroll
    for (int h = 0; h < N / 4; ++h) {
      const float4 xv = *reinterpret_cast<const float4*>(xs + k * kPitch + i0 + 4 * h);
      x[4 * h] = xv.x; x[4 * h + 1] = xv.y; x[4 * h + 2] = xv.z; x[4 * h + 3] = xv.w;
    }
    float c[N];
    if constexpr (BITS == 16) {
#pragma unroll
      for (int h = 0; h < N / 4; ++h) {
        const uint2 v = *reinterpret_cast<const uint2*>(w + i0 / 2 + 2 * h);  // 8-byte aligned: i0 / 2 is even
        c[4 * h] = f16_to_f32((uint16_t)v.x);
        c[4 * h + 1] = f16_to_f32((uint16_t)(v.x >> 16));
        c[4 * h + 2] = f16_to_f32((uint16_t)v.y);
        c[4 * h + 3] = f16_to_f32((uint16_t)(v.y >> 16));
      }
    } else {
      // c − z exactly: the code masked into the mantissa of 2^23, minus (2^23 + z) (z is an integer)
      const float bias = 8388608.f + z;
      if constexpr (BITS == 3) {  // low 2 bits in words 0..1 (2-bit layout), high bit i in word 2
        const uint32_t lw = w[i0 / 16], hw = w[2];  // a lane's codes lie in one half of the block
#pragma unroll
        for (int u = 0; u < N; ++u) {
          const int i = i0 + u, j = i % 16, sh = j < 8 ? 2 * j : 16 + 2 * (j - 8);
          const uint32_t code = ((lw >> sh) & 3u) | (((hw >> i) & 1u) << 2);
          c[u] = __uint_as_float(code | magic_2p23()) - bias;
        }
      } else {
        constexpr int per = 32 / BITS, half = per / 2;
#pragma unroll
        for (int h = 0; h < (N > per ? N / per : 1); ++h) {  // the words a lane's N codes span
          const uint32_t wd = w[i0 / per + h];
#pragma unroll
          for (int v = 0; v < (N > per ? per : N); ++v) {
            const int u = h * per + v, j = (i0 + u) % per, sh = j < half ? BITS * j : 16 + BITS * (j - half);
            c[u] = __uint_as_float(((wd >> sh) & ((1u << BITS) - 1u)) | magic_2p23()) - bias;
          }
        }
      }
    }
    float cx = c[0] * x[0];
#pragma unroll
    for (int u = 1; u < N; ++u) cx = fmaf(c[u], x[u], cx);
    acc = fmaf(s, cx, acc);
  }
  return acc;
}

}  // namespace dcg

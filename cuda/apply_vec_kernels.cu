// The one-token apply kernels: a single delta at m = 1 (decode) and multi-tenant batches, where
// every row of x has its own delta (or none). These are the latency-critical paths, so they differ
// from the tiled kernels (apply_kernels.cu) in three ways, each from the H100 profile of the tiled
// kernels on this case (bench/RESULTS-h100.md: 20 cycles per instruction, mostly instruction
// fetch, 12% occupancy):
// - No shared-memory staging and no block-wide barrier before the math: each lane loads the 32
//   activations of its own block together with the block's codes (x is hot in L2, t in L1), so a
//   block waits for one memory round trip, not for staging + barrier + codes.
// - Small code and few registers: one token, no token loop; the zero point is folded into the
//   decode FMA (c − z comes out of the same instruction that removes the 2^23 bias).
// - The single delta's descriptor is a __grid_constant__ kernel parameter read in place (CUDA): no
//   copy, no fetch from device memory before the first code load. Batches read their descriptor
//   table from device memory (it stays in L1/L2). HIP copies the descriptor to shared memory.
//
// Phase 1: one block per (column of t, row of x); its threads split the V̂ row's blocks of 32.
// Phase 2 (+ base GEMV, BitDelta): kRowLanesV lanes per output row, 16 rows per block.
#include <algorithm>

#include "apply_kernels.cuh"
#include "row_dot.cuh"

#if !defined(DC_USE_HIP)
#  define DC_DESC_IN_PARAMS 1
#  define DC_GRID_CONST __grid_constant__
#else
#  define DC_GRID_CONST
#endif

namespace dcg {
namespace {

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

constexpr int kRowLanesV = 8;  // lanes per output row (32 measured slower on the H100: RESULTS-h100.md)
constexpr int kRowThreadsV = 128;
constexpr int kRowsPerBlockV = kRowThreadsV / kRowLanesV;
constexpr int kMaxWarps = 1024 / 32;

struct VecArgs {
  DeltaSel sel;
  const void* x;
  int xdt;
  bool xvec;  // x rows 16-byte aligned
  uint64_t ldx;
  float* t;
  uint64_t ldt;
  // rows kernel
  uint64_t rows, cols;
  void* y;
  int ydt;
  uint64_t ldy;
  const void* W;
  int wdt;
  uint64_t ldw;
  bool wvec;  // W 16-bit, rows 16-byte aligned, cols % 8 == 0
  float alpha_w, scale;
  bool accumulate;
};

// The descriptor of row y's delta, or null. Uniform per block.
__device__ __forceinline__ const DeltaDesc* desc_of(const VecArgs& a, int y, DeltaDesc* smem_copy) {
  const DeltaSel& s = a.sel;
  const DeltaDesc* src = nullptr;
  if (s.row_slot == nullptr) {
    if (s.count == 0) return nullptr;
#if defined(DC_DESC_IN_PARAMS)
    return &s.one;  // parameter space, read in place (__grid_constant__)
#else
    src = &s.one;
#endif
  } else {
    const int32_t slot = s.row_slot[y];
    if (slot < 0 || (uint32_t)slot >= s.count) return nullptr;
    src = s.table + slot;
#if defined(DC_DESC_IN_PARAMS)
    return src;
#endif
  }
  const uint32_t* from = reinterpret_cast<const uint32_t*>(src);
  uint32_t* to = reinterpret_cast<uint32_t*>(smem_copy);
  for (int w = threadIdx.x; w < (int)(sizeof(DeltaDesc) / 4); w += blockDim.x) to[w] = from[w];
  __syncthreads();
  return smem_copy;
}

// 32 activations of one block, raw (converted at use, so the loads stay in flight meanwhile).
struct XBlock {
  uint4 q[8];  // 16-bit: q[0..3]; fp32: q[0..7]
};

// Positions [p, p + 32) of row `xrow` through the column map; vector loads when allowed.
__device__ __forceinline__ void xblock_load(XBlock& b, const void* xrow, int dt, uint64_t p, const ColMap& m, bool vec) {
  const uint64_t lim = m.len < m.cols ? m.len : m.cols;
  if (vec && p + 32 <= lim) {
    const uint4* src = dt == DC_DTYPE_F32 ? reinterpret_cast<const uint4*>(static_cast<const float*>(xrow) + p)
                                          : reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(xrow) + p);
    const int n = dt == DC_DTYPE_F32 ? 8 : 4;
#pragma unroll
    for (int k = 0; k < 8; ++k) b.q[k] = k < n ? src[k] : make_uint4(0, 0, 0, 0);
    return;
  }
  // any map (act-order permutation, shard offset, tail): one element at a time, stored as fp32
  float v[32];
#pragma unroll
  for (int k = 0; k < 32; ++k) v[k] = map_load(xrow, dt, 0, p + k, m);
#pragma unroll
  for (int k = 0; k < 8; ++k)
    b.q[k] = make_uint4(__float_as_uint(v[4 * k]), __float_as_uint(v[4 * k + 1]), __float_as_uint(v[4 * k + 2]),
                        __float_as_uint(v[4 * k + 3]));
}

__device__ __forceinline__ void xblock_get(const XBlock& b, int dt, bool as_f32, float x[32]) {
  if (as_f32 || dt == DC_DTYPE_F32) {
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      x[4 * k] = __uint_as_float(b.q[k].x);
      x[4 * k + 1] = __uint_as_float(b.q[k].y);
      x[4 * k + 2] = __uint_as_float(b.q[k].z);
      x[4 * k + 3] = __uint_as_float(b.q[k].w);
    }
    return;
  }
  const bool bf = dt == DC_DTYPE_BF16;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t w[4] = {b.q[k].x, b.q[k].y, b.q[k].z, b.q[k].w};
#pragma unroll
    for (int h = 0; h < 8; ++h) {
      const uint16_t u = (uint16_t)(w[h / 2] >> (16 * (h % 2)));
      x[8 * k + h] = bf ? bf16_to_f32(u) : f16_to_f32(u);
    }
  }
}

// c − z for one code field (see code_at): the FMA that removes the 2^23 bias also subtracts z.
// Exact only for integer z (2^23·2^-sh + z must be representable): quantization zero points are.
__device__ __forceinline__ float code_minus_z(uint32_t h, int sh, int nbits, float z) {
  const float v = __uint_as_float((h & (((1u << nbits) - 1u) << sh)) | 0x4B000000u);
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

// Block-wide sum (any blockDim multiple of the warp); the result is valid in thread 0.
__device__ __forceinline__ float block_sum(float v, float* red) {
#pragma unroll
  for (int off = DC_PHYS_WARP / 2; off > 0; off >>= 1) v += dc_shfl_xor(v, off, DC_PHYS_WARP);
  const int warps = blockDim.x / DC_PHYS_WARP;
  if (warps == 1) return v;
  if (threadIdx.x % DC_PHYS_WARP == 0) red[threadIdx.x / DC_PHYS_WARP] = v;
  __syncthreads();
  float s = 0.f;
  if (threadIdx.x == 0)
    for (int i = 0; i < warps; ++i) s += red[i];
  return s;
}

// ---- phase 1 ----------------------------------------------------------------------------------------
// A block takes R consecutive columns of t in one band (R divides 32, band spans are multiples of
// 32): each thread loads the 32 activations of its block of x once and the codes of that block in
// all R rows, so R code loads are in flight per thread and x is reused from registers R times.
// R shrinks with the width to bound the raw-code registers.
template <int BITS>
struct P1Rows {
  static constexpr int R = BITS <= 4 ? P1_ROWS_NARROW : BITS == 8 ? 2 : 1;
};

template <int BITS>
__device__ __forceinline__ void p1_body(const VecArgs& a, const DeltaDesc& d, const BandDesc& bd, uint32_t j0, int y,
                                        float* red) {
  constexpr int R = P1Rows<BITS>::R;
  const uint32_t rb = bd.r1 - bd.r0;
  const uint32_t* rows[R];
  const dc_qparam* qps[R];
  float sig[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const uint32_t j = j0 + r < rb ? j0 + r : 0;
    rows[r] = bd.v_codes + (uint64_t)j * bd.v_row_words;
    qps[r] = BITS == 16 ? nullptr : bd.v_qp + (uint64_t)j * bd.v_row_groups;
    sig[r] = j0 + r < rb ? d.sigma[bd.r0 + j] : 0.f;  // requested now, used at the end
  }
  const uint32_t gb = BITS == 16 ? 1 : bd.group_size / 32;
  const ColMap map{d.perm, d.v_col_offset, d.cols, d.v_len};
  const bool vec = a.xvec && d.perm == nullptr && d.v_col_offset == 0;
  const uint64_t lim = d.v_len < d.cols ? d.v_len : d.cols;
  const void* xrow = static_cast<const char*>(a.x) + (uint64_t)y * a.ldx * (a.xdt == DC_DTYPE_F32 ? 4 : 2);
  const uint64_t nblk = (d.v_len + 31) / 32;
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.f;
#pragma unroll 1
  for (uint64_t kb = threadIdx.x; kb < nblk; kb += blockDim.x) {
    uint32_t w[R][BITS];
    float s[R], z[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      load_block<BITS>(rows[r] + kb * BITS, w[r]);
      s[r] = 1.f;
      z[r] = 0.f;
      if (BITS != 16) {
        const dc_qparam q = qps[r][kb / gb];
        s[r] = qp_scale(q);
        z[r] = qp_zero(q);
      }
    }
    XBlock xb;
    xblock_load(xb, xrow, a.xdt, kb * 32, map, vec);
    float x[32];
    xblock_get(xb, a.xdt, !(vec && kb * 32 + 32 <= lim), x);
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = fmaf(s[r], block_dot<BITS>(w[r], z[r], x), acc[r]);
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float v = block_sum(acc[r], red + r * kMaxWarps);
    if (threadIdx.x == 0) a.t[(uint64_t)y * a.ldt + bd.t_off + j0 + r] = j0 + r < rb ? v * sig[r] * a.scale : 0.f;
  }
}

__global__ void __launch_bounds__(256, 2) p1_vec_kernel(const DC_GRID_CONST VecArgs a) {
  pdl_allow_next();
  __shared__ float red[4 * kMaxWarps];
#if !defined(DC_DESC_IN_PARAMS)
  __shared__ DeltaDesc dcopy;
  const DeltaDesc* dp = desc_of(a, blockIdx.y, &dcopy);
#else
  const DeltaDesc* dp = desc_of(a, blockIdx.y, nullptr);
#endif
  if (dp == nullptr || dp->kind != DC_KIND_LOWRANK) return;  // uniform
  const DeltaDesc& d = *dp;
  // this block's band and first column: bands in order, span / R blocks each
  uint32_t blk = blockIdx.x, b = 0, j0 = 0;
  bool found = false;
  for (; b < d.n_bands; ++b) {
    const uint32_t span = (d.bands[b].r1 - d.bands[b].r0 + 31) & ~31u, rr = p1_rows_of(d.bands[b].bits);
    if (blk < span / rr) {
      j0 = blk * rr;
      found = true;
      break;
    }
    blk -= span / rr;
  }
  if (!found) return;  // past this delta's columns (batches size the grid for the largest)
  const BandDesc& bd = d.bands[b];
  switch (bd.bits) {
    case 2: p1_body<2>(a, d, bd, j0, blockIdx.y, red); break;
    case 3: p1_body<3>(a, d, bd, j0, blockIdx.y, red); break;
    case 4: p1_body<4>(a, d, bd, j0, blockIdx.y, red); break;
    case 8: p1_body<8>(a, d, bd, j0, blockIdx.y, red); break;
    default: p1_body<16>(a, d, bd, j0, blockIdx.y, red); break;
  }
}

// ---- phase 2 + base + BitDelta ------------------------------------------------------------------------
// Û row o of one band against t (fp32, 16-byte aligned, read through L1: every row of the GPU
// reads the same t). Lanes `sub` take blocks k ≡ sub (mod kRowLanesV), the codes of up to four
// requested before any math.
template <int BITS>
__device__ __forceinline__ float u_row(const BandDesc& bd, uint64_t o, const float* trow, int sub) {
  const uint32_t nbb = ((bd.r1 - bd.r0) + 31) / 32;
  const uint32_t* row = bd.u_codes + o * bd.u_row_words;
  const dc_qparam* qp = BITS == 16 ? nullptr : bd.u_qp + o * bd.u_row_groups;
  const uint32_t gb = BITS == 16 ? 1 : bd.group_size / 32;
  const float* tb = trow + bd.t_off;
  constexpr int U = BatchOf<BITS>::n;
  float acc = 0.f;
#pragma unroll 1
  for (uint32_t k0 = sub; k0 < nbb; k0 += kRowLanesV * U) {
    uint32_t w[U][BITS];
    float s[U], z[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint32_t k = k0 + u * kRowLanesV;
      s[u] = 1.f;
      z[u] = 0.f;
      if (k < nbb) {
        load_block<BITS>(row + (uint64_t)k * BITS, w[u]);
        if (qp) {
          const dc_qparam q = qp[k / gb];
          s[u] = qp_scale(q);
          z[u] = qp_zero(q);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint32_t k = k0 + u * kRowLanesV;
      if (k < nbb) {
        float x[32];
        const float4* t4 = reinterpret_cast<const float4*>(tb + k * 32);
#pragma unroll
        for (int q = 0; q < 8; ++q) {
          const float4 v = t4[q];
          x[4 * q] = v.x; x[4 * q + 1] = v.y; x[4 * q + 2] = v.z; x[4 * q + 3] = v.w;
        }
        acc = fmaf(s[u], block_dot<BITS>(w[u], z[u], x), acc);
      }
    }
  }
  return acc;
}

__global__ void __launch_bounds__(kRowThreadsV, 4) rows_vec_kernel(const DC_GRID_CONST VecArgs a) {
#if !defined(DC_DESC_IN_PARAMS)
  __shared__ DeltaDesc dcopy;
  const DeltaDesc* dp = desc_of(a, blockIdx.y, &dcopy);
#else
  const DeltaDesc* dp = desc_of(a, blockIdx.y, nullptr);
#endif
  const int y = blockIdx.y, sub = threadIdx.x % kRowLanesV;
  const uint64_t o = (uint64_t)blockIdx.x * kRowsPerBlockV + threadIdx.x / kRowLanesV;
  const bool active = o < a.rows;
  const uint64_t orow = active ? o : 0;
  const int kind = dp ? dp->kind : -1;
  const size_t xes = a.xdt == DC_DTYPE_F32 ? 4 : 2;
  const void* xrow = static_cast<const char*>(a.x) + (uint64_t)y * a.ldx * xes;
  float acc = 0.f, accw = 0.f;
  if (active && kind == DC_KIND_LOWRANK) {
    // The bands are applied one after the other below; request every band's codes now, so the
    // later bands read them from L2 instead of waiting one HBM round trip each (and, with PDL,
    // while phase 1 and the base GEMV still run).
    const DeltaDesc& d = *dp;
    for (uint32_t b = 0; b < d.n_bands; ++b) {
      const BandDesc& bd = d.bands[b];
      const uint32_t* row = bd.u_codes + orow * bd.u_row_words;
      for (uint32_t off = sub * 32u; off < bd.u_row_words; off += kRowLanesV * 32u) prefetch_l2(row + off);
      if (sub == 0 && bd.bits != 16) prefetch_l2(bd.u_qp + orow * bd.u_row_groups);
    }
  }
  if (active && a.W != nullptr) {
    const char* wrow = static_cast<const char*>(a.W) + orow * a.ldw * (a.wdt == DC_DTYPE_F32 ? 4 : 2);
    if (a.wvec && a.xvec) {
      // pieces of 8: W as 16-byte loads, eight pieces per batch, every load issued first
      const uint64_t n8 = a.cols / 8;
      const bool wbf = a.wdt == DC_DTYPE_BF16, xbf = a.xdt == DC_DTYPE_BF16, xf32 = a.xdt == DC_DTYPE_F32;
      float s0 = 0.f, s1 = 0.f;
#pragma unroll 1
      for (uint64_t e0 = sub; e0 < n8; e0 += 8 * kRowLanesV) {  // 8 pieces per lane in flight
        uint4 wq[8], xq[8], xq2[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const uint64_t e = e0 + (uint64_t)u * kRowLanesV;
          wq[u] = xq[u] = xq2[u] = make_uint4(0, 0, 0, 0);
          if (e < n8) {
            wq[u] = reinterpret_cast<const uint4*>(wrow)[e];
            if (xf32) {
              xq[u] = reinterpret_cast<const uint4*>(xrow)[2 * e];
              xq2[u] = reinterpret_cast<const uint4*>(xrow)[2 * e + 1];
            } else {
              xq[u] = reinterpret_cast<const uint4*>(xrow)[e];
            }
          }
        }
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const uint32_t ww[4] = {wq[u].x, wq[u].y, wq[u].z, wq[u].w};
          const uint32_t xa[4] = {xq[u].x, xq[u].y, xq[u].z, xq[u].w};
          const uint32_t xb[4] = {xq2[u].x, xq2[u].y, xq2[u].z, xq2[u].w};
#pragma unroll
          for (int h = 0; h < 8; ++h) {
            const uint16_t wu = (uint16_t)(ww[h / 2] >> (16 * (h % 2)));
            const float wv = wbf ? bf16_to_f32(wu) : f16_to_f32(wu);
            float xv;
            if (xf32) {
              xv = __uint_as_float(h < 4 ? xa[h] : xb[h - 4]);
            } else {
              const uint16_t xu = (uint16_t)(xa[h / 2] >> (16 * (h % 2)));
              xv = xbf ? bf16_to_f32(xu) : f16_to_f32(xu);
            }
            if (h % 2) s1 = fmaf(wv, xv, s1); else s0 = fmaf(wv, xv, s0);
          }
        }
      }
      accw = s0 + s1;
    } else {
#pragma unroll 1
      for (uint64_t p = sub; p < a.cols; p += kRowLanesV)
        accw = fmaf(load_any(wrow, p, a.wdt), load_any(xrow, p, a.xdt), accw);
    }
  }
  pdl_wait_prev();  // t of phase 1 (and y) are complete and visible from here on
  if (active && kind == DC_KIND_LOWRANK) {
    const DeltaDesc& d = *dp;
    const float* trow = a.t + (uint64_t)y * a.ldt;
    for (uint32_t b = 0; b < d.n_bands; ++b) {
      const BandDesc& bd = d.bands[b];
      switch (bd.bits) {
        case 2: acc += u_row<2>(bd, orow, trow, sub); break;
        case 3: acc += u_row<3>(bd, orow, trow, sub); break;
        case 4: acc += u_row<4>(bd, orow, trow, sub); break;
        case 8: acc += u_row<8>(bd, orow, trow, sub); break;
        default: acc += u_row<16>(bd, orow, trow, sub); break;
      }
    }
  } else if (active && kind == DC_KIND_BITDELTA) {
    const DeltaDesc& d = *dp;
    const uint32_t* row = d.signs + orow * d.sign_row_words;
    const ColMap map{nullptr, 0, a.cols, a.cols};
    const uint64_t nblk = (a.cols + 31) / 32;
    for (uint64_t kb = sub; kb < nblk; kb += kRowLanesV) {
      const uint32_t w = row[kb];
      XBlock xb;
      const bool full = a.xvec && kb * 32 + 32 <= a.cols;
      xblock_load(xb, xrow, a.xdt, kb * 32, map, a.xvec);
      float x[32];
      xblock_get(xb, a.xdt, !full, x);
      // Σ (bit − ½)·x as Σ bit·x − ½·Σ x: folding ½ into the decode FMA would need 2^23 + ½,
      // which fp32 cannot hold (the zero points of the other widths are integers, exact there).
      float sx = 0.f;
#pragma unroll
      for (int k = 0; k < 32; ++k) sx += x[k];
      acc += fmaf(-0.5f, sx, block_dot<1>(&w, 0.f, x));
    }
    acc *= 2.f * d.bitdelta_scale * a.scale;
  }
  const float v = seg_sum<kRowLanesV>(fmaf(a.alpha_w, accw, acc));
  if (active && sub == 0) {
    const uint64_t at = (uint64_t)y * a.ldy + o;
    store_any(a.y, at, a.ydt, (a.accumulate ? load_any(a.y, at, a.ydt) : 0.f) + v);
  }
}

// ---- one launch for a single delta at m = 1 (CUDA) ------------------------------------------------
// Decode latency is a chain of dependent round trips, and two launches pay it twice plus a launch.
// This kernel runs phase 1, a grid-wide barrier and phase 2 in one launch:
//   1. every block requests its Û rows into L1/L2 (prefetch) and stages x (fp32, shared memory);
//   2. its warps compute columns of t (one V̂ row per warp, lanes over blocks of 32) into global
//      memory, and stream their base weight rows (DC_APPLY_INCLUDE_BASE) — independent of t;
//   3. grid barrier (arrival count + generation, see grid_barrier); the grid never exceeds the
//      blocks that are co-resident (occupancy × SMs), so every block reaches it;
//   4. every block stages t (L2 reads, bypassing L1) and its warps apply Û to their rows (8 lanes
//      per row) and write y.
// Used when the descriptor allows (no permutation, no column offset, shared memory fits);
// otherwise the two-kernel path runs. Not on HIP (no AMD hardware here to validate the barrier).
#if !defined(DC_USE_HIP)
constexpr int kFusedThreads = 256;
constexpr int kFusedWarps = kFusedThreads / 32;
constexpr int kFusedRowsPerWarp = 32 / kRowLanesV;  // rows per warp per round

struct FusedArgs {
  DeltaDesc d;
  const void* x;
  int xdt;
  bool xvec;
  float* t;
  unsigned long long* barrier;
  void* y;
  int ydt;
  bool accumulate;
  const void* W;
  int wdt;
  uint64_t ldw;
  bool wvec;
  float scale;
  int nbx;       // staged blocks of x (covers cols and v_len)
  int nbt;       // staged blocks of t (t_stride / 32)
  int max_groups;  // row groups per warp at most (base partial sums kept in shared memory)
};

__device__ __forceinline__ void prefetch_l1(const void* p) { asm volatile("prefetch.global.L1 [%0];" ::"l"(p)); }

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

// Σ over the blocks kb ≡ lane (mod lanes) of one packed row, against staged blocks (first = 0).
template <int BITS>
__device__ __forceinline__ float packed_row_smem(const uint32_t* __restrict__ row, const dc_qparam* __restrict__ qp,
                                                 uint32_t gb, uint32_t nblk, const float* xs, int lane, int lanes) {
  constexpr int U = BatchOf<BITS>::n;
  float acc = 0.f;
#pragma unroll 1
  for (uint32_t k0 = lane; k0 < nblk; k0 += lanes * U) {
    uint32_t w[U][BITS];
    float s[U], z[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint32_t k = k0 + u * lanes;
      s[u] = 1.f;
      z[u] = 0.f;
      if (k < nblk) {
        load_block<BITS>(row + (uint64_t)k * BITS, w[u]);
        if (qp) {
          const dc_qparam q = qp[k / gb];
          s[u] = qp_scale(q);
          z[u] = qp_zero(q);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint32_t k = k0 + u * lanes;
      if (k < nblk) acc = fmaf(s[u], smem_block_dot<BITS>(w[u], z[u], xs + k * kPitch), acc);
    }
  }
  return acc;
}

// Grid-wide barrier over two 32-bit words: [0] arrivals, [1] generation. The last block to arrive
// resets the count and bumps the generation; the others wait for the generation to change. The
// count is back to 0 when the kernel ends, so launches of any grid size can follow (stream order).
__device__ __forceinline__ void grid_barrier(unsigned long long* bar) {
  unsigned int* count = reinterpret_cast<unsigned int*>(bar);
  volatile unsigned int* gen = reinterpret_cast<volatile unsigned int*>(bar) + 1;
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned int g = *gen;  // read before arriving: the last arrival changes it
    __threadfence();
    if (atomicAdd(count, 1u) == gridDim.x - 1) {
      *reinterpret_cast<volatile unsigned int*>(count) = 0u;
      __threadfence();
      atomicAdd(const_cast<unsigned int*>(gen), 1u);
    } else {
      while (*gen == g) __nanosleep(32);
    }
    __threadfence();
  }
  __syncthreads();
}

__global__ void __launch_bounds__(kFusedThreads, 2) fused_vec_kernel(const __grid_constant__ FusedArgs a) {
  extern __shared__ float4 dyn_smem[];
  float* xs = reinterpret_cast<float*>(dyn_smem);   // nbx staged blocks of x
  float* ts = xs + a.nbx * kPitch;                  // nbt staged blocks of t
  float* wpart = ts + a.nbt * kPitch;               // [warp][group][row] base partial sums
  const DeltaDesc& d = a.d;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const uint32_t gw = blockIdx.x * kFusedWarps + warp, tw = gridDim.x * kFusedWarps;
  const int sub = lane % kRowLanesV, rsub = lane / kRowLanesV;
  const uint64_t groups = (d.rows + kFusedRowsPerWarp - 1) / kFusedRowsPerWarp;
  // 1. this warp's Û rows into the cache while x is staged and phase 1 runs
  for (uint64_t g = gw; g < groups; g += tw) {
    const uint64_t o = g * kFusedRowsPerWarp + rsub;
    if (o >= d.rows) continue;
    for (uint32_t b = 0; b < d.n_bands; ++b) {
      const BandDesc& bd = d.bands[b];
      const uint32_t* row = bd.u_codes + o * bd.u_row_words;
      for (uint32_t off = sub * 32u; off < bd.u_row_words; off += kRowLanesV * 32u)
        a.W ? prefetch_l2(row + off) : prefetch_l1(row + off);
      if (sub == 0 && bd.bits != 16) a.W ? prefetch_l2(bd.u_qp + o * bd.u_row_groups) : prefetch_l1(bd.u_qp + o * bd.u_row_groups);
    }
  }
  const int rows0[1] = {0};
  const ColMap xmap{nullptr, 0, d.cols, d.cols};
  stage_rows(xs, a.nbx, 0, a.x, a.xdt, 0, rows0, 1, xmap, a.xvec);
  __syncthreads();
  // 2a. phase 1: column kv of t per warp
  const uint32_t nblk_v = (uint32_t)((d.v_len + 31) / 32);
  for (uint32_t kv = gw; kv < d.t_stride; kv += tw) {
    uint32_t b = 0;
    while (b + 1 < d.n_bands && kv >= d.bands[b + 1].t_off) ++b;
    const BandDesc& bd = d.bands[b];
    const uint32_t j = kv - bd.t_off;
    float v = 0.f;
    if (j < bd.r1 - bd.r0) {
      const uint32_t* row = bd.v_codes + (uint64_t)j * bd.v_row_words;
      const dc_qparam* qp = bd.bits == 16 ? nullptr : bd.v_qp + (uint64_t)j * bd.v_row_groups;
      const uint32_t gb = bd.bits == 16 ? 1 : bd.group_size / 32;
      switch (bd.bits) {
        case 2: v = packed_row_smem<2>(row, qp, gb, nblk_v, xs, lane, 32); break;
        case 3: v = packed_row_smem<3>(row, qp, gb, nblk_v, xs, lane, 32); break;
        case 4: v = packed_row_smem<4>(row, qp, gb, nblk_v, xs, lane, 32); break;
        case 8: v = packed_row_smem<8>(row, qp, gb, nblk_v, xs, lane, 32); break;
        default: v = packed_row_smem<16>(row, qp, gb, nblk_v, xs, lane, 32); break;
      }
      v = seg_sum<32>(v) * d.sigma[bd.r0 + j] * a.scale;
    }
    if (lane == 0) a.t[kv] = v;
  }
  // 2b. base rows (independent of t): 8 lanes per row, x from shared memory
  int gi = 0;
  for (uint64_t g = gw; a.W != nullptr && g < groups; g += tw, ++gi) {
    const uint64_t o = g * kFusedRowsPerWarp + rsub;
    float accw = 0.f;
    if (a.W != nullptr && o < d.rows) {
      const char* wrow = static_cast<const char*>(a.W) + o * a.ldw * (a.wdt == DC_DTYPE_F32 ? 4 : 2);
      if (a.wvec) {
        const uint64_t n8 = d.cols / 8;
        const bool wbf = a.wdt == DC_DTYPE_BF16;
        float s0 = 0.f, s1 = 0.f;
#pragma unroll 1
        for (uint64_t e0 = sub; e0 < n8; e0 += 8 * kRowLanesV) {
          uint4 wq[8];
#pragma unroll
          for (int u = 0; u < 8; ++u) {
            const uint64_t e = e0 + (uint64_t)u * kRowLanesV;
            wq[u] = e < n8 ? reinterpret_cast<const uint4*>(wrow)[e] : make_uint4(0, 0, 0, 0);
          }
#pragma unroll
          for (int u = 0; u < 8; ++u) {
            const uint64_t e = e0 + (uint64_t)u * kRowLanesV;
            if (e >= n8) break;
            const uint32_t ww[4] = {wq[u].x, wq[u].y, wq[u].z, wq[u].w};
            const float* xb = xs + (e >> 2) * kPitch + (e & 3) * 8;
            const float4 p = reinterpret_cast<const float4*>(xb)[0];
            const float4 q = reinterpret_cast<const float4*>(xb)[1];
            const float xv[8] = {p.x, p.y, p.z, p.w, q.x, q.y, q.z, q.w};
#pragma unroll
            for (int h = 0; h < 8; ++h) {
              const uint16_t wu = (uint16_t)(ww[h / 2] >> (16 * (h % 2)));
              const float wv = wbf ? bf16_to_f32(wu) : f16_to_f32(wu);
              if (h % 2) s1 = fmaf(wv, xv[h], s1); else s0 = fmaf(wv, xv[h], s0);
            }
          }
        }
        accw = s0 + s1;
      } else {
#pragma unroll 1
        for (uint64_t p = sub; p < d.cols; p += kRowLanesV)
          accw = fmaf(load_any(wrow, p, a.wdt), xs[(p >> 5) * kPitch + (p & 31)], accw);
      }
    }
    accw = seg_sum<kRowLanesV>(accw);
    if (sub == 0 && gi < a.max_groups) wpart[(warp * a.max_groups + gi) * kFusedRowsPerWarp + rsub] = accw;
  }
  // 3. every column of t is written
  grid_barrier(a.barrier);
  // 4. stage t (L2: other SMs wrote it during this launch) and apply Û
  for (int e = threadIdx.x; e < a.nbt * 32; e += blockDim.x) {
    const float v = __ldcg(a.t + e);
    ts[(e >> 5) * kPitch + (e & 31)] = v;
  }
  __syncthreads();
  gi = 0;
  for (uint64_t g = gw; g < groups; g += tw, ++gi) {
    const uint64_t o = g * kFusedRowsPerWarp + rsub;
    float acc = 0.f;
    if (o < d.rows) {
      for (uint32_t b = 0; b < d.n_bands; ++b) {
        const BandDesc& bd = d.bands[b];
        const uint32_t nbb = (bd.r1 - bd.r0 + 31) / 32;
        const uint32_t* row = bd.u_codes + o * bd.u_row_words;
        const dc_qparam* qp = bd.bits == 16 ? nullptr : bd.u_qp + o * bd.u_row_groups;
        const uint32_t gb = bd.bits == 16 ? 1 : bd.group_size / 32;
        const float* tb = ts + (bd.t_off / 32) * kPitch;
        switch (bd.bits) {
          case 2: acc += packed_row_smem<2>(row, qp, gb, nbb, tb, sub, kRowLanesV); break;
          case 3: acc += packed_row_smem<3>(row, qp, gb, nbb, tb, sub, kRowLanesV); break;
          case 4: acc += packed_row_smem<4>(row, qp, gb, nbb, tb, sub, kRowLanesV); break;
          case 8: acc += packed_row_smem<8>(row, qp, gb, nbb, tb, sub, kRowLanesV); break;
          default: acc += packed_row_smem<16>(row, qp, gb, nbb, tb, sub, kRowLanesV); break;
        }
      }
    }
    acc = seg_sum<kRowLanesV>(acc);
    if (sub == 0 && o < d.rows) {
      const float base = a.W != nullptr ? wpart[(warp * a.max_groups + gi) * kFusedRowsPerWarp + rsub] : 0.f;
      store_any(a.y, o, a.ydt, (a.accumulate ? load_any(a.y, o, a.ydt) : 0.f) + base + acc);
    }
  }
}
#endif  // !DC_USE_HIP


}  // namespace

cudaError_t launch_vec(const LaunchCfg& c, const DeltaSel* sel, const RowsArgs& r) {
  if (r.m == 0 || r.rows == 0) return cudaSuccess;
  VecArgs a{};
  if (sel) a.sel = *sel;  // else count 0: no delta
  a.x = r.x;
  a.xdt = r.xdt;
  a.xvec = aligned16(r.x, r.ldx, dtype_size(r.xdt));
  a.ldx = r.ldx;
  a.t = const_cast<float*>(r.t);
  a.ldt = r.ldt;
  a.rows = r.rows;
  a.cols = r.cols;
  a.y = r.y;
  a.ydt = r.ydt;
  a.ldy = r.ldy;
  a.W = r.W;
  a.wdt = r.wdt;
  a.ldw = r.ldw;
  a.wvec = r.W != nullptr && r.wdt != DC_DTYPE_F32 && r.cols % 8 == 0 && aligned16(r.W, r.ldw, 2);
  a.alpha_w = r.alpha_w;
  a.scale = r.scale;
  a.accumulate = r.accumulate;
  const unsigned ny = (unsigned)r.m;  // one block row per row of x
  if (sel && sel->max_t_stride > 0) {
    // threads: one per block of 32 of the V̂ row, rounded to whole 64-wide wavefronts, 64..256
    const uint64_t nblk = (sel->max_v_len + 31) / 32;
    const unsigned threads = (unsigned)std::min<uint64_t>(256, std::max<uint64_t>(64, (nblk + 63) / 64 * 64));
    p1_vec_kernel<<<dim3(sel->max_p1_blocks, ny), threads, 0, c.stream>>>(a);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  const dim3 grid((unsigned)((r.rows + kRowsPerBlockV - 1) / kRowsPerBlockV), ny);
#if !defined(DC_USE_HIP)
  if (sel && sel->max_t_stride > 0 && c.pdl) {  // overlap with phase 1 (see pdl_wait_prev)
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = dim3(kRowThreadsV);
    cfg.stream = c.stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, rows_vec_kernel, a);
  }
#endif
  rows_vec_kernel<<<grid, kRowThreadsV, 0, c.stream>>>(a);
  return cudaGetLastError();
}

cudaError_t launch_fused(const LaunchCfg& c, const DeltaDesc& d, const RowsArgs& r, unsigned long long* barrier,
                         int sms) {
#if defined(DC_USE_HIP)
  (void)c; (void)d; (void)r; (void)barrier; (void)sms;
  return cudaErrorNotSupported;
#else
  if (d.kind != DC_KIND_LOWRANK || d.perm != nullptr || d.v_col_offset != 0 || d.t_stride == 0 || r.m != 1 ||
      barrier == nullptr || sms <= 0)
    return cudaErrorNotSupported;
  FusedArgs a{};
  a.d = d;
  a.x = r.x;
  a.xdt = r.xdt;
  a.xvec = (reinterpret_cast<uintptr_t>(r.x) % 16) == 0;
  a.t = const_cast<float*>(r.t);
  a.barrier = barrier;
  a.y = r.y;
  a.ydt = r.ydt;
  a.accumulate = r.accumulate;
  a.W = r.W;
  a.wdt = r.wdt;
  a.ldw = r.ldw;
  a.wvec = r.W != nullptr && r.wdt != DC_DTYPE_F32 && d.cols % 8 == 0 && aligned16(r.W, r.ldw, 2);
  a.scale = r.scale;
  const uint64_t npos = std::max<uint64_t>(d.cols, d.v_len);
  a.nbx = (int)((npos + 31) / 32);
  a.nbt = (int)(d.t_stride / 32);
  const uint64_t groups = (d.rows + kFusedRowsPerWarp - 1) / kFusedRowsPerWarp;
  const uint64_t per_warp_bound = (groups + (uint64_t)sms * kFusedWarps - 1) / ((uint64_t)sms * kFusedWarps);
  auto smem_for = [&](uint64_t mg) { return ((size_t)(a.nbx + a.nbt) * kPitch + kFusedWarps * mg * kFusedRowsPerWarp) * 4; };
  const size_t smem_max = smem_for(per_warp_bound);
  constexpr size_t kSmemLimit = 160 * 1024;
  if (smem_max > kSmemLimit) return cudaErrorNotSupported;
  static bool attr_set = false;  // per process; the attribute is per function
  if (!attr_set) {
    const cudaError_t e = cudaFuncSetAttribute(fused_vec_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kSmemLimit);
    if (e != cudaSuccess) return e;
    attr_set = true;
  }
  int occ = 0;
  cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, fused_vec_kernel, kFusedThreads, smem_max);
  if (e != cudaSuccess) return e;
  if (occ <= 0) return cudaErrorNotSupported;
  // Every block must be resident at once (grid barrier): at most occupancy × SMs blocks.
  const uint64_t needed = std::max<uint64_t>((d.t_stride + kFusedWarps - 1) / kFusedWarps, (groups + kFusedWarps - 1) / kFusedWarps);
  const unsigned blocks = (unsigned)std::max<uint64_t>(1, std::min<uint64_t>((uint64_t)occ * sms, needed));
  a.max_groups = (int)((groups + (uint64_t)blocks * kFusedWarps - 1) / ((uint64_t)blocks * kFusedWarps));
  fused_vec_kernel<<<blocks, kFusedThreads, smem_for(a.max_groups), c.stream>>>(a);
  return cudaGetLastError();
#endif
}

}  // namespace dcg

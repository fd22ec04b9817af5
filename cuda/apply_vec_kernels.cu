// The one-token apply kernels: a single delta at m = 1 (decode) and multi-tenant batches, where
// every row of x has its own delta (or none), whenever the persistent kernel does not serve the call
// (act-order or shard offset, BitDelta in a batch, HIP). Latency-critical paths, so they differ
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
#include "vec_dot.cuh"

#if !defined(DC_USE_HIP)
#  define DC_DESC_IN_PARAMS 1
#  define DC_GRID_CONST __grid_constant__
#else
#  define DC_GRID_CONST
#endif

namespace dcg {
namespace {

constexpr int kRowThreadsV = 128;
constexpr int kRowsPerBlockV = kRowThreadsV / kRowLanesV;
constexpr int kMaxWarps = 1024 / 32;

struct VecArgs {
  DeltaSel sel;
  RowsArgs io;  // the call (launch_vec's argument)
  bool xvec;    // x rows 16-byte aligned
  bool wvec;    // W 16-bit, rows 16-byte aligned, cols % 8 == 0
};

// The descriptor of row y's delta, or null. Uniform per block. CUDA reads it in place (kernel
// parameter or device table); HIP copies it into the calling kernel's shared memory first.
__device__ __forceinline__ const DeltaDesc* desc_of(const VecArgs& a, int y) {
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
    src = s.slot_desc(y);
    if (src == nullptr) return nullptr;
#if defined(DC_DESC_IN_PARAMS)
    return src;
#endif
  }
#if !defined(DC_DESC_IN_PARAMS)
  __shared__ DeltaDesc smem_copy;
  const uint32_t* from = reinterpret_cast<const uint32_t*>(src);
  uint32_t* to = reinterpret_cast<uint32_t*>(&smem_copy);
  for (int w = threadIdx.x; w < (int)(sizeof(DeltaDesc) / 4); w += blockDim.x) to[w] = from[w];
  __syncthreads();
  return &smem_copy;
#endif
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
  const int gsh = group_shift(gb);
  const ColMap map{d.perm, d.v_col_offset, d.cols, d.v_len};
  const bool vec = a.xvec && d.perm == nullptr && d.v_col_offset == 0;
  const uint64_t lim = d.v_len < d.cols ? d.v_len : d.cols;
  const void* xrow = static_cast<const char*>(a.io.x) + (uint64_t)y * a.io.ldx * (a.io.xdt == DC_DTYPE_F32 ? 4 : 2);
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
      if (BITS != 16) load_qp(qps[r] + group_of((uint32_t)kb, gb, gsh), s[r], z[r]);
    }
    XBlock xb;
    xblock_load(xb, xrow, a.io.xdt, kb * 32, map, vec);
    float x[32];
    xblock_get(xb, a.io.xdt, !(vec && kb * 32 + 32 <= lim), x);
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = fmaf(s[r], block_dot<BITS>(w[r], z[r], x), acc[r]);
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float v = block_sum(acc[r], red + r * kMaxWarps);
    if (threadIdx.x == 0) a.io.t[(uint64_t)y * a.io.ldt + bd.t_off + j0 + r] = j0 + r < rb ? v * sig[r] * a.io.scale : 0.f;
  }
}

__global__ void __launch_bounds__(256, 2) p1_vec_kernel(const DC_GRID_CONST VecArgs a) {
  pdl_allow_next();
  __shared__ float red[4 * kMaxWarps];
  const DeltaDesc* dp = desc_of(a, blockIdx.y);
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
  with_bits(bd.bits, [&](auto bits) { p1_body<decltype(bits)::value>(a, d, bd, j0, blockIdx.y, red); });
}

// ---- phase 2 + base + BitDelta ------------------------------------------------------------------------
// Û row o of one band against t (fp32, 16-byte aligned, read through L1: every row of the GPU
// reads the same t). Lanes `sub` take blocks k ≡ sub (mod kRowLanesV), the codes of up to four
// requested before any math.
template <int BITS>
__device__ __forceinline__ float u_row(const BandDesc& bd, uint64_t o, const float* trow, int sub) {
  const PackedRow r{bd.u_codes + o * bd.u_row_words, BITS == 16 ? nullptr : bd.u_qp + o * bd.u_row_groups,
                    BITS == 16 ? 1u : bd.group_size / 32, 1.f, 0.f, 0, (int)((bd.r1 - bd.r0 + 31) / 32)};
  const float* tb = trow + bd.t_off;
  constexpr int U = BatchOf<BITS>::n;
  float acc = 0.f;
#pragma unroll 1
  for (int k0 = sub; k0 < r.count; k0 += kRowLanesV * U) {
    RowBatch<BITS> b;
    fetch_batch<BITS>(r, k0, kRowLanesV, b);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = k0 + u * kRowLanesV;
      if (k < r.count) {
        float x[32];
        const float4* t4 = reinterpret_cast<const float4*>(tb + k * 32);
#pragma unroll
        for (int q = 0; q < 8; ++q) {
          const float4 v = t4[q];
          x[4 * q] = v.x; x[4 * q + 1] = v.y; x[4 * q + 2] = v.z; x[4 * q + 3] = v.w;
        }
        acc = fmaf(b.s[u], block_dot<BITS>(b.w[u], b.z[u], x), acc);
      }
    }
  }
  return acc;
}

__global__ void __launch_bounds__(kRowThreadsV, 4) rows_vec_kernel(const DC_GRID_CONST VecArgs a) {
  const DeltaDesc* dp = desc_of(a, blockIdx.y);
  const int y = blockIdx.y, sub = threadIdx.x % kRowLanesV;
  const uint64_t o = (uint64_t)blockIdx.x * kRowsPerBlockV + threadIdx.x / kRowLanesV;
  const bool active = o < a.io.rows;
  const uint64_t orow = active ? o : 0;
  const int kind = dp ? dp->kind : -1;
  const size_t xes = a.io.xdt == DC_DTYPE_F32 ? 4 : 2;
  const void* xrow = static_cast<const char*>(a.io.x) + (uint64_t)y * a.io.ldx * xes;
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
  if (active && a.io.W != nullptr) {
    const char* wrow = static_cast<const char*>(a.io.W) + orow * a.io.ldw * (a.io.wdt == DC_DTYPE_F32 ? 4 : 2);
    if (a.wvec && a.xvec) {
      // pieces of 8: W as 16-byte loads, eight pieces per batch, every load issued first
      const uint64_t n8 = a.io.cols / 8;
      const bool wbf = a.io.wdt == DC_DTYPE_BF16, xbf = a.io.xdt == DC_DTYPE_BF16, xf32 = a.io.xdt == DC_DTYPE_F32;
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
      for (uint64_t p = sub; p < a.io.cols; p += kRowLanesV)
        accw = fmaf(load_any(wrow, p, a.io.wdt), load_any(xrow, p, a.io.xdt), accw);
    }
  }
  pdl_wait_prev();  // t of phase 1 (and y) are complete and visible from here on
  if (active && kind == DC_KIND_LOWRANK) {
    const DeltaDesc& d = *dp;
    const float* trow = a.io.t + (uint64_t)y * a.io.ldt;
    for (uint32_t b = 0; b < d.n_bands; ++b) {
      const BandDesc& bd = d.bands[b];
      acc += with_bits(bd.bits, [&](auto bits) { return u_row<decltype(bits)::value>(bd, orow, trow, sub); });
    }
  } else if (active && kind == DC_KIND_BITDELTA) {
    const DeltaDesc& d = *dp;
    const uint32_t* row = d.signs + orow * d.sign_row_words;
    const ColMap map{nullptr, 0, a.io.cols, a.io.cols};
    const uint64_t nblk = (a.io.cols + 31) / 32;
    for (uint64_t kb = sub; kb < nblk; kb += kRowLanesV) {
      const uint32_t w = row[kb];
      XBlock xb;
      const bool full = a.xvec && kb * 32 + 32 <= a.io.cols;
      xblock_load(xb, xrow, a.io.xdt, kb * 32, map, a.xvec);
      float x[32];
      xblock_get(xb, a.io.xdt, !full, x);
      // Σ (bit − ½)·x as Σ bit·x − ½·Σ x: folding ½ into the decode FMA would need 2^23 + ½,
      // which fp32 cannot hold (the zero points of the other widths are integers, exact there).
      float sx = 0.f;
#pragma unroll
      for (int k = 0; k < 32; ++k) sx += x[k];
      acc += fmaf(-0.5f, sx, block_dot<1>(&w, 0.f, x));
    }
    acc *= 2.f * d.bitdelta_scale * a.io.scale;
  }
  const float v = seg_sum<kRowLanesV>(fmaf(a.io.alpha_w, accw, acc));
  if (active && sub == 0) {
    const uint64_t at = (uint64_t)y * a.io.ldy + o;
    store_or_add(a.io.y, at, a.io.ydt, a.io.accumulate, v);
  }
}



}  // namespace

cudaError_t launch_vec(const LaunchCfg& c, const DeltaSel* sel, const RowsArgs& r) {
  if (r.m == 0 || r.rows == 0) return cudaSuccess;
  VecArgs a{};
  if (sel) a.sel = *sel;  // else count 0: no delta
  a.io = r;
  a.xvec = aligned16(r.x, r.ldx, dtype_size(r.xdt));
  a.wvec = r.W != nullptr && r.wdt != DC_DTYPE_F32 && r.cols % 8 == 0 && aligned16(r.W, r.ldw, 2);
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


}  // namespace dcg

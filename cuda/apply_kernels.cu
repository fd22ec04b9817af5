// The tiled apply kernels: one delta, 1 < m ≤ 64 rows in tiles of kTile, when the persistent kernel
// does not serve it (act-order, shard offsets, BitDelta, HIP; m = 1 and batches run
// apply_persist_kernel.cu or apply_vec_kernels.cu), and the GEMV of dense deltas and base weights.
//
// Phase 1 (t = x·V̂ ⊙ σ): one logical warp per singular vector; lanes take the row's blocks of 32
// codes round-robin, four loads in flight each. A block of kP1Threads covers columns of t inside
// one band (band spans are padded to 32 columns), so the width is uniform per block and the whole
// block body is instantiated per width. The first batch of codes is requested before x is staged,
// so the code fetch from HBM overlaps the staging.
// Phase 2 and everything row-wise (y = t·Ûᵀ [+ x·Wᵀ] [+ BitDelta]): kRowLanes lanes per output row,
// so a 4096-row layer spreads over 256 blocks, and the lanes of a row read consecutive blocks of
// its packed Û row (whole 32-byte sectors) while the rows of a warp share each staged t block
// (shared-memory broadcast). The base weight's first loads are issued before x is staged.
//
// Instantiations: phase1_kernel<G> (G = 32, 64) × 5 widths, rows_kernel × 6 widths: about 25 s of
// ptxas for sm_90. Their unrolled kTile-token bodies are large enough to stall on instruction
// fetch (bench/RESULTS-h100.md); the one-token kernels avoid that.
#include <algorithm>

#include "apply_kernels.cuh"
#include "row_dot.cuh"

namespace dcg {
namespace {

constexpr int kP1Threads = 128;                           // threads per phase-1 block
constexpr int kRowLanes = 8;                              // lanes per output row (rows kernel)
constexpr int kRowThreads = 128;                          // threads per rows-kernel block
constexpr int kRowsPerBlock = kRowThreads / kRowLanes;    // output rows per rows-kernel block

__device__ __forceinline__ uint32_t span_of(const BandDesc& b) { return (b.r1 - b.r0 + 31) & ~31u; }

// Shared state of one block: its tile of rows and its delta's descriptor.
struct TileShared {
  DeltaDesc d;
  int rows[kTile];
  int tt;    // rows in the tile (0: this block has nothing to do)
  int slot;  // -1: no delta
};

// Resolves blockIdx.y into its tile: rows [y·kTile, …) of x, with the single delta (or none).
// Every thread must call this (it synchronises).
__device__ void resolve_tile(TileShared& sh, const DeltaSel& sel, uint64_t m) {
  if (threadIdx.x == 0) {
    int tt = 0, slot = -1;
    const uint64_t r0 = (uint64_t)blockIdx.y * kTile;
    if (r0 < m) {
      tt = (int)umin64(kTile, m - r0);
      for (int i = 0; i < tt; ++i) sh.rows[i] = (int)(r0 + i);
      slot = sel.count > 0 ? 0 : -1;
      if (slot == 0) sh.d = sel.one;  // from the parameter bank
    }
    sh.tt = tt;
    sh.slot = slot;
  }
  __syncthreads();
}

struct P1Args {
  DeltaSel sel;
  const void* x;
  int xdt;
  bool xvec;  // x and ldx 16-byte aligned
  uint64_t ldx, m;
  float* t;
  uint64_t ldt;
  float scale;
  int cb;  // staged blocks per chunk
};

// One block's work in phase 1, for its band's width.
template <int BITS, int G>
__device__ __forceinline__ void phase1_body(const P1Args& a, const TileShared& sh, const BandDesc& bd, float* xs,
                                            float* red) {
  const DeltaDesc& d = sh.d;
  const int tt = sh.tt, lane = threadIdx.x % G;
  const uint32_t kv = blockIdx.x * (kP1Threads / G) + threadIdx.x / G;  // this group's column of t
  const uint32_t j = kv - bd.t_off;                                       // row of the band
  const bool live = j < bd.r1 - bd.r0;                                    // false: padding column
  PackedRow r{};
  r.row = bd.v_codes + (uint64_t)(live ? j : 0) * bd.v_row_words;
  r.qp = BITS == 16 ? nullptr : bd.v_qp + (uint64_t)(live ? j : 0) * bd.v_row_groups;
  r.gb = BITS == 16 ? 1 : bd.group_size / 32;
  r.s0 = 1.f;
  r.z0 = 0.f;
  const ColMap map{d.perm, d.v_col_offset, d.cols, d.v_len};
  const bool vec = a.xvec && d.perm == nullptr && d.v_col_offset == 0;
  const uint64_t nblk = (d.v_len + 31) / 32;
  float acc[kTile];
#pragma unroll
  for (int i = 0; i < kTile; ++i) acc[i] = 0.f;
  for (uint64_t c0 = 0; c0 < nblk; c0 += a.cb) {
    const int nb = (int)umin64(a.cb, nblk - c0);
    r.first = (uint32_t)c0;
    r.count = live ? nb : 0;
    RowBatch<BITS> pre;
    fetch_batch<BITS>(r, lane, G, pre);  // in flight while x is staged
    stage_rows(xs, nb, c0 * 32, a.x, a.xdt, a.ldx, sh.rows, tt, map, vec);
    __syncthreads();
    row_chunk<BITS>(r, &pre, xs, nb * kPitch, lane, G, tt, acc);
    __syncthreads();
  }
  const float sk = live ? d.sigma[bd.r0 + j] * a.scale : 0.f;
#pragma unroll
  for (int i = 0; i < kTile; ++i) {
    const float v = group_sum<G>(acc[i], red);
    if (lane == 0 && i < tt) a.t[(uint64_t)sh.rows[i] * a.ldt + kv] = v * sk;
  }
}

template <int G>
__global__ void __launch_bounds__(kP1Threads, 4) phase1_kernel(P1Args a) {
  extern __shared__ float4 dyn_smem[];
  float* xs = reinterpret_cast<float*>(dyn_smem);
  __shared__ float red[kP1Threads];
  __shared__ TileShared sh;
  resolve_tile(sh, a.sel, a.m);
  const DeltaDesc& d = sh.d;
  if (sh.tt == 0 || sh.slot < 0 || d.kind != DC_KIND_LOWRANK) return;  // uniform
  const uint32_t col0 = blockIdx.x * (kP1Threads / G);
  if (col0 >= d.t_stride) return;  // uniform
  // kP1Threads / G columns per block divide 32, so the block lies inside one band's span.
  uint32_t b = 0;
  while (b + 1 < d.n_bands && col0 >= d.bands[b + 1].t_off) ++b;
  const BandDesc& bd = d.bands[b];
  with_bits(bd.bits, [&](auto bits) { phase1_body<decltype(bits)::value, G>(a, sh, bd, xs, red); });
}

// ---- rows kernel -----------------------------------------------------------------------------------
// The base weight row W_o: lane `sub` takes pieces of 8 elements e ≡ sub (mod kRowLanes) of the
// staged chunk, eight pieces (128 bytes) per batch with every load issued first (16-bit weights,
// 16-byte aligned rows, cols % 8 == 0); the other warps of the SM cover a batch's latency.
struct DenseBatch {
  uint4 r[8];
};

__device__ __forceinline__ void dense_fetch(const uint16_t* __restrict__ wrow, uint64_t p0, int n8, int u0, int sub,
                                            DenseBatch& b) {
#pragma unroll
  for (int u = 0; u < 8; ++u) {
    const int e = sub + kRowLanes * (u0 + u);
    b.r[u] = e < n8 ? *reinterpret_cast<const uint4*>(wrow + p0 + (uint64_t)e * 8) : make_uint4(0, 0, 0, 0);
  }
}

__device__ __forceinline__ void dense_compute(const DenseBatch& b, bool bf, int n8, int u0, int sub, const float* xs,
                                              int tstride, int tt, float acc[kTile]) {
#pragma unroll
  for (int u = 0; u < 8; ++u) {
    const int e = sub + kRowLanes * (u0 + u);
    if (e >= n8) break;
    const uint32_t a[4] = {b.r[u].x, b.r[u].y, b.r[u].z, b.r[u].w};
    float wv[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const uint16_t h = (uint16_t)(a[k / 2] >> (16 * (k % 2)));
      wv[k] = bf ? bf16_to_f32(h) : f16_to_f32(h);
    }
    const float* xb = xs + (e >> 2) * kPitch + (e & 3) * 8;
#pragma unroll
    for (int i = 0; i < kTile; ++i) {
      if (i < tt) {
        const float4 p = reinterpret_cast<const float4*>(xb + i * tstride)[0];
        const float4 q = reinterpret_cast<const float4*>(xb + i * tstride)[1];
        float s = acc[i];
        s = fmaf(wv[0], p.x, s); s = fmaf(wv[1], p.y, s); s = fmaf(wv[2], p.z, s); s = fmaf(wv[3], p.w, s);
        s = fmaf(wv[4], q.x, s); s = fmaf(wv[5], q.y, s); s = fmaf(wv[6], q.z, s); s = fmaf(wv[7], q.w, s);
        acc[i] = s;
      }
    }
  }
}

// Any dtype, any alignment: one element at a time.
__device__ __forceinline__ void dense_generic(const void* wrow, int wdt, uint64_t p0, int nb, uint64_t cols, int sub,
                                             const float* xs, int tstride, int tt, float acc[kTile]) {
  const int n = nb * 32;
#pragma unroll 1
  for (int q = sub; q < n; q += kRowLanes) {
    const uint64_t p = p0 + q;
    const float w = p < cols ? load_any(wrow, p, wdt) : 0.f;
    const float* xb = xs + (q >> 5) * kPitch + (q & 31);
#pragma unroll
    for (int i = 0; i < kTile; ++i)
      if (i < tt) acc[i] = fmaf(w, xb[i * tstride], acc[i]);
  }
}

struct RowsLaunch {
  RowsArgs a;
  DeltaSel sel;
  bool wvec;        // W: 16-bit, rows 16-byte aligned, cols % 8 == 0
  bool xvec, tvec;  // x / t 16-byte aligned (vector staging)
  int cb_t, cb_x;   // staged blocks per chunk of t / of x
};

// Û row o of band bd over the t blocks [lo, hi) (absolute, inside the band) staged from block c0.
template <int BITS>
__device__ __forceinline__ void u_band(const BandDesc& bd, uint64_t o, uint32_t lo, uint32_t hi, uint32_t c0,
                                       const float* xs, int tstride, int sub, int tt, float acc[kTile]) {
  const uint32_t bb0 = bd.t_off / 32;
  PackedRow r{};
  r.row = bd.u_codes + o * bd.u_row_words;
  r.qp = BITS == 16 ? nullptr : bd.u_qp + o * bd.u_row_groups;
  r.gb = BITS == 16 ? 1 : bd.group_size / 32;
  r.s0 = 1.f;
  r.z0 = 0.f;
  r.first = lo - bb0;
  r.count = (int)(hi - lo);
  row_chunk<BITS>(r, nullptr, xs + (lo - c0) * kPitch, tstride, sub, kRowLanes, tt, acc);
}

__global__ void __launch_bounds__(kRowThreads, 4) rows_kernel(RowsLaunch L) {
  extern __shared__ float4 dyn_smem[];
  float* xs = reinterpret_cast<float*>(dyn_smem);
  __shared__ TileShared sh;
  const RowsArgs& a = L.a;
  resolve_tile(sh, L.sel, a.m);
  if (sh.tt == 0) return;                                         // uniform
  if ((uint64_t)blockIdx.x * kRowsPerBlock >= a.rows) return;     // uniform
  const DeltaDesc& d = sh.d;
  const int kind = sh.slot >= 0 ? d.kind : -1;
  const int tt = sh.tt, sub = threadIdx.x % kRowLanes;
  const uint64_t o = (uint64_t)blockIdx.x * kRowsPerBlock + threadIdx.x / kRowLanes;
  const bool active = o < a.rows;
  const uint64_t orow = active ? o : 0;
  float acc[kTile], accw[kTile];
#pragma unroll
  for (int i = 0; i < kTile; ++i) acc[i] = accw[i] = 0.f;
  if (kind == DC_KIND_LOWRANK && d.t_stride > 0) {
    const uint32_t nblk = d.t_stride / 32;
    const ColMap map{nullptr, 0, d.t_stride, d.t_stride};
    for (uint32_t c0 = 0; c0 < nblk; c0 += L.cb_t) {
      const uint32_t nb = (uint32_t)umin64(L.cb_t, nblk - c0);
      stage_rows(xs, (int)nb, (uint64_t)c0 * 32, a.t, DC_DTYPE_F32, a.ldt, sh.rows, tt, map, L.tvec);
      __syncthreads();
      if (active) {
        for (uint32_t b = 0; b < d.n_bands; ++b) {
          const BandDesc& bd = d.bands[b];
          const uint32_t bb0 = bd.t_off / 32, bb1 = bb0 + span_of(bd) / 32;
          const uint32_t lo = bb0 > c0 ? bb0 : c0, hi = bb1 < c0 + nb ? bb1 : c0 + nb;
          if (lo >= hi) continue;
          const int ts = (int)nb * kPitch;
          with_bits(bd.bits,
                    [&](auto bits) { u_band<decltype(bits)::value>(bd, orow, lo, hi, c0, xs, ts, sub, tt, acc); });
        }
      }
      __syncthreads();
    }
  }
  const bool signs = kind == DC_KIND_BITDELTA;
  if (signs || a.W != nullptr) {
    const uint64_t nblk = (a.cols + 31) / 32;
    const ColMap map{nullptr, 0, a.cols, a.cols};
    PackedRow sr{};
    if (signs) {
      sr.row = d.signs + orow * d.sign_row_words;
      sr.gb = 1;
      sr.s0 = 2.f * d.bitdelta_scale * a.scale;
      sr.z0 = 0.5f;
    }
    const size_t wes = a.wdt == DC_DTYPE_F32 ? 4 : 2;
    const void* wrow = a.W != nullptr ? static_cast<const char*>(a.W) + orow * a.ldw * wes : nullptr;
    const uint16_t* w16 = static_cast<const uint16_t*>(wrow);
    const bool bf = a.wdt == DC_DTYPE_BF16;
    for (uint64_t c0 = 0; c0 < nblk; c0 += L.cb_x) {
      const int nb = (int)umin64(L.cb_x, nblk - c0);
      const uint64_t p0 = c0 * 32;
      // pieces of 8 inside the matrix (cols % 8 == 0 on the vector path)
      const int n8 = (int)((umin64(p0 + (uint64_t)nb * 32, a.cols) - p0) / 8);
      DenseBatch cur;
      if (active && wrow != nullptr && L.wvec) dense_fetch(w16, p0, n8, 0, sub, cur);  // overlaps the staging
      stage_rows(xs, nb, p0, a.x, a.xdt, a.ldx, sh.rows, tt, map, L.xvec);
      __syncthreads();
      if (active) {
        const int ts = nb * kPitch;
        if (signs) {
          sr.first = (uint32_t)c0;
          sr.count = nb;
          row_chunk<1>(sr, nullptr, xs, ts, sub, kRowLanes, tt, acc);
        }
        if (wrow != nullptr && L.wvec) {
          const int per_lane = (n8 - sub + kRowLanes - 1) / kRowLanes;
          dense_compute(cur, bf, n8, 0, sub, xs, ts, tt, accw);
#pragma unroll 1
          for (int u0 = 8; u0 < per_lane; u0 += 8) {
            dense_fetch(w16, p0, n8, u0, sub, cur);
            dense_compute(cur, bf, n8, u0, sub, xs, ts, tt, accw);
          }
        } else if (wrow != nullptr) {
          dense_generic(wrow, a.wdt, p0, nb, a.cols, sub, xs, ts, tt, accw);
        }
      }
      __syncthreads();
    }
  }
#pragma unroll
  for (int i = 0; i < kTile; ++i) {
    const float v = seg_sum<kRowLanes>(fmaf(a.alpha_w, accw[i], acc[i]));
    if (active && sub == 0 && i < tt) {
      const uint64_t at = (uint64_t)sh.rows[i] * a.ldy + o;
      store_or_add(a.y, at, a.ydt, a.accumulate, v);
    }
  }
}

__global__ void bias_kernel(const void* dense, int ddt, uint64_t rows, uint64_t m, void* y, int ydt, uint64_t ldy,
                            float scale) {
  const uint64_t n = rows * m;
  for (uint64_t e = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; e < n; e += (uint64_t)gridDim.x * blockDim.x) {
    const uint64_t i = e / rows, o = e % rows;
    store_any(y, i * ldy + o, ydt, load_any(y, i * ldy + o, ydt) + scale * load_any(dense, o, ddt));
  }
}

// ---- host side ---------------------------------------------------------------------------------------
int tile_rows(uint64_t m) { return (int)std::min<uint64_t>(kTile, m); }
// Blocks of 32 positions staged per chunk: as many as the shared-memory budget holds for `tt`
// rows, at most `nblk`.
int chunk_blocks(uint64_t nblk, int tt) {
  const int cap = kStageBytes / (kPitch * 4 * tt);
  return (int)std::max<uint64_t>(1, std::min<uint64_t>((uint64_t)cap, nblk));
}
size_t stage_bytes(int cb, int tt) { return (size_t)cb * tt * kPitch * 4; }

}  // namespace

cudaError_t launch_phase1(const LaunchCfg& c, const DeltaSel& s, const void* x, int xdt, uint64_t ldx, uint64_t m,
                          float* t, uint64_t ldt, float scale) {
  if (m == 0 || s.max_t_stride == 0) return cudaSuccess;
  if (s.row_slot != nullptr) return cudaErrorNotSupported;  // batches: launch_persist / launch_vec
  const int tt = tile_rows(m);
  P1Args a{};
  a.sel = s;
  a.x = x;
  a.xdt = xdt;
  a.xvec = aligned16(x, ldx, dtype_size(xdt));
  a.ldx = ldx;
  a.m = m;
  a.t = t;
  a.ldt = ldt;
  a.scale = scale;
  a.cb = chunk_blocks((s.max_v_len + 31) / 32, tt);
  const unsigned tiles = (unsigned)((m + kTile - 1) / kTile);
  const unsigned cols_per_block = (unsigned)(kP1Threads / c.group);
  const dim3 grid((unsigned)((s.max_t_stride + cols_per_block - 1) / cols_per_block), tiles);
  const size_t smem = stage_bytes(a.cb, tt);
  if (c.group == 64)
    phase1_kernel<64><<<grid, kP1Threads, smem, c.stream>>>(a);
  else
    phase1_kernel<32><<<grid, kP1Threads, smem, c.stream>>>(a);
  return cudaGetLastError();
}

cudaError_t launch_rows(const LaunchCfg& c, const DeltaSel* sel, const RowsArgs& a) {
  if (a.m == 0 || a.rows == 0) return cudaSuccess;
  if (sel && sel->row_slot != nullptr) return cudaErrorNotSupported;  // batches: launch_persist / launch_vec
  RowsLaunch L{};
  L.a = a;
  if (sel) L.sel = *sel;  // else count 0: no delta
  L.wvec = a.W != nullptr && a.wdt != DC_DTYPE_F32 && a.cols % 8 == 0 && aligned16(a.W, a.ldw, 2);
  L.xvec = aligned16(a.x, a.ldx, dtype_size(a.xdt));
  L.tvec = a.t != nullptr && aligned16(a.t, a.ldt, 4);
  const int tt = tile_rows(a.m);
  L.cb_t = chunk_blocks(sel ? std::max<uint32_t>(sel->max_t_stride / 32, 1) : 1, tt);
  L.cb_x = chunk_blocks((a.cols + 31) / 32, tt);
  const unsigned tiles = (unsigned)((a.m + kTile - 1) / kTile);
  const dim3 grid((unsigned)((a.rows + kRowsPerBlock - 1) / kRowsPerBlock), tiles);
  const size_t smem = stage_bytes(std::max(L.cb_t, L.cb_x), tt);
  (void)c.group;  // the rows kernel's lane groups (kRowLanes) fit any hardware warp
  rows_kernel<<<grid, kRowThreads, smem, c.stream>>>(L);
  return cudaGetLastError();
}

cudaError_t launch_gemv(const LaunchCfg& c, const void* W, int wdt, uint64_t ldw, uint64_t rows, uint64_t cols,
                        const void* x, int xdt, uint64_t ldx, uint64_t m, void* y, int ydt, uint64_t ldy, float alpha,
                        bool accumulate) {
  RowsArgs a{};
  a.m = m;
  a.rows = rows;
  a.cols = cols;
  a.x = x;
  a.xdt = xdt;
  a.ldx = ldx;
  a.y = y;
  a.ydt = ydt;
  a.ldy = ldy;
  a.W = W;
  a.wdt = wdt;
  a.ldw = ldw;
  a.alpha_w = alpha;
  a.scale = 1.f;
  a.accumulate = accumulate;
  for (uint64_t i0 = 0; i0 < m; i0 += kMaxTokens) {  // tiles per launch stay bounded
    a.m = std::min<uint64_t>(kMaxTokens, m - i0);
    a.x = static_cast<const char*>(x) + i0 * ldx * dtype_size(xdt);
    a.y = static_cast<char*>(y) + i0 * ldy * dtype_size(ydt);
    const cudaError_t e = a.m == 1 ? launch_vec(c, nullptr, a) : launch_rows(c, nullptr, a);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

cudaError_t launch_bias(const LaunchCfg& c, const DeltaDesc& d, uint64_t m, void* y, int ydt, uint64_t ldy,
                        float scale) {
  const uint64_t n = d.rows * m;
  const unsigned blocks = (unsigned)std::min<uint64_t>((n + 255) / 256, 4096);
  bias_kernel<<<blocks, 256, 0, c.stream>>>(d.dense, d.dtype, d.rows, m, y, ydt, ldy, scale);
  return cudaGetLastError();
}

}  // namespace dcg

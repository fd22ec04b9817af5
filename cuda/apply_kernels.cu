// The decode-size (m ≤ 64) apply kernels. One group of G threads per packed row (a singular
// vector in phase 1, an output feature in phase 2); each block stages the activations of its
// tile (x in phase 1, t in phase 2) as fp32 in shared memory once, and every group of the block
// reads them from there. Codes are dequantized in registers, accumulation is fp32.
//
// Instantiations: phase1_kernel<G> and rows_kernel<G> for G = 32 and 64, nothing per dtype or
// token count (see row_dot.cuh), so each architecture compiles in seconds.
#include <algorithm>

#include "apply_kernels.cuh"
#include "row_dot.cuh"

namespace dcg {
namespace {

__device__ __forceinline__ uint64_t umin64(uint64_t a, uint64_t b) { return a < b ? a : b; }
__device__ __forceinline__ uint32_t span_of(const BandDesc& b) { return (b.r1 - b.r0 + 31) & ~31u; }

// Column kv of t (bands padded to 32 columns): its band and index inside it; pad = zero column.
struct TCol {
  uint32_t band, j;
  bool valid, pad;
};
__device__ __forceinline__ TCol tcol_of(const DeltaDesc& d, uint32_t kv) {
  for (uint32_t b = 0; b < d.n_bands; ++b) {
    const BandDesc& bd = d.bands[b];
    if (kv >= bd.t_off && kv < bd.t_off + span_of(bd)) {
      const uint32_t j = kv - bd.t_off;
      return TCol{b, j, true, j >= bd.r1 - bd.r0};
    }
  }
  return TCol{0, 0, false, false};
}

// Shared state of one block: its tile of rows and its delta's descriptor.
struct TileShared {
  DeltaDesc d;
  int rows[kTile];
  int tt;    // rows in the tile (0: this block has nothing to do)
  int slot;  // -1: no delta
  int32_t slots[kMaxTokens];
};

// Resolves blockIdx.y into a tile. Single delta (row_slot null): rows [y·kTile, …). Batched: the
// block leads a tile if row y is the (multiple of kTile)-th row of its slot; the tile holds that
// slot's next rows. Every thread must call this (it synchronises).
__device__ void resolve_tile(TileShared& sh, const DeltaDesc* table, uint32_t count, const int32_t* row_slot,
                             uint64_t m) {
  const int y = blockIdx.y;
  if (row_slot != nullptr && threadIdx.x < m) sh.slots[threadIdx.x] = row_slot[threadIdx.x];
  __syncthreads();
  if (threadIdx.x == 0) {
    int tt = 0, slot = -1;
    if (row_slot == nullptr) {
      const uint64_t r0 = (uint64_t)y * kTile;
      if (r0 < m) {
        tt = (int)umin64(kTile, m - r0);
        for (int i = 0; i < tt; ++i) sh.rows[i] = (int)(r0 + i);
        slot = table != nullptr ? 0 : -1;
      }
    } else if ((uint64_t)y < m) {
      const int32_t s = sh.slots[y];
      if (s >= 0 && (uint32_t)s < count) {
        int rank = 0;
        for (int k = 0; k < y; ++k) rank += sh.slots[k] == s;
        if (rank % kTile == 0) {
          for (int k = y; k < (int)m && tt < kTile; ++k)
            if (sh.slots[k] == s) sh.rows[tt++] = k;
          slot = s;
        }
      }
    }
    sh.tt = tt;
    sh.slot = slot;
  }
  __syncthreads();
  if (sh.tt > 0 && sh.slot >= 0) {  // copy the descriptor into shared memory (uniform branch)
    const uint32_t* src = reinterpret_cast<const uint32_t*>(table + sh.slot);
    uint32_t* dst = reinterpret_cast<uint32_t*>(&sh.d);
    for (int w = threadIdx.x; w < (int)(sizeof(DeltaDesc) / 4); w += blockDim.x) dst[w] = src[w];
  }
  __syncthreads();
}

template <int G>
__global__ void __launch_bounds__(kThreads, 2) phase1_kernel(DeltaSel sel, const void* __restrict__ x, int xdt,
                                                             uint64_t ldx, uint64_t m, float* __restrict__ t,
                                                             uint64_t ldt, float scale, int cb) {
  extern __shared__ float4 dyn_smem[];
  float* xs = reinterpret_cast<float*>(dyn_smem);
  __shared__ float red[kThreads];
  __shared__ TileShared sh;
  resolve_tile(sh, sel.table, sel.count, sel.row_slot, m);
  const DeltaDesc& d = sh.d;
  if (sh.tt == 0 || sh.slot < 0 || d.kind != DC_KIND_LOWRANK) return;           // uniform
  if ((uint64_t)blockIdx.x * (kThreads / G) >= d.t_stride) return;               // uniform
  const int tt = sh.tt, lane = threadIdx.x % G;
  const uint32_t kv = blockIdx.x * (kThreads / G) + threadIdx.x / G;
  const TCol c = tcol_of(d, kv < d.t_stride ? kv : ~0u);
  const bool live = c.valid && !c.pad;
  PlainRowFetch f{};
  if (live) {
    const BandDesc& bd = d.bands[c.band];
    f.row = bd.v_codes + (uint64_t)c.j * bd.v_row_words;
    f.qp = bd.bits == 16 ? nullptr : bd.v_qp + (uint64_t)c.j * bd.v_row_groups;
    f.bits = bd.bits;
    f.gb = bd.group_size >= 32 ? bd.group_size / 32 : 1;
    f.s0 = 1.f;
    f.z0 = 0.f;
  }
  const ColMap map{d.perm, d.v_col_offset, d.cols, d.v_len};
  const uint64_t nblk = (d.v_len + 31) / 32;
  float acc[kTile];
#pragma unroll
  for (int i = 0; i < kTile; ++i) acc[i] = 0.f;
  for (uint64_t c0 = 0; c0 < nblk; c0 += cb) {
    const int nb = (int)umin64(cb, nblk - c0);
    stage_rows(xs, nb, c0 * 32, x, xdt, ldx, sh.rows, tt, map);
    __syncthreads();
    if (live) {
      f.b0 = c0;
      chunk_dot<G>(f, nb, xs, lane, tt, acc);
    }
    __syncthreads();
  }
  const float sk = live ? d.sigma[d.bands[c.band].r0 + c.j] * scale : 0.f;
#pragma unroll
  for (int i = 0; i < kTile; ++i) {
    const float v = group_sum<G>(acc[i], red);
    if (c.valid && lane == 0 && i < tt) t[(uint64_t)sh.rows[i] * ldt + kv] = v * sk;
  }
}

// acc[m] += W_o[p0 + …]·x_m over one staged chunk of nb blocks; lanes take 8 consecutive weights
// (one 16-byte load when `vec`), four loads in flight before any math.
template <int G>
__device__ __forceinline__ void dense_chunk(const void* wrow, int wdt, bool vec, uint64_t p0, int nb, uint64_t cols,
                                            const float* xs, int lane, int tt, float acc[kTile]) {
  const int n8 = nb * 4, tstride = nb * kPitch;
  const bool f32 = wdt == DC_DTYPE_F32;
  const size_t es = f32 ? 4 : 2;
  for (int e0 = lane; e0 < n8; e0 += 4 * G) {
    uint4 ra[4], rb[4];
    bool fast[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int e = e0 + u * G;
      const uint64_t pos = p0 + (uint64_t)e * 8;
      fast[u] = vec && e < n8 && pos + 8 <= cols;
      ra[u] = rb[u] = make_uint4(0, 0, 0, 0);
      if (fast[u]) {
        const uint4* p = reinterpret_cast<const uint4*>(static_cast<const char*>(wrow) + pos * es);
        ra[u] = p[0];
        if (f32) rb[u] = p[1];
      }
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int e = e0 + u * G;
      if (e >= n8) break;
      const uint64_t pos = p0 + (uint64_t)e * 8;
      float wv[8];
      if (fast[u]) {
        const uint32_t a[4] = {ra[u].x, ra[u].y, ra[u].z, ra[u].w};
        if (f32) {
          const uint32_t b[4] = {rb[u].x, rb[u].y, rb[u].z, rb[u].w};
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            wv[j] = __uint_as_float(a[j]);
            wv[4 + j] = __uint_as_float(b[j]);
          }
        } else if (wdt == DC_DTYPE_F16) {
#pragma unroll
          for (int j = 0; j < 8; ++j) wv[j] = f16_to_f32((uint16_t)(a[j / 2] >> (16 * (j % 2))));
        } else {
#pragma unroll
          for (int j = 0; j < 8; ++j) wv[j] = bf16_to_f32((uint16_t)(a[j / 2] >> (16 * (j % 2))));
        }
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) wv[j] = pos + j < cols ? load_any(wrow, pos + j, wdt) : 0.f;
      }
      const float* xb = xs + (e >> 2) * kPitch + (e & 3) * 8;
#pragma unroll
      for (int i = 0; i < kTile; ++i) {
        if (i < tt) {
          const float4 a = reinterpret_cast<const float4*>(xb + i * tstride)[0];
          const float4 b = reinterpret_cast<const float4*>(xb + i * tstride)[1];
          float s = acc[i];
          s = fmaf(wv[0], a.x, s); s = fmaf(wv[1], a.y, s); s = fmaf(wv[2], a.z, s); s = fmaf(wv[3], a.w, s);
          s = fmaf(wv[4], b.x, s); s = fmaf(wv[5], b.y, s); s = fmaf(wv[6], b.z, s); s = fmaf(wv[7], b.w, s);
          acc[i] = s;
        }
      }
    }
  }
}

struct RowsLaunch {
  RowsArgs a;
  DeltaSel sel;  // table null: no delta
  bool wvec;
  int cb_t, cb_x;  // staged blocks per chunk of t / of x
};

template <int G>
__global__ void __launch_bounds__(kThreads, 2) rows_kernel(RowsLaunch L) {
  extern __shared__ float4 dyn_smem[];
  float* xs = reinterpret_cast<float*>(dyn_smem);
  __shared__ float red[kThreads];
  __shared__ TileShared sh;
  const RowsArgs& a = L.a;
  resolve_tile(sh, L.sel.table, L.sel.count, L.sel.row_slot, a.m);
  if (sh.tt == 0) return;                                              // uniform
  if ((uint64_t)blockIdx.x * (kThreads / G) >= a.rows) return;         // uniform
  const DeltaDesc& d = sh.d;
  const int kind = sh.slot >= 0 ? d.kind : -1;
  const int tt = sh.tt, lane = threadIdx.x % G;
  const uint64_t o = (uint64_t)blockIdx.x * (kThreads / G) + threadIdx.x / G;
  const bool active = o < a.rows;
  float acc[kTile], accw[kTile];
#pragma unroll
  for (int i = 0; i < kTile; ++i) acc[i] = accw[i] = 0.f;
  if (kind == DC_KIND_LOWRANK && d.t_stride > 0) {
    const uint64_t nblk = d.t_stride / 32;
    const ColMap map{nullptr, 0, d.t_stride, d.t_stride};
    URowFetch f{&d, o, 0};
    for (uint64_t c0 = 0; c0 < nblk; c0 += L.cb_t) {
      const int nb = (int)umin64(L.cb_t, nblk - c0);
      stage_rows(xs, nb, c0 * 32, a.t, DC_DTYPE_F32, a.ldt, sh.rows, tt, map);
      __syncthreads();
      if (active) {
        f.b0 = c0;
        chunk_dot<G>(f, nb, xs, lane, tt, acc);
      }
      __syncthreads();
    }
  }
  const bool signs = kind == DC_KIND_BITDELTA;
  if (signs || a.W != nullptr) {
    const uint64_t nblk = (a.cols + 31) / 32;
    const ColMap map{nullptr, 0, a.cols, a.cols};
    PlainRowFetch f{};
    if (signs) {
      f.row = d.signs + (active ? o : 0) * d.sign_row_words;
      f.bits = 1;
      f.gb = 1;
      f.s0 = 2.f * d.bitdelta_scale * a.scale;
      f.z0 = 0.5f;
    }
    const size_t wes = a.wdt == DC_DTYPE_F32 ? 4 : 2;
    const void* wrow = a.W != nullptr ? static_cast<const char*>(a.W) + (active ? o : 0) * a.ldw * wes : nullptr;
    for (uint64_t c0 = 0; c0 < nblk; c0 += L.cb_x) {
      const int nb = (int)umin64(L.cb_x, nblk - c0);
      stage_rows(xs, nb, c0 * 32, a.x, a.xdt, a.ldx, sh.rows, tt, map);
      __syncthreads();
      if (active) {
        if (signs) {
          f.b0 = c0;
          chunk_dot<G>(f, nb, xs, lane, tt, acc);
        }
        if (wrow != nullptr) dense_chunk<G>(wrow, a.wdt, L.wvec, c0 * 32, nb, a.cols, xs, lane, tt, accw);
      }
      __syncthreads();
    }
  }
#pragma unroll
  for (int i = 0; i < kTile; ++i) {
    const float v = group_sum<G>(fmaf(a.alpha_w, accw[i], acc[i]), red);
    if (active && lane == 0 && i < tt) {
      const uint64_t at = (uint64_t)sh.rows[i] * a.ldy + o;
      store_any(a.y, at, a.ydt, (a.accumulate ? load_any(a.y, at, a.ydt) : 0.f) + v);
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
unsigned row_blocks(uint64_t n, int group) { return (unsigned)((n + kThreads / group - 1) / (kThreads / group)); }
bool aligned16(const void* p, uint64_t ld, size_t es) {
  return (reinterpret_cast<uintptr_t>(p) % 16) == 0 && (ld * es) % 16 == 0;
}
size_t dtype_size(int dt) { return dt == DC_DTYPE_F32 ? 4 : 2; }
int tile_rows(uint64_t m) { return (int)std::min<uint64_t>(kTile, m); }
// Blocks of 32 positions staged per chunk: as many as the shared-memory budget holds for `tt`
// rows (a multiple of the group width when more than one group's worth fits), at most `nblk`.
int chunk_blocks(uint64_t nblk, int tt, int group) {
  int cap = kStageBytes / (kPitch * 4 * tt);
  if (cap >= group) cap = cap / group * group;
  return (int)std::max<uint64_t>(1, std::min<uint64_t>((uint64_t)cap, nblk));
}
size_t stage_bytes(int cb, int tt) { return (size_t)cb * tt * kPitch * 4; }

}  // namespace

cudaError_t launch_phase1(const LaunchCfg& c, const DeltaSel& s, const void* x, int xdt, uint64_t ldx, uint64_t m,
                          float* t, uint64_t ldt, float scale) {
  if (m == 0 || s.max_t_stride == 0) return cudaSuccess;
  const int tt = tile_rows(m);
  const int cb = chunk_blocks((s.max_v_len + 31) / 32, tt, c.group);
  const unsigned tiles = s.row_slot ? (unsigned)m : (unsigned)((m + kTile - 1) / kTile);
  const dim3 grid(row_blocks(s.max_t_stride, c.group), tiles);
  const size_t smem = stage_bytes(cb, tt);
  if (c.group == 64)
    phase1_kernel<64><<<grid, kThreads, smem, c.stream>>>(s, x, xdt, ldx, m, t, ldt, scale, cb);
  else
    phase1_kernel<32><<<grid, kThreads, smem, c.stream>>>(s, x, xdt, ldx, m, t, ldt, scale, cb);
  return cudaGetLastError();
}

cudaError_t launch_rows(const LaunchCfg& c, const DeltaSel* sel, const RowsArgs& a) {
  if (a.m == 0 || a.rows == 0) return cudaSuccess;
  RowsLaunch L{};
  L.a = a;
  if (sel) L.sel = *sel;
  L.wvec = a.W != nullptr && aligned16(a.W, a.ldw, dtype_size(a.wdt));
  const int tt = tile_rows(a.m);
  L.cb_t = chunk_blocks(sel ? sel->max_t_stride / 32 : 1, tt, c.group);
  L.cb_x = chunk_blocks((a.cols + 31) / 32, tt, c.group);
  const unsigned tiles = (sel && sel->row_slot) ? (unsigned)a.m : (unsigned)((a.m + kTile - 1) / kTile);
  const dim3 grid(row_blocks(a.rows, c.group), tiles);
  const size_t smem = stage_bytes(std::max(L.cb_t, L.cb_x), tt);
  if (c.group == 64)
    rows_kernel<64><<<grid, kThreads, smem, c.stream>>>(L);
  else
    rows_kernel<32><<<grid, kThreads, smem, c.stream>>>(L);
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
    const cudaError_t e = launch_rows(c, nullptr, a);
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

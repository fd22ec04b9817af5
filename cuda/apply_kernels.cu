// The decode-size (m ≤ 64) apply kernels: one group of G threads per packed row, codes dequantized
// in registers, fp32 accumulation. Phase 1 streams V̂ (one group per singular vector), phase 2
// streams Û (one group per output row), optionally fused with the base GEMV. Every kernel is one
// launch whatever the number of bands: the band width is a uniform switch per row.
#include <algorithm>

#include "apply_kernels.cuh"
#include "row_dot.cuh"

namespace dcg {
namespace {

__device__ __forceinline__ uint64_t blocks_of(uint64_t len) { return (len + 31) / 32; }
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

// x_i · V̂ row for t column c (MT tokens), shared by the single-delta and batched kernels.
template <int MT, class XT, int G>
__device__ __forceinline__ void v_row(const DeltaDesc& d, const TCol& c, const typename XT::T* x, uint64_t ldx,
                                      bool xvec, int mt, int lane, float acc[MT]) {
  const BandDesc& bd = d.bands[c.band];
  const XMap map{d.perm, d.v_col_offset, d.cols, d.v_len, xvec};
  band_row_dot<MT, XT, G>(bd.bits, bd.v_codes + (uint64_t)c.j * bd.v_row_words, bd.v_qp + (uint64_t)c.j * bd.v_row_groups,
                          bd.group_size, blocks_of(d.v_len), x, ldx, mt, map, lane, acc);
}

// Σ_k t[k]·Û[o][k] for output row o, over every band (t zero-padded per band: full aligned blocks).
template <int MT, int G>
__device__ __forceinline__ void u_row(const DeltaDesc& d, uint64_t o, const float* t, uint64_t ldt, int mt, int lane,
                                      float acc[MT]) {
  for (uint32_t b = 0; b < d.n_bands; ++b) {
    const BandDesc& bd = d.bands[b];
    const uint32_t span = span_of(bd);
    const XMap map{nullptr, 0, span, span, true};
    band_row_dot<MT, F32, G>(bd.bits, bd.u_codes + o * bd.u_row_words, bd.u_qp + o * bd.u_row_groups, bd.group_size,
                             span / 32, t + bd.t_off, ldt, mt, map, lane, acc);
  }
}

template <int G, int MT, class XT>
__global__ void __launch_bounds__(kThreads) phase1_kernel(DeltaDesc d, const typename XT::T* __restrict__ x,
                                                          uint64_t ldx, bool xvec, uint64_t m, float* __restrict__ t,
                                                          uint64_t ldt, float scale) {
  __shared__ float red[kThreads];
  const int lane = threadIdx.x % G;
  const uint32_t kv = blockIdx.x * (kThreads / G) + threadIdx.x / G;
  const uint64_t m0 = (uint64_t)blockIdx.y * MT;
  const int mt = (int)min((uint64_t)MT, m - m0);
  float acc[MT];
#pragma unroll
  for (int i = 0; i < MT; ++i) acc[i] = 0.f;
  const TCol c = tcol_of(d, kv < d.t_stride ? kv : ~0u);
  if (c.valid && !c.pad) v_row<MT, XT, G>(d, c, x + m0 * ldx, ldx, xvec, mt, lane, acc);
  const float sk = (c.valid && !c.pad) ? d.sigma[d.bands[c.band].r0 + c.j] * scale : 0.f;
#pragma unroll
  for (int i = 0; i < MT; ++i) {
    const float v = group_sum<G>(acc[i], red);
    if (c.valid && lane == 0 && i < mt) t[(m0 + i) * ldt + kv] = v * sk;
  }
}

template <int G, int MT, class XT>
__global__ void __launch_bounds__(kThreads) phase2_kernel(DeltaDesc d, const float* __restrict__ t, uint64_t ldt,
                                                          uint64_t m, void* y, int ydt, uint64_t ldy, const void* W,
                                                          int wdt, uint64_t ldw, bool wvec,
                                                          const typename XT::T* __restrict__ x, uint64_t ldx) {
  __shared__ float red[kThreads];
  const int lane = threadIdx.x % G;
  const uint64_t o = (uint64_t)blockIdx.x * (kThreads / G) + threadIdx.x / G;
  const uint64_t m0 = (uint64_t)blockIdx.y * MT;
  const int mt = (int)min((uint64_t)MT, m - m0);
  float acc[MT];
#pragma unroll
  for (int i = 0; i < MT; ++i) acc[i] = 0.f;
  const bool active = o < d.rows;
  if (active) {
    u_row<MT, G>(d, o, t + m0 * ldt, ldt, mt, lane, acc);
    if (W != nullptr) {
      const size_t es = wdt == DC_DTYPE_F32 ? 4 : 2;
      dense_row_dot<MT, XT, G>(static_cast<const char*>(W) + o * ldw * es, wdt, x + m0 * ldx, ldx, d.cols, mt, wvec,
                               lane, acc);
    }
  }
#pragma unroll
  for (int i = 0; i < MT; ++i) {
    const float v = group_sum<G>(acc[i], red);
    if (active && lane == 0 && i < mt) {
      const uint64_t at = (m0 + i) * ldy + o;
      store_any(y, at, ydt, (W != nullptr ? 0.f : load_any(y, at, ydt)) + v);
    }
  }
}

template <int G, int MT, class XT>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const void* W, int wdt, uint64_t ldw, bool wvec, uint64_t rows,
                                                        uint64_t cols, const typename XT::T* __restrict__ x,
                                                        uint64_t ldx, uint64_t m, void* y, int ydt, uint64_t ldy,
                                                        float alpha, bool accumulate) {
  __shared__ float red[kThreads];
  const int lane = threadIdx.x % G;
  const uint64_t o = (uint64_t)blockIdx.x * (kThreads / G) + threadIdx.x / G;
  const uint64_t m0 = (uint64_t)blockIdx.y * MT;
  const int mt = (int)min((uint64_t)MT, m - m0);
  float acc[MT];
#pragma unroll
  for (int i = 0; i < MT; ++i) acc[i] = 0.f;
  const bool active = o < rows;
  if (active) {
    const size_t es = wdt == DC_DTYPE_F32 ? 4 : 2;
    dense_row_dot<MT, XT, G>(static_cast<const char*>(W) + o * ldw * es, wdt, x + m0 * ldx, ldx, cols, mt, wvec, lane,
                             acc);
  }
#pragma unroll
  for (int i = 0; i < MT; ++i) {
    const float v = group_sum<G>(acc[i], red);
    if (active && lane == 0 && i < mt) {
      const uint64_t at = (m0 + i) * ldy + o;
      store_any(y, at, ydt, (accumulate ? load_any(y, at, ydt) : 0.f) + alpha * v);
    }
  }
}

// BitDelta row o: Σ_j (2·bit − 1)·x[j] = 2·Σ bit·x − Σ x.
template <int MT, class XT, int G>
__device__ __forceinline__ void sign_row(const DeltaDesc& d, uint64_t o, const typename XT::T* x, uint64_t ldx,
                                         bool xvec, int mt, int lane, float acc[MT]) {
  float ones[MT], xs[MT];
#pragma unroll
  for (int i = 0; i < MT; ++i) ones[i] = xs[i] = 0.f;
  const XMap map{nullptr, 0, d.cols, d.cols, xvec};
  packed_row_dot<1, MT, XT, G>(d.signs + o * d.sign_row_words, nullptr, 1, blocks_of(d.cols), x, ldx, mt, map, lane,
                               ones, xs);
#pragma unroll
  for (int i = 0; i < MT; ++i) acc[i] += d.bitdelta_scale * (2.f * ones[i] - xs[i]);
}

template <int G, int MT, class XT>
__global__ void __launch_bounds__(kThreads) bitdelta_kernel(DeltaDesc d, const typename XT::T* __restrict__ x,
                                                            uint64_t ldx, bool xvec, uint64_t m, void* y, int ydt, uint64_t ldy,
                                                            float scale) {
  __shared__ float red[kThreads];
  const int lane = threadIdx.x % G;
  const uint64_t o = (uint64_t)blockIdx.x * (kThreads / G) + threadIdx.x / G;
  const uint64_t m0 = (uint64_t)blockIdx.y * MT;
  const int mt = (int)min((uint64_t)MT, m - m0);
  float acc[MT];
#pragma unroll
  for (int i = 0; i < MT; ++i) acc[i] = 0.f;
  const bool active = o < d.rows;
  if (active) sign_row<MT, XT, G>(d, o, x + m0 * ldx, ldx, xvec, mt, lane, acc);
#pragma unroll
  for (int i = 0; i < MT; ++i) {
    const float v = group_sum<G>(acc[i], red);
    if (active && lane == 0 && i < mt) {
      const uint64_t at = (m0 + i) * ldy + o;
      store_any(y, at, ydt, load_any(y, at, ydt) + scale * v);
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

// ---- multi-tenant: one block row per token (grid.y), the slot read on the device -----------------
template <int G, class XT>
__global__ void __launch_bounds__(kThreads) batched_phase1_kernel(const DeltaDesc* __restrict__ table, uint32_t count,
                                                                  const int32_t* __restrict__ row_slot, uint64_t row0,
                                                                  const typename XT::T* __restrict__ x, uint64_t ldx,
                                                                  bool xvec, float* __restrict__ t, uint64_t ldt,
                                                                  float scale) {
  __shared__ float red[kThreads];
  const int lane = threadIdx.x % G;
  const uint32_t kv = blockIdx.x * (kThreads / G) + threadIdx.x / G;
  const uint64_t i = blockIdx.y;
  const int32_t slot = row_slot[row0 + i];
  const DeltaDesc* d = (slot >= 0 && (uint32_t)slot < count) ? &table[slot] : nullptr;
  TCol c{0, 0, false, false};
  if (d != nullptr && d->kind == DC_KIND_LOWRANK && kv < d->t_stride) c = tcol_of(*d, kv);
  float acc[1] = {0.f};
  if (c.valid && !c.pad) v_row<1, XT, G>(*d, c, x + (row0 + i) * ldx, ldx, xvec, 1, lane, acc);
  const float v = group_sum<G>(acc[0], red);
  if (c.valid && lane == 0) t[i * ldt + kv] = c.pad ? 0.f : v * d->sigma[d->bands[c.band].r0 + c.j] * scale;
}

template <int G, class XT>
__global__ void __launch_bounds__(kThreads) batched_phase2_kernel(const DeltaDesc* __restrict__ table, uint32_t count,
                                                                  uint64_t rows, const int32_t* __restrict__ row_slot,
                                                                  uint64_t row0, const float* __restrict__ t,
                                                                  uint64_t ldt, const typename XT::T* __restrict__ x,
                                                                  uint64_t ldx, bool xvec, void* y, int ydt,
                                                                  uint64_t ldy, float scale) {
  __shared__ float red[kThreads];
  const int lane = threadIdx.x % G;
  const uint64_t o = (uint64_t)blockIdx.x * (kThreads / G) + threadIdx.x / G;
  const uint64_t i = blockIdx.y;
  const int32_t slot = row_slot[row0 + i];
  const DeltaDesc* d = (slot >= 0 && (uint32_t)slot < count) ? &table[slot] : nullptr;
  const bool active = d != nullptr && o < rows;
  float acc[1] = {0.f};
  float s = 1.f;
  if (active) {
    if (d->kind == DC_KIND_LOWRANK) {
      u_row<1, G>(*d, o, t + i * ldt, ldt, 1, lane, acc);  // scale already in t
    } else {
      sign_row<1, XT, G>(*d, o, x + (row0 + i) * ldx, ldx, xvec, 1, lane, acc);
      s = scale;
    }
  }
  const float v = group_sum<G>(acc[0], red);
  if (active && lane == 0) {
    const uint64_t at = (row0 + i) * ldy + o;
    store_any(y, at, ydt, load_any(y, at, ydt) + s * v);
  }
}

// ---- dispatch --------------------------------------------------------------------------------------
int pick_mt(uint64_t m) { return m <= 1 ? 1 : 8; }
unsigned row_blocks(uint64_t n, int group) { return (unsigned)((n + kThreads / group - 1) / (kThreads / group)); }
bool aligned16(const void* p, uint64_t ld, size_t es) {
  return (reinterpret_cast<uintptr_t>(p) % 16) == 0 && (ld * es) % 16 == 0;
}
size_t dtype_size(int dt) { return dt == DC_DTYPE_F32 ? 4 : 2; }

// Runs BODY with constexpr G (group), MT (token tile) and type XT chosen from runtime values.
#define DC_WITH_X(xdt, ...)                                                  \
  do {                                                                       \
    if ((xdt) == DC_DTYPE_F16) { using XT = F16; __VA_ARGS__; }              \
    else if ((xdt) == DC_DTYPE_BF16) { using XT = BF16; __VA_ARGS__; }       \
    else { using XT = F32; __VA_ARGS__; }                                    \
  } while (0)
#define DC_WITH_MT(mt, ...)                                                  \
  do {                                                                       \
    if ((mt) == 1) { constexpr int MT = 1; __VA_ARGS__; }                    \
    else { constexpr int MT = 8; __VA_ARGS__; }                              \
  } while (0)
#define DC_WITH_G(group, ...)                                                \
  do {                                                                       \
    if ((group) == 64) { constexpr int G = 64; __VA_ARGS__; }                \
    else { constexpr int G = 32; __VA_ARGS__; }                              \
  } while (0)
#define DC_DISPATCH(group, mt, xdt, ...) \
  DC_WITH_G(group, DC_WITH_MT(mt, DC_WITH_X(xdt, __VA_ARGS__)))
#define DC_DISPATCH_G_X(group, xdt, ...) DC_WITH_G(group, DC_WITH_X(xdt, __VA_ARGS__))

}  // namespace

cudaError_t launch_phase1(const LaunchCfg& c, const DeltaDesc& d, const void* x, int xdt, uint64_t ldx, uint64_t m,
                          float* t, uint64_t ldt, float scale) {
  const int mt = pick_mt(m);
  const dim3 grid(row_blocks(d.t_stride, c.group), (unsigned)((m + mt - 1) / mt));
  const bool xvec = aligned16(x, ldx, dtype_size(xdt));
  DC_DISPATCH(c.group, mt, xdt, phase1_kernel<G, MT, XT><<<grid, kThreads, 0, c.stream>>>(d, static_cast<const typename XT::T*>(x), ldx, xvec, m, t,
                                                              ldt, scale););
  return cudaGetLastError();
}

cudaError_t launch_phase2(const LaunchCfg& c, const DeltaDesc& d, const float* t, uint64_t ldt, uint64_t m, void* y,
                          int ydt, uint64_t ldy, const void* W, int wdt, uint64_t ldw, const void* x, int xdt,
                          uint64_t ldx) {
  const int mt = pick_mt(m);
  const dim3 grid(row_blocks(d.rows, c.group), (unsigned)((m + mt - 1) / mt));
  const bool wvec = W != nullptr && aligned16(W, ldw, dtype_size(wdt)) && aligned16(x, ldx, dtype_size(xdt));
  DC_DISPATCH(c.group, mt, xdt, phase2_kernel<G, MT, XT><<<grid, kThreads, 0, c.stream>>>(d, t, ldt, m, y, ydt, ldy, W, wdt, ldw, wvec,
                                                              static_cast<const typename XT::T*>(x), ldx););
  return cudaGetLastError();
}

cudaError_t launch_gemv(const LaunchCfg& c, const void* W, int wdt, uint64_t ldw, uint64_t rows, uint64_t cols,
                        const void* x, int xdt, uint64_t ldx, uint64_t m, void* y, int ydt, uint64_t ldy, float alpha,
                        bool accumulate) {
  const int mt = pick_mt(m);
  const dim3 grid(row_blocks(rows, c.group), (unsigned)((m + mt - 1) / mt));
  const bool wvec = aligned16(W, ldw, dtype_size(wdt)) && aligned16(x, ldx, dtype_size(xdt));
  DC_DISPATCH(c.group, mt, xdt, gemv_kernel<G, MT, XT><<<grid, kThreads, 0, c.stream>>>(W, wdt, ldw, wvec, rows, cols,
                                                            static_cast<const typename XT::T*>(x), ldx, m, y, ydt, ldy,
                                                            alpha, accumulate););
  return cudaGetLastError();
}

cudaError_t launch_bitdelta(const LaunchCfg& c, const DeltaDesc& d, const void* x, int xdt, uint64_t ldx, uint64_t m,
                            void* y, int ydt, uint64_t ldy, float scale) {
  const int mt = pick_mt(m);
  const dim3 grid(row_blocks(d.rows, c.group), (unsigned)((m + mt - 1) / mt));
  const bool xvec = aligned16(x, ldx, dtype_size(xdt));
  DC_DISPATCH(c.group, mt, xdt, bitdelta_kernel<G, MT, XT><<<grid, kThreads, 0, c.stream>>>(d, static_cast<const typename XT::T*>(x), ldx, xvec, m, y,
                                                                ydt, ldy, scale););
  return cudaGetLastError();
}

cudaError_t launch_bias(const LaunchCfg& c, const DeltaDesc& d, uint64_t m, void* y, int ydt, uint64_t ldy,
                        float scale) {
  const uint64_t n = d.rows * m;
  const unsigned blocks = (unsigned)std::min<uint64_t>((n + 255) / 256, 4096);
  bias_kernel<<<blocks, 256, 0, c.stream>>>(d.dense, d.dtype, d.rows, m, y, ydt, ldy, scale);
  return cudaGetLastError();
}

cudaError_t launch_batched_phase1(const LaunchCfg& c, const DeltaDesc* table, uint32_t count, uint32_t max_rank,
                                  const int32_t* row_slot, uint64_t row0, uint64_t m, const void* x, int xdt,
                                  uint64_t ldx, float* t, uint64_t ldt, float scale) {
  if (max_rank == 0) return cudaSuccess;
  const dim3 grid(row_blocks(max_rank, c.group), (unsigned)m);
  const bool xvec = aligned16(x, ldx, dtype_size(xdt));
  DC_DISPATCH_G_X(c.group, xdt, batched_phase1_kernel<G, XT><<<grid, kThreads, 0, c.stream>>>(table, count, row_slot, row0,
                                                                  static_cast<const typename XT::T*>(x), ldx, xvec, t, ldt,
                                                                  scale););
  return cudaGetLastError();
}

cudaError_t launch_batched_phase2(const LaunchCfg& c, const DeltaDesc* table, uint32_t count, uint64_t rows,
                                  const int32_t* row_slot, uint64_t row0, uint64_t m, const float* t, uint64_t ldt,
                                  const void* x, int xdt, uint64_t ldx, void* y, int ydt, uint64_t ldy, float scale) {
  const dim3 grid(row_blocks(rows, c.group), (unsigned)m);
  const bool xvec = aligned16(x, ldx, dtype_size(xdt));
  DC_DISPATCH_G_X(c.group, xdt, batched_phase2_kernel<G, XT><<<grid, kThreads, 0, c.stream>>>(table, count, rows, row_slot, row0, t, ldt,
                                                                  static_cast<const typename XT::T*>(x), ldx, xvec, y, ydt,
                                                                  ldy, scale););
  return cudaGetLastError();
}

}  // namespace dcg

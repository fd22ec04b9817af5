// The persistent one-launch apply kernel (CUDA): m ≤ kMaxTokens rows of x, each with the same
// low-rank delta (dc_apply_delta_linear) or with its own (multi-tenant batch), in ONE launch.
//
//   prologue  every warp requests the codes of its first two work items of each phase into L2 (V̂
//             rows, Û rows; L1 measured the same) — before waiting on the previous kernel when launched with
//             programmatic dependent launch: a loaded delta is immutable, so its codes may be read
//             while the kernel that writes x still runs;
//   phase 1   t[r][kv] = scale·σ_kv·(x_r·V̂_kv) for the items (row r, column kv of t). x_r is
//             staged in shared memory once per block and row. With the base layer (m = 1), the
//             block's output rows of x·Wᵀ stream meanwhile (W loads bypass L1);
//   barrier   grid-wide, two levels (see grid_barrier). The launch is cooperative, so the driver
//             guarantees that every block is resident, even next to other streams' kernels;
//   phase 2   y[r][o] (+)= base + Σ_k t[r][k]·Û[o][k] for the items (row r, group of 4 outputs),
//             t_r staged from L2 once per block and row.
//
// Why this shape (bench/RESULTS-h100.md): at decode sizes the apply is a chain of dependent round
// trips, not a bandwidth problem, and two launches pay the chain twice. The work is cut into equal
// contiguous ranges of items, one per block, so every SM has work whatever m is (the earlier
// one-launch kernel gave item i to warp i and left half the GPU idle), and inside a block phase-1
// items go to warps 0, 1, … and phase-2 items to warps 7, 6, …, so with few items per block
// (decode) the two kinds run on different warps. For multi-tenant batches the same split makes one
// launch stream every tenant's codes with all SMs busy; the two one-token kernels it replaces gave
// each block one 1 KB row and waited on it (268 GB/s for 32 tenants).
//
// Not on HIP: the grid barrier has not been validated on AMD hardware (none here); HIP keeps the
// two one-token kernels (launch_persist returns cudaErrorNotSupported).
#include <algorithm>
#include <mutex>

#include "apply_kernels.cuh"
#include "vec_dot.cuh"

namespace dcg {

#if !defined(DC_USE_HIP)
namespace {

constexpr int kPThreads = 256;
constexpr int kPWarps = kPThreads / 32;
constexpr int kGroupRows = 32 / kRowLanesV;  // output rows of one phase-2 item (one warp)
constexpr size_t kPSmemLimit = 100 * 1024;   // two blocks per SM fit next to L1

struct PersistArgs {
  DeltaSel sel;              // single apply (row_slot null): sel.one for every row; batch: the table
  RowsArgs io;               // the call (launch_persist's argument; m ≤ kMaxTokens, W only at m = 1)
  unsigned int* barrier;
  bool xvec;                 // x rows 16-byte aligned
  bool wvec;                 // W 16-bit, rows 16-byte aligned, cols % 16 == 0 (two halves of 8s)
  uint32_t T;                // phase-1 items per row: the largest t_stride
  uint32_t G;                // phase-2 items per row: groups of kGroupRows outputs
  uint32_t nbx, nbt;         // staged blocks of 32 of x (max(cols, v_len)) and of t (T)
  unsigned long long* trace; // diagnostics (see trace_at), or null
  bool prefetch_l1;          // prologue requests into L1 (else L2)
};

// Diagnostics (DELTACOME_GPU_PERSIST_TRACE=1): thread 0 of each block records its start time
// (globaltimer, [0]) and the SM clock at its start ([6]) and after each phase ([1..5]).
__device__ __forceinline__ void trace_at(const PersistArgs& a, int k) {
  if (a.trace == nullptr || threadIdx.x != 0 || blockIdx.x >= (unsigned)kTraceBlocks) return;
  unsigned long long* t = a.trace + blockIdx.x * 8;
  if (k == 0) {
    unsigned long long g;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g));
    t[0] = g;
    t[6] = clock64();
  } else {
    t[k] = clock64();
  }
}

__device__ __forceinline__ const DeltaDesc* row_desc(const PersistArgs& a, uint32_t r) {
  const DeltaSel& sel = a.sel;
  if (sel.row_slot == nullptr) return &sel.one;  // parameter space, read in place (__grid_constant__)
  const int32_t s = sel.row_slot[r];
  return (s >= 0 && (uint32_t)s < sel.count) ? sel.table + s : nullptr;
}

__device__ __forceinline__ uint32_t band_of(const DeltaDesc& d, uint32_t kv) {
  uint32_t b = 0;
  while (b + 1 < d.n_bands && kv >= d.bands[b + 1].t_off) ++b;
  return b;
}

// The first item ≥ lo of the arithmetic sequence i0, i0 + step, …
__device__ __forceinline__ uint64_t first_at_or_after(uint64_t i0, uint64_t lo, uint64_t step) {
  return lo <= i0 ? i0 : i0 + (lo - i0 + step - 1) / step * step;
}

__device__ __forceinline__ void prefetch_line(const void* p, bool l1) { l1 ? prefetch_l1(p) : prefetch_l2(p); }

// Requests V̂ row kv's codes, quantization parameters and σ into L1 or L2 (32 bytes per lane).
__device__ __forceinline__ void prefetch_v_row(const DeltaDesc& d, uint32_t kv, int lane, bool l1) {
  if (kv >= d.t_stride) return;
  const BandDesc& bd = d.bands[band_of(d, kv)];
  const uint32_t j = kv - bd.t_off;
  if (j >= bd.r1 - bd.r0) return;
  const char* row = reinterpret_cast<const char*>(bd.v_codes + (uint64_t)j * bd.v_row_words);
  for (uint64_t off = (uint64_t)lane * 32; off < (uint64_t)bd.v_row_words * 4; off += 32 * 32) prefetch_line(row + off, l1);
  if (bd.bits != 16) {
    const char* q = reinterpret_cast<const char*>(bd.v_qp + (uint64_t)j * bd.v_row_groups);
    for (uint64_t off = (uint64_t)lane * 32; off < (uint64_t)bd.v_row_groups * 4; off += 32 * 32) prefetch_line(q + off, l1);
  }
  if (lane == 0) prefetch_line(d.sigma + bd.r0 + j, l1);
}

// Requests this lane's share (kRowLanesV lanes per row) of Û row o into L1 or L2.
__device__ __forceinline__ void prefetch_u_row(const DeltaDesc& d, uint64_t o, int sub, bool l1) {
  if (o >= d.rows) return;
  for (uint32_t b = 0; b < d.n_bands; ++b) {
    const BandDesc& bd = d.bands[b];
    const char* row = reinterpret_cast<const char*>(bd.u_codes + o * bd.u_row_words);
    for (uint64_t off = (uint64_t)sub * 32; off < (uint64_t)bd.u_row_words * 4; off += kRowLanesV * 32) prefetch_line(row + off, l1);
    if (bd.bits != 16 && sub == 0) prefetch_line(bd.u_qp + o * bd.u_row_groups, l1);
  }
}

// 16 bytes of a streamed-once array (the base weights): read-only path, not kept in L1.
__device__ __forceinline__ uint4 ld_stream16(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// Σ over columns [c0, c1) of base row `wrow` times the staged x (kRowLanesV lanes per row).
// Vector path: c0, c1 multiples of 8, eight 16-byte loads per lane in flight.
__device__ __forceinline__ float base_row_part(const PersistArgs& a, const char* wrow, const float* xs, uint64_t c0,
                                               uint64_t c1, int sub) {
  if (a.wvec) {
    const bool wbf = a.io.wdt == DC_DTYPE_BF16;
    const uint64_t e_end = c1 / 8;
    float s0 = 0.f, s1 = 0.f;
#pragma unroll 1
    for (uint64_t e0 = c0 / 8 + sub; e0 < e_end; e0 += 8 * kRowLanesV) {
      uint4 wq[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const uint64_t e = e0 + (uint64_t)u * kRowLanesV;
        wq[u] = e < e_end ? ld_stream16(wrow + e * 16) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const uint64_t e = e0 + (uint64_t)u * kRowLanesV;
        if (e >= e_end) break;
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
    return s0 + s1;
  }
  float acc = 0.f;
#pragma unroll 1
  for (uint64_t p = c0 + sub; p < c1; p += kRowLanesV)
    acc = fmaf(load_any(wrow, p, a.io.wdt), xs[(p >> 5) * kPitch + (p & 31)], acc);
  return acc;
}

// One packed row against staged blocks, one block per iteration (no batch of loads in flight): a
// small loop, shared by both phases (not inlined), tried against the instruction-fetch stalls that
// ncu put at 31 % of the m = 1 cycles (the unrolled batches of packed_row_smem are ~6 KB of code
// per width). Measured: no gain (17.68 vs 16.77 µs unrolled, bench/RESULTS-h100.md); it stays the
// m = 1 default only because it is the variant the full GPU test validated there.
template <int BITS>
__device__ __noinline__ float packed_row_loop(const uint32_t* __restrict__ row, const dc_qparam* __restrict__ qp,
                                              uint32_t gb, uint32_t nblk, const float* xs, int lane, int lanes) {
  const int gsh = group_shift(gb);
  float acc = 0.f;
#pragma unroll 1
  for (uint32_t k = lane; k < nblk; k += lanes) {
    uint32_t w[BITS];
    load_block<BITS>(row + (uint64_t)k * BITS, w);
    float s = 1.f, z = 0.f;
    if (qp) load_qp(qp + group_of(k, gb, gsh), s, z);
    const float* xb = xs + k * kPitch;
    acc = fmaf(s, fmaf(-z, xb[32], smem_block_dot<BITS>(w, 0.f, xb)), acc);
  }
  return acc;
}

// Lanes split every block's 32 codes: lane `sub` of kRowLanesV = 8 takes codes 4·sub … 4·sub + 3 of
// each block. For bands of one or two blocks per row (the 8- and 3-bit bands of the default
// allocation), where one lane per block leaves the row's other 7 lanes idle for the whole band.
template <int BITS>
__device__ __forceinline__ float packed_row_split(const uint32_t* __restrict__ row, const dc_qparam* __restrict__ qp,
                                                  uint32_t gb, uint32_t nblk, const float* xs, int sub) {
  static_assert(kRowLanesV == 8, "four codes per lane");
  const int i0 = 4 * sub, gsh = group_shift(gb);
  float acc = 0.f;
#pragma unroll 1
  for (uint32_t k = 0; k < nblk; ++k) {
    const uint32_t* w = row + (uint64_t)k * BITS;
    float s = 1.f, z = 0.f;
    if (qp) load_qp(qp + group_of(k, gb, gsh), s, z);
    const float4 xv = *reinterpret_cast<const float4*>(xs + k * kPitch + i0);
    const float x[4] = {xv.x, xv.y, xv.z, xv.w};
    float c[4];
    if constexpr (BITS == 16) {
      const uint2 h = *reinterpret_cast<const uint2*>(w + i0 / 2);  // 8-byte aligned: i0 / 2 is even
      c[0] = f16_to_f32((uint16_t)h.x);
      c[1] = f16_to_f32((uint16_t)(h.x >> 16));
      c[2] = f16_to_f32((uint16_t)h.y);
      c[3] = f16_to_f32((uint16_t)(h.y >> 16));
    } else {
      // c − z exactly: the code masked into the mantissa of 2^23, minus (2^23 + z) (z is an integer)
      const float bias = 8388608.f + z;
      if constexpr (BITS == 3) {  // low 2 bits in words 0..1 (2-bit layout), high bit i in word 2
        const uint32_t lw = w[i0 / 16], hw = w[2];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int i = i0 + u, j = i % 16, sh = j < 8 ? 2 * j : 16 + 2 * (j - 8);
          const uint32_t code = ((lw >> sh) & 3u) | (((hw >> i) & 1u) << 2);
          c[u] = __uint_as_float(code | magic_2p23()) - bias;
        }
      } else {
        constexpr int per = 32 / BITS, half = per / 2;
        const uint32_t wd = w[i0 / per];  // four consecutive codes share a word (per ≥ 4)
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int j = (i0 + u) % per, sh = j < half ? BITS * j : 16 + BITS * (j - half);
          c[u] = __uint_as_float(((wd >> sh) & ((1u << BITS) - 1u)) | magic_2p23()) - bias;
        }
      }
    }
    acc = fmaf(s, fmaf(c[3], x[3], fmaf(c[2], x[2], fmaf(c[1], x[1], c[0] * x[0]))), acc);
  }
  return acc;
}

// Σ over one packed row of a band of width `bits` (runtime) against staged blocks: lanes `lane` of
// `lanes` take blocks lane, lane + lanes, …; kCompact: the small loop (see packed_row_loop).
template <bool kCompact>
__device__ __forceinline__ float band_row_dot(uint32_t bits, const uint32_t* row, const dc_qparam* qp, uint32_t gb,
                                              uint32_t nblk, const float* xs, int lane, int lanes) {
  if constexpr (kCompact) {
    switch (bits) {
      case 2: return packed_row_loop<2>(row, qp, gb, nblk, xs, lane, lanes);
      case 3: return packed_row_loop<3>(row, qp, gb, nblk, xs, lane, lanes);
      case 4: return packed_row_loop<4>(row, qp, gb, nblk, xs, lane, lanes);
      case 8: return packed_row_loop<8>(row, qp, gb, nblk, xs, lane, lanes);
      default: return packed_row_loop<16>(row, qp, gb, nblk, xs, lane, lanes);
    }
  } else {
    switch (bits) {
      case 2: return packed_row_smem<2>(row, qp, gb, nblk, xs, lane, lanes);
      case 3: return packed_row_smem<3>(row, qp, gb, nblk, xs, lane, lanes);
      case 4: return packed_row_smem<4>(row, qp, gb, nblk, xs, lane, lanes);
      case 8: return packed_row_smem<8>(row, qp, gb, nblk, xs, lane, lanes);
      default: return packed_row_smem<16>(row, qp, gb, nblk, xs, lane, lanes);
    }
  }
}

__device__ __forceinline__ float band_row_split(uint32_t bits, const uint32_t* row, const dc_qparam* qp, uint32_t gb,
                                                uint32_t nblk, const float* xs, int sub) {
  switch (bits) {
    case 2: return packed_row_split<2>(row, qp, gb, nblk, xs, sub);
    case 3: return packed_row_split<3>(row, qp, gb, nblk, xs, sub);
    case 4: return packed_row_split<4>(row, qp, gb, nblk, xs, sub);
    case 8: return packed_row_split<8>(row, qp, gb, nblk, xs, sub);
    default: return packed_row_split<16>(row, qp, gb, nblk, xs, sub);
  }
}

// t_r (nbt blocks of 32, 16-byte aligned) into the stage with every block's sum at [32], as
// stage_rows stages x: eight values per thread, four threads per block. __ldcg: t was written by
// other SMs during this launch, through L2; this SM's L1 must not answer.
__device__ __forceinline__ void stage_t(float* ts, const float* trow, uint32_t nbt) {
  const uint32_t total = nbt * 4;
  for (uint32_t e0 = 0; e0 < total; e0 += blockDim.x) {  // same trip count in every thread (shuffles)
    const uint32_t e = e0 + threadIdx.x;
    float4 p = make_float4(0.f, 0.f, 0.f, 0.f), q = p;
    if (e < total) {
      p = __ldcg(reinterpret_cast<const float4*>(trow) + 2 * e);
      q = __ldcg(reinterpret_cast<const float4*>(trow) + 2 * e + 1);
    }
    const float sum = seg_sum<4>(((p.x + p.y) + (p.z + p.w)) + ((q.x + q.y) + (q.z + q.w)));
    if (e < total) {
      float* dst = ts + (e >> 2) * kPitch;
      float4* d4 = reinterpret_cast<float4*>(dst + (e & 3) * 8);
      d4[0] = p;
      d4[1] = q;
      if ((e & 3) == 0) dst[32] = sum;
    }
  }
}

// Grid-wide barrier, two levels, every counter on its own 128-byte line (32 words apart): block b
// arrives at sub-counter b mod 16, the last arrival of each sub-counter at the top counter, and the
// last arrival there bumps the generation that the other blocks poll. Same-address atomics
// serialise in one L2 slice, so 264 arrivals at one counter (with 263 blocks polling the same
// line) cost microseconds; spread over 16 lines they overlap. Each counter is reset by its last
// arrival, so the state is zero again when the kernel ends (one barrier per launch; launches are
// ordered by the stream, with PDL after cudaGridDependencySynchronize).
constexpr unsigned kBarrierSubs = 16;  // sub-counters: lines 0..15; top: line 16; generation: line 17
static_assert(kBarrierLines >= (int)kBarrierSubs + 2, "barrier state too small");

__device__ __forceinline__ void grid_barrier(unsigned int* bar) {
  __syncthreads();
  if (threadIdx.x == 0) {
    volatile unsigned int* gen = bar + 32 * (kBarrierSubs + 1);
    unsigned int* top = bar + 32 * kBarrierSubs;
    const unsigned int g = *gen;  // read before arriving: the last arrival changes it
    __threadfence();              // this block's writes (t) before its arrival
    const unsigned subs = gridDim.x < kBarrierSubs ? gridDim.x : kBarrierSubs, s = blockIdx.x % subs;
    const unsigned members = gridDim.x / subs + (s < gridDim.x % subs ? 1u : 0u);
    unsigned int* sub = bar + 32 * s;
    bool released = false;
    if (atomicAdd(sub, 1u) == members - 1) {
      *reinterpret_cast<volatile unsigned int*>(sub) = 0u;
      __threadfence();  // every member's writes (ordered before their arrivals) before ours at the top
      if (atomicAdd(top, 1u) == subs - 1) {
        *reinterpret_cast<volatile unsigned int*>(top) = 0u;
        __threadfence();
        atomicAdd(const_cast<unsigned int*>(gen), 1u);
        released = true;
      }
    }
    if (!released)
      while (*gen == g) __nanosleep(20);
    __threadfence();
  }
  __syncthreads();
}

template <bool kCompact>
__global__ void __launch_bounds__(kPThreads, 2) persist_kernel(const __grid_constant__ PersistArgs a) {
  extern __shared__ float4 dyn_smem[];
  float* stage = reinterpret_cast<float*>(dyn_smem);           // x_r before the barrier, t_r after
  float* wpart = stage + (a.nbx > a.nbt ? a.nbx : a.nbt) * kPitch;  // [item][row] base sums (m = 1)
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int sub = lane % kRowLanesV, rsub = lane / kRowLanesV;
  const uint64_t nb = gridDim.x, b = blockIdx.x;
  const uint64_t n1 = (uint64_t)a.io.m * a.T, n2 = (uint64_t)a.io.m * a.G;
  const uint64_t lo1 = b * n1 / nb, hi1 = (b + 1) * n1 / nb;  // this block's phase-1 items
  const uint64_t lo2 = b * n2 / nb, hi2 = (b + 1) * n2 / nb;  // and phase-2 items
  const uint64_t w1 = lo1 + warp, w2 = lo2 + (kPWarps - 1 - warp);  // this warp's first items

  trace_at(a, 0);
  // prologue: the first two items of each phase into L1 (immutable delta data only)
  for (uint64_t i = w1; i < hi1 && i < w1 + 2 * kPWarps; i += kPWarps) {
    const DeltaDesc* dp = row_desc(a, (uint32_t)(i / a.T));
    if (dp) prefetch_v_row(*dp, (uint32_t)(i % a.T), lane, a.prefetch_l1);
  }
  for (uint64_t i = w2; i < hi2 && i < w2 + 2 * kPWarps; i += kPWarps) {
    const DeltaDesc* dp = row_desc(a, (uint32_t)(i / a.G));
    if (dp) prefetch_u_row(*dp, (i % a.G) * kGroupRows + rsub, sub, a.prefetch_l1);
  }
  if (a.io.W != nullptr)
    for (uint64_t e = threadIdx.x; e < (hi2 - lo2) * kGroupRows; e += blockDim.x) wpart[e] = 0.f;
  pdl_allow_next();
  pdl_wait_prev();  // x, y and the scratch are the previous kernels' from here on
  trace_at(a, 1);

  // ---- phase 1 (+ base rows) ----
  const ColMap xmap{nullptr, 0, a.io.cols, a.io.cols};
  const uint64_t r1_first = lo1 / a.T, r1_end = hi1 == lo1 ? r1_first : (hi1 - 1) / a.T + 1;
  // the base (m = 1) needs x_0 staged even in a block without phase-1 items
  const uint64_t r_first = a.io.W ? 0 : r1_first, r_end = a.io.W ? 1 : r1_end;
  for (uint64_t r = r_first; r < r_end; ++r) {
    const DeltaDesc* dp = row_desc(a, (uint32_t)r);
    const bool base_here = a.io.W != nullptr && r == 0;
    if (dp == nullptr && !base_here) continue;  // uniform: no delta on this row
    const int rr[1] = {(int)r};
    __syncthreads();  // the previous row's readers are done with the stage
    stage_rows(stage, (int)a.nbx, 0, a.io.x, a.io.xdt, a.io.ldx, rr, 1, xmap, a.xvec);
    __syncthreads();
    if (dp != nullptr) {
      const DeltaDesc& d = *dp;
      const uint32_t nblk_v = (uint32_t)((d.v_len + 31) / 32);
      const uint64_t ilo = umax64(lo1, r * a.T), ihi = umin64(hi1, (r + 1) * a.T);
      for (uint64_t i = first_at_or_after(w1, ilo, kPWarps); i < ihi; i += kPWarps) {
        if (i + 2 * kPWarps < ihi) prefetch_v_row(d, (uint32_t)(i + 2 * kPWarps - r * a.T), lane, a.prefetch_l1);
        const uint32_t kv = (uint32_t)(i - r * a.T);
        if (kv >= d.t_stride) continue;
        const BandDesc& bd = d.bands[band_of(d, kv)];
        const uint32_t j = kv - bd.t_off;
        float v = 0.f;
        if (j < bd.r1 - bd.r0) {
          const float sg = d.sigma[bd.r0 + j];
          const uint32_t* row = bd.v_codes + (uint64_t)j * bd.v_row_words;
          const dc_qparam* qp = bd.bits == 16 ? nullptr : bd.v_qp + (uint64_t)j * bd.v_row_groups;
          const uint32_t gb = bd.bits == 16 ? 1 : bd.group_size / 32;
          v = band_row_dot<kCompact>(bd.bits, row, qp, gb, nblk_v, stage, lane, 32);
          v = seg_sum<32>(v) * sg * a.io.scale;
        }
        if (lane == 0) __stcg(a.io.t + r * a.io.ldt + kv, v);
      }
    }
    if (base_here) {
      // the block's phase-2 output rows of x·Wᵀ, each item's columns in two halves so that every
      // warp streams (pieces q = warp, warp + 8, …; the halves meet in shared memory)
      const size_t wes = a.io.wdt == DC_DTYPE_F32 ? 4 : 2;
      const uint64_t half = a.wvec ? (a.io.cols / 16) * 8 : a.io.cols / 2;
      for (uint64_t q = warp; q < 2 * (hi2 - lo2); q += kPWarps) {
        const uint64_t li = q / 2, o = (lo2 + li) * kGroupRows + rsub;  // m = 1: item = group
        float s = 0.f;
        if (o < a.io.rows) {
          const char* wrow = static_cast<const char*>(a.io.W) + o * a.io.ldw * wes;
          s = base_row_part(a, wrow, stage, q % 2 ? half : 0, q % 2 ? a.io.cols : half, sub);
        }
        s = seg_sum<kRowLanesV>(s);
        if (sub == 0) atomicAdd(&wpart[li * kGroupRows + rsub], s);
      }
    }
  }

  __syncthreads();
  trace_at(a, 2);
  grid_barrier(a.barrier);  // every column of t is written
  trace_at(a, 3);

  // ---- phase 2 ----
  const uint64_t r2_first = lo2 / a.G, r2_end = hi2 == lo2 ? r2_first : (hi2 - 1) / a.G + 1;
  for (uint64_t r = r2_first; r < r2_end; ++r) {
    const DeltaDesc* dp = row_desc(a, (uint32_t)r);
    if (dp == nullptr && a.io.accumulate && a.io.W == nullptr) continue;  // uniform: nothing to add
    if (dp != nullptr) {
      __syncthreads();  // the previous row's readers are done with the stage
      stage_t(stage, a.io.t + r * a.io.ldt, a.nbt);
      __syncthreads();
      trace_at(a, 4);
    }
    const uint64_t ilo = umax64(lo2, r * a.G), ihi = umin64(hi2, (r + 1) * a.G);
    for (uint64_t i = first_at_or_after(w2, ilo, kPWarps); i < ihi; i += kPWarps) {
      const uint64_t o = (i - r * a.G) * kGroupRows + rsub;
      float acc = 0.f;
      if (dp != nullptr) {
        const DeltaDesc& d = *dp;
        if (i + 2 * kPWarps < ihi) prefetch_u_row(d, (i + 2 * kPWarps - r * a.G) * kGroupRows + rsub, sub, a.prefetch_l1);
        if (o < a.io.rows) {
          for (uint32_t bb = 0; bb < d.n_bands; ++bb) {
            const BandDesc& bd = d.bands[bb];
            const uint32_t nbb = (bd.r1 - bd.r0 + 31) / 32;
            const uint32_t* row = bd.u_codes + o * bd.u_row_words;
            const dc_qparam* qp = bd.bits == 16 ? nullptr : bd.u_qp + o * bd.u_row_groups;
            const uint32_t gb = bd.bits == 16 ? 1 : bd.group_size / 32;
            const float* tb = stage + (bd.t_off / 32) * kPitch;
            acc += nbb <= 2 ? band_row_split(bd.bits, row, qp, gb, nbb, tb, sub)
                            : band_row_dot<kCompact>(bd.bits, row, qp, gb, nbb, tb, sub, kRowLanesV);
          }
        }
      }
      acc = seg_sum<kRowLanesV>(acc);
      if (sub == 0 && o < a.io.rows) {
        const uint64_t at = r * a.io.ldy + o;
        const float base = a.io.W != nullptr ? wpart[(i - lo2) * kGroupRows + rsub] : 0.f;
        store_any(a.io.y, at, a.io.ydt, (a.io.accumulate ? load_any(a.io.y, at, a.io.ydt) : 0.f) + base + acc);
      }
    }
  }
  __syncthreads();
  trace_at(a, 5);
}

}  // namespace
#endif  // !DC_USE_HIP

bool persist_supported(const DeltaSel& s, const RowsArgs& r) {
#if defined(DC_USE_HIP)
  (void)s; (void)r;
  return false;
#else
  if (r.m == 0 || r.m > (uint64_t)kMaxTokens || s.max_t_stride == 0 || (r.W != nullptr && r.m != 1)) return false;
  if (s.row_slot == nullptr) {
    const DeltaDesc& d = s.one;
    if (d.kind != DC_KIND_LOWRANK || d.perm != nullptr || d.v_col_offset != 0 || d.t_stride == 0) return false;
  }
  const uint64_t nbx = (std::max<uint64_t>(r.cols, s.max_v_len) + 31) / 32, nbt = s.max_t_stride / 32;
  return std::max(nbx, nbt) * kPitch * 4 <= kPSmemLimit;  // launch_persist adds the base sums
#endif
}

cudaError_t launch_persist(const LaunchCfg& c, const DeltaSel& s, const RowsArgs& r, unsigned int* barrier,
                           int sms) {
#if defined(DC_USE_HIP)
  (void)c; (void)s; (void)r; (void)barrier; (void)sms;
  return cudaErrorNotSupported;
#else
  if (!persist_supported(s, r) || barrier == nullptr || sms <= 0) return cudaErrorNotSupported;
  PersistArgs a{};
  a.sel = s;
  a.io = r;
  a.xvec = aligned16(r.x, r.ldx, dtype_size(r.xdt));
  a.barrier = barrier;
  a.wvec = r.W != nullptr && r.wdt != DC_DTYPE_F32 && r.cols % 16 == 0 && aligned16(r.W, r.ldw, 2);
  a.prefetch_l1 = c.prefetch_l1;
  a.trace = (c.trace && s.row_slot == nullptr && r.m == 1) ? c.trace : nullptr;
  a.T = s.max_t_stride;
  a.G = (uint32_t)((r.rows + kGroupRows - 1) / kGroupRows);
  a.nbx = (uint32_t)((std::max<uint64_t>(r.cols, s.max_v_len) + 31) / 32);
  a.nbt = a.T / 32;
  const uint64_t n1 = r.m * a.T, n2 = r.m * a.G;
  const uint64_t items = std::max(n1, n2);
  const size_t stage_bytes = (size_t)std::max(a.nbx, a.nbt) * kPitch * 4;
  // base partial sums: at most ⌈n2 / blocks⌉ items per block, blocks ≥ min(items, sms)
  const uint64_t knob = c.persist_blocks > 0 ? c.persist_blocks : UINT64_MAX;
  const uint64_t min_blocks = std::max<uint64_t>(1, std::min<uint64_t>(std::min<uint64_t>(items, knob), (uint64_t)sms));
  const size_t wpart_bytes = r.W ? (size_t)((n2 + min_blocks - 1) / min_blocks) * kGroupRows * 4 : 0;
  const size_t smem = stage_bytes + wpart_bytes;
  if (smem > kPSmemLimit) return cudaErrorNotSupported;
  // The compact code for a single delta at m = 1 (see packed_row_loop), the unrolled code else.
  const bool compact = c.persist_compact >= 0 ? c.persist_compact != 0 : (s.row_slot == nullptr && r.m == 1);
  void (*kernel)(PersistArgs) = compact ? persist_kernel<true> : persist_kernel<false>;
  static std::once_flag attr_once;
  static cudaError_t attr_err = cudaSuccess;
  std::call_once(attr_once, [] {
    attr_err = cudaFuncSetAttribute(persist_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kPSmemLimit);
    if (attr_err == cudaSuccess)
      attr_err = cudaFuncSetAttribute(persist_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kPSmemLimit);
  });
  if (attr_err != cudaSuccess) return attr_err;
  int occ = 0;
  cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kernel, kPThreads, smem);
  if (e != cudaSuccess) return e;
  if (occ <= 0) return cudaErrorNotSupported;
  // Every block must be resident at once (grid barrier): at most occupancy × SMs blocks.
  const uint64_t cap = std::min<uint64_t>((uint64_t)occ * sms, knob);
  const unsigned blocks = (unsigned)std::max<uint64_t>(min_blocks, std::min<uint64_t>(cap, items));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(blocks);
  cfg.blockDim = dim3(kPThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = c.stream;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (c.coop) {
    attr[n].id = cudaLaunchAttributeCooperative;
    attr[n].val.cooperative = 1;
    ++n;
  }
  if (c.pdl) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  return cudaLaunchKernelEx(&cfg, kernel, a);
#endif
}

}  // namespace dcg

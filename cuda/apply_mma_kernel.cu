// The multi-tenant batch kernel on the integer tensor cores (CUDA, sm_80+): m ≤ kMaxTokens rows of
// x, each with its own low-rank delta (or none), in ONE launch — the same result as the persistent
// kernel's batch (apply_persist_kernel.cu), with the 2- and 3-bit bands (mma_band) as 16-row tiles
// on mma.sync.m16n8k32 (mma_int8.cuh). One delta at 1 < m ≤ 64 runs here too, as a batch whose rows
// all sit in slot 0 of a one-entry table (backend_ops.cu).
//
//   phase 1   items per row of x (mma_items1): a tile of 16 V̂ rows of a tensor-core band, or one
//             V̂ row of another band (fp32 decode, a warp per row). x_r is staged once per block
//             and row, as floats and as int8 digits. The batch instance splits them over the blocks
//             in units of a quarter tile, each unit's sums going to its part's copy of t (kParts
//             copies, added and scaled by σ when phase 2 stages t); pairs split whole items and add
//             a tile's parts in shared memory;
//   barrier   grid-wide (persist_common.cuh; cooperative launch: every block resident);
//   phase 2   items: tiles of 16 output rows; per band of the row's delta either one tensor-core
//             pass over the tile's Û rows, or fp32 with lane q of the 4 per row taking codes
//             8q…8q+7 of every block (bands of one or two blocks per row keep all lanes busy).
//             t_r is staged once per block and row, as floats and as digits per tensor-core band.
//
// Why (bench/RESULTS-h100.md, sixth session): the persistent kernel's batch moved 560 GB/s for 32
// tenants (23 % of the copy bandwidth) with DRAM mostly idle — a warp per V̂ row spends ~3
// instructions per code. Here a chunk of 16 rows × 128 codes costs ~100 instructions of the warp
// (~0.05 per code, the group epilogue included): 90.4 µs against 143.7 µs on the H100 (same call).
// Items are contiguous ranges per block as in the persistent kernel (each block stages one or two
// rows of x); a phase-1 tile is cut into kParts work units so that a block's warps get near-equal
// shares. Twenty-sixth session: the batch instance's blocks split phase 1 by those units, not by
// items — with whole items the blocks holding one more than the rest (the split's remainder, or a
// second row of x to stage) were the last at the grid barrier — and write their sums straight to
// kParts copies of t instead of summing them in shared memory, which also took the instance's
// spills from 60/92 to 8/16 bytes: 32 tenants 63.7–64.1 µs against 66.3 (H100, same call).
// What still limits it (ncu, seventh session): ~0.7 eligible warps per scheduler, 45 % of the
// stalls on the long scoreboard, each warp's batch a chain of ~640 instructions — yet the
// access pattern alone streams at 2.3 TB/s (bench/probes/batch_access.cu). Measured and not kept:
// more codes in flight per warp (L2 or L1 prefetches, 8-chunk batches, per-warp cp.async rings in
// shared memory: 92–115 µs against 90), registers for 3 blocks per SM (spills: 110.8 vs 87.5 µs on
// an H200), a leaner group epilogue (no change). Thirteenth session: the rows loop with constant
// offsets, read-only group parameters, one MMA chain per chunk and the next batch in flight
// (mma_int8.cuh), and the phase-2 band of ≤ 8 codes in one call for both rows: 74–75 µs against
// 78–79 (H100, same call); L2 prefetches ahead of the loads made it slower again (84 µs). Fifteenth
// session, measured and not kept (bench/results/wip-mma-bulk-prefetch.patch): L2 prefetch of a
// block's items while it stages x or waits at the barrier (76–85 µs against 76), phase-2 tiles
// bulk-copied into shared memory (82.5 against 74.8: phase 2 as long with its codes in shared
// memory), phase 2's staging code run once at the barrier to fetch it (noise). ncu: ~14k warp
// instructions per warp at ~9 cycles each make the whole duration — fewer instructions per warp
// or more warps are what is left. Sixteenth session: per-item trace marks put phase 2's two small
// bands (8-bit × 2 ranks, 3-bit × 32) at ~5.7k of an item's ~14k cycles, each a round trip and a
// call of its own after the other; their loads now go out together when an item starts and their
// sums are inline (mma_one, the tiny 8-bit path) after the large band's: 32 tenants 66.6–66.7 µs
// against 74.3–74.8, m = 64 71.8–72.2 against 77.1–77.7 (H100, same call; ~4 µs of the 32 tenants'
// gain came from mma_rows' shared helpers alone, whose register allocation spills less); t's digits
// staged two chunks per warp: m = 16 32.1–32.4 against 33.0–33.3.
#include <algorithm>
#include <mutex>

#include "apply_kernels.cuh"
#include "mma_int8.cuh"
#include "persist_common.cuh"
#include "vec_dot.cuh"

namespace dcg {

#if !defined(DC_USE_HIP)
namespace {

constexpr int kMThreads = 256;
constexpr int kMWarps = kMThreads / 32;
constexpr size_t kMSmemLimit = 100 * 1024;  // two blocks per SM
constexpr uint32_t kPairSmallW1 = 1, kPairSmallW2 = 4;  // pairs' split weights up to mma_pair_small_m rows
#ifndef DC_MMA_PARTS
#  define DC_MMA_PARTS 4  // build-time tuning
#endif
constexpr uint32_t kParts = DC_MMA_PARTS;   // phase 1: warps (work units) per tile, and copies of t
static_assert(kParts <= kMmaTParts, "the t scratch holds kMmaTParts copies of t");

struct MmaArgs {
  DeltaRef sel;       // the batch's table and row slots
  RowsArgs io;        // the call (m ≤ kMaxTokens, no base)
  unsigned int* barrier;
  bool xvec;          // x rows 16-byte aligned
  uint32_t I1;        // phase-1 items per row: the largest mma_items1 (I1·kParts units: the split's phase 1)
  uint64_t t_part;    // floats between the kParts partial copies of t (part p of row i at io.t + p·t_part + i·ldt)
  uint32_t G;         // phase-2 items per row: tiles of kMmaRows outputs
  RowSplit split;     // the phase-1 and phase-2 items over the blocks (row staging charged)
  uint32_t nbx, nbt;  // staged float blocks of 32: x (max(cols, v_len)), t (max t_stride)
  uint32_t dig_words; // words of the digit area (R rows of dig_row words)
  uint32_t sum_floats;  // floats of the chunk-sum area (R rows of sum_row floats)
  uint32_t dig_row, sum_row;  // one row's digit words and chunk sums
  unsigned long long* trace;  // diagnostics (DELTACOME_GPU_PERSIST_TRACE=1), or null: see mark
};

// Diagnostics (trace_mark): after phase 1's first staging ([1]), phase 1 ([2]), the barrier ([3]),
// phase 2's first staging ([4]) and its end ([5]); extra marks inside the first stagings ([8], [10..12]).
__device__ __forceinline__ void mark(const MmaArgs& a, int k) { trace_mark(a.trace, k); }

// Phase-1 item `it` of a row with delta d: band, first V̂ row j, and whether it is a tile.
__device__ __forceinline__ bool item1_of(const DeltaDesc& d, uint32_t it, uint32_t& band, uint32_t& j, bool& tile) {
  for (uint32_t b = 0; b < d.n_bands; ++b) {
    const bool mma = mma_band(d.bands[b].bits, d.bands[b].group_size);
    const uint32_t n = mma_band_items1(d.bands[b].bits, d.bands[b].group_size, d.bands[b].r1 - d.bands[b].r0);
    if (it < n) {
      band = b;
      j = mma ? it * kMmaRows : it;
      tile = mma;
      return true;
    }
    it -= n;
  }
  return false;
}

// The fp32 paths, kept out of line: the tensor-core loop keeps its registers.
__device__ __noinline__ float fp32_row(uint32_t bits, const uint32_t* row, const dc_qparam* qp, uint32_t gb,
                                       uint32_t nblk, const float* xs, int lane) {
  return with_bits(bits, [&](auto w) { return packed_row_smem<decltype(w)::value>(row, qp, gb, nblk, xs, lane, 32); });
}
__device__ __noinline__ float fp32_quarter(uint32_t bits, const uint32_t* row, const dc_qparam* qp, uint32_t gb,
                                           uint32_t nblk, const float* ts, int q) {
  return with_bits(bits, [&](auto w) { return packed_row_part<decltype(w)::value, 8>(row, qp, gb, nblk, ts, q); });
}

// The digit scale 2^e (and 2^-e in *down, digit_scale) of the first `span` elements staged at
// `whole` (blocks at pitch kPitch): a block-wide maximum, every thread takes part.
__device__ __forceinline__ float scale_of(const float* whole, uint32_t span, uint32_t* red, float* down) {
  uint32_t m = 0;
  for (uint32_t k = threadIdx.x; k < span; k += blockDim.x)
    m = max(m, __float_as_uint(whole[(k >> 5) * kPitch + (k & 31)]) & 0x7fffffffu);
  m = block_max_bits(m, red);
  return digit_scale(m, down);
}

// A row of t staged as stage_t stages it (persist_common.cuh), from the batch instance's kParts
// partial copies of t (part p at trow + p·t_part): the copies added in a fixed order, then scaled by
// σ and `scale` — the arithmetic of the sums that phase 1 makes in shared memory when a tile's parts
// are all in one block (pairs), so t is the same to the bit whatever blocks wrote the parts. d: the
// row's descriptor. σ and every copy are loaded first: one round trip.
__device__ __forceinline__ void stage_t_parts(float* ts, const float* trow, uint64_t t_part, uint32_t nbt,
                                              const DeltaDesc& d, float scale) {
  const uint32_t total = nbt * 4;
  for (uint32_t e0 = 0; e0 < total; e0 += blockDim.x) {  // same trip count in every thread (shuffles)
    const uint32_t e = e0 + threadIdx.x;
    float4 v[2] = {make_float4(0.f, 0.f, 0.f, 0.f), make_float4(0.f, 0.f, 0.f, 0.f)};
    if (e < total) {
      // columns 8e … 8e + 7 lie in one band's 32 (bands are padded to 32 columns): rank r0 + c − t_off,
      // or padding (zero in every copy) past the band's ranks; columns past the delta's t_stride are
      // never read by its phase 2 and stay unscaled
      const uint32_t c0 = 8 * e;
      uint32_t bb = 0;
      while (bb + 1 < d.n_bands && d.bands[bb + 1].t_off <= c0) ++bb;
      const uint32_t nr = d.n_bands ? d.bands[bb].r1 - d.bands[bb].r0 : 0u, j0 = c0 - d.bands[bb].t_off;
      const float* sg = d.sigma + d.bands[bb].r0;
      float sig[8];
#pragma unroll
      for (uint32_t k = 0; k < 8; ++k) sig[k] = nr ? __ldg(sg + min(j0 + k, nr - 1)) : 0.f;
      float4 w[kParts][2];
#pragma unroll
      for (uint32_t p = 0; p < kParts; ++p)
#pragma unroll
        for (int k = 0; k < 2; ++k) w[p][k] = __ldcg(reinterpret_cast<const float4*>(trow + p * t_part) + 2 * e + k);
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        v[k] = w[0][k];
#pragma unroll
        for (uint32_t p = 1; p < kParts; ++p) {
          v[k].x += w[p][k].x;
          v[k].y += w[p][k].y;
          v[k].z += w[p][k].z;
          v[k].w += w[p][k].w;
        }
      }
      float* f = &v[0].x;
#pragma unroll
      for (uint32_t k = 0; k < 8; ++k)
        if (j0 + k < nr) f[k] = f[k] * sig[k] * scale;
    }
    const float sum = seg_sum<4>(((v[0].x + v[0].y) + (v[0].z + v[0].w)) + ((v[1].x + v[1].y) + (v[1].z + v[1].w)));
    if (e < total) {
      float* dst = ts + (e >> 2) * kPitch;
      float4* d4 = reinterpret_cast<float4*>(dst + (e & 3) * 8);
      d4[0] = v[0];
      d4[1] = v[1];
      if ((e & 3) == 0) dst[32] = sum;
    }
  }
}

// Where each tensor-core band's digits (words) and chunk sums start in a row's staged operands.
__device__ __forceinline__ void band_offsets(const DeltaDesc& d, uint32_t* dig_at, uint32_t* sum_at) {
  uint32_t w = 0, c = 0;
  for (uint32_t bb = 0; bb < d.n_bands; ++bb) {
    const BandDesc& bd = d.bands[bb];
    const uint32_t nr = bd.r1 - bd.r0;
    dig_at[bb] = w;
    sum_at[bb] = c;
    if (mma_band(bd.bits, bd.group_size)) {
      w += digit_bytes(nr) / 4;
      c += mma_chunks(nr);
    }
  }
}

// The small bands whose loads a phase-2 item issues first, all at once (their sums follow the large
// bands'): the first tensor-core band of one chunk (one_b) and the first 8-bit band of at most 4
// ranks (tiny_b: its codes are the bytes of word 0 and t is zero past its ranks); -1: none.
__device__ __forceinline__ void small_bands(const DeltaDesc& d, int& one_b, int& tiny_b) {
  one_b = tiny_b = -1;
  for (uint32_t bb = 0; bb < d.n_bands; ++bb) {
    const BandDesc& bd = d.bands[bb];
    const uint32_t nr = bd.r1 - bd.r0;
    if (mma_band(bd.bits, bd.group_size)) {
      if (one_b < 0 && mma_chunks(nr) == 1) one_b = (int)bb;
    } else if (tiny_b < 0 && bd.bits == 8 && nr <= 4) {
      tiny_b = (int)bb;
    }
  }
}

// Phase 2 of one row, as a block: t's digits of every tensor-core band at once, a warp per job of
// two chunks of one band side by side (c and c + half): the default allocation's 8 + 1 chunks take
// one round of the block's 8 warps instead of two (warp 0 staged two chunks in sequence while the
// others waited). ts: t staged; dig, csum: the row's digits and chunk sums; dig_at, sum_at: band_offsets.
__device__ __forceinline__ void stage_t_digits(const DeltaDesc& d, const float* ts, float up, uint32_t* dig,
                                               float* csum, const uint32_t* dig_at, const uint32_t* sum_at) {
  const int warp = threadIdx.x / 32;
  for (uint32_t job = warp;; job += kMWarps) {
    uint32_t bb = 0, j = job, half = 0;
    for (; bb < d.n_bands; ++bb) {
      if (!mma_band(d.bands[bb].bits, d.bands[bb].group_size)) continue;
      half = (mma_chunks(d.bands[bb].r1 - d.bands[bb].r0) + 1) / 2;
      if (j < half) break;
      j -= half;
    }
    if (bb == d.n_bands) break;  // past the last band's jobs
    const BandDesc& bd = d.bands[bb];
    const uint32_t nr = bd.r1 - bd.r0;
    stage_digit_chunk<2>(ts + (bd.t_off / 32) * kPitch, nr, j, mma_chunks(nr), up, dig + dig_at[bb], csum + sum_at[bb],
                         half);
  }
}

#ifndef DC_MMA_MIN_BLOCKS
#  define DC_MMA_MIN_BLOCKS 2  // resident blocks per SM the registers are sized for (build-time tuning)
#endif

// kPair: rows 2ρ and 2ρ + 1 share a delta (one delta at m > 1): item row ρ holds both, and each
// tile is decoded once for both (mma_rows with the second row in B columns 3..5). The batch
// instance keeps the single-vector code and registers.
template <bool kPair>
__global__ void __launch_bounds__(kMThreads, DC_MMA_MIN_BLOCKS) mma_batch_kernel(const __grid_constant__ MmaArgs a) {
  extern __shared__ float4 dyn_smem[];
  __shared__ DeltaDesc sdesc;  // the descriptor of the row being processed
  __shared__ uint32_t red[kMWarps];
  __shared__ uint32_t dig_at[DC_MAX_BANDS], sum_at[DC_MAX_BANDS];  // phase 2: each band's digits
  float* stage = reinterpret_cast<float*>(dyn_smem);  // x_r, then t_r, as floats (pair: two rows)
  uint32_t* dig = reinterpret_cast<uint32_t*>(stage + (kPair ? 2 : 1) * (a.nbx > a.nbt ? a.nbx : a.nbt) * kPitch);
  float* csum = reinterpret_cast<float*>(dig + a.dig_words);
  float* part = csum + a.sum_floats;  // phase 1, pairs: [item][part][row] partial sums of the tiles
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, q = lane % 4;
  constexpr int kKB = kPair ? DC_MMA_KB_PAIR : DC_MMA_KB;  // mma_rows' chunks per batch (mma_int8.cuh)
  const uint32_t b = blockIdx.x;
  uint32_t lo1, hi1, lo2, hi2;  // this block's phase-1 and phase-2 items
  a.split.phase1(b, lo1, hi1);
  a.split.phase2(b, lo2, hi2);
  mark(a, 0);
  pdl_allow_next();
  pdl_wait_prev();  // x, y and the scratch are the previous kernels' from here on
  bool first = true;

  // ---- phase 1 ----
  const ColMap xmap{nullptr, 0, a.io.cols, a.io.cols};
  // the split's phase-1 units of a row: items (pairs), or kParts units an item (item it's part p is unit it·kParts + p)
  const uint32_t U1 = kPair ? a.I1 : a.I1 * kParts;
  const uint32_t r1_first = lo1 / U1, r1_end = hi1 == lo1 ? r1_first : (hi1 - 1) / U1 + 1;
  for (uint32_t r = r1_first; r < r1_end; ++r) {  // item row r: x row r, or rows 2r and 2r + 1 (pair)
    const uint32_t ra = kPair ? 2 * r : r, nrows = kPair && ra + 1 < a.io.m ? 2u : 1u;
    const DeltaDesc* dp = a.sel.slot_desc(ra);
    if (dp == nullptr) continue;  // uniform over the block
    const DeltaDesc& d = sdesc;
    __syncthreads();  // the previous row's readers are done with the stage
    copy_desc(&sdesc, dp);
    if constexpr (kPair) {
      const int rr[2] = {(int)ra, (int)ra + 1};
      stage_rows(stage, (int)a.nbx, 0, a.io.x, a.io.xdt, a.io.ldx, rr, (int)nrows, xmap, a.xvec);
    } else {  // (a one-entry array: indexed in registers, not local memory)
      const int rr[1] = {(int)ra};
      stage_rows(stage, (int)a.nbx, 0, a.io.x, a.io.xdt, a.io.ldx, rr, 1, xmap, a.xvec);
    }
    __syncthreads();
    if (first) mark(a, 11);  // x staged
    float down[2] = {0.f, 0.f};
#pragma unroll
    for (uint32_t h = 0; h < (kPair ? 2u : 1u); ++h) {  // (unrolled: down[] and f[][] stay in registers)
      if (h >= nrows) break;
      const float* xs = stage + h * a.nbx * kPitch;
      const float up = scale_of(xs, (uint32_t)d.v_len, red, &down[h]);
      stage_digits(xs, (uint32_t)d.v_len, up, dig + h * a.dig_row, csum + h * a.sum_row);
    }
    __syncthreads();
    if (first) mark(a, 1);
    first = false;
    const uint32_t nblk_v = (uint32_t)((d.v_len + 31) / 32);
    const uint32_t chunks_v = mma_chunks((uint32_t)d.v_len);
    const uint32_t per = (chunks_v + kParts - 1) / kParts;  // chunks per part of a tile
    // Part p of the tile of V̂ rows j … j + 15 of band bd (nr rows): rows g and g + 8 of the lane's
    // group, clamped to the band (the sums of rows past it are not used); q = 1 holds row ra + 1's (pairs).
    auto tile_part = [&](const BandDesc& bd, uint32_t nr, uint32_t j, uint32_t p) {
      const uint32_t ja = min(j + g, nr - 1), jb = min(j + g + 8, nr - 1);
      const uint32_t cb = min(p * per, chunks_v), ce = min(cb + per, chunks_v), gsh = mma_group_shift(bd.group_size);
      return mma_rows_any<kKB>(bd.bits, bd.v_codes, bd.v_row_words, bd.v_qp, bd.v_row_groups, gsh, ja, jb, cb, ce, chunks_v,
                               dig, csum, down[0], kPair && nrows > 1 ? dig + a.dig_row : nullptr, csum + a.sum_row,
                               down[1]);
    };
    if constexpr (kPair) {
      // Pairs: whole items per block, a tile's parts summed in shared memory. (The batch instance's
      // units measured slower here: one delta at M = 16 32.7–33.6 µs against 31.7–32.2, H100, same call,
      // twenty-sixth session.)
      float* trow = a.io.t + (uint64_t)ra * a.io.ldt;  // row ra + h at trow + h·ldt
      const uint32_t ilo = max(lo1, r * a.I1), ihi = min(hi1, (r + 1) * a.I1);
      // Work units: each tile in kParts parts of its chunks, each other item whole; unit u goes to
      // warp u mod 8, so a block's warps get near-equal shares whatever mix of items it holds.
      uint32_t u = 0;
      for (uint32_t i = ilo; i < ihi; ++i) {
        uint32_t bi, j;
        bool tile;
        if (!item1_of(d, i - r * a.I1, bi, j, tile)) break;  // items past the delta's: none follow
        const BandDesc& bd = d.bands[bi];
        const uint32_t nr = bd.r1 - bd.r0;
        for (uint32_t p = 0; p < (tile ? kParts : 1u); ++p, ++u) {
          if (u % kMWarps != (uint32_t)warp) continue;
          if (tile) {
            const float2 s = tile_part(bd, nr, j, p);
            if ((uint32_t)q < nrows) {  // lane q = 0: row ra, q = 1: row ra + 1
              float* pp = part + (((i - ilo) * kParts + p) * nrows + q) * kMmaRows;
              pp[g] = s.x;
              pp[g + 8] = s.y;
            }
          } else {
            const dc_qparam* qp = bd.bits == 16 ? nullptr : bd.v_qp + (uint64_t)j * bd.v_row_groups;
            for (uint32_t h = 0; h < nrows; ++h) {
              float v = fp32_row(bd.bits, bd.v_codes + (uint64_t)j * bd.v_row_words, qp,
                                 bd.bits == 16 ? 1 : bd.group_size / 32, nblk_v, stage + h * a.nbx * kPitch, lane);
              v = seg_sum<32>(v);
              if (lane == 0) __stcg(trow + h * a.io.ldt + bd.t_off + j, v * d.sigma[bd.r0 + j] * a.io.scale);
            }
          }
        }
      }
      if (r == r1_first) mark(a, 12);  // warp 0's work units of the first row done
      __syncthreads();
      // The tiles' parts summed in a fixed order (deterministic), scaled by σ, into t; and the
      // padding columns of t (read by phase 2's block sums) zeroed by the block holding item 0.
      for (uint32_t e = threadIdx.x; e < (ihi - ilo) * nrows * kMmaRows; e += blockDim.x) {
        const uint32_t i = ilo + e / (nrows * kMmaRows), h = e / kMmaRows % nrows, rw = e % kMmaRows;
        uint32_t bi, j;
        bool tile;
        if (!item1_of(d, i - r * a.I1, bi, j, tile) || !tile) continue;
        const BandDesc& bd = d.bands[bi];
        if (j + rw >= bd.r1 - bd.r0) continue;
        const float* pp = part + ((i - ilo) * kParts * nrows + h) * kMmaRows + rw;
        float v = 0.f;
        for (uint32_t p = 0; p < kParts; ++p) v += pp[p * nrows * kMmaRows];
        __stcg(trow + h * a.io.ldt + bd.t_off + j + rw, v * d.sigma[bd.r0 + j + rw] * a.io.scale);
      }
      if (ilo == r * a.I1 && ihi > ilo && warp == 0)
        for (uint32_t h = 0; h < nrows; ++h)
          for (uint32_t bb = 0; bb < d.n_bands; ++bb) {
            const uint32_t nr = d.bands[bb].r1 - d.bands[bb].r0, pad = ((nr + 31) & ~31u) - nr;
            if ((uint32_t)lane < pad) __stcg(trow + h * a.io.ldt + d.bands[bb].t_off + nr + lane, 0.f);
          }
    } else {
      const uint32_t ulo = max(lo1, r * U1) - r * U1, uhi = min(hi1, (r + 1) * U1) - r * U1;  // this block's units
      // Each unit's sums go to its part's copy of t (phase 2 adds the kParts copies in a fixed order,
      // then scales them by σ): a tile's parts may lie in different blocks, so that the split evens
      // the blocks out to a unit (a quarter tile) instead of an item — with whole items, the blocks
      // holding one item more than the rest were the last out of phase 1 (twenty-sixth session). The
      // block's units go to its warps in turn, so they get near-equal shares whatever mix of items it
      // holds; an item that is not a tile is one unit (p = 0), its other parts write zeros.
      for (uint32_t uu = ulo + warp; uu < uhi; uu += kMWarps) {
        const uint32_t i = uu / kParts, p = uu % kParts;
        uint32_t bi, j;
        bool tile;
        if (!item1_of(d, i, bi, j, tile)) break;  // items past the delta's: none follow
        const BandDesc& bd = d.bands[bi];
        const uint32_t nr = bd.r1 - bd.r0;
        // this unit's columns of t (computed where used: a pointer live across the tile loop spills)
        auto tp = [&] { return a.io.t + (uint64_t)ra * a.io.ldt + p * a.t_part + bd.t_off + j; };
        if (tile) {
          const float2 s = tile_part(bd, nr, j, p);
          if ((uint32_t)q < nrows) {  // lane q = 0: row ra, q = 1: row ra + 1 (rows past the band's: padding, zero)
            float* t0 = tp() + q * a.io.ldt;
            __stcg(t0 + g, j + g < nr ? s.x : 0.f);
            __stcg(t0 + g + 8, j + g + 8 < nr ? s.y : 0.f);
          }
        } else if (p == 0) {
          const dc_qparam* qp = bd.bits == 16 ? nullptr : bd.v_qp + (uint64_t)j * bd.v_row_groups;
          for (uint32_t h = 0; h < nrows; ++h) {
            float v = fp32_row(bd.bits, bd.v_codes + (uint64_t)j * bd.v_row_words, qp,
                               bd.bits == 16 ? 1 : bd.group_size / 32, nblk_v, stage + h * a.nbx * kPitch, lane);
            v = seg_sum<32>(v);
            if (lane == 0) __stcg(tp() + h * a.io.ldt, v);
          }
        } else if ((uint32_t)lane < nrows) {
          __stcg(tp() + lane * a.io.ldt, 0.f);
        }
      }
      if (r == r1_first) mark(a, 12);  // warp 0's work units of the first row done
      // the padding columns of t (read by phase 2's block sums), every part, by the block holding unit 0
      if (ulo == 0 && uhi > 0 && warp == 0)
        for (uint32_t h = 0; h < nrows; ++h)
          for (uint32_t p = 0; p < kParts; ++p)
            for (uint32_t bb = 0; bb < d.n_bands; ++bb) {
              const uint32_t nr = d.bands[bb].r1 - d.bands[bb].r0, pad = ((nr + 31) & ~31u) - nr;
              if ((uint32_t)lane < pad)
                __stcg(a.io.t + (ra + h) * a.io.ldt + p * a.t_part + d.bands[bb].t_off + nr + lane, 0.f);
            }
    }
  }
  mark(a, 2);

  // One phase-2 item: outputs o0 … o0 + 15 of y row ra (and ra + 1: pair) with the delta dp (null:
  // none) whose descriptor is in sdesc, against the block's staged t (row h at stage + h·nbt·kPitch),
  // its digits and chunk sums (dig, csum; row h at + h·dig_row, + h·sum_row; band bb's at + dig_at[bb],
  // + sum_at[bb]) and 2^-e in down[h]; one_b, tiny_b: small_bands.
  auto p2_item = [&](const DeltaDesc* dp, uint32_t ra, uint32_t nrows, uint64_t o0, const float* down, int one_b,
                     int tiny_b) {
    const DeltaDesc& d = sdesc;
    const uint64_t oa = umin64(o0 + g, a.io.rows - 1), ob = umin64(o0 + g + 8, a.io.rows - 1);
    // tensor-core sums (lane q of y row ra + q, q < nrows), fp32 parts (all lanes; [y row][output row])
    float ya = 0.f, yb = 0.f, f[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
    float y0[2] = {0.f, 0.f};  // the outputs' old values, read first: their round trip overlaps the codes'
    const uint64_t yrow = kPair ? ra + (uint32_t)q : ra;  // this lane's y row (lanes q < nrows)
    if ((uint32_t)q < nrows && a.io.accumulate)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        if (o0 + g + 8 * h < a.io.rows) y0[h] = load_any(a.io.y, yrow * a.io.ldy + o0 + g + 8 * h, a.io.ydt);
    OneChunk one;
    uint32_t tiny_w = 0u, tiny_qp = 0u;  // lanes q = 0, 2: row oa's first code word and group; q = 1, 3: row ob's
    if (one_b >= 0) {
      const BandDesc& bd = d.bands[one_b];
      mma_one_load(bd.bits, bd.u_codes, bd.u_row_words, bd.u_qp, bd.u_row_groups, oa, ob, one);
    }
    if (tiny_b >= 0) {
      const BandDesc& bd = d.bands[tiny_b];
      const uint64_t row = q & 1 ? ob : oa;
      tiny_w = __ldg(bd.u_codes + row * bd.u_row_words);
      tiny_qp = __ldg(reinterpret_cast<const uint32_t*>(bd.u_qp + row * bd.u_row_groups));
    }
    if (dp != nullptr) {
      for (uint32_t bb = 0; bb < d.n_bands; ++bb) {
        const BandDesc& bd = d.bands[bb];
        const uint32_t nr = bd.r1 - bd.r0;
        if ((int)bb == one_b || (int)bb == tiny_b) continue;
        if (mma_band(bd.bits, bd.group_size)) {
          const uint32_t ch = mma_chunks(nr), gsh = mma_group_shift(bd.group_size);
          const float2 s = mma_rows_any<kKB>(bd.bits, bd.u_codes, bd.u_row_words, bd.u_qp, bd.u_row_groups, gsh, oa,
                                             ob, 0, ch, ch, dig + dig_at[bb], csum + sum_at[bb], down[0],
                                             kPair && nrows > 1 ? dig + a.dig_row + dig_at[bb] : nullptr,
                                             csum + a.sum_row + sum_at[bb], down[1]);
          ya += s.x;
          yb += s.y;
        } else {
          const uint32_t nbb = (nr + 31) / 32, gb = bd.bits == 16 ? 1 : bd.group_size / 32;
          const dc_qparam* qa = bd.bits == 16 ? nullptr : bd.u_qp + oa * bd.u_row_groups;
          const dc_qparam* qb = bd.bits == 16 ? nullptr : bd.u_qp + ob * bd.u_row_groups;
#pragma unroll
          for (uint32_t h = 0; h < (kPair ? 2u : 1u); ++h) {
            if (h >= nrows) break;
            const float* tb = stage + h * a.nbt * kPitch + (bd.t_off / 32) * kPitch;
            if (nr <= 8) {
              // Every code of the band is among the first 8 of its one block (the 8-bit band of the
              // default allocation holds 2): lane q = 0 takes row oa, q = 1 row ob, in one call —
              // one round trip for both rows' codes instead of one after the other.
              const bool second = q & 1;
              const float v = fp32_quarter(bd.bits, bd.u_codes + (second ? ob : oa) * bd.u_row_words,
                                           second ? qb : qa, gb, 1, tb, 0);
              if (q == 0) f[h][0] += v;
              if (q == 1) f[h][1] += v;
              continue;
            }
            f[h][0] += fp32_quarter(bd.bits, bd.u_codes + oa * bd.u_row_words, qa, gb, nbb, tb, q);
            f[h][1] += fp32_quarter(bd.bits, bd.u_codes + ob * bd.u_row_words, qb, gb, nbb, tb, q);
          }
        }
      }
      // The small bands' sums come after the large bands': their loads, issued when the item
      // started, are back by then without the warp waiting on them (sixteenth session, H100, same
      // call: 32 tenants 66.3 µs against 67.8 with the sums first; inside mma_rows, right after the
      // large band's first batch is requested, the spills grow and it takes 72.2).
      if (one_b >= 0) {
        const uint32_t bb = (uint32_t)one_b;
        const float2 s = mma_one(d.bands[bb].bits, one, dig + dig_at[bb], csum + sum_at[bb], down[0],
                                 kPair && nrows > 1 ? dig + a.dig_row + dig_at[bb] : nullptr, csum + a.sum_row + sum_at[bb],
                                 down[1]);
        ya += s.x;
        yb += s.y;
      }
      if (tiny_b >= 0) {
        float sc, z;
        load_qp_word(tiny_qp, sc, z);
#pragma unroll
        for (uint32_t h = 0; h < (kPair ? 2u : 1u); ++h) {
          if (h >= nrows) break;
          const float* tb = stage + h * a.nbt * kPitch + (d.bands[tiny_b].t_off / 32) * kPitch;
          float v = 0.f;
#pragma unroll
          for (int u = 0; u < 4; ++u) v = fmaf((float)((tiny_w >> (8 * u)) & 255u) - z, tb[u], v);
          if (q == 0) f[h][0] = fmaf(sc, v, f[h][0]);
          if (q == 1) f[h][1] = fmaf(sc, v, f[h][1]);
        }
      }
    }
#pragma unroll
    for (int h = 0; h < (kPair ? 2 : 1); ++h) {
      f[h][0] = seg_sum<4>(f[h][0]);
      f[h][1] = seg_sum<4>(f[h][1]);
    }
    if ((uint32_t)q < nrows) {
      const uint64_t rows[2] = {o0 + g, o0 + g + 8};
      const float vals[2] = {ya + (kPair && q ? f[1][0] : f[0][0]), yb + (kPair && q ? f[1][1] : f[0][1])};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (rows[h] >= a.io.rows) continue;
        const uint64_t at = yrow * a.io.ldy + rows[h];
        store_any(a.io.y, at, a.io.ydt, y0[h] + vals[h]);
      }
    }
  };

  {
    const BarrierTicket tk = grid_arrive(a.barrier);  // this block's columns of t are written
    grid_wait(a.barrier, tk);                         // every column of t is written
  }
  mark(a, 3);
  first = true;

  // ---- phase 2 ----
  const uint32_t r2_first = lo2 / a.G, r2_end = hi2 == lo2 ? r2_first : (hi2 - 1) / a.G + 1;
  for (uint32_t r = r2_first; r < r2_end; ++r) {  // item row r: y row r, or rows 2r and 2r + 1 (pair)
    const uint32_t ra = kPair ? 2 * r : r, nrows = kPair && ra + 1 < a.io.m ? 2u : 1u;
    const DeltaDesc* dp = a.sel.slot_desc(ra);
    if (dp == nullptr && a.io.accumulate) continue;  // uniform: nothing to add
    float down[2] = {0.f, 0.f};
    if (dp != nullptr) {
      const DeltaDesc& d = sdesc;
      __syncthreads();  // the previous row's readers are done with the stage
      copy_desc(&sdesc, dp);
      if constexpr (kPair) {
        for (uint32_t h = 0; h < nrows; ++h) stage_t(stage + h * a.nbt * kPitch, a.io.t + (uint64_t)(ra + h) * a.io.ldt, a.nbt);
      } else {
        __syncthreads();  // sdesc written (stage_t_parts reads its bands and σ)
        stage_t_parts(stage, a.io.t + (uint64_t)ra * a.io.ldt, a.t_part, a.nbt, d, a.io.scale);
      }
      __syncthreads();  // the stage (and sdesc) written
      if (first) mark(a, 8);  // descriptor and t staged
      if (threadIdx.x == 0) band_offsets(d, dig_at, sum_at);
      // (scale_of's first block barrier publishes dig_at and sum_at)
#pragma unroll
      for (uint32_t h = 0; h < (kPair ? 2u : 1u); ++h) {
        if (h >= nrows) break;
        const float* ts = stage + h * a.nbt * kPitch;
        const float up = scale_of(ts, d.t_stride, red, &down[h]);
        if (first) mark(a, 10);  // scale
        stage_t_digits(d, ts, up, dig + h * a.dig_row, csum + h * a.sum_row, dig_at, sum_at);
      }
      __syncthreads();
      if (first) mark(a, 4);
      first = false;
    }
    const uint32_t ilo = max(lo2, r * a.G), ihi = min(hi2, (r + 1) * a.G);
    int one_b = -1, tiny_b = -1;
    if (dp != nullptr) small_bands(sdesc, one_b, tiny_b);
    for (uint32_t i = ilo + warp; i < ihi; i += kMWarps)
      p2_item(dp, ra, nrows, (uint64_t)(i - r * a.G) * kMmaRows, down, one_b, tiny_b);
  }
  __syncthreads();
  mark(a, 5);
}

}  // namespace
#endif  // !DC_USE_HIP

cudaError_t launch_persist_mma(const LaunchCfg& c, const DeltaSel& s, const RowsArgs& r, unsigned int* barrier,
                               int sms, bool one_delta) {
#if defined(DC_USE_HIP)
  (void)c; (void)s; (void)r; (void)barrier; (void)sms; (void)one_delta;
  return cudaErrorNotSupported;
#else
  if (s.row_slot == nullptr || r.W != nullptr || r.m == 0 || r.m > (uint64_t)kMaxTokens || s.max_t_stride == 0 ||
      s.max_mma_items1 == 0 || barrier == nullptr || sms <= 0 || r.rows == 0)
    return cudaErrorNotSupported;
  // the kernel counts items (m·I1, m·⌈rows/16⌉) and vector elements in 32 bits
  if (r.rows / kMmaRows + 1 > UINT32_MAX / kMaxTokens || s.max_mma_items1 > UINT32_MAX / (kMaxTokens * kParts) ||
      s.max_v_len > UINT32_MAX / 2)
    return cudaErrorNotSupported;
  MmaArgs a{};
  a.sel = DeltaRef::of(s);
  a.io = r;
  a.barrier = barrier;
  a.xvec = aligned16(r.x, r.ldx, dtype_size(r.xdt));
  a.I1 = s.max_mma_items1;
  a.t_part = r.m * r.ldt;  // (the t scratch holds kMmaTParts × kMaxTokens rows: backend_ops.cu)
  a.G = (uint32_t)((r.rows + kMmaRows - 1) / kMmaRows);
  a.nbx = (uint32_t)((std::max<uint64_t>(r.cols, s.max_v_len) + 31) / 32);
  a.nbt = s.max_t_stride / 32;
  // digits of one row: x over v_len, or t per tensor-core band (each rounded up to a chunk)
  const uint64_t dig_row = std::max<uint64_t>(digit_bytes((uint32_t)s.max_v_len),
                                              (uint64_t)digit_bytes(s.max_t_stride) + DC_MAX_BANDS * kMmaChunk * kDigits);
  const uint64_t sum_row = std::max<uint64_t>(s.max_v_len, s.max_t_stride) / kMmaChunk + 1 + DC_MAX_BANDS;
  a.dig_row = (uint32_t)(dig_row / 4);
  a.sum_row = (uint32_t)sum_row;
  a.trace = c.trace;
  // Row staging as virtual items (RowSplit; default weights 2 and 8, the best of 0,0 / 1,2 / 1,4 /
  // 2,8 / 3,12 / 4,16 for 32 tenants and one delta at m = 16 on the H100, ninth session). The trace
  // showed the slowest blocks to be those whose range crossed into a second row and staged it too.
  // A pair of rows has its own weights: it stages twice the data per item row. 1,4 up to m = 16
  // (c.mma_pair_small_m), 2,8 above: on the H100 (eleventh session, delta only, µs, 1,4 vs 2,8)
  // m = 8: 32.7 vs 34.3, m = 16: 37.0 vs 40.3, but m = 24: 54.0 vs 49.9 and m = 64: 96.5 vs 86.0.
  uint32_t w1 = 0, w2 = 0;
  uint64_t rows_m = 0, items = 0, min_blocks = 0;
  size_t smem = 0;
  // Shared memory and split for R rows staged at once (R = 2: pairs of rows of one delta).
  auto plan = [&](uint32_t R) {
    const bool small = r.m <= c.mma_pair_small_m;
    w1 = r.m == 1 ? 0u : R == 2 ? (small ? kPairSmallW1 : c.mma_pair_w1) : c.mma_stage_w1;
    w2 = r.m == 1 ? 0u : R == 2 ? (small ? kPairSmallW2 : c.mma_pair_w2) : c.mma_stage_w2;
    rows_m = (r.m + R - 1) / R;  // item rows
    items = std::max(rows_m * a.I1, rows_m * a.G);
    min_blocks = persist_min_blocks(c, items, sms);
    // pairs' tile partial sums: at most ⌈virtual n1 / blocks⌉ items per block (the batch instance
    // writes its units' sums to the copies of t instead)
    const uint64_t part_bytes =
        R == 2 ? ((rows_m * (a.I1 + w1) + min_blocks - 1) / min_blocks) * kParts * kMmaRows * 4 * R : 0;
    smem = (size_t)(R * (std::max(a.nbx, a.nbt) * kPitch * 4 + dig_row + sum_row * 4) + part_bytes);
  };
  bool pair = one_delta && r.m > 1 && c.mma_pairs;
  plan(pair ? 2 : 1);
  if (pair && smem > kMSmemLimit) {  // one row at a time
    pair = false;
    plan(1);
  }
  if (smem > kMSmemLimit) return cudaErrorNotSupported;
  a.dig_words = (pair ? 2 : 1) * a.dig_row;
  a.sum_floats = (pair ? 2 : 1) * a.sum_row;
  static std::once_flag attr_once;
  static cudaError_t attr_err = cudaSuccess;
  std::call_once(attr_once, [] {
    attr_err = cudaFuncSetAttribute(mma_batch_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kMSmemLimit);
    if (attr_err == cudaSuccess)
      attr_err = cudaFuncSetAttribute(mma_batch_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kMSmemLimit);
  });
  if (attr_err != cudaSuccess) return attr_err;
  void (*kernel)(MmaArgs) = pair ? mma_batch_kernel<true> : mma_batch_kernel<false>;
  int occ = 0;
  cudaError_t e = cached_occupancy(reinterpret_cast<const void*>(kernel), kMThreads, smem, &occ);
  if (e != cudaSuccess) return e;
  if (occ <= 0) return cudaErrorNotSupported;
  const unsigned blocks = persist_grid_blocks(c, min_blocks, items, occ, sms);
  // the batch instance's phase 1 in units (a quarter tile; the staging weight w1 counts items), pairs' in items
  const uint32_t units = pair ? 1u : kParts;
  a.split = split_rows(rows_m, a.I1 * units, w1 * units, a.G, w2, blocks);
  return launch_persistent(c, kernel, blocks, kMThreads, smem, a);
#endif
}

}  // namespace dcg

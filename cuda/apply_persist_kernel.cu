// The persistent one-launch apply kernel (CUDA): m ≤ kMaxTokens rows of x, each with the same
// low-rank delta (dc_apply_delta_linear) or with its own (multi-tenant batch), in ONE launch.
//
//   prologue  a single delta at m = 1: the block's whole share of the delta (V̂ rows, σ, Û rows)
//             is copied into shared memory with cp.async (stage_codes); otherwise every warp
//             requests the codes of its first two work items of each phase into L2. Both before
//             waiting on the previous kernel when launched with programmatic dependent launch: a
//             loaded delta is immutable, so its codes may be read while the kernel that writes x
//             still runs. A single delta without the base at m ≤ 3 takes one block per SM so
//             that the next launch's blocks, resident beside it, do this while it runs
//             (grid_beside_next);
//   phase 1   t[r][kv] = scale·σ_kv·(x_r·V̂_kv) for the items (row r, column kv of t). x_r is
//             staged in shared memory once per block and row. Staged, `split` warps share an item
//             so that all eight work (split_of);
//   barrier   grid-wide, one counter, split into arrive and wait (see grid_arrive). The launch is
//             cooperative, so the driver guarantees that every block is resident, even next to
//             other streams' kernels. With the base layer (m = 1), the block's output rows of x·Wᵀ
//             stream between arrive and wait, started by the warps without phase-1 items at once
//             (W loads bypass L1);
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
#include <cstring>

#include "apply_kernels.cuh"
#include "persist_common.cuh"
#include "vec_dot.cuh"

namespace dcg {

#if !defined(DC_USE_HIP)
namespace {

// Eight warps a block. Sixteen (two blocks a SM at 64 registers, or one at 125) were slower at M=1
// (H100, same call: 8.50–8.57 and 9.54–9.56 µs against 8.10–8.19; bench/RESULTS-h100.md,
// twenty-fourth session): each warp's chain halved, yet the trace's phases took as long.
constexpr int kPThreads = 256;
constexpr int kPWarps = kPThreads / 32;
constexpr int kGroupRows = 32 / kRowLanesV;  // output rows of one phase-2 item (one warp)
constexpr size_t kPSmemLimit = 100 * 1024;   // two blocks per SM fit next to L1
// Blocks per SM the staged (m = 1) instance's registers are sized for (build-time tuning; the grid
// comes from the non-staged instance's occupancy, 2 per SM). 2: up to 128 registers per thread.
// Measured on the H100 (bench/RESULTS-h100.md, eighth session): 3 (80 registers) 11.98–12.02 µs and
// 4 (64 registers, small spills) 11.43 µs against 11.47 µs, fused slower with both — the spare
// room for the next launch's blocks under PDL bought nothing. The other instances spill at 3.
#ifndef DC_PERSIST_STAGED_MIN_BLOCKS
#  define DC_PERSIST_STAGED_MIN_BLOCKS 2
#endif
constexpr uint32_t kWParts = 4;              // fused base: column pieces per group of output rows (default)

struct PersistArgs {
  DeltaRef sel;              // single apply (row_slot null): sel.one_dev for every row; batch: the table
  RowsArgs io;               // the call (launch_persist's argument; m ≤ kMaxTokens, W only at m = 1)
  unsigned int* barrier;
  bool xvec;                 // x rows 16-byte aligned
  bool wvec;                 // W 16-bit, rows 16-byte aligned, cols % 16 == 0 (two halves of 8s)
  uint32_t T;                // phase-1 items per row: the largest t_stride
  uint32_t G;                // phase-2 items per row: groups of kGroupRows outputs
  ItemSplit split;           // the m·T phase-1 and m·G phase-2 items over the blocks
  uint32_t nbx, nbt;         // staged blocks of 32 of x (max(cols, v_len)) and of t (T)
  unsigned long long* trace; // diagnostics (see trace_at), or null
  uint32_t w_parts;          // fused base: column pieces per group of output rows (1..64)
  uint32_t codes_at;         // staged codes (see stage_codes): their word offset in dynamic shared
                             // memory; 0: not staged, every code is read from global memory
  uint32_t spec_warps;       // the kSpec instance (fused m = 1): warps that run the delta (the others
                             // stream the base), and t's own stage at word spec_t_at
  uint32_t spec_t_at;
  // staged (m = 1): t written in t_copies copies (rows of the scratch, ldt apart), block b reading
  // copy b mod t_copies — 264 blocks reading the same 4 KB of t queue on the same L2 lines; and
  // y_early: y's old values read right after the PDL wait instead of after phase 2
  uint32_t t_copies;
  bool y_early;
  // staged, delta only (m = 1): phase 1's columns cut by band (p1_band_range, item_split.h) with
  // these blocks per band; else equal counts (split)
  bool p1_by_band;
  BandBlocks p1b[DC_MAX_BANDS];
};

// Diagnostics: marks after each phase ([1..5]; trace_mark) and, finer, the staged single delta's
// steps: descriptor in shared memory [14], copies issued [15], prologue done [8], x staged and V̂
// in [9], warp 0's phase-1 items done [10], barrier arrival [11], t loaded [12], warp 0's phase-2
// items done [13].
__device__ __forceinline__ void trace_at(const PersistArgs& a, int k) { trace_mark(a.trace, k); }

// Row r's delta: a single delta's descriptor as the block copied it into shared memory (`one`), or
// the batch table's entry, or null.
__device__ __forceinline__ const DeltaDesc* row_desc(const PersistArgs& a, const DeltaDesc* one, uint32_t r) {
  return a.sel.row_slot == nullptr ? one : a.sel.slot_desc(r);
}

__device__ __forceinline__ uint32_t band_of(const DeltaDesc& d, uint32_t kv) {
  uint32_t b = 0;
  while (b + 1 < d.n_bands && kv >= d.bands[b + 1].t_off) ++b;
  return b;
}

// Warps per item when a block has n items of a phase (staged kernel): all eight warps busy.
__device__ __forceinline__ uint32_t split_of(uint32_t n) { return n <= 1 ? 8 : n <= 2 ? 4 : n <= 4 ? 2 : 1; }

// The first item ≥ lo of the arithmetic sequence i0, i0 + kPWarps, …
__device__ __forceinline__ uint32_t first_at_or_after(uint32_t i0, uint32_t lo) {
  return lo <= i0 ? i0 : i0 + (lo - i0 + kPWarps - 1) / kPWarps * kPWarps;
}

// Requests V̂ row kv's codes, quantization parameters and σ into L2 (32 bytes per lane).
__device__ __forceinline__ void prefetch_v_row(const DeltaDesc& d, uint32_t kv, int lane) {
  if (kv >= d.t_stride) return;
  const BandDesc& bd = d.bands[band_of(d, kv)];
  const uint32_t j = kv - bd.t_off;
  if (j >= bd.r1 - bd.r0) return;
  const char* row = reinterpret_cast<const char*>(bd.v_codes + (uint64_t)j * bd.v_row_words);
  for (uint64_t off = (uint64_t)lane * 32; off < (uint64_t)bd.v_row_words * 4; off += 32 * 32) prefetch_l2(row + off);
  if (bd.bits != 16) {
    const char* q = reinterpret_cast<const char*>(bd.v_qp + (uint64_t)j * bd.v_row_groups);
    for (uint64_t off = (uint64_t)lane * 32; off < (uint64_t)bd.v_row_groups * 4; off += 32 * 32) prefetch_l2(q + off);
  }
  if (lane == 0) prefetch_l2(d.sigma + bd.r0 + j);
}

// Requests this lane's share (kRowLanesV lanes per row) of Û row o into L2.
__device__ __forceinline__ void prefetch_u_row(const DeltaDesc& d, uint64_t o, int sub) {
  if (o >= d.rows) return;
  for (uint32_t b = 0; b < d.n_bands; ++b) {
    const BandDesc& bd = d.bands[b];
    const char* row = reinterpret_cast<const char*>(bd.u_codes + o * bd.u_row_words);
    for (uint64_t off = (uint64_t)sub * 32; off < (uint64_t)bd.u_row_words * 4; off += kRowLanesV * 32) prefetch_l2(row + off);
    if (bd.bits != 16 && sub == 0) prefetch_l2(bd.u_qp + o * bd.u_row_groups);
  }
}

// ---- phase 1's columns by band (a lone staged delta at m = 1) ---------------------------------------
// Phase 1's items are t's columns. Cut into equal counts (ItemSplit), the blocks holding the 3-bit
// band's rows were the last to reach the grid barrier, 1.6–1.9k cycles after the others (trace,
// eighteenth session: blocks 4–7 every time): with ~8 columns a block each warp decodes one row,
// and a 3-bit row has 3 words a block of 32 codes against a 2-bit row's 2. Meanwhile the blocks
// holding band 0's padding columns (no codes, t = 0) had almost nothing to do. Cut by band
// (p1_band_blocks), each band's rows go to its own blocks in proportion to rows × width: the
// default delta's 3-bit rows 4 a block (two warps a row, split_of), its two 8-bit rows one block
// (four warps a row), its 2-bit rows 7–8 a block. Padding columns are no items: the last block of
// each band writes its zeros. (A cut by a weight per column, padding included, was slower: the
// padding items piled onto the warps of the last rows, and the cut cost the prologue ~2k cycles of
// 64-bit divisions.)

// ---- staged codes (a single delta at m = 1) -------------------------------------------------------
// A block's items are contiguous ranges: phase 1 takes V̂ rows [jlo, jhi) of each band (a slice of
// t), phase 2 output rows [olo, ohi) of Û. So its share of the delta is a few contiguous pieces
// (codes, quantization parameters, σ per band), a few KB at decode sizes. They are copied into
// shared memory with cp.async as the block's first instructions, all at once, the V̂ pieces as one
// commit group and the Û pieces as a second: phase 1 waits on one DRAM round trip (not one per
// batch of blocks as it goes), and the Û codes arrive while phase 1 and the grid barrier run, so
// after the barrier phase 2 only reads t. Each piece starts on 16 bytes, so the 8- and 16-byte
// loads of load_block stay aligned (rows are whole blocks).
struct StagedBand {
  uint32_t v_codes, v_qp, sigma, u_codes, u_qp;  // word offsets from the staged area
  uint32_t jlo;                                  // first V̂ row of the band in this block
};

__device__ __forceinline__ void cp_async(uint32_t dst, const void* src, int bytes) {
  if (bytes == 16) asm volatile("cp.async.ca.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
  else if (bytes == 8) asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(dst), "l"(src) : "memory");
  else asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

// One piece: n words from global src to shared memory at byte address dst, by the calling warp
// (lanes take 16, 8 or 4 bytes each, the widest the source's alignment allows).
__device__ __forceinline__ void copy_piece(uint32_t dst, const char* s, uint32_t n) {
  const uint32_t lane = threadIdx.x % 32, bytes = n * 4, al = (uint32_t)reinterpret_cast<uintptr_t>(s) | bytes;
  if ((al & 15) == 0) {
    for (uint32_t e = lane * 16; e < bytes; e += 32 * 16) cp_async(dst + e, s + e, 16);
  } else if ((al & 7) == 0) {
    for (uint32_t e = lane * 8; e < bytes; e += 32 * 8) cp_async(dst + e, s + e, 8);
  } else {
    for (uint32_t e = lane * 4; e < bytes; e += 32 * 4) cp_async(dst + e, s + e, 4);
  }
}

// Band bd's staged Û row oo (output row olo + oo of the block) and its quantization parameters.
struct StagedRow {
  const uint32_t* row;
  const dc_qparam* qp;  // null for fp16 codes
  uint32_t gb;          // blocks per quantization group
};
__device__ __forceinline__ StagedRow staged_u_row(const BandDesc& bd, const StagedBand& sb, const uint32_t* codes,
                                                  uint32_t oo) {
  return StagedRow{codes + sb.u_codes + oo * bd.u_row_words,
                   bd.bits == 16 ? nullptr : reinterpret_cast<const dc_qparam*>(codes + sb.u_qp) + oo * bd.u_row_groups,
                   bd.bits == 16 ? 1u : bd.group_size / 32};
}
// The same for staged V̂ row js (counted from the block's first row of the band), with its σ.
struct StagedVRow : StagedRow {
  float sigma;
};
__device__ __forceinline__ StagedVRow staged_v_row(const BandDesc& bd, const StagedBand& sb, const uint32_t* codes,
                                                   uint32_t js) {
  return StagedVRow{{codes + sb.v_codes + js * bd.v_row_words,
                     bd.bits == 16 ? nullptr
                                   : reinterpret_cast<const dc_qparam*>(codes + sb.v_qp) + js * bd.v_row_groups,
                     bd.bits == 16 ? 1u : bd.group_size / 32},
                    reinterpret_cast<const float*>(codes + sb.sigma)[js]};
}

// t[kv] in each of the scratch's first `copies` rows (ldt apart): at m = 1 block b reads copy
// b mod copies (PersistArgs::t_copies).
__device__ __forceinline__ void store_t_copies(float* t, uint64_t ldt, uint32_t copies, uint32_t kv, float v) {
  for (uint32_t c = 0; c < copies; ++c) __stcg(t + (uint64_t)c * ldt + kv, v);
}

// Issues the copies of the block's pieces (phase-1 items [lo1, hi1), output rows [olo, ohi)) and
// records where they go in tab (warp 0). Layout: the V̂ pieces of every band (codes, quantization
// parameters, σ), then the Û pieces (codes, parameters), each rounded up to 16 bytes; piece
// p = 5b + k (band b, kind k) is copied by warp p mod 8.
// Why this shape (trace, eighth session): a walk over the bands in program order, then a loop over
// every piece in every warp, took 3.3–3.5k cycles before the last copy was issued. Here lane b
// computes band b's pieces (d is the block's shared-memory copy), the offsets are a prefix sum
// over the lanes, and each warp fetches only its own pieces' addresses.
__device__ __forceinline__ void stage_codes(const DeltaDesc& d, uint32_t* area, uint32_t lo1, uint32_t hi1, uint32_t olo,
                                            uint32_t ohi, StagedBand* tab, uint32_t copy_warps = kPWarps) {
  constexpr uint32_t kPieces = 5;  // per band: V̂ codes, V̂ parameters, σ, Û codes, Û parameters
  const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const uint32_t nb = d.n_bands;
  const char* src[kPieces] = {};
  uint32_t words[kPieces] = {}, jlo = 0;  // lanes ≥ nb: no pieces
  if (lane < nb) {
    const BandDesc& bd = d.bands[lane];
    const uint32_t nr = bd.r1 - bd.r0;
    jlo = lo1 > bd.t_off ? min(lo1 - bd.t_off, nr) : 0;
    const uint32_t jhi = hi1 > bd.t_off ? min(hi1 - bd.t_off, nr) : 0, nj = jhi - jlo, no = ohi - olo;
    const bool q = bd.bits != 16;
    src[0] = reinterpret_cast<const char*>(bd.v_codes + (uint64_t)jlo * bd.v_row_words);
    src[1] = reinterpret_cast<const char*>(bd.v_qp + (uint64_t)jlo * bd.v_row_groups);
    src[2] = reinterpret_cast<const char*>(d.sigma + bd.r0 + jlo);
    src[3] = reinterpret_cast<const char*>(bd.u_codes + (uint64_t)olo * bd.u_row_words);
    src[4] = reinterpret_cast<const char*>(bd.u_qp + (uint64_t)olo * bd.u_row_groups);
    words[0] = nj * bd.v_row_words;
    words[1] = q ? nj * bd.v_row_groups : 0u;
    words[2] = nj;
    words[3] = no * bd.u_row_words;
    words[4] = q ? no * bd.u_row_groups : 0u;
  }
  uint32_t at[kPieces];
  at[0] = 0;
#pragma unroll
  for (uint32_t k = 1; k < kPieces; ++k) at[k] = k == 3 ? 0u : at[k - 1] + ((words[k - 1] + 3) & ~3u);
  const uint32_t vw = at[2] + ((words[2] + 3) & ~3u), uw = at[4] + ((words[4] + 3) & ~3u);
  uint32_t vx = vw, ux = uw;  // inclusive prefix sums over the lanes (bands)
#pragma unroll
  for (int o = 1; o < DC_MAX_BANDS; o <<= 1) {
    const uint32_t pv = __shfl_up_sync(0xffffffffu, vx, o), pu = __shfl_up_sync(0xffffffffu, ux, o);
    if (lane >= (uint32_t)o) {
      vx += pv;
      ux += pu;
    }
  }
  const uint32_t u_base = __shfl_sync(0xffffffffu, vx, DC_MAX_BANDS - 1) + ux - uw, v_base = vx - vw;
#pragma unroll
  for (uint32_t k = 0; k < kPieces; ++k) at[k] += k < 3 ? v_base : u_base;
  if (warp == 0 && lane < nb) tab[lane] = StagedBand{at[0], at[1], at[2], at[3], at[4], jlo};
  const uint32_t area_s = (uint32_t)__cvta_generic_to_shared(area);
  // this warp's pieces: the V̂ ones first (the first commit group), then the Û ones
#pragma unroll
  for (int pass = 0; pass < 2; ++pass) {
    // the pieces by warps [0, copy_warps) only (kSpec: the warps that read them). `all` spells out
    // the other instances' case (warp < kPWarps always): written with copy_warps alone, the loop
    // compiled differently there (sm_90 SASS of the staged instances changed).
    const bool all = copy_warps == (uint32_t)kPWarps;
    const uint32_t step = all ? (uint32_t)kPWarps : copy_warps;
#pragma unroll 1
    for (uint32_t p = all || warp < copy_warps ? warp : kPieces * nb; p < kPieces * nb; p += step) {
      const uint32_t b = p / kPieces, k = p % kPieces;
      if ((k < 3) != (pass == 0)) continue;
      // piece k of lane b (k selected without indexing the arrays at run time: they stay in registers)
      uint32_t wv = words[0], av = at[0];
      const char* sv = src[0];
#pragma unroll
      for (uint32_t kk = 1; kk < kPieces; ++kk)
        if (k == kk) {
          wv = words[kk];
          av = at[kk];
          sv = src[kk];
        }
      const uint32_t n = __shfl_sync(0xffffffffu, wv, b), dst = __shfl_sync(0xffffffffu, av, b);
      const char* s = reinterpret_cast<const char*>(__shfl_sync(0xffffffffu, reinterpret_cast<unsigned long long>(sv), b));
      if (n != 0) copy_piece(area_s + dst * 4, s, n);
    }
    cp_async_commit();
  }
}

// x_0 (m = 1, 16-byte aligned rows, no column map) into the stage as stage_rows does, without its
// per-element divisions: eight values per thread and pass, four threads per block of 32. Kept
// apart from stage_rows on purpose: a one-row branch inside stage_rows grew the tiled kernels'
// code by 7–12 % (sm_90 SASS), and instruction fetch is already 17 % of the decode kernel's stalls.
__device__ __forceinline__ void stage_row0(float* xs, uint32_t nb, const void* x, int dt, uint64_t len) {
  const uint32_t total = nb * 4;
  for (uint32_t e0 = 0; e0 < total; e0 += kPThreads) {  // same trip count in every thread (shuffles)
    const uint32_t e = e0 + threadIdx.x;
    float v[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = 0.f;
    if (e < total) {
      const uint64_t p = (uint64_t)e * 8;
      if (p + 8 <= len) {
        load8(x, dt, p, v);
      } else {
#pragma unroll
        for (int k = 0; k < 8; ++k)
          if (p + k < len) v[k] = load_any(x, p + k, dt);
      }
    }
    const float sum = seg_sum<4>(((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])));
    if (e < total) {
      float* dst = xs + (e >> 2) * kPitch;
      float4* d4 = reinterpret_cast<float4*>(dst + (e & 3) * 8);
      d4[0] = make_float4(v[0], v[1], v[2], v[3]);
      d4[1] = make_float4(v[4], v[5], v[6], v[7]);
      if ((e & 3) == 0) dst[32] = sum;
    }
  }
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

// Block k of a packed row: its BITS words and its group's scale and zero point (1, 0 without qp).
template <int BITS>
__device__ __forceinline__ void load_coded_block(const uint32_t* __restrict__ row, const dc_qparam* __restrict__ qp,
                                                 uint32_t k, uint32_t gb, int gsh, uint32_t* w, float& s, float& z) {
  load_block<BITS>(row + (uint64_t)k * BITS, w);
  s = 1.f;
  z = 0.f;
  if (qp) load_qp(qp + group_of(k, gb, gsh), s, z);
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
    float s, z;
    load_coded_block<BITS>(row, qp, k, gb, gsh, w, s, z);
    const float* xb = xs + k * kPitch;
    acc = fmaf(s, fmaf(-z, xb[32], smem_block_dot<BITS>(w, 0.f, xb)), acc);
  }
  return acc;
}

// ---- the staged instance's loop on 32-bit shared-memory addresses ----------------------------------
// Its codes, quantization parameters and stages all lie in shared memory, but through the noinline
// packed_row_loop (shared with the instances that read codes from global memory) the code and
// parameter loads compiled to generic 64-bit loads (LD.E with two R2UR each; ncu source profile,
// twenty-first session), at the head of every iteration's chain. Here every load is an ld.shared on
// a 32-bit address, and a width below 16 always has parameters (no branch on qp). H100, same call,
// three rounds: delta-only M=1 8.25–8.30 µs against 8.75–8.81 through packed_row_loop. Row, qp and xs
// are shared-memory addresses (qp unused at 16 bits). Its 2-bit block rolled into two or four
// iterations (the same sums; a shorter body, more instructions run) was slower: M=1 8.62 / 9.21 µs
// against 8.10–8.14, phase 1 3.7k / 4.3k cycles against 3.2k (bench/results/wip-loop2-parts.patch).
template <int BITS>
__device__ __noinline__ float packed_row_loop_s(uint32_t row, uint32_t qp, uint32_t gb, uint32_t nblk, uint32_t xs,
                                                int lane, int lanes) {
  const int gsh = group_shift(gb);
  float acc = 0.f;
#pragma unroll 1
  for (uint32_t k = lane; k < nblk; k += lanes) {
    uint32_t w[BITS];
    lds_block<BITS>(row + k * (BITS * 4), w);
    float s = 1.f, z = 0.f;
    if constexpr (BITS != 16) load_qp_word(lds32(qp + 4 * group_of(k, gb, gsh)), s, z);
    acc = fmaf(s, lds_block_dot_z<BITS>(w, z, xs + k * (kPitch * 4)), acc);
  }
  return acc;
}

// Σ over one packed row of a band of width `bits` (runtime) against staged blocks: lanes `lane` of
// `lanes` take blocks lane, lane + lanes, …; kCompact: the small loop (see packed_row_loop); kShared
// (the staged instance: row, qp and xs in shared memory, qp null at 16 bits): packed_row_loop_s.
template <bool kCompact, bool kShared = false>
__device__ __forceinline__ float band_row_dot(uint32_t bits, const uint32_t* row, const dc_qparam* qp, uint32_t gb,
                                              uint32_t nblk, const float* xs, int lane, int lanes) {
  if constexpr (kShared) {
    const uint32_t r = smem_addr(row), q = qp ? smem_addr(qp) : 0u, x = smem_addr(xs);
    return with_bits(bits, [&](auto b) { return packed_row_loop_s<decltype(b)::value>(r, q, gb, nblk, x, lane, lanes); });
  } else {
    return with_bits(bits, [&](auto b) {
      if constexpr (kCompact) return packed_row_loop<decltype(b)::value>(row, qp, gb, nblk, xs, lane, lanes);
      else return packed_row_smem<decltype(b)::value>(row, qp, gb, nblk, xs, lane, lanes);
    });
  }
}

__device__ __forceinline__ float band_row_split(uint32_t bits, const uint32_t* row, const dc_qparam* qp, uint32_t gb,
                                                uint32_t nblk, const float* xs, int sub) {
  static_assert(kRowLanesV == 8, "four codes per lane");
  return with_bits(bits, [&](auto b) { return packed_row_part<decltype(b)::value, 4>(row, qp, gb, nblk, xs, sub); });
}

// Barrier `id` (1..15) among the block's first `threads` threads (whole warps); 0 is __syncthreads.
__device__ __forceinline__ void named_sync(uint32_t id, uint32_t threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// The block's grid-barrier arrival once its phase-1 columns of t are written, for the fused m = 1
// call, where the warps go on to the base stream instead of waiting together: the last of the
// `p1_warps` warps with phase-1 items arrives for the block (thread 0 if there are none), and the
// ticket lands in shared memory for whichever thread waits.
__device__ __forceinline__ void arrive_after_phase1(unsigned int* bar, uint32_t p1_warps, int warp, int lane,
                                                    unsigned int& p1_done, BarrierTicket& ticket) {
  if ((uint32_t)warp < p1_warps) {
    __syncwarp();
    if (lane == 0) {
      fence_to_gpu();  // this warp's columns of t before the block's arrival
      if (atomicAdd(&p1_done, 1u) == p1_warps - 1) {
        fence_to_gpu();  // acquire: the shared count is relaxed; the other warps' fences pair with this one
        ticket = grid_arrive_thread(bar);
      }
    }
  } else if (p1_warps == 0 && threadIdx.x == 0) {
    ticket = grid_arrive_thread(bar);
  }
}

// The fused m = 1 call's base: the block's output rows [lo2, hi2)·kGroupRows of x·Wᵀ (x staged in
// xs) in pieces of (kGroupRows rows, 1/w_parts of the columns) that the calling warps take from the
// block's counter `next` until none is left; each piece's sum is added into wpart[item][row].
__device__ __forceinline__ void stream_base_pieces(const PersistArgs& a, uint32_t lo2, uint32_t hi2, const float* xs,
                                                   float* wpart, unsigned int& next, int lane, int sub, int rsub) {
  const size_t wes = a.io.wdt == DC_DTYPE_F32 ? 4 : 2;
  const uint64_t units = a.io.cols / 16;  // piece bounds on 16 columns (the vector path's unit)
  const uint32_t np = a.w_parts, pieces = (hi2 - lo2) * np;
  for (;;) {
    uint32_t q = 0;
    if (lane == 0) q = atomicAdd(&next, 1u);
    q = __shfl_sync(0xffffffffu, q, 0);
    if (q >= pieces) break;
    const uint32_t li = q / np, part = q % np;
    const uint64_t c0 = units * part / np * 16, c1 = part + 1 == np ? a.io.cols : units * (part + 1) / np * 16;
    const uint64_t o = (uint64_t)(lo2 + li) * kGroupRows + rsub;  // m = 1: item = group
    float s = 0.f;
    if (o < a.io.rows) s = base_row_part(a, static_cast<const char*>(a.io.W) + o * a.io.ldw * wes, xs, c0, c1, sub);
    s = seg_sum<kRowLanesV>(s);
    if (sub == 0) atomicAdd(&wpart[li * kGroupRows + rsub], s);
  }
}

// kStaged: codes from shared memory (a.codes_at; a single delta at m = 1, always with the compact
// code, as packed_row_loop_s on shared-memory addresses: from shared memory the unrolled batches of
// loads cost more than they save — H100, twenty-first session, M=1 9.75–9.93 µs against 8.76–8.85 —
// and a separate instance keeps the staging out of the batched kernel's registers). kSpec (with
// kStaged; fused m = 1 only): warp specialization, see the kSpec block below.
// kBase = false (the staged delta-only instance for aligned x): no fused base's code and no
// stage_rows; see the staged_kernel note at the launch.
template <bool kCompact, bool kStaged, bool kSpec, bool kBase>
__device__ __forceinline__ void persist_body(const PersistArgs& a) {
  const void* const W = kBase ? a.io.W : nullptr;  // the fused base's weights (m = 1), or null
  extern __shared__ float4 dyn_smem[];
  __shared__ StagedBand tab[DC_MAX_BANDS];                    // where the staged pieces are
  __shared__ DeltaDesc sdesc;  // a single delta's descriptor (see the prologue)
  __shared__ float tsum[kPWarps], ysum[kPWarps * kGroupRows];  // split items' sums (staged)
  __shared__ unsigned int p1_done, w_next;  // fused base: see after phase 1
  __shared__ BarrierTicket ticket;           // ... its grid-barrier arrival, by whichever warp made it
  float* stage = reinterpret_cast<float*>(dyn_smem);           // x_r before the barrier, t_r after
  float* wpart = stage + (a.nbx > a.nbt ? a.nbx : a.nbt) * kPitch;  // [item][row] base sums (m = 1)
  constexpr bool staged = kStaged;
  const uint32_t* codes = reinterpret_cast<const uint32_t*>(dyn_smem) + a.codes_at;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int sub = lane % kRowLanesV, rsub = lane / kRowLanesV;
  const uint32_t b = blockIdx.x;
  uint32_t lo1, hi1, lo2, hi2;  // this block's phase-1 and phase-2 items
  a.split.phase1(b, lo1, hi1);
  a.split.phase2(b, lo2, hi2);
  const uint32_t w1 = lo1 + warp, w2 = lo2 + (kPWarps - 1 - warp);  // this warp's first items
  // staged (single delta, m = 1: item = column of t, resp. group of output rows; rows < 2^32 there)
  const uint32_t olo = (uint32_t)umin64((uint64_t)lo2 * kGroupRows, a.io.rows);
  const uint32_t ohi = (uint32_t)umin64((uint64_t)hi2 * kGroupRows, a.io.rows);

  uint32_t pad_lo = 0, pad_hi = 0;  // phase 1 by band: the padding columns of t this block zeroes
  trace_at(a, 0);
  // prologue (immutable delta data only): the block's codes into shared memory, or the first two
  // items of each phase into L2
  if (staged) {
    // The descriptor into shared memory first, from its device copy (one coalesced round trip):
    // read from the launch's parameter space, each new line was a constant-cache miss on the
    // warp's critical path, one after another (3.3k cycles before the last copy was issued, and
    // long-scoreboard stalls in the phases; trace and ncu, eighth session).
    copy_desc(&sdesc, a.sel.one_dev);
    __syncthreads();
    // (w1, from the equal split, is only read by the instances without staged codes)
    if (!kSpec && a.p1_by_band) {
      const uint32_t k = p1_band_range(sdesc, a.p1b, b, lo1, hi1);
      p1_band_padding(sdesc, a.p1b, k, b, gridDim.x, pad_lo, pad_hi);
    }
    trace_at(a, 14);
    stage_codes(sdesc, const_cast<uint32_t*>(codes), lo1, hi1, olo, ohi, tab, kSpec ? a.spec_warps : (uint32_t)kPWarps);
    trace_at(a, 15);
  } else {
    if (a.sel.row_slot == nullptr) {  // uniform: a single delta's descriptor, as the staged kernel does
      copy_desc(&sdesc, a.sel.one_dev);
      __syncthreads();
    }
    for (uint32_t i = w1; i < hi1 && i < w1 + 2 * kPWarps; i += kPWarps) {
      const uint32_t r = i / a.T;
      const DeltaDesc* dp = row_desc(a, &sdesc, r);
      if (dp) prefetch_v_row(*dp, i - r * a.T, lane);
    }
    for (uint32_t i = w2; i < hi2 && i < w2 + 2 * kPWarps; i += kPWarps) {
      const uint32_t r = i / a.G;
      const DeltaDesc* dp = row_desc(a, &sdesc, r);
      if (dp) prefetch_u_row(*dp, (uint64_t)(i - r * a.G) * kGroupRows + rsub, sub);
    }
  }
  if (W != nullptr)
    for (uint32_t e = threadIdx.x; e < (hi2 - lo2) * kGroupRows; e += blockDim.x) wpart[e] = 0.f;
  // Staged (m = 1, ~4 items per phase and block at decode sizes): `split` warps share an item, so
  // that all eight warps work and each runs 1/split of the item's chain of instructions (the
  // critical path: ncu measured ~13 cycles per instruction per warp at this occupancy).
  const uint32_t split1 = staged && W == nullptr ? split_of(hi1 - lo1) : 1, part1 = warp % split1;
  if (threadIdx.x == 0) p1_done = w_next = 0u;
  const uint32_t split2 = staged ? split_of(hi2 - lo2) : 1, part2 = warp % split2;
  if (staged && threadIdx.x < kPWarps * kGroupRows) {
    ysum[threadIdx.x] = 0.f;
    if (threadIdx.x < kPWarps) tsum[threadIdx.x] = 0.f;
  }
  trace_at(a, 8);  // copies issued
  pdl_allow_next();
  pdl_wait_prev();  // x, y and the scratch are the previous kernels' from here on
  trace_at(a, 1);
  // staged, delta only: y's old value of output row olo + threadIdx.x (stored by this thread at the
  // end), read once x is staged (below) so that its round trip overlaps the phases instead of
  // following phase 2
  const bool y_early = staged && a.y_early && a.io.accumulate && W == nullptr;
  float y_old = 0.f;

  // ---- phase 1 ----
  const ColMap xmap{nullptr, 0, a.io.cols, a.io.cols};
  if constexpr (kSpec) {
    // Fused m = 1 with warp specialization: warps [0, D) run the delta — phase 1, the grid
    // barrier, phase 2 — while warps [D, 8) stream the base rows from the start to the end; the
    // two halves meet in wpart. Why: the base stream takes ~28k cycles and the delta's phases
    // ~7k, but the shared-stream design ran phase 2 only after the stream (a ~5k-cycle tail,
    // bench/RESULTS-h100.md, seventh and eighth sessions). The delta warps sync among themselves
    // on named barrier 1; they alone copied the delta's pieces (stage_codes), so the stream warps
    // start once x is staged, and they stage t in its own area (the stream keeps reading x).
    const uint32_t D = a.spec_warps;
    float* tstage = reinterpret_cast<float*>(dyn_smem) + a.spec_t_at;
    if (a.xvec) {
      stage_row0(stage, a.nbx, a.io.x, a.io.xdt, a.io.cols);
    } else {
      const int rr[1] = {0};
      stage_rows(stage, (int)a.nbx, 0, a.io.x, a.io.xdt, a.io.ldx, rr, 1, xmap, a.xvec);
    }
    __syncthreads();  // x staged, wpart and the counters zeroed
    if ((uint32_t)warp < D) {
      cp_async_wait<1>();  // this thread's V̂ pieces
      named_sync(1, D * 32);
      trace_at(a, 9);
      const DeltaDesc& d = sdesc;
      const uint32_t nblk_v = (uint32_t)((d.v_len + 31) / 32);
      for (uint32_t kv = lo1 + warp; kv < hi1; kv += D) {  // m = 1: item = column of t
        if (kv >= d.t_stride) continue;
        const uint32_t bi = band_of(d, kv);
        const BandDesc& bd = d.bands[bi];
        const uint32_t j = kv - bd.t_off;
        float v = 0.f;
        if (j < bd.r1 - bd.r0) {
          const StagedVRow vr = staged_v_row(bd, tab[bi], codes, j - tab[bi].jlo);
          v = band_row_dot<kCompact, true>(bd.bits, vr.row, vr.qp, vr.gb, nblk_v, stage, lane, 32);
          v = seg_sum<32>(v) * vr.sigma * a.io.scale;
        }
        if (lane == 0) store_t_copies(a.io.t, a.io.ldt, a.t_copies, kv, v);
      }
      arrive_after_phase1(a.barrier, min(hi1 - lo1, D), warp, lane, p1_done, ticket);
      trace_at(a, 2);
      named_sync(1, D * 32);  // the ticket is written
      if (threadIdx.x == 0) grid_wait_thread(a.barrier, ticket);  // grid_wait among the delta warps
      named_sync(1, D * 32);  // every column of t is written
      trace_at(a, 3);
      stage_t(tstage, a.io.t + (uint64_t)(blockIdx.x % a.t_copies) * a.io.ldt, a.nbt, D * 32);
      cp_async_wait<0>();  // this thread's Û pieces
      named_sync(1, D * 32);
      trace_at(a, 4);
      for (uint32_t i = lo2 + warp; i < hi2; i += D) {  // m = 1: item = group of kGroupRows outputs
        const uint64_t o = (uint64_t)i * kGroupRows + rsub;
        float acc = 0.f;
        if (o < a.io.rows) {
          for (uint32_t bb = 0; bb < d.n_bands; ++bb) {
            const BandDesc& bd = d.bands[bb];
            const uint32_t nbb = (bd.r1 - bd.r0 + 31) / 32;
            const uint32_t* row = codes + tab[bb].u_codes + (o - olo) * bd.u_row_words;
            const dc_qparam* qp =
                bd.bits == 16 ? nullptr : reinterpret_cast<const dc_qparam*>(codes + tab[bb].u_qp) + (o - olo) * bd.u_row_groups;
            const uint32_t gb = bd.bits == 16 ? 1 : bd.group_size / 32;
            const float* tb = tstage + (bd.t_off / 32) * kPitch;
            acc += nbb <= 2 ? band_row_split(bd.bits, row, qp, gb, nbb, tb, sub)
                            : band_row_dot<kCompact, true>(bd.bits, row, qp, gb, nbb, tb, sub, kRowLanesV);
          }
        }
        acc = seg_sum<kRowLanesV>(acc);
        if (sub == 0 && o < a.io.rows) atomicAdd(&wpart[(i - lo2) * kGroupRows + rsub], acc);
      }
      trace_at(a, 13);
    } else {
      stream_base_pieces(a, lo2, hi2, stage, wpart, w_next, lane, sub, rsub);
    }
    __syncthreads();  // base and delta sums in wpart
    for (uint32_t e = threadIdx.x; e < ohi - olo; e += blockDim.x) {
      const uint64_t at = olo + e;
      store_or_add(a.io.y, at, a.io.ydt, a.io.accumulate, wpart[e]);
    }
    trace_at(a, 5);
    return;
  }
  const uint32_t r1_first = staged ? 0 : lo1 / a.T, r1_end = staged ? 1 : hi1 == lo1 ? r1_first : (hi1 - 1) / a.T + 1;
  // the base (m = 1) needs x_0 staged even in a block without phase-1 items
  const uint32_t r_first = W ? 0 : r1_first, r_end = W ? 1 : r1_end;
  for (uint32_t r = r_first; r < r_end; ++r) {
    const DeltaDesc* dp = staged ? &sdesc : row_desc(a, &sdesc, (uint32_t)r);
    if (dp == nullptr && W == nullptr) continue;  // uniform: no delta on this row
    const int rr[1] = {(int)r};
    __syncthreads();  // the previous row's readers are done with the stage
    if (staged && (!kBase || a.xvec)) stage_row0(stage, a.nbx, a.io.x, a.io.xdt, a.io.cols);  // (!kBase: aligned x only)
    else stage_rows(stage, (int)a.nbx, 0, a.io.x, a.io.xdt, a.io.ldx, rr, 1, xmap, a.xvec);
    // y's old values requested once x is in, not before x's loads: requested first, they delayed x
    // by ~290 cycles (staged m = 1 trace, twentieth session: x staged 2037 cycles after the PDL
    // release with y requested first, 1751 with y read after phase 2). Twenty-first session, H100,
    // six rounds over two calls: M=1 8.76–8.85 µs against 8.80–8.89 with y requested first.
    if (y_early && threadIdx.x < ohi - olo) y_old = load_any(a.io.y, olo + threadIdx.x, a.io.ydt);
    if (staged) cp_async_wait<1>();  // this thread's V̂ pieces (the barrier below publishes everyone's)
    __syncthreads();
    trace_at(a, 9);  // x staged, V̂ pieces in
    if (dp == nullptr) continue;
    const DeltaDesc& d = *dp;
    const uint32_t nblk_v = (uint32_t)((d.v_len + 31) / 32);
    const uint32_t ilo = max(lo1, r * a.T), ihi = min(hi1, (r + 1) * a.T);
    const uint32_t first = staged ? lo1 + warp / split1 : first_at_or_after(w1, ilo);
    for (uint32_t i = first; i < ihi; i += kPWarps / split1) {
      if (!staged && i + 2 * kPWarps < ihi) prefetch_v_row(d, i + 2 * kPWarps - r * a.T, lane);
      const uint32_t kv = i - r * a.T;
      if (kv >= d.t_stride) continue;
      const uint32_t bi = band_of(d, kv);
      const BandDesc& bd = d.bands[bi];
      const uint32_t j = kv - bd.t_off;
      float v = 0.f;
      if (j < bd.r1 - bd.r0) {
        const uint32_t* row;
        const dc_qparam* qp;
        float sg;
        if (staged) {
          const StagedVRow vr = staged_v_row(bd, tab[bi], codes, j - tab[bi].jlo);
          row = vr.row;
          qp = vr.qp;
          sg = vr.sigma;
        } else {
          row = bd.v_codes + (uint64_t)j * bd.v_row_words;
          qp = bd.v_qp + (uint64_t)j * bd.v_row_groups;
          sg = d.sigma[bd.r0 + j];
        }
        const uint32_t gb = bd.bits == 16 ? 1 : bd.group_size / 32;
        v = band_row_dot<kCompact, kStaged>(bd.bits, row, bd.bits == 16 ? nullptr : qp, gb, nblk_v, stage,
                                            lane + 32 * part1, 32 * split1);
        v = seg_sum<32>(v) * sg * a.io.scale;
      }
      if (lane == 0) {
        if (split1 > 1) atomicAdd(&tsum[i - lo1], v);
        else if (staged) store_t_copies(a.io.t, a.io.ldt, a.t_copies, kv, v);  // m = 1
        else __stcg(a.io.t + (uint64_t)r * a.io.ldt + kv, v);
      }
    }
  }
  trace_at(a, 10);  // warp 0's phase-1 items done
  if (W == nullptr) {
    if (pad_hi > pad_lo) {  // phase 1 by band: the band's padding columns, in every copy of t
      const uint32_t np = pad_hi - pad_lo;
      for (uint32_t e = threadIdx.x; e < np * a.t_copies; e += blockDim.x)
        __stcg(a.io.t + (uint64_t)(e / np) * a.io.ldt + pad_lo + e % np, 0.f);
    }
    if (split1 > 1) {  // staged: m = 1, one row
      __syncthreads();
      for (uint32_t e = threadIdx.x; e < (hi1 - lo1) * a.t_copies; e += blockDim.x)
        __stcg(a.io.t + (uint64_t)(e / (hi1 - lo1)) * a.io.ldt + lo1 + e % (hi1 - lo1), tsum[e % (hi1 - lo1)]);
    }
    trace_at(a, 2);
    const BarrierTicket tk = grid_arrive(a.barrier);  // this block's columns of t are written
    trace_at(a, 11);  // arrived
    grid_wait(a.barrier, tk);                         // every column of t is written
  } else {
    // Fused base (m = 1, split1 = 1: warp w holds phase-1 items w, w + 8, …): the last phase-1
    // warp to finish arrives at the grid barrier for the block, and every warp streams base rows
    // as soon as it has no phase-1 item left: the block's output rows of x·Wᵀ (x_0 is staged) in
    // pieces of (4 rows, 1/kWParts of the columns) taken from a shared counter, so the warps
    // without phase-1 items start at once and the barrier's latency hides behind the stream.
    // This stream already runs at ~2.3 TB/s (within 6 % of the best stand-alone GEMV,
    // bench/probes/gemv_stream.cu); a ring of bulk copies instead of these loads delayed phase 1's
    // own traffic and was slower (22.9–25.4 vs 20.8 µs, bench/RESULTS-h100.md, seventh session).
    // Phase 2 as dynamic units taken by the warps that leave the stream first (t staged by the
    // first of them, no block barrier in between) hid little: 20.27–20.37 against 20.43–20.48 µs
    // (eighth session) — with ~2 base pieces per warp the first warp leaves late.
    arrive_after_phase1(a.barrier, min(hi1 - lo1, (uint32_t)kPWarps), warp, lane, p1_done, ticket);
    trace_at(a, 2);
    stream_base_pieces(a, lo2, hi2, stage, wpart, w_next, lane, sub, rsub);
    __syncthreads();  // the ticket is written
    grid_wait(a.barrier, ticket);
  }
  trace_at(a, 3);

  // ---- phase 2 ----
  // Measured and not kept (bench/RESULTS-h100.md, twenty-fourth session): the 2-bit band on DP4A
  // against t in digits (half the loop's instructions: phase 2 4.3k → 4.2k cycles, digitizing t
  // +1.1k; wip-p2-dp4a.patch) and a warp's four rows per block of t (t read once, not four times:
  // phase 2 4.4k → 5.0k; wip-p2-rows4.patch).
  const uint32_t r2_first = staged ? 0 : lo2 / a.G, r2_end = staged ? 1 : hi2 == lo2 ? r2_first : (hi2 - 1) / a.G + 1;
  for (uint32_t r = r2_first; r < r2_end; ++r) {
    const DeltaDesc* dp = staged ? &sdesc : row_desc(a, &sdesc, (uint32_t)r);
    if (dp == nullptr && a.io.accumulate && W == nullptr) continue;  // uniform: nothing to add
    if (dp != nullptr) {
      __syncthreads();  // the previous row's readers are done with the stage
      stage_t(stage, a.io.t + (uint64_t)(staged ? blockIdx.x % a.t_copies : r) * a.io.ldt, a.nbt);
      trace_at(a, 12);  // t loaded
      if (staged) cp_async_wait<0>();  // this thread's Û pieces
      __syncthreads();
      trace_at(a, 4);
    }
    const uint32_t ilo = max(lo2, r * a.G), ihi = min(hi2, (r + 1) * a.G);
    const uint32_t first = staged ? lo2 + warp / split2 : first_at_or_after(w2, ilo);
    for (uint32_t i = first; i < ihi; i += kPWarps / split2) {
      const uint64_t o = (uint64_t)(i - r * a.G) * kGroupRows + rsub;
      float acc = 0.f;
      if (dp != nullptr) {
        const DeltaDesc& d = *dp;
        if (!staged && i + 2 * kPWarps < ihi)
          prefetch_u_row(d, (uint64_t)(i + 2 * kPWarps - r * a.G) * kGroupRows + rsub, sub);
        if (o < a.io.rows) {
          for (uint32_t bb = 0; bb < d.n_bands; ++bb) {
            const BandDesc& bd = d.bands[bb];
            const uint32_t nbb = (bd.r1 - bd.r0 + 31) / 32;
            const uint32_t* row = staged ? codes + tab[bb].u_codes + (o - olo) * bd.u_row_words
                                         : bd.u_codes + o * bd.u_row_words;
            const dc_qparam* qp = bd.bits == 16 ? nullptr
                                  : staged ? reinterpret_cast<const dc_qparam*>(codes + tab[bb].u_qp) + (o - olo) * bd.u_row_groups
                                           : bd.u_qp + o * bd.u_row_groups;
            const uint32_t gb = bd.bits == 16 ? 1 : bd.group_size / 32;
            const float* tb = stage + (bd.t_off / 32) * kPitch;
            if (nbb <= 2) {
              if (bb % split2 == part2) acc += band_row_split(bd.bits, row, qp, gb, nbb, tb, sub);
            } else {
              acc += band_row_dot<kCompact, kStaged>(bd.bits, row, qp, gb, nbb, tb, sub + kRowLanesV * part2,
                                                     kRowLanesV * split2);
            }
          }
        }
      }
      acc = seg_sum<kRowLanesV>(acc);
      if (sub == 0 && o < a.io.rows) {
        if (split2 > 1) {
          atomicAdd(&ysum[(i - lo2) * kGroupRows + rsub], acc);
        } else {
          const uint64_t at = (uint64_t)r * a.io.ldy + o;
          const float base = W != nullptr ? wpart[(i - lo2) * kGroupRows + rsub] : 0.f;
          // (not store_or_add: old + base first, then acc — the order the fused results were checked in)
          store_any(a.io.y, at, a.io.ydt, (a.io.accumulate ? load_any(a.io.y, at, a.io.ydt) : 0.f) + base + acc);
        }
      }
    }
  }
  trace_at(a, 13);  // warp 0's phase-2 items done
  if (split2 > 1) {  // staged: m = 1, one row; output rows [olo, ohi)
    __syncthreads();
    if (threadIdx.x < ohi - olo) {
      const uint64_t at = olo + threadIdx.x;
      const float base = W != nullptr ? wpart[threadIdx.x] : 0.f;
      const float old = y_early ? y_old : a.io.accumulate ? load_any(a.io.y, at, a.io.ydt) : 0.f;
      store_any(a.io.y, at, a.io.ydt, old + base + ysum[threadIdx.x]);
    }
  }
  if (staged) cp_async_wait<0>();  // a block without phase-2 items: no copy outlives it
  __syncthreads();
  trace_at(a, 5);
}

template <bool kCompact, bool kStaged, bool kSpec = false, bool kBase = true>
__global__ void __launch_bounds__(kPThreads, kStaged ? DC_PERSIST_STAGED_MIN_BLOCKS : 2)
    persist_kernel(const __grid_constant__ PersistArgs a) {
  persist_body<kCompact, kStaged, kSpec, kBase>(a);
}

// The staged delta-only instance with small parameters (launch_persist says why): the launch's
// arguments as they were when the delta was uploaded (the plan, in device memory next to the
// descriptor, staged_plan) with the call's own fields from SlimArgs, assembled in shared memory.
struct SlimArgs {
  const PersistArgs* plan;   // the delta's plan (device memory; the call's fields left zero)
  const DeltaDesc* one_dev;  // the call's own fields ...
  const void* x;
  void* y;
  float* t;
  unsigned long long* trace;
  float scale;
  int8_t xdt, ydt;
  bool accumulate;
};
__global__ void __launch_bounds__(kPThreads, DC_PERSIST_STAGED_MIN_BLOCKS)
    persist_slim_kernel(const __grid_constant__ SlimArgs s) {
  __shared__ PersistArgs A;
  copy_words(&A, s.plan);
  __syncthreads();
  if (threadIdx.x == 0) {
    A.sel.one_dev = s.one_dev;  // (a single delta: row_slot and table null)
    A.io.x = s.x;
    A.io.y = s.y;
    A.io.t = s.t;
    A.trace = s.trace;
    A.io.scale = s.scale;
    A.io.xdt = s.xdt;
    A.io.ydt = s.ydt;
    A.io.accumulate = s.accumulate;
  }
  __syncthreads();
  persist_body<true, true, false, false>(A);
}

// ---- one delta at 2 … kRowsAll rows (staged codes, each code decoded once per kRowsMax rows) -----
// Why: the kernel above decodes every code once per row of x (m·T phase-1 items), so at 2–4 rows it
// costs ~7 µs a row over its m = 1 time (H100, eleventh session: 10.7, 16.7, 25.1, 26.7 µs), while
// the tensor-core kernel has a ~31 µs floor at these sizes. Here the items are those of m = 1 (a
// column of t, a group of output rows), the block's codes are staged as at m = 1, x and then t are
// staged up to kRowsMax rows at a time, and each block of 32 codes is decoded once per such group
// and dotted with each of its rows.
constexpr uint32_t kRowsMax = 4;  // rows staged (and dotted per decoded block) at once
constexpr uint32_t kRowsAll = 8;  // rows of one launch: groups of kRowsMax, each decoding the codes again

// acc[r] += Σ over blocks k = k0, k0 + step, … < nblk of one packed row against the staged blocks
// xs[r·xstride + k·kPitch] of rows r < m (sum of each block at [32]).
template <int BITS>
__device__ __forceinline__ void packed_rows_loop(const uint32_t* __restrict__ row, const dc_qparam* __restrict__ qp,
                                                 uint32_t gb, uint32_t nblk, const float* xs, uint32_t xstride,
                                                 uint32_t m, uint32_t k0, uint32_t step, float acc[kRowsMax]) {
  const int gsh = group_shift(gb);
#pragma unroll 1
  for (uint32_t k = k0; k < nblk; k += step) {
    uint32_t w[BITS];
    float s, z;
    load_coded_block<BITS>(row, qp, k, gb, gsh, w, s, z);
    float c[32];
    decode_block<BITS>(w, c);
    dot_block<kRowsMax>(c, s, z, xs + k * kPitch, (int)xstride, (int)m, acc);
  }
}

// kGroups: m up to kRowsAll in groups of kRowsMax rows (x and t staged, every code decoded once
// per group); without it m ≤ kRowsMax, one group — a separate instance, so that the 2–4-row code
// keeps its registers (the group loop cost 2–4 rows 0.25–0.5 µs on the H100, thirteenth session).
template <bool kGroups>
__global__ void __launch_bounds__(kPThreads, DC_PERSIST_STAGED_MIN_BLOCKS)
    persist_rows_kernel(const __grid_constant__ PersistArgs a) {
  extern __shared__ float4 dyn_smem[];
  __shared__ StagedBand tab[DC_MAX_BANDS];
  __shared__ DeltaDesc sdesc;
  __shared__ float tsum[kPWarps * kRowsMax], ysum[kPWarps * kGroupRows * kRowsMax];  // split items' sums
  float* stage = reinterpret_cast<float*>(dyn_smem);  // m rows of x before the barrier, of t after
  const uint32_t* codes = reinterpret_cast<const uint32_t*>(dyn_smem) + a.codes_at;
  const uint32_t m = (uint32_t)a.io.m;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int sub = lane % kRowLanesV, rsub = lane / kRowLanesV;
  uint32_t lo1, hi1, lo2, hi2;  // items: columns of t, groups of kGroupRows output rows
  a.split.phase1(blockIdx.x, lo1, hi1);
  a.split.phase2(blockIdx.x, lo2, hi2);
  const uint32_t olo = (uint32_t)umin64((uint64_t)lo2 * kGroupRows, a.io.rows);
  const uint32_t ohi = (uint32_t)umin64((uint64_t)hi2 * kGroupRows, a.io.rows);
  trace_at(a, 0);
  copy_desc(&sdesc, a.sel.one_dev);  // (see persist_kernel's prologue)
  __syncthreads();
  stage_codes(sdesc, const_cast<uint32_t*>(codes), lo1, hi1, olo, ohi, tab);
  const uint32_t split1 = split_of(hi1 - lo1), part1 = warp % split1;
  const uint32_t split2 = split_of(hi2 - lo2), part2 = warp % split2;
  for (uint32_t e = threadIdx.x; e < kPWarps * kGroupRows * kRowsMax; e += blockDim.x) {
    ysum[e] = 0.f;
    if (e < kPWarps * kRowsMax) tsum[e] = 0.f;
  }
  pdl_allow_next();
  pdl_wait_prev();  // x, y and the scratch are the previous kernels' from here on
  trace_at(a, 1);

  // ---- phase 1: t[r][kv] for every row r < m of each item kv ----
  const DeltaDesc& d = sdesc;
  const uint32_t xstride = a.nbx * kPitch;
  const ColMap xmap{nullptr, 0, a.io.cols, a.io.cols};
  __shared__ int rr[kRowsAll];  // stage_rows reads its row list at run time
  if (threadIdx.x < kRowsAll) rr[threadIdx.x] = (int)threadIdx.x;
  const uint32_t nblk_v = (uint32_t)((d.v_len + 31) / 32);
  for (uint32_t g0 = 0; g0 < (kGroups ? m : 1u); g0 += kRowsMax) {  // rows [g0, g0 + mg)
    const uint32_t mg = kGroups ? min(m - g0, kRowsMax) : m;
    __syncthreads();  // rr written; the previous group's readers are done with the stage and tsum
    stage_rows(stage, (int)a.nbx, 0, a.io.x, a.io.xdt, a.io.ldx, rr + g0, (int)mg, xmap, a.xvec);
    if (g0 == 0) cp_async_wait<1>();  // this thread's V̂ pieces
    __syncthreads();
    for (uint32_t kv = lo1 + warp / split1; kv < hi1; kv += kPWarps / split1) {
      const uint32_t bi = band_of(d, kv);
      const BandDesc& bd = d.bands[bi];
      const uint32_t j = kv - bd.t_off;
      float acc[kRowsMax] = {0.f, 0.f, 0.f, 0.f};
      if (kv < d.t_stride && j < bd.r1 - bd.r0) {
        const StagedVRow vr = staged_v_row(bd, tab[bi], codes, j - tab[bi].jlo);
        with_bits(bd.bits, [&](auto b) {
          packed_rows_loop<decltype(b)::value>(vr.row, vr.qp, vr.gb, nblk_v, stage, xstride, mg, lane + 32 * part1,
                                               32 * split1, acc);
        });
        const float f = vr.sigma * a.io.scale;
#pragma unroll
        for (uint32_t r = 0; r < kRowsMax; ++r) acc[r] = seg_sum<32>(acc[r]) * f;
      }
      if (lane == 0) {
#pragma unroll
        for (uint32_t r = 0; r < kRowsMax; ++r) {  // unrolled: acc stays in registers
          if (r >= mg) break;
          if (split1 > 1) atomicAdd(&tsum[(kv - lo1) * kRowsMax + r], acc[r]);
          else __stcg(a.io.t + (uint64_t)(g0 + r) * a.io.ldt + kv, acc[r]);
        }
      }
    }
    if (split1 > 1) {
      __syncthreads();
      for (uint32_t e = threadIdx.x; e < (hi1 - lo1) * mg; e += blockDim.x) {
        const uint32_t r = e / (hi1 - lo1), i = e % (hi1 - lo1);
        __stcg(a.io.t + (uint64_t)(g0 + r) * a.io.ldt + lo1 + i, tsum[i * kRowsMax + r]);
      }
      if (kGroups) {
        __syncthreads();
        for (uint32_t e = threadIdx.x; e < kPWarps * kRowsMax; e += blockDim.x) tsum[e] = 0.f;  // the next group's
      }
    }
  }
  trace_at(a, 2);
  const BarrierTicket tk = grid_arrive(a.barrier);  // this block's columns of t are written
  grid_wait(a.barrier, tk);                         // every column of t is written (and x is read)
  trace_at(a, 3);

  // ---- phase 2: y[r][o] (+)= Σ_k t[r][k]·Û[o][k] ----
  const uint32_t lanes2 = kRowLanesV * split2, me2 = sub + kRowLanesV * part2;
  for (uint32_t g0 = 0; g0 < (kGroups ? m : 1u); g0 += kRowsMax) {  // rows [g0, g0 + mg)
    const uint32_t mg = kGroups ? min(m - g0, kRowsMax) : m;
    if (g0 != 0) __syncthreads();  // the previous group's readers are done with the stage and ysum
    for (uint32_t r = 0; r < mg; ++r)
      stage_t(stage + r * a.nbt * kPitch, a.io.t + (uint64_t)(g0 + r) * a.io.ldt, a.nbt);
    if (g0 == 0) cp_async_wait<0>();  // this thread's Û pieces
    __syncthreads();
    trace_at(a, 4);
    for (uint32_t i = lo2 + warp / split2; i < hi2; i += kPWarps / split2) {
      const uint32_t o = i * kGroupRows + rsub;
      float acc[kRowsMax] = {0.f, 0.f, 0.f, 0.f};
      if (o < a.io.rows) {
        uint32_t boff = 0;  // blocks of the bands before: the lanes rotate so that short bands spread
        for (uint32_t bb = 0; bb < d.n_bands; ++bb) {
          const BandDesc& bd = d.bands[bb];
          const uint32_t nbb = (bd.r1 - bd.r0 + 31) / 32;
          const StagedRow u = staged_u_row(bd, tab[bb], codes, o - olo);
          const uint32_t k0 = (me2 + lanes2 - boff % lanes2) % lanes2;
          with_bits(bd.bits, [&](auto b) {
            packed_rows_loop<decltype(b)::value>(u.row, u.qp, u.gb, nbb, stage + (bd.t_off / 32) * kPitch,
                                                 a.nbt * kPitch, mg, k0, lanes2, acc);
          });
          boff += nbb;
        }
      }
#pragma unroll
      for (uint32_t r = 0; r < kRowsMax; ++r) acc[r] = seg_sum<kRowLanesV>(acc[r]);
      if (sub == 0 && o < a.io.rows)
#pragma unroll
        for (uint32_t r = 0; r < kRowsMax; ++r) {
          if (r >= mg) break;
          if (split2 > 1) {
            atomicAdd(&ysum[(o - olo) * kRowsMax + r], acc[r]);
          } else {
            const uint64_t at = (uint64_t)(g0 + r) * a.io.ldy + o;
            store_or_add(a.io.y, at, a.io.ydt, a.io.accumulate, acc[r]);
          }
        }
    }
    if (split2 > 1) {
      __syncthreads();
      for (uint32_t e = threadIdx.x; e < (ohi - olo) * mg; e += blockDim.x) {
        const uint32_t r = e / (ohi - olo), oo = e % (ohi - olo);
        const uint64_t at = (uint64_t)(g0 + r) * a.io.ldy + olo + oo;
        store_or_add(a.io.y, at, a.io.ydt, a.io.accumulate, ysum[oo * kRowsMax + r]);
      }
      if (kGroups) {
        __syncthreads();
        for (uint32_t e = threadIdx.x; e < kPWarps * kGroupRows * kRowsMax; e += blockDim.x)
          ysum[e] = 0.f;  // the next group's
      }
    }
  }
  cp_async_wait<0>();
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
  // the kernel counts items (m·t_stride, m·⌈rows/4⌉) in 32 bits
  if (r.rows / kGroupRows + 1 > UINT32_MAX / kMaxTokens || s.max_t_stride > UINT32_MAX / kMaxTokens) return false;
  if (s.row_slot == nullptr) {
    if (s.one_dev == nullptr) return false;  // the kernels read the descriptor from its device copy
    const DeltaDesc& d = s.one;
    if (d.kind != DC_KIND_LOWRANK || d.perm != nullptr || d.v_col_offset != 0 || d.t_stride == 0) return false;
  }
  const uint64_t nbx = (std::max<uint64_t>(r.cols, s.max_v_len) + 31) / 32, nbt = s.max_t_stride / 32;
  return std::max(nbx, nbt) * kPitch * 4 <= kPSmemLimit;  // launch_persist adds the base sums
#endif
}

#if !defined(DC_USE_HIP)
namespace {
// Words of shared memory a block's staged pieces take (stage_codes' layout, every piece rounded up
// to 16 bytes): band bd's V̂ pieces for j of its rows (codes, quantization parameters, σ) and its Û
// pieces for orows output rows (codes, parameters).
uint64_t staged_piece(uint64_t words) { return (words + 3) & ~3ull; }
uint64_t staged_v_words(const BandDesc& bd, uint64_t j) {
  return staged_piece(j * bd.v_row_words) + (bd.bits != 16) * staged_piece(j * bd.v_row_groups) + staged_piece(j);
}
uint64_t staged_u_words(const BandDesc& bd, uint64_t orows) {
  return staged_piece(orows * bd.u_row_words) + (bd.bits != 16) * staged_piece(orows * bd.u_row_groups);
}
// The most for ≤ l1 phase-1 items and ≤ orows output rows per block.
uint64_t staged_words(const DeltaDesc& d, uint64_t l1, uint64_t orows) {
  uint64_t w = 0;
  for (uint32_t b = 0; b < d.n_bands; ++b)
    w += staged_v_words(d.bands[b], std::min<uint64_t>(d.bands[b].r1 - d.bands[b].r0, l1)) +
         staged_u_words(d.bands[b], orows);
  return w;
}

cudaError_t occupancy(void (*kernel)(PersistArgs), size_t smem, int* occ) {
  return cached_occupancy(reinterpret_cast<const void*>(kernel), kPThreads, smem, occ);
}

// Shared memory of a staged launch of `blocks` blocks: `fixed` bytes (the stages) and each block's
// staged codes for ⌈n1 / blocks⌉ phase-1 items and the output rows of ⌈n2 / blocks⌉ phase-2 items.
// With bb (phase 1 cut by band for this grid, p1_band_blocks): a block's V̂ rows are those of one
// band, at most q + 1 of them.
size_t staged_smem(const DeltaDesc& d, size_t fixed, uint64_t n1, uint64_t n2, uint64_t blocks,
                   const BandBlocks* bb = nullptr) {
  const uint64_t per1 = (n1 + blocks - 1) / blocks, rows2 = (n2 + blocks - 1) / blocks * kGroupRows;
  if (bb == nullptr) return fixed + (size_t)staged_words(d, per1, rows2) * 4;
  uint64_t u = 0, v = 0;  // the Û pieces (rows2 rows of every band); the most V̂ pieces of a block
  for (uint32_t k = 0; k < d.n_bands; ++k) {
    u += staged_u_words(d.bands[k], rows2);
    v = std::max<uint64_t>(v, staged_v_words(d.bands[k], bb[k].q + (bb[k].rm > 0)));
  }
  return fixed + (size_t)(u + v) * 4;
}

// The grid of a staged single-delta launch without the base: one block per SM instead of
// occupancy × SMs when PDL is on, the knob does not set the grid, and two such blocks fit an SM.
// The next launch's blocks are then resident beside this one's and stage their codes (the
// prologue, before pdl_wait_prev) while it runs; with every slot taken they could only start as
// this launch's blocks ended. Seventeenth session, H100, same call, back to back: delta-only m = 1
// 9.35–9.43 µs against 10.48–10.51, m = 2 13.1–13.2 against 14.6–14.7, m = 3 15.7–15.8 against
// 17.5 (m = 4: two blocks of twice the codes do not fit an SM, the grid stays). One launch alone
// is 0.4–1.3k cycles longer (trace: block end 18.9–19.8k against 18.5k; after a cuBLAS GEMM, which
// lets no launch in early, the two calls took 27.2–27.5 µs against 27.1–27.2), and the fused m = 1
// call, whose blocks also stream the base rows, took 23.8 µs against 18.3 at one block per SM: it
// keeps the grid.
unsigned grid_beside_next(const LaunchCfg& c, void (*kernel)(PersistArgs), const DeltaDesc& d, size_t fixed,
                          uint64_t n1, uint64_t n2, unsigned blocks, int sms, bool by_band = false) {
  if (!c.pdl || c.persist_blocks != 0 || blocks <= (unsigned)sms) return blocks;
  BandBlocks bb[DC_MAX_BANDS];
  const bool cut = by_band && p1_band_blocks(d, (unsigned)sms, bb, DC_MAX_BANDS);
  const size_t smem = staged_smem(d, fixed, n1, n2, (uint64_t)sms, cut ? bb : nullptr);
  int occ = 0;
  return smem <= kPSmemLimit && occupancy(kernel, smem, &occ) == cudaSuccess && occ >= 2 ? (unsigned)sms : blocks;
}

// Every instance may take kPSmemLimit bytes of dynamic shared memory (set once per process).
cudaError_t allow_smem() {
  static std::once_flag once;
  static cudaError_t err = cudaSuccess;
  std::call_once(once, [] {
    for (void (*k)(PersistArgs) : {persist_kernel<true, false>, persist_kernel<false, false>, persist_kernel<true, true>,
                                   persist_kernel<true, true, false, false>,
                                   persist_kernel<true, true, true>, persist_rows_kernel<false>,
                                   persist_rows_kernel<true>})
      if (err == cudaSuccess) err = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kPSmemLimit);
  });
  return err;
}

// The fields every launch sets the same way: the call, the shapes of its stages and items.
PersistArgs base_args(const DeltaSel& s, const RowsArgs& r, unsigned int* barrier) {
  PersistArgs a{};
  a.sel = DeltaRef::of(s);
  a.io = r;
  a.barrier = barrier;
  a.xvec = aligned16(r.x, r.ldx, dtype_size(r.xdt));
  a.t_copies = 1;
  a.T = s.max_t_stride;
  a.G = (uint32_t)((r.rows + kGroupRows - 1) / kGroupRows);
  a.nbx = (uint32_t)((std::max<uint64_t>(r.cols, s.max_v_len) + 31) / 32);
  a.nbt = a.T / 32;
  return a;
}

// One delta at 2 … kRowsAll rows without the base on persist_rows_kernel, when the block's codes
// and min(m, kRowsMax) staged rows fit in shared memory without costing residency; cudaErrorNotSupported (nothing
// launched) otherwise.
cudaError_t launch_persist_rows(const LaunchCfg& c, const DeltaSel& s, const RowsArgs& r, unsigned int* barrier,
                                int sms) {
  if (!c.persist_rows || !c.stage_codes || s.row_slot != nullptr || s.one_dev == nullptr || r.W != nullptr ||
      r.m < 2 || r.m > kRowsAll || r.ldt % 4 != 0)
    return cudaErrorNotSupported;
  PersistArgs a = base_args(s, r, barrier);
  const uint64_t n1 = a.T, n2 = a.G, items = std::max(n1, n2);
  const size_t stage_bytes = (size_t)std::min<uint64_t>(r.m, kRowsMax) * std::max(a.nbx, a.nbt) * kPitch * 4;
  if (stage_bytes > kPSmemLimit) return cudaErrorNotSupported;
  cudaError_t e = allow_smem();
  if (e != cudaSuccess) return e;
  void (*kernel)(PersistArgs) = r.m > kRowsMax ? persist_rows_kernel<true> : persist_rows_kernel<false>;
  int occ = 0;
  e = occupancy(kernel, stage_bytes, &occ);
  if (e != cudaSuccess) return e;
  if (occ <= 0) return cudaErrorNotSupported;
  const unsigned full = persist_grid_blocks(c, persist_min_blocks(c, items, sms), items, occ, sms);
  const unsigned blocks = grid_beside_next(c, kernel, s.one, stage_bytes, n1, n2, full, sms);
  const size_t smem = staged_smem(s.one, stage_bytes, n1, n2, blocks);
  int occ2 = 0;
  if (smem > kPSmemLimit || occupancy(kernel, smem, &occ2) != cudaSuccess || (uint64_t)occ2 * sms < blocks)
    return cudaErrorNotSupported;
  a.split = split_items(n1, n2, blocks);
  a.codes_at = (uint32_t)(stage_bytes / 4);
  return launch_persistent(c, kernel, blocks, kPThreads, smem, a);
}
}  // namespace
#endif

#if !defined(DC_USE_HIP)
namespace {
// What launch_persist launches for m ≤ kMaxTokens rows (after launch_persist_rows declined).
struct PersistLaunch {
  void (*kernel)(PersistArgs);
  unsigned blocks;
  size_t smem;
  PersistArgs a;
};
cudaError_t prepare_persist(const LaunchCfg& c, const DeltaSel& s, const RowsArgs& r, unsigned int* barrier, int sms,
                            PersistLaunch* L) {
  PersistArgs a = base_args(s, r, barrier);
  a.wvec = r.W != nullptr && r.wdt != DC_DTYPE_F32 && r.cols % 16 == 0 && aligned16(r.W, r.ldw, 2);
  a.trace = (c.trace && s.row_slot == nullptr && r.m == 1) ? c.trace : nullptr;
  a.w_parts = c.persist_wparts >= 1 && c.persist_wparts <= 64 ? c.persist_wparts : kWParts;
  const uint64_t n1 = r.m * a.T, n2 = r.m * a.G;
  const uint64_t items = std::max(n1, n2);
  const size_t stage_bytes = (size_t)std::max(a.nbx, a.nbt) * kPitch * 4;
  // base partial sums: at most ⌈n2 / blocks⌉ items per block
  const uint64_t min_blocks = persist_min_blocks(c, items, sms);
  const size_t wpart_bytes = r.W ? (size_t)((n2 + min_blocks - 1) / min_blocks) * kGroupRows * 4 : 0;
  const size_t smem = stage_bytes + wpart_bytes;
  if (smem > kPSmemLimit) return cudaErrorNotSupported;
  // The compact code for a single delta at m = 1 (see packed_row_loop), the unrolled code else.
  const bool compact = c.persist_compact >= 0 ? c.persist_compact != 0 : (s.row_slot == nullptr && r.m == 1);
  void (*kernel)(PersistArgs) = compact ? persist_kernel<true, false> : persist_kernel<false, false>;
  cudaError_t e = allow_smem();
  if (e != cudaSuccess) return e;
  int occ = 0;
  e = occupancy(kernel, smem, &occ);
  if (e != cudaSuccess) return e;
  if (occ <= 0) return cudaErrorNotSupported;
  unsigned blocks = persist_grid_blocks(c, min_blocks, items, occ, sms);
  // A single delta at m = 1 stages each block's codes in shared memory (stage_codes) when they fit
  // next to the stage without costing residency; the codes start 16-byte aligned (smem is a
  // multiple of 16: pitch 144 bytes, base sums 16 per item).
  const bool stage = c.stage_codes && s.row_slot == nullptr && s.one_dev != nullptr && r.m == 1;
  // delta only: phase 1's columns cut by band
  const bool by_band = stage && r.W == nullptr && c.p1_by_band;
  // A delta-only call with aligned x runs the staged instance without the fused base's code and
  // without stage_rows (x's general staging): kBase = false. Why (bench/RESULTS-h100.md,
  // twenty-third and twenty-fourth sessions): code the launch never runs still costs it — a build
  // with 1200 more SASS instructions that M=1 never executed ran 0.3–0.55 µs slower, another with
  // 344 more ~0.35 µs. H100, same call, alternating: without the base's code (4248 SASS
  // instructions against 5160) M=1 8.09–8.21 µs against 8.30–8.41 (four rounds); also without
  // stage_rows (3448) 8.11–8.19 against 8.27–8.36 (four rounds, another call). (Not instruction
  // fetch as such: this instance's ncu profile puts "no instruction" at 8 % of the samples; the
  // 31 % once quoted was the larger build's.)
  void (*const staged_kernel)(PersistArgs) =
      r.W == nullptr && a.xvec ? persist_kernel<true, true, false, false> : persist_kernel<true, true>;
  if (stage && r.W == nullptr)
    blocks = grid_beside_next(c, staged_kernel, s.one, smem, n1, n2, blocks, sms, by_band);
  a.split = split_items(n1, n2, blocks);
  a.p1_by_band = by_band && p1_band_blocks(s.one, blocks, a.p1b, DC_MAX_BANDS);
  size_t smem_launch = smem;
  if (stage) {
    const size_t with = staged_smem(s.one, smem, n1, n2, blocks, a.p1_by_band ? a.p1b : nullptr);
    int occ2 = 0;
    if (with <= kPSmemLimit && occupancy(staged_kernel, with, &occ2) == cudaSuccess &&
        (uint64_t)occ2 * sms >= blocks) {
      kernel = staged_kernel;
      a.codes_at = (uint32_t)(smem / 4);
      a.t_copies = c.t_copies >= 1 && c.t_copies <= (unsigned)kMaxTokens ? c.t_copies : 1;  // rows of the scratch
      a.y_early = c.y_early;
      smem_launch = with;
      // fused: the warp-specialized instance (c.fused_spec delta warps) with t's own stage
      const size_t with_t = with + (size_t)a.nbt * kPitch * 4;
      int occ3 = 0;
      if (r.W != nullptr && c.fused_spec >= 1 && c.fused_spec < (unsigned)kPWarps && with_t <= kPSmemLimit &&
          occupancy(persist_kernel<true, true, true>, with_t, &occ3) == cudaSuccess && (uint64_t)occ3 * sms >= blocks) {
        kernel = persist_kernel<true, true, true>;
        a.spec_warps = c.fused_spec;
        a.spec_t_at = (uint32_t)(with / 4);
        smem_launch = with_t;
        // column pieces per row group: one per stream warp, so that each takes the same number
        // (a block holds ~4 row groups at decode sizes; 4 pieces each over 8 − D warps left some
        // warps a piece more than others)
        if (c.persist_wparts == 0) a.w_parts = (uint32_t)kPWarps - c.fused_spec;
      }
    }
  }
  *L = PersistLaunch{kernel, blocks, smem_launch, a};
  return cudaSuccess;
}

// The fields of the staged delta-only launch's arguments that belong to the call and not to the
// delta (SlimArgs carries them), set to zero: what is left is the plan. The selection is zeroed
// whole, padding included (a single delta's is one_dev alone; the kernel sets it), so that two
// plans compare equal byte for byte; the rest of PersistArgs is built on a zeroed object.
PersistArgs plan_of(PersistArgs a) {
  std::memset(&a.sel, 0, sizeof a.sel);
  a.io.x = nullptr;
  a.io.xdt = 0;
  a.io.ldx = 0;  // (m = 1, aligned x: unused)
  a.io.t = nullptr;
  a.io.y = nullptr;
  a.io.ydt = 0;
  a.io.ldy = 0;  // (m = 1: unused)
  a.io.wdt = 0;  // (no base: unused)
  a.io.ldw = 0;
  a.io.alpha_w = 0.f;
  a.io.scale = 0.f;
  a.io.accumulate = false;
  a.trace = nullptr;
  return a;
}
}  // namespace
#endif

size_t staged_plan_bytes() {
#if defined(DC_USE_HIP)
  return 0;
#else
  return sizeof(PersistArgs);
#endif
}

bool staged_plan(const LaunchCfg& c, const DeltaSel& s, const RowsArgs& r, unsigned int* barrier, int sms,
                 void* plan) {
#if defined(DC_USE_HIP)
  (void)c; (void)s; (void)r; (void)barrier; (void)sms; (void)plan;
  return false;
#else
  PersistLaunch L{};
  if (r.m != 1 || r.W != nullptr || !persist_supported(s, r) || barrier == nullptr || sms <= 0 ||
      prepare_persist(c, s, r, barrier, sms, &L) != cudaSuccess || L.kernel != persist_kernel<true, true, false, false>)
    return false;
  int occ = 0, occ_slim = 0;  // the slim kernel holds the arguments in shared memory: same residency?
  if (occupancy(L.kernel, L.smem, &occ) != cudaSuccess ||
      cached_occupancy(reinterpret_cast<const void*>(persist_slim_kernel), kPThreads, L.smem, &occ_slim) != cudaSuccess ||
      occ_slim != occ)
    return false;
  const PersistArgs p = plan_of(L.a);
  std::memcpy(plan, &p, sizeof p);
  return true;
#endif
}

cudaError_t launch_persist(const LaunchCfg& c, const DeltaSel& s, const RowsArgs& r, unsigned int* barrier,
                           int sms, bool rows_only) {
#if defined(DC_USE_HIP)
  (void)c; (void)s; (void)r; (void)barrier; (void)sms; (void)rows_only;
  return cudaErrorNotSupported;
#else
  if (!persist_supported(s, r) || barrier == nullptr || sms <= 0) return cudaErrorNotSupported;
  if (r.m >= 2 && r.m <= kRowsAll) {  // one delta at a few rows: each code decoded once per kRowsMax rows
    const cudaError_t e = launch_persist_rows(c, s, r, barrier, sms);
    if (e != cudaErrorNotSupported) return e;
  }
  if (rows_only && r.m > kRowsMax) return cudaErrorNotSupported;
  PersistLaunch L{};
  const cudaError_t e = prepare_persist(c, s, r, barrier, sms, &L);
  if (e != cudaSuccess) return e;
  // The staged delta-only launch with the arguments the delta's upload planned (staged_plan): it
  // passes 56 bytes instead of PersistArgs' 336. Why: under programmatic dependent launch, with the
  // next launch's prologue copying its codes, a launch whose arguments take 128 bytes or more waited
  // longer than one of 80 (bench/probes/pdl_floor.cu, H100, twenty-fifth session: 3.65 against 3.07
  // µs a launch for the skeleton; bench/RESULTS-h100.md has this kernel's own figures).
  if (L.kernel == persist_kernel<true, true, false, false> && s.plan_dev != nullptr && s.plan_host != nullptr) {
    const PersistArgs p = plan_of(L.a);
    if (std::memcmp(&p, s.plan_host, sizeof p) == 0) {
      const SlimArgs sa{static_cast<const PersistArgs*>(s.plan_dev), L.a.sel.one_dev, r.x, r.y, r.t, L.a.trace,
                        r.scale, (int8_t)r.xdt, (int8_t)r.ydt, r.accumulate};
      return launch_persistent(c, persist_slim_kernel, L.blocks, kPThreads, L.smem, sa);
    }
  }
  return launch_persistent(c, L.kernel, L.blocks, kPThreads, L.smem, L.a);
#endif
}

}  // namespace dcg

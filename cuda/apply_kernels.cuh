// Host-side launchers of the apply kernels: the persistent one-launch kernel (apply_persist_kernel.cu:
// low-rank deltas without act-order or shard offset, one delta at m ≤ 64 or a multi-tenant batch;
// CUDA), the one-token ones (apply_vec_kernels.cu: the other deltas at m = 1 and batches, and HIP)
// and the tiled ones (apply_kernels.cu: the other deltas at 1 < m ≤ 64, and GEMVs). All enqueue on
// `stream`, allocate nothing and never synchronise, so they can be captured in a graph.
//
// The tiled kernels process rows of x in tiles of up to kTile rows that share one delta, so its
// codes are decoded once per tile; they take a single delta only (a batch: cudaErrorNotSupported).
#pragma once

#include "common.cuh"

namespace dcg {

// Bytes per element of an activation/weight dtype (fp32, or fp16/bf16).
inline size_t dtype_size(int dt) { return dt == DC_DTYPE_F32 ? 4 : 2; }
// Rows of `es`-byte elements at p with leading dimension ld can be read with 16-byte loads.
inline bool aligned16(const void* p, uint64_t ld, size_t es) {
  return (reinterpret_cast<uintptr_t>(p) % 16) == 0 && (ld * es) % 16 == 0;
}

struct LaunchCfg {
  int group;             // logical warp width: 32 or 64
  cudaStream_t stream;
  bool pdl = false;      // programmatic dependent launch (sm_90+): one-token kernels, persistent kernel
  bool coop = true;      // launch the persistent kernel cooperatively (guaranteed co-residency)
  unsigned persist_blocks = 0;  // persistent kernel grid cap (0: occupancy × SMs; tuning knob)
  int persist_compact = -1;     // its compact code: 1 always, 0 never, -1 for a single delta at m = 1
  unsigned long long* trace = nullptr;  // diagnostics: per-block phase clocks of single m = 1 launches
  bool stage_codes = true;      // persistent kernel, single delta at m = 1: codes copied to shared memory first
  unsigned persist_wparts = 0;  // its fused base: column pieces per group of output rows (0: kWParts)
  unsigned mma_stage_w1 = 2, mma_stage_w2 = 8;  // tensor-core batch kernel: row staging as items (RowSplit)
  bool mma_pairs = true;        // ... one delta at m > 1: two rows per tile decode (launch_persist_mma)
  unsigned mma_pair_w1 = 2, mma_pair_w2 = 8;    // ... the split's weights for such a pair of rows
  unsigned mma_pair_small_m = 16;  // ... up to this many rows weights 1,4 instead (launch_persist_mma)
  unsigned fused_spec = 4;      // persistent kernel, fused m = 1: delta warps of the warp-specialized instance (0: off)
  bool persist_rows = true;     // ... one delta at 2–8 rows: each code decoded once per 4 rows
  unsigned t_copies = 4;        // ... staged m = 1: copies of t in the scratch (blocks read copy b mod n)
  bool y_early = true;          // ... staged m = 1: y's old values read right after the PDL wait
  bool p1_by_band = false;      // ... staged m = 1, delta only: phase 1's columns cut by band (item_split.h)
};

// Device memory of the persistent kernel's grid barrier (one counter, apply_persist_kernel.cu):
// kBarrierLines 128-byte lines, zeroed once.
constexpr int kBarrierLines = 1;
constexpr size_t kBarrierBytes = kBarrierLines * 128;
constexpr int kTraceBlocks = 4096;  // diagnostics buffer: blocks traced (kTraceSlots clocks each)
constexpr int kTraceSlots = 24;     // [0] globaltimer, [6] start clock, [1..5] phase marks, [8..23] extra marks

// Which delta(s) a launch applies. Single delta (row_slot null, count 1): `one`, passed by value
// as a kernel parameter to the one-token and tiled kernels, so no block waits on a descriptor fetch
// before its first code load; the persistent and tensor-core kernels take DeltaRef instead (below).
// Batched (row_slot non-null): table[row_slot[i]] for row i (device table; slots outside
// [0, count): no delta). count 0: no delta at all (a GEMV).
struct DeltaSel {
  DeltaDesc one;
  const DeltaDesc* table;
  uint32_t count;
  const int32_t* row_slot;
  uint32_t max_t_stride;  // largest t_stride (band-padded rank) of the deltas
  uint64_t max_v_len;     // largest v_len
  uint32_t max_p1_blocks; // largest p1_blocks_of (one-token phase-1 grid)
  uint32_t max_mma_items1;  // largest mma_items1 (the tensor-core batch kernel's phase-1 items per row)
  const DeltaDesc* one_dev = nullptr;  // single delta: the device copy of `one` (the staged m = 1 kernel
                                       // reads it; null: that kernel is not used)
  // single delta: the staged m = 1 launch's plan (staged_plan) in device memory and its host copy,
  // or null (host side only; launch_persist)
  const void* plan_dev = nullptr;
  const void* plan_host = nullptr;

  // Batched: the descriptor of row r's delta in the table, or null (its slot outside [0, count)).
  template <class Row>
  __device__ __forceinline__ const DeltaDesc* slot_desc(Row r) const {
    const int32_t s = row_slot[r];
    return (s >= 0 && (uint32_t)s < count) ? table + s : nullptr;
  }
};

// DeltaSel as the persistent and tensor-core kernels take it: the single delta's descriptor by its
// device copy only (they copy it into shared memory), not by value. Why: a kernel's parameters
// travel with every launch, and under programmatic dependent launch a launch with 1 KB of them
// waited ~0.6–0.9 µs longer than one with 80 bytes while the next launch's prologue copied its
// codes (bench/probes/pdl_floor.cu, H100, twenty-fifth session; bench/RESULTS-h100.md).
struct DeltaRef {
  const DeltaDesc* one_dev;  // single delta (row_slot null): its device descriptor
  const DeltaDesc* table;    // batched: the device table ...
  const int32_t* row_slot;   // ... and each row's slot in it
  uint32_t count;
  static DeltaRef of(const DeltaSel& s) { return DeltaRef{s.one_dev, s.table, s.row_slot, s.count}; }
  template <class Row>
  __device__ __forceinline__ const DeltaDesc* slot_desc(Row r) const {
    const int32_t s = row_slot[r];
    return (s >= 0 && (uint32_t)s < count) ? table + s : nullptr;
  }
};

#ifndef P1_ROWS_NARROW
#  define P1_ROWS_NARROW 4u  // columns per phase-1 block for widths ≤ 4 (tuning knob, see bench/RESULTS-h100.md)
#endif
// Columns of t per phase-1 block of the one-token kernels, by band width (apply_vec_kernels.cu),
// and the blocks one delta's phase 1 takes: Σ over bands of span / rows.
DC_HOST_DEVICE uint32_t p1_rows_of(uint32_t bits) { return bits <= 4 ? P1_ROWS_NARROW : bits == 8 ? 2u : 1u; }
DC_HOST_DEVICE uint32_t p1_blocks_of(const DeltaDesc& d) {
  uint32_t n = 0;
  for (uint32_t b = 0; b < d.n_bands; ++b)
    n += ((d.bands[b].r1 - d.bands[b].r0 + 31) & ~31u) / p1_rows_of(d.bands[b].bits);
  return n;
}

// The tensor-core batch kernel (apply_mma_kernel.cu) takes a band onto the integer tensor cores
// when its codes are 2 or 3 bits wide and its quantization groups are whole chunks of 128 codes
// (the compressor's default) — a power of two of them, so a chunk's group is a shift. Its phase-1
// items for one row of x: 16 V̂ rows of such a band per item, one V̂ row of any other band per item.
constexpr uint32_t kMmaChunk = 128;  // codes per row and chunk (a chunk lies inside one group)
constexpr uint32_t kMmaRows = 16;    // rows of one tile
constexpr uint32_t kMmaTParts = 4;   // copies of t the batch kernel's phase 1 writes (its units a tile); the
                                     // device's t scratch holds kMmaTParts × kMaxTokens rows
DC_HOST_DEVICE bool mma_band(uint32_t bits, uint32_t group_size) {
  const uint32_t cpg = group_size / kMmaChunk;
  return (bits == 2 || bits == 3) && group_size % kMmaChunk == 0 && cpg != 0 && (cpg & (cpg - 1)) == 0;
}
// Chunks that hold n codes (or vector elements).
DC_HOST_DEVICE uint32_t mma_chunks(uint32_t n) { return (n + kMmaChunk - 1) / kMmaChunk; }
// Phase-1 items of one band: tiles of kMmaRows V̂ rows on the tensor cores, else one per V̂ row.
DC_HOST_DEVICE uint32_t mma_band_items1(uint32_t bits, uint32_t group_size, uint32_t nr) {
  return mma_band(bits, group_size) ? (nr + kMmaRows - 1) / kMmaRows : nr;
}
// log2 of a tensor-core band's chunks per group.
DC_HOST_DEVICE uint32_t mma_group_shift(uint32_t group_size) {
  uint32_t s = 0;
  while ((kMmaChunk << s) < group_size) ++s;
  return s;
}
DC_HOST_DEVICE uint32_t mma_items1(const DeltaDesc& d) {
  uint32_t n = 0;
  for (uint32_t b = 0; b < d.n_bands; ++b)
    n += mma_band_items1(d.bands[b].bits, d.bands[b].group_size, d.bands[b].r1 - d.bands[b].r0);
  return n;
}

// Phase 1: t[i][kv] = scale·σ_k·(x_i · V̂_k) for rows i < m (m ≤ kMaxTokens) of the low-rank
// deltas, over the band-padded columns kv < t_stride (padding columns get 0).
cudaError_t launch_phase1(const LaunchCfg& c, const DeltaSel& s, const void* x, int xdt, uint64_t ldx, uint64_t m,
                          float* t, uint64_t ldt, float scale);

// Phase 2 and everything row-wise, one launch: for the selected rows i < m and outputs o < rows,
//   y[i][o] = (accumulate ? y[i][o] : 0) + alpha_w·x_i·W_o (W may be null)
//             + Σ_k t[i][k]·Û[o][k] (low-rank; t from phase 1) or scale·ΔW_o·x_i (BitDelta).
// With no delta (sel.table null) every row i < m is written (a GEMV).
struct RowsArgs {
  uint64_t m, rows, cols;
  const void* x;
  int xdt;
  uint64_t ldx;
  float* t;  // phase 1's output (scratch): written by launch_phase1/vec/persist, read by launch_rows
  uint64_t ldt;
  void* y;
  int ydt;
  uint64_t ldy;
  const void* W;
  int wdt;
  uint64_t ldw;
  float alpha_w, scale;
  bool accumulate;
};
cudaError_t launch_rows(const LaunchCfg& c, const DeltaSel* sel, const RowsArgs& a);

// The one-token kernels (apply_vec_kernels.cu): the same result as launch_phase1 + launch_rows,
// with one block row per row of x (each row its own delta when batched; a single delta's rows
// each re-read its codes, so the single path uses this at m = 1 only). sel null: GEMV only.
cudaError_t launch_vec(const LaunchCfg& c, const DeltaSel* sel, const RowsArgs& a);

// The persistent kernel (apply_persist_kernel.cu; CUDA): the same result as launch_vec for
// m ≤ kMaxTokens rows in ONE launch (phase 1, grid barrier, phase 2), for a single low-rank delta
// without act-order permutation or column offset (`sel.row_slot` null; every row uses `sel.one`)
// or for a batch whose deltas are all such (`sel.table`, the caller checks). The base (a.W) only
// for m = 1. persist_supported says whether launch_persist would run; otherwise it returns
// cudaErrorNotSupported having launched nothing. `barrier`: the device's zeroed kBarrierBytes of
// barrier state (one per context: a context's launches are ordered by its stream); `sms`: multiprocessors.
// rows_only: above 4 rows of one delta only the rows kernel (one decode per 4 rows) — where it
// declines, cudaErrorNotSupported instead of one row after another, which is slower than the
// caller's tensor-core kernel there.
bool persist_supported(const DeltaSel& sel, const RowsArgs& a);
// The staged delta-only m = 1 launch's arguments for this delta, without the call's own fields
// (the "plan", staged_plan_bytes() bytes, 0 on HIP): written to `plan` when launch_persist would
// run that instance for r (m = 1, no base, 16-byte aligned x); false otherwise. The upload stores it
// next to the descriptor, and launch_persist then passes only the call's fields (DeltaSel::plan_dev).
size_t staged_plan_bytes();
bool staged_plan(const LaunchCfg& c, const DeltaSel& s, const RowsArgs& r, unsigned int* barrier, int sms, void* plan);
cudaError_t launch_persist(const LaunchCfg& c, const DeltaSel& sel, const RowsArgs& a, unsigned int* barrier,
                           int sms, bool rows_only = false);

// The tensor-core batch kernel (apply_mma_kernel.cu; CUDA, sm_80+): the same result as
// launch_persist for a multi-tenant batch (`sel.row_slot` non-null, every delta low-rank without
// act-order or column offset, an sm_80+ device — the caller checks both — and no base, a.W null),
// in one launch with the 2- and 3-bit bands on the integer tensor cores. cudaErrorNotSupported
// (nothing launched) when it does not apply. one_delta: every row has the same delta (the caller's
// promise), so two rows can share each tile's decode (c.mma_pairs).
cudaError_t launch_persist_mma(const LaunchCfg& c, const DeltaSel& sel, const RowsArgs& a, unsigned int* barrier,
                               int sms, bool one_delta = false);

// y[i][o] = (accumulate ? y[i][o] : 0) + alpha·x_i·W_o for a dense matrix W [rows × cols].
cudaError_t launch_gemv(const LaunchCfg& c, const void* W, int wdt, uint64_t ldw, uint64_t rows, uint64_t cols,
                        const void* x, int xdt, uint64_t ldx, uint64_t m, void* y, int ydt, uint64_t ldy,
                        float alpha, bool accumulate);
// 1-D dense (bias): y[i][o] += scale·D[o].
cudaError_t launch_bias(const LaunchCfg& c, const DeltaDesc& d, uint64_t m, void* y, int ydt, uint64_t ldy,
                        float scale);

}  // namespace dcg

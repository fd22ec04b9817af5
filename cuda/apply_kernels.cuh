// Host-side launchers of the apply kernels (apply_kernels.cu). All enqueue on `stream`, allocate
// nothing and never synchronise, so they can be captured in a CUDA graph.
#pragma once

#include "common.cuh"

namespace dcg {

struct LaunchCfg {
  int group;             // logical warp width: 32 or 64
  cudaStream_t stream;
};

// Phase 1: t[i][kv] = scale·σ_k·(x_i · V̂_k) for i < m (m ≤ kMaxTokens) over the band-padded columns
// kv < d.t_stride (band b's rank j at column bands[b].t_off + j; padding columns get 0).
cudaError_t launch_phase1(const LaunchCfg& c, const DeltaDesc& d, const void* x, int xdt, uint64_t ldx,
                          uint64_t m, float* t, uint64_t ldt, float scale);
// Phase 2: y[i][o] = (W ? x_i·W_o : y[i][o]) + Σ_k t[i][k]·Û[o][k]. W (base weight) may be null.
cudaError_t launch_phase2(const LaunchCfg& c, const DeltaDesc& d, const float* t, uint64_t ldt, uint64_t m,
                          void* y, int ydt, uint64_t ldy, const void* W, int wdt, uint64_t ldw,
                          const void* x, int xdt, uint64_t ldx);
// y[i][o] = (accumulate ? y[i][o] : 0) + alpha·x_i·W_o for a dense matrix W [rows × cols].
cudaError_t launch_gemv(const LaunchCfg& c, const void* W, int wdt, uint64_t ldw, uint64_t rows, uint64_t cols,
                        const void* x, int xdt, uint64_t ldx, uint64_t m, void* y, int ydt, uint64_t ldy,
                        float alpha, bool accumulate);
// BitDelta: y[i][o] += scale·bitdelta_scale·Σ_j (2·bit − 1)·x[i][j].
cudaError_t launch_bitdelta(const LaunchCfg& c, const DeltaDesc& d, const void* x, int xdt, uint64_t ldx,
                            uint64_t m, void* y, int ydt, uint64_t ldy, float scale);
// 1-D dense (bias): y[i][o] += scale·D[o].
cudaError_t launch_bias(const LaunchCfg& c, const DeltaDesc& d, uint64_t m, void* y, int ydt, uint64_t ldy,
                        float scale);

// Multi-tenant: rows [row0, row0 + m) of x/y, each with slot row_slot[i] into `table` (count
// entries; other values: no delta). t holds m rows of stride ldt (≥ the largest t_stride).
cudaError_t launch_batched_phase1(const LaunchCfg& c, const DeltaDesc* table, uint32_t count, uint32_t max_rank,
                                  const int32_t* row_slot, uint64_t row0, uint64_t m, const void* x, int xdt,
                                  uint64_t ldx, float* t, uint64_t ldt, float scale);
cudaError_t launch_batched_phase2(const LaunchCfg& c, const DeltaDesc* table, uint32_t count, uint64_t rows,
                                  const int32_t* row_slot, uint64_t row0, uint64_t m, const float* t, uint64_t ldt,
                                  const void* x, int xdt, uint64_t ldx, void* y, int ydt, uint64_t ldy,
                                  float scale);

}  // namespace dcg

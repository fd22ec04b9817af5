// Objects behind the GPU backend's opaque handles (CUDA and HIP builds).
#pragma once

#include "common.cuh"
#include "device_arena.h"

#include <cstddef>

namespace dcg {

constexpr size_t kPlanBytesMax = 512;  // GpuDelta::hplan (staged_plan_bytes() ≤ this)

struct GpuDevice {
  int ordinal = 0;
  int group = 32;              // logical warp width used by the row kernels (device warp size)
  bool portable_gemm = false;  // CUDA build: use the tiled GEMM instead of cuBLAS (tests)
  bool pdl = false;            // programmatic dependent launch (sm_90+; DELTACOME_GPU_NO_PDL=1 turns it off)
  bool fused = false;          // persistent one-launch kernel (CUDA; DELTACOME_GPU_NO_FUSED=1 turns it off)
  bool persist_multi = true;   // ... also for one delta at 1 < m ≤ 64 (DELTACOME_GPU_TILED=1: tiled kernels)
  bool coop = true;            // ... launched cooperatively (DELTACOME_GPU_NO_COOP=1: plain launch)
  bool mma_batch = true;       // batches on the tensor-core batch kernel (sm_80+; DELTACOME_GPU_NO_MMA=1 turns it off)
  bool mma_multi = true;       // ... also one delta at 1 < m ≤ 64 (DELTACOME_GPU_NO_MMA_MULTI=1: persistent kernel)
  unsigned mma_min_m = 7;      // ... from this many rows on; fewer stay on the persistent kernel
                               // (DELTACOME_GPU_MMA_MIN_M; measured in backend_ops.cu's apply)
  unsigned mma_stage_w1 = 2, mma_stage_w2 = 8;  // its split's row-staging weights (DELTACOME_GPU_MMA_STAGE_W=w1,w2)
  bool mma_pairs = true;       // ... one delta at m > 1: two rows per tile decode (DELTACOME_GPU_MMA_NO_PAIRS=1)
  unsigned mma_pair_w1 = 2, mma_pair_w2 = 8;  // ... the split's weights for a pair (DELTACOME_GPU_MMA_PAIR_STAGE_W)
  unsigned mma_pair_small_m = 16;  // ... up to this many rows 1,4 instead (DELTACOME_GPU_MMA_PAIR_SMALL_M;
                                   // 0: the weights above at every m)
  unsigned fused_spec = 4;     // fused m = 1: warp-specialized instance with this many delta warps
                               // (DELTACOME_GPU_FUSED_SPEC=D, 0: off; 4 measured best of 2..6 on the H100)
  int32_t* slot_zero = nullptr;  // kMaxTokens zeros on the device: every row's slot for one delta on that kernel
  int sms = 0;                 // multiprocessors (the persistent kernel's grid bound)
  unsigned int* barrier = nullptr;  // its grid-barrier state (kBarrierBytes of device memory)
  int persist_compact = -1;         // its code variant (DELTACOME_GPU_PERSIST_COMPACT=0/1; -1: by shape)
  unsigned long long* trace = nullptr;  // DELTACOME_GPU_PERSIST_TRACE=1: phase clocks, printed at close
  bool stage_codes = true;          // its decode launches copy the block's codes into shared memory first
                                    // (DELTACOME_GPU_PERSIST_NO_STAGE=1: read them from L2 as they go)
  bool persist_rows = true;         // ... one delta at 2–8 rows (2–6 by default, mma_min_m): one decode per 4 rows
                                    // (DELTACOME_GPU_PERSIST_NO_ROWS=1: one row after another)
  unsigned t_copies = 4;            // ... at m = 1: copies of t (DELTACOME_GPU_PERSIST_T_COPIES=n; 4 measured)
  bool y_early = true;              // ... at m = 1: y's old values read early (DELTACOME_GPU_PERSIST_Y_LATE=1: at the end)
  bool p1_by_band = true;           // ... at m = 1, delta only: phase 1's columns cut by band
                                    // (DELTACOME_GPU_PERSIST_P1_EVEN=1: equal counts)
  bool launch_plan = true;          // ... at m = 1, delta only: the upload stores the launch's plan, which
                                    // then passes 56 bytes of arguments (DELTACOME_GPU_PERSIST_NO_PLAN=1: all)
  unsigned persist_blocks = 0;      // its grid cap (DELTACOME_GPU_PERSIST_BLOCKS; 0: occupancy × SMs)
  unsigned persist_wparts = 0;      // fused base pieces per row group (DELTACOME_GPU_PERSIST_WPARTS; 0: 4)
  float* t_scratch = nullptr;  // phase-1 output, kMaxTokens × (largest t_stride loaded) floats
  uint64_t t_capacity = 0;     // in floats
  void* pinned = nullptr;      // upload staging
  size_t pinned_capacity = 0;
  cudaEvent_t upload_done = nullptr;  // recorded after the last upload out of `pinned`
  DeviceArena* arena = nullptr;       // device memory of the loaded deltas
  cudaError_t arena_error = cudaSuccess;  // the arena's last chunk allocation, for delta_load's message
#if defined(DC_HAVE_BLAS)
  cublasHandle_t blas = nullptr;
  void* blas_workspace = nullptr;
#endif
};

struct GpuDelta {
  DeltaDesc desc{};                  // host copy
  const DeltaDesc* ddesc = nullptr;  // device copy (inside `mem`): the kernels' descriptor table
  const void* dplan = nullptr;       // the staged m = 1 launch's plan (inside `mem`; staged_plan), or null
  alignas(8) unsigned char hplan[kPlanBytesMax] = {};  // ... its host copy
  bool vector = false;               // dc_tensor_view.is_vector: 1-D dense (bias)
  void* mem = nullptr;  // one range of dev->arena holding every array the descriptor points into
  uint64_t bytes = 0;   // device bytes the range holds (reported as dc_delta_info.device_bytes)
};

struct GpuBatch {
  DeltaDesc* table = nullptr;  // device array, one descriptor per slot
  uint32_t count = 0, max_rank = 0;  // max_rank: largest t_stride (band-padded rank)
  uint32_t max_p1_blocks = 0;        // largest p1_blocks_of (one-token phase-1 grid)
  uint32_t max_mma_items1 = 0;       // largest mma_items1 (tensor-core batch kernel)
  uint64_t rows = 0, cols = 0, max_v_len = 0;
  bool any_lowrank = false;
  bool persist_ok = false;  // every delta low-rank without permutation or column offset
};

}  // namespace dcg

// Pieces shared by the persistent kernels (apply_persist_kernel.cu, apply_mma_kernel.cu; CUDA):
// the grid-wide barrier between phase 1 and phase 2, and the staging of a row of t after it.
#pragma once

#if !defined(DC_USE_HIP)
#include "row_dot.cuh"

namespace dcg {

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

// Grid-wide barrier, split in two: grid_arrive after the block's t is written, grid_wait before
// t is read, so that work which needs no t (the base rows of a fused m = 1 call) hides the
// barrier's latency. One launch has one barrier; launches are ordered by the stream (with PDL,
// after cudaGridDependencySynchronize), so one state serves every launch of a context.
struct BarrierTicket {
  unsigned int gen;  // the counter as the block's arrival found it
};

// One counter whose bit 31 flips when every block has arrived (the scheme of cooperative groups'
// grid sync): block 0 adds 2^31 − (n − 1), every other block 1, so the n arrivals add exactly 2^31
// — the low bits come back to where they were and bit 31 flips, whatever n is, with no reset. A
// block waits until bit 31 differs from what its own arrival returned. Two round trips to L2 (the
// arrival, the poll that sees the flip); the two-level tree it replaced (16 sub-counters, a top
// counter, a generation word, each reset by its last arrival behind a fence) took four plus the
// fences: delta-only M=1 11.24–11.33 µs against 12.32–12.46 µs on the H100 (bench/RESULTS-h100.md).
//
// grid_arrive_thread: the block's arrival, by one thread, after every write of the block that the
// barrier must publish is ordered before it (__syncthreads, or a __threadfence by each writer
// before a shared-memory signal that this thread observed).
__device__ __forceinline__ BarrierTicket grid_arrive_thread(unsigned int* bar) {
  __threadfence();  // this block's writes (t) before its arrival
  const unsigned int add = blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1) : 1u;
  return BarrierTicket{atomicAdd(bar, add)};
}

__device__ __forceinline__ void grid_wait(unsigned int* bar, const BarrierTicket& tk) {
  if (threadIdx.x == 0) {
    volatile unsigned int* c = bar;
    while (((*c ^ tk.gen) & 0x80000000u) == 0) __nanosleep(20);
    __threadfence();
  }
  __syncthreads();
}

// The block's arrival by the whole block: its writes, then thread 0 arrives.
__device__ __forceinline__ BarrierTicket grid_arrive(unsigned int* bar) {
  __syncthreads();
  return threadIdx.x == 0 ? grid_arrive_thread(bar) : BarrierTicket{0u};
}

}  // namespace dcg
#endif  // !DC_USE_HIP

// Pieces shared by the persistent kernels (apply_persist_kernel.cu, apply_mma_kernel.cu; CUDA):
// the grid-wide barrier between phase 1 and phase 2, the staging of a row of t after it, and on the
// host the cached occupancy query and the cooperative launch.
#pragma once

#if !defined(DC_USE_HIP)
#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>

#include "apply_kernels.cuh"
#include "item_split.h"
#include "row_dot.cuh"

namespace dcg {

// An object from device memory into shared memory, one word per thread and pass (every thread
// calls this; the caller synchronises).
template <class T>
__device__ __forceinline__ void copy_words(T* dst, const T* src) {
  static_assert(sizeof(T) % 4 == 0, "copied in words");
  for (uint32_t k = threadIdx.x; k < sizeof(T) / 4; k += blockDim.x)
    reinterpret_cast<uint32_t*>(dst)[k] = reinterpret_cast<const uint32_t*>(src)[k];
}
// A delta's descriptor, so: the kernels' item and band walks read its fields many times per item;
// from global memory (or from the launch's parameter space, cold in the constant cache at every
// launch) each read is a dependent round trip on the warp's critical path.
__device__ __forceinline__ void copy_desc(DeltaDesc* dst, const DeltaDesc* src) { copy_words(dst, src); }

// Diagnostics (DELTACOME_GPU_PERSIST_TRACE=1; trace null otherwise): thread 0 of each block
// records its start time (globaltimer, [0]) and the SM clock at its start ([6]) and at the
// kernel's marks k = 1..5 ([k]) and extra marks k = 8..23 (finer steps, where a kernel sets them);
// device_close prints the spread over blocks.
__device__ __forceinline__ void trace_mark(unsigned long long* trace, int k) {
  if (trace == nullptr || threadIdx.x != 0 || blockIdx.x >= (unsigned)kTraceBlocks) return;
  unsigned long long* t = trace + blockIdx.x * kTraceSlots;
  if (k == 0) {
    unsigned long long g;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g));
    t[0] = g;
    t[6] = clock64();
  } else {
    t[k] = clock64();
  }
}

// t_r (nbt blocks of 32, 16-byte aligned) into the stage with every block's sum at [32], as
// stage_rows stages x: eight values per thread, four threads per block. __ldcg: t was written by
// other SMs during this launch, through L2; this SM's L1 must not answer. `threads`: the block's
// first threads that take part (whole warps; the fused kernel's delta warps), all by default.
__device__ __forceinline__ void stage_t(float* ts, const float* trow, uint32_t nbt, uint32_t threads = 0) {
  const uint32_t total = nbt * 4, step = threads ? threads : blockDim.x;
  for (uint32_t e0 = 0; e0 < total; e0 += step) {  // same trip count in every thread (shuffles)
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
// An arrival without the answer (a reduction, the generation read earlier) saves the last block one
// round trip but measured within noise (10.79–10.82 against 10.84–10.86 µs, eighth session; again as
// a `red.release.gpu` in the twentieth: 8.87–8.92 against 8.83–8.86 µs).
//
// Release and acquire at GPU scope, not sequentially consistent fences: the arrival is one
// `atom.add.release.gpu` (was __threadfence, i.e. fence.sc.gpu, then the atomic) and the poll an
// `ld.acquire.gpu` (was a volatile load, then fence.sc.gpu). That is all the barrier needs — the
// block's writes happen before its arrival (block barrier, then one thread's release: the pattern
// of CUTLASS's grid semaphore), which happens before the waiter's acquiring load — and
// the SC fences cost: delta-only M=1 8.85–8.91 µs against 9.25–9.31, 32 tenants 66.3–66.6 against
// 66.8–67.0, M=16 31.8–32.1 against 32.2–32.4 (H100, same call, twentieth session). Polling without
// the 20 ns sleep measured the same.
//
// grid_arrive_thread: the block's arrival, by one thread, after every write of the block that the
// barrier must publish is ordered before it (__syncthreads, or a fence_to_gpu by each writer
// before a shared-memory signal that this thread observed).
__device__ __forceinline__ unsigned int atom_add_release_gpu(unsigned int* p, unsigned int v) {
  unsigned int old;
  asm volatile("atom.add.release.gpu.global.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}
__device__ __forceinline__ unsigned int ld_acquire_gpu(const unsigned int* p) {
  unsigned int v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
// The fence a writer issues before it signals, through shared memory, the thread that arrives for
// the block (the fused kernel's phase-1 warps).
__device__ __forceinline__ void fence_to_gpu() { asm volatile("fence.acq_rel.gpu;" ::: "memory"); }

__device__ __forceinline__ BarrierTicket grid_arrive_thread(unsigned int* bar) {
  const unsigned int add = blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1) : 1u;
  return BarrierTicket{atom_add_release_gpu(bar, add)};  // this block's writes (t) before its arrival
}

// grid_wait_thread: one thread waits until every block has arrived (the caller then publishes that
// to the threads that read t: __syncthreads in grid_wait, a named barrier in the fused kernel's
// delta warps).
__device__ __forceinline__ void grid_wait_thread(unsigned int* bar, const BarrierTicket& tk) {
  while (((ld_acquire_gpu(bar) ^ tk.gen) & 0x80000000u) == 0) __nanosleep(20);
}

__device__ __forceinline__ void grid_wait(unsigned int* bar, const BarrierTicket& tk) {
  if (threadIdx.x == 0) grid_wait_thread(bar, tk);
  __syncthreads();
}

// The block's arrival by the whole block: its writes, then thread 0 arrives.
__device__ __forceinline__ BarrierTicket grid_arrive(unsigned int* bar) {
  __syncthreads();
  return threadIdx.x == 0 ? grid_arrive_thread(bar) : BarrierTicket{0u};
}

// ---- host side ---------------------------------------------------------------------------------------
// Resident blocks per multiprocessor of `kernel` (`threads` per block, `smem` bytes of dynamic
// shared memory), remembered per (device, kernel, smem): the query costs host time on every launch
// otherwise.
inline cudaError_t cached_occupancy(const void* kernel, int threads, size_t smem, int* occ) {
  static std::mutex mu;
  static std::map<std::tuple<int, const void*, size_t>, int> known;
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  const auto key = std::make_tuple(dev, kernel, smem);
  {
    std::lock_guard<std::mutex> lock(mu);
    const auto it = known.find(key);
    if (it != known.end()) { *occ = it->second; return cudaSuccess; }
  }
  e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(occ, kernel, threads, smem);
  if (e != cudaSuccess) return e;
  std::lock_guard<std::mutex> lock(mu);
  known.emplace(key, *occ);
  return cudaSuccess;
}

// The grid of a persistent launch with `items` work items per phase at most. persist_min_blocks:
// a lower bound on the blocks (min(items, SMs, the DELTACOME_GPU_PERSIST_BLOCKS knob), at least
// 1), known before the occupancy, for sizing per-block shared memory by ⌈n / min_blocks⌉ items.
// persist_grid_blocks: every block must be resident at once (grid barrier), so at most occupancy × SMs
// (and the knob), never more than the items, never fewer than min_blocks.
inline uint64_t persist_knob(const LaunchCfg& c) { return c.persist_blocks > 0 ? c.persist_blocks : UINT64_MAX; }
inline uint64_t persist_min_blocks(const LaunchCfg& c, uint64_t items, int sms) {
  return std::max<uint64_t>(1, std::min<uint64_t>(std::min<uint64_t>(items, persist_knob(c)), (uint64_t)sms));
}
inline unsigned persist_grid_blocks(const LaunchCfg& c, uint64_t min_blocks, uint64_t items, int occ, int sms) {
  const uint64_t cap = std::min<uint64_t>((uint64_t)occ * sms, persist_knob(c));
  return (unsigned)std::max<uint64_t>(min_blocks, std::min<uint64_t>(cap, items));
}
// Launches a persistent kernel: `blocks` blocks of `threads`, cooperative when c.coop (the driver
// then guarantees co-residency, which the grid barrier needs) and with programmatic dependent
// launch when c.pdl.
template <class Args>
cudaError_t launch_persistent(const LaunchCfg& c, void (*kernel)(Args), unsigned blocks, int threads, size_t smem,
                              const Args& a) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(blocks);
  cfg.blockDim = dim3(threads);
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
}

}  // namespace dcg
#endif  // !DC_USE_HIP

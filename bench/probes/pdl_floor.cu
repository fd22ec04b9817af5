// Probe (stand-alone, not part of the build): what does the staged M = 1 launch's skeleton cost
// with no codes and no arithmetic? One block per SM, launched back to back under programmatic
// dependent launch as bench_gpu times dc_apply_delta_linear (a CUDA graph of 64 launches), with the
// steps the two-phase design cannot do without, added one at a time:
//   empty      PDL trigger and wait only
//   x          + x (4096 fp16) into shared memory, 32 outputs of y stored per block
//   x pre      as x, but x's loads issued before the PDL wait (not allowed in the library: x may be
//              the previous kernel's output; here it shows what the release costs a load in flight)
//   x,t        + t (8 floats per block) stored, the grid barrier (one counter, release / acquire, as
//              apply_persist_kernel.cu), t (1024 floats) loaded back into shared memory
//   x,t,y      + y's old values read once x is in, the sums added to them (accumulate)
// Each launch also stamps, per block, the SM clock at its start, after the PDL wait, when thread 0
// has x's first word, when x is staged, after the barrier and at its end, and the globaltimer at its
// start and end; the probe prints the medians over the blocks of launch 48 of the graph (steady
// state), the gap from the previous launch's last block end to the median release, the SM clock
// the stamps imply, and µs per launch for each skeleton. Options, to come closer to the library's
// staged M = 1 launch: --coop (a cooperative launch), --smem BYTES (dynamic shared memory a block;
// 60000 keeps two blocks a SM, as the library's), --traffic BYTES (each block copies that many bytes
// from a 256 MB pool into shared memory before its PDL wait, as stage_codes does; 20000 ≈ the
// default delta's pieces), --params BYTES (the arguments padded to 80, 128, 192, 256, 336 or 1024
// bytes; the library's PersistArgs was 1024, 336 since the twenty-fifth session).
//   nvcc -O3 -std=c++17 -arch=sm_90 bench/probes/pdl_floor.cu -o /tmp/pdl_floor
//   /tmp/pdl_floor --coop --smem 60000 --traffic 20000 --params 336
// Why (bench/RESULTS-h100.md, twenty-fifth session): the delta's M = 1 trace puts 2.0k cycles between
// the PDL release and x staged, and ~1.5 µs between a launch's last block and the next release.
// What it found on the H100: the skeleton alone takes 2.3 µs a launch (x,t,y); with the codes'
// copies and arguments of 128 bytes or more, 3.65 µs; with 80 bytes, 3.07 µs. The arguments' size
// is what made the library's 1024-byte PersistArgs cost ~0.25 µs a launch.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "../graph_timer.h"

namespace {

constexpr int kThreads = 256, kCols = 4096, kRanks = 1024, kCalls = 64, kTraced = 48, kStamps = 8;
cudaStream_t st;

enum Skeleton { kEmpty, kX, kXPre, kXT, kXTY, kCount };
const char* kNames[kCount] = {"empty", "x", "x pre", "x,t", "x,t,y"};

struct Args {
  const __half* x;
  float* y;
  float* t;
  unsigned int* barrier;
  unsigned long long* stamps;  // [launch][block][kStamps]
  int launch;
  const uint4* pool;           // --traffic: codes-like bytes each block copies into shared memory before
  uint64_t pool_bytes;         // the PDL wait, from a region that moves with the launch (as bench_gpu
  uint32_t traffic;            // rotates its deltas); bytes a block
};
// --params: the arguments padded to the size of the library's (its descriptor travels by value)
template <int kPad>
struct PaddedArgs {
  Args a;
  uint32_t pad[kPad];
};

__device__ __forceinline__ unsigned long long gtime() {
  unsigned long long v;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(v));
  return v;
}
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ unsigned int atom_add_release(unsigned int* p, unsigned int v) {
  unsigned int old;
  asm volatile("atom.add.release.gpu.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}
__device__ __forceinline__ unsigned int ld_acquire(const unsigned int* p) {
  unsigned int v;
  asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

template <int kS, int kPad>
__global__ void __launch_bounds__(kThreads, 2) skeleton(const __grid_constant__ PaddedArgs<kPad> pa) {
  const Args& a = pa.a;
  extern __shared__ uint4 dyn[];
  __shared__ float xs[kCols], ts[kRanks];
  unsigned long long* stamp = a.stamps + ((uint64_t)a.launch * gridDim.x + blockIdx.x) * kStamps;
  const int tid = threadIdx.x;
  if (tid == 0) stamp[0] = clock64(), stamp[7] = gtime();
  uint4 xv[2];
  const uint4* x4 = reinterpret_cast<const uint4*>(a.x);
  if (kS == kXPre) {
    xv[0] = x4[tid];
    xv[1] = x4[tid + kThreads];
  }
  if (a.traffic != 0) {
    const uint64_t words = a.pool_bytes / 16, per = a.traffic / 16;
    const uint64_t first = ((uint64_t)a.launch * gridDim.x + blockIdx.x) * per % (words - per);
    for (uint32_t i = tid; i < per; i += kThreads) {
      const uint32_t dst = (uint32_t)__cvta_generic_to_shared(dyn + i);
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(a.pool + first + i) : "memory");
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
  }
  pdl_trigger();
  pdl_wait();
  if (tid == 0) stamp[1] = clock64();
  if (kPad > 1 && tid == 0) stamp[7] += pa.pad[(blockIdx.x * 29) % kPad];  // a parameter line read after the wait
  if (kS == kEmpty) {
    if (tid == 0) stamp[5] = clock64(), stamp[6] = gtime();
    return;
  }
  if (kS != kXPre) {
    xv[0] = x4[tid];
    xv[1] = x4[tid + kThreads];
  }
  if (tid == 0 && xv[0].x != 0x7fffffffu) stamp[2] = clock64();  // once x's first word is here (x is 0)
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const __half* h = reinterpret_cast<const __half*>(&xv[k]);
#pragma unroll
    for (int i = 0; i < 8; ++i) xs[(tid + k * kThreads) * 8 + i] = __half2float(h[i]);
  }
  const uint32_t o = blockIdx.x * 32 + tid;  // this thread's output, for tid < 32
  float y_old = 0.f;
  if (kS == kXTY && tid < 32) y_old = a.y[o];
  if (a.traffic != 0) asm volatile("cp.async.wait_all;" ::: "memory");
  __syncthreads();
  if (tid == 0) stamp[3] = clock64();
  float v = xs[tid] + xs[tid + kThreads];
  if (kS >= kXT) {
    // t: 8 values a block (one per warp), then the grid barrier as in apply_persist_kernel.cu
    if (tid % 32 == 0) a.t[blockIdx.x * 8 + tid / 32] = v;
    __syncthreads();
    if (tid == 0) {
      const unsigned int n = gridDim.x;
      const unsigned int add = blockIdx.x == 0 ? 0x80000000u - (n - 1) : 1u;
      const unsigned int old = atom_add_release(a.barrier, add);
      for (uint32_t spin = 0; ((ld_acquire(a.barrier) ^ old) & 0x80000000u) == 0; ++spin)
        if (spin == (1u << 24)) {  // a probe must not hang the device: flag it and go on
          a.barrier[1] = 1u;
          break;
        }
    }
    __syncthreads();
    const float4* t4 = reinterpret_cast<const float4*>(a.t);
    reinterpret_cast<float4*>(ts)[tid] = t4[tid];  // 1024 floats: 256 threads × 16 bytes
    __syncthreads();
    if (tid == 0) stamp[4] = clock64();
    v += ts[tid] + ts[(tid + 512) % kRanks];
  }
  if (tid < 32) a.y[o] = y_old + v;
  if (tid == 0) stamp[5] = clock64(), stamp[6] = gtime();
}

int g_pad = 1;        // --params BYTES: the arguments padded to ~BYTES (80, 128, 192, 256, 336 or 1024)
template <int kPad>
cudaError_t dispatch(int s, const cudaLaunchConfig_t& cfg, const PaddedArgs<kPad>& pa) {
  switch (s) {
    case kEmpty: return cudaLaunchKernelEx(&cfg, skeleton<kEmpty, kPad>, pa);
    case kX: return cudaLaunchKernelEx(&cfg, skeleton<kX, kPad>, pa);
    case kXPre: return cudaLaunchKernelEx(&cfg, skeleton<kXPre, kPad>, pa);
    case kXT: return cudaLaunchKernelEx(&cfg, skeleton<kXT, kPad>, pa);
    case kXTY: return cudaLaunchKernelEx(&cfg, skeleton<kXTY, kPad>, pa);
  }
  return cudaErrorInvalidValue;
}

template <int kPad>
PaddedArgs<kPad> padded(const Args& a) {
  PaddedArgs<kPad> pa{};
  pa.a = a;
  return pa;
}

bool g_coop = false;  // --coop: launched cooperatively, as the library launches its persistent kernel
uint32_t g_traffic = 0;  // --traffic BYTES: codes-like copies a block makes before the PDL wait
int g_smem = 0;       // --smem BYTES: dynamic shared memory a block holds (fewer blocks a SM, as the library's)

void launch(int s, const Args& a, int blocks) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = blocks;
  cfg.blockDim = kThreads;
  cfg.dynamicSmemBytes = g_smem;
  cfg.stream = st;
  cudaLaunchAttribute attr[2] = {};
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  attr[1].id = cudaLaunchAttributeCooperative;
  attr[1].val.cooperative = 1;
  cfg.attrs = attr;
  cfg.numAttrs = g_coop ? 2 : 1;
  cudaError_t e = cudaErrorInvalidValue;
  switch (g_pad) {
    case 238: e = dispatch<238>(s, cfg, padded<238>(a)); break;
    case 66: e = dispatch<66>(s, cfg, padded<66>(a)); break;
    case 46: e = dispatch<46>(s, cfg, padded<46>(a)); break;
    case 30: e = dispatch<30>(s, cfg, padded<30>(a)); break;
    case 14: e = dispatch<14>(s, cfg, padded<14>(a)); break;
    default: e = dispatch<1>(s, cfg, padded<1>(a)); break;
  }
  CU(e);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IONBF, 0);
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--coop")) g_coop = true;
    else if (!std::strcmp(argv[i], "--smem") && i + 1 < argc) g_smem = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--params") && i + 1 < argc) {
      const int bytes = std::atoi(argv[++i]);
      g_pad = bytes >= 1024 ? 238 : bytes >= 336 ? 66 : bytes >= 256 ? 46 : bytes >= 192 ? 30 : bytes >= 128 ? 14 : 1;
    }
    else if (!std::strcmp(argv[i], "--traffic") && i + 1 < argc) g_traffic = (uint32_t)std::atoi(argv[++i]);
  }
  CU(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cudaDeviceProp prop{};
  CU(cudaGetDeviceProperties(&prop, 0));
  const int blocks = prop.multiProcessorCount;  // one per SM, room for the next launch's (PDL)
  int clock_khz = 0;
  CU(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));
  const double ghz = clock_khz * 1e-6;
  static_assert(sizeof(PaddedArgs<1>) == 80 && sizeof(PaddedArgs<14>) == 128 && sizeof(PaddedArgs<30>) == 192 &&
                    sizeof(PaddedArgs<46>) == 256 && sizeof(PaddedArgs<66>) == 336 && sizeof(PaddedArgs<238>) == 1024,
                "the argument sizes the probe reports");
  std::printf("%s, %d SMs, %d blocks a launch, max SM clock %.2f GHz; %s, %d bytes of dynamic shared memory a block, "
              "%u bytes copied a block before the wait, %d bytes of arguments\n",
              prop.name, prop.multiProcessorCount, blocks, ghz, g_coop ? "cooperative" : "not cooperative",
              std::max<int>(g_smem, (int)g_traffic), g_traffic, (int)(g_pad == 1 ? 80 : 72 + 4 * g_pad));
  if ((int)g_traffic > g_smem) g_smem = (int)g_traffic;
#define KERNELS(P)                                                                                      \
  (const void*)skeleton<kEmpty, P>, (const void*)skeleton<kX, P>, (const void*)skeleton<kXPre, P>, \
      (const void*)skeleton<kXT, P>, (const void*)skeleton<kXTY, P>
  if (g_smem > 48 * 1024) {
    for (const void* k : {KERNELS(1), KERNELS(14), KERNELS(30), KERNELS(46), KERNELS(66), KERNELS(238)})
      CU(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, g_smem));
  }
  Args a{};
  if (g_traffic != 0) {
    a.pool_bytes = 256ull << 20;  // 256 MB: every launch's copies come from HBM, from pages the last ones left
    CU(cudaMalloc((void**)&a.pool, a.pool_bytes));
    CU(cudaMemset((void*)a.pool, 0, a.pool_bytes));
    a.traffic = g_traffic / 16 * 16;
  }
  CU(cudaMalloc((void**)&a.x, kCols * sizeof(__half)));
  CU(cudaMemset((void*)a.x, 0, kCols * sizeof(__half)));
  CU(cudaMalloc(&a.y, (size_t)blocks * 32 * sizeof(float)));
  const size_t t_floats = std::max<size_t>(kRanks, (size_t)blocks * 8);  // t read as 1024, written as 8 a block
  CU(cudaMalloc(&a.t, t_floats * sizeof(float)));
  CU(cudaMemset(a.t, 0, t_floats * sizeof(float)));
  CU(cudaMalloc(&a.barrier, 128));
  CU(cudaMemset(a.barrier, 0, 128));
  const size_t nstamps = (size_t)kCalls * blocks * kStamps;
  CU(cudaMalloc(&a.stamps, nstamps * 8));
  std::vector<unsigned long long> h(nstamps);
  std::printf("medians over launch %d's blocks, cycles from the PDL release: x's first word in, x staged, t in, block\n"
              "end; cycles from the block's start to the release; ns from the previous launch's last block end to\n"
              "the median release\n", kTraced);
  std::printf("%-8s %9s %8s %8s %8s %8s %8s %8s %6s\n", "skeleton", "us/launch", "x in", "x staged", "t in", "end",
              "start", "gap ns", "GHz");
  for (int round = 0; round < 2; ++round)
    for (int s = 0; s < kCount; ++s) {
      CU(cudaMemset(a.stamps, 0, nstamps * 8));
      const double us = bench::time_graph(st, kCalls, [&](int i) {
        Args ai = a;
        ai.launch = i;
        launch(s, ai, blocks);
      });
      CU(cudaMemcpy(h.data(), a.stamps, nstamps * 8, cudaMemcpyDeviceToHost));
      auto at = [&](int l, int b, int k) { return (double)h[((size_t)l * blocks + b) * kStamps + k]; };
      std::vector<double> xin, xst, tin, end, before, last_end, next_rel, clk;
      for (int b = 0; b < blocks; ++b) {
        const double rel = at(kTraced, b, 1);
        if (s != kEmpty) xin.push_back(at(kTraced, b, 2) - rel), xst.push_back(at(kTraced, b, 3) - rel);
        if (s >= kXT) tin.push_back(at(kTraced, b, 4) - rel);
        end.push_back(at(kTraced, b, 5) - rel);
        before.push_back(rel - at(kTraced, b, 0));
        last_end.push_back(at(kTraced - 1, b, 6));
        // the next launch's release in globaltimer ns: its end minus (end − release) cycles
        clk.push_back((at(kTraced, b, 5) - at(kTraced, b, 0)) / (at(kTraced, b, 6) - at(kTraced, b, 7)));
        next_rel.push_back(at(kTraced, b, 6) - (at(kTraced, b, 5) - at(kTraced, b, 1)) / ghz);
      }
      const double gap = median(next_rel) - *std::max_element(last_end.begin(), last_end.end());
      std::printf("%-8s %9.2f %8.0f %8.0f %8.0f %8.0f %8.0f %8.0f %6.2f\n", kNames[s], us, median(xin), median(xst),
                  median(tin), median(end), median(before), gap, median(clk));
    }
  unsigned int flag = 0;
  CU(cudaMemcpy(&flag, a.barrier + 1, 4, cudaMemcpyDeviceToHost));
  if (flag) std::printf("the grid barrier timed out: the numbers above are not valid\n");
  std::printf("(cycles at the running SM clock; the gap converts the release back to ns at %.2f GHz)\n", ghz);
  return 0;
}

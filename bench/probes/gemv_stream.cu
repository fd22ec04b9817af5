// Probe (stand-alone, not part of the build): how fast can a 4096×4096 fp16 GEMV at M = 1 stream
// W on this GPU? cuBLAS against hand-written stream shapes, each timed in a CUDA graph of 96 calls
// rotating over 8 copies of W (256 MB, L2 is 50 MB: every call reads HBM), results checked
// against the first variant. It answers how much of the fused apply's time (base + delta at M = 1)
// is the base stream itself (bench/RESULTS-h100.md, seventh session):
//   nvcc -O3 -std=c++17 -arch=sm_90 bench/probes/gemv_stream.cu -lcublas -o /tmp/gemv_stream && /tmp/gemv_stream
// Variants: a warp per row with all its loads in flight (full grid or a persistent 2–4 blocks per
// SM); contiguous row ranges per block with and without a bulk L2 prefetch; a ring of
// cp.async.bulk stages per block (RS rows per stage, S stages, BPS blocks per SM).
#include <cublas_v2.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "../graph_timer.h"

constexpr int R = 4096, C = 4096, kW = 8;
cudaStream_t st;

double time_graph(int calls, const std::function<void(int)>& body) { return bench::time_graph(st, calls, body); }

__device__ __forceinline__ uint4 ldnc(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ float dot8(uint4 w, const float* xv) {
  const __half2* h = reinterpret_cast<const __half2*>(&w);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) { float2 f = __half22float2(h[i]); s = fmaf(f.x, xv[2 * i], s); s = fmaf(f.y, xv[2 * i + 1], s); }
  return s;
}

// y[r] = W[r]·x by one warp, NL 16-byte loads per lane in flight at a time.
template <int NL>
__device__ __forceinline__ void row_dot_warp(const __half* __restrict__ W, const float* xs, float* y, int r, int lane) {
  constexpr int PER = C / 8 / 32;  // 16-byte loads per lane per row
  const char* row = reinterpret_cast<const char*>(W + (size_t)r * C);
  float s = 0.f;
#pragma unroll
  for (int j0 = 0; j0 < PER; j0 += NL) {
    uint4 w[NL];
#pragma unroll
    for (int j = 0; j < NL; ++j) w[j] = ldnc(row + ((j0 + j) * 32 + lane) * 16);
#pragma unroll
    for (int j = 0; j < NL; ++j) s += dot8(w[j], xs + ((j0 + j) * 32 + lane) * 8);
  }
#pragma unroll
  for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(~0u, s, o);
  if (lane == 0) y[r] = s;
}

// (1) a warp per row, all NL loads of the row's slice in flight; grid-stride over rows (persistent if grid small)
template <int NL>
__global__ void __launch_bounds__(256) rowwarp(const __half* __restrict__ W, const __half* __restrict__ x, float* y) {
  __shared__ float xs[C];
  for (int i = threadIdx.x; i < C; i += 256) xs[i] = __half2float(x[i]);
  __syncthreads();
  const int lane = threadIdx.x % 32;
  const int gw = blockIdx.x * 8 + threadIdx.x / 32, nw = gridDim.x * 8;
  for (int r = gw; r < R; r += nw) {
    row_dot_warp<NL>(W, xs, y, r, lane);
  }
}

// (2) TMA bulk ring: block owns a contiguous row range; stage = RS rows; S stages.
__device__ __forceinline__ uint32_t sa(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mb_init(uint64_t* b, uint32_t n) { asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(sa(b)), "r"(n)); }
__device__ __forceinline__ void mb_expect(uint64_t* b, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(sa(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mb_arrive(uint64_t* b) { asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(sa(b)) : "memory"); }
__device__ __forceinline__ void mb_wait(uint64_t* b, uint32_t par) {
  asm volatile("{\n .reg .pred p;\n W1:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra W1;\n}\n" ::"r"(sa(b)), "r"(par) : "memory");
}
__device__ __forceinline__ void bulk(void* dst, const void* src, uint32_t bytes, uint64_t* b) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(sa(dst)), "l"(src), "r"(bytes), "r"(sa(b)) : "memory");
}

template <int RS, int S>
__global__ void __launch_bounds__(256) tma_ring(const __half* __restrict__ W, const __half* __restrict__ x, float* y) {
  extern __shared__ __align__(128) unsigned char ring[];
  __shared__ uint64_t full[S], empty[S];
  __shared__ float acc[64];
  const int b = blockIdx.x, nb = gridDim.x;
  const int r0 = (int)((long)R * b / nb), r1 = (int)((long)R * (b + 1) / nb);
  const int nst = (r1 - r0 + RS - 1) / RS;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  constexpr int E = C * RS / 8;       // elements per warp per stage
  constexpr int WPR = 8 / RS;         // warps per row
  constexpr int PER = E / 8 / 32;     // uint4 per lane
  const int wrow = warp / WPR, wcol = (warp % WPR) * E;
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) { mb_init(&full[s], 1); mb_init(&empty[s], 8); }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    for (int s = 0; s < S && s < nst; ++s) {
      const int rows = min(RS, r1 - r0 - s * RS);
      mb_expect(&full[s], rows * C * 2);
      bulk(ring + s * RS * C * 2, W + (size_t)(r0 + s * RS) * C, rows * C * 2, &full[s]);
    }
  }
  if (threadIdx.x < 64) acc[threadIdx.x] = 0.f;
  float xv[PER * 8];
#pragma unroll
  for (int j = 0; j < PER; ++j)
#pragma unroll
    for (int i = 0; i < 8; ++i) xv[j * 8 + i] = __half2float(x[wcol + (j * 32 + lane) * 8 + i]);
  __syncthreads();
  for (int it = 0; it < nst; ++it) {
    const int s = it % S;
    mb_wait(&full[s], (it / S) & 1);
    const int rr = it * RS + wrow;
    float sum = 0.f;
    if (rr < r1 - r0) {
      const uint4* src = reinterpret_cast<const uint4*>(ring + s * RS * C * 2 + wrow * C * 2 + wcol * 2);
#pragma unroll
      for (int j = 0; j < PER; ++j) sum += dot8(src[j * 32 + lane], xv + j * 8);
#pragma unroll
      for (int o = 16; o; o >>= 1) sum += __shfl_xor_sync(~0u, sum, o);
      if (lane == 0) atomicAdd(&acc[rr], sum);
    }
    __syncwarp();
    if (lane == 0) mb_arrive(&empty[s]);
    if (threadIdx.x == 0 && it + S < nst) {
      mb_wait(&empty[s], (it / S) & 1);
      const int rows = min(RS, r1 - r0 - (it + S) * RS);
      mb_expect(&full[s], rows * C * 2);
      bulk(ring + s * RS * C * 2, W + (size_t)(r0 + (it + S) * RS) * C, rows * C * 2, &full[s]);
    }
  }
  __syncthreads();
  if (threadIdx.x < r1 - r0) y[r0 + threadIdx.x] = acc[threadIdx.x];
}

// (3) bulk L2 prefetch of the block's whole row range at start, then a warp per row (NL loads)
template <int NL, bool PF, bool PER_ROW>
__global__ void __launch_bounds__(256) pf_rows(const __half* __restrict__ W, const __half* __restrict__ x, float* y) {
  __shared__ float xs[C];
  const int b = blockIdx.x, nb = gridDim.x;
  const int r0 = (int)((long)R * b / nb), r1 = (int)((long)R * (b + 1) / nb);
  if (PF) {
    if (!PER_ROW && threadIdx.x == 0)
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(W + (size_t)r0 * C), "r"((uint32_t)((r1 - r0) * C * 2)) : "memory");
    if (PER_ROW && threadIdx.x < r1 - r0)
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(W + (size_t)(r0 + threadIdx.x) * C), "r"((uint32_t)(C * 2)) : "memory");
  }
  for (int i = threadIdx.x; i < C; i += 256) xs[i] = __half2float(x[i]);
  __syncthreads();
  const int lane = threadIdx.x % 32;
  for (int r = r0 + threadIdx.x / 32; r < r1; r += 8) {
    row_dot_warp<NL>(W, xs, y, r, lane);
  }
}

__global__ void empty_k() {}

int main() {
  CU(cudaStreamCreate(&st));
  cudaDeviceProp prop; CU(cudaGetDeviceProperties(&prop, 0));
  const int sms = prop.multiProcessorCount;
  std::vector<__half*> W(kW);
  std::vector<__half> h((size_t)R * C);
  for (size_t i = 0; i < h.size(); ++i) h[i] = __float2half((float)((i * 2654435761u) % 1000) / 1000.f - 0.5f);
  for (auto& w : W) { CU(cudaMalloc(&w, (size_t)R * C * 2)); CU(cudaMemcpy(w, h.data(), (size_t)R * C * 2, cudaMemcpyHostToDevice)); }
  __half *x; float *y, *yref; __half* yh;
  std::vector<__half> hx(C);
  for (int i = 0; i < C; ++i) hx[i] = __float2half((float)((i * 40503u) % 1000) / 1000.f - 0.5f);
  CU(cudaMalloc(&x, C * 2)); CU(cudaMemcpy(x, hx.data(), C * 2, cudaMemcpyHostToDevice));
  CU(cudaMalloc(&y, R * 4)); CU(cudaMalloc(&yref, R * 4)); CU(cudaMalloc(&yh, R * 2));
  cublasHandle_t blas; cublasCreate(&blas); cublasSetStream(blas, st);
  const float one = 1.f, zero = 0.f;
  auto cub = [&](int i) {
    cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, R, 1, C, &one, W[i % kW], CUDA_R_16F, C, x, CUDA_R_16F, C, &zero, yh,
                 CUDA_R_16F, R, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  };
  std::vector<float> ref(R), got(R);
  rowwarp<16><<<R / 8, 256, 0, st>>>(W[0], x, yref);
  CU(cudaStreamSynchronize(st));
  CU(cudaMemcpy(ref.data(), yref, R * 4, cudaMemcpyDeviceToHost));
  auto check = [&](const char* name) {
    CU(cudaStreamSynchronize(st));
    CU(cudaMemcpy(got.data(), y, R * 4, cudaMemcpyDeviceToHost));
    double e = 0; for (int i = 0; i < R; ++i) e = std::max(e, (double)fabsf(got[i] - ref[i]));
    printf("  %-28s max|err| %.2e\n", name, e);
  };
  printf("device %s, %d SMs\n", prop.name, sms);
  for (int rep = 0; rep < 2; ++rep) {
    printf("rep %d\n", rep);
    printf("  empty 2/SM            %8.2f us\n", time_graph(96, [&](int) { empty_k<<<2 * sms, 256, 0, st>>>(); }));
    double cu = time_graph(96, cub);
    printf("  cuBLAS                %8.2f us  %7.0f GB/s\n", cu, R * C * 2 / cu * 1e-3);
    auto run = [&](const char* n, std::function<void(int)> f) {
      f(0); check(n);
      double t = time_graph(96, f);
      printf("  %-22s%8.2f us  %7.0f GB/s  (%.3f x cuBLAS)\n", n, t, R * C * 2 / t * 1e-3, t / cu);
    };
    run("rowwarp16 full grid", [&](int i) { rowwarp<16><<<R / 8, 256, 0, st>>>(W[i % kW], x, y); });
    run("rowwarp8 full grid", [&](int i) { rowwarp<8><<<R / 8, 256, 0, st>>>(W[i % kW], x, y); });
    run("rowwarp16 2/SM persist", [&](int i) { rowwarp<16><<<2 * sms, 256, 0, st>>>(W[i % kW], x, y); });
    run("rowwarp8 2/SM persist", [&](int i) { rowwarp<8><<<2 * sms, 256, 0, st>>>(W[i % kW], x, y); });
    run("rowwarp16 4/SM persist", [&](int i) { rowwarp<16><<<4 * sms, 256, 0, st>>>(W[i % kW], x, y); });
    run("rows8 2/SM no pf", [&](int i) { pf_rows<8, false, false><<<2 * sms, 256, 0, st>>>(W[i % kW], x, y); });
    run("rows8 2/SM pf block", [&](int i) { pf_rows<8, true, false><<<2 * sms, 256, 0, st>>>(W[i % kW], x, y); });
    run("rows8 2/SM pf rows", [&](int i) { pf_rows<8, true, true><<<2 * sms, 256, 0, st>>>(W[i % kW], x, y); });
    run("rows4 2/SM pf block", [&](int i) { pf_rows<4, true, false><<<2 * sms, 256, 0, st>>>(W[i % kW], x, y); });
    run("rows8 1/SM pf block", [&](int i) { pf_rows<8, true, false><<<sms, 256, 0, st>>>(W[i % kW], x, y); });
    run("rows16 2/SM pf block", [&](int i) { pf_rows<16, true, false><<<2 * sms, 256, 0, st>>>(W[i % kW], x, y); });
#define TMA(RS, S, BPS)                                                                                   \
    {                                                                                                     \
      const int sm = RS * S * C * 2;                                                                      \
      CU(cudaFuncSetAttribute(tma_ring<RS, S>, cudaFuncAttributeMaxDynamicSharedMemorySize, sm));         \
      run("tma RS" #RS " S" #S " " #BPS "/SM", [&](int i) { tma_ring<RS, S><<<BPS * sms, 256, sm, st>>>(W[i % kW], x, y); }); \
    }
    TMA(2, 6, 1) TMA(2, 3, 2) TMA(2, 2, 2) TMA(1, 3, 3)
  }
  return 0;
}

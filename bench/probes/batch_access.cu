// Probe (stand-alone, not part of the build): does the multi-tenant batch kernel's access pattern
// limit it? Streams 32 tenants' worth of 2-bit codes (V̂-like: 1008 rows × 256 words, Û-like: 4096
// rows × 64 words per tenant, 63 MB; three copies rotate so L2 stays cold) with the tensor-core
// kernel's pattern (16-row tiles, batches of 4 chunks of 8 words per row, lane (g, q) reading
// 8 bytes of rows g and g + 8; phase-1-like items of 8 chunks, phase-2-like of 8) against a tiled
// layout (each chunk's 16 rows × 8 words contiguous: one 16-byte load per lane), with a fake decode
// of `work` dependent integer ops per chunk and lane (bench/RESULTS-h100.md, seventh session):
//   nvcc -O3 -std=c++17 -arch=sm_90 bench/probes/batch_access.cu -o /tmp/batch_access && /tmp/batch_access
#include <cstdint>
#include <vector>

#include "../graph_timer.h"  // CU

constexpr int NT = 32, RA = 1008, WA = 256, RB = 4096, WB = 64;
struct Work { const uint32_t* base; uint32_t row_words; uint32_t tile; uint32_t c0, c1; };

template <bool TILED>
__global__ void __launch_bounds__(256, 2) stream(const Work* items, uint32_t n, uint32_t* out, int work) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, q = lane % 4;
  const uint32_t per = (n + gridDim.x - 1) / gridDim.x, lo = blockIdx.x * per, hi = min(n, lo + per);
  uint32_t acc = 0;
  for (uint32_t i = lo + warp; i < hi; i += 8) {
    const Work w = items[i];
    for (uint32_t c0 = w.c0; c0 < w.c1; c0 += 4) {
      uint32_t v[4][4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const uint32_t c = c0 + u;
        if (TILED) {
          const uint4 x = *reinterpret_cast<const uint4*>(w.base + ((uint64_t)w.tile * (w.row_words / 8) + c) * 128 + lane * 4);
          v[u][0] = x.x; v[u][1] = x.y; v[u][2] = x.z; v[u][3] = x.w;
        } else {
          const uint32_t* ra = w.base + (uint64_t)(w.tile * 16 + g) * w.row_words + c * 8 + q * 2;
          const uint2 x = *reinterpret_cast<const uint2*>(ra), y = *reinterpret_cast<const uint2*>(ra + 8 * w.row_words);
          v[u][0] = x.x; v[u][1] = x.y; v[u][2] = y.x; v[u][3] = y.y;
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        uint32_t h = v[u][0] ^ v[u][1] ^ v[u][2] ^ v[u][3];
        for (int k = 0; k < work; ++k) h = h * 1664525u + 1013904223u;  // a fake decode chain
        acc += h;
      }
    }
  }
  if (acc == 0x12345678u) out[0] = acc;
}

int main() {
  cudaDeviceProp prop; CU(cudaGetDeviceProperties(&prop, 0));
  const size_t wordsA = (size_t)RA * WA, wordsB = (size_t)RB * WB, per = wordsA + wordsB;
  uint32_t* data; CU(cudaMalloc(&data, NT * per * 4 * 3));  // 3 copies rotate (L2 cold)
  CU(cudaMemset(data, 1, NT * per * 4 * 3));
  uint32_t* out; CU(cudaMalloc(&out, 4));
  printf("device %s; %zu MB per pass\n", prop.name, NT * per * 4 >> 20);
  std::vector<Work> h[3];
  for (int cp = 0; cp < 3; ++cp)
    for (int t = 0; t < NT; ++t) {
      const uint32_t* A = data + (cp * NT + t) * per, *B = A + wordsA;
      for (uint32_t tile = 0; tile < RA / 16; ++tile)
        for (uint32_t p = 0; p < 4; ++p) h[cp].push_back({A, WA, tile, p * 8, p * 8 + 8});  // 4 parts of 32 chunks
      for (uint32_t tile = 0; tile < RB / 16; ++tile) h[cp].push_back({B, WB, tile, 0, 8});
    }
  Work* d[3];
  for (int cp = 0; cp < 3; ++cp) {
    CU(cudaMalloc(&d[cp], h[cp].size() * sizeof(Work)));
    CU(cudaMemcpy(d[cp], h[cp].data(), h[cp].size() * sizeof(Work), cudaMemcpyHostToDevice));
  }
  const uint32_t n = (uint32_t)h[0].size();
  cudaEvent_t a, b; CU(cudaEventCreate(&a)); CU(cudaEventCreate(&b));
  for (int work : {0, 8, 24}) {
    for (int tiled = 0; tiled < 2; ++tiled) {
      for (int grid : {264, 528}) {
        std::vector<float> ms;
        for (int r = 0; r < 9; ++r) {
          CU(cudaEventRecord(a));
          for (int k = 0; k < 3; ++k) {
            if (tiled) stream<true><<<grid, 256>>>(d[k], n, out, work);
            else stream<false><<<grid, 256>>>(d[k], n, out, work);
          }
          CU(cudaEventRecord(b)); CU(cudaEventSynchronize(b));
          float t; CU(cudaEventElapsedTime(&t, a, b)); ms.push_back(t / 3);
        }
        std::sort(ms.begin(), ms.end());
        const double us = ms[4] * 1000;
        printf("work %2d  %-9s grid %3d: %7.2f us  %6.0f GB/s\n", work, tiled ? "tiled" : "row-major", grid, us, NT * per * 4 / us * 1e-3);
      }
    }
  }
  return 0;
}

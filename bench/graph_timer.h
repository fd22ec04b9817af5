// Timing of back-to-back GPU calls replayed as one CUDA graph, shared by the apply benchmark
// (bench_gpu_apply.cu) and the stand-alone probes (probes/): the graph amortises launch overhead
// without hiding anything behind L2 when the calls rotate over buffers larger than it.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

// Aborts the benchmark with the failing call and its line (a benchmark has nothing to recover).
#define CU(x)                                                                          \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    if (e_ != cudaSuccess) {                                                           \
      fprintf(stderr, "CUDA %s at line %d: %s\n", cudaGetErrorString(e_), __LINE__, #x); \
      exit(2);                                                                         \
    }                                                                                  \
  } while (0)

namespace bench {

// Median µs per call of `calls` invocations of body(i) captured on `stream` in one graph (one
// warm-up replay, then 7 timed ones).
inline double time_graph(cudaStream_t stream, int calls, const std::function<void(int)>& body) {
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CU(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < calls; ++i) body(i);
  CU(cudaStreamEndCapture(stream, &g));
  CU(cudaGraphInstantiate(&ge, g, 0));
  CU(cudaGraphLaunch(ge, stream));  // warm-up
  CU(cudaStreamSynchronize(stream));
  cudaEvent_t a, b;
  CU(cudaEventCreate(&a));
  CU(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int r = 0; r < 7; ++r) {
    CU(cudaEventRecord(a, stream));
    CU(cudaGraphLaunch(ge, stream));
    CU(cudaEventRecord(b, stream));
    CU(cudaEventSynchronize(b));
    float t;
    CU(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  return ms[ms.size() / 2] * 1000.0 / calls;
}

}  // namespace bench

// Many variants on one GPU (issue 8, item 4): GPU memory and the latency of one decode step through
// the 224 linear layers of a Llama-2-7B-shaped model, N variants in one batch (one token each).
//
//   compressed:   fp16 base weights (+ embeddings/lm_head), N variants' Delta-CoMe deltas (α = 1/16,
//                 synthetic, exact sizes) resident in a dc_pool; per layer one cuBLAS fp16 GEMM
//                 (M = N) for the base, then one dc_pool_apply_batched (one launch per phase).
//   uncompressed: a full fp16 copy of the 224 linear weights per variant; per layer one
//                 cublasGemmBatchedEx of N single-token GEMMs. OOM where the copies do not fit.
//
// All variants share one synthetic container registered under N ids: the pool loads one device copy
// per id, so memory and bandwidth are those of N distinct variants (contents do not affect speed).
// Timing: CUDA events around whole steps on the default stream, after warm-up; median of --steps.
// Memory: cudaMemGetInfo (used = total − free), everything in the process included; per variant,
// both the pool's resident bytes (Σ device_bytes: what the backend's arena really holds for the
// deltas) and the growth of GPU memory since the pool was created (adds the arena's unused chunk
// tails), divided by N.
//
// Usage: dc_bench_pool_decode [--n 2,4,8,...] [--steps 10] [--nonlinear lowrank|dense|none]
//                             [--skip-uncompressed] [--layers 32]
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "deltacome/dc_pool.h"
#include "format/container.h"
#include "math/budget.h"
#include "synthetic_delta.h"

namespace {

#define CK(x)                                                                                     \
  do {                                                                                            \
    cudaError_t e_ = (x);                                                                         \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));   \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)
#define CB(x)                                                                                     \
  do {                                                                                            \
    cublasStatus_t s_ = (x);                                                                      \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                            \
      std::fprintf(stderr, "%s:%d: %s: cublas status %d\n", __FILE__, __LINE__, #x, (int)s_);     \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)
#define DK(x)                                                                                     \
  do {                                                                                            \
    dc_status d_ = (x);                                                                           \
    if (d_ != DC_OK) {                                                                            \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, dc_last_error_message());  \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

constexpr uint64_t H = 4096, I = 11008, V = 32000;
struct LinearKind {
  const char* name;
  uint64_t rows, cols;  // out × in
};
const LinearKind kLinears[7] = {{"q", H, H}, {"k", H, H}, {"v", H, H}, {"o", H, H},
                                {"gate", I, H}, {"up", I, H}, {"down", H, I}};

__global__ void fill_half(__half* p, uint64_t n, uint32_t seed) {
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = __float2half(((float)(h & 0xffff) / 65535.f - 0.5f) * 0.02f);
  }
}

void fill(__half* p, uint64_t n, uint32_t seed) {
  fill_half<<<1024, 256>>>(p, n, seed);
  CK(cudaGetLastError());
}

double used_gb() {
  size_t free_b = 0, total_b = 0;
  CK(cudaMemGetInfo(&free_b, &total_b));
  return (double)(total_b - free_b) / 1e9;
}

std::string tensor_name(int layer, int kind) {
  return "layers." + std::to_string(layer) + "." + kLinears[kind].name;
}

// The synthetic variant: 7 linear deltas per layer (one random delta per shape, copied under every
// layer's name), plus embeddings / lm_head deltas as asked.
std::vector<uint8_t> build_variant_image(int layers, const std::string& nonlinear) {
  dc::BandRecipe recipe;  // α = 1/16, 8-bit ×2, 3-bit ×32, 2-bit rest, group 128
  std::vector<dc::PackedTensor> proto(3);
  const uint64_t shapes[3][2] = {{H, H}, {I, H}, {H, I}};
  std::vector<std::thread> gen;
  for (int s = 0; s < 3; ++s)
    gen.emplace_back([&, s] {
      proto[s] = bench_pool::random_lowrank("proto", shapes[s][0], shapes[s][1],
                                            dc::bands_for_shape(shapes[s][0], shapes[s][1], recipe), 1 + s);
    });
  for (auto& t : gen) t.join();
  dc::ContainerWriter w(dc::ContainerMeta{}, dc::kDefaultSegmentAlignment, 1);
  std::vector<std::thread> writers;
  const int nthreads = 8;
  for (int t = 0; t < nthreads; ++t)
    writers.emplace_back([&, t] {
      for (int l = t; l < layers; l += nthreads)
        for (int k = 0; k < 7; ++k) {
          dc::PackedTensor c = proto[k < 4 ? 0 : k < 6 ? 1 : 2];
          c.name = tensor_name(l, k);
          w.add_tensor(c);
        }
    });
  for (auto& t : writers) t.join();
  if (nonlinear != "none") {
    for (const char* n : {"embed_tokens", "lm_head"}) {
      dc::PackedTensor t = nonlinear == "dense"
                               ? bench_pool::random_dense(n, V, H, 7)
                               : bench_pool::random_lowrank(n, V, H, dc::bands_for_shape(V, H, recipe), 8);
      t.name = n;
      w.add_tensor(t);
    }
  }
  return w.finish_to_memory();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Buffers {
  __half *x = nullptr, *xi = nullptr, *y = nullptr, *yi = nullptr;  // [N × 4096], [N × 11008]
};

// One decode step through every linear layer: base GEMM (+ pool apply) per layer.
void compressed_step(cublasHandle_t blas, dc_pool* pool, const std::vector<__half*>& W, int layers,
                     const std::vector<const char*>& ids, const Buffers& b, bool with_deltas) {
  const int n = (int)ids.size();
  const float one = 1.f, zero = 0.f;
  for (int l = 0; l < layers; ++l)
    for (int k = 0; k < 7; ++k) {
      const LinearKind& lk = kLinears[k];
      const __half* x = lk.cols == H ? b.x : b.xi;
      __half* y = lk.rows == H ? b.y : b.yi;
      // y[n × rows] = x[n × cols] · Wᵀ, W row-major [rows × cols] = column-major [cols × rows].
      CB(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)lk.rows, n, (int)lk.cols, &one, W[l * 7 + k], CUDA_R_16F,
                      (int)lk.cols, x, CUDA_R_16F, (int)lk.cols, &zero, y, CUDA_R_16F, (int)lk.rows,
                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      if (!with_deltas) continue;
      dc_apply_params p;
      dc_apply_params_init(&p);
      p.m = (uint64_t)n;
      p.x = x;
      p.x_dtype = DC_DTYPE_F16;
      p.y = y;
      p.y_dtype = DC_DTYPE_F16;
      p.stream = nullptr;
      DK(dc_pool_apply_batched(pool, tensor_name(l, k).c_str(), ids.data(), &p));
    }
}

template <class F>
double time_steps(int steps, F&& step) {
  cudaEvent_t a, z;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&z));
  step();
  step();  // warm-up (the first builds batches and the row table)
  CK(cudaDeviceSynchronize());
  std::vector<double> ms;
  for (int s = 0; s < steps; ++s) {
    CK(cudaEventRecord(a, 0));
    step();
    CK(cudaEventRecord(z, 0));
    CK(cudaEventSynchronize(z));
    float t = 0;
    CK(cudaEventElapsedTime(&t, a, z));
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(z);
  return median(ms);
}

// Sanity check before timing: dc_pool_apply_batched on the GPU against the same call on a CPU
// context, two different variants plus a base-only row, fp16 activations. Returns max |Δ| / max |y|.
double check_against_cpu() {
  dc::BandRecipe recipe;
  std::vector<std::vector<uint8_t>> images;
  for (int v = 0; v < 2; ++v) {
    dc::ContainerWriter w(dc::ContainerMeta{}, dc::kDefaultSegmentAlignment, 1);
    w.add_tensor(bench_pool::random_lowrank("q", H, H, dc::bands_for_shape(H, H, recipe), 11 + v));
    w.add_tensor(bench_pool::random_lowrank("gate", I, H, dc::bands_for_shape(I, H, recipe), 21 + v));
    images.push_back(w.finish_to_memory());
  }
  const std::vector<const char*> ids = {"A", "B", nullptr, "B", "A"};
  const int m = (int)ids.size();
  std::vector<__half> xh(m * H);
  std::vector<float> xf(m * H);
  for (int i = 0; i < m * (int)H; ++i) {
    xh[i] = __float2half((float)((i * 7919) % 1000) / 1000.f - 0.5f);
    xf[i] = __half2float(xh[i]);
  }
  double worst = 0;
  dc_context *gpu = nullptr, *cpu = nullptr;
  dc_context_options co;
  dc_context_options_init(&co);
  co.backend = DC_BACKEND_CUDA;
  DK(dc_context_create(&gpu, &co));
  co.backend = DC_BACKEND_CPU;
  DK(dc_context_create(&cpu, &co));
  dc_pool *pg = nullptr, *pc = nullptr;
  DK(dc_pool_create(&pg, gpu, nullptr));
  DK(dc_pool_create(&pc, cpu, nullptr));
  std::vector<dc_container*> cs;
  for (int v = 0; v < 2; ++v) {
    dc_container* c = nullptr;
    DK(dc_container_open_memory(&c, images[v].data(), images[v].size(), nullptr));
    cs.push_back(c);
    DK(dc_pool_register(pg, v ? "B" : "A", c));
    DK(dc_pool_register(pc, v ? "B" : "A", c));
  }
  __half *dx = nullptr, *dy = nullptr;
  CK(cudaMalloc(&dx, m * H * 2));
  CK(cudaMalloc(&dy, m * I * 2));
  CK(cudaMemcpy(dx, xh.data(), m * H * 2, cudaMemcpyHostToDevice));
  for (const char* t : {"q", "gate"}) {
    const uint64_t rows = !std::strcmp(t, "q") ? H : I;
    CK(cudaMemset(dy, 0, m * rows * 2));
    dc_apply_params p;
    dc_apply_params_init(&p);
    p.m = m;
    p.x = dx;
    p.x_dtype = DC_DTYPE_F16;
    p.y = dy;
    p.y_dtype = DC_DTYPE_F16;
    DK(dc_pool_apply_batched(pg, t, ids.data(), &p));
    std::vector<__half> yh(m * rows);
    CK(cudaMemcpy(yh.data(), dy, m * rows * 2, cudaMemcpyDeviceToHost));
    std::vector<float> yc(m * rows, 0.f);
    dc_apply_params q;
    dc_apply_params_init(&q);
    q.m = m;
    q.x = xf.data();
    q.y = yc.data();
    DK(dc_pool_apply_batched(pc, t, ids.data(), &q));
    double err = 0, mag = 0;
    for (uint64_t k = 0; k < m * rows; ++k) {
      err = std::max(err, (double)std::fabs(__half2float(yh[k]) - yc[k]));
      mag = std::max(mag, (double)std::fabs(yc[k]));
    }
    for (uint64_t o = 0; o < rows; ++o)  // the base-only row stays 0
      if (__half2float(yh[2 * rows + o]) != 0.f) err = 1e30;
    std::printf("check %s (%llux%llu, rows A B - B A): max |gpu - cpu| = %.3g, max |y| = %.3g\n", t,
                (unsigned long long)rows, (unsigned long long)H, err, mag);
    worst = std::max(worst, err / std::max(mag, 1e-30));
  }
  cudaFree(dx);
  cudaFree(dy);
  dc_pool_destroy(pg);
  dc_pool_destroy(pc);
  for (auto* c : cs) dc_container_close(c);
  dc_context_destroy(gpu);
  dc_context_destroy(cpu);
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> ns = {2, 4, 8, 16, 32, 50, 64, 70, 72, 74, 75, 76, 78, 80, 90, 100};
  int steps = 10, layers = 32;
  std::string nonlinear = "lowrank";
  bool uncompressed = true;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--n") && i + 1 < argc) {
      ns.clear();
      for (char* t = std::strtok(argv[++i], ","); t; t = std::strtok(nullptr, ",")) ns.push_back(std::atoi(t));
    } else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) {
      steps = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--layers") && i + 1 < argc) {
      layers = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--nonlinear") && i + 1 < argc) {
      nonlinear = argv[++i];
    } else if (!std::strcmp(argv[i], "--skip-uncompressed")) {
      uncompressed = false;
    }
  }
  cudaDeviceProp prop{};
  CK(cudaSetDevice(0));
  CK(cudaGetDeviceProperties(&prop, 0));
  size_t free0 = 0, total = 0;
  CK(cudaMemGetInfo(&free0, &total));
  std::printf("device: %s, %.2f GB total, %.2f GB used before allocation\n", prop.name, total / 1e9,
              (total - free0) / 1e9);

  const double rel = check_against_cpu();
  std::printf("GPU pool apply vs CPU pool apply: max error / max |y| = %.3g %s\n\n", rel,
              rel < 1e-2 ? "(ok: fp16 output)" : "(MISMATCH)");
  if (rel >= 1e-2) return 1;

  // ---- base model: 224 linear weights + embeddings + lm_head, fp16 --------------------------------------
  std::vector<__half*> W(layers * 7);
  uint64_t base_bytes = 0;
  for (int l = 0; l < layers; ++l)
    for (int k = 0; k < 7; ++k) {
      const uint64_t n = kLinears[k].rows * kLinears[k].cols;
      CK(cudaMalloc(&W[l * 7 + k], n * 2));
      fill(W[l * 7 + k], n, (uint32_t)(l * 7 + k));
      base_bytes += n * 2;
    }
  __half *emb = nullptr, *head = nullptr;
  CK(cudaMalloc(&emb, V * H * 2));
  CK(cudaMalloc(&head, V * H * 2));
  fill(emb, V * H, 9001);
  fill(head, V * H, 9002);
  base_bytes += 2 * V * H * 2;
  const int nmax = *std::max_element(ns.begin(), ns.end());
  Buffers b;
  CK(cudaMalloc(&b.x, nmax * H * 2));
  CK(cudaMalloc(&b.xi, nmax * I * 2));
  CK(cudaMalloc(&b.y, nmax * H * 2));
  CK(cudaMalloc(&b.yi, nmax * I * 2));
  fill(b.x, nmax * H, 1);
  fill(b.xi, nmax * I, 2);
  cublasHandle_t blas;
  CB(cublasCreate(&blas));
  CK(cudaDeviceSynchronize());
  const double base_used = used_gb();
  std::printf("fp16 base weights: %.3f GB (224 linear + embeddings + lm_head); GPU used now %.2f GB\n",
              base_bytes / 1e9, base_used);

  // ---- compressed: pool on the CUDA backend -------------------------------------------------------------
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<uint8_t> image = build_variant_image(layers, nonlinear);
  std::printf("synthetic variant container: %.3f GB, built in %.1f s\n", image.size() / 1e9,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  dc_open_options oo;
  dc_open_options_init(&oo);
  oo.flags = DC_OPEN_BORROW_MEMORY | DC_OPEN_TRUSTED;
  dc_container* c = nullptr;
  DK(dc_container_open_memory(&c, image.data(), image.size(), &oo));
  dc_context_options co;
  dc_context_options_init(&co);
  co.backend = DC_BACKEND_CUDA;
  dc_context* ctx = nullptr;
  DK(dc_context_create(&ctx, &co));
  size_t free1 = 0;
  CK(cudaMemGetInfo(&free1, &total));
  dc_pool_options po;
  dc_pool_options_init(&po);
  po.device_budget_bytes = free1 > (3ull << 30) ? free1 - (3ull << 30) : free1 / 2;  // leave 3 GiB headroom
  po.host_threads = 12;
  po.load_flags = DC_LOAD_SKIP_CHECKSUM;
  dc_pool* pool = nullptr;
  DK(dc_pool_create(&pool, ctx, &po));
  std::printf("pool budget %.2f GB\n\n", po.device_budget_bytes / 1e9);
  const double pool_used0 = used_gb();  // before any delta: the growth from here is the deltas'

  // Per N: base-only step (the cost every row pays anyway) and base + batched deltas.
  std::printf("| N | resident deltas GB | per variant GB | GPU used GB | GPU growth per variant GB | base only ms | "
              "base + deltas ms | delta overhead |\n|---|---|---|---|---|---|---|---|\n");
  int loaded = 0, largest_fit = 0;
  uint64_t last_fit_bytes = 0;
  double last_fit_growth = 0;
  std::vector<std::string> id_store;
  for (int n : ns) {
    // Make N variants resident: register and prefetch the new ones, then wait.
    bool fits = true;
    for (; loaded < n; ++loaded) {
      id_store.push_back("variant-" + std::to_string(loaded));
      DK(dc_pool_register(pool, id_store.back().c_str(), c));
      DK(dc_pool_prefetch(pool, id_store.back().c_str(), nullptr, nullptr));
    }
    if (dc_pool_wait(pool) != DC_OK) {
      std::printf("| %d | load failed: %s |\n", n, dc_last_error_message());
      break;
    }
    dc_pool_stats st{};
    st.struct_size = sizeof st;
    DK(dc_pool_get_stats(pool, &st));
    const uint64_t per_variant = dc_container_tensor_count(c);
    if (st.prefetch_dropped > 0 || st.resident_deltas < (uint64_t)n * per_variant) fits = false;
    if (!fits) {
      std::printf("| %d | does not fit: %llu of %llu deltas resident within the %.2f GB budget |\n", n,
                  (unsigned long long)st.resident_deltas, (unsigned long long)(n * per_variant),
                  po.device_budget_bytes / 1e9);
      break;
    }
    largest_fit = n;
    last_fit_bytes = st.resident_bytes;
    std::vector<const char*> ids(n);
    for (int i = 0; i < n; ++i) ids[i] = id_store[i].c_str();
    const double used = used_gb();
    last_fit_growth = used - pool_used0;
    const double base_ms = time_steps(steps, [&] { compressed_step(blas, pool, W, layers, ids, b, false); });
    const double full_ms = time_steps(steps, [&] { compressed_step(blas, pool, W, layers, ids, b, true); });
    DK(dc_pool_get_stats(pool, &st));
    if (st.evictions) std::fprintf(stderr, "warning: %llu evictions\n", (unsigned long long)st.evictions);

    std::printf("| %d | %.2f | %.4f | %.2f | %.4f | %.2f | %.2f | %+.1f%% |\n", n, st.resident_bytes / 1e9,
                st.resident_bytes / 1e9 / n, used, (used - pool_used0) / n, base_ms, full_ms,
                100.0 * (full_ms - base_ms) / base_ms);
    std::fflush(stdout);
  }
  dc_pool_stats fin{};
  fin.struct_size = sizeof fin;
  DK(dc_pool_get_stats(pool, &fin));
  const double per_variant_gb = largest_fit ? (double)last_fit_bytes / largest_fit / 1e9 : 0;
  const double growth_gb = largest_fit ? last_fit_growth / largest_fit : 0;
  std::printf("\nlargest N measured resident next to the fp16 base: %d (nonlinear deltas: %s); "
              "%.4f GB of deltas per variant on the GPU (dc_pool_stats.resident_bytes / N), GPU memory grew "
              "%.4f GB per variant; loads %llu, evictions %llu\n",
              largest_fit, nonlinear.c_str(), per_variant_gb, growth_gb, (unsigned long long)fin.loads,
              (unsigned long long)fin.evictions);
  dc_pool_destroy(pool);
  dc_context_destroy(ctx);
  dc_container_close(c);

  // ---- uncompressed: N full fp16 copies next to the base, batched single-token GEMMs -----------------
  // (the base stays allocated, as a server that also serves base rows keeps it)
  if (uncompressed) {
    std::printf("\n| N | uncompressed GPU used GB | uncompressed step ms |\n|---|---|---|\n");
    std::vector<__half*> copies;  // [variant][layer*7+k] in one allocation per variant
    const uint64_t copy_bytes = base_bytes - 2 * V * H * 2;
    for (int n : ns) {
      bool oom = false;
      while ((int)copies.size() < n) {
        __half* p = nullptr;
        if (cudaMalloc(&p, copy_bytes) != cudaSuccess) {
          cudaGetLastError();
          oom = true;
          break;
        }
        fill(p, copy_bytes / 2, 77 + (uint32_t)copies.size());
        copies.push_back(p);
      }
      if (oom) {
        std::printf("| %d | OOM (%d copies fit) | - |\n", n, (int)copies.size());
        break;
      }
      // Device arrays of pointers per linear layer: A_i = variant i's weight, B_i = row i of x.
      std::vector<const void*> hA(n), hB(n);
      std::vector<void*> hC(n);
      const void** dA = nullptr;
      const void** dB = nullptr;
      void** dC = nullptr;
      CK(cudaMalloc(&dA, sizeof(void*) * n * layers * 7));
      CK(cudaMalloc(&dB, sizeof(void*) * n * 7));
      CK(cudaMalloc(&dC, sizeof(void*) * n * 7));
      std::vector<const void*> allA((size_t)n * layers * 7);
      for (int i = 0; i < n; ++i) {
        uint64_t off = 0;
        for (int l = 0; l < layers; ++l)
          for (int k = 0; k < 7; ++k) {
            allA[((size_t)l * 7 + k) * n + i] = copies[i] + off;
            off += kLinears[k].rows * kLinears[k].cols;
          }
      }
      std::vector<const void*> allB((size_t)n * 7);
      std::vector<void*> allC((size_t)n * 7);
      for (int k = 0; k < 7; ++k)
        for (int i = 0; i < n; ++i) {
          allB[(size_t)k * n + i] = (kLinears[k].cols == H ? b.x + i * H : b.xi + i * I);
          allC[(size_t)k * n + i] = (kLinears[k].rows == H ? b.y + i * H : b.yi + i * I);
        }
      CK(cudaMemcpy(dA, allA.data(), sizeof(void*) * allA.size(), cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dB, allB.data(), sizeof(void*) * allB.size(), cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dC, allC.data(), sizeof(void*) * allC.size(), cudaMemcpyHostToDevice));
      const float one = 1.f, zero = 0.f;
      const double ms = time_steps(steps, [&] {
        for (int l = 0; l < layers; ++l)
          for (int k = 0; k < 7; ++k) {
            const LinearKind& lk = kLinears[k];
            CB(cublasGemmBatchedEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)lk.rows, 1, (int)lk.cols, &one,
                                   dA + ((size_t)l * 7 + k) * n, CUDA_R_16F, (int)lk.cols, dB + (size_t)k * n,
                                   CUDA_R_16F, (int)lk.cols, &zero, dC + (size_t)k * n, CUDA_R_16F, (int)lk.rows, n,
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
          }
      });
      std::printf("| %d | %.2f | %.2f |\n", n, used_gb(), ms);
      std::fflush(stdout);
      cudaFree(dA);
      cudaFree(dB);
      cudaFree(dC);
    }
    for (__half* p : copies) cudaFree(p);
  }
  cublasDestroy(blas);
  return 0;
}

// svd_topk on the compressor's shapes: the Gram route (math/svd.cpp) against dgesdd
// (DELTACOME_SVD_FULL=1), same matrix, same process, one call each (they take seconds).
// Usage: dc_bench_svd [--quick]   (--quick: 1024x1024 and 2816x1024 instead of the 7B shapes)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "math/svd.h"

namespace {

// A fine-tuning-like delta: a long-tail low-rank part (64 directions, σ ∝ 1/(1+t)) plus iid noise.
std::vector<float> delta_like(uint64_t m, uint64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> a(m * n), x(m * 64), y(64 * n);
  for (auto& v : a) v = 0.02f * nd(rng);
  for (auto& v : x) v = nd(rng);
  for (auto& v : y) v = nd(rng);
  for (uint64_t i = 0; i < m; ++i)
    for (uint64_t t = 0; t < 64; ++t) {
      const float s = 0.05f * x[i * 64 + t] / (1.f + t);
      for (uint64_t c = 0; c < n; ++c) a[i * n + c] += s * y[t * n + c];
    }
  return a;
}

double seconds(const std::vector<float>& a, uint64_t m, uint64_t n, uint64_t k, bool full, dc::Svd& out) {
  if (full) setenv("DELTACOME_SVD_FULL", "1", 1);
  const auto t0 = std::chrono::steady_clock::now();
  out = dc::svd_topk(a.data(), m, n, k);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  unsetenv("DELTACOME_SVD_FULL");
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  struct Shape {
    uint64_t m, n;
  };
  // k = the compressor's max useful rank at alpha = 1/16: m·n/(m+n)/2 + 1
  const std::vector<Shape> shapes = quick ? std::vector<Shape>{{1024, 1024}, {2816, 1024}}
                                          : std::vector<Shape>{{4096, 4096}, {11008, 4096}, {4096, 11008}};
  std::printf("| shape | k | Gram route s | dgesdd s | speed-up | max |Δσ| / σ1 |\n|---|---|---|---|---|---|\n");
  for (const Shape& s : shapes) {
    const uint64_t k = s.m * s.n / (s.m + s.n) / 2 + 1;
    const std::vector<float> a = delta_like(s.m, s.n, s.m * 7 + s.n);
    dc::Svd g, f;
    const double tg = seconds(a, s.m, s.n, k, false, g);
    const double tf = seconds(a, s.m, s.n, k, true, f);
    double worst = 0;
    for (uint64_t j = 0; j < k; ++j) worst = std::fmax(worst, std::fabs((double)g.s[j] - f.s[j]));
    std::printf("| %llux%llu | %llu | %.2f | %.2f | %.2fx | %.1e |\n", (unsigned long long)s.m,
                (unsigned long long)s.n, (unsigned long long)k, tg, tf, tf / tg, worst / f.s[0]);
    std::fflush(stdout);
  }
  return 0;
}

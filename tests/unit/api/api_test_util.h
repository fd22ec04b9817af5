// Fixtures for the C API tests: containers built in memory from known deltas.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "deltacome/deltacome.h"
#include "format/container.h"
#include "math/lowrank.h"
#include "test_util.h"

namespace dc_test {

struct ContainerDeleter { void operator()(dc_container* c) const { dc_container_close(c); } };
struct ContextDeleter { void operator()(dc_context* c) const { dc_context_destroy(c); } };
struct DeltaDeleter { void operator()(dc_delta* d) const { dc_delta_free(d); } };
using ContainerPtr = std::unique_ptr<dc_container, ContainerDeleter>;
using ContextPtr = std::unique_ptr<dc_context, ContextDeleter>;
using DeltaPtr = std::unique_ptr<dc_delta, DeltaDeleter>;

// A delta with a long-tail spectrum: Σ_k σ_k u_k v_kᵀ, σ_k = s/(1 + k/4), plus small noise.
inline std::vector<float> long_tail_delta(uint64_t rows, uint64_t cols, uint64_t seed) {
  const uint64_t r = std::min<uint64_t>(std::min(rows, cols), 48);
  auto u = random_floats(rows * r, seed, 1.f / std::sqrt((float)rows));
  auto v = random_floats(cols * r, seed + 1, 1.f / std::sqrt((float)cols));
  auto noise = random_floats(rows * cols, seed + 2, 1e-4f);
  std::vector<float> d(rows * cols);
  for (uint64_t o = 0; o < rows; ++o)
    for (uint64_t c = 0; c < cols; ++c) {
      double s = noise[o * cols + c];
      for (uint64_t k = 0; k < r; ++k) s += 0.05 / (1.0 + k / 4.0) * u[o * r + k] * v[c * r + k];
      d[o * cols + c] = (float)s;
    }
  return d;
}

inline std::vector<uint8_t> image_of(const std::vector<dc::PackedTensor>& ts) {
  dc::ContainerMeta meta;
  meta.tool_version = "deltacome-test";
  meta.model_name = "test-ft";
  dc::ContainerWriter w(meta);
  for (const auto& t : ts) w.add_tensor(t);
  return w.finish_to_memory();
}

inline ContainerPtr open_image(const std::vector<uint8_t>& image) {
  dc_container* c = nullptr;
  if (dc_container_open_memory(&c, image.data(), image.size(), nullptr) != DC_OK) return nullptr;
  return ContainerPtr(c);
}

inline ContextPtr cpu_context(int threads = 2) {
  dc_context_options o;
  dc_context_options_init(&o);
  o.backend = DC_BACKEND_CPU;
  o.num_threads = threads;
  dc_context* ctx = nullptr;
  if (dc_context_create(&ctx, &o) != DC_OK) return nullptr;
  return ContextPtr(ctx);
}

}  // namespace dc_test

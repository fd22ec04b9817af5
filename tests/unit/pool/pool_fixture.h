// Fixtures for the pool tests: variants built in-process (dc::compress_lowrank / BitDelta / dense
// → dc::ContainerWriter → dc_container_open_memory), so no CLI step is needed, and the float64 ΔW of
// every tensor (dc::reconstruct_reference) for the apply tests.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "deltacome/dc_pool.h"
#include "deltacome/deltacome.h"
#include "format/container.h"
#include "math/budget.h"
#include "math/lowrank.h"
#include "test_util.h"

namespace pool_test {

#define ASSERT_DC_OK(expr) ASSERT_EQ((expr), DC_OK) << dc_last_error_message()
#define EXPECT_DC_OK(expr) EXPECT_EQ((expr), DC_OK) << dc_last_error_message()

struct TensorSpec {
  std::string name;
  uint64_t rows, cols;
  dc_tensor_kind kind;
};

// Default layout of a variant: four same-shape low-rank tensors (budget/LRU tests use equal sizes),
// one larger low-rank tensor, a BitDelta tensor, and 2-D / 1-D dense tensors.
inline std::vector<TensorSpec> default_specs() {
  return {{"l0.q", 40, 64, DC_KIND_LOWRANK},  {"l0.k", 40, 64, DC_KIND_LOWRANK},
          {"l0.v", 40, 64, DC_KIND_LOWRANK},  {"l0.o", 40, 64, DC_KIND_LOWRANK},
          {"l0.up", 96, 64, DC_KIND_LOWRANK}, {"l0.bd", 40, 64, DC_KIND_BITDELTA},
          {"l0.dn", 24, 40, DC_KIND_DENSE},   {"l0.norm", 40, 1, DC_KIND_DENSE}};
}

// One variant: its container and the float64 ΔW of each tensor.
struct Variant {
  std::vector<uint8_t> image;
  dc_container* container = nullptr;
  std::map<std::string, std::vector<double>> dw;  // rows × cols, row-major
  std::map<std::string, TensorSpec> spec;
  ~Variant() { dc_container_close(container); }
};

inline std::unique_ptr<Variant> make_variant(uint64_t seed, const std::vector<TensorSpec>& specs = default_specs()) {
  auto v = std::make_unique<Variant>();
  dc::ContainerMeta meta;
  meta.model_name = "variant-" + std::to_string(seed);
  dc::ContainerWriter w(meta);
  uint64_t k = 0;
  for (const TensorSpec& s : specs) {
    // A delta with decaying spectrum (product of two random factors), so the bands matter.
    const uint64_t n = s.rows * s.cols;
    std::vector<float> delta(n);
    const auto a = dc_test::random_floats(s.rows * 6, seed * 131 + k, 0.05f);
    const auto b = dc_test::random_floats(6 * s.cols, seed * 137 + k, 0.05f);
    for (uint64_t r = 0; r < s.rows; ++r)
      for (uint64_t c = 0; c < s.cols; ++c) {
        double acc = 0;
        for (int j = 0; j < 6; ++j) acc += a[r * 6 + j] * b[j * s.cols + c] / (1.0 + j);
        delta[r * s.cols + c] = (float)acc;
      }
    dc::PackedTensor t;
    if (s.kind == DC_KIND_LOWRANK) {
      dc::BandRecipe recipe;
      recipe.alpha = 0.5;
      recipe.group_size = 32;
      dc::LowRankOptions o;
      o.bands = dc::bands_for_shape(s.rows, s.cols, recipe);
      t = dc::compress_lowrank(s.name, delta.data(), s.rows, s.cols, o);
    } else if (s.kind == DC_KIND_BITDELTA) {
      t = dc::compress_bitdelta(s.name, delta.data(), s.rows, s.cols, DC_DTYPE_F16);
    } else {
      t = dc::make_dense(s.name, delta.data(), s.rows, s.cols, DC_DTYPE_F32);
    }
    v->dw[s.name] = dc::reconstruct_reference(t);
    v->spec[s.name] = s;
    w.add_tensor(t);
    ++k;
  }
  v->image = w.finish_to_memory();
  dc_open_options oo;
  dc_open_options_init(&oo);
  oo.flags = DC_OPEN_BORROW_MEMORY;
  EXPECT_EQ(dc_container_open_memory(&v->container, v->image.data(), v->image.size(), &oo), DC_OK)
      << dc_last_error_message();
  return v;
}

inline dc_context* cpu_context(int threads = 2) {
  dc_context_options o;
  dc_context_options_init(&o);
  o.backend = DC_BACKEND_CPU;
  o.num_threads = threads;
  dc_context* ctx = nullptr;
  EXPECT_EQ(dc_context_create(&ctx, &o), DC_OK) << dc_last_error_message();
  return ctx;
}

// device_bytes of one tensor of a variant, measured with the plain API on a separate context.
inline uint64_t device_bytes_of(const Variant& v, const char* tensor) {
  dc_context* ctx = cpu_context(1);
  dc_delta* d = nullptr;
  EXPECT_EQ(dc_delta_load(&d, ctx, v.container, tensor, nullptr), DC_OK) << dc_last_error_message();
  dc_delta_info info{};
  info.struct_size = sizeof info;
  EXPECT_EQ(dc_delta_get_info(d, &info), DC_OK);
  dc_delta_free(d);
  dc_context_destroy(ctx);
  return info.device_bytes;
}

inline dc_pool_stats stats_of(dc_pool* pool) {
  dc_pool_stats s{};
  s.struct_size = sizeof s;
  EXPECT_EQ(dc_pool_get_stats(pool, &s), DC_OK) << dc_last_error_message();
  return s;
}

inline dc_pool_entry_state state_of(dc_pool* pool, const char* model, const char* tensor) {
  dc_pool_entry_state st = DC_POOL_ABSENT;
  EXPECT_EQ(dc_pool_query(pool, model, tensor, &st, nullptr), DC_OK) << dc_last_error_message();
  return st;
}

// A pool on its own CPU context; the variants are registered as "m0", "m1", ...
struct PoolHarness {
  dc_context* ctx = nullptr;
  dc_pool* pool = nullptr;
  std::vector<std::unique_ptr<Variant>> variants;

  PoolHarness(size_t n_variants, uint64_t budget, int host_threads = 2,
              const std::vector<TensorSpec>& specs = default_specs()) {
    ctx = cpu_context();
    dc_pool_options o;
    dc_pool_options_init(&o);
    o.device_budget_bytes = budget;
    o.host_threads = host_threads;
    EXPECT_EQ(dc_pool_create(&pool, ctx, &o), DC_OK) << dc_last_error_message();
    for (size_t i = 0; i < n_variants; ++i) {
      variants.push_back(make_variant(100 + i, specs));
      EXPECT_EQ(dc_pool_register(pool, id(i).c_str(), variants.back()->container), DC_OK) << dc_last_error_message();
    }
  }
  ~PoolHarness() {
    dc_pool_destroy(pool);
    dc_context_destroy(ctx);
  }
  static std::string id(size_t i) { return "m" + std::to_string(i); }

  // acquire + release (one use), expecting success.
  void touch(size_t model, const char* tensor) {
    const dc_delta* d = nullptr;
    ASSERT_EQ(dc_pool_acquire(pool, id(model).c_str(), tensor, nullptr, &d), DC_OK) << dc_last_error_message();
    ASSERT_NE(d, nullptr);
    ASSERT_EQ(dc_pool_release(pool, d), DC_OK) << dc_last_error_message();
  }
};

}  // namespace pool_test

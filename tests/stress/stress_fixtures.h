// Fixtures shared by the stress and leak tests: a small container holding every tensor kind,
// built in memory with the library's writer, and RAII wrappers over the C handles.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/half.h"
#include "common/packed_tensor.h"
#include "deltacome/deltacome.h"
#include "fixtures/random_packed.h"
#include "format/container.h"
#include "test_util.h"

namespace stress {

using Band = dc_fixture::BandSpec;

inline dc::PackedTensor lowrank(const std::string& name, uint64_t rows, uint64_t cols, const std::vector<Band>& bands,
                                bool perm, uint64_t seed) {
  return dc_fixture::random_lowrank(name, rows, cols, bands, perm, seed, {DC_DTYPE_F16, -16, 4.f, true});
}

inline dc::PackedTensor bitdelta(const std::string& name, uint64_t rows, uint64_t cols, uint64_t seed) {
  return dc_fixture::random_bitdelta(name, rows, cols, seed);
}

inline dc::PackedTensor dense(const std::string& name, uint64_t rows, uint64_t cols, uint64_t seed) {
  return dc_fixture::random_dense(name, rows, cols, DC_DTYPE_F32, seed);
}

// Every kind: two Delta-CoMe layers (one with act order), BitDelta, a dense matrix, a bias.
inline std::vector<uint8_t> make_container_image() {
  dc::ContainerMeta meta;
  meta.model_name = "stress-finetuned";
  meta.base_model_name = "stress-base";
  dc::BaseTensorFingerprint f;
  f.name = "l0.q.weight";
  f.shape = {96, 80};
  f.dtype = "F16";
  const std::vector<uint8_t> base_bytes(96 * 80 * 2, 7);
  f.xxh3 = dc::xxh3_64(base_bytes.data(), base_bytes.size());
  meta.base_fingerprint.push_back(f);
  dc::ContainerWriter w(meta, 64, 3);
  w.add_tensor(lowrank("l0.q.weight", 96, 80, {{8, 2, 32}, {3, 6, 32}, {2, 8, 64}}, false, 11));
  w.add_tensor(lowrank("l0.o.weight", 80, 96, {{16, 2, 0}, {4, 4, 32}}, true, 12));
  w.add_tensor(bitdelta("l0.up.weight", 70, 45, 13));
  w.add_tensor(dense("l0.down.weight", 24, 70, 14));
  w.add_tensor(dense("l0.q.bias", 96, 1, 15));
  return w.finish_to_memory();
}

inline std::string write_image(const std::string& dir, const std::string& name, const std::vector<uint8_t>& img) {
  const std::string path = dir + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(img.data()), (std::streamsize)img.size());
  out.close();
  EXPECT_TRUE(out.good()) << path;
  return path;
}

struct ContainerCloser {
  void operator()(dc_container* c) const { dc_container_close(c); }
};
struct ContextDestroyer {
  void operator()(dc_context* c) const { dc_context_destroy(c); }
};
struct DeltaFreer {
  void operator()(dc_delta* d) const { dc_delta_free(d); }
};
using ContainerPtr = std::unique_ptr<dc_container, ContainerCloser>;
using ContextPtr = std::unique_ptr<dc_context, ContextDestroyer>;
using DeltaPtr = std::unique_ptr<dc_delta, DeltaFreer>;

inline ContextPtr cpu_context(int32_t threads) {
  dc_context_options o;
  dc_context_options_init(&o);
  o.backend = DC_BACKEND_CPU;
  o.num_threads = threads;
  dc_context* c = nullptr;
  EXPECT_EQ(dc_context_create(&c, &o), DC_OK) << dc_last_error_message();
  return ContextPtr(c);
}

// The deterministic input of tensor `cols` wide, m rows.
inline std::vector<float> input(uint64_t m, uint64_t cols, uint64_t seed) {
  return dc_test::random_floats(m * cols, seed);
}

// y = x·ΔWᵀ (m rows) and W0 + ΔW for one loaded delta; the W0 is all 0.25.
struct Answer {
  std::vector<float> y, merged;
};

inline Answer compute(const dc_delta* d, uint64_t m, uint64_t seed) {
  dc_delta_info di{};
  di.struct_size = sizeof di;
  EXPECT_EQ(dc_delta_get_info(d, &di), DC_OK);
  Answer a;
  const std::vector<float> x = input(m, di.cols, seed);
  a.y.assign(m * di.rows, 0.f);
  dc_apply_params p;
  dc_apply_params_init(&p);
  p.m = m;
  p.x = x.data();
  p.y = a.y.data();
  EXPECT_EQ(dc_apply_delta_linear(d, &p), DC_OK) << dc_last_error_message();
  a.merged.assign(di.rows * di.cols, 0.25f);
  EXPECT_EQ(dc_merge_delta(d, a.merged.data(), DC_DTYPE_F32, 0, 1.f, nullptr), DC_OK) << dc_last_error_message();
  return a;
}

// Largest |a - b| relative to the largest |b| (0 for identical vectors).
inline double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs((double)a[i] - (double)b[i]));
    den = std::max(den, std::fabs((double)b[i]));
  }
  return num / den;
}

}  // namespace stress

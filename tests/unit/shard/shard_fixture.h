// Fixtures for the tensor-parallel shard tests: tensors built in-process, written to an in-memory
// container, loaded through the public C API (whole or as a shard), with float64 references from
// dc::reconstruct_reference (the decoded ΔŴ, independent of every backend).
#pragma once

#include <cstring>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "unit/api/api_test_util.h"
#include "math/lowrank.h"
#include "math/svd.h"

namespace dc_test {

// One band list: (bits, rank) pairs, group size for the non-16-bit bands.
struct BandSpec {
  std::string label;
  std::vector<std::pair<uint32_t, uint32_t>> bands;
  std::vector<uint32_t> groups;  // per band (0 for 16-bit); empty = 128 for all
};

inline std::vector<dc::BandDesc> make_bands(const BandSpec& s) {
  std::vector<dc::BandDesc> out;
  uint32_t r = 0;
  for (size_t i = 0; i < s.bands.size(); ++i) {
    dc::BandDesc d;
    d.bits = s.bands[i].first;
    d.rank_begin = r;
    d.rank_end = r + s.bands[i].second;
    d.group_size = d.bits == 16 ? 0 : (s.groups.empty() ? 128 : s.groups[i]);
    r = d.rank_end;
    out.push_back(d);
  }
  return out;
}

enum class ActOrder { None, Gptq, BlockLocal };
inline const char* act_order_name(ActOrder a) {
  return a == ActOrder::None ? "plain" : a == ActOrder::Gptq ? "act-order" : "block-act-order";
}

// A Hessian E[x xᵀ] over `cols` inputs. Gptq: inputs of random scale, so the act-order sort
// scatters every shard's inputs over all of V̂. BlockLocal: a diagonal term that falls by block of
// `block` inputs dominates, so the sort (descending diagonal) permutes only within blocks.
inline std::vector<double> test_hessian(uint64_t cols, ActOrder a, uint64_t block, uint64_t seed) {
  const uint64_t ns = 2 * cols;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::uniform_real_distribution<double> ud(0.2, 3.0);
  std::vector<double> scale(cols), x(cols * ns), h(cols * cols, 0.0);
  for (auto& s : scale) s = ud(rng);
  for (uint64_t c = 0; c < cols; ++c)
    for (uint64_t k = 0; k < ns; ++k) x[c * ns + k] = scale[c] * nd(rng);
  for (uint64_t a1 = 0; a1 < cols; ++a1)
    for (uint64_t b1 = 0; b1 <= a1; ++b1) {
      double s = 0;
      for (uint64_t k = 0; k < ns; ++k) s += x[a1 * ns + k] * x[b1 * ns + k];
      h[a1 * cols + b1] = h[b1 * cols + a1] = s / ns;
    }
  if (a == ActOrder::BlockLocal) {
    const uint64_t nb = (cols + block - 1) / block;
    for (uint64_t c = 0; c < cols; ++c) h[c * cols + c] += 100.0 * (double)(nb - c / block);
  }
  return h;
}

// A tensor, its container image and its float64 ΔŴ.
struct ShardCase {
  std::string label;
  dc::PackedTensor t;
  std::vector<double> dw;  // rows × cols (1-D: rows)
  std::vector<uint8_t> image;
};

inline ShardCase finish_case(std::string label, dc::PackedTensor t) {
  ShardCase c;
  c.label = std::move(label);
  c.dw = dc::reconstruct_reference(t);
  c.image = image_of({t});
  c.t = std::move(t);
  return c;
}

inline ShardCase lowrank_case(uint64_t rows, uint64_t cols, const BandSpec& spec, ActOrder a, uint64_t seed) {
  const auto delta = long_tail_delta(rows, cols, seed);
  dc::LowRankOptions o;
  o.bands = make_bands(spec);
  std::vector<double> h;
  if (a != ActOrder::None) {
    h = test_hessian(cols, a, 128, seed + 17);
    o.quantizer = dc::Quantizer::Gptq;
    o.hessian = h.data();
    o.act_order = true;
  }
  dc::PackedTensor t = dc::compress_lowrank("layer.w", delta.data(), rows, cols, o);
  return finish_case(spec.label + "/" + act_order_name(a), std::move(t));
}

inline ShardCase bitdelta_case(uint64_t rows, uint64_t cols, uint64_t seed) {
  const auto delta = random_floats(rows * cols, seed, 0.01f);
  return finish_case("bitdelta", dc::compress_bitdelta("layer.w", delta.data(), rows, cols, DC_DTYPE_F16));
}

inline ShardCase dense_case(uint64_t rows, uint64_t cols, dc_dtype dt, uint64_t seed) {
  const auto values = random_floats(rows * cols, seed, 0.02f);
  return finish_case(std::string("dense-") + (dt == DC_DTYPE_F32 ? "f32" : dt == DC_DTYPE_F16 ? "f16" : "bf16"),
                     dc::make_dense(cols == 1 ? "layer.bias" : "layer.w", values.data(), rows, cols, dt));
}

// A shard request: by index/count (count > 0) or by explicit range.
inline dc_shard shard_of(dc_shard_split split, uint32_t index, uint32_t count) {
  return dc_shard{split, index, count, 0, 0};
}
inline dc_shard range_of(dc_shard_split split, uint64_t b, uint64_t e) { return dc_shard{split, 0, 1, b, e}; }

// The partitions of a dimension every test walks: even splits by index/count (1, 2, 3 uneven, 4,
// 8) and explicit ranges (unaligned cuts, group-aligned cuts, one-element and near-full shards).
struct Partition {
  std::string label;
  std::vector<dc_shard> shards;  // together they cover [0, dim) exactly once
};

inline std::vector<Partition> partitions(dc_shard_split split, uint64_t dim) {
  std::vector<Partition> out;
  for (uint32_t n : {1u, 2u, 3u, 4u, 8u}) {
    Partition p{"count " + std::to_string(n), {}};
    for (uint32_t i = 0; i < n; ++i) p.shards.push_back(shard_of(split, i, n));
    out.push_back(p);
  }
  auto cuts = [&](std::string label, std::vector<uint64_t> c) {
    Partition p{std::move(label), {}};
    for (size_t i = 0; i + 1 < c.size(); ++i) p.shards.push_back(range_of(split, c[i], c[i + 1]));
    out.push_back(p);
  };
  cuts("unaligned 0|5|37|130|" + std::to_string(dim), {0, 5, 37, 130, dim});
  if (dim > 256) cuts("aligned 0|128|256|" + std::to_string(dim), {0, 128, 256, dim});
  cuts("edges 0|1|" + std::to_string(dim - 1) + "|" + std::to_string(dim), {0, 1, dim - 1, dim});
  cuts("uneven 0|100|" + std::to_string(dim), {0, 100, dim});
  return out;
}

inline std::string describe(const dc_shard& s) {
  int split;  // read as an integer: tests store invalid values in the enum on purpose
  std::memcpy(&split, &s.split, sizeof split);
  const char* k = split == DC_SHARD_ROWS ? "rows" : split == DC_SHARD_COLS ? "cols" : split == 0 ? "none" : "invalid";
  if (s.end > s.begin) return std::string(k) + " [" + std::to_string(s.begin) + "," + std::to_string(s.end) + ")";
  return std::string(k) + " " + std::to_string(s.index) + "/" + std::to_string(s.count);
}

// Loads the case's tensor (whole when split is NONE) into ctx; fails the test on error.
inline DeltaPtr load_shard(dc_context* ctx, const ShardCase& c, const dc_shard& shard) {
  ContainerPtr cont = open_image(c.image);
  EXPECT_TRUE(cont) << dc_last_error_message();
  if (!cont) return nullptr;
  dc_load_options lo;
  dc_load_options_init(&lo);
  lo.shard = shard;
  dc_delta* d = nullptr;
  const dc_status s = dc_delta_load(&d, ctx, cont.get(), c.t.name.c_str(), &lo);
  EXPECT_EQ(s, DC_OK) << c.label << " " << describe(shard) << ": " << dc_last_error_message();
  return DeltaPtr(d);
}

inline dc_delta_info info_of(const dc_delta* d) {
  dc_delta_info info{};
  info.struct_size = sizeof info;
  EXPECT_EQ(dc_delta_get_info(d, &info), DC_OK) << dc_last_error_message();
  return info;
}

// y[m × ny] += x·ΔWᵀ for a loaded delta; x is read at x0 with row stride ldx (so a column shard
// reads its slice of the full activations in place).
inline std::vector<float> apply_f32(const dc_delta* d, uint64_t m, const float* x0, uint64_t ldx, uint64_t ny,
                                    const std::vector<float>& y0 = {}) {
  std::vector<float> y = y0.empty() ? std::vector<float>(m * ny, 0.f) : y0;
  dc_apply_params p;
  dc_apply_params_init(&p);
  p.m = m;
  p.x = x0;
  p.ldx = ldx;
  p.y = y.data();
  const dc_status s = dc_apply_delta_linear(d, &p);
  EXPECT_EQ(s, DC_OK) << dc_last_error_message();
  return y;
}

// Σ_c |x_ic|·|ΔŴ_oc| maximised over (i, o): the magnitude an fp32 dot product of this layer is
// rounded against. One input column contributes about scale/cols, so a tolerance of 1e-5·scale
// still catches a shard that drops or duplicates a single column.
inline double dot_scale(const ShardCase& c, const std::vector<float>& x, uint64_t m) {
  const uint64_t rows = c.t.rows, cols = c.t.cols;
  double s = 0;
  for (uint64_t i = 0; i < m; ++i)
    for (uint64_t o = 0; o < rows; ++o) {
      double a = 0;
      for (uint64_t k = 0; k < cols; ++k) a += std::fabs(x[i * cols + k]) * std::fabs(c.dw[o * cols + k]);
      s = std::max(s, a);
    }
  return s;
}

// float64 x[:, b:e]·ΔŴ[rb:re, b:e]ᵀ (m × (re − rb)).
inline std::vector<double> reference_apply(const ShardCase& c, const std::vector<float>& x, uint64_t m,
                                           uint64_t rb, uint64_t re, uint64_t b, uint64_t e) {
  const uint64_t cols = c.t.cols;
  std::vector<double> y(m * (re - rb), 0.0);
  for (uint64_t i = 0; i < m; ++i)
    for (uint64_t o = rb; o < re; ++o) {
      double a = 0;
      for (uint64_t k = b; k < e; ++k) a += (double)x[i * cols + k] * c.dw[o * cols + k];
      y[i * (re - rb) + (o - rb)] = a;
    }
  return y;
}

}  // namespace dc_test

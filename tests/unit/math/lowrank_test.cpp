// SVD, Delta-CoMe low-rank compression, BitDelta, dense storage and the float64 reference
// reconstruction.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/error.h"
#include "common/half.h"
#include "math/budget.h"
#include "math/lowrank.h"
#include "math/svd.h"
#include "test_util.h"

namespace {

double rel_frobenius(const std::vector<double>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return std::sqrt(num / den);
}

// U Σ Vᵀ with a long-tail spectrum σ_j = s0 · decay^j, plus iid noise: what a fine-tuning delta looks like.
std::vector<float> synthetic_delta(uint64_t m, uint64_t n, uint64_t seed, double decay, double noise) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd;
  const uint64_t r = std::min(m, n);
  std::vector<double> a(m * r), b(r * n);
  for (auto& v : a) v = nd(rng) / std::sqrt((double)m);
  for (auto& v : b) v = nd(rng) / std::sqrt((double)n);
  std::vector<float> d(m * n);
  for (uint64_t i = 0; i < m; ++i)
    for (uint64_t j = 0; j < n; ++j) {
      double s = noise * nd(rng);
      for (uint64_t k = 0; k < r; ++k) s += a[i * r + k] * std::pow(decay, (double)k) * b[k * n + j];
      d[i * n + j] = (float)(0.01 * s);
    }
  return d;
}

TEST(Svd, ReconstructsAndIsOrthonormal) {
  for (auto shape : {std::pair<uint64_t, uint64_t>{50, 30}, {30, 50}, {1, 7}, {64, 64}}) {
    const uint64_t m = shape.first, n = shape.second;
    const auto a = dc_test::random_floats(m * n, m * 100 + n);
    const dc::Svd s = dc::svd_topk(a.data(), m, n, 0);
    const uint64_t k = std::min(m, n);
    ASSERT_EQ(s.k, k);
    std::vector<double> rec(m * n, 0.0);
    for (uint64_t i = 0; i < m; ++i)
      for (uint64_t j = 0; j < n; ++j)
        for (uint64_t t = 0; t < k; ++t) rec[i * n + j] += (double)s.u[i * k + t] * s.s[t] * s.vt[t * n + j];
    EXPECT_LT(rel_frobenius(rec, a), 1e-5) << m << "x" << n;
    for (uint64_t t = 1; t < k; ++t) EXPECT_GE(s.s[t - 1], s.s[t]);
    for (uint64_t p = 0; p < k; ++p)
      for (uint64_t q = 0; q < k; ++q) {
        double du = 0, dv = 0;
        for (uint64_t i = 0; i < m; ++i) du += (double)s.u[i * k + p] * s.u[i * k + q];
        for (uint64_t j = 0; j < n; ++j) dv += (double)s.vt[p * n + j] * s.vt[q * n + j];
        EXPECT_NEAR(du, p == q, 1e-5);
        EXPECT_NEAR(dv, p == q, 1e-5);
      }
    // sign convention: the largest-magnitude entry of each u column is positive
    for (uint64_t t = 0; t < k; ++t) {
      float best = 0;
      for (uint64_t i = 0; i < m; ++i)
        if (std::fabs(s.u[i * k + t]) > std::fabs(best)) best = s.u[i * k + t];
      EXPECT_GT(best, 0.f);
    }
  }
}

TEST(Svd, TopKIsAPrefixOfTheFullSvd) {
  const auto a = dc_test::random_floats(40 * 25, 77);
  const dc::Svd full = dc::svd_topk(a.data(), 40, 25, 0), top = dc::svd_topk(a.data(), 40, 25, 6);
  ASSERT_EQ(top.k, 6u);
  for (uint64_t t = 0; t < 6; ++t) {
    EXPECT_EQ(top.s[t], full.s[t]);
    for (uint64_t j = 0; j < 25; ++j) EXPECT_EQ(top.vt[t * 25 + j], full.vt[t * 25 + j]);
    for (uint64_t i = 0; i < 40; ++i) EXPECT_EQ(top.u[i * 6 + t], full.u[i * 25 + t]);
  }
}

TEST(LowRank, SixteenBitFullRankIsNearlyExact) {
  const uint64_t m = 48, n = 40;
  const auto d = synthetic_delta(m, n, 1, 0.9, 0.01);
  dc::LowRankOptions o;
  o.bands = {{16, 0, 40, 0}};
  const auto t = dc::compress_lowrank("w", d.data(), m, n, o);
  EXPECT_EQ(t.kind, DC_KIND_LOWRANK);
  EXPECT_EQ(t.rank, 40u);
  EXPECT_EQ(t.sigma.size(), 40u);
  EXPECT_TRUE(t.bands[0].v_qparams.empty());
  EXPECT_LT(rel_frobenius(dc::reconstruct_reference(t), d), 2e-3);  // fp16 U and V
}

TEST(LowRank, RankZeroGivesZeroDelta) {
  const auto d = synthetic_delta(7, 5, 2, 0.5, 0.0);
  dc::LowRankOptions o;
  o.bands = dc::bands_for_shape(1, 1, dc::BandRecipe{});
  ASSERT_TRUE(o.bands.empty());
  const auto t = dc::compress_lowrank("tiny", d.data(), 7, 5, o);
  EXPECT_EQ(t.rank, 0u);
  EXPECT_TRUE(t.bands.empty());
  const auto r = dc::reconstruct_reference(t);
  ASSERT_EQ(r.size(), 35u);
  for (double v : r) EXPECT_EQ(v, 0.0);
  // 7×5 with the default recipe: a single 2-bit vector still works end to end
  o.bands = dc::bands_for_shape(7, 5, dc::BandRecipe{});
  const auto t1 = dc::compress_lowrank("tiny", d.data(), 7, 5, o);
  EXPECT_EQ(t1.rank, 1u);
  EXPECT_LT(rel_frobenius(dc::reconstruct_reference(t1), d), 1.0);
}

TEST(LowRank, ErrorSmallAndDecreasingWithAlpha) {
  const uint64_t m = 320, n = 256;
  const auto d = synthetic_delta(m, n, 3, 0.9, 0.0005);
  double prev = 1e30, first = 0;
  for (double alpha : {1.0 / 64, 1.0 / 32, 1.0 / 16, 1.0 / 8}) {
    dc::BandRecipe r;
    r.alpha = alpha;
    dc::LowRankOptions o;
    o.bands = dc::bands_for_shape(m, n, r);
    const auto t = dc::compress_lowrank("d", d.data(), m, n, o);
    const double e = rel_frobenius(dc::reconstruct_reference(t), d);
    std::printf("  alpha %.4f rank %u: relative error %.4f\n", alpha, t.rank, e);
    EXPECT_LT(e, prev);
    if (first == 0) first = e;
    prev = e;
  }
  // 3-bit RTN of a Gaussian-like singular vector pair costs ~0.3 of its energy: the floor here.
  EXPECT_LT(prev, 0.3);
  EXPECT_LT(prev, 0.6 * first);
}

// The compressed delta's output error on correlated calibration inputs: GPTQ (with act-order too)
// beats RTN, and the in_perm bookkeeping decodes V̂ to the right columns.
TEST(LowRank, GptqWithHessianBeatsRtnOnOutputs) {
  const uint64_t m = 256, n = 192, ns = 768;
  const auto d = synthetic_delta(m, n, 4, 0.96, 0.002);
  std::mt19937_64 rng(5);
  std::normal_distribution<double> nd;
  std::vector<double> a(n * 6), x(n * ns), h(n * n, 0.0);
  for (auto& v : a) v = nd(rng);
  for (uint64_t t = 0; t < ns; ++t) {
    double z[6];
    for (auto& v : z) v = nd(rng);
    for (uint64_t f = 0; f < n; ++f) {
      double s = 0.2 * nd(rng);
      for (int k = 0; k < 6; ++k) s += a[f * 6 + k] * z[k];
      x[f * ns + t] = s;
    }
  }
  for (uint64_t i = 0; i < n; ++i)
    for (uint64_t j = 0; j < n; ++j) {
      double s = 0;
      for (uint64_t t = 0; t < ns; ++t) s += x[i * ns + t] * x[j * ns + t];
      h[i * n + j] = s / ns;
    }
  auto out_err = [&](const dc::PackedTensor& t) {
    const auto r = dc::reconstruct_reference(t);
    double e = 0;
    std::vector<double> diff(n);
    for (uint64_t i = 0; i < m; ++i) {
      for (uint64_t f = 0; f < n; ++f) diff[f] = d[i * n + f] - r[i * n + f];
      for (uint64_t t = 0; t < ns; ++t) {
        double s = 0;
        for (uint64_t f = 0; f < n; ++f) s += diff[f] * x[f * ns + t];
        e += s * s;
      }
    }
    return e;
  };
  dc::BandRecipe rec;
  rec.alpha = 1.0 / 4;
  dc::LowRankOptions o;
  o.bands = dc::bands_for_shape(m, n, rec);
  const dc::Svd svd = dc::svd_topk(d.data(), m, n, 0);
  const double e_rtn = out_err(dc::compress_lowrank("d", d.data(), m, n, o, &svd));
  o.quantizer = dc::Quantizer::Gptq;
  o.hessian = h.data();
  const double e_gptq = out_err(dc::compress_lowrank("d", d.data(), m, n, o, &svd));
  o.act_order = true;
  const auto ta = dc::compress_lowrank("d", d.data(), m, n, o, &svd);
  EXPECT_EQ(ta.in_perm.size(), n);
  const double e_act = out_err(ta);
  // the output error of keeping the rank exactly (no quantization at all) bounds what GPTQ can reach
  std::printf("  lowrank ||(dW-dWhat)X||^2: GPTQ/RTN %.3f, act-order GPTQ/RTN %.3f\n", e_gptq / e_rtn, e_act / e_rtn);
  EXPECT_LT(e_gptq, e_rtn);
  EXPECT_LT(e_act, e_rtn);
  // without a Hessian GPTQ still runs (V: RTN-equivalent, U: weighted by Σ V̂ V̂ᵀ Σ) and is sane
  o.hessian = nullptr;
  o.act_order = false;
  const auto tn = dc::compress_lowrank("d", d.data(), m, n, o, &svd);
  EXPECT_TRUE(tn.in_perm.empty());
  EXPECT_LT(rel_frobenius(dc::reconstruct_reference(tn), d), 0.5);
}

TEST(LowRank, RejectsBadBands) {
  const auto d = synthetic_delta(16, 16, 6, 0.5, 0.0);
  dc::LowRankOptions o;
  o.bands = {{2, 1, 4, 128}};  // does not start at 0
  EXPECT_THROW(dc::compress_lowrank("x", d.data(), 16, 16, o), dc::Error);
  o.bands = {{2, 0, 17, 128}};  // beyond min(m, n)
  EXPECT_THROW(dc::compress_lowrank("x", d.data(), 16, 16, o), dc::Error);
  o.bands = {{5, 0, 4, 128}};
  EXPECT_THROW(dc::compress_lowrank("x", d.data(), 16, 16, o), dc::Error);
}

TEST(BitDelta, MatchesSignTimesMeanAbs) {
  const uint64_t m = 13, n = 70;
  auto d = dc_test::random_floats(m * n, 8, 0.01f);
  d[3] = 0.f;
  d[50] = -0.f;
  const auto t = dc::compress_bitdelta("b", d.data(), m, n, DC_DTYPE_BF16);
  double mean = 0;
  for (float v : d) mean += std::fabs((double)v);
  mean /= (double)(m * n);
  EXPECT_EQ(t.kind, DC_KIND_BITDELTA);
  EXPECT_EQ(t.dtype, DC_DTYPE_BF16);
  EXPECT_EQ(t.signs.size(), m * 3);
  EXPECT_NEAR(t.bitdelta_scale, mean, 1e-9);
  const auto r = dc::reconstruct_reference(t);
  for (uint64_t i = 0; i < m * n; ++i)
    ASSERT_EQ(r[i], (d[i] < 0 ? -1.0 : 1.0) * (double)t.bitdelta_scale) << i;  // Δ = 0 -> +scale
}

TEST(Dense, StoresEachDtype) {
  const auto v = dc_test::random_floats(3 * 5, 9, 100.f);
  for (dc_dtype dt : {DC_DTYPE_F32, DC_DTYPE_F16, DC_DTYPE_BF16}) {
    const auto t = dc::make_dense("n", v.data(), 3, 5, dt);
    EXPECT_EQ(t.kind, DC_KIND_DENSE);
    EXPECT_EQ(t.dense.size(), 15u * dc::dtype_size(dt));
    const auto r = dc::reconstruct_reference(t);
    for (int i = 0; i < 15; ++i) {
      const double want = dt == DC_DTYPE_F32   ? (double)v[i]
                          : dt == DC_DTYPE_F16 ? (double)dc::half_to_float(dc::float_to_half(v[i]))
                                               : (double)dc::bf16_to_float(dc::float_to_bf16(v[i]));
      EXPECT_EQ(r[i], want);
    }
  }
  const float one = 1.f;
  const auto t = dc::make_dense("one", &one, 1, 1, DC_DTYPE_F16);
  EXPECT_EQ(t.dense, (std::vector<uint8_t>{0x00, 0x3c}));  // little-endian fp16 1.0
}

}  // namespace

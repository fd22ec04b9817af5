// RTN and GPTQ group quantization: error bounds, exact zero, the stored qparams decoding to the
// quantizer's values, GPTQ's gain on correlated inputs, and act-order bookkeeping.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/error.h"
#include "common/half.h"
#include "math/quantize.h"
#include "test_util.h"

namespace {

// Decodes row i, position p of a QuantizedRows from its codes and qparams alone (float64).
double decode(const dc::QuantizedRows& q, uint64_t i, uint64_t p) {
  const uint32_t* row = &q.codes[i * dc_row_words(q.len, q.bits)];
  if (q.bits == 16) return dc::half_to_float((uint16_t)(row[p / 2] >> (16 * (p % 2))));
  const dc_qparam qp = q.qparams[i * dc_row_groups(q.len, q.group_size) + p / q.group_size];
  return (double)dc::half_to_float(qp.scale) * ((double)dc_unpack_code(row, p, q.bits) - dc::half_to_float(qp.zero));
}

TEST(Rtn, ErrorWithinHalfAScaleAndCodesDecodeToDequant) {
  const uint64_t nrows = 9, len = 300;  // groups of 128, 128, 44; len not a multiple of 32
  auto w = dc_test::random_floats(nrows * len, 1, 0.02f);
  for (uint64_t i = 0; i < nrows; ++i) w[i * len + 5 * i] = 0.f;  // exact zeros must survive
  for (uint32_t bits : {2u, 3u, 4u, 8u}) {
    const auto q = dc::quantize_rtn(w.data(), nrows, len, bits, 128);
    ASSERT_EQ(q.codes.size(), nrows * dc_row_words(len, bits));
    ASSERT_EQ(q.qparams.size(), nrows * 3);
    for (uint64_t i = 0; i < nrows; ++i) {
      for (uint64_t g = 0; g < 3; ++g) {
        const dc_qparam qp = q.qparams[i * 3 + g];
        const float s = dc::half_to_float(qp.scale), z = dc::half_to_float(qp.zero);
        ASSERT_GE(s, std::ldexp(1.f, -14));  // a normal fp16
        ASSERT_EQ(z, std::nearbyint(z));
        ASSERT_GE(z, 0.f);
        ASSERT_LE(z, (float)((1u << bits) - 1));
        // the scale is no wider than needed: one fp16 step above (xmax - xmin) / maxq at most
        float lo = 0, hi = 0;
        for (uint64_t c = g * 128; c < std::min<uint64_t>(len, g * 128 + 128); ++c)
          lo = std::min(lo, w[i * len + c]), hi = std::max(hi, w[i * len + c]);
        ASSERT_LE((double)s, (hi - lo) / ((1u << bits) - 1) * (1 + 1.0 / 1024) + 1e-12);
      }
      for (uint64_t c = 0; c < len; ++c) {
        const double x = w[i * len + c], d = decode(q, i, c);
        ASSERT_EQ(d, (double)q.dequant[i * len + c]);
        const float s = dc::half_to_float(q.qparams[i * 3 + c / 128].scale);
        ASSERT_LE(std::fabs(x - d), s / 2 * (1 + 1e-6)) << bits << " bits at " << i << "," << c;
        if (x == 0) {
          ASSERT_EQ(d, 0.0);
        }
      }
    }
  }
}

TEST(Rtn, AllZeroAndTinyGroups) {
  std::vector<float> w(2 * 64, 0.f);
  for (int c = 0; c < 64; ++c) w[64 + c] = 1e-9f * (float)(c - 20);  // far below the smallest scale
  const auto q = dc::quantize_rtn(w.data(), 2, 64, 2, 32);
  for (int i = 0; i < 2; ++i)
    for (int c = 0; c < 64; ++c) {
      EXPECT_EQ(q.dequant[i * 64 + c], 0.f);
      EXPECT_EQ(decode(q, i, c), 0.0);
    }
  for (const auto& p : q.qparams) EXPECT_GE(dc::half_to_float(p.scale), std::ldexp(1.f, -14));
}

TEST(Rtn, SixteenBitsStoresHalves) {
  const uint64_t len = 45;
  auto w = dc_test::random_floats(3 * len, 2, 3.f);
  const auto q = dc::quantize_rtn(w.data(), 3, len, 16, 128);
  EXPECT_TRUE(q.qparams.empty());
  EXPECT_EQ(q.group_size, 0u);
  ASSERT_EQ(q.codes.size(), 3 * 32u);  // 2 blocks of 32 halves = 32 words per row
  for (uint64_t i = 0; i < 3 * len; ++i) {
    const float want = dc::half_to_float(dc::float_to_half(w[i]));
    EXPECT_EQ(q.dequant[i], want);
    EXPECT_EQ(decode(q, i / len, i % len), (double)want);
  }
}

TEST(Rtn, RejectsBadArguments) {
  std::vector<float> w(64, 1.f);
  EXPECT_THROW(dc::quantize_rtn(w.data(), 1, 64, 5, 128), dc::Error);
  EXPECT_THROW(dc::quantize_rtn(w.data(), 1, 64, 2, 48), dc::Error);
  w[3] = NAN;
  EXPECT_THROW(dc::quantize_rtn(w.data(), 1, 64, 2, 32), dc::Error);
}

// Inputs with strongly correlated features: x = A z with a few latent factors plus small noise.
struct Calib {
  uint64_t len, n;
  std::vector<double> x;  // len × n
  std::vector<double> h;  // len × len, X Xᵀ / n
};

Calib correlated_inputs(uint64_t len, uint64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd;
  const uint64_t factors = 8;
  std::vector<double> a(len * factors);
  for (auto& v : a) v = nd(rng);
  Calib c{len, n, std::vector<double>(len * n), std::vector<double>(len * len, 0.0)};
  for (uint64_t t = 0; t < n; ++t) {
    double z[factors];
    for (auto& v : z) v = nd(rng);
    for (uint64_t f = 0; f < len; ++f) {
      double s = 0.1 * nd(rng) * (1 + (double)(f % 7));  // feature scales vary
      for (uint64_t k = 0; k < factors; ++k) s += a[f * factors + k] * z[k];
      c.x[f * n + t] = s;
    }
  }
  for (uint64_t i = 0; i < len; ++i)
    for (uint64_t j = 0; j < len; ++j) {
      double s = 0;
      for (uint64_t t = 0; t < n; ++t) s += c.x[i * n + t] * c.x[j * n + t];
      c.h[i * len + j] = s / (double)n;
    }
  return c;
}

// ‖(W − Ŵ) X‖_F² with Ŵ in original column order (perm maps stored position p -> column perm[p]).
double output_error(const std::vector<float>& w, const dc::QuantizedRows& q, const Calib& c,
                    const std::vector<uint32_t>& perm = {}) {
  double total = 0;
  std::vector<double> d(c.len);
  for (uint64_t i = 0; i < q.nrows; ++i) {
    for (uint64_t p = 0; p < c.len; ++p) {
      const uint64_t col = perm.empty() ? p : perm[p];
      d[col] = (double)w[i * c.len + col] - q.dequant[i * c.len + p];
    }
    for (uint64_t t = 0; t < c.n; ++t) {
      double s = 0;
      for (uint64_t f = 0; f < c.len; ++f) s += d[f] * c.x[f * c.n + t];
      total += s * s;
    }
  }
  return total;
}

TEST(Gptq, BeatsRtnOnCorrelatedInputs) {
  const uint64_t nrows = 24, len = 256;
  const Calib c = correlated_inputs(len, 1024, 5);
  const auto w = dc_test::random_floats(nrows * len, 6, 0.05f);
  for (uint32_t bits : {2u, 3u, 4u}) {
    const auto rtn = dc::quantize_rtn(w.data(), nrows, len, bits, 128);
    const auto gq = dc::quantize_gptq(w.data(), nrows, len, c.h.data(), bits, 128, 0.01);
    const auto perm = dc::act_order_permutation(c.h.data(), len);
    const auto gqa = dc::quantize_gptq(w.data(), nrows, len, c.h.data(), bits, 128, 0.01, perm);
    const double e_rtn = output_error(w, rtn, c), e_g = output_error(w, gq, c), e_ga = output_error(w, gqa, c, perm);
    std::printf("  %u bits: ||(W-What)X||^2 GPTQ/RTN = %.3f, act-order GPTQ/RTN = %.3f\n", bits, e_g / e_rtn, e_ga / e_rtn);
    EXPECT_LT(e_g, 0.7 * e_rtn) << bits;
    EXPECT_LT(e_ga, 0.7 * e_rtn) << bits;
    for (uint64_t i = 0; i < nrows; ++i)
      for (uint64_t p = 0; p < len; ++p) ASSERT_EQ(decode(gq, i, p), (double)gq.dequant[i * len + p]);
  }
}

TEST(Gptq, IdentityHessianEqualsRtn) {
  const uint64_t nrows = 7, len = 200;
  const auto w = dc_test::random_floats(nrows * len, 8, 0.1f);
  std::vector<double> eye(len * len, 0.0);
  for (uint64_t i = 0; i < len; ++i) eye[i * len + i] = 1;
  for (uint32_t bits : {2u, 3u, 8u}) {
    for (uint32_t g : {32u, 96u, 128u, 256u}) {
      const auto rtn = dc::quantize_rtn(w.data(), nrows, len, bits, g);
      const auto gq = dc::quantize_gptq(w.data(), nrows, len, eye.data(), bits, g, 0.01);
      ASSERT_EQ(gq.codes, rtn.codes) << bits << " " << g;
      ASSERT_EQ(gq.dequant, rtn.dequant);
    }
  }
}

// With a diagonal Hessian there is no error feedback, so act-order GPTQ is RTN of the permuted rows:
// an exact check that groups are formed, and codes stored, in permuted order.
TEST(Gptq, ActOrderStoresCodesInPermutedOrder) {
  const uint64_t nrows = 5, len = 160;
  const auto w = dc_test::random_floats(nrows * len, 9, 0.1f);
  std::vector<double> h(len * len, 0.0);
  std::mt19937_64 rng(10);
  for (uint64_t i = 0; i < len; ++i) h[i * len + i] = 0.5 + (double)(rng() % 1000);
  const auto perm = dc::act_order_permutation(h.data(), len);
  for (uint64_t p = 1; p < len; ++p) ASSERT_GE(h[perm[p - 1] * len + perm[p - 1]], h[perm[p] * len + perm[p]]);
  std::vector<float> wp(nrows * len);
  for (uint64_t i = 0; i < nrows; ++i)
    for (uint64_t p = 0; p < len; ++p) wp[i * len + p] = w[i * len + perm[p]];
  const auto rtn = dc::quantize_rtn(wp.data(), nrows, len, 3, 64);
  const auto gq = dc::quantize_gptq(w.data(), nrows, len, h.data(), 3, 64, 0.01, perm);
  EXPECT_EQ(gq.codes, rtn.codes);
  EXPECT_EQ(gq.dequant, rtn.dequant);
  // and each decoded position is its original column's value to within half a scale
  for (uint64_t i = 0; i < nrows; ++i)
    for (uint64_t p = 0; p < len; ++p) {
      const float s = dc::half_to_float(gq.qparams[i * 3 + p / 64].scale);
      ASSERT_LE(std::fabs(decode(gq, i, p) - w[i * len + perm[p]]), s / 2 * (1 + 1e-6));
    }
  // 16 bits with a permutation: exact halves in permuted order
  const auto g16 = dc::quantize_gptq(w.data(), nrows, len, h.data(), 16, 0, 0.01, perm);
  for (uint64_t i = 0; i < nrows; ++i)
    for (uint64_t p = 0; p < len; ++p)
      ASSERT_EQ(decode(g16, i, p), (double)dc::half_to_float(dc::float_to_half(w[i * len + perm[p]])));
}

TEST(Gptq, StableActOrderOnTies) {
  std::vector<double> h = {2, 0, 0, 0, 0, 5, 0, 0, 0, 0, 2, 0, 0, 0, 0, 5};
  EXPECT_EQ(dc::act_order_permutation(h.data(), 4), (std::vector<uint32_t>{1, 3, 0, 2}));
}

TEST(Gptq, DeadInputsAreZeroed) {
  const uint64_t nrows = 4, len = 64;
  const Calib c = correlated_inputs(len, 256, 12);
  std::vector<double> h = c.h;
  for (uint64_t j = 0; j < len; ++j) h[10 * len + j] = h[j * len + 10] = 0;  // input 10 never active
  const auto w = dc_test::random_floats(nrows * len, 13, 0.1f);
  const auto q = dc::quantize_gptq(w.data(), nrows, len, h.data(), 4, 32, 0.01);
  for (uint64_t i = 0; i < nrows; ++i) EXPECT_EQ(q.dequant[i * len + 10], 0.f);
}

TEST(Gptq, RejectsBadPermutation) {
  std::vector<float> w(64, 1.f);
  std::vector<double> h(64 * 64, 0.0);
  for (int i = 0; i < 64; ++i) h[i * 64 + i] = 1;
  std::vector<uint32_t> perm(64, 0);
  EXPECT_THROW(dc::quantize_gptq(w.data(), 1, 64, h.data(), 2, 32, 0.01, perm), dc::Error);
}

}  // namespace

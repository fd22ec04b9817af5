// Code packing (pack_layout.h) and the fp16/bf16 conversions (half.h), against bit-level and float64
// references.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/half.h"
#include "common/pack_layout.h"

namespace {

TEST(Pack, RoundTripRandomCodesAllWidths) {
  std::mt19937_64 rng(42);
  for (uint32_t bits : {1u, 2u, 3u, 4u, 8u}) {
    for (uint64_t len : {1ull, 7ull, 31ull, 32ull, 33ull, 100ull, 257ull, 1000ull}) {
      const uint64_t words = dc_row_words(len, bits);
      ASSERT_EQ(words, (len + 31) / 32 * bits);
      std::vector<uint32_t> row(words + 1, 0u);  // one guard word
      std::vector<uint32_t> codes(len);
      for (auto& c : codes) c = (uint32_t)(rng() & ((1u << bits) - 1u));
      for (uint64_t i = 0; i < len; ++i) dc_pack_code(row.data(), i, bits, codes[i]);
      for (uint64_t i = 0; i < len; ++i) ASSERT_EQ(dc_unpack_code(row.data(), i, bits), codes[i]) << bits << " " << i;
      // padding codes of the last block stay 0, and nothing is written past the row
      for (uint64_t i = len; i < (len + 31) / 32 * 32; ++i) ASSERT_EQ(dc_unpack_code(row.data(), i, bits), 0u);
      ASSERT_EQ(row[words], 0u);
    }
  }
}

// The layout of pack_layout.h written out bit by bit, independently of dc_pack_code.
TEST(Pack, BitPositionsMatchTheDocumentedLayout) {
  for (uint32_t bits : {1u, 2u, 3u, 4u, 8u}) {
    for (uint32_t i = 0; i < 64; ++i) {
      std::vector<uint32_t> row(2 * bits, 0u), want(2 * bits, 0u);
      const uint32_t code = (1u << bits) - 1u;  // all ones shows every bit's position
      dc_pack_code(row.data(), i, bits, code);
      uint32_t* w = want.data() + (i / 32) * bits;
      const uint32_t j = i % 32;
      if (bits == 3) {
        w[j / 16] |= 3u << (2 * (j % 16));
        w[2] |= 1u << j;
      } else {
        for (uint32_t b = 0; b < bits; ++b) {
          const uint32_t bitpos = j * bits + b;  // codes fill words LSB first
          w[bitpos / 32] |= 1u << (bitpos % 32);
        }
      }
      ASSERT_EQ(row, want) << "bits " << bits << " code " << i;
    }
  }
}

TEST(Half, AllHalvesRoundTripThroughFloat) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = dc::half_to_float((uint16_t)h);
    const bool nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff) != 0;
    if (nan) {
      ASSERT_TRUE(std::isnan(f));
      const uint16_t back = dc::float_to_half(f);
      ASSERT_TRUE(((back >> 10) & 0x1f) == 0x1f && (back & 0x3ff) != 0);
      continue;
    }
    ASSERT_EQ(dc::float_to_half(f), (uint16_t)h) << h;
  }
}

TEST(Half, DecodesKnownValues) {
  EXPECT_EQ(dc::half_to_float(0x3c00), 1.0f);
  EXPECT_EQ(dc::half_to_float(0xc000), -2.0f);
  EXPECT_EQ(dc::half_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(dc::half_to_float(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(dc::half_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(dc::half_to_float(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::isinf(dc::half_to_float(0x7c00)));
}

// Round to nearest even onto the fp16 grid, computed in float64.
double reference_half(float f) {
  const double a = std::fabs((double)f);
  if (a == 0) return f;
  int e = std::ilogb(a);
  if (e < -14) e = -14;  // subnormal spacing below 2^-14
  const double ulp = std::ldexp(1.0, e - 10);
  const double v = std::nearbyint(a / ulp) * ulp;  // a/ulp is exact: a power-of-two scaling
  const double r = v >= 65520.0 ? INFINITY : v;
  return f < 0 ? -r : r;
}

TEST(Half, RandomFloatsRoundToNearestEven) {
  std::mt19937_64 rng(7);
  for (int it = 0; it < 2000000; ++it) {
    float f;
    if (it % 2) {
      const uint32_t u = (uint32_t)rng();
      std::memcpy(&f, &u, 4);
      if (!std::isfinite(f)) continue;
      if (std::fabs(f) > 1e6f || std::fabs(f) < 1e-9f) f = std::ldexp(std::fabs(f) > 1 ? 1.3f : 0.7f, (int)(rng() % 50) - 30);
    } else {
      // exact ties and near-ties: a half plus half an ulp, +-1 float ulp
      const uint16_t h = (uint16_t)(rng() % 0x7bff);
      const double lo = dc::half_to_float(h), hi = dc::half_to_float((uint16_t)(h + 1));
      f = (float)((lo + hi) / 2);
      const int nudge = (int)(rng() % 3) - 1;
      f = std::nextafter(f, nudge < 0 ? -INFINITY : nudge > 0 ? INFINITY : f);
      if (rng() & 1) f = -f;
    }
    const double want = reference_half(f);
    const double got = dc::half_to_float(dc::float_to_half(f));
    ASSERT_EQ(got, want) << "f = " << f;
  }
  EXPECT_TRUE(std::isinf(dc::half_to_float(dc::float_to_half(65520.f))));
  EXPECT_EQ(dc::half_to_float(dc::float_to_half(65519.f)), 65504.f);
  EXPECT_EQ(dc::float_to_half(std::ldexp(1.f, -25)), 0);       // tie at half the smallest subnormal: even (0)
  EXPECT_EQ(dc::float_to_half(std::ldexp(1.5f, -25)), 1);      // above it: smallest subnormal
}

TEST(Bf16, RoundTripAndRounding) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = dc::bf16_to_float((uint16_t)b);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(dc::bf16_to_float(dc::float_to_bf16(f))));
      continue;
    }
    ASSERT_EQ(dc::float_to_bf16(f), (uint16_t)b);
  }
  std::mt19937_64 rng(3);
  std::normal_distribution<float> nd(0.f, 10.f);
  for (int it = 0; it < 200000; ++it) {
    const float f = nd(rng);
    // float64 reference: nearest-even on an 8-bit mantissa grid
    const double a = std::fabs((double)f);
    const double ulp = std::ldexp(1.0, std::ilogb(a) - 7);
    double want = std::nearbyint(a / ulp) * ulp;
    if (f < 0) want = -want;
    ASSERT_EQ((double)dc::bf16_to_float(dc::float_to_bf16(f)), want) << f;
  }
}

}  // namespace

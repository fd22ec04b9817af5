// Bit budgets and the default band layout: the exact numbers of the Delta-CoMe recipe.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/error.h"
#include "math/budget.h"

namespace {

using dc::BandDesc;

void expect_band(const BandDesc& b, uint32_t bits, uint32_t begin, uint32_t end, uint32_t group) {
  EXPECT_EQ(b.bits, bits);
  EXPECT_EQ(b.rank_begin, begin);
  EXPECT_EQ(b.rank_end, end);
  EXPECT_EQ(b.group_size, group);
}

TEST(Budget, BitRanksFormula) {
  EXPECT_DOUBLE_EQ(dc::budget_bit_ranks(4096, 4096, 1.0 / 16), 2048.0);
  EXPECT_NEAR(dc::budget_bit_ranks(11008, 4096, 1.0 / 16), 11008.0 * 4096 / 15104, 1e-9);
  EXPECT_NEAR(dc::budget_bit_ranks(11008, 4096, 1.0 / 16), 2985.2203, 1e-4);
  EXPECT_DOUBLE_EQ(dc::budget_bit_ranks(1024, 4096, 1.0 / 16), 819.2);
  EXPECT_DOUBLE_EQ(dc::budget_bit_ranks(4096, 4096, 1.0 / 32), 1024.0);
  EXPECT_EQ(dc::budget_bit_ranks(0, 4096, 1.0 / 16), 0.0);
}

TEST(Budget, Square4096IsTheReferenceRecipe) {
  const auto bands = dc::bands_for_shape(4096, 4096, dc::BandRecipe{});
  ASSERT_EQ(bands.size(), 3u);
  expect_band(bands[0], 8, 0, 2, 128);
  expect_band(bands[1], 3, 2, 34, 128);
  expect_band(bands[2], 2, 34, 1002, 128);
  EXPECT_EQ(dc::band_bit_ranks(bands), 2048u);
}

TEST(Budget, MlpAndGqaShapes) {
  auto mlp = dc::bands_for_shape(11008, 4096, dc::BandRecipe{});
  ASSERT_EQ(mlp.size(), 3u);
  expect_band(mlp[2], 2, 34, 34 + 1436, 128);  // floor((2985.22 - 112) / 2)
  EXPECT_EQ(dc::band_bit_ranks(mlp), 112u + 2 * 1436);
  auto down = dc::bands_for_shape(4096, 11008, dc::BandRecipe{});  // transposed shape, same budget
  EXPECT_EQ(down[2].rank_end, 34u + 1436);
  auto kv = dc::bands_for_shape(1024, 4096, dc::BandRecipe{});
  ASSERT_EQ(kv.size(), 3u);
  expect_band(kv[2], 2, 34, 34 + 353, 128);  // floor((819.2 - 112) / 2)
}

TEST(Budget, TinyShapesDegradeGracefully) {
  // 7×5: budget 35/12 = 2.92 bit-ranks: no room for 8- or 3-bit vectors, one 2-bit vector.
  auto b = dc::bands_for_shape(7, 5, dc::BandRecipe{});
  ASSERT_EQ(b.size(), 1u);
  expect_band(b[0], 2, 0, 1, 128);
  EXPECT_TRUE(dc::bands_for_shape(1, 1, dc::BandRecipe{}).empty());  // budget 0.5: rank 0
  EXPECT_TRUE(dc::bands_for_shape(0, 10, dc::BandRecipe{}).empty());
  // 40×40: budget 20: both 8-bit vectors (4 left), one 3-bit (1 left), no room for a 2-bit one.
  b = dc::bands_for_shape(40, 40, dc::BandRecipe{});
  ASSERT_EQ(b.size(), 2u);
  expect_band(b[0], 8, 0, 2, 128);
  expect_band(b[1], 3, 2, 3, 128);
  EXPECT_EQ(dc::band_bit_ranks(b), 19u);
  // 24×24: budget 12: one 8-bit vector (the second does not fit), then one 3-bit, then none at 2
  // (1 bit-rank left): a band cut short leaves its remainder to the narrower ones.
  b = dc::bands_for_shape(24, 24, dc::BandRecipe{});
  ASSERT_EQ(b.size(), 2u);
  expect_band(b[0], 8, 0, 1, 128);
  expect_band(b[1], 3, 1, 2, 128);
}

TEST(Budget, RankCappedByTheSmallerDimension) {
  dc::BandRecipe r;
  r.alpha = 1.0;  // budget 512 for 64×64, far more than 64 vectors can use
  auto b = dc::bands_for_shape(64, 64, r);
  ASSERT_EQ(b.size(), 3u);
  expect_band(b[2], 2, 34, 64, 128);
}

TEST(Budget, LowRankFp16Scheme) {
  dc::BandRecipe r;
  r.leading.clear();
  r.rest_bits = 16;
  auto b = dc::bands_for_shape(4096, 4096, r);
  ASSERT_EQ(b.size(), 1u);
  expect_band(b[0], 16, 0, 128, 0);
}

TEST(Budget, NeverExceededOverRandomShapes) {
  std::mt19937_64 rng(11);
  for (int it = 0; it < 20000; ++it) {
    const uint64_t m = 1 + rng() % 20000, n = 1 + rng() % 20000;
    dc::BandRecipe r;
    r.alpha = std::ldexp(1.0, -(int)(rng() % 7));  // 1 .. 1/64
    if (it % 3 == 1) r.leading = {{4, 1 + (uint32_t)(rng() % 10)}};
    if (it % 5 == 2) r.rest_bits = 3;
    const double budget = dc::budget_bit_ranks(m, n, r.alpha);
    const auto bands = dc::bands_for_shape(m, n, r);
    uint64_t next = 0;
    for (const auto& b : bands) {
      ASSERT_EQ(b.rank_begin, next);
      ASSERT_GT(b.rank_end, b.rank_begin);
      next = b.rank_end;
    }
    ASSERT_LE(next, std::min(m, n));
    const double used = (double)dc::band_bit_ranks(bands);
    ASSERT_LE(used, budget + 1e-6) << m << "x" << n << " alpha " << r.alpha;
    // maximal: either the rank is capped or another rest-width vector would not fit
    if (next < std::min(m, n)) {
      ASSERT_GT(used + r.rest_bits, budget - 1e-6) << m << "x" << n;
    }
  }
}

TEST(Budget, RejectsBadRecipes) {
  dc::BandRecipe r;
  r.rest_bits = 5;
  EXPECT_THROW(dc::bands_for_shape(64, 64, r), dc::Error);
  r = dc::BandRecipe{};
  r.group_size = 100;
  EXPECT_THROW(dc::bands_for_shape(64, 64, r), dc::Error);
}

}  // namespace

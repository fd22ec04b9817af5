// Bit budgets and the default band layout (Delta-CoMe §3 and run.sh: 8-bit ×2, 3-bit ×32, 2-bit for
// the rest of α·16·m·n/(m+n)).
#include "math/budget.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace dc {

namespace {

// The budget is a real number; floor() of an exactly-integral value computed with a rounding error
// just below the integer would lose one singular vector. A relative slack far below one bit·rank
// absorbs that without ever allowing a whole extra vector.
uint64_t floor_count(double bit_ranks_left, uint32_t bits) {
  if (bit_ranks_left <= 0) return 0;
  const double q = bit_ranks_left / bits;
  return (uint64_t)std::floor(q * (1 + 1e-12) + 1e-9);
}

void check_bits(uint32_t bits, const char* what) {
  DC_CHECK(dc_valid_band_bits(bits), DC_ERR_INVALID_ARGUMENT,
           "band recipe: %s bit width %u is not one of 2, 3, 4, 8, 16", what, bits);
}

}  // namespace

double budget_bit_ranks(uint64_t rows, uint64_t cols, double alpha) {
  DC_CHECK(std::isfinite(alpha) && alpha >= 0, DC_ERR_INVALID_ARGUMENT,
           "budget: alpha %g must be a finite number >= 0", alpha);
  if (rows == 0 || cols == 0) return 0;
  const double m = (double)rows, n = (double)cols;
  return alpha * 16.0 * (m * n / (m + n));
}

std::vector<BandDesc> bands_for_shape(uint64_t rows, uint64_t cols, const BandRecipe& recipe) {
  const bool has_quantized = recipe.rest_bits != 0 && recipe.rest_bits != 16;
  bool any_quantized = has_quantized;
  for (const auto& lb : recipe.leading) {
    check_bits(lb.first, "leading");
    if (lb.first != 16) any_quantized = true;
  }
  if (recipe.rest_bits != 0) check_bits(recipe.rest_bits, "rest");
  if (any_quantized)
    DC_CHECK(recipe.group_size >= DC_CODE_BLOCK && recipe.group_size % DC_CODE_BLOCK == 0 &&
                 recipe.group_size <= DC_MAX_GROUP,
             DC_ERR_INVALID_ARGUMENT, "band recipe: group size %u must be a multiple of %u in [%u, %u]",
             recipe.group_size, DC_CODE_BLOCK, DC_CODE_BLOCK, DC_MAX_GROUP);

  const double budget = budget_bit_ranks(rows, cols, recipe.alpha);
  const uint64_t max_rank = std::min<uint64_t>(std::min(rows, cols), UINT32_MAX);
  double left = budget;
  uint64_t used = 0;
  std::vector<BandDesc> bands;

  auto add = [&](uint32_t bits, uint64_t want) {
    const uint64_t n = std::min({want, floor_count(left, bits), max_rank - used});
    if (n == 0) return;
    if (!bands.empty() && bands.back().bits == bits) {  // e.g. rest_bits equal to the last leading width
      bands.back().rank_end += (uint32_t)n;
    } else {
      BandDesc d;
      d.bits = bits;
      d.rank_begin = (uint32_t)used;
      d.rank_end = (uint32_t)(used + n);
      d.group_size = bits == 16 ? 0 : recipe.group_size;
      bands.push_back(d);
    }
    used += n;
    left -= (double)n * bits;
  };

  // Leading bands in order; one that does not fit whole is cut short, and what its missing vectors
  // would have cost stays available to the narrower bands after it.
  for (const auto& lb : recipe.leading) add(lb.first, lb.second);
  if (recipe.rest_bits != 0) add(recipe.rest_bits, UINT64_MAX);
  return bands;
}

uint64_t band_bit_ranks(const std::vector<BandDesc>& bands) {
  uint64_t total = 0;
  for (const auto& b : bands) total += (uint64_t)b.bits * b.rank();
  return total;
}

}  // namespace dc

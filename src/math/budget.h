// Bit budgets and band layouts (Delta-CoMe §3): Σ bits·rank ≤ α·16·m·n/(m+n) for an m×n layer.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "common/packed_tensor.h"

namespace dc {

struct BandRecipe {
  double alpha = 1.0 / 16;  // fraction of the fp16 size
  // Leading bands: (bits, number of singular vectors), in order of descending σ.
  std::vector<std::pair<uint32_t, uint32_t>> leading = {{8, 2}, {3, 32}};
  uint32_t rest_bits = 2;   // the rest of the budget at this width; the tail is dropped
  uint32_t group_size = 128;
};

// α·16·m·n/(m+n): the Σ bits·rank the layer may spend.
double budget_bit_ranks(uint64_t rows, uint64_t cols, double alpha);

// Bands for one layer from its shape: the leading bands as far as the budget and min(m, n) allow,
// then rest_bits for what remains. Never exceeds the budget; bands are contiguous from rank 0.
std::vector<BandDesc> bands_for_shape(uint64_t rows, uint64_t cols, const BandRecipe& recipe);

// Σ bits·rank of a band list.
uint64_t band_bit_ranks(const std::vector<BandDesc>& bands);

}  // namespace dc

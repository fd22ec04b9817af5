// The asymmetric min/max grid shared by RTN and GPTQ (GPTQ-for-LLaMa's Quantizer.find_params with
// perchannel groups, asymmetric, mse off), with the parameters rounded to fp16 before any code is
// chosen so that the stored (scale, zero) reproduce the quantizer's values bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/half.h"
#include "common/pack_layout.h"

namespace dc {

struct QuantGrid {
  dc_qparam stored{};    // fp16 bits as written to the file
  float scale = 0.f;     // half_to_float(stored.scale)
  float zero = 0.f;      // half_to_float(stored.zero), an integer
  uint32_t maxq = 0;     // 2^bits - 1

  // The code for x: clamp(round(x / scale) + zero, 0, maxq), ties to even like torch.round.
  uint32_t code(double x) const {
    const double q = std::nearbyint(x / (double)scale) + (double)zero;
    return (uint32_t)std::min<double>(std::max<double>(q, 0.0), (double)maxq);
  }
  // What a decoder computes from the stored fp16 values: scale·(code − zero) in float. Exact: an
  // 11-bit fp16 mantissa times an integer below 2^8 fits a float's 24 bits.
  float value(uint32_t code) const { return scale * ((float)code - zero); }
};

// Smallest positive normal fp16 (2^-14): scales below it are bumped up to it.
constexpr uint16_t kMinNormalHalf = 0x0400;
constexpr uint16_t kMaxFiniteHalf = 0x7bff;

// fp16 bits of the smallest half >= s (s > 0), clamped to [2^-14, 65504]. Rounding the scale *up*
// keeps the grid wide enough to hold [xmin, xmax], so no element is clipped: |x − x̂| <= scale/2.
inline uint16_t half_round_up_scale(double s) {
  if (!(s > 0)) return kMinNormalHalf;
  if (s >= 65504.0) return kMaxFiniteHalf;
  uint16_t h = float_to_half((float)s);
  if ((double)half_to_float(h) < s && h < kMaxFiniteHalf) ++h;  // positive halves order like integers
  return std::max(h, kMinNormalHalf);
}

// Grid for a group whose smallest and largest elements are lo and hi. The range is widened to
// contain 0 (so 0 is always exactly representable: zero is an integer code); an all-zero group
// gets GPTQ's [-1, 1] so that later error feedback into it still has a usable grid.
inline QuantGrid make_grid(double lo, double hi, uint32_t bits) {
  QuantGrid g;
  g.maxq = (1u << bits) - 1u;
  double xmin = std::min(0.0, lo), xmax = std::max(0.0, hi);
  if (xmin == xmax) { xmin = -1; xmax = 1; }
  g.stored.scale = half_round_up_scale((xmax - xmin) / g.maxq);
  g.scale = half_to_float(g.stored.scale);
  double z = std::nearbyint(-xmin / (double)g.scale);
  z = std::min<double>(std::max<double>(z, 0.0), (double)g.maxq);
  g.stored.zero = float_to_half((float)z);  // exact: integers <= 255 are fp16 values
  g.zero = (float)z;
  return g;
}

// Grid from the stored fp16 parameters (the decoder's view).
inline QuantGrid grid_from_stored(dc_qparam p, uint32_t bits) {
  QuantGrid g;
  g.maxq = (1u << bits) - 1u;
  g.stored = p;
  g.scale = half_to_float(p.scale);
  g.zero = half_to_float(p.zero);
  return g;
}

// 16-bit "codes": the fp16 value itself, two per word, little-endian halves.
inline void pack_half(uint32_t* row, uint64_t i, uint16_t h) {
  row[i / 2] |= (uint32_t)h << (16 * (i % 2));
}
inline uint16_t unpack_half(const uint32_t* row, uint64_t i) {
  return (uint16_t)(row[i / 2] >> (16 * (i % 2)));
}

}  // namespace dc

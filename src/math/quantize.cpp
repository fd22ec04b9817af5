// Round-to-nearest group quantization into the packed layout of common/pack_layout.h, and the
// act-order permutation. GPTQ is in gptq.cpp; both share the grid of quant_grid.h.
#include "math/quantize.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/checked.h"
#include "common/error.h"
#include "math/quant_grid.h"
#include "math/quantize_internal.h"

namespace dc {

void check_quant_args(uint64_t nrows, uint64_t len, uint32_t bits, uint32_t group_size,
                      const char* who) {
  DC_CHECK(dc_valid_band_bits(bits), DC_ERR_INVALID_ARGUMENT,
           "%s: bit width %u is not one of 2, 3, 4, 8, 16", who, bits);
  if (bits != 16)
    DC_CHECK(group_size >= DC_CODE_BLOCK && group_size % DC_CODE_BLOCK == 0 && group_size <= DC_MAX_GROUP,
             DC_ERR_INVALID_ARGUMENT, "%s: group size %u must be a multiple of %u in [%u, %u]", who,
             group_size, DC_CODE_BLOCK, DC_CODE_BLOCK, DC_MAX_GROUP);
  checked_mul(nrows, len, who);
  checked_mul(nrows, dc_row_words(len, bits), who);
}

QuantizedRows empty_rows(uint64_t nrows, uint64_t len, uint32_t bits, uint32_t group_size) {
  QuantizedRows r;
  r.bits = bits;
  r.group_size = bits == 16 ? 0 : group_size;
  r.nrows = nrows;
  r.len = len;
  r.codes.assign(nrows * dc_row_words(len, bits), 0u);
  if (bits != 16) r.qparams.resize(nrows * dc_row_groups(len, group_size));
  r.dequant.assign(nrows * len, 0.f);
  return r;
}

void store_fp16_rows(const float* w, QuantizedRows& r) {
  const uint64_t words = dc_row_words(r.len, 16);
  for (uint64_t i = 0; i < r.nrows; ++i)
    for (uint64_t c = 0; c < r.len; ++c) {
      const uint16_t h = float_to_half(w[i * r.len + c]);
      pack_half(&r.codes[i * words], c, h);
      r.dequant[i * r.len + c] = half_to_float(h);
    }
}

static void check_finite(const float* w, uint64_t n, const char* who) {
  for (uint64_t i = 0; i < n; ++i)
    DC_CHECK(std::isfinite(w[i]), DC_ERR_INVALID_ARGUMENT, "%s: element %llu is not finite (%g)", who,
             (unsigned long long)i, (double)w[i]);
}

QuantizedRows quantize_rtn(const float* w, uint64_t nrows, uint64_t len, uint32_t bits,
                           uint32_t group_size) {
  check_quant_args(nrows, len, bits, group_size, "quantize_rtn");
  check_finite(w, nrows * len, "quantize_rtn");
  QuantizedRows r = empty_rows(nrows, len, bits, group_size);
  if (bits == 16) {
    store_fp16_rows(w, r);
    return r;
  }
  const uint64_t words = dc_row_words(len, bits), groups = dc_row_groups(len, group_size);
  for (uint64_t i = 0; i < nrows; ++i) {
    const float* row = w + i * len;
    uint32_t* codes = &r.codes[i * words];
    for (uint64_t g = 0; g < groups; ++g) {
      const uint64_t c0 = g * group_size, c1 = std::min<uint64_t>(len, c0 + group_size);
      const auto mm = std::minmax_element(row + c0, row + c1);
      const QuantGrid grid = make_grid(*mm.first, *mm.second, bits);
      r.qparams[i * groups + g] = grid.stored;
      for (uint64_t c = c0; c < c1; ++c) {
        const uint32_t q = grid.code(row[c]);
        dc_pack_code(codes, c, bits, q);
        r.dequant[i * len + c] = grid.value(q);
      }
    }
  }
  return r;
}

std::vector<uint32_t> act_order_permutation(const double* h, uint64_t len) {
  DC_CHECK(len <= UINT32_MAX, DC_ERR_LIMIT, "act_order_permutation: length %llu exceeds 2^32",
           (unsigned long long)len);
  std::vector<uint32_t> perm(len);
  std::iota(perm.begin(), perm.end(), 0u);
  std::stable_sort(perm.begin(), perm.end(),
                   [&](uint32_t a, uint32_t b) { return h[a * len + a] > h[b * len + b]; });
  return perm;
}

}  // namespace dc

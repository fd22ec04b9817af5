// Group-wise asymmetric quantizers producing the packed layout of common/pack_layout.h.
// A "row" is quantized along its length in groups of `group_size`; scale and zero are rounded to
// fp16 *before* codes are chosen, so the stored qparams reproduce the quantizer's values exactly.
#pragma once

#include <cstdint>
#include <vector>

#include "common/pack_layout.h"

namespace dc {

struct QuantizedRows {
  uint32_t bits = 0, group_size = 0;
  uint64_t nrows = 0, len = 0;
  std::vector<uint32_t> codes;      // nrows × dc_row_words(len, bits)
  std::vector<dc_qparam> qparams;   // nrows × dc_row_groups(len, group_size) (empty for 16 bits)
  std::vector<float> dequant;       // nrows × len: the values the codes decode to
};

// Round-to-nearest (bits 2/3/4/8; 16 stores fp16 values).
QuantizedRows quantize_rtn(const float* w, uint64_t nrows, uint64_t len, uint32_t bits,
                           uint32_t group_size);

// GPTQ (Frantar et al.) with the Hessian h (len×len row-major, float64, of the inputs that multiply
// each row's entries), damping `damp`·mean(diag h), lazy blocks of 128. If `perm` is non-empty it is
// an act-order permutation of [0, len): columns are processed — and groups formed and codes stored —
// in that order (row position p holds original column perm[p]).
QuantizedRows quantize_gptq(const float* w, uint64_t nrows, uint64_t len, const double* h,
                            uint32_t bits, uint32_t group_size, double damp,
                            const std::vector<uint32_t>& perm = {});

// Act-order permutation: indices sorted by descending diag(h) (stable).
std::vector<uint32_t> act_order_permutation(const double* h, uint64_t len);

}  // namespace dc

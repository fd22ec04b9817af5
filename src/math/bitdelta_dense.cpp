// BitDelta (sign bits and one mean-|Δ| scale per matrix) and dense storage of a tensor.
#include <cmath>
#include <cstring>

#include "common/checked.h"
#include "common/error.h"
#include "common/half.h"
#include "math/lowrank.h"

namespace dc {

PackedTensor compress_bitdelta(const std::string& name, const float* delta, uint64_t rows,
                               uint64_t cols, dc_dtype base_dtype) {
  const uint64_t n = checked_mul(rows, cols, name.c_str());
  const uint64_t words = dc_row_words(cols, 1);
  PackedTensor t;
  t.name = name;
  t.rows = rows;
  t.cols = cols;
  t.kind = DC_KIND_BITDELTA;
  t.dtype = base_dtype;
  t.signs.assign(checked_mul(rows, words, name.c_str()), 0u);
  double sum_abs = 0;  // float64: a float sum over 10^8 elements would lose the tail
  for (uint64_t i = 0; i < rows; ++i)
    for (uint64_t c = 0; c < cols; ++c) {
      const float x = delta[i * cols + c];
      DC_CHECK(std::isfinite(x), DC_ERR_INVALID_ARGUMENT, "%s: delta element (%llu, %llu) is not finite",
               name.c_str(), (unsigned long long)i, (unsigned long long)c);
      sum_abs += std::fabs((double)x);
      // BitDelta's mask: 1 unless Δ < 0, so Δ = 0 decodes to +scale like the reference code.
      if (!(x < 0)) dc_pack_code(&t.signs[i * words], c, 1, 1u);
    }
  t.bitdelta_scale = n ? (float)(sum_abs / (double)n) : 0.f;
  return t;
}

PackedTensor make_dense(const std::string& name, const float* values, uint64_t rows, uint64_t cols,
                        dc_dtype dtype) {
  DC_CHECK(dtype == DC_DTYPE_F32 || dtype == DC_DTYPE_F16 || dtype == DC_DTYPE_BF16,
           DC_ERR_INVALID_ARGUMENT, "%s: unknown dense dtype %d", name.c_str(), (int)dtype);
  const uint64_t n = checked_mul(rows, cols, name.c_str());
  PackedTensor t;
  t.name = name;
  t.rows = rows;
  t.cols = cols;
  t.kind = DC_KIND_DENSE;
  t.dtype = dtype;
  t.dense.resize(checked_mul(n, dtype_size(dtype), name.c_str()));
  uint8_t* out = t.dense.data();
  for (uint64_t i = 0; i < n; ++i) {  // explicit little-endian bytes
    if (dtype == DC_DTYPE_F32) {
      const uint32_t u = float_to_bits(values[i]);
      for (int b = 0; b < 4; ++b) out[4 * i + b] = (uint8_t)(u >> (8 * b));
    } else {
      const uint16_t h = dtype == DC_DTYPE_F16 ? float_to_half(values[i]) : float_to_bf16(values[i]);
      out[2 * i] = (uint8_t)h;
      out[2 * i + 1] = (uint8_t)(h >> 8);
    }
  }
  return t;
}

}  // namespace dc

// Helpers shared by quantize.cpp, gptq.cpp and lowrank.cpp (not part of the math interface).
#pragma once

#include <cstdint>
#include <vector>

#include "math/quantize.h"

namespace dc {

// Throws DC_ERR_INVALID_ARGUMENT for a bad width or group size, DC_ERR_OVERFLOW for sizes that
// overflow. `who` names the caller in the message.
void check_quant_args(uint64_t nrows, uint64_t len, uint32_t bits, uint32_t group_size, const char* who);

// Zero-filled result arrays of the right sizes.
QuantizedRows empty_rows(uint64_t nrows, uint64_t len, uint32_t bits, uint32_t group_size);

// bits 16: stores w (nrows × len) as fp16 codes and the fp16 values as dequant.
void store_fp16_rows(const float* w, QuantizedRows& r);

// GPTQ split in two so that several row sets sharing one Hessian (the V bands of a layer) factor it
// once. The prepared form holds the processing order (act-order permutation or identity), the dead
// inputs (diag 0) and the upper Cholesky factor of the damped, permuted H⁻¹.
struct GptqHessian {
  uint64_t len = 0;
  std::vector<uint32_t> order;      // position p processes original column order[p]
  std::vector<char> dead;           // by position: input never active, its weights are zeroed
  std::vector<double> hinv_upper;   // len × len row-major, empty for an order-only preparation
};
GptqHessian prepare_gptq_hessian(const double* h, uint64_t len, double damp,
                                 const std::vector<uint32_t>& perm);
// Order only (validated permutation): enough for 16-bit rows, which are stored, not quantized.
GptqHessian prepare_gptq_order(uint64_t len, const std::vector<uint32_t>& perm);
QuantizedRows quantize_gptq_prepared(const float* w, uint64_t nrows, const GptqHessian& h, uint32_t bits,
                                     uint32_t group_size);

}  // namespace dc

// Helpers shared by quantize.cpp, gptq.cpp and lowrank.cpp (not part of the math interface).
#pragma once

#include <cstdint>

#include "math/quantize.h"

namespace dc {

// Throws DC_ERR_INVALID_ARGUMENT for a bad width or group size, DC_ERR_OVERFLOW for sizes that
// overflow. `who` names the caller in the message.
void check_quant_args(uint64_t nrows, uint64_t len, uint32_t bits, uint32_t group_size, const char* who);

// Zero-filled result arrays of the right sizes.
QuantizedRows empty_rows(uint64_t nrows, uint64_t len, uint32_t bits, uint32_t group_size);

// bits 16: stores w (nrows × len) as fp16 codes and the fp16 values as dequant.
void store_fp16_rows(const float* w, QuantizedRows& r);

}  // namespace dc

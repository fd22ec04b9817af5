// How far a PackedTensor is from the exact delta: ‖ΔW − Δ̂W‖_F / ‖ΔW‖_F over a sample of rows
// (every row when rows ≤ max_rows), decoding the packed form directly.
#pragma once

#include <cstdint>

#include "common/packed_tensor.h"

namespace dc {

double relative_error_sampled(const PackedTensor& t, const float* delta, uint64_t max_rows = 256);

// Decodes the low-rank V̂ of all bands into rank × cols floats, in original column order
// (σ not applied).
std::vector<float> decode_v_all(const PackedTensor& t);
// Decodes row o of Û (all bands): rank floats.
void decode_u_row(const PackedTensor& t, uint64_t o, float* out);

}  // namespace dc

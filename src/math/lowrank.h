// Builds PackedTensors from a dense delta: Delta-CoMe (SVD + mixed-precision bands), BitDelta,
// single-precision low-rank, and dense. And the float64 reference reconstruction used by tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/packed_tensor.h"
#include "math/budget.h"

namespace dc {

enum class Quantizer { Rtn, Gptq };

struct LowRankOptions {
  std::vector<BandDesc> bands;  // from bands_for_shape() or an allocator; contiguous from rank 0
  Quantizer quantizer = Quantizer::Rtn;
  const double* hessian = nullptr;  // cols×cols E[x xᵀ] of the layer input; null = identity
  double damp = 0.01;
  bool act_order = false;           // GPTQ only, and only with a Hessian
  dc_dtype base_dtype = DC_DTYPE_F16;
};

// ΔW (rows×cols row-major fp32) → low-rank mixed-precision PackedTensor. The SVD is computed here
// unless `svd` is given (then it must hold at least the bands' total rank).
struct Svd;
PackedTensor compress_lowrank(const std::string& name, const float* delta, uint64_t rows,
                              uint64_t cols, const LowRankOptions& opts, const Svd* svd = nullptr);

// BitDelta: sign(ΔW) with scale mean|ΔW| (Δ = 0 maps to +scale, as the reference code does).
PackedTensor compress_bitdelta(const std::string& name, const float* delta, uint64_t rows,
                               uint64_t cols, dc_dtype base_dtype);

// Dense: stores the values as `dtype`.
PackedTensor make_dense(const std::string& name, const float* values, uint64_t rows, uint64_t cols,
                        dc_dtype dtype);

// The float64 ΔŴ (rows×cols row-major) a PackedTensor decodes to: the reference that every
// backend's apply and merge are tested against. Works on shards' views too (not needed).
std::vector<double> reconstruct_reference(const PackedTensor& t);

}  // namespace dc

// Bit allocation per singular vector (`--allocate optimal`, issue #3 items 4-5): choose a width in
// {0, 2, 3, 4, 8} for every singular vector — within one layer, or across layers under one total
// budget — to minimise the predicted output error Σ_layers ‖(ΔW − ΔŴ) X‖², instead of the fixed
// 8×2 / 3×32 / 2×rest recipe. Plus the single-precision and fp16 low-rank schemes as band helpers.
//
// Error model (per token, H = E[x xᵀ] of the layer input; identity when there is no calibration):
// vector j kept at b bits contributes σ_j²·tr(A H Aᵀ) with A = u_j v_jᵀ − û_j v̂_jᵀ = u δvᵀ + δu v̂ᵀ,
// where v̂_j is v_j quantized at b bits as compress_lowrank would (RTN, or GPTQ with H), û_j is u_j
// RTN-quantized at b bits with groups along its own length (a stand-in for the band's groups along
// the rank, whose entries have the same statistics), and δ = x − x̂:
//   σ²·( ‖u‖²·δvᵀHδv + ‖δu‖²·v̂ᵀHv̂ + 2(uᵀδu)·δvᵀHv̂ ),
// all terms exact for the probes. Dropping it costs σ_j²·v_jᵀHv_j. Errors of different vectors are
// treated as additive. Storage of vector j at b bits costs b·(m + n) bits, as in α·16·m·n.
// Cost: with a Hessian, per width one GEMM of k×cols×cols (plus GPTQ of k rows when asked).
//
// Use across layers: build each layer's VectorErrorModel (needs its SVD, then the SVD can be freed:
// the model is K×5 doubles), call allocate_global, then compress each layer with its bands.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/packed_tensor.h"
#include "math/lowrank.h"
#include "math/svd.h"

namespace dc {

struct AllocOptions {
  std::vector<uint32_t> widths = {2, 3, 4, 8};  // candidate widths besides 0 (dropping); 16 allowed
  uint32_t group_size = 128;                    // group size of the bands (and of the probes)
  // The quantizer compress_lowrank will use. With Gptq and a Hessian the V probes are GPTQ itself
  // (all modelled rows at once; rows are independent in GPTQ, so each v̂_j is exactly what a band
  // would store), with the same damping and act-order; U probes stay RTN.
  Quantizer quantizer = Quantizer::Rtn;
  double damp = 0.01;
  bool act_order = false;
};

// Predicted errors of one layer's leading singular vectors.
struct VectorErrorModel {
  std::string name;
  uint64_t rows = 0, cols = 0;
  std::vector<uint32_t> widths;  // ascending, widths[0] == 0 (dropped)
  uint64_t k = 0;                // vectors modelled: 0 .. k-1 in descending σ
  std::vector<double> err;       // k × widths.size(): predicted ‖σ_j(u_j v_jᵀ − û_j v̂_jᵀ)x‖² per token
};

// Builds the model for the first `max_vectors` triplets of `svd` (0 = all of svd.k). `hessian` is
// cols×cols row-major, or null for the identity.
VectorErrorModel model_vector_errors(const std::string& name, const Svd& svd, const double* hessian,
                                     uint64_t max_vectors, const AllocOptions& opts);

// Per-layer allocation under the layer's own budget (Σ bits·rank <= budget_bit_ranks). Bands are
// contiguous from rank 0 with non-increasing bits (vectors stay in descending σ order).
std::vector<BandDesc> allocate_layer(const VectorErrorModel& model, double budget_bit_ranks,
                                     uint32_t group_size = 128);

// One total budget in bits (e.g. Σ_layers α·16·m·n) shared by all layers: a vector of an m×n layer
// at b bits costs b·(m + n). Returns the bands of each layer, in the order of `models`.
std::vector<std::vector<BandDesc>> allocate_global(const std::vector<VectorErrorModel>& models,
                                                   double total_bits, uint32_t group_size = 128);

// The model's predicted error of a band list: Σ over the k modelled vectors of err(j, width_j),
// width 0 for vectors outside the bands. Throws if a band's width is not in the model or its rank
// exceeds k.
double predicted_error(const VectorErrorModel& model, const std::vector<BandDesc>& bands);

// Single precision: every kept vector at `bits` (2, 3, 4, 8 or 16), r = floor(budget / bits).
std::vector<BandDesc> single_precision_bands(uint64_t rows, uint64_t cols, double alpha, uint32_t bits,
                                             uint32_t group_size = 128);

// Low-rank fp16: the top r = floor(budget / 16) vectors at 16 bits.
std::vector<BandDesc> lowrank_fp16_bands(uint64_t rows, uint64_t cols, double alpha);

}  // namespace dc

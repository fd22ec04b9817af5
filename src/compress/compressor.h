// The model compressor: base + fine-tuned safetensors checkpoints → one .dcz container.
// Linear layers (2-D ".weight" tensors, not embeddings/lm_head unless asked) are compressed with
// the chosen scheme; every other changed tensor is stored dense (fp32 delta, exact); unchanged
// tensors are left out (merge copies the base). Every base tensor is fingerprinted.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "math/budget.h"
#include "math/lowrank.h"

namespace dc {

enum class Scheme { DeltaCoMe, BitDelta, LowRank, Single };
// fixed: the recipe's bands; Layer (--allocate optimal): bits per singular vector chosen per layer
// from the predicted output error; Global: one budget shared by all linear layers.
enum class Allocation { Fixed, Layer, Global };

struct CompressConfig {
  std::string base_path, finetuned_path, output_path;
  Scheme scheme = Scheme::DeltaCoMe;
  uint32_t single_bits = 2;            // Scheme::Single
  BandRecipe recipe;                   // alpha, leading bands, rest bits, group size
  Allocation allocation = Allocation::Fixed;
  Quantizer quantizer = Quantizer::Gptq;
  std::string calib_path;              // safetensors of "<module>.hessian" [in×in] F32 (+ ".n_tokens")
  bool act_order = false;
  bool lowrank_embeddings = false;     // compress embeddings and lm_head like linear layers
  std::string model_name, base_model_name;
  unsigned threads = 0;                // 0 = hardware concurrency
  int zstd_level = 3;
  bool quiet = false;
};

struct TensorReport {
  std::string name;
  uint64_t rows = 0, cols = 0;
  dc_tensor_kind kind = DC_KIND_DENSE;
  std::vector<BandDesc> bands;
  double rel_error = 0;       // ‖ΔW − Δ̂W‖_F / ‖ΔW‖_F (rows sampled for large layers)
  double seconds = 0;
  uint64_t packed_bytes = 0;
};

struct CompressSummary {
  std::vector<TensorReport> tensors;
  uint64_t unchanged = 0;         // tensors identical in base and fine-tuned (left out)
  uint64_t fp16_delta_bytes = 0;  // what the stored deltas would take in fp16
  uint64_t file_bytes = 0;
  double seconds = 0;
};

using ProgressFn = std::function<void(const TensorReport& done, size_t finished, size_t total, double elapsed)>;

CompressSummary compress_model(const CompressConfig& config, const ProgressFn& progress = {});

// Bands for one layer under a scheme (fixed recipe; the optimal allocator is separate).
std::vector<BandDesc> scheme_bands(Scheme scheme, uint64_t rows, uint64_t cols, const BandRecipe& recipe,
                                   uint32_t single_bits);

// Parses "deltacome" | "bitdelta" | "lowrank" | "single".
Scheme parse_scheme(const std::string& s);
const char* scheme_name(Scheme s);

// True for the tensors the compressor treats as linear layers.
bool is_linear_weight(const std::string& name, const std::vector<uint64_t>& shape, bool include_embeddings);

}  // namespace dc

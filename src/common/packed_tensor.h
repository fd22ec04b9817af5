// The in-memory form of one tensor's delta as stored in a .dcz payload (after zstd decompression):
// what the writer serialises, what the reader validates and returns, what backends upload.
// Sizes of every array follow from the shape and bands (see pack_layout.h); validate() checks them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/pack_layout.h"
#include "deltacome/deltacome.h"

namespace dc {

struct BandDesc {
  uint32_t bits = 0;        // 2, 3, 4, 8, 16
  uint32_t rank_begin = 0;  // [rank_begin, rank_end) of the singular vectors
  uint32_t rank_end = 0;
  uint32_t group_size = 0;  // multiple of 32; 0 for 16-bit bands
  uint32_t rank() const { return rank_end - rank_begin; }
};

struct PackedBand {
  BandDesc desc;
  // V part: rank() rows × dc_row_words(cols, bits) words; qparams rank() × dc_row_groups(cols, g).
  std::vector<uint32_t> v_codes;
  std::vector<dc_qparam> v_qparams;
  // U part: rows × dc_row_words(rank(), bits) words; qparams rows × dc_row_groups(rank(), g).
  std::vector<uint32_t> u_codes;
  std::vector<dc_qparam> u_qparams;
};

struct PackedTensor {
  std::string name;
  uint64_t rows = 0;  // out features
  uint64_t cols = 0;  // in features (1 for 1-D dense tensors)
  dc_tensor_kind kind = DC_KIND_LOWRANK;
  dc_dtype dtype = DC_DTYPE_F16;  // dense: storage dtype of `dense`; else the base weight's dtype

  // DC_KIND_LOWRANK
  uint32_t rank = 0;
  std::vector<float> sigma;        // rank singular values, descending
  std::vector<uint32_t> in_perm;   // empty, or cols entries: V̂ᵀ column p holds input perm[p]
  std::vector<PackedBand> bands;   // contiguous, covering [0, rank)

  // DC_KIND_BITDELTA: rows × dc_row_words(cols, 1) words of signs, ΔW = scale·(2·sign − 1)
  float bitdelta_scale = 0.f;
  std::vector<uint32_t> signs;

  // DC_KIND_DENSE: rows·cols elements of dtype, little-endian, row-major
  std::vector<uint8_t> dense;

  // Throws dc::Error(DC_ERR_CORRUPT / OVERFLOW / LIMIT) if any array size or value disagrees with
  // the shape and bands (bits valid, bands contiguous, codes within range of the widths, zeros in
  // range, permutation a bijection).
  void validate() const;
  // Bytes held by the arrays (what a loaded delta occupies, before any backend padding).
  uint64_t packed_bytes() const;
};

// Bytes of one dense element.
inline uint32_t dtype_size(dc_dtype t) { return t == DC_DTYPE_F32 ? 4u : 2u; }

}  // namespace dc

// Turns a PackedTensor (host) into the dc_tensor_view a backend loads, optionally sliced for
// tensor parallelism. Row shards (column-parallel layers) slice Û/sign/dense rows in place (no
// copy). Column shards (row-parallel layers) keep V̂ only over the quantization groups that cover
// the shard's inputs (v_col_offset marks where the shard starts inside them), so unaligned shards
// stay exact; with an act-order permutation V̂ is kept whole and the permutation remapped.
#pragma once

#include <cstdint>
#include <vector>

#include "backends/backend.h"
#include "common/packed_tensor.h"

namespace dc {

struct ShardRange {
  dc_shard_split split = DC_SHARD_NONE;
  uint64_t begin = 0, end = 0;  // rows (DC_SHARD_ROWS) or columns (DC_SHARD_COLS)
};

// Resolves a dc_shard against a tensor's shape (validating it).
ShardRange resolve_shard(const dc_shard& shard, uint64_t rows, uint64_t cols, const char* name);

class TensorViewStorage {
 public:
  TensorViewStorage(const PackedTensor& t, const ShardRange& shard);
  const dc_tensor_view& view() const { return view_; }

 private:
  dc_tensor_view view_{};
  std::vector<dc_band_view> bands_;
  std::vector<std::vector<uint32_t>> words_;    // owned slices
  std::vector<std::vector<dc_qparam>> qparams_;
  std::vector<uint32_t> perm_;
  std::vector<uint8_t> dense_;
};

}  // namespace dc

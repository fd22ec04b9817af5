// Turns a PackedTensor (host) into the dc_tensor_view a backend loads, optionally sliced for
// tensor parallelism (docs/TENSOR_PARALLEL.md).
//
// Row shards (DC_SHARD_ROWS, column-parallel layers) keep output rows [b, e): Û, BitDelta sign and
// dense rows are sliced in place (no copy); V̂, σ and the permutation are kept whole.
//
// Column shards (DC_SHARD_COLS, row-parallel layers) keep input columns [b, e): Û and σ are kept
// whole, V̂ is cut into "V blocks" of `align` = lcm(32, every band's group size) positions (so a
// block boundary is also a code-block and a quantization-group boundary in every band, and a kept
// block carries its own scales and zeros unchanged: unaligned shards stay exact) and only the
// blocks that hold one of the shard's inputs are kept:
//   - without act-order those are one contiguous run [a, a2) ⊇ [b, e); v_col_offset = b − a tells
//     the backend where x starts inside it (V positions outside [b, e) see x = 0);
//   - with act-order, V̂ position p holds input in_perm[p]: the blocks holding a position whose
//     input lies in [b, e) are gathered (in order) and the permutation is remapped onto them, with
//     DC_PERM_NONE for the positions of other shards' inputs. A GPTQ act-order permutation spreads
//     every shard's inputs over (nearly) every block, so in practice this keeps all of V̂; a
//     permutation that stays within blocks of a shard grid keeps only the shard's blocks.
// BitDelta signs and dense columns are repacked into the shard's width.
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

// Resolves a dc_shard against a tensor's shape, validating it: an explicit range (end > begin)
// must lie within the split dimension; otherwise shard `index` of `count` is the ceil-divided
// chunk [index·⌈dim/count⌉, …), which must not be empty. A range with begin ≥ end other than
// (0, 0) is refused rather than silently replaced by index/count.
ShardRange resolve_shard(const dc_shard& shard, uint64_t rows, uint64_t cols, const char* name);

// V positions per V block for a column shard of `t`: lcm(32, group sizes of the non-16-bit bands).
uint64_t shard_v_block(const PackedTensor& t);

// Host bytes a view references: what a backend copies when it loads the view (sigma, permutation,
// codes, qparams, signs, dense data), before any backend bookkeeping.
uint64_t view_packed_bytes(const dc_tensor_view& v);

class TensorViewStorage {
 public:
  // `t` must outlive this object (row shards and unsharded views point into it).
  TensorViewStorage(const PackedTensor& t, const ShardRange& shard);
  TensorViewStorage(const TensorViewStorage&) = delete;
  TensorViewStorage& operator=(const TensorViewStorage&) = delete;
  const dc_tensor_view& view() const { return view_; }

 private:
  void slice_rows(const PackedTensor& t, uint64_t b);
  void slice_cols(const PackedTensor& t, uint64_t b, uint64_t e);
  // Keeps V blocks `kept` (ascending block indices, `align` positions each, the last block of a
  // row possibly shorter) of every band, packed back to back.
  void keep_v_blocks(const PackedTensor& t, uint64_t align, const std::vector<uint64_t>& kept);

  dc_tensor_view view_{};
  std::vector<dc_band_view> bands_;
  std::vector<std::vector<uint32_t>> words_;    // owned slices (moving the outer vector keeps
  std::vector<std::vector<dc_qparam>> qparams_;  // every inner buffer, so pointers stay valid)
  std::vector<uint32_t> perm_;
  std::vector<uint8_t> dense_;
};

}  // namespace dc

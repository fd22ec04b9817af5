// Objects behind the CPU backend's opaque handles: the device (thread pool + apply scratch), a
// loaded delta (a deep copy of the dc_tensor_view, still packed) and a batch.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backends/backend.h"
#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/thread_pool.h"

namespace dc::cpu {

struct CpuBand {
  uint32_t bits = 0, rank_begin = 0, rank_end = 0, group_size = 0;
  uint64_t v_row_words = 0, v_row_groups = 0;  // per V row (length v_len)
  uint64_t u_row_words = 0, u_row_groups = 0;  // per U row (length rank_end - rank_begin)
  uint64_t t_offset = 0;  // this band's first column in the tile's t scratch (block aligned)
  std::vector<uint32_t> v_codes, u_codes;
  std::vector<dc_qparam> v_qparams, u_qparams;
  uint32_t rank() const { return rank_end - rank_begin; }
  uint64_t group_blocks() const { return group_size / kBlock; }
};

// Phase-1 work item: ranks [j_begin, j_end) of band `band` (indices relative to the band).
struct RankChunk {
  uint32_t band, j_begin, j_end;
};

struct CpuDelta {
  uint64_t rows = 0, cols = 0;
  dc_tensor_kind kind = DC_KIND_LOWRANK;
  dc_dtype dtype = DC_DTYPE_F32;
  // low-rank
  uint32_t rank = 0;
  std::vector<float> sigma;
  std::vector<CpuBand> bands;
  uint64_t v_len = 0;
  std::vector<uint32_t> in_perm;  // empty: x read at p - v_col_offset
  uint32_t v_col_offset = 0;
  uint64_t t_stride = 0;          // Σ over bands of round_up_block(band rank)
  std::vector<RankChunk> rank_chunks;
  // BitDelta
  float bitdelta_scale = 0.f;
  std::vector<uint32_t> signs;
  uint64_t sign_row_words = 0;
  // dense
  std::vector<uint8_t> dense;

  uint64_t bytes = 0;  // memory held by the arrays above

  bool vector = false;  // dc_tensor_view.is_vector: a 1-D dense tensor (bias)
  bool is_bias() const { return vector; }
  // True when V position p reads x[p] directly (no permutation, no shard offset): xv is x itself.
  bool v_reads_x_directly() const { return in_perm.empty() && v_col_offset == 0 && v_len == cols; }
};

struct CpuBatch {
  std::vector<const CpuDelta*> deltas;
  uint64_t rows = 0, cols = 0;
};

// The device: a persistent thread pool plus scratch for one tile of activation rows (kGemmTile
// rows; the decode loops use the first kMaxTile). The scratch grows when a delta is loaded or a
// batch created (never during apply), to fit the largest: for a 4096×4096 delta at α = 1/16 about
// 14 MB, most of it the prefill path's (xf, t, vdq, udq, yd).
struct CpuDevice {
  explicit CpuDevice(unsigned threads) : pool(threads) {}

  ThreadPool pool;
  uint64_t cols_pad = 0, v_pad = 0, xv_pad = 0, t_stride = 0;  // capacities of the decode loops' scratch
  // capacities of the prefill path's (a delta larger than these, in any of them, takes the decode
  // loops: its prefill scratch would exceed kPrefillScratchMax)
  uint64_t gemm_cols_pad = 0, gemm_xv_pad = 0, gemm_v_pad = 0, gemm_t_stride = 0;
  std::vector<float> xf;   // kMaxTile × cols_pad, kGemmTile × gemm_cols_pad : x rows as fp32, zero padded
  std::vector<float> xv;   // kMaxTile × xv_pad, kGemmTile × gemm_xv_pad : x gathered into V's positions
                           // (only for deltas that need it: permutation, shard offset)
  std::vector<float> xbs;  // kMaxTile × v_pad/32 : block sums of xv (or of xf)
  std::vector<float> t;    // kMaxTile × t_stride, kGemmTile × gemm_t_stride : (x·V̂)⊙σ, band by band
  std::vector<float> tbs;  // kMaxTile × t_stride/32
  std::vector<float> vdq;  // kGemmRanks × gemm_v_pad : prefill: V̂ rows dequantized
  std::vector<float> udq;  // kGemmOut × gemm_t_stride : prefill: Û rows dequantized, band by band as t
  std::vector<float> yd;   // kGemmTile × kGemmOut : prefill: scale·t·Ûᵀ of one piece of outputs
  std::vector<float> rowbuf;  // pool.size() × cols_pad : per-thread fp32 copy of a weight row

  // Grows the scratch so a delta of this shape can be applied (throws std::bad_alloc).
  void reserve_for(const CpuDelta& d);
};

}  // namespace dc::cpu

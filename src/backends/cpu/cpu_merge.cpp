// Merge on the CPU: W[o][c] += scale·ΔW[o][c] in W's dtype, parallel over rows of W.
// Low-rank: V̂ is decoded once into an fp32 matrix Vσ[j][c] = σ_j·V̂_j (already mapped to W's
// columns through in_perm / the shard offset), Û into rows × rank, and ΔW = Û·Vσ is one BLAS SGEMM
// per tile of rows (rank ~1000: this is a real GEMM, ~10× a hand loop). Unlike apply,
// merge may allocate (it runs once per tensor, not per token).
#include <algorithm>
#include <vector>

#include <cblas.h>

#include "backends/cpu/convert.h"
#include "backends/cpu/cpu_ops.h"

namespace dc::cpu {
namespace {

constexpr uint64_t kRowsPerTask = 8;  // rows of W per task (they share each Vσ chunk)

void merge_lowrank(CpuDevice& dev, const CpuDelta& d, void* weight, dc_dtype dtype, uint64_t ld, float scale) {
  const uint64_t cols = d.cols, vp = round_up_block(d.v_len);
  std::vector<float> vs(static_cast<size_t>(d.rank) * cols, 0.f);
  const unsigned threads = dev.pool.size();
  std::vector<float> vrow(static_cast<size_t>(threads) * vp);

  // Vσ, one task per rank (every task writes its own row of vs).
  std::vector<std::pair<uint32_t, uint32_t>> ranks;  // (band, j within band)
  for (uint32_t b = 0; b < d.bands.size(); ++b)
    for (uint32_t j = 0; j < d.bands[b].rank(); ++j) ranks.emplace_back(b, j);
  auto decode_v = [&](uint64_t k, unsigned worker) {
    const CpuBand& band = d.bands[ranks[k].first];
    const uint32_t j = ranks[k].second;
    float* v = vrow.data() + worker * vp;
    decode_row_bits(band.bits, band.v_codes.data() + j * band.v_row_words,
                    band.v_qparams.data() + j * band.v_row_groups, band.group_blocks(), d.v_len, v);
    const float s = d.sigma[band.rank_begin + j];
    float* out = vs.data() + static_cast<size_t>(band.rank_begin + j) * cols;
    for (uint64_t q = 0; q < d.v_len; ++q) {
      uint64_t c;
      if (!d.in_perm.empty()) {
        if (d.in_perm[q] == DC_PERM_NONE) continue;
        c = d.in_perm[q];
      } else {
        if (q < d.v_col_offset) continue;
        c = q - d.v_col_offset;
        if (c >= cols) continue;
      }
      out[c] += s * v[q];
    }
  };
  dev.pool.run(ranks.size(), decode_v);

  // Û decoded once into rows × rank fp32 (one task per block of rows), then ΔW = Û·Vσ by BLAS
  // SGEMM a tile of rows at a time (bounded memory), added to W once per element.
  const uint64_t ts = d.t_stride, rank = d.rank;
  std::vector<float> uall(static_cast<size_t>(d.rows) * rank);
  std::vector<float> ubuf(static_cast<size_t>(threads) * ts);
  auto decode_u = [&](uint64_t k, unsigned worker) {
    float* u = ubuf.data() + worker * ts;
    const uint64_t o1 = std::min(d.rows, (k + 1) * kRowsPerTask);
    for (uint64_t o = k * kRowsPerTask; o < o1; ++o)
      for (const CpuBand& band : d.bands) {
        decode_row_bits(band.bits, band.u_codes.data() + o * band.u_row_words,
                        band.u_qparams.data() + o * band.u_row_groups, band.group_blocks(), band.rank(),
                        u + band.t_offset);
        std::copy(u + band.t_offset, u + band.t_offset + band.rank(), &uall[o * rank + band.rank_begin]);
      }
  };
  dev.pool.run((d.rows + kRowsPerTask - 1) / kRowsPerTask, decode_u);
  if (rank == 0) return;
  const uint64_t tile = std::max<uint64_t>(kRowsPerTask, std::min<uint64_t>(d.rows, (16ull << 20) / (4 * cols + 1)));
  std::vector<float> acc(static_cast<size_t>(tile) * cols);
  for (uint64_t o0 = 0; o0 < d.rows; o0 += tile) {
    const uint64_t nr = std::min(tile, d.rows - o0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)cols, (int)rank, scale, &uall[o0 * rank],
                (int)rank, vs.data(), (int)cols, 0.f, acc.data(), (int)cols);
    auto add_rows = [&](uint64_t k, unsigned) {
      const uint64_t r1 = std::min(nr, (k + 1) * kRowsPerTask);
      for (uint64_t r = k * kRowsPerTask; r < r1; ++r) {
        const uint64_t row = (o0 + r) * ld;
        for (uint64_t c = 0; c < cols; ++c)
          store_elem(weight, row + c, dtype, load_elem(weight, row + c, dtype) + acc[r * cols + c]);
      }
    };
    dev.pool.run((nr + kRowsPerTask - 1) / kRowsPerTask, add_rows);
  }
}

}  // namespace

void merge(CpuDevice& dev, const CpuDelta& d, void* weight, dc_dtype dtype, uint64_t ld, float scale) {
  if (ld == 0) ld = d.cols;
  if (d.kind == DC_KIND_LOWRANK) return merge_lowrank(dev, d, weight, dtype, ld, scale);
  auto task = [&](uint64_t k, unsigned) {
    const uint64_t o1 = std::min(d.rows, (k + 1) * kRowsPerTask);
    for (uint64_t o = k * kRowsPerTask; o < o1; ++o) {
      for (uint64_t c = 0; c < d.cols; ++c) {
        float delta;
        if (d.kind == DC_KIND_BITDELTA) {
          const uint32_t bit = dc_unpack_code(d.signs.data() + o * d.sign_row_words, c, 1);
          delta = bit ? d.bitdelta_scale : -d.bitdelta_scale;
        } else {
          delta = load_elem(d.dense.data(), o * d.cols + c, d.dtype);
        }
        const uint64_t at = o * ld + c;
        store_elem(weight, at, dtype, load_elem(weight, at, dtype) + scale * delta);
      }
    }
  };
  dev.pool.run((d.rows + kRowsPerTask - 1) / kRowsPerTask, task);
}

}  // namespace dc::cpu

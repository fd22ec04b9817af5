// Merge on the CPU: W[o][c] += scale·ΔW[o][c] in W's dtype, parallel over rows of W.
// Low-rank: V̂ is decoded once into an fp32 matrix Vσ[j][c] = σ_j·V̂_j (already mapped to W's
// columns through in_perm / the shard offset), then each row is Σ_j Û[o][j]·Vσ[j][:]. Unlike apply,
// merge may allocate (it runs once per tensor, not per token).
#include <algorithm>
#include <vector>

#include "backends/cpu/convert.h"
#include "backends/cpu/cpu_ops.h"

namespace dc::cpu {
namespace {

constexpr uint64_t kRowsPerTask = 8;  // rows of W per task (they share each Vσ chunk)
constexpr uint64_t kColChunk = 512;   // columns per accumulation chunk (8 × 512 fp32 = 16 KiB)

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

  // Rows, kRowsPerTask at a time: decode their Û rows (all bands) into u, then for each chunk of
  // kColChunk columns accumulate Σ_j u[r][j]·Vσ[j][chunk] for the block's rows together, so every
  // Vσ chunk read from cache serves kRowsPerTask rows; add to W once per element.
  const uint64_t ts = d.t_stride;  // bands at their block-aligned t_offset
  std::vector<float> ubuf(static_cast<size_t>(threads) * kRowsPerTask * ts);
  std::vector<float> abuf(static_cast<size_t>(threads) * kRowsPerTask * kColChunk);
  auto rows_task = [&](uint64_t k, unsigned worker) {
    float* u = ubuf.data() + worker * kRowsPerTask * ts;
    float* acc = abuf.data() + worker * kRowsPerTask * kColChunk;
    const uint64_t o0 = k * kRowsPerTask, o1 = std::min(d.rows, o0 + kRowsPerTask);
    const unsigned nr = static_cast<unsigned>(o1 - o0);
    for (unsigned r = 0; r < nr; ++r)
      for (const CpuBand& band : d.bands)
        decode_row_bits(band.bits, band.u_codes.data() + (o0 + r) * band.u_row_words,
                        band.u_qparams.data() + (o0 + r) * band.u_row_groups, band.group_blocks(), band.rank(),
                        u + r * ts + band.t_offset);
    for (uint64_t c0 = 0; c0 < cols; c0 += kColChunk) {
      const uint64_t n = std::min(cols, c0 + kColChunk) - c0;
      std::fill(acc, acc + kRowsPerTask * kColChunk, 0.f);
      for (const CpuBand& band : d.bands)
        for (uint32_t j = 0; j < band.rank(); ++j) {
          const float* v = vs.data() + static_cast<size_t>(band.rank_begin + j) * cols + c0;
          for (unsigned r = 0; r < nr; ++r) {
            const float uj = u[r * ts + band.t_offset + j];
            float* a = acc + r * kColChunk;
            for (uint64_t c = 0; c < n; ++c) a[c] += uj * v[c];
          }
        }
      for (unsigned r = 0; r < nr; ++r) {
        const uint64_t row = (o0 + r) * ld + c0;
        for (uint64_t c = 0; c < n; ++c)
          store_elem(weight, row + c, dtype, load_elem(weight, row + c, dtype) + scale * acc[r * kColChunk + c]);
      }
    }
  };
  dev.pool.run((d.rows + kRowsPerTask - 1) / kRowsPerTask, rows_task);
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

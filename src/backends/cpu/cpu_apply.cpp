// Apply on the CPU: y (+)= x·W_baseᵀ + scale·x·ΔWᵀ, one tile of at most kMaxTile activation rows
// at a time (so scratch is bounded whatever m is).
//
// Per tile, for a low-rank delta:
//   gather : xf = x rows as fp32; xv = xf moved into V's positions (in_perm / shard offset), with
//            per-block sums for the zero terms                                    (calling thread)
//   phase 1: t[i][j] = σ_j · Σ_p V̂_j[p]·xv[i][p]           parallel over chunks of ranks
//   phase 2: y[i][o] = (base_o·x_i or y[i][o]) + scale·Σ_j Û[o][j]·t[i][j]
//                                                           parallel over chunks of output rows
// BitDelta and dense deltas only have phase 2. Every y element is read (unless the base replaces
// it), computed in fp32 and written once.
//
// Prefill path (a low-rank delta, tiles of at least gemm_min_rows rows, up to kGemmTile): the
// decode loops above cost ~0.55 ms a row of x for a 4096×4096 delta on two cores, linear in the
// rows, while dequantizing the whole delta costs about eight rows' worth. So the tile dequantizes
// kGemmRanks V̂ rows at a time (the pool) and multiplies them with OpenBLAS sgemm, then kGemmOut Û
// rows at a time likewise, in scratch reserved at load and capped (kPrefillScratchMax: wider
// deltas keep the decode loops). bench/cpu/apply_cpu_bench.cpp measures both paths.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include <cblas.h>

#include "backends/cpu/convert.h"
#include "backends/cpu/cpu_ops.h"

namespace dc::cpu {
namespace {

constexpr uint64_t kRowsPerTask = 16;  // output rows per phase-2 task

// Σ_p V̂[p]·vec[p] for one packed row of a band, dispatched on the band's width.
void band_row_dot(const CpuBand& band, const uint32_t* codes, const dc_qparam* qp, uint64_t nblocks,
                  const float* vec, uint64_t vstride, const float* bsum, uint64_t bstride, unsigned mt,
                  float* out) {
  const uint64_t gb = band.group_blocks();
  switch (band.bits) {
    case 2: packed_row_dot<2>(codes, qp, gb, nblocks, vec, vstride, bsum, bstride, mt, out); break;
    case 3: packed_row_dot<3>(codes, qp, gb, nblocks, vec, vstride, bsum, bstride, mt, out); break;
    case 4: packed_row_dot<4>(codes, qp, gb, nblocks, vec, vstride, bsum, bstride, mt, out); break;
    case 8: packed_row_dot<8>(codes, qp, gb, nblocks, vec, vstride, bsum, bstride, mt, out); break;
    default: packed_row_dot<16>(codes, qp, gb, nblocks, vec, vstride, bsum, bstride, mt, out); break;
  }
}

struct Tile {
  const uint64_t* row_ids;  // the tile's rows of x and y
  unsigned mt;              // 1..kMaxTile (decode loops) or 1..kGemmTile (apply_tile, prefill)
};

// Default of gemm_min_rows. The paths cross near 10 rows on two cores (bench/cpu/apply_cpu_bench.cpp:
// at 8 rows the prefill path took 4.4–5.4 ms against the decode loops' 4.4–4.6, at 16 rows 4.1–4.9
// against 8.5–8.8); 12 leaves a margin.
constexpr uint32_t kGemmMinRowsDefault = 12;
std::atomic<uint32_t> g_gemm_min_rows{0};  // 0: not yet read from the environment

// Loads the tile's x rows into dev.xf (fp32, zero padded to cols_pad) and, unless xsum is null,
// their sums into xsum (BitDelta's zero term).
void gather_x(CpuDevice& dev, const dc_apply_params& p, uint64_t cols, const Tile& tile, float* xsum) {
  const uint64_t ldx = p.ldx ? p.ldx : cols;
  const uint64_t cp = round_up_block(cols);
  for (unsigned i = 0; i < tile.mt; ++i) {
    float* row = dev.xf.data() + i * cp;
    row_to_f32(elem_ptr(p.x, tile.row_ids[i] * ldx, p.x_dtype), p.x_dtype, cols, row);
    std::fill(row + cols, row + cp, 0.f);
    if (xsum == nullptr) continue;
    float s = 0.f;
    for (uint64_t c = 0; c < cols; ++c) s += row[c];
    xsum[i] = s;
  }
}

// The tile's x rows in V's positions: dev.xf itself when V reads x directly, else gathered into
// dev.xv (permutation, shard offset), zero padded to round_up_block(v_len).
const float* gather_xv(CpuDevice& dev, const CpuDelta& d, unsigned mt) {
  const uint64_t cp = round_up_block(d.cols);
  const uint64_t vp = round_up_block(d.v_len);
  const float* xv = dev.xf.data();
  if (!d.v_reads_x_directly()) {
    for (unsigned i = 0; i < mt; ++i) {
      const float* xr = dev.xf.data() + i * cp;
      float* v = dev.xv.data() + i * vp;
      if (!d.in_perm.empty()) {
        for (uint64_t q = 0; q < d.v_len; ++q) v[q] = d.in_perm[q] == DC_PERM_NONE ? 0.f : xr[d.in_perm[q]];
      } else {
        for (uint64_t q = 0; q < d.v_len; ++q) {
          const uint64_t c = q - d.v_col_offset;  // wraps for q < offset: then c >= cols
          v[q] = (q >= d.v_col_offset && c < d.cols) ? xr[c] : 0.f;
        }
      }
      std::fill(v + d.v_len, v + vp, 0.f);
    }
    xv = dev.xv.data();
  }
  return xv;
}

// Zeroes t's padding columns of every band (both phase 2s read whole blocks).
void zero_t_padding(CpuDevice& dev, const CpuDelta& d, unsigned mt) {
  for (const CpuBand& b : d.bands)
    for (unsigned i = 0; i < mt; ++i) {
      float* tr = dev.t.data() + i * d.t_stride + b.t_offset;
      std::fill(tr + b.rank(), tr + round_up_block(b.rank()), 0.f);
    }
}

// Phase 1 for a low-rank delta: fills dev.t (and its block sums dev.tbs) for the tile.
void lowrank_phase1(CpuDevice& dev, const CpuDelta& d, unsigned mt) {
  const uint64_t vp = round_up_block(d.v_len);
  const uint64_t vblocks = vp / kBlock;
  const float* xv = gather_xv(dev, d, mt);
  for (unsigned i = 0; i < mt; ++i) block_sums(xv + i * vp, vblocks, dev.xbs.data() + i * vblocks);

  zero_t_padding(dev, d, mt);

  float* t = dev.t.data();
  const float* xbs = dev.xbs.data();
  auto task = [&](uint64_t k, unsigned) {
    const RankChunk& c = d.rank_chunks[k];
    const CpuBand& b = d.bands[c.band];
    float dot[kMaxTile];
    for (uint32_t j = c.j_begin; j < c.j_end; ++j) {
      band_row_dot(b, b.v_codes.data() + j * b.v_row_words, b.v_qparams.data() + j * b.v_row_groups,
                   vblocks, xv, vp, xbs, vblocks, mt, dot);
      const float s = d.sigma[b.rank_begin + j];
      for (unsigned i = 0; i < mt; ++i) t[i * d.t_stride + b.t_offset + j] = s * dot[i];
    }
  };
  dev.pool.run(d.rank_chunks.size(), task);

  const uint64_t tblocks = d.t_stride / kBlock;
  for (unsigned i = 0; i < mt; ++i) block_sums(t + i * d.t_stride, tblocks, dev.tbs.data() + i * tblocks);
}

// out[i] = (x_i · ΔW[o]ᵀ) for the tile (without scale), for every kind.
void delta_row(CpuDevice& dev, const CpuDelta& d, uint64_t o, unsigned mt, const float* xsum,
               unsigned worker, float* out) {
  const uint64_t cp = round_up_block(d.cols);
  switch (d.kind) {
    case DC_KIND_LOWRANK: {
      for (unsigned i = 0; i < mt; ++i) out[i] = 0.f;
      const uint64_t tblocks = d.t_stride / kBlock;
      float part[kMaxTile];
      for (const CpuBand& b : d.bands) {
        band_row_dot(b, b.u_codes.data() + o * b.u_row_words, b.u_qparams.data() + o * b.u_row_groups,
                     round_up_block(b.rank()) / kBlock, dev.t.data() + b.t_offset, d.t_stride,
                     dev.tbs.data() + b.t_offset / kBlock, tblocks, mt, part);
        for (unsigned i = 0; i < mt; ++i) out[i] += part[i];
      }
      break;
    }
    case DC_KIND_BITDELTA: {
      float ones[kMaxTile];
      packed_row_dot<1>(d.signs.data() + o * d.sign_row_words, nullptr, 0, cp / kBlock, dev.xf.data(), cp,
                        nullptr, 0, mt, ones);
      for (unsigned i = 0; i < mt; ++i) out[i] = d.bitdelta_scale * (2.f * ones[i] - xsum[i]);
      break;
    }
    default: {
      if (d.is_bias()) {
        const float v = load_elem(d.dense.data(), o, d.dtype);
        for (unsigned i = 0; i < mt; ++i) out[i] = v;
        break;
      }
      const void* src = elem_ptr(d.dense.data(), o * d.cols, d.dtype);
      const float* w = static_cast<const float*>(src);
      if (d.dtype != DC_DTYPE_F32) {
        float* buf = dev.rowbuf.data() + worker * dev.cols_pad;
        row_to_f32(src, d.dtype, d.cols, buf);
        w = buf;
      }
      dense_row_dot(w, d.cols, dev.xf.data(), cp, mt, out);
    }
  }
}

// acc[i] for the tile's rows: x_i·W_base[o] with the base included, else y's old value of output o
// (worker: the calling pool thread, whose rowbuf converts a non-fp32 base row).
void base_or_old(CpuDevice& dev, const dc_apply_params& p, uint64_t rows, uint64_t cols, uint64_t o, const Tile& tile,
                 unsigned worker, float* acc) {
  if ((p.flags & DC_APPLY_INCLUDE_BASE) != 0) {
    const uint64_t ldb = p.ld_base ? p.ld_base : cols;
    const void* src = elem_ptr(p.base_weight, o * ldb, p.base_dtype);
    const float* w = static_cast<const float*>(src);
    if (p.base_dtype != DC_DTYPE_F32) {
      float* buf = dev.rowbuf.data() + worker * dev.cols_pad;
      row_to_f32(src, p.base_dtype, cols, buf);
      w = buf;
    }
    dense_row_dot(w, cols, dev.xf.data(), round_up_block(cols), tile.mt, acc);
  } else {
    const uint64_t ldy = p.ldy ? p.ldy : rows;
    for (unsigned i = 0; i < tile.mt; ++i) acc[i] = load_elem(p.y, tile.row_ids[i] * ldy + o, p.y_dtype);
  }
}

// One tile of at most kMaxTile rows on the decode loops: `d` may be null (batched rows without a
// delta, with the base included).
void decode_tile(CpuDevice& dev, const CpuDelta* d, uint64_t rows, uint64_t cols, const dc_apply_params& p,
                 const Tile& tile) {
  const bool with_base = (p.flags & DC_APPLY_INCLUDE_BASE) != 0;
  const bool needs_x = with_base || (d && !d->is_bias());
  float xsum[kMaxTile] = {};
  if (needs_x) gather_x(dev, p, cols, tile, xsum);
  if (d && d->kind == DC_KIND_LOWRANK) lowrank_phase1(dev, *d, tile.mt);

  const uint64_t ldy = p.ldy ? p.ldy : rows;
  const float scale = p.scale;
  auto task = [&](uint64_t k, unsigned worker) {
    const uint64_t o1 = std::min(rows, (k + 1) * kRowsPerTask);
    float acc[kMaxTile], dv[kMaxTile];
    for (uint64_t o = k * kRowsPerTask; o < o1; ++o) {
      base_or_old(dev, p, rows, cols, o, tile, worker, acc);
      if (d) {
        delta_row(dev, *d, o, tile.mt, xsum, worker, dv);
        for (unsigned i = 0; i < tile.mt; ++i) acc[i] += scale * dv[i];
      }
      for (unsigned i = 0; i < tile.mt; ++i) store_elem(p.y, tile.row_ids[i] * ldy + o, p.y_dtype, acc[i]);
    }
  };
  dev.pool.run((rows + kRowsPerTask - 1) / kRowsPerTask, task);
}

// One tile of a low-rank delta on the prefill path (see the top of this file). Same results as
// decode_tile up to fp32 rounding: t = (xv·V̂ᵀ)⊙σ and y = old + scale·t·Ûᵀ, each V̂ and Û entry
// dequantized exactly as decode_row does.
void gemm_tile(CpuDevice& dev, const CpuDelta& d, uint64_t rows, uint64_t cols, const dc_apply_params& p,
               const Tile& tile) {
  const unsigned mt = tile.mt;
  gather_x(dev, p, cols, tile, nullptr);
  const uint64_t vp = round_up_block(d.v_len), ts = d.t_stride;
  const float* xv = gather_xv(dev, d, mt);
  float* t = dev.t.data();
  zero_t_padding(dev, d, mt);
  // phase 1: kGemmRanks rows of one band's V̂ at a time
  for (const CpuBand& b : d.bands) {
    for (uint32_t j0 = 0; j0 < b.rank(); j0 += kGemmRanks) {
      const uint32_t nj = std::min<uint32_t>(kGemmRanks, b.rank() - j0);
      auto dequantize = [&](uint64_t k, unsigned) {
        const uint64_t j = j0 + k;
        decode_row_bits(b.bits, b.v_codes.data() + j * b.v_row_words,
                        b.bits == 16 ? nullptr : b.v_qparams.data() + j * b.v_row_groups, b.group_blocks(), d.v_len,
                        dev.vdq.data() + k * vp);
      };
      dev.pool.run(nj, dequantize);
      float* tc = t + b.t_offset + j0;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(mt), static_cast<int>(nj),
                  static_cast<int>(vp), 1.f, xv, static_cast<int>(vp), dev.vdq.data(), static_cast<int>(vp), 0.f, tc,
                  static_cast<int>(ts));
      const float* sg = d.sigma.data() + b.rank_begin + j0;
      for (unsigned i = 0; i < mt; ++i)
        for (uint32_t j = 0; j < nj; ++j) tc[i * ts + j] *= sg[j];
    }
  }
  // phase 2: kGemmOut rows of Û (all bands, laid out as t) at a time
  const uint64_t ldy = p.ldy ? p.ldy : rows;
  for (uint64_t o0 = 0; o0 < rows; o0 += kGemmOut) {
    const uint64_t nr = std::min<uint64_t>(kGemmOut, rows - o0);
    auto dequantize = [&](uint64_t k, unsigned) {
      const uint64_t o = o0 + k;
      float* dst = dev.udq.data() + k * ts;
      for (const CpuBand& b : d.bands)
        decode_row_bits(b.bits, b.u_codes.data() + o * b.u_row_words,
                        b.bits == 16 ? nullptr : b.u_qparams.data() + o * b.u_row_groups, b.group_blocks(), b.rank(),
                        dst + b.t_offset);
    };
    dev.pool.run(nr, dequantize);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(mt), static_cast<int>(nr),
                static_cast<int>(ts), p.scale, t, static_cast<int>(ts), dev.udq.data(), static_cast<int>(ts), 0.f,
                dev.yd.data(), static_cast<int>(nr));
    auto store = [&](uint64_t k, unsigned worker) {
      const uint64_t a = o0 + k * kRowsPerTask, e = std::min(o0 + nr, a + kRowsPerTask);
      float acc[kGemmTile];
      for (uint64_t o = a; o < e; ++o) {
        base_or_old(dev, p, rows, cols, o, tile, worker, acc);
        for (unsigned i = 0; i < mt; ++i)
          store_elem(p.y, tile.row_ids[i] * ldy + o, p.y_dtype, acc[i] + dev.yd[i * nr + (o - o0)]);
      }
    };
    dev.pool.run((nr + kRowsPerTask - 1) / kRowsPerTask, store);
  }
}

// Whether the device's prefill scratch was reserved for a delta of d's sizes (reserve_for; then
// every size also fits OpenBLAS's int arguments).
bool prefill_fits(const CpuDevice& dev, const CpuDelta& d) {
  const uint64_t vp = round_up_block(d.v_len);
  return round_up_block(d.cols) <= dev.gemm_cols_pad && vp <= dev.gemm_v_pad && d.t_stride <= dev.gemm_t_stride &&
         (d.v_reads_x_directly() || vp <= dev.gemm_xv_pad);
}

// One tile of at most kGemmTile rows: the prefill path for a low-rank delta from gemm_min_rows rows
// (when its scratch was reserved: prefill_fits), else the decode loops kMaxTile rows at a time.
void apply_tile(CpuDevice& dev, const CpuDelta* d, uint64_t rows, uint64_t cols, const dc_apply_params& p,
                const Tile& tile) {
  if (d != nullptr && d->kind == DC_KIND_LOWRANK && tile.mt >= gemm_min_rows() && prefill_fits(dev, *d)) {
    gemm_tile(dev, *d, rows, cols, p, tile);
    return;
  }
  for (unsigned i0 = 0; i0 < tile.mt; i0 += kMaxTile)
    decode_tile(dev, d, rows, cols, p, Tile{tile.row_ids + i0, std::min(kMaxTile, tile.mt - i0)});
}

}  // namespace

uint32_t gemm_min_rows() {
  uint32_t v = g_gemm_min_rows.load(std::memory_order_relaxed);
  if (v == 0) {
    v = kGemmMinRowsDefault;
    if (const char* e = std::getenv("DELTACOME_CPU_GEMM_MIN_ROWS")) {
      const long n = std::strtol(e, nullptr, 10);
      if (n > 0) v = static_cast<uint32_t>(std::min<long>(n, UINT32_MAX));
    }
    uint32_t expected = 0;
    if (!g_gemm_min_rows.compare_exchange_strong(expected, v, std::memory_order_relaxed)) v = expected;
  }
  return v;
}

void set_gemm_min_rows(uint32_t rows) { g_gemm_min_rows.store(rows == 0 ? 1 : rows, std::memory_order_relaxed); }

void apply(CpuDevice& dev, const CpuDelta& d, const dc_apply_params& p) {
  uint64_t ids[kGemmTile];
  for (uint64_t i0 = 0; i0 < p.m; i0 += kGemmTile) {
    const unsigned mt = static_cast<unsigned>(std::min<uint64_t>(kGemmTile, p.m - i0));
    for (unsigned i = 0; i < mt; ++i) ids[i] = i0 + i;
    apply_tile(dev, &d, d.rows, d.cols, p, Tile{ids, mt});
  }
}

void apply_batched(CpuDevice& dev, const CpuBatch& batch, const int32_t* row_slot, const dc_apply_params& p) {
  // Rows are grouped by slot with a scan per slot that fills tiles of row ids: no allocation and
  // O(m · slots) bookkeeping, negligible next to the decode. Slot -1 rows only need work when the
  // base is included (they get y = x·W_baseᵀ).
  const bool with_base = (p.flags & DC_APPLY_INCLUDE_BASE) != 0;
  const int64_t count = static_cast<int64_t>(batch.deltas.size());
  uint64_t ids[kGemmTile];
  for (int64_t s = with_base ? -1 : 0; s < count; ++s) {
    const CpuDelta* d = s < 0 ? nullptr : batch.deltas[s];
    unsigned mt = 0;
    for (uint64_t i = 0; i < p.m; ++i) {
      const int32_t slot = row_slot[i];
      const bool mine = s < 0 ? (slot < 0 || slot >= count) : slot == s;
      if (!mine) continue;
      ids[mt++] = i;
      if (mt == kGemmTile) {
        apply_tile(dev, d, batch.rows, batch.cols, p, Tile{ids, mt});
        mt = 0;
      }
    }
    if (mt) apply_tile(dev, d, batch.rows, batch.cols, p, Tile{ids, mt});
  }
}

}  // namespace dc::cpu

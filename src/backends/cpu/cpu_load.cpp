// Loading a delta into the CPU backend: a deep copy of the dc_tensor_view, kept packed, plus the
// derived layout (t offsets, phase-1 work chunks) that apply needs. Also sizes the device scratch.
#include <algorithm>
#include <cstring>

#include "backends/cpu/convert.h"
#include "backends/cpu/cpu_ops.h"

namespace dc::cpu {
namespace {

constexpr uint32_t kRanksPerChunk = 4;  // phase-1 task granularity

// Allocates first (bad_alloc / length_error before src is touched), then copies.
template <class T>
void copy_array(std::vector<T>& dst, const T* src, uint64_t n, uint64_t& bytes) {
  if (!src || n == 0) return;
  dst.resize(n);
  std::memcpy(dst.data(), src, n * sizeof(T));
  bytes += n * sizeof(T);
}

}  // namespace

std::unique_ptr<CpuDelta> load_delta(const dc_tensor_view& v) {
  auto d = std::make_unique<CpuDelta>();
  d->rows = v.rows;
  d->cols = v.cols;
  d->kind = static_cast<dc_tensor_kind>(v.kind);
  d->vector = v.is_vector != 0;
  d->dtype = static_cast<dc_dtype>(v.dtype);
  uint64_t& bytes = d->bytes;
  switch (d->kind) {
    case DC_KIND_LOWRANK: {
      d->rank = v.rank;
      d->v_len = v.v_len;
      d->v_col_offset = v.in_perm ? 0 : v.v_col_offset;
      copy_array(d->sigma, v.sigma, v.rank, bytes);
      copy_array(d->in_perm, v.in_perm, v.in_perm ? v.v_len : 0, bytes);
      d->bands.resize(v.n_bands);
      uint64_t t_off = 0;
      for (uint32_t b = 0; b < v.n_bands; ++b) {
        const dc_band_view& src = v.bands[b];
        CpuBand& band = d->bands[b];
        band.bits = src.bits;
        band.rank_begin = src.rank_begin;
        band.rank_end = src.rank_end;
        // 16-bit bands have no groups: treat the whole row as one.
        band.group_size = src.bits == 16 ? 0 : src.group_size;
        const uint64_t r = band.rank();
        band.v_row_words = dc_row_words(v.v_len, src.bits);
        band.u_row_words = dc_row_words(r, src.bits);
        if (src.bits != 16) {
          band.v_row_groups = dc_row_groups(v.v_len, src.group_size);
          band.u_row_groups = dc_row_groups(r, src.group_size);
        }
        copy_array(band.v_codes, src.v_codes, r * band.v_row_words, bytes);
        copy_array(band.u_codes, src.u_codes, v.rows * band.u_row_words, bytes);
        if (src.bits != 16) {
          copy_array(band.v_qparams, src.v_qparams, r * band.v_row_groups, bytes);
          copy_array(band.u_qparams, src.u_qparams, v.rows * band.u_row_groups, bytes);
        }
        band.t_offset = t_off;
        t_off += round_up_block(r);
        for (uint32_t j = 0; j < r; j += kRanksPerChunk)
          d->rank_chunks.push_back({b, j, std::min<uint32_t>(static_cast<uint32_t>(r), j + kRanksPerChunk)});
      }
      d->t_stride = t_off;
      break;
    }
    case DC_KIND_BITDELTA:
      d->bitdelta_scale = v.bitdelta_scale;
      d->sign_row_words = dc_row_words(v.cols, 1);
      copy_array(d->signs, v.signs, v.rows * d->sign_row_words, bytes);
      break;
    default: {
      const uint64_t n = v.rows * v.cols * dtype_size(d->dtype);
      copy_array(d->dense, static_cast<const uint8_t*>(v.dense), n, bytes);
    }
  }
  bytes += sizeof(CpuDelta) + d->bands.size() * sizeof(CpuBand) + d->rank_chunks.size() * sizeof(RankChunk);
  return d;
}

// The prefill path's scratch for a delta of these sizes (bytes of floats): x, its gather, t and the
// output piece for kGemmTile rows, and the dequantized pieces.
static uint64_t prefill_bytes(uint64_t cp, uint64_t xp, uint64_t vp, uint64_t ts) {
  return 4 * (kGemmTile * (cp + xp + ts) + kGemmRanks * vp + kGemmOut * ts + kGemmTile * kGemmOut);
}

void CpuDevice::reserve_for(const CpuDelta& d) {
  const bool lowrank = d.kind == DC_KIND_LOWRANK;
  const uint64_t dcp = round_up_block(d.cols), dvp = lowrank ? round_up_block(d.v_len) : 0;
  const uint64_t cp = std::max(cols_pad, dcp);
  const uint64_t vp = std::max(v_pad, dvp);
  const uint64_t ts = std::max(t_stride, d.t_stride);
  // xv only for deltas whose V does not read x directly (permutation, shard offset). Allocated for
  // every delta, the 4096×4096 bench ran slower in every run (2-core CI machine, make bench-cpu,
  // --quick: m = 1 1.23–1.25 ms against 1.04–1.08, m = 16 6.4–7.5 against 4.1–4.7; a memory-layout
  // effect not pinned down)
  const bool gathers = lowrank && !d.v_reads_x_directly();
  const uint64_t xp = std::max(xv_pad, gathers ? dvp : 0);
  // The prefill path's capacities grow only for a low-rank delta whose scratch stays within
  // kPrefillScratchMax (a very wide delta keeps the decode loops, whose scratch is 16× smaller).
  uint64_t gcp = gemm_cols_pad, gxp = gemm_xv_pad, gvp = gemm_v_pad, gts = gemm_t_stride;
  if (lowrank) {
    const uint64_t ncp = std::max(gcp, dcp), nvp = std::max(gvp, dvp), nts = std::max(gts, d.t_stride);
    const uint64_t nxp = std::max(gxp, gathers ? dvp : 0);
    if (prefill_bytes(ncp, nxp, nvp, nts) <= kPrefillScratchMax) {
      gcp = ncp;
      gxp = nxp;
      gvp = nvp;
      gts = nts;
    }
  }
  if (cp == cols_pad && vp == v_pad && xp == xv_pad && ts == t_stride && gcp == gemm_cols_pad && gxp == gemm_xv_pad &&
      gvp == gemm_v_pad && gts == gemm_t_stride)
    return;
  // Resize everything first, then commit the capacities (a bad_alloc leaves the old ones valid:
  // vectors only grow).
  xf.resize(std::max(kMaxTile * cp, kGemmTile * gcp));
  xv.resize(std::max(kMaxTile * xp, kGemmTile * gxp));
  xbs.resize(kMaxTile * vp / kBlock);
  t.resize(std::max(kMaxTile * ts, kGemmTile * gts));
  tbs.resize(kMaxTile * ts / kBlock);
  vdq.resize(kGemmRanks * gvp);
  udq.resize(kGemmOut * gts);
  if (gts != 0) yd.resize(kGemmTile * kGemmOut);
  // rowbuf is indexed by worker with stride cols_pad: rebuild it when the stride changes.
  if (cp != cols_pad) rowbuf.assign(static_cast<size_t>(pool.size()) * cp, 0.f);
  cols_pad = cp;
  v_pad = vp;
  xv_pad = xp;
  t_stride = ts;
  gemm_cols_pad = gcp;
  gemm_xv_pad = gxp;
  gemm_v_pad = gvp;
  gemm_t_stride = gts;
}

}  // namespace dc::cpu

#include "api/shard_view.h"

#include "api/api_internal.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "common/checked.h"
#include "common/error.h"

namespace dc {

namespace {

const char* dim_name(dc_shard_split s) { return s == DC_SHARD_ROWS ? "rows" : "columns"; }

}  // namespace

ShardRange resolve_shard(const dc_shard& s, uint64_t rows, uint64_t cols, const char* name) {
  ShardRange r;
  // Read the caller's enum as an integer first: a C caller may store any value in it.
  const int64_t split = raw_enum(s.split);
  DC_CHECK(split >= DC_SHARD_NONE && split <= DC_SHARD_COLS, DC_ERR_INVALID_ARGUMENT,
           "shard.split %lld of '%s' is not a dc_shard_split value", (long long)split, name);
  r.split = s.split;
  if (s.split == DC_SHARD_NONE) return r;
  const uint64_t dim = s.split == DC_SHARD_ROWS ? rows : cols;
  if (s.end > s.begin) {
    DC_CHECK(s.end <= dim, DC_ERR_INVALID_ARGUMENT, "shard range [%llu, %llu) exceeds the %llu %s of '%s'",
             (unsigned long long)s.begin, (unsigned long long)s.end, (unsigned long long)dim, dim_name(s.split),
             name);
    r.begin = s.begin;
    r.end = s.end;
    return r;
  }
  // begin ≥ end: only (0, 0) means "use index/count"; anything else is a caller's mistake (an
  // empty or reversed range) that must not silently load another slice.
  DC_CHECK(s.begin == 0 && s.end == 0, DC_ERR_INVALID_ARGUMENT,
           "shard range [%llu, %llu) of '%s' is empty or reversed (set begin = end = 0 to split by index/count)",
           (unsigned long long)s.begin, (unsigned long long)s.end, name);
  DC_CHECK(s.count >= 1 && s.index < s.count, DC_ERR_INVALID_ARGUMENT,
           "shard index %u of count %u of '%s' is invalid (need index < count)", s.index, s.count, name);
  const uint64_t chunk = (dim + s.count - 1) / s.count;
  r.begin = std::min<uint64_t>(dim, (uint64_t)s.index * chunk);
  r.end = std::min<uint64_t>(dim, r.begin + chunk);
  DC_CHECK(r.end > r.begin, DC_ERR_INVALID_ARGUMENT,
           "shard %u of %u of '%s' is empty: %llu %s in chunks of %llu (pass an explicit range)", s.index,
           s.count, name, (unsigned long long)dim, dim_name(s.split), (unsigned long long)chunk);
  return r;
}

uint64_t shard_v_block(const PackedTensor& t) {
  uint64_t align = DC_CODE_BLOCK;
  for (const auto& band : t.bands)
    if (band.desc.bits != 16 && band.desc.group_size) align = std::lcm<uint64_t>(align, band.desc.group_size);
  return align;
}

uint64_t view_packed_bytes(const dc_tensor_view& v) {
  uint64_t n = 0;
  switch (v.kind) {
    case DC_KIND_LOWRANK:
      n += (uint64_t)v.rank * sizeof(float);
      if (v.in_perm) n += v.v_len * sizeof(uint32_t);
      for (uint32_t i = 0; i < v.n_bands; ++i) {
        const dc_band_view& b = v.bands[i];
        const uint64_t r = b.rank_end - b.rank_begin;
        n += (r * dc_row_words(v.v_len, b.bits) + v.rows * dc_row_words(r, b.bits)) * 4;
        if (b.bits != 16)
          n += (r * dc_row_groups(v.v_len, b.group_size) + v.rows * dc_row_groups(r, b.group_size)) *
               sizeof(dc_qparam);
      }
      break;
    case DC_KIND_BITDELTA: n += v.rows * dc_row_words(v.cols, 1) * 4; break;
    default: n += v.rows * v.cols * dtype_size((dc_dtype)v.dtype);
  }
  return n;
}

TensorViewStorage::TensorViewStorage(const PackedTensor& t, const ShardRange& sh) {
  dc_tensor_view& v = view_;
  v.rows = t.rows;
  v.cols = t.cols;
  v.kind = t.kind;
  v.dtype = t.dtype;
  v.rank = t.rank;
  v.sigma = t.sigma.data();
  v.v_len = t.cols;
  v.in_perm = t.in_perm.empty() ? nullptr : t.in_perm.data();
  v.v_col_offset = 0;
  v.bitdelta_scale = t.bitdelta_scale;
  v.signs = t.signs.empty() ? nullptr : t.signs.data();
  v.dense = t.dense.empty() ? nullptr : t.dense.data();
  v.is_vector = (t.kind == DC_KIND_DENSE && t.cols == 1) ? 1 : 0;  // 1-D tensors are stored rows × 1
  for (const auto& b : t.bands)
    bands_.push_back({b.desc.bits, b.desc.rank_begin, b.desc.rank_end, b.desc.group_size, b.v_codes.data(),
                      b.v_qparams.empty() ? nullptr : b.v_qparams.data(), b.u_codes.data(),
                      b.u_qparams.empty() ? nullptr : b.u_qparams.data()});

  if (sh.split != DC_SHARD_NONE) {
    const uint64_t dim = sh.split == DC_SHARD_ROWS ? t.rows : t.cols;
    DC_CHECK(sh.begin < sh.end && sh.end <= dim, DC_ERR_INTERNAL, "shard [%llu, %llu) of '%s' not resolved",
             (unsigned long long)sh.begin, (unsigned long long)sh.end, t.name.c_str());
  }
  if (sh.split == DC_SHARD_ROWS) {
    slice_rows(t, sh.begin);
    v.rows = sh.end - sh.begin;
  } else if (sh.split == DC_SHARD_COLS) {
    slice_cols(t, sh.begin, sh.end);
  }
  v.n_bands = (uint32_t)bands_.size();
  v.bands = bands_.empty() ? nullptr : bands_.data();
}

void TensorViewStorage::slice_rows(const PackedTensor& t, uint64_t b) {
  // Every per-output-row array is row-major with a fixed row length: advance its pointer b rows.
  for (size_t i = 0; i < bands_.size(); ++i) {
    const BandDesc& d = t.bands[i].desc;
    bands_[i].u_codes += b * dc_row_words(d.rank(), d.bits);
    if (bands_[i].u_qparams) bands_[i].u_qparams += b * dc_row_groups(d.rank(), d.group_size);
  }
  if (view_.signs) view_.signs += b * dc_row_words(t.cols, 1);
  if (view_.dense) view_.dense = static_cast<const uint8_t*>(view_.dense) + b * t.cols * dtype_size(t.dtype);
}

void TensorViewStorage::slice_cols(const PackedTensor& t, uint64_t b, uint64_t e) {
  dc_tensor_view& v = view_;
  const uint64_t n = e - b;
  DC_CHECK(!(t.kind == DC_KIND_DENSE && t.cols == 1), DC_ERR_UNSUPPORTED,
           "'%s' is 1-D (a bias): a row-parallel layer's bias is not split; load it unsharded and add it on one "
           "rank (after the all-reduce, or on rank 0 before it)",
           t.name.c_str());
  v.cols = n;
  if (t.kind == DC_KIND_LOWRANK) {
    const uint64_t align = shard_v_block(t);
    const uint64_t nblocks = (t.cols + align - 1) / align;
    std::vector<uint64_t> kept;
    if (t.in_perm.empty()) {
      // The shard's inputs sit at V positions [b, e): keep the blocks covering them.
      for (uint64_t k = b / align; k * align < e; ++k) kept.push_back(k);
      v.v_col_offset = (uint32_t)(b - kept.front() * align);
    } else {
      // Act-order: V position p holds input in_perm[p]. Keep the blocks holding any shard input.
      for (uint64_t k = 0; k < nblocks; ++k) {
        const uint64_t p1 = std::min(t.cols, (k + 1) * align);
        for (uint64_t p = k * align; p < p1; ++p)
          if (t.in_perm[p] >= b && t.in_perm[p] < e) {
            kept.push_back(k);
            break;
          }
      }
      perm_.reserve(kept.size() * align);
      for (uint64_t k : kept) {
        const uint64_t p1 = std::min(t.cols, (k + 1) * align);
        for (uint64_t p = k * align; p < p1; ++p) {
          const uint32_t c = t.in_perm[p];
          perm_.push_back(c >= b && c < e ? (uint32_t)(c - b) : DC_PERM_NONE);
        }
      }
      v.in_perm = perm_.data();
    }
    keep_v_blocks(t, align, kept);
  } else if (t.kind == DC_KIND_BITDELTA) {
    const uint64_t fw = dc_row_words(t.cols, 1), w = dc_row_words(n, 1);
    std::vector<uint32_t> s(checked_mul(t.rows, w, "BitDelta shard"), 0u);
    for (uint64_t o = 0; o < t.rows; ++o) {
      const uint32_t* src = &t.signs[o * fw];
      uint32_t* dst = &s[o * w];
      if (b % 32 == 0) {
        std::memcpy(dst, src + b / 32, w * 4);  // aligned: whole words (then clear the tail bits)
        if (n % 32) dst[w - 1] &= (1u << (n % 32)) - 1u;
      } else {
        for (uint64_t c = 0; c < n; ++c) dc_pack_code(dst, c, 1, dc_unpack_code(src, b + c, 1));
      }
    }
    words_.push_back(std::move(s));
    v.signs = words_.back().data();
  } else {
    const uint32_t es = dtype_size(t.dtype);
    dense_.resize(checked_mul(checked_mul(t.rows, n, "dense shard"), es, "dense shard"));
    for (uint64_t o = 0; o < t.rows; ++o)
      std::memcpy(&dense_[o * n * es], &t.dense[(o * t.cols + b) * es], n * es);
    v.dense = dense_.data();
  }
}

void TensorViewStorage::keep_v_blocks(const PackedTensor& t, uint64_t align, const std::vector<uint64_t>& kept) {
  const uint64_t nblocks = (t.cols + align - 1) / align;
  auto block_len = [&](uint64_t k) { return std::min(t.cols, (k + 1) * align) - k * align; };
  uint64_t v_len = 0;
  for (uint64_t k : kept) v_len += block_len(k);
  view_.v_len = v_len;
  if (kept.size() == nblocks) return;  // every block: the original arrays serve as they are
  // Only the last block of a row may be short, and being the highest index it is also the last
  // kept: every other kept block is whole code blocks and whole groups, so the copies below land
  // on code-block and group boundaries of the packed shard row.
  for (size_t i = 0; i < bands_.size(); ++i) {
    const PackedBand& pb = t.bands[i];
    const BandDesc& d = pb.desc;
    const uint64_t r = d.rank(), full_w = dc_row_words(t.cols, d.bits), w = dc_row_words(v_len, d.bits);
    std::vector<uint32_t> codes(checked_mul(r, w, "V shard"));
    for (uint64_t j = 0; j < r; ++j) {
      uint64_t at = j * w;
      for (uint64_t k : kept) {
        const uint64_t nw = dc_row_words(block_len(k), d.bits);
        std::memcpy(&codes[at], &pb.v_codes[j * full_w + k * align / DC_CODE_BLOCK * d.bits], nw * 4);
        at += nw;
      }
    }
    words_.push_back(std::move(codes));
    bands_[i].v_codes = words_.back().data();
    if (d.bits != 16 && d.group_size) {
      const uint64_t g = d.group_size, full_g = dc_row_groups(t.cols, g), gn = dc_row_groups(v_len, g);
      std::vector<dc_qparam> qp(checked_mul(r, gn, "V shard qparams"));
      for (uint64_t j = 0; j < r; ++j) {
        uint64_t at = j * gn;
        for (uint64_t k : kept) {
          const uint64_t ng = dc_row_groups(block_len(k), g);
          std::memcpy(&qp[at], &pb.v_qparams[j * full_g + k * align / g], ng * sizeof(dc_qparam));
          at += ng;
        }
      }
      qparams_.push_back(std::move(qp));
      bands_[i].v_qparams = qparams_.back().data();
    }
  }
}

}  // namespace dc

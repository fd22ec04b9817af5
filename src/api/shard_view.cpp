#include "api/shard_view.h"

#include <cstring>
#include <numeric>

#include "common/checked.h"
#include "common/error.h"

namespace dc {

ShardRange resolve_shard(const dc_shard& s, uint64_t rows, uint64_t cols, const char* name) {
  ShardRange r;
  r.split = s.split;
  if (s.split == DC_SHARD_NONE) return r;
  DC_CHECK(s.split == DC_SHARD_ROWS || s.split == DC_SHARD_COLS, DC_ERR_INVALID_ARGUMENT,
           "shard.split %d is not a dc_shard_split value", (int)s.split);
  const uint64_t dim = s.split == DC_SHARD_ROWS ? rows : cols;
  if (s.end > s.begin) {
    DC_CHECK(s.end <= dim, DC_ERR_INVALID_ARGUMENT, "shard range [%llu, %llu) exceeds the %llu %s of '%s'",
             (unsigned long long)s.begin, (unsigned long long)s.end, (unsigned long long)dim,
             s.split == DC_SHARD_ROWS ? "rows" : "columns", name);
    r.begin = s.begin;
    r.end = s.end;
  } else {
    DC_CHECK(s.count >= 1 && s.index < s.count, DC_ERR_INVALID_ARGUMENT,
             "shard index %u of count %u is invalid", s.index, s.count);
    const uint64_t chunk = (dim + s.count - 1) / s.count;
    r.begin = std::min<uint64_t>(dim, (uint64_t)s.index * chunk);
    r.end = std::min<uint64_t>(dim, r.begin + chunk);
    DC_CHECK(r.end > r.begin, DC_ERR_INVALID_ARGUMENT,
             "shard %u of %u of '%s' is empty (%llu %s)", s.index, s.count, name, (unsigned long long)dim,
             s.split == DC_SHARD_ROWS ? "rows" : "columns");
  }
  return r;
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
  v.bitdelta_scale = t.bitdelta_scale;
  v.signs = t.signs.empty() ? nullptr : t.signs.data();
  v.dense = t.dense.empty() ? nullptr : t.dense.data();
  for (const auto& b : t.bands)
    bands_.push_back({b.desc.bits, b.desc.rank_begin, b.desc.rank_end, b.desc.group_size, b.v_codes.data(),
                      b.v_qparams.empty() ? nullptr : b.v_qparams.data(), b.u_codes.data(),
                      b.u_qparams.empty() ? nullptr : b.u_qparams.data()});

  const bool one_d = t.kind == DC_KIND_DENSE && t.cols == 1;
  if (sh.split == DC_SHARD_ROWS) {
    const uint64_t b = sh.begin, n = sh.end - sh.begin;
    v.rows = n;
    for (size_t i = 0; i < bands_.size(); ++i) {
      const uint32_t bits = t.bands[i].desc.bits, g = t.bands[i].desc.group_size, r = t.bands[i].desc.rank();
      bands_[i].u_codes += b * dc_row_words(r, bits);
      if (bands_[i].u_qparams) bands_[i].u_qparams += b * dc_row_groups(r, g);
    }
    if (v.signs) v.signs += b * dc_row_words(t.cols, 1);
    if (v.dense) v.dense = static_cast<const uint8_t*>(v.dense) + b * t.cols * dtype_size(t.dtype);
  } else if (sh.split == DC_SHARD_COLS) {
    DC_CHECK(!one_d, DC_ERR_UNSUPPORTED,
             "'%s' is 1-D (a bias): a row-parallel layer's bias is not split; load it unsharded on one rank",
             t.name.c_str());
    const uint64_t b = sh.begin, e = sh.end, n = e - b;
    v.cols = n;
    if (t.kind == DC_KIND_LOWRANK && !t.in_perm.empty()) {
      // Act-order scatters the shard's inputs over V̂'s positions: keep V̂ whole, remap the permutation.
      perm_.resize(t.cols);
      for (uint64_t p = 0; p < t.cols; ++p)
        perm_[p] = (t.in_perm[p] >= b && t.in_perm[p] < e) ? (uint32_t)(t.in_perm[p] - b) : DC_PERM_NONE;
      v.in_perm = perm_.data();
    } else if (t.kind == DC_KIND_LOWRANK) {
      // Keep the groups covering [b, e): [a, a2) aligned to every band's group (and the code block).
      uint64_t align = DC_CODE_BLOCK;
      for (const auto& band : t.bands)
        if (band.desc.group_size) align = std::lcm<uint64_t>(align, band.desc.group_size);
      const uint64_t a = b / align * align;
      const uint64_t a2 = std::min<uint64_t>(t.cols, (e + align - 1) / align * align);
      v.v_len = a2 - a;
      v.v_col_offset = (uint32_t)(b - a);
      for (size_t i = 0; i < bands_.size(); ++i) {
        const auto& d = t.bands[i].desc;
        const uint64_t r = d.rank(), full_w = dc_row_words(t.cols, d.bits), w = dc_row_words(v.v_len, d.bits);
        const uint64_t w0 = a / DC_CODE_BLOCK * d.bits;
        std::vector<uint32_t> codes(r * w);
        for (uint64_t j = 0; j < r; ++j)
          std::memcpy(&codes[j * w], &t.bands[i].v_codes[j * full_w + w0], w * 4);
        words_.push_back(std::move(codes));
        bands_[i].v_codes = words_.back().data();
        if (d.group_size) {
          const uint64_t full_g = dc_row_groups(t.cols, d.group_size), gn = dc_row_groups(v.v_len, d.group_size);
          const uint64_t g0 = a / d.group_size;
          std::vector<dc_qparam> qp(r * gn);
          for (uint64_t j = 0; j < r; ++j)
            std::memcpy(&qp[j * gn], &t.bands[i].v_qparams[j * full_g + g0], gn * sizeof(dc_qparam));
          qparams_.push_back(std::move(qp));
          bands_[i].v_qparams = qparams_.back().data();
        }
      }
    } else if (t.kind == DC_KIND_BITDELTA) {
      const uint64_t fw = dc_row_words(t.cols, 1), w = dc_row_words(n, 1);
      std::vector<uint32_t> s(t.rows * w, 0u);
      for (uint64_t o = 0; o < t.rows; ++o)
        for (uint64_t c = 0; c < n; ++c)
          dc_pack_code(&s[o * w], c, 1, dc_unpack_code(&t.signs[o * fw], b + c, 1));
      words_.push_back(std::move(s));
      v.signs = words_.back().data();
    } else {
      const uint32_t es = dtype_size(t.dtype);
      dense_.resize(t.rows * n * es);
      for (uint64_t o = 0; o < t.rows; ++o)
        std::memcpy(&dense_[o * n * es], &t.dense[(o * t.cols + b) * es], n * es);
      v.dense = dense_.data();
    }
  }
  v.n_bands = (uint32_t)bands_.size();
  v.bands = bands_.empty() ? nullptr : bands_.data();
}

}  // namespace dc

// The float64 reference ΔŴ of a PackedTensor, decoded with the one shared decoder of pack_layout.h:
// what every backend's apply and merge are tested against. Checks array sizes itself so a malformed
// tensor fails with a message instead of reading out of bounds.
#include <cblas.h>

#include <algorithm>

#include "common/checked.h"
#include "common/error.h"
#include "common/half.h"
#include "math/lowrank.h"
#include "math/quant_grid.h"

namespace dc {

namespace {

// One packed part (nrows rows of len codes) decoded to doubles, row-major nrows × len.
std::vector<double> decode_part(const std::string& name, const char* part, const BandDesc& d,
                                uint64_t nrows, uint64_t len, const std::vector<uint32_t>& codes,
                                const std::vector<dc_qparam>& qparams) {
  const uint64_t words = dc_row_words(len, d.bits);
  DC_CHECK(codes.size() == checked_mul(nrows, words, name.c_str()), DC_ERR_CORRUPT,
           "%s: band [%u, %u) %s part has %zu code words, expected %llu", name.c_str(), d.rank_begin,
           d.rank_end, part, codes.size(), (unsigned long long)(nrows * words));
  std::vector<double> out(nrows * len);
  if (d.bits == 16) {
    DC_CHECK(qparams.empty(), DC_ERR_CORRUPT, "%s: 16-bit band [%u, %u) %s part has qparams", name.c_str(),
             d.rank_begin, d.rank_end, part);
    for (uint64_t i = 0; i < nrows; ++i)
      for (uint64_t c = 0; c < len; ++c) out[i * len + c] = half_to_float(unpack_half(&codes[i * words], c));
    return out;
  }
  DC_CHECK(d.group_size >= DC_CODE_BLOCK && d.group_size % DC_CODE_BLOCK == 0, DC_ERR_CORRUPT,
           "%s: band [%u, %u) has group size %u", name.c_str(), d.rank_begin, d.rank_end, d.group_size);
  const uint64_t groups = dc_row_groups(len, d.group_size);
  DC_CHECK(qparams.size() == nrows * groups, DC_ERR_CORRUPT,
           "%s: band [%u, %u) %s part has %zu qparams, expected %llu", name.c_str(), d.rank_begin, d.rank_end,
           part, qparams.size(), (unsigned long long)(nrows * groups));
  for (uint64_t i = 0; i < nrows; ++i)
    for (uint64_t c = 0; c < len; ++c) {
      const dc_qparam p = qparams[i * groups + c / d.group_size];
      const double code = dc_unpack_code(&codes[i * words], c, d.bits);
      out[i * len + c] = (double)half_to_float(p.scale) * (code - (double)half_to_float(p.zero));
    }
  return out;
}

void reconstruct_lowrank(const PackedTensor& t, std::vector<double>& out) {
  const std::string& name = t.name;
  DC_CHECK(t.sigma.size() == t.rank, DC_ERR_CORRUPT, "%s: %zu singular values for rank %u", name.c_str(),
           t.sigma.size(), t.rank);
  DC_CHECK(t.in_perm.empty() || t.in_perm.size() == t.cols, DC_ERR_CORRUPT,
           "%s: in_perm has %zu entries, expected 0 or %llu", name.c_str(), t.in_perm.size(),
           (unsigned long long)t.cols);
  std::vector<char> seen(t.in_perm.size(), 0);
  for (size_t p = 0; p < t.in_perm.size(); ++p) {
    DC_CHECK(t.in_perm[p] < t.cols && !seen[t.in_perm[p]], DC_ERR_CORRUPT,
             "%s: in_perm[%zu] = %u is out of range or repeated", name.c_str(), p, t.in_perm[p]);
    seen[t.in_perm[p]] = 1;
  }
  DC_CHECK(t.rows <= (uint64_t)INT32_MAX && t.cols <= (uint64_t)INT32_MAX, DC_ERR_LIMIT,
           "%s: shape exceeds 32-bit BLAS dimensions", name.c_str());
  uint32_t next = 0;
  const uint64_t cols = t.cols;
  for (const PackedBand& b : t.bands) {
    const BandDesc& d = b.desc;
    DC_CHECK(dc_valid_band_bits(d.bits) && d.rank_begin == next && d.rank_end > d.rank_begin &&
                 d.rank_end <= t.rank,
             DC_ERR_CORRUPT, "%s: band [%u, %u) of %u bits does not continue at rank %u within rank %u",
             name.c_str(), d.rank_begin, d.rank_end, d.bits, next, t.rank);
    next = d.rank_end;
    const uint64_t rb = d.rank();
    std::vector<double> v = decode_part(name, "V", d, rb, cols, b.v_codes, b.v_qparams);
    std::vector<double> u = decode_part(name, "U", d, t.rows, rb, b.u_codes, b.u_qparams);
    std::vector<double> vo(rb * cols);  // V̂ rows in original column order
    for (uint64_t j = 0; j < rb; ++j)
      for (uint64_t p = 0; p < cols; ++p)
        vo[j * cols + (t.in_perm.empty() ? p : t.in_perm[p])] = v[j * cols + p] * (double)t.sigma[d.rank_begin + j];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)t.rows, (int)cols, (int)rb, 1.0, u.data(),
                (int)rb, vo.data(), (int)cols, 1.0, out.data(), (int)cols);
  }
  DC_CHECK(next == t.rank, DC_ERR_CORRUPT, "%s: bands cover rank %u of %u", name.c_str(), next, t.rank);
}

}  // namespace

std::vector<double> reconstruct_reference(const PackedTensor& t) {
  const uint64_t n = checked_mul(t.rows, t.cols, t.name.c_str());
  std::vector<double> out(n, 0.0);
  switch (t.kind) {
    case DC_KIND_LOWRANK:
      reconstruct_lowrank(t, out);
      break;
    case DC_KIND_BITDELTA: {
      const uint64_t words = dc_row_words(t.cols, 1);
      DC_CHECK(t.signs.size() == checked_mul(t.rows, words, t.name.c_str()), DC_ERR_CORRUPT,
               "%s: %zu sign words, expected %llu", t.name.c_str(), t.signs.size(),
               (unsigned long long)(t.rows * words));
      for (uint64_t i = 0; i < t.rows; ++i)
        for (uint64_t c = 0; c < t.cols; ++c)
          out[i * t.cols + c] = (double)t.bitdelta_scale * (2.0 * dc_unpack_code(&t.signs[i * words], c, 1) - 1.0);
      break;
    }
    case DC_KIND_DENSE: {
      DC_CHECK(t.dtype == DC_DTYPE_F32 || t.dtype == DC_DTYPE_F16 || t.dtype == DC_DTYPE_BF16, DC_ERR_CORRUPT,
               "%s: unknown dense dtype %d", t.name.c_str(), (int)t.dtype);
      const uint32_t es = dtype_size(t.dtype);
      DC_CHECK(t.dense.size() == checked_mul(n, es, t.name.c_str()), DC_ERR_CORRUPT,
               "%s: %zu dense bytes, expected %llu", t.name.c_str(), t.dense.size(),
               (unsigned long long)(n * es));
      const uint8_t* p = t.dense.data();
      for (uint64_t i = 0; i < n; ++i) {
        if (t.dtype == DC_DTYPE_F32) {
          uint32_t u = 0;
          for (int b = 0; b < 4; ++b) u |= (uint32_t)p[4 * i + b] << (8 * b);
          out[i] = bits_to_float(u);
        } else {
          const uint16_t h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
          out[i] = t.dtype == DC_DTYPE_F16 ? half_to_float(h) : bf16_to_float(h);
        }
      }
      break;
    }
    default:
      fail(DC_ERR_CORRUPT, format("%s: unknown tensor kind %d", t.name.c_str(), (int)t.kind));
  }
  return out;
}

}  // namespace dc

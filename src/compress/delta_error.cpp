#include "compress/delta_error.h"

#include <cmath>
#include <vector>

#include "common/half.h"

namespace dc {
namespace {

// Value of code position i of a packed row of width `bits` with its group's qparams.
inline float decode_at(const uint32_t* row, const dc_qparam* qrow, uint64_t i, uint32_t bits, uint32_t group) {
  if (bits == 16) return half_to_float(reinterpret_cast<const uint16_t*>(row)[i]);
  const dc_qparam q = qrow[i / group];
  return half_to_float(q.scale) * ((float)dc_unpack_code(row, i, bits) - half_to_float(q.zero));
}

}  // namespace

std::vector<float> decode_v_all(const PackedTensor& t) {
  std::vector<float> v((uint64_t)t.rank * t.cols, 0.f);
  for (const auto& b : t.bands) {
    const auto& d = b.desc;
    const uint64_t w = dc_row_words(t.cols, d.bits), g = d.group_size ? dc_row_groups(t.cols, d.group_size) : 0;
    for (uint32_t j = 0; j < d.rank(); ++j) {
      float* out = &v[(uint64_t)(d.rank_begin + j) * t.cols];
      for (uint64_t p = 0; p < t.cols; ++p) {
        const uint64_t col = t.in_perm.empty() ? p : t.in_perm[p];
        out[col] = decode_at(&b.v_codes[j * w], g ? &b.v_qparams[j * g] : nullptr, p, d.bits, d.group_size);
      }
    }
  }
  return v;
}

void decode_u_row(const PackedTensor& t, uint64_t o, float* out) {
  for (const auto& b : t.bands) {
    const auto& d = b.desc;
    const uint64_t w = dc_row_words(d.rank(), d.bits), g = d.group_size ? dc_row_groups(d.rank(), d.group_size) : 0;
    for (uint32_t j = 0; j < d.rank(); ++j)
      out[d.rank_begin + j] = decode_at(&b.u_codes[o * w], g ? &b.u_qparams[o * g] : nullptr, j, d.bits, d.group_size);
  }
}

double relative_error_sampled(const PackedTensor& t, const float* delta, uint64_t max_rows) {
  const uint64_t step = t.rows <= max_rows ? 1 : (t.rows + max_rows - 1) / max_rows;
  std::vector<float> vhat, urow(t.rank);
  if (t.kind == DC_KIND_LOWRANK) vhat = decode_v_all(t);
  std::vector<double> row(t.cols);
  double err = 0, ref = 0;
  for (uint64_t o = 0; o < t.rows; o += step) {
    std::fill(row.begin(), row.end(), 0.0);
    if (t.kind == DC_KIND_LOWRANK) {
      decode_u_row(t, o, urow.data());
      for (uint32_t j = 0; j < t.rank; ++j) {
        const double a = (double)urow[j] * t.sigma[j];
        const float* vj = &vhat[(uint64_t)j * t.cols];
        for (uint64_t c = 0; c < t.cols; ++c) row[c] += a * vj[c];
      }
    } else if (t.kind == DC_KIND_BITDELTA) {
      const uint32_t* srow = &t.signs[o * dc_row_words(t.cols, 1)];
      for (uint64_t c = 0; c < t.cols; ++c) row[c] = dc_unpack_code(srow, c, 1) ? t.bitdelta_scale : -t.bitdelta_scale;
    } else {
      for (uint64_t c = 0; c < t.cols; ++c) {
        const uint64_t i = o * t.cols + c;
        switch (t.dtype) {
          case DC_DTYPE_F32: row[c] = reinterpret_cast<const float*>(t.dense.data())[i]; break;
          case DC_DTYPE_F16: row[c] = half_to_float(reinterpret_cast<const uint16_t*>(t.dense.data())[i]); break;
          case DC_DTYPE_BF16: row[c] = bf16_to_float(reinterpret_cast<const uint16_t*>(t.dense.data())[i]); break;
        }
      }
    }
    for (uint64_t c = 0; c < t.cols; ++c) {
      const double d = delta[o * t.cols + c];
      err += (d - row[c]) * (d - row[c]);
      ref += d * d;
    }
  }
  return ref > 0 ? std::sqrt(err / ref) : std::sqrt(err);
}

}  // namespace dc

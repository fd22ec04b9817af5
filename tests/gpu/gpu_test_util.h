// Helpers for the GPU tests and benchmark: random packed deltas (host), a float64 reference of
// ΔW's factors, fp16/bf16 rounding on the host, and a minimal CHECK harness (the GPU machine may
// lack GoogleTest; these programs only need the CUDA runtime).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace gt {

// ---- half floats on the host ---------------------------------------------------------------------
inline uint16_t f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
  uint32_t man = x & 0x7fffffu;
  if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
  if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
  if (exp <= 0) {
    if (exp < -10) return (uint16_t)sign;
    man |= 0x800000u;
    const int shift = 14 - exp;
    uint32_t h = man >> shift;
    const uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    return (uint16_t)(sign | h);
  }
  uint32_t h = ((uint32_t)exp << 10) | (man >> 13);
  const uint32_t rem = man & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
  return (uint16_t)(sign | h);
}
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu, x;
  if (exp == 0) {
    if (man == 0) x = sign;
    else {
      exp = 127 - 15 + 1;
      while (!(man & 0x400u)) { man <<= 1; --exp; }
      x = sign | (exp << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) x = sign | 0x7f800000u | (man << 13);
  else x = sign | ((exp + 127 - 15) << 23) | (man << 13);
  float f;
  memcpy(&f, &x, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
inline float bf16_to_f32(uint16_t b) {
  const uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
inline size_t dtype_size(int dt) { return dt == DC_DTYPE_F32 ? 4 : 2; }
inline const char* dtype_name(int dt) { return dt == DC_DTYPE_F32 ? "f32" : dt == DC_DTYPE_F16 ? "f16" : "bf16"; }
inline float round_to(float v, int dt) {
  return dt == DC_DTYPE_F16 ? f16_to_f32(f32_to_f16(v)) : dt == DC_DTYPE_BF16 ? bf16_to_f32(f32_to_bf16(v)) : v;
}
// Host buffer of n elements of dtype dt.
struct HostArray {
  int dt = DC_DTYPE_F32;
  std::vector<uint8_t> bytes;
  HostArray() = default;
  HostArray(int dtype, size_t n) : dt(dtype), bytes(n * dtype_size(dtype)) {}
  size_t size() const { return bytes.size() / dtype_size(dt); }
  float get(size_t i) const {
    if (dt == DC_DTYPE_F32) return reinterpret_cast<const float*>(bytes.data())[i];
    const uint16_t h = reinterpret_cast<const uint16_t*>(bytes.data())[i];
    return dt == DC_DTYPE_F16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
  void set(size_t i, float v) {
    if (dt == DC_DTYPE_F32) reinterpret_cast<float*>(bytes.data())[i] = v;
    else reinterpret_cast<uint16_t*>(bytes.data())[i] = dt == DC_DTYPE_F16 ? f32_to_f16(v) : f32_to_bf16(v);
  }
  void* data() { return bytes.data(); }
};

// ---- random packed deltas ------------------------------------------------------------------------
struct BandSpec {
  uint32_t bits, rank;
};

// Owns every array a dc_tensor_view points at.
struct HostDelta {
  dc_tensor_view view{};
  std::vector<float> sigma;
  std::vector<dc_band_view> bands;
  std::vector<std::vector<uint32_t>> codes;
  std::vector<std::vector<dc_qparam>> qps;
  std::vector<uint32_t> perm;
  std::vector<uint32_t> signs;
  HostArray dense;
};

inline void fill_rows(std::mt19937_64& rng, std::vector<uint32_t>& codes, std::vector<dc_qparam>& qp,
                      uint64_t nrows, uint64_t len, uint32_t bits, uint32_t gs, float scale_mag) {
  const uint64_t words = dc_row_words(len, bits);
  codes.assign(nrows * words, 0);
  if (bits == 16) {
    std::normal_distribution<float> nd(0.f, scale_mag * 4.f);
    for (uint64_t r = 0; r < nrows; ++r) {
      uint16_t* h = reinterpret_cast<uint16_t*>(codes.data() + r * words);
      for (uint64_t i = 0; i < len; ++i) h[i] = f32_to_f16(nd(rng));
    }
    qp.clear();
    return;
  }
  const uint64_t groups = dc_row_groups(len, gs);
  qp.resize(nrows * groups);
  std::uniform_int_distribution<uint32_t> cd(0, (1u << bits) - 1);
  std::uniform_real_distribution<float> sd(0.5f * scale_mag, 1.5f * scale_mag);
  for (uint64_t r = 0; r < nrows; ++r) {
    for (uint64_t i = 0; i < len; ++i) dc_pack_code(codes.data() + r * words, i, bits, cd(rng));
    for (uint64_t g = 0; g < groups; ++g)
      qp[r * groups + g] = dc_qparam{f32_to_f16(sd(rng)), f32_to_f16((float)cd(rng))};
  }
}

// Low-rank delta rows×cols; v_len ≥ cols with V position p → x[p - offset] or x[perm[p]].
inline void make_lowrank(HostDelta& h, std::mt19937_64& rng, uint64_t rows, uint64_t cols,
                         const std::vector<BandSpec>& spec, uint32_t gs, bool with_perm = false,
                         uint32_t v_col_offset = 0, uint64_t v_len = 0) {
  if (v_len == 0) v_len = cols + v_col_offset;
  uint32_t rank = 0;
  for (auto& b : spec) rank += b.rank;
  h.view = dc_tensor_view{};
  h.view.rows = rows;
  h.view.cols = cols;
  h.view.kind = DC_KIND_LOWRANK;
  h.view.dtype = DC_DTYPE_F16;
  h.view.rank = rank;
  h.view.n_bands = (uint32_t)spec.size();
  h.view.v_len = v_len;
  h.view.v_col_offset = with_perm ? 0 : v_col_offset;
  h.sigma.resize(rank);
  for (uint32_t k = 0; k < rank; ++k) h.sigma[k] = 2.0f / (1.0f + 0.01f * k);
  h.codes.assign(2 * spec.size(), {});
  h.qps.assign(2 * spec.size(), {});
  h.bands.resize(spec.size());
  uint32_t r0 = 0;
  for (size_t b = 0; b < spec.size(); ++b) {
    const uint32_t bits = spec[b].bits, rb = spec[b].rank;
    fill_rows(rng, h.codes[2 * b], h.qps[2 * b], rb, v_len, bits, gs, 0.02f);
    fill_rows(rng, h.codes[2 * b + 1], h.qps[2 * b + 1], rows, rb, bits, gs, 0.02f);
    dc_band_view& bv = h.bands[b];
    bv.bits = bits;
    bv.rank_begin = r0;
    bv.rank_end = r0 + rb;
    bv.group_size = bits == 16 ? 0 : gs;
    bv.v_codes = h.codes[2 * b].data();
    bv.v_qparams = bits == 16 ? nullptr : h.qps[2 * b].data();
    bv.u_codes = h.codes[2 * b + 1].data();
    bv.u_qparams = bits == 16 ? nullptr : h.qps[2 * b + 1].data();
    r0 += rb;
  }
  h.view.sigma = h.sigma.data();
  h.view.bands = h.bands.data();
  if (with_perm) {
    // A random injective map of positions onto columns; positions past cols read nothing.
    std::vector<uint32_t> cols_perm(v_len);
    for (uint64_t i = 0; i < v_len; ++i) cols_perm[i] = (uint32_t)i;
    std::shuffle(cols_perm.begin(), cols_perm.end(), rng);
    h.perm.resize(v_len);
    for (uint64_t p = 0; p < v_len; ++p) h.perm[p] = cols_perm[p] < cols ? cols_perm[p] : DC_PERM_NONE;
    h.view.in_perm = h.perm.data();
  }
}

inline void make_bitdelta(HostDelta& h, std::mt19937_64& rng, uint64_t rows, uint64_t cols, float scale) {
  h.view = dc_tensor_view{};
  h.view.rows = rows;
  h.view.cols = cols;
  h.view.kind = DC_KIND_BITDELTA;
  h.view.dtype = DC_DTYPE_F16;
  h.view.bitdelta_scale = scale;
  const uint64_t words = dc_row_words(cols, 1);
  h.signs.assign(rows * words, 0);
  for (uint64_t o = 0; o < rows; ++o)
    for (uint64_t c = 0; c < cols; ++c) dc_pack_code(h.signs.data() + o * words, c, 1, (uint32_t)(rng() & 1));
  h.view.signs = h.signs.data();
}

// Dense delta rows×cols; vector = a 1-D tensor (bias, stored rows × 1, is_vector = 1).
inline void make_dense(HostDelta& h, std::mt19937_64& rng, uint64_t rows, uint64_t cols, int dt, bool vector = false) {
  h.view = dc_tensor_view{};
  h.view.rows = rows;
  h.view.cols = cols;
  h.view.kind = DC_KIND_DENSE;
  h.view.dtype = dt;
  h.view.is_vector = vector ? 1 : 0;
  h.dense = HostArray(dt, rows * cols);
  std::normal_distribution<float> nd(0.f, 0.05f);
  for (size_t i = 0; i < rows * cols; ++i) h.dense.set(i, nd(rng));
  h.view.dense = h.dense.data();
}

// ---- float64 reference -----------------------------------------------------------------------------
inline double code_value(const uint32_t* row, const dc_qparam* qp, uint32_t bits, uint32_t gs, uint64_t i) {
  if (bits == 16) return f16_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
  const dc_qparam q = qp[i / gs];
  return (double)f16_to_f32(q.scale) * ((double)dc_unpack_code(row, i, bits) - (double)f16_to_f32(q.zero));
}

// Factors of a low-rank delta: Vs[k][c] = σ_k·V̂[k][p(c)] (cols-indexed), U[o][k].
struct RefFactors {
  uint64_t rows = 0, cols = 0, rank = 0;
  std::vector<double> vs, u;
};
// magnitude: the factors of the magnitudes the kernels' fp32 arithmetic sums, |σ|·|s|·(c + |z|) for a
// quantized code (they fold the zero point per block: s·(Σ c·x − z·Σ x)), |value| otherwise — with
// |x|, ref_delta_apply then gives the scale of the rounding error an fp32 kernel may make.
inline double code_magnitude(const uint32_t* row, const dc_qparam* qp, uint32_t bits, uint32_t gs, uint64_t i) {
  if (bits == 16) return std::fabs(f16_to_f32(reinterpret_cast<const uint16_t*>(row)[i]));
  const dc_qparam q = qp[i / gs];
  return std::fabs((double)f16_to_f32(q.scale)) *
         ((double)dc_unpack_code(row, i, bits) + std::fabs((double)f16_to_f32(q.zero)));
}
inline RefFactors ref_factors(const dc_tensor_view& v, bool magnitude = false) {
  auto value = magnitude ? code_magnitude : code_value;
  RefFactors f;
  f.rows = v.rows;
  f.cols = v.cols;
  f.rank = v.rank;
  f.vs.assign(v.rank * v.cols, 0.0);
  f.u.assign(v.rows * v.rank, 0.0);
  for (uint32_t b = 0; b < v.n_bands; ++b) {
    const dc_band_view& bv = v.bands[b];
    const uint64_t rb = bv.rank_end - bv.rank_begin;
    const uint64_t vw = dc_row_words(v.v_len, bv.bits), vg = bv.bits == 16 ? 0 : dc_row_groups(v.v_len, bv.group_size);
    const uint64_t uw = dc_row_words(rb, bv.bits), ug = bv.bits == 16 ? 0 : dc_row_groups(rb, bv.group_size);
    for (uint64_t j = 0; j < rb; ++j) {
      const uint64_t k = bv.rank_begin + j;
      for (uint64_t p = 0; p < v.v_len; ++p) {
        uint64_t c = v.in_perm ? (uint64_t)v.in_perm[p] : p - v.v_col_offset;
        if (v.in_perm && v.in_perm[p] == DC_PERM_NONE) continue;
        if (!v.in_perm && p < v.v_col_offset) continue;
        if (c >= v.cols) continue;
        f.vs[k * v.cols + c] = (magnitude ? std::fabs(v.sigma[k]) : v.sigma[k]) *
                               value(bv.v_codes + j * vw, bv.v_qparams + j * vg, bv.bits, bv.group_size, p);
      }
    }
    for (uint64_t o = 0; o < v.rows; ++o)
      for (uint64_t j = 0; j < rb; ++j)
        f.u[o * v.rank + bv.rank_begin + j] =
            value(bv.u_codes + o * uw, bv.u_qparams + o * ug, bv.bits, bv.group_size, j);
  }
  return f;
}

// out[i][o] = Σ_c x[i][c]·ΔW[o][c] in float64 for any kind (x as rounded floats, ldx = cols).
inline void ref_delta_apply(const dc_tensor_view& v, const RefFactors* f, const std::vector<float>& x, uint64_t m,
                            std::vector<double>& out) {
  out.assign(m * v.rows, 0.0);
  if (v.kind == DC_KIND_LOWRANK) {
    std::vector<double> t(f->rank);
    for (uint64_t i = 0; i < m; ++i) {
      for (uint64_t k = 0; k < f->rank; ++k) {
        double s = 0;
        const double* vr = &f->vs[k * f->cols];
        const float* xr = &x[i * f->cols];
        for (uint64_t c = 0; c < f->cols; ++c) s += vr[c] * xr[c];
        t[k] = s;
      }
      for (uint64_t o = 0; o < f->rows; ++o) {
        double s = 0;
        const double* ur = &f->u[o * f->rank];
        for (uint64_t k = 0; k < f->rank; ++k) s += ur[k] * t[k];
        out[i * v.rows + o] = s;
      }
    }
  } else if (v.kind == DC_KIND_BITDELTA) {
    const uint64_t words = dc_row_words(v.cols, 1);
    for (uint64_t i = 0; i < m; ++i)
      for (uint64_t o = 0; o < v.rows; ++o) {
        double s = 0;
        for (uint64_t c = 0; c < v.cols; ++c)
          s += (dc_unpack_code(v.signs + o * words, c, 1) ? 1.0 : -1.0) * x[i * v.cols + c];
        out[i * v.rows + o] = s * v.bitdelta_scale;
      }
  } else {
    HostArray d;
    d.dt = v.dtype;
    const size_t n = v.rows * v.cols;
    d.bytes.assign(static_cast<const uint8_t*>(v.dense), static_cast<const uint8_t*>(v.dense) + n * dtype_size(v.dtype));
    for (uint64_t i = 0; i < m; ++i)
      for (uint64_t o = 0; o < v.rows; ++o) {
        if (v.is_vector) {  // 1-D bias: added to every row, x ignored
          out[i * v.rows + o] = d.get(o);
          continue;
        }
        double s = 0;
        for (uint64_t c = 0; c < v.cols; ++c) s += (double)d.get(o * v.cols + c) * x[i * v.cols + c];
        out[i * v.rows + o] = s;
      }
  }
}

// ---- checks ----------------------------------------------------------------------------------------
inline int& failures() {
  static int n = 0;
  return n;
}
inline int& checks() {
  static int n = 0;
  return n;
}
#define GT_CHECK(cond, ...)                                                            \
  do {                                                                                 \
    ++gt::checks();                                                                    \
    if (!(cond)) {                                                                     \
      ++gt::failures();                                                                \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                  \
      fprintf(stderr, __VA_ARGS__);                                                    \
      fprintf(stderr, "\n");                                                           \
    }                                                                                  \
  } while (0)

// ‖got − ref‖ / ‖ref‖, NaN when any value is not finite.
inline double rel_err(const std::vector<float>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return NAN;
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace gt

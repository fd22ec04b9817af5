// Test inputs for the CPU backend and an independent float64 reference.
//
// Every delta is generated from plain arrays (one integer code per element, fp16 scales, integer
// zeros), packed with dc_pack_code into a dc_tensor_view, and its float64 ΔW is computed from the
// plain arrays — never through the backend's decoders.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backends/backend.h"
#include "common/half.h"
#include "common/pack_layout.h"

namespace dc_test {

struct BandSpec {
  uint32_t bits, rank, group_size;
};

// Options for a low-rank delta. Empty perm: x read at p - v_col_offset.
struct LowRankSpec {
  LowRankSpec(uint64_t r, uint64_t c, std::vector<BandSpec> b) : rows(r), cols(c), bands(std::move(b)) {}
  uint64_t rows, cols;
  std::vector<BandSpec> bands;
  uint64_t v_len = 0;              // 0: cols
  uint32_t v_col_offset = 0;
  std::vector<uint32_t> in_perm;   // v_len entries (DC_PERM_NONE allowed) or empty
};

// A delta's view plus everything the view points at, and the float64 ΔW (rows × cols).
struct TestDelta {
  dc_tensor_view view{};
  std::vector<double> dw;
  // storage
  std::vector<float> sigma;
  std::vector<dc_band_view> bands;
  std::vector<std::vector<uint32_t>> v_codes, u_codes;
  std::vector<std::vector<dc_qparam>> v_qp, u_qp;
  std::vector<uint32_t> in_perm, signs;
  std::vector<uint8_t> dense;
  uint64_t packed_bytes = 0;
};

inline double f16(uint16_t h) { return dc::half_to_float(h); }

// A random fp16 scale in ±[lo, hi) (the stored bits).
inline uint16_t random_half(std::mt19937_64& rng, float lo, float hi, bool allow_negative) {
  std::uniform_real_distribution<float> mag(lo, hi);
  float v = mag(rng);
  if (allow_negative && (rng() & 1)) v = -v;
  return dc::float_to_half(v);
}

// Generates `n_rows` rows of `len` codes of a band: plain values (double, row-major n_rows × len)
// and the packed codes + qparams exactly as pack_layout.h describes.
inline void make_quantized_rows(std::mt19937_64& rng, uint32_t bits, uint32_t group, uint64_t n_rows,
                                uint64_t len, double value_scale, std::vector<double>& values,
                                std::vector<uint32_t>& codes, std::vector<dc_qparam>& qp) {
  const uint64_t words = dc_row_words(len, bits);
  codes.assign(n_rows * words, 0u);
  values.assign(n_rows * len, 0.0);
  if (bits == 16) {
    qp.clear();
    std::normal_distribution<float> nd(0.f, static_cast<float>(value_scale));
    for (uint64_t r = 0; r < n_rows; ++r)
      for (uint64_t p = 0; p < len; ++p) {
        const uint16_t h = dc::float_to_half(nd(rng));
        dc_pack_code(codes.data() + r * words, p, 16, h);
        values[r * len + p] = f16(h);
      }
    return;
  }
  const uint64_t groups = dc_row_groups(len, group);
  qp.assign(n_rows * groups, dc_qparam{0, 0});
  const uint32_t maxc = (1u << bits) - 1u;
  std::uniform_int_distribution<uint32_t> cd(0, maxc);
  for (uint64_t r = 0; r < n_rows; ++r) {
    for (uint64_t g = 0; g < groups; ++g) {
      const uint16_t s = random_half(rng, static_cast<float>(value_scale / maxc),
                                     static_cast<float>(2 * value_scale / maxc), false);
      const uint16_t z = dc::float_to_half(static_cast<float>(cd(rng)));
      qp[r * groups + g] = dc_qparam{s, z};
    }
    for (uint64_t p = 0; p < len; ++p) {
      const uint32_t c = cd(rng);
      dc_pack_code(codes.data() + r * words, p, bits, c);
      const dc_qparam q = qp[r * groups + p / group];
      values[r * len + p] = f16(q.scale) * (static_cast<double>(c) - f16(q.zero));
    }
  }
}

inline std::unique_ptr<TestDelta> make_lowrank(const LowRankSpec& spec, uint64_t seed) {
  auto t = std::make_unique<TestDelta>();
  std::mt19937_64 rng(seed);
  const uint64_t rows = spec.rows, cols = spec.cols, v_len = spec.v_len ? spec.v_len : spec.cols;
  uint32_t rank = 0;
  for (const auto& b : spec.bands) rank += b.rank;
  t->sigma.resize(rank);
  std::uniform_real_distribution<float> sd(0.5f, 2.f);
  for (auto& s : t->sigma) s = sd(rng);
  t->packed_bytes += rank * 4ull;
  // Vm[j][c]: V̂ mapped to x's columns; Um[o][j].
  std::vector<double> vm(static_cast<size_t>(rank) * cols, 0.0), um(static_cast<size_t>(rows) * rank, 0.0);
  const size_t nb = spec.bands.size();
  t->v_codes.resize(nb);
  t->u_codes.resize(nb);
  t->v_qp.resize(nb);
  t->u_qp.resize(nb);
  t->bands.resize(nb);
  uint32_t r0 = 0;
  for (size_t b = 0; b < nb; ++b) {
    const BandSpec& bs = spec.bands[b];
    std::vector<double> vv, uv;
    make_quantized_rows(rng, bs.bits, bs.group_size, bs.rank, v_len, 0.05, vv, t->v_codes[b], t->v_qp[b]);
    make_quantized_rows(rng, bs.bits, bs.group_size, rows, bs.rank, 0.05, uv, t->u_codes[b], t->u_qp[b]);
    for (uint32_t j = 0; j < bs.rank; ++j)
      for (uint64_t p = 0; p < v_len; ++p) {
        int64_t c;
        if (!spec.in_perm.empty()) {
          c = spec.in_perm[p] == DC_PERM_NONE ? -1 : static_cast<int64_t>(spec.in_perm[p]);
        } else {
          c = static_cast<int64_t>(p) - spec.v_col_offset;
          if (c >= static_cast<int64_t>(cols)) c = -1;
        }
        if (c >= 0) vm[(r0 + j) * cols + c] += vv[j * v_len + p];
      }
    for (uint64_t o = 0; o < rows; ++o)
      for (uint32_t j = 0; j < bs.rank; ++j) um[o * rank + r0 + j] = uv[o * bs.rank + j];
    dc_band_view& bv = t->bands[b];
    bv.bits = bs.bits;
    bv.rank_begin = r0;
    bv.rank_end = r0 + bs.rank;
    bv.group_size = bs.bits == 16 ? 0 : bs.group_size;
    bv.v_codes = t->v_codes[b].data();
    bv.u_codes = t->u_codes[b].data();
    bv.v_qparams = t->v_qp[b].empty() ? nullptr : t->v_qp[b].data();
    bv.u_qparams = t->u_qp[b].empty() ? nullptr : t->u_qp[b].data();
    t->packed_bytes += 4 * (t->v_codes[b].size() + t->u_codes[b].size() + t->v_qp[b].size() + t->u_qp[b].size());
    r0 += bs.rank;
  }
  t->dw.assign(rows * cols, 0.0);
  for (uint64_t o = 0; o < rows; ++o)
    for (uint32_t j = 0; j < rank; ++j) {
      const double us = um[o * rank + j] * t->sigma[j];
      if (us == 0.0) continue;
      const double* v = vm.data() + static_cast<size_t>(j) * cols;
      double* w = t->dw.data() + o * cols;
      for (uint64_t c = 0; c < cols; ++c) w[c] += us * v[c];
    }
  t->in_perm = spec.in_perm;
  dc_tensor_view& v = t->view;
  v.rows = rows;
  v.cols = cols;
  v.kind = DC_KIND_LOWRANK;
  v.dtype = DC_DTYPE_F16;
  v.rank = rank;
  v.n_bands = static_cast<uint32_t>(nb);
  v.sigma = t->sigma.data();
  v.bands = t->bands.data();
  v.v_len = v_len;
  v.in_perm = t->in_perm.empty() ? nullptr : t->in_perm.data();
  v.v_col_offset = spec.v_col_offset;
  return t;
}

inline std::unique_ptr<TestDelta> make_bitdelta(uint64_t rows, uint64_t cols, uint64_t seed) {
  auto t = std::make_unique<TestDelta>();
  std::mt19937_64 rng(seed);
  const uint64_t words = dc_row_words(cols, 1);
  t->signs.assign(rows * words, 0u);
  const float scale = 0.0123f;
  t->dw.resize(rows * cols);
  for (uint64_t o = 0; o < rows; ++o)
    for (uint64_t c = 0; c < cols; ++c) {
      const uint32_t bit = rng() & 1u;
      dc_pack_code(t->signs.data() + o * words, c, 1, bit);
      t->dw[o * cols + c] = bit ? scale : -static_cast<double>(scale);
    }
  t->packed_bytes = t->signs.size() * 4;
  t->view.rows = rows;
  t->view.cols = cols;
  t->view.kind = DC_KIND_BITDELTA;
  t->view.bitdelta_scale = scale;
  t->view.signs = t->signs.data();
  return t;
}

// Rounds v to dtype and stores it at dst[i]; returns the stored value.
inline double store_as(void* dst, uint64_t i, dc_dtype t, double v) {
  switch (t) {
    case DC_DTYPE_F32: static_cast<float*>(dst)[i] = static_cast<float>(v); return static_cast<float>(v);
    case DC_DTYPE_F16: {
      const uint16_t h = dc::float_to_half(static_cast<float>(v));
      static_cast<uint16_t*>(dst)[i] = h;
      return dc::half_to_float(h);
    }
    default: {
      const uint16_t h = dc::float_to_bf16(static_cast<float>(v));
      static_cast<uint16_t*>(dst)[i] = h;
      return dc::bf16_to_float(h);
    }
  }
}
inline double load_as(const void* src, uint64_t i, dc_dtype t) {
  switch (t) {
    case DC_DTYPE_F32: return static_cast<const float*>(src)[i];
    case DC_DTYPE_F16: return dc::half_to_float(static_cast<const uint16_t*>(src)[i]);
    default: return dc::bf16_to_float(static_cast<const uint16_t*>(src)[i]);
  }
}
inline size_t dsize(dc_dtype t) { return t == DC_DTYPE_F32 ? 4 : 2; }

// dense: rows × cols random values in dtype; dw = the stored values.
inline std::unique_ptr<TestDelta> make_dense(uint64_t rows, uint64_t cols, dc_dtype dtype, uint64_t seed) {
  auto t = std::make_unique<TestDelta>();
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 0.02);
  t->dense.resize(rows * cols * dsize(dtype));
  t->dw.resize(rows * cols);
  for (uint64_t k = 0; k < rows * cols; ++k) t->dw[k] = store_as(t->dense.data(), k, dtype, nd(rng));
  t->packed_bytes = t->dense.size();
  t->view.rows = rows;
  t->view.cols = cols;
  t->view.kind = DC_KIND_DENSE;
  t->view.dtype = dtype;
  t->view.dense = t->dense.data();
  t->view.is_vector = cols == 1;  // this harness stores 1-D tensors (biases) as rows × 1
  return t;
}

// A matrix of `rows` × `cols` in dtype with row stride ld, random values; `vals` gets the stored
// values as doubles (rows × cols, packed).
struct Mat {
  std::vector<uint8_t> bytes;
  std::vector<double> vals;
  uint64_t rows = 0, cols = 0, ld = 0;
  dc_dtype dtype = DC_DTYPE_F32;
  void* data() { return bytes.data(); }
  double at(uint64_t r, uint64_t c) const { return load_as(bytes.data(), r * ld + c, dtype); }
};

inline Mat random_mat(uint64_t rows, uint64_t cols, uint64_t ld, dc_dtype dtype, double sd, uint64_t seed) {
  Mat m;
  m.rows = rows;
  m.cols = cols;
  m.ld = ld ? ld : cols;
  m.dtype = dtype;
  m.bytes.assign((rows ? (rows - 1) * m.ld + cols : 0) * dsize(dtype), 0xAB);  // gaps hold garbage
  m.vals.resize(rows * cols);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, sd);
  for (uint64_t r = 0; r < rows; ++r)
    for (uint64_t c = 0; c < cols; ++c) m.vals[r * cols + c] = store_as(m.bytes.data(), r * m.ld + c, dtype, nd(rng));
  return m;
}

// ‖got − want‖ / ‖want‖ and the largest |got − want| / rms(want).
struct ErrStats {
  double rel_norm = 0, max_rel = 0;
};
inline ErrStats compare(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0, mx = 0;
  for (size_t k = 0; k < want.size(); ++k) {
    const double d = got[k] - want[k];
    num += d * d;
    den += want[k] * want[k];
    mx = std::max(mx, std::fabs(d));
  }
  const double rms = std::sqrt(den / std::max<size_t>(1, want.size()));
  ErrStats e;
  e.rel_norm = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  e.max_rel = rms > 0 ? mx / rms : mx;
  return e;
}

// Tolerances relative to the result's norm, by the dtype the result is stored in (its rounding
// dominates) — f32 allows for fp32 accumulation over a few thousand terms.
inline double norm_tol(dc_dtype t) { return t == DC_DTYPE_F32 ? 2e-5 : t == DC_DTYPE_F16 ? 1.5e-3 : 1e-2; }
inline double max_tol(dc_dtype t) { return t == DC_DTYPE_F32 ? 2e-4 : t == DC_DTYPE_F16 ? 1e-2 : 6e-2; }

inline const char* dtype_name(dc_dtype t) { return t == DC_DTYPE_F32 ? "f32" : t == DC_DTYPE_F16 ? "f16" : "bf16"; }


// The CPU backend opened on one device, with error messages captured.
inline std::string& last_backend_error() {
  static thread_local std::string msg;
  return msg;
}
inline void capture_error(const char* m) { last_backend_error() = m; }

struct CpuDevice {
  explicit CpuDevice(int threads) {
    static const dc_backend_host host = {DC_BACKEND_ABI_VERSION, capture_error};
    ops = dc_cpu_backend_ops(&host);
    EXPECT_EQ(ops->device_open(&dev, 0, threads), DC_OK);
  }
  ~CpuDevice() {
    for (void* b : batches) ops->batch_free(dev, b);
    for (void* d : deltas) ops->delta_free(dev, d);
    ops->device_close(dev);
  }
  void* load(const TestDelta& t, uint64_t* bytes = nullptr) {
    void* d = nullptr;
    uint64_t b = 0;
    EXPECT_EQ(ops->delta_load(dev, &t.view, nullptr, &d, &b), DC_OK) << last_backend_error();
    if (bytes) *bytes = b;
    deltas.push_back(d);
    return d;
  }
  void* batch(const std::vector<void*>& ds) {
    void* b = nullptr;
    EXPECT_EQ(ops->batch_create(dev, const_cast<const void* const*>(ds.data()), ds.size(), &b), DC_OK);
    batches.push_back(b);
    return b;
  }
  const dc_backend_ops* ops = nullptr;
  void* dev = nullptr;
  std::vector<void*> deltas, batches;
};

}  // namespace dc_test

// Runs one apply on the CPU backend and checks it against the float64 reference.
#pragma once

#include <algorithm>

#include "cpu_reference.h"

namespace dc_test {

struct ApplyOpts {
  uint64_t m = 3;
  dc_dtype xt = DC_DTYPE_F32, yt = DC_DTYPE_F32, bt = DC_DTYPE_F32;
  bool base = false;
  float scale = 1.f;
  uint64_t ldx_pad = 0, ldy_pad = 0, ldb_pad = 0;  // extra elements per row (0: packed)
  int threads = 2;
  uint64_t seed = 7;
};

inline std::string describe(const TestDelta& t, const ApplyOpts& o) {
  return "rows=" + std::to_string(t.view.rows) + " cols=" + std::to_string(t.view.cols) +
         " kind=" + std::to_string(t.view.kind) + " m=" + std::to_string(o.m) + " x=" + dtype_name(o.xt) +
         " y=" + dtype_name(o.yt) + " base=" + (o.base ? dtype_name(o.bt) : "none") +
         " scale=" + std::to_string(o.scale) + " threads=" + std::to_string(o.threads);
}

// Fills p for x/y/base matrices.
inline dc_apply_params make_params(const ApplyOpts& o, Mat& x, Mat& y, Mat* base) {
  dc_apply_params p{};
  p.struct_size = sizeof p;
  p.flags = o.base ? DC_APPLY_INCLUDE_BASE : 0u;
  p.m = o.m;
  p.x = x.data();
  p.x_dtype = o.xt;
  p.ldx = o.ldx_pad ? x.ld : 0;
  p.y = y.data();
  p.y_dtype = o.yt;
  p.ldy = o.ldy_pad ? y.ld : 0;
  if (base) {
    p.base_weight = base->data();
    p.base_dtype = o.bt;
    p.ld_base = o.ldb_pad ? base->ld : 0;
  }
  p.scale = o.scale;
  return p;
}

// Reference y (m × rows, packed) for delta `dw` (nullptr: no delta) given x, y0 and base.
inline std::vector<double> reference_y(const TestDelta* t, uint64_t rows, uint64_t cols, const ApplyOpts& o,
                                       const Mat& x, const Mat& y0, const Mat* base) {
  std::vector<double> want(o.m * rows);
  const bool bias = t && t->view.kind == DC_KIND_DENSE && cols == 1;
  for (uint64_t i = 0; i < o.m; ++i)
    for (uint64_t r = 0; r < rows; ++r) {
      double acc = 0;
      if (base) {
        for (uint64_t c = 0; c < cols; ++c) acc += x.vals[i * cols + c] * base->vals[r * cols + c];
      } else {
        acc = y0.vals[i * rows + r];
      }
      if (t) {
        double d = 0;
        if (bias) {
          d = t->dw[r];
        } else {
          const double* w = t->dw.data() + r * cols;
          for (uint64_t c = 0; c < cols; ++c) d += x.vals[i * cols + c] * w[c];
        }
        acc += static_cast<double>(o.scale) * d;
      }
      want[i * rows + r] = acc;
    }
  return want;
}

// rms of scale·x·ΔWᵀ, so y0 can be drawn at a comparable magnitude (then a wrong delta shows).
inline double delta_rms(const TestDelta& t, const ApplyOpts& o, const Mat& x) {
  Mat none;
  ApplyOpts no_base = o;
  no_base.base = false;
  const uint64_t rows = t.view.rows, cols = t.view.cols;
  Mat zero;
  zero.vals.assign(o.m * rows, 0.0);
  auto d = reference_y(&t, rows, cols, no_base, x, zero, nullptr);
  double s = 0;
  for (double v : d) s += v * v;
  return std::sqrt(s / std::max<size_t>(1, d.size()));
}

inline std::vector<double> read_y(const Mat& y, uint64_t m, uint64_t rows) {
  std::vector<double> got(m * rows);
  for (uint64_t i = 0; i < m; ++i)
    for (uint64_t r = 0; r < rows; ++r) got[i * rows + r] = y.at(i, r);
  return got;
}

// Bytes of y outside the m × rows elements (row-stride gaps) must be untouched.
inline bool gaps_untouched(const Mat& before, const Mat& after) {
  const size_t es = dsize(before.dtype);
  for (uint64_t i = 0; i < before.rows; ++i)
    for (uint64_t c = before.cols; c < before.ld && (i + 1) < before.rows; ++c)
      if (std::memcmp(before.bytes.data() + (i * before.ld + c) * es, after.bytes.data() + (i * before.ld + c) * es,
                      es) != 0)
        return false;
  return true;
}

// Loads t, applies it once and checks y against the reference. Returns y's bytes.
inline std::vector<uint8_t> check_apply(const TestDelta& t, const ApplyOpts& o) {
  const uint64_t rows = t.view.rows, cols = t.view.cols;
  SCOPED_TRACE(describe(t, o));
  Mat x = random_mat(o.m, cols, o.ldx_pad ? cols + o.ldx_pad : 0, o.xt, 1.0, o.seed);
  Mat base;
  if (o.base) base = random_mat(rows, cols, o.ldb_pad ? cols + o.ldb_pad : 0, o.bt, 0.05, o.seed + 1);
  const double drms = delta_rms(t, o, x);
  Mat y = random_mat(o.m, rows, o.ldy_pad ? rows + o.ldy_pad : 0, o.yt, std::max(drms, 1e-3), o.seed + 2);
  const Mat y0 = y;
  const auto want = reference_y(&t, rows, cols, o, x, y0, o.base ? &base : nullptr);
  CpuDevice dev(o.threads);
  void* d = dev.load(t);
  const dc_apply_params p = make_params(o, x, y, o.base ? &base : nullptr);
  EXPECT_EQ(dev.ops->apply(dev.dev, d, &p), DC_OK) << last_backend_error();
  const ErrStats e = compare(read_y(y, o.m, rows), want);
  EXPECT_LE(e.rel_norm, norm_tol(o.yt));
  EXPECT_LE(e.max_rel, max_tol(o.yt));
  EXPECT_TRUE(gaps_untouched(y0, y));
  return y.bytes;
}

}  // namespace dc_test

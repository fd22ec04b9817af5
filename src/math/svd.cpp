// Thin SVD through LAPACK's dgesdd, in float64.
//
// Layout trick: a row-major m×n matrix A is, byte for byte, the column-major n×m matrix Aᵀ. LAPACK
// factors Aᵀ = V Σ Uᵀ, and its column-major outputs are exactly our row-major ones:
//   LAPACK "U" (n×k column-major)  = row-major k×n whose row j is v_j      -> Svd::vt
//   LAPACK "VT" (k×m column-major) = row-major m×k whose column j is u_j  -> Svd::u
// so no transposes are needed anywhere.
#include "math/svd.h"

#include <lapacke.h>

#include <algorithm>
#include <cmath>

#include "common/checked.h"
#include "common/error.h"

namespace dc {

namespace {

// Deterministic signs: the largest-|.| entry of each u_j (the first one on ties) is made positive,
// flipping v_j with it, so the same matrix always gives the same factors whatever LAPACK did.
void normalise_signs(Svd& r) {
  for (uint64_t j = 0; j < r.k; ++j) {
    uint64_t best = 0;
    float best_abs = -1.f;
    for (uint64_t i = 0; i < r.m; ++i) {
      const float a = std::fabs(r.u[i * r.k + j]);
      if (a > best_abs) { best_abs = a; best = i; }
    }
    if (r.m == 0 || r.u[best * r.k + j] >= 0.f) continue;
    for (uint64_t i = 0; i < r.m; ++i) r.u[i * r.k + j] = -r.u[i * r.k + j];
    for (uint64_t c = 0; c < r.n; ++c) r.vt[j * r.n + c] = -r.vt[j * r.n + c];
  }
}

}  // namespace

Svd svd_topk(const float* a, uint64_t m, uint64_t n, uint64_t k_max) {
  Svd r;
  r.m = m;
  r.n = n;
  const uint64_t kfull = std::min(m, n);
  r.k = (k_max == 0) ? kfull : std::min(k_max, kfull);
  if (kfull == 0) {
    r.k = 0;
    return r;
  }
  DC_CHECK(m <= (uint64_t)INT32_MAX && n <= (uint64_t)INT32_MAX, DC_ERR_LIMIT,
           "svd: matrix %llu x %llu exceeds LAPACK's 32-bit dimensions", (unsigned long long)m,
           (unsigned long long)n);
  const uint64_t mn = checked_mul(m, n, "svd: matrix elements");
  std::vector<double> at(mn);  // column-major n×m == row-major m×n
  for (uint64_t i = 0; i < mn; ++i) {
    DC_CHECK(std::isfinite(a[i]), DC_ERR_INVALID_ARGUMENT,
             "svd: element %llu of the %llu x %llu matrix is not finite", (unsigned long long)i,
             (unsigned long long)m, (unsigned long long)n);
    at[i] = a[i];
  }
  const lapack_int ln = (lapack_int)n, lm = (lapack_int)m, lk = (lapack_int)kfull;
  std::vector<double> s(kfull), lu(checked_mul(n, kfull, "svd: V")), lvt(checked_mul(kfull, m, "svd: U"));
  lapack_int info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'S', ln, lm, at.data(), ln, s.data(), lu.data(),
                                   ln, lvt.data(), lk);
  if (info > 0) {
    // Divide and conquer can fail to converge on rare, nearly degenerate spectra: fall back to
    // QR iteration on a fresh copy (dgesdd destroyed `at`).
    for (uint64_t i = 0; i < mn; ++i) at[i] = a[i];
    std::vector<double> superb(kfull);
    info = LAPACKE_dgesvd(LAPACK_COL_MAJOR, 'S', 'S', ln, lm, at.data(), ln, s.data(), lu.data(),
                          ln, lvt.data(), lk, superb.data());
  }
  DC_CHECK(info == 0, DC_ERR_INTERNAL, "svd: LAPACK dgesdd/dgesvd of a %llu x %llu matrix failed (info %d)",
           (unsigned long long)m, (unsigned long long)n, (int)info);

  const uint64_t k = r.k;
  r.s.resize(k);
  r.u.resize(m * k);
  r.vt.resize(k * n);
  for (uint64_t j = 0; j < k; ++j) r.s[j] = (float)s[j];
  // lvt is column-major kfull×m: element (j, i) at j + i*kfull = U[i][j].
  for (uint64_t i = 0; i < m; ++i)
    for (uint64_t j = 0; j < k; ++j) r.u[i * k + j] = (float)lvt[j + i * kfull];
  // lu is column-major n×kfull: column j (contiguous) is v_j.
  for (uint64_t j = 0; j < k; ++j)
    for (uint64_t c = 0; c < n; ++c) r.vt[j * n + c] = (float)lu[c + j * n];
  normalise_signs(r);
  return r;
}

}  // namespace dc

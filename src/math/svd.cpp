// Thin SVD in float64: LAPACK's dgesdd, or for a large matrix of which only the top part of the
// spectrum is kept, the eigenpairs of its Gram matrix (gram_topk).
//
// Layout trick: a row-major m×n matrix A is, byte for byte, the column-major n×m matrix Aᵀ. LAPACK
// factors Aᵀ = V Σ Uᵀ, and its column-major outputs are exactly our row-major ones:
//   LAPACK "U" (n×k column-major)  = row-major k×n whose row j is v_j      -> Svd::vt
//   LAPACK "VT" (k×m column-major) = row-major m×k whose column j is u_j  -> Svd::u
// so no transposes are needed anywhere.
#include "math/svd.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

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

// Top-k through the Gram matrix of the smaller side (p = min(m, n)): G = AᵀA or AAᵀ (dsyrk), its k
// largest eigenpairs (dsyevr, range 'I'), σ = √λ, and the other side's vectors from one GEMM
// (U = A·V·Σ⁻¹ or Vᵀ = Σ⁻¹·Uᵀ·A). Why: the compressor keeps at most about half of the spectrum
// (the 2-bit budget), and a full dgesdd of an 11008×4096 layer costs several times this path's
// flops. Squaring the matrix costs accuracy on small singular values (relative error about
// ε·(σ₁/σ_k)²), so the caller uses it only when every kept σ is ≥ kMinRel·σ₁; otherwise
// (nearly rank-deficient tails) it returns false and dgesdd runs. `a` is the row-major m×n matrix.
constexpr double kMinRel = 1e-4;

bool gram_topk(const std::vector<double>& a, uint64_t m, uint64_t n, uint64_t k, Svd& r) {
  const bool tall = m >= n;  // Gram of the columns (n×n) when tall, of the rows (m×m) when wide
  const uint64_t p = tall ? n : m;
  std::vector<double> g(checked_mul(p, p, "svd: Gram matrix"), 0.0);
  const int ip = (int)p, im = (int)m, in = (int)n;
  if (tall)  // G = AᵀA: the row-major A is the column-major n×m Aᵀ
    cblas_dsyrk(CblasColMajor, CblasUpper, CblasNoTrans, ip, im, 1.0, a.data(), in, 0.0, g.data(), ip);
  else  // G = AAᵀ = (Aᵀ)ᵀ·Aᵀ, upper triangle in column-major order as dsyevr reads it
    cblas_dsyrk(CblasColMajor, CblasUpper, CblasTrans, ip, in, 1.0, a.data(), in, 0.0, g.data(), ip);
  std::vector<double> w(p), z(checked_mul(p, k, "svd: eigenvectors"));
  std::vector<lapack_int> support(2 * k);
  lapack_int found = 0;
  const lapack_int info = LAPACKE_dsyevr(LAPACK_COL_MAJOR, 'V', 'I', 'U', (lapack_int)p, g.data(), (lapack_int)p, 0.0,
                                         0.0, (lapack_int)(p - k + 1), (lapack_int)p, 0.0, &found, w.data(), z.data(),
                                         (lapack_int)p, support.data());
  if (info != 0 || (uint64_t)found != k) return false;
  // ascending: w[k-1] is the largest; column c of z (column-major p×k) belongs to w[c]
  const double top = std::max(w[k - 1], 0.0);
  if (!(top > 0.0)) return false;
  std::vector<double> sig(k);
  for (uint64_t j = 0; j < k; ++j) {
    const double lam = w[k - 1 - j];
    if (!(lam >= kMinRel * kMinRel * top)) return false;  // tail too small for the squared route
    sig[j] = std::sqrt(lam);
  }
  r.s.resize(k);
  r.u.assign(checked_mul(m, k, "svd: U"), 0.f);
  r.vt.assign(checked_mul(k, n, "svd: V"), 0.f);
  for (uint64_t j = 0; j < k; ++j) r.s[j] = (float)sig[j];
  if (tall) {
    std::vector<double> vt(k * n), u(m * k);
    for (uint64_t j = 0; j < k; ++j)
      for (uint64_t c = 0; c < n; ++c) vt[j * n + c] = z[c + (k - 1 - j) * p];
    // U (m×k) = A (m×n) · Vᵀᵀ, then columns / σ
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, im, (int)k, in, 1.0, a.data(), in, vt.data(), in, 0.0,
                u.data(), (int)k);
    for (uint64_t i = 0; i < m; ++i)
      for (uint64_t j = 0; j < k; ++j) r.u[i * k + j] = (float)(u[i * k + j] / sig[j]);
    for (uint64_t i = 0; i < k * n; ++i) r.vt[i] = (float)vt[i];
  } else {
    std::vector<double> u(m * k), vt(k * n);
    for (uint64_t i = 0; i < m; ++i)
      for (uint64_t j = 0; j < k; ++j) u[i * k + j] = z[i + (k - 1 - j) * p];
    // Vᵀ (k×n) = Uᵀ (k×m) · A (m×n), then rows / σ
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, in, im, 1.0, u.data(), (int)k, a.data(), in,
                0.0, vt.data(), in);
    for (uint64_t j = 0; j < k; ++j)
      for (uint64_t c = 0; c < n; ++c) r.vt[j * n + c] = (float)(vt[j * n + c] / sig[j]);
    for (uint64_t i = 0; i < m * k; ++i) r.u[i] = (float)u[i];
  }
  return true;
}

// The Gram route pays off for large matrices of which at most ~60 % of the spectrum is kept.
bool gram_worth_it(uint64_t m, uint64_t n, uint64_t k) {
  const uint64_t p = std::min(m, n);
  return p >= 512 && k * 10 <= p * 6;
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
  if (getenv("DELTACOME_SVD_FULL") == nullptr && gram_worth_it(m, n, r.k) && gram_topk(at, m, n, r.k, r)) {
    normalise_signs(r);
    return r;
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

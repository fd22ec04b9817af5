// GPTQ (Frantar et al. 2022), following GPTQ-for-LLaMa's fasterquant: dead inputs zeroed, damping,
// H⁻¹ through Cholesky, its upper Cholesky factor driving the error feedback, lazy batch updates of
// the columns after each block, groups formed in processing (act-order) order. All in float64.
#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/checked.h"
#include "common/error.h"
#include "math/quant_grid.h"
#include "math/quantize.h"
#include "math/quantize_internal.h"

namespace dc {

namespace {

uint64_t gcd64(uint64_t a, uint64_t b) {
  while (b) { const uint64_t t = a % b; a = b; b = t; }
  return a;
}

// Lazy-update block size. Group parameters must be computed from fully updated weights, so every
// group must start on a block boundary (then all earlier blocks' error has been pushed into it):
// blocks are a multiple of the group when the group is small, a divisor of it when it is large.
uint64_t block_size_for(uint32_t group_size) {
  const uint64_t b = 128;
  if (group_size <= b) return group_size * (b / group_size);
  return gcd64(group_size, b);
}

// Upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), row-major len×len, lower part zero. Returns false if
// H (after damping) is not positive definite.
bool inverse_upper_cholesky(std::vector<double>& hm, uint64_t len) {
  const lapack_int n = (lapack_int)len;
  if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', n, hm.data(), n) != 0) return false;
  if (LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', n, hm.data(), n) != 0) return false;
  for (uint64_t i = 0; i < len; ++i)  // dpotri fills the lower triangle only
    for (uint64_t j = i + 1; j < len; ++j) hm[i * len + j] = hm[j * len + i];
  if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', n, hm.data(), n) != 0) return false;
  for (uint64_t i = 0; i < len; ++i)
    for (uint64_t j = 0; j < i; ++j) hm[i * len + j] = 0;
  return true;
}

}  // namespace

GptqHessian prepare_gptq_hessian(const double* h, uint64_t len, double damp,
                                 const std::vector<uint32_t>& perm) {
  DC_CHECK(len <= (uint64_t)INT32_MAX, DC_ERR_LIMIT, "quantize_gptq: row length %llu exceeds 2^31",
           (unsigned long long)len);
  DC_CHECK(std::isfinite(damp) && damp >= 0, DC_ERR_INVALID_ARGUMENT,
           "quantize_gptq: damping %g must be finite and >= 0", damp);
  GptqHessian g = prepare_gptq_order(len, perm);
  const uint64_t hn = checked_mul(len, len, "quantize_gptq: Hessian");
  for (uint64_t i = 0; i < hn; ++i)
    DC_CHECK(std::isfinite(h[i]), DC_ERR_INVALID_ARGUMENT, "quantize_gptq: Hessian element %llu is not finite",
             (unsigned long long)i);
  if (len == 0) return g;

  // Permuted Hessian; dead inputs (never active: diag 0) get diag 1 and their weights are zeroed
  // (by the caller of the factor), since nothing they multiply ever reaches the output.
  std::vector<double> H0(hn);
  for (uint64_t p = 0; p < len; ++p)
    for (uint64_t q = 0; q < len; ++q) H0[p * len + q] = h[(uint64_t)g.order[p] * len + g.order[q]];
  g.dead.assign(len, 0);
  for (uint64_t p = 0; p < len; ++p)
    if (H0[p * len + p] == 0) {
      H0[p * len + p] = 1;
      g.dead[p] = 1;
    }
  double mean_diag = 0;
  for (uint64_t p = 0; p < len; ++p) mean_diag += H0[p * len + p];
  mean_diag /= (double)len;

  // Damping as GPTQ; if H is still not positive definite (rank-deficient calibration in float
  // noise), raise the damping tenfold until it is, as later GPTQ forks do.
  double cur = damp;
  bool ok = false;
  for (int attempt = 0; attempt < 8; ++attempt) {
    g.hinv_upper = H0;
    for (uint64_t p = 0; p < len; ++p) g.hinv_upper[p * len + p] += cur * mean_diag;
    if ((ok = inverse_upper_cholesky(g.hinv_upper, len))) break;
    cur = cur > 0 ? cur * 10 : 1e-6;
  }
  DC_CHECK(ok, DC_ERR_INVALID_ARGUMENT,
           "quantize_gptq: the %llu x %llu Hessian is not positive definite even with damping %g",
           (unsigned long long)len, (unsigned long long)len, cur);
  return g;
}

QuantizedRows quantize_gptq(const float* w, uint64_t nrows, uint64_t len, const double* h,
                            uint32_t bits, uint32_t group_size, double damp,
                            const std::vector<uint32_t>& perm) {
  check_quant_args(nrows, len, bits, group_size, "quantize_gptq");
  if (bits == 16) {  // no GPTQ: the fp16 values, in processing order
    const GptqHessian order_only = prepare_gptq_order(len, perm);
    return quantize_gptq_prepared(w, nrows, order_only, bits, group_size);
  }
  return quantize_gptq_prepared(w, nrows, prepare_gptq_hessian(h, len, damp, perm), bits, group_size);
}

GptqHessian prepare_gptq_order(uint64_t len, const std::vector<uint32_t>& perm) {
  DC_CHECK(perm.empty() || perm.size() == len, DC_ERR_INVALID_ARGUMENT,
           "quantize_gptq: permutation has %zu entries, the rows have %llu", perm.size(),
           (unsigned long long)len);
  GptqHessian g;
  g.len = len;
  g.order.resize(len);
  std::vector<char> seen(len, 0);
  for (uint64_t p = 0; p < len; ++p) {
    const uint32_t c = perm.empty() ? (uint32_t)p : perm[p];
    DC_CHECK(c < len && !seen[c], DC_ERR_INVALID_ARGUMENT,
             "quantize_gptq: permutation entry %llu (%u) is out of range or repeated", (unsigned long long)p, c);
    seen[c] = 1;
    g.order[p] = c;
  }
  return g;
}

QuantizedRows quantize_gptq_prepared(const float* w, uint64_t nrows, const GptqHessian& hs, uint32_t bits,
                                     uint32_t group_size) {
  const uint64_t len = hs.len;
  check_quant_args(nrows, len, bits, group_size, "quantize_gptq");
  DC_CHECK(nrows <= (uint64_t)INT32_MAX, DC_ERR_LIMIT, "quantize_gptq: %llu rows exceed BLAS's 32-bit dimensions",
           (unsigned long long)nrows);
  const std::vector<uint32_t>& order = hs.order;
  // W in processing order: position p holds original column order[p].
  std::vector<double> W(nrows * len);
  for (uint64_t i = 0; i < nrows; ++i)
    for (uint64_t p = 0; p < len; ++p) {
      const float x = w[i * len + order[p]];
      DC_CHECK(std::isfinite(x), DC_ERR_INVALID_ARGUMENT, "quantize_gptq: element (%llu, %u) is not finite",
               (unsigned long long)i, order[p]);
      W[i * len + p] = (bits != 16 && !hs.dead.empty() && hs.dead[p]) ? 0.0 : x;
    }

  QuantizedRows r = empty_rows(nrows, len, bits, group_size);
  if (bits == 16) {
    std::vector<float> wf(W.begin(), W.end());
    store_fp16_rows(wf.data(), r);
    return r;
  }
  if (nrows == 0 || len == 0) return r;
  DC_CHECK(hs.hinv_upper.size() == len * len, DC_ERR_INTERNAL, "quantize_gptq: Hessian factor not prepared");
  const std::vector<double>& Hinv = hs.hinv_upper;

  const uint64_t words = dc_row_words(len, bits), groups = dc_row_groups(len, group_size);
  const uint64_t block = block_size_for(group_size);
  std::vector<QuantGrid> grid(nrows);
  std::vector<double> err;  // nrows × (block columns): scaled errors of the block
  for (uint64_t i1 = 0; i1 < len; i1 += block) {
    const uint64_t i2 = std::min(len, i1 + block), cnt = i2 - i1;
    err.assign(nrows * cnt, 0.0);
    for (uint64_t j = 0; j < cnt; ++j) {
      const uint64_t col = i1 + j;
      if (col % group_size == 0) {  // on a block boundary by construction: W is fully updated here
        const uint64_t g = col / group_size, c1 = std::min<uint64_t>(len, col + group_size);
        for (uint64_t i = 0; i < nrows; ++i) {
          const double* row = &W[i * len];
          const auto mm = std::minmax_element(row + col, row + c1);
          grid[i] = make_grid(*mm.first, *mm.second, bits);
          r.qparams[i * groups + g] = grid[i].stored;
        }
      }
      const double dinv = 1.0 / Hinv[col * len + col];
      const double* hrow = &Hinv[col * len];
      for (uint64_t i = 0; i < nrows; ++i) {
        double* row = &W[i * len];
        const uint32_t q = grid[i].code(row[col]);
        dc_pack_code(&r.codes[i * words], col, bits, q);
        const float v = grid[i].value(q);
        r.dequant[i * len + col] = v;
        const double e = (row[col] - (double)v) * dinv;
        err[i * cnt + j] = e;
        for (uint64_t k = col + 1; k < i2; ++k) row[k] -= e * hrow[k];
      }
    }
    if (i2 < len)  // lazy batch update: W[:, i2:] -= Err · Hinv[i1:i2, i2:]
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nrows, (int)(len - i2), (int)cnt, -1.0,
                  err.data(), (int)cnt, &Hinv[i1 * len + i2], (int)len, 1.0, &W[i2], (int)len);
  }
  return r;
}

}  // namespace dc

// Delta-CoMe compression of one matrix: ΔW = U Σ Vᵀ, then for every band of singular vectors
// V̂ᵀ rows are quantized first (calibrated on the layer input X, Hessian H = E[x xᵀ]), then Û
// (calibrated on the band's own output Σ V̂ᵀ X, i.e. Hessian Σ V̂ H V̂ᵀ Σ), as in the paper and
// llama.py's V-then-U passes.
#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "common/checked.h"
#include "common/error.h"
#include "math/lowrank.h"
#include "math/quantize.h"
#include "math/quantize_internal.h"
#include "math/svd.h"

namespace dc {

namespace {

void check_bands(const std::string& name, const std::vector<BandDesc>& bands, uint64_t rows,
                 uint64_t cols) {
  uint64_t next = 0;
  for (size_t b = 0; b < bands.size(); ++b) {
    const BandDesc& d = bands[b];
    DC_CHECK(dc_valid_band_bits(d.bits), DC_ERR_INVALID_ARGUMENT,
             "%s: band %zu has bit width %u (valid: 2, 3, 4, 8, 16)", name.c_str(), b, d.bits);
    DC_CHECK(d.rank_begin == next && d.rank_end > d.rank_begin, DC_ERR_INVALID_ARGUMENT,
             "%s: band %zu covers [%u, %u); bands must be non-empty and contiguous from rank 0 (expected "
             "start %llu)", name.c_str(), b, d.rank_begin, d.rank_end, (unsigned long long)next);
    if (d.bits != 16)
      DC_CHECK(d.group_size >= DC_CODE_BLOCK && d.group_size % DC_CODE_BLOCK == 0 &&
                   d.group_size <= DC_MAX_GROUP,
               DC_ERR_INVALID_ARGUMENT, "%s: band %zu group size %u must be a multiple of %u in [%u, %u]",
               name.c_str(), b, d.group_size, DC_CODE_BLOCK, DC_CODE_BLOCK, DC_MAX_GROUP);
    next = d.rank_end;
  }
  DC_CHECK(next <= std::min(rows, cols), DC_ERR_INVALID_ARGUMENT,
           "%s: bands hold rank %llu but a %llu x %llu matrix has at most rank %llu", name.c_str(),
           (unsigned long long)next, (unsigned long long)rows, (unsigned long long)cols,
           (unsigned long long)std::min(rows, cols));
}

}  // namespace

PackedTensor compress_lowrank(const std::string& name, const float* delta, uint64_t rows,
                              uint64_t cols, const LowRankOptions& opts, const Svd* svd) {
  checked_mul(rows, cols, name.c_str());
  check_bands(name, opts.bands, rows, cols);
  DC_CHECK(rows <= (uint64_t)INT32_MAX && cols <= (uint64_t)INT32_MAX, DC_ERR_LIMIT,
           "%s: shape %llu x %llu exceeds BLAS's 32-bit dimensions", name.c_str(), (unsigned long long)rows,
           (unsigned long long)cols);
  const uint64_t rank = opts.bands.empty() ? 0 : opts.bands.back().rank_end;

  PackedTensor t;
  t.name = name;
  t.rows = rows;
  t.cols = cols;
  t.kind = DC_KIND_LOWRANK;
  t.dtype = opts.base_dtype;
  t.rank = (uint32_t)rank;
  if (rank == 0) return t;

  Svd own;
  if (svd == nullptr) {
    own = svd_topk(delta, rows, cols, rank);
    svd = &own;
  }
  DC_CHECK(svd->m == rows && svd->n == cols && svd->k >= rank && svd->u.size() == rows * svd->k &&
               svd->vt.size() == svd->k * cols && svd->s.size() == svd->k,
           DC_ERR_INVALID_ARGUMENT, "%s: the given SVD (%llu x %llu, k %llu) does not fit the %llu x %llu "
           "delta with rank %llu", name.c_str(), (unsigned long long)svd->m, (unsigned long long)svd->n,
           (unsigned long long)svd->k, (unsigned long long)rows, (unsigned long long)cols,
           (unsigned long long)rank);
  const uint64_t k = svd->k;
  t.sigma.assign(svd->s.begin(), svd->s.begin() + rank);

  const bool gptq = opts.quantizer == Quantizer::Gptq;
  const double* H = opts.hessian;
  // One act-order permutation for every V band: the format has a single in_perm per tensor.
  if (gptq && H != nullptr && opts.act_order) t.in_perm = act_order_permutation(H, cols);
  const std::vector<uint32_t>& perm = t.in_perm;
  // H is factored once for all V bands (the same order and damping for each).
  GptqHessian v_hessian;
  const bool v_gptq = gptq && H != nullptr;
  if (v_gptq) v_hessian = prepare_gptq_hessian(H, cols, opts.damp, perm);

  std::vector<float> ub;          // rows × r_b: the band's U columns as rows of length r_b
  std::vector<double> vhat, tmp, hu;
  for (const BandDesc& d : opts.bands) {
    const uint64_t r0 = d.rank_begin, rb = d.rank();
    PackedBand pb;
    pb.desc = d;
    if (d.bits == 16) pb.desc.group_size = 0;

    // V part: rb rows of Vᵀ, each of length cols (stored in permuted order when act-order is on).
    // GPTQ without a Hessian would be GPTQ with H = I: exactly RTN (no error feedback), so use RTN.
    QuantizedRows vq = v_gptq ? quantize_gptq_prepared(&svd->vt[r0 * cols], rb, v_hessian, d.bits, d.group_size)
                              : quantize_rtn(&svd->vt[r0 * cols], rb, cols, d.bits, d.group_size);
    pb.v_codes = std::move(vq.codes);
    pb.v_qparams = std::move(vq.qparams);

    // U part (quantized GPTQ-style when asked, even without a Hessian): its input is Σ_b V̂_bᵀ x, so
    // its Hessian is Σ V̂ H V̂ᵀ Σ with V̂ (rb × cols) the decoded V rows in original column order.
    ub.resize(rows * rb);
    for (uint64_t i = 0; i < rows; ++i)
      for (uint64_t j = 0; j < rb; ++j) ub[i * rb + j] = svd->u[i * k + r0 + j];
    QuantizedRows uq;
    if (gptq) {
      vhat.assign(rb * cols, 0.0);
      for (uint64_t j = 0; j < rb; ++j)
        for (uint64_t p = 0; p < cols; ++p)
          vhat[j * cols + (perm.empty() ? p : perm[p])] = vq.dequant[j * cols + p];
      hu.assign(rb * rb, 0.0);
      if (H != nullptr) {
        tmp.assign(rb * cols, 0.0);  // V̂ H
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rb, (int)cols, (int)cols, 1.0,
                    vhat.data(), (int)cols, H, (int)cols, 0.0, tmp.data(), (int)cols);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rb, (int)rb, (int)cols, 1.0, tmp.data(),
                    (int)cols, vhat.data(), (int)cols, 0.0, hu.data(), (int)rb);
      } else {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rb, (int)rb, (int)cols, 1.0, vhat.data(),
                    (int)cols, vhat.data(), (int)cols, 0.0, hu.data(), (int)rb);
      }
      for (uint64_t a = 0; a < rb; ++a)
        for (uint64_t b = a; b < rb; ++b) {  // upper from both triangles, then mirrored
          const double sym = 0.5 * (hu[a * rb + b] + hu[b * rb + a]);  // exact symmetry for Cholesky
          hu[a * rb + b] = sym * (double)t.sigma[r0 + a] * (double)t.sigma[r0 + b];
        }
      for (uint64_t a = 0; a < rb; ++a)
        for (uint64_t b = 0; b < a; ++b) hu[a * rb + b] = hu[b * rb + a];
      uq = quantize_gptq(ub.data(), rows, rb, hu.data(), d.bits, d.group_size, opts.damp);
    } else {
      uq = quantize_rtn(ub.data(), rows, rb, d.bits, d.group_size);
    }
    pb.u_codes = std::move(uq.codes);
    pb.u_qparams = std::move(uq.qparams);
    t.bands.push_back(std::move(pb));
  }
  return t;
}

}  // namespace dc

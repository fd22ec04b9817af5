// Bit allocation per singular vector: the error model (see allocate.h) and a greedy on marginal
// error reduction per bit, repaired so that bits never increase along the rank (bands contiguous).
#include "math/allocate.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <queue>

#include "common/checked.h"
#include "common/error.h"
#include "math/budget.h"
#include "math/quantize.h"
#include "math/quantize_internal.h"

namespace dc {

namespace {

// Budgets are real numbers; this slack (as in bands_for_shape) only absorbs rounding noise.
bool affordable(double cost, double left) { return cost <= left * (1 + 1e-12) + 1e-9; }

// Quantized probe of a vector at `bits`: RTN with groups along its own length.
std::vector<double> probe(const std::vector<float>& x, uint32_t bits, uint32_t group_size) {
  const QuantizedRows q = quantize_rtn(x.data(), 1, x.size(), bits, group_size);
  return std::vector<double>(q.dequant.begin(), q.dequant.end());
}

// Width indices per layer, chosen greedily. `unit[l]` converts a width step of layer l into cost
// (bits per bit-rank: m + n across layers, 1 within one layer).
struct Greedy {
  std::vector<const VectorErrorModel*> models;
  std::vector<double> unit;
  double left = 0;
  std::vector<std::vector<uint32_t>> c;  // current width index of each vector

  struct Move {
    double ratio;
    uint32_t layer, target;
    uint64_t j, stamp;
    bool operator<(const Move& o) const { return ratio < o.ratio; }
  };

  double err(uint32_t l, uint64_t j, uint32_t w) const {
    return models[l]->err[j * models[l]->widths.size() + w];
  }
  double cost(uint32_t l, uint32_t from, uint32_t to) const {
    return (double)(models[l]->widths[to] - models[l]->widths[from]) * unit[l];
  }

  // Best affordable upgrade of vector j to any wider width (not just the next one, so that a
  // width whose gain only pays off after a poor intermediate step is still found), up to `cap`.
  bool best_move(uint32_t l, uint64_t j, uint32_t cap, Move& m) const {
    const uint32_t cur = c[l][j];
    bool found = false;
    for (uint32_t t = cur + 1; t <= cap; ++t) {
      const double k = cost(l, cur, t), gain = err(l, j, cur) - err(l, j, t);
      if (!affordable(k, left) || !(gain > 0)) continue;
      const double r = gain / k;
      if (!found || r > m.ratio) m = Move{r, l, t, j, 0}, found = true;
    }
    return found;
  }

  uint32_t top(uint32_t l) const { return (uint32_t)models[l]->widths.size() - 1; }

  void run_unconstrained() {
    std::vector<std::vector<uint64_t>> stamp(models.size());
    std::priority_queue<Move> heap;
    for (uint32_t l = 0; l < models.size(); ++l) {
      stamp[l].assign(models[l]->k, 0);
      for (uint64_t j = 0; j < models[l]->k; ++j) {
        Move m;
        if (best_move(l, j, top(l), m)) heap.push(m);
      }
    }
    while (!heap.empty()) {
      Move m = heap.top();
      heap.pop();
      if (m.stamp != stamp[m.layer][m.j]) continue;  // superseded by a later push
      const double k = cost(m.layer, c[m.layer][m.j], m.target);
      if (!affordable(k, left)) {  // the budget shrank since: the best move that still fits
        Move again;
        if (best_move(m.layer, m.j, top(m.layer), again)) {
          again.stamp = m.stamp;
          heap.push(again);
        }
        continue;
      }
      c[m.layer][m.j] = m.target;
      left -= k;
      const uint64_t s = ++stamp[m.layer][m.j];
      Move next;
      if (best_move(m.layer, m.j, top(m.layer), next)) {
        next.stamp = s;
        heap.push(next);
      }
    }
  }

  // Bands must be contiguous with one width each, so bits may not increase along the rank: hand
  // the chosen widths out again in descending order (same multiset, same cost; with errors ~σ²,
  // wider codes belong to larger σ anyway). Then spend what is left on upgrades that keep the order:
  // only the first vector of a run can widen, and not beyond its predecessor.
  void make_monotone_and_fill() {
    for (auto& cl : c) std::sort(cl.begin(), cl.end(), std::greater<uint32_t>());
    for (;;) {
      Move best{0, 0, 0, 0, 0};
      bool found = false;
      for (uint32_t l = 0; l < models.size(); ++l)
        for (uint64_t j = 0; j < models[l]->k; ++j) {
          if (j > 0 && c[l][j - 1] == c[l][j]) continue;  // not a run start
          Move m{0, 0, 0, 0, 0};
          if (best_move(l, j, j == 0 ? top(l) : c[l][j - 1], m) && (!found || m.ratio > best.ratio))
            best = m, found = true;
          if (c[l][j] == 0) break;  // everything after the first dropped vector is dropped too
        }
      if (!found) return;
      left -= cost(best.layer, c[best.layer][best.j], best.target);
      c[best.layer][best.j] = best.target;
    }
  }

  std::vector<BandDesc> bands(uint32_t l, uint32_t group_size) const {
    std::vector<BandDesc> out;
    const VectorErrorModel& m = *models[l];
    for (uint64_t j = 0; j < m.k && c[l][j] != 0; ++j) {
      const uint32_t bits = m.widths[c[l][j]];
      if (!out.empty() && out.back().bits == bits) {
        ++out.back().rank_end;
      } else {
        out.push_back(BandDesc{bits, (uint32_t)j, (uint32_t)j + 1, bits == 16 ? 0u : group_size});
      }
    }
    return out;
  }
};

void check_model(const VectorErrorModel& m) {
  DC_CHECK(!m.widths.empty() && m.widths[0] == 0 && m.err.size() == m.k * m.widths.size(),
           DC_ERR_INVALID_ARGUMENT, "allocate: error model of %s is malformed", m.name.c_str());
  DC_CHECK(m.k <= std::min(m.rows, m.cols), DC_ERR_INVALID_ARGUMENT, "allocate: %s models %llu vectors, rank <= %llu",
           m.name.c_str(), (unsigned long long)m.k, (unsigned long long)std::min(m.rows, m.cols));
}

void check_group(uint32_t group_size) {
  DC_CHECK(group_size >= DC_CODE_BLOCK && group_size % DC_CODE_BLOCK == 0 && group_size <= DC_MAX_GROUP,
           DC_ERR_INVALID_ARGUMENT, "allocate: group size %u must be a multiple of %u in [%u, %u]", group_size,
           DC_CODE_BLOCK, DC_CODE_BLOCK, DC_MAX_GROUP);
}

}  // namespace

VectorErrorModel model_vector_errors(const std::string& name, const Svd& svd, const double* hessian,
                                     uint64_t max_vectors, const AllocOptions& opts) {
  check_group(opts.group_size);
  std::vector<uint32_t> widths = opts.widths;
  std::sort(widths.begin(), widths.end());
  widths.erase(std::unique(widths.begin(), widths.end()), widths.end());
  for (uint32_t w : widths)
    DC_CHECK(dc_valid_band_bits(w), DC_ERR_INVALID_ARGUMENT, "allocate: width %u is not one of 2, 3, 4, 8, 16", w);
  DC_CHECK(!widths.empty(), DC_ERR_INVALID_ARGUMENT, "allocate: no candidate widths");
  widths.insert(widths.begin(), 0u);
  const uint64_t m = svd.m, n = svd.n;
  DC_CHECK(svd.u.size() == m * svd.k && svd.vt.size() == svd.k * n && svd.s.size() == svd.k,
           DC_ERR_INVALID_ARGUMENT, "allocate: SVD of %s has inconsistent sizes", name.c_str());
  DC_CHECK(m <= (uint64_t)INT32_MAX && n <= (uint64_t)INT32_MAX, DC_ERR_LIMIT,
           "allocate: %s exceeds BLAS's 32-bit dimensions", name.c_str());

  VectorErrorModel out;
  out.name = name;
  out.rows = m;
  out.cols = n;
  out.widths = widths;
  out.k = max_vectors == 0 ? svd.k : std::min(max_vectors, svd.k);
  const uint64_t k = out.k, nw = widths.size();
  out.err.assign(k * nw, 0.0);
  if (k == 0) return out;

  // H v_j for every modelled vector (one GEMM).
  std::vector<double> v(k * n), hv(k * n);
  for (uint64_t i = 0; i < k * n; ++i) v[i] = svd.vt[i];
  if (hessian) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)k, (int)n, (int)n, 1.0, v.data(), (int)n,
                hessian, (int)n, 0.0, hv.data(), (int)n);
  } else {
    hv = v;
  }

  // V probes, all k rows per width at once; errors D = V − V̂ in original column order.
  const bool v_gptq = opts.quantizer == Quantizer::Gptq && hessian != nullptr;
  GptqHessian prepared;
  if (v_gptq)
    prepared = prepare_gptq_hessian(hessian, n, opts.damp,
                                    opts.act_order ? act_order_permutation(hessian, n) : std::vector<uint32_t>{});
  std::vector<double> vhv(k, 0.0), uu(k, 0.0), s2(k);
  for (uint64_t j = 0; j < k; ++j) {
    s2[j] = (double)svd.s[j] * svd.s[j];
    for (uint64_t i = 0; i < m; ++i) uu[j] += (double)svd.u[i * svd.k + j] * svd.u[i * svd.k + j];
    for (uint64_t c = 0; c < n; ++c) vhv[j] += v[j * n + c] * hv[j * n + c];
    out.err[j * nw] = s2[j] * uu[j] * vhv[j];  // dropped
  }
  // U weights: compress_lowrank quantizes a band's U (rows × rank) against the Hessian of its input
  // z = Σ V̂ᵀ x. RTN pays the full variance E[z_j²] = σ_j² v_jᵀHv_j per unit of error; GPTQ's error
  // feedback into the later columns of the band leaves only the variance of z_j not explained by
  // the later z_j' (GPTQ's loss (w − q)² / [H⁻¹_F]_jj). The band is not known yet, so all later
  // modelled vectors stand in for it: the Schur complements of G = V H Vᵀ over the later vectors,
  // the squared diagonal of the Cholesky factor of G in reversed order.
  std::vector<double> u_weight(vhv);
  if (opts.quantizer == Quantizer::Gptq) {
    std::vector<double> g(k * k);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)k, (int)k, (int)n, 1.0, hv.data(), (int)n, v.data(),
                (int)n, 0.0, g.data(), (int)k);
    double mean = 0;
    for (uint64_t j = 0; j < k; ++j) mean += g[j * k + j] / (double)k;
    std::vector<double> rev(k * k);
    for (uint64_t a = 0; a < k; ++a)
      for (uint64_t b = 0; b < k; ++b) rev[a * k + b] = 0.5 * (g[(k - 1 - a) * k + (k - 1 - b)] + g[(k - 1 - b) * k + (k - 1 - a)]);
    for (uint64_t a = 0; a < k; ++a) rev[a * k + a] += 1e-9 * mean;  // jitter: G may be rank deficient
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)k, rev.data(), (lapack_int)k) == 0)
      for (uint64_t j = 0; j < k; ++j) {
        const double l = rev[(k - 1 - j) * k + (k - 1 - j)];
        u_weight[j] = std::min(vhv[j], l * l);
      }
  }
  std::vector<double> dv(k * n), dvh(hessian ? k * n : 0);
  std::vector<float> uj(m);
  for (uint64_t w = 1; w < nw; ++w) {
    const QuantizedRows vq = v_gptq ? quantize_gptq_prepared(svd.vt.data(), k, prepared, widths[w], opts.group_size)
                                    : quantize_rtn(svd.vt.data(), k, n, widths[w], opts.group_size);
    for (uint64_t j = 0; j < k; ++j)
      for (uint64_t p = 0; p < n; ++p) {
        const uint64_t c = v_gptq ? prepared.order[p] : p;
        dv[j * n + c] = v[j * n + c] - (double)vq.dequant[j * n + p];
      }
    if (hessian)
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)k, (int)n, (int)n, 1.0, dv.data(), (int)n,
                  hessian, (int)n, 0.0, dvh.data(), (int)n);
    for (uint64_t j = 0; j < k; ++j) {
      const double* d = &dv[j * n];
      const double* hvj = &hv[j * n];
      double q = 0, dhv = 0;
      for (uint64_t c = 0; c < n; ++c) {
        q += d[c] * (hessian ? dvh[j * n + c] : d[c]);
        dhv += d[c] * hvj[c];
      }
      for (uint64_t i = 0; i < m; ++i) uj[i] = svd.u[i * svd.k + j];
      const std::vector<double> uq = probe(uj, widths[w], opts.group_size);
      double du2 = 0, udu = 0;
      for (uint64_t i = 0; i < m; ++i) {
        const double e = uj[i] - uq[i];
        du2 += e * e;
        udu += uj[i] * e;
      }
      // v̂ᵀHv̂ = vᵀHv − 2δvᵀHv + δvᵀHδv; with GPTQ on U only the unexplained part (see u_weight)
      const double vhat_h_vhat = (vhv[j] - 2 * dhv + q) * (u_weight[j] / std::max(vhv[j], 1e-300));
      const double dv_h_vhat = dhv - q;
      out.err[j * nw + w] = std::max(0.0, s2[j] * (uu[j] * q + du2 * vhat_h_vhat + 2 * udu * dv_h_vhat));
    }
  }
  return out;
}

std::vector<BandDesc> allocate_layer(const VectorErrorModel& model, double budget_bit_ranks,
                                     uint32_t group_size) {
  check_model(model);
  check_group(group_size);
  DC_CHECK(std::isfinite(budget_bit_ranks) && budget_bit_ranks >= 0, DC_ERR_INVALID_ARGUMENT,
           "allocate: budget %g of %s must be finite and >= 0", budget_bit_ranks, model.name.c_str());
  Greedy g;
  g.models = {&model};
  g.unit = {1.0};
  g.left = budget_bit_ranks;
  g.c.assign(1, std::vector<uint32_t>(model.k, 0));
  g.run_unconstrained();
  g.make_monotone_and_fill();
  return g.bands(0, group_size);
}

std::vector<std::vector<BandDesc>> allocate_global(const std::vector<VectorErrorModel>& models,
                                                   double total_bits, uint32_t group_size) {
  check_group(group_size);
  DC_CHECK(std::isfinite(total_bits) && total_bits >= 0, DC_ERR_INVALID_ARGUMENT,
           "allocate: total budget %g must be finite and >= 0", total_bits);
  Greedy g;
  g.left = total_bits;
  for (const auto& m : models) {
    check_model(m);
    g.models.push_back(&m);
    g.unit.push_back((double)(m.rows + m.cols));
    g.c.emplace_back(m.k, 0u);
  }
  g.run_unconstrained();
  g.make_monotone_and_fill();
  std::vector<std::vector<BandDesc>> out;
  for (uint32_t l = 0; l < models.size(); ++l) out.push_back(g.bands(l, group_size));
  return out;
}

double predicted_error(const VectorErrorModel& model, const std::vector<BandDesc>& bands) {
  check_model(model);
  std::vector<uint32_t> w(model.k, 0);
  for (const BandDesc& b : bands) {
    const auto it = std::find(model.widths.begin(), model.widths.end(), b.bits);
    DC_CHECK(it != model.widths.end() && b.bits != 0, DC_ERR_INVALID_ARGUMENT,
             "predicted_error: %s has no model for width %u", model.name.c_str(), b.bits);
    DC_CHECK(b.rank_end <= model.k, DC_ERR_INVALID_ARGUMENT,
             "predicted_error: band [%u, %u) of %s is beyond the %llu modelled vectors", b.rank_begin, b.rank_end,
             model.name.c_str(), (unsigned long long)model.k);
    for (uint32_t j = b.rank_begin; j < b.rank_end; ++j) w[j] = (uint32_t)(it - model.widths.begin());
  }
  double e = 0;
  for (uint64_t j = 0; j < model.k; ++j) e += model.err[j * model.widths.size() + w[j]];
  return e;
}

std::vector<BandDesc> single_precision_bands(uint64_t rows, uint64_t cols, double alpha, uint32_t bits,
                                             uint32_t group_size) {
  BandRecipe r;
  r.alpha = alpha;
  r.leading.clear();
  r.rest_bits = bits;
  r.group_size = group_size;
  DC_CHECK(bits != 0, DC_ERR_INVALID_ARGUMENT, "single precision: bit width must not be 0");
  return bands_for_shape(rows, cols, r);
}

std::vector<BandDesc> lowrank_fp16_bands(uint64_t rows, uint64_t cols, double alpha) {
  return single_precision_bands(rows, cols, alpha, 16, 128);
}

}  // namespace dc

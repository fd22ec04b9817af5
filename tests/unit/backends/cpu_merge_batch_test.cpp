// CPU backend merge and multi-tenant (batched) apply against the float64 reference.
#include <numeric>

#include "backends/cpu/cpu_ops.h"
#include "cpu_apply_harness.h"

namespace dc_test {
namespace {

const dc_dtype kDtypes[] = {DC_DTYPE_F32, DC_DTYPE_F16, DC_DTYPE_BF16};

// ---- merge ---------------------------------------------------------------------------------------

// Merges t into a random W (dtype, row stride cols + pad) and checks W against W0 + scale·ΔW.
std::vector<uint8_t> check_merge(const TestDelta& t, dc_dtype wt, uint64_t pad, float scale, int threads) {
  const uint64_t rows = t.view.rows, cols = t.view.cols;
  SCOPED_TRACE("merge rows=" + std::to_string(rows) + " cols=" + std::to_string(cols) + " kind=" +
               std::to_string(t.view.kind) + " W=" + dtype_name(wt) + " pad=" + std::to_string(pad) +
               " threads=" + std::to_string(threads));
  double s = 0;
  for (double v : t.dw) s += v * v;
  const double rms = std::sqrt(s / t.dw.size());
  Mat w = random_mat(rows, cols, pad ? cols + pad : 0, wt, std::max(rms, 1e-4), 99);
  const Mat w0 = w;
  std::vector<double> want(rows * cols);
  for (uint64_t k = 0; k < rows * cols; ++k) want[k] = w0.vals[k] + static_cast<double>(scale) * t.dw[k];
  CpuDevice dev(threads);
  void* d = dev.load(t);
  EXPECT_EQ(dev.ops->merge(dev.dev, d, w.data(), wt, pad ? w.ld : 0, scale, nullptr), DC_OK) << last_backend_error();
  std::vector<double> got(rows * cols);
  for (uint64_t r = 0; r < rows; ++r)
    for (uint64_t c = 0; c < cols; ++c) got[r * cols + c] = w.at(r, c);
  const ErrStats e = compare(got, want);
  EXPECT_LE(e.rel_norm, norm_tol(wt));
  EXPECT_LE(e.max_rel, max_tol(wt));
  EXPECT_TRUE(gaps_untouched(w0, w));
  return w.bytes;
}

TEST(CpuMerge, LowRankEveryWidthAndMixed) {
  for (uint32_t bits : {2u, 3u, 4u, 8u, 16u}) check_merge(*make_lowrank({33, 70, {{bits, 5, 32}}}, bits), DC_DTYPE_F32, 0, 1.f, 2);
  auto t = make_lowrank({1000, 3000, {{8, 2, 128}, {3, 32, 128}, {2, 30, 128}}}, 7);
  check_merge(*t, DC_DTYPE_F32, 0, 1.f, 2);
  auto s = make_lowrank({128, 300, {{8, 2, 64}, {3, 12, 64}, {2, 20, 128}}}, 8);
  for (dc_dtype wt : kDtypes) check_merge(*s, wt, 11, -0.5f, 2);
}

TEST(CpuMerge, LowRankShardForms) {
  const uint64_t rows = 60, cols = 120;
  LowRankSpec shard{rows, cols, {{8, 2, 32}, {3, 9, 64}}};
  shard.v_len = cols + 40;
  shard.in_perm.assign(shard.v_len, DC_PERM_NONE);
  std::vector<uint32_t> where(shard.v_len);
  std::iota(where.begin(), where.end(), 0u);
  std::shuffle(where.begin(), where.end(), std::mt19937_64(3));
  for (uint32_t c = 0; c < cols; ++c) shard.in_perm[where[c]] = c;
  check_merge(*make_lowrank(shard, 4), DC_DTYPE_F32, 3, 1.f, 2);
  LowRankSpec off{rows, cols, {{4, 7, 64}, {2, 30, 128}}};
  off.v_len = cols + 50;
  off.v_col_offset = 21;
  check_merge(*make_lowrank(off, 5), DC_DTYPE_BF16, 0, 2.f, 2);
}

TEST(CpuMerge, BitDeltaAndDense) {
  for (dc_dtype wt : kDtypes) {
    check_merge(*make_bitdelta(70, 301, 1), wt, 4, 0.75f, 2);
    check_merge(*make_dense(70, 45, wt, 2), wt, 0, 1.f, 2);
    check_merge(*make_dense(70, 1, DC_DTYPE_F16, 3), wt, 0, -1.f, 2);  // 1-D: W treated as rows × 1
  }
  check_merge(*make_dense(20, 1, DC_DTYPE_F32, 6), DC_DTYPE_F32, 3, 1.f, 2);  // 1-D with a row stride
}

TEST(CpuMerge, ThreadCountDoesNotChangeResults) {
  auto t = make_lowrank({257, 300, {{8, 2, 128}, {3, 32, 128}, {2, 30, 128}}}, 9);
  const auto w1 = check_merge(*t, DC_DTYPE_F16, 0, 1.f, 1);
  const auto w2 = check_merge(*t, DC_DTYPE_F16, 0, 1.f, 2);
  EXPECT_EQ(w1, w2);
}

// ---- batched -------------------------------------------------------------------------------------

// Rows mapped to three deltas (two low-rank, one BitDelta) and -1; compared with per-row applies
// (m = 1 each, same device) and with the reference.
void check_batched(const ApplyOpts& o) {
  SCOPED_TRACE(std::string("batched base=") + (o.base ? "yes" : "no") + " threads=" + std::to_string(o.threads));
  const uint64_t rows = 150, cols = 260;
  std::vector<std::unique_ptr<TestDelta>> ts;
  ts.push_back(make_lowrank({rows, cols, {{8, 2, 128}, {3, 20, 64}, {2, 30, 128}}}, 1));
  LowRankSpec permuted{rows, cols, {{4, 12, 32}}};
  permuted.in_perm.resize(cols);
  std::iota(permuted.in_perm.begin(), permuted.in_perm.end(), 0u);
  std::shuffle(permuted.in_perm.begin(), permuted.in_perm.end(), std::mt19937_64(2));
  ts.push_back(make_lowrank(permuted, 3));
  ts.push_back(make_bitdelta(rows, cols, 4));

  std::vector<int32_t> slot(o.m);
  std::mt19937_64 rng(5);
  for (auto& s : slot) s = static_cast<int32_t>(rng() % 4) - 1;
  slot[0] = 2;
  slot[1] = -1;

  Mat x = random_mat(o.m, cols, o.ldx_pad ? cols + o.ldx_pad : 0, o.xt, 1.0, 6);
  Mat base;
  if (o.base) base = random_mat(rows, cols, o.ldb_pad ? cols + o.ldb_pad : 0, o.bt, 0.05, 7);
  Mat y = random_mat(o.m, rows, o.ldy_pad ? rows + o.ldy_pad : 0, o.yt, 0.05, 8);
  const Mat y0 = y;

  CpuDevice dev(o.threads);
  std::vector<void*> ds;
  for (auto& t : ts) ds.push_back(dev.load(*t));
  void* batch = dev.batch(ds);
  const dc_apply_params p = make_params(o, x, y, o.base ? &base : nullptr);
  ASSERT_EQ(dev.ops->apply_batched(dev.dev, batch, slot.data(), &p), DC_OK) << last_backend_error();
  const auto got = read_y(y, o.m, rows);
  EXPECT_TRUE(gaps_untouched(y0, y));

  // Per-row: row i alone through apply (or untouched / base only for -1), and the reference.
  std::vector<double> per_row(o.m * rows), want(o.m * rows);
  ApplyOpts one = o;
  one.m = 1;
  for (uint64_t i = 0; i < o.m; ++i) {
    Mat xi = random_mat(1, cols, 0, o.xt, 1.0, 0), yi = random_mat(1, rows, 0, o.yt, 1.0, 0);
    for (uint64_t c = 0; c < cols; ++c) xi.vals[c] = store_as(xi.data(), c, o.xt, x.vals[i * cols + c]);
    for (uint64_t r = 0; r < rows; ++r) yi.vals[r] = store_as(yi.data(), r, o.yt, y0.vals[i * rows + r]);
    const TestDelta* t = slot[i] < 0 ? nullptr : ts[slot[i]].get();
    const auto wi = reference_y(t, rows, cols, one, xi, yi, o.base ? &base : nullptr);
    std::copy(wi.begin(), wi.end(), want.begin() + i * rows);
    ApplyOpts packed = one;
    packed.ldx_pad = packed.ldy_pad = 0;
    dc_apply_params pi = make_params(packed, xi, yi, o.base ? &base : nullptr);
    pi.ld_base = p.ld_base;
    if (t) {
      ASSERT_EQ(dev.ops->apply(dev.dev, ds[slot[i]], &pi), DC_OK);
    } else if (o.base) {
      // base only: a zero-scaled delta gives y = x·W_baseᵀ through the plain apply
      pi.scale = 0.f;
      ASSERT_EQ(dev.ops->apply(dev.dev, ds[0], &pi), DC_OK);
    }
    for (uint64_t r = 0; r < rows; ++r) per_row[i * rows + r] = yi.at(0, r);
  }
  EXPECT_LE(compare(got, per_row).rel_norm, 1e-6);
  const ErrStats e = compare(got, want);
  EXPECT_LE(e.rel_norm, norm_tol(o.yt));
  EXPECT_LE(e.max_rel, max_tol(o.yt));
  // Rows without a delta and without the base stay bit-identical.
  if (!o.base) {
    for (uint64_t i = 0; i < o.m; ++i) {
      if (slot[i] >= 0) continue;
      for (uint64_t r = 0; r < rows; ++r) ASSERT_EQ(got[i * rows + r], y0.vals[i * rows + r]);
    }
  }
}

TEST(CpuApplyBatched, MatchesPerRowApplies) {
  ApplyOpts o;
  o.m = 53;
  check_batched(o);
  {  // every slot's rows on the prefill path, then on the decode loops
    const uint32_t keep = dc::cpu::gemm_min_rows();
    dc::cpu::set_gemm_min_rows(1);
    check_batched(o);
    dc::cpu::set_gemm_min_rows(UINT32_MAX);
    check_batched(o);
    dc::cpu::set_gemm_min_rows(keep);
  }
  o.base = true;
  o.scale = 0.5f;
  o.ldx_pad = 3;
  o.ldy_pad = 5;
  o.ldb_pad = 2;
  check_batched(o);
  o.xt = DC_DTYPE_BF16;
  o.yt = DC_DTYPE_F16;
  o.bt = DC_DTYPE_F16;
  o.threads = 1;
  check_batched(o);
}

}  // namespace
}  // namespace dc_test

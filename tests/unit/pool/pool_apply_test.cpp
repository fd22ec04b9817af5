// dc_pool_apply_batched against (a) the float64 reference ΔW of each variant and (b) per-row applies
// through the plain API (dc_delta_load + dc_apply_delta_linear), on the CPU backend.
#include <chrono>
#include <cmath>
#include <thread>

#include "pool_fixture.h"

namespace pool_test {
namespace {

struct Rows {
  std::vector<float> x, y0;
  uint64_t m, cols, rows;
};

Rows random_rows(uint64_t m, uint64_t rows, uint64_t cols, uint64_t seed) {
  return Rows{dc_test::random_floats(m * cols, seed, 1.f), dc_test::random_floats(m * rows, seed + 1, 0.1f), m,
              cols, rows};
}

// y = y0 + x·ΔWᵀ (+ x·Wᵀ) in float64, row by row with each row's variant.
std::vector<double> reference(const PoolHarness& h, const char* tensor, const std::vector<const char*>& ids,
                              const Rows& r, const std::vector<float>* base = nullptr) {
  std::vector<double> y(r.m * r.rows);
  for (uint64_t i = 0; i < r.m; ++i)
    for (uint64_t o = 0; o < r.rows; ++o) {
      double acc = r.y0[i * r.rows + o];
      if (base) {
        acc = 0;
        for (uint64_t c = 0; c < r.cols; ++c) acc += (double)r.x[i * r.cols + c] * (*base)[o * r.cols + c];
      }
      if (ids[i]) {
        const auto& dw = h.variants[(size_t)std::stoi(ids[i] + 1)]->dw.at(tensor);
        for (uint64_t c = 0; c < r.cols; ++c) acc += (double)r.x[i * r.cols + c] * dw[o * r.cols + c];
      }
      y[i * r.rows + o] = acc;
    }
  return y;
}

dc_apply_params params_for(Rows& r, std::vector<float>& y) {
  dc_apply_params p;
  dc_apply_params_init(&p);
  p.m = r.m;
  p.x = r.x.data();
  p.y = y.data();
  return p;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  double err = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    err = std::max(err, std::fabs(got[i] - want[i]));
    norm = std::max(norm, std::fabs(want[i]));
  }
  EXPECT_LE(err, tol * std::max(norm, 1.0)) << "max abs error " << err << " (max |y| " << norm << ")";
}

TEST(PoolApply, BatchedByModelIdMatchesReferenceAndPlainApi) {
  PoolHarness h(3, 1 << 22);
  const char* tensor = "l0.q";
  const std::vector<const char*> ids = {"m2", "m0", nullptr, "m2", "m1", "m0", nullptr, "m1", "m2"};
  Rows r = random_rows(ids.size(), 40, 64, 5);
  std::vector<float> y = r.y0;
  dc_apply_params p = params_for(r, y);
  ASSERT_DC_OK(dc_pool_apply_batched(h.pool, tensor, ids.data(), &p));
  expect_close(y, reference(h, tensor, ids, r), 1e-5);

  // Per-row applies through the plain API on deltas loaded independently of the pool.
  std::vector<float> y_plain = r.y0;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!ids[i]) continue;
    dc_delta* d = nullptr;
    ASSERT_DC_OK(dc_delta_load(&d, h.ctx, h.variants[(size_t)std::stoi(ids[i] + 1)]->container, tensor, nullptr));
    dc_apply_params q;
    dc_apply_params_init(&q);
    q.m = 1;
    q.x = r.x.data() + i * r.cols;
    q.y = y_plain.data() + i * r.rows;
    ASSERT_DC_OK(dc_apply_delta_linear(d, &q));
    dc_delta_free(d);
  }
  for (size_t k = 0; k < y.size(); ++k) EXPECT_NEAR(y[k], y_plain[k], 1e-5 * (1 + std::fabs(y_plain[k]))) << k;

  dc_pool_stats st = stats_of(h.pool);
  EXPECT_EQ(st.misses, 3u);  // one acquisition per distinct id
  EXPECT_EQ(st.batch_builds, 1u);
  EXPECT_EQ(st.slot_uploads, 1u);
  EXPECT_EQ(st.referenced_deltas, 0u);

  // Same ids on another tensor of the same shape: a new batch, the same row table.
  std::vector<float> y2 = r.y0;
  p.y = y2.data();
  ASSERT_DC_OK(dc_pool_apply_batched(h.pool, "l0.k", ids.data(), &p));
  expect_close(y2, reference(h, "l0.k", ids, r), 1e-5);
  st = stats_of(h.pool);
  EXPECT_EQ(st.batch_builds, 2u);
  EXPECT_EQ(st.slot_uploads, 1u);

  // Again on l0.q: everything cached, all hits.
  std::vector<float> y3 = r.y0;
  p.y = y3.data();
  ASSERT_DC_OK(dc_pool_apply_batched(h.pool, tensor, ids.data(), &p));
  EXPECT_EQ(y3, y);
  st = stats_of(h.pool);
  EXPECT_EQ(st.batch_builds, 2u);
  EXPECT_EQ(st.slot_uploads, 1u);
  EXPECT_EQ(st.hits, 3u);    // the third call
  EXPECT_EQ(st.misses, 6u);  // l0.q and l0.k of three variants

  // Another order of the ids: new slots, new table, correct result.
  const std::vector<const char*> ids2 = {"m1", "m1", "m0", "m2", nullptr, "m0", "m2", "m2", "m1"};
  std::vector<float> y4 = r.y0;
  p.y = y4.data();
  ASSERT_DC_OK(dc_pool_apply_batched(h.pool, tensor, ids2.data(), &p));
  expect_close(y4, reference(h, tensor, ids2, r), 1e-5);
  EXPECT_EQ(stats_of(h.pool).slot_uploads, 2u);
}

TEST(PoolApply, IncludeBaseAndScale) {
  PoolHarness h(2, 1 << 22);
  const std::vector<const char*> ids = {"m1", nullptr, "m0", "m1"};
  Rows r = random_rows(ids.size(), 40, 64, 9);
  const std::vector<float> base = dc_test::random_floats(40 * 64, 11, 0.2f);
  std::vector<float> y(r.y0.size(), 123.f);  // overwritten
  dc_apply_params p = params_for(r, y);
  p.flags = DC_APPLY_INCLUDE_BASE;
  p.base_weight = base.data();
  ASSERT_DC_OK(dc_pool_apply_batched(h.pool, "l0.v", ids.data(), &p));
  expect_close(y, reference(h, "l0.v", ids, r, &base), 1e-5);

  // scale = -1 undoes a scale = 1 apply.
  std::vector<float> y2 = r.y0;
  p = params_for(r, y2);
  ASSERT_DC_OK(dc_pool_apply_batched(h.pool, "l0.o", ids.data(), &p));
  p.scale = -1.f;
  ASSERT_DC_OK(dc_pool_apply_batched(h.pool, "l0.o", ids.data(), &p));
  for (size_t k = 0; k < y2.size(); ++k) EXPECT_NEAR(y2[k], r.y0[k], 1e-5) << k;
}

TEST(PoolApply, LoadsWhatIsMissingUnderATightBudgetAndRefusesWhatCannotFit) {
  const uint64_t s = device_bytes_of(*make_variant(1), "l0.q");
  PoolHarness h(4, 2 * s + s / 2);
  const std::vector<const char*> two = {"m0", "m3", "m0"};
  Rows r = random_rows(two.size(), 40, 64, 13);
  for (int round = 0; round < 3; ++round) {  // m1/m2 resident before each round get evicted
    h.touch(1 + round % 2, "l0.q");
    std::vector<float> y = r.y0;
    dc_apply_params p = params_for(r, y);
    ASSERT_DC_OK(dc_pool_apply_batched(h.pool, "l0.q", two.data(), &p));
    expect_close(y, reference(h, "l0.q", two, r), 1e-5);
  }
  const std::vector<const char*> three = {"m0", "m1", "m2"};
  Rows r3 = random_rows(three.size(), 40, 64, 14);
  std::vector<float> y = r3.y0;
  dc_apply_params p = params_for(r3, y);
  EXPECT_EQ(dc_pool_apply_batched(h.pool, "l0.q", three.data(), &p), DC_ERR_BUDGET);
  EXPECT_EQ(y, r3.y0);  // untouched
  EXPECT_EQ(stats_of(h.pool).referenced_deltas, 0u);
  EXPECT_LE(stats_of(h.pool).resident_bytes, 2 * s + s / 2);
}

TEST(PoolApply, BitDeltaDenseAndErrors) {
  PoolHarness h(3, 1 << 22);
  const std::vector<const char*> ids = {"m0", "m2", nullptr, "m0"};
  {
    Rows r = random_rows(ids.size(), 40, 64, 21);
    std::vector<float> y = r.y0;
    dc_apply_params p = params_for(r, y);
    ASSERT_DC_OK(dc_pool_apply_batched(h.pool, "l0.bd", ids.data(), &p));
    expect_close(y, reference(h, "l0.bd", ids, r), 1e-5);
  }
  {
    Rows r = random_rows(ids.size(), 24, 40, 22);  // dense 2-D: row by row
    std::vector<float> y = r.y0;
    dc_apply_params p = params_for(r, y);
    ASSERT_DC_OK(dc_pool_apply_batched(h.pool, "l0.dn", ids.data(), &p));
    expect_close(y, reference(h, "l0.dn", ids, r), 1e-5);
    p.flags = DC_APPLY_INCLUDE_BASE;
    std::vector<float> base(24 * 40, 0.f);
    p.base_weight = base.data();
    EXPECT_EQ(dc_pool_apply_batched(h.pool, "l0.dn", ids.data(), &p), DC_ERR_UNSUPPORTED);
  }
  Rows r = random_rows(ids.size(), 40, 64, 23);
  std::vector<float> y = r.y0;
  dc_apply_params p = params_for(r, y);
  EXPECT_EQ(dc_pool_apply_batched(h.pool, "nope", ids.data(), &p), DC_ERR_NOT_FOUND);
  const std::vector<const char*> unknown = {"m0", "zz"};
  p.m = 2;
  EXPECT_EQ(dc_pool_apply_batched(h.pool, "l0.q", unknown.data(), &p), DC_ERR_NOT_FOUND);
  EXPECT_EQ(dc_pool_apply_batched(h.pool, "l0.q", nullptr, &p), DC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(stats_of(h.pool).referenced_deltas, 0u);  // the failed applies dropped their references
  const std::vector<const char*> none = {nullptr, nullptr};
  EXPECT_DC_OK(dc_pool_apply_batched(h.pool, "l0.q", none.data(), &p));
  EXPECT_EQ(y, r.y0);
  p.m = 0;
  EXPECT_DC_OK(dc_pool_apply_batched(h.pool, "l0.q", nullptr, &p));
}

TEST(PoolApply, ShapeMismatchAcrossVariants) {
  PoolHarness h(1, 1 << 22);
  auto other = make_variant(50, {{"l0.q", 48, 64, DC_KIND_LOWRANK}});
  ASSERT_DC_OK(dc_pool_register(h.pool, "wide", other->container));
  const std::vector<const char*> ids = {"m0", "wide"};
  Rows r = random_rows(ids.size(), 48, 64, 31);
  std::vector<float> y = r.y0;
  dc_apply_params p = params_for(r, y);
  EXPECT_EQ(dc_pool_apply_batched(h.pool, "l0.q", ids.data(), &p), DC_ERR_SHAPE_MISMATCH);
  ASSERT_DC_OK(dc_pool_unregister(h.pool, "wide"));
}

TEST(PoolApply, PrefetchedDeltasArePlacedByTheNextApply) {
  PoolHarness h(3, 1 << 22, 2);
  ASSERT_DC_OK(dc_pool_prefetch(h.pool, "m2", nullptr, nullptr));
  // Wait for the decodes without placing them (dc_pool_wait would place them).
  for (int i = 0; i < 2000 && stats_of(h.pool).prefetch_pending > 0; ++i) {
    dc_pool_entry_state st;
    ASSERT_DC_OK(dc_pool_query(h.pool, "m2", "l0.norm", &st, nullptr));
    bool all_decoded = true;
    for (const auto& spec : default_specs()) {
      ASSERT_DC_OK(dc_pool_query(h.pool, "m2", spec.name.c_str(), &st, nullptr));
      all_decoded = all_decoded && st == DC_POOL_DECODED;
    }
    if (all_decoded) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(state_of(h.pool, "m2", "l0.up"), DC_POOL_DECODED);
  const std::vector<const char*> ids = {"m0"};
  Rows r = random_rows(1, 40, 64, 41);
  std::vector<float> y = r.y0;
  dc_apply_params p = params_for(r, y);
  ASSERT_DC_OK(dc_pool_apply_batched(h.pool, "l0.q", ids.data(), &p));
  EXPECT_EQ(state_of(h.pool, "m2", "l0.up"), DC_POOL_RESIDENT);
  EXPECT_EQ(stats_of(h.pool).prefetch_loaded, default_specs().size());
}

}  // namespace
}  // namespace pool_test

// dc_apply_delta_linear / dc_merge_delta through the public API, against the float64 reference
// reconstruction of the stored delta (math/lowrank.h reconstruct_reference) — independent of the
// CPU backend's code path.
#include <gtest/gtest.h>

#include <cmath>

#include "unit/api/api_test_util.h"
#include "common/half.h"

using namespace dc_test;

namespace {

struct Case {
  uint64_t rows, cols;
  dc_tensor_kind kind;
};

dc::PackedTensor make_tensor(const Case& c, uint64_t seed) {
  const auto delta = long_tail_delta(c.rows, c.cols, seed);
  if (c.kind == DC_KIND_BITDELTA) return dc::compress_bitdelta("w", delta.data(), c.rows, c.cols, DC_DTYPE_F16);
  if (c.kind == DC_KIND_DENSE) return dc::make_dense("w", delta.data(), c.rows, c.cols, DC_DTYPE_F32);
  dc::LowRankOptions o;
  dc::BandRecipe r;
  r.alpha = 0.25;  // enough rank for small test shapes to have all three bands
  o.bands = dc::bands_for_shape(c.rows, c.cols, r);
  o.quantizer = dc::Quantizer::Rtn;
  return dc::compress_lowrank("w", delta.data(), c.rows, c.cols, o);
}

// ‖a − b‖ / ‖b‖
double rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double e = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    e += (a[i] - b[i]) * (a[i] - b[i]);
    n += b[i] * b[i];
  }
  return std::sqrt(e / std::max(n, 1e-300));
}

class ApplyApi : public ::testing::TestWithParam<Case> {};

TEST_P(ApplyApi, ApplyAndMergeMatchFloat64Reference) {
  const Case c = GetParam();
  const dc::PackedTensor t = make_tensor(c, c.rows * 31 + c.cols);
  const std::vector<double> ref_w = dc::reconstruct_reference(t);
  auto image = image_of({t});
  auto container = open_image(image);
  ASSERT_TRUE(container) << dc_last_error_message();
  auto ctx = cpu_context();
  ASSERT_TRUE(ctx);
  dc_delta* d = nullptr;
  ASSERT_EQ(dc_delta_load(&d, ctx.get(), container.get(), "w", nullptr), DC_OK) << dc_last_error_message();
  DeltaPtr delta(d);

  for (uint64_t m : {1ull, 3ull, 16ull, 65ull}) {
    const auto x = random_floats(m * c.cols, m + 5);
    std::vector<float> y(m * c.rows, 0.5f);
    dc_apply_params p;
    dc_apply_params_init(&p);
    p.m = m;
    p.x = x.data();
    p.y = y.data();
    p.scale = 0.75f;
    ASSERT_EQ(dc_apply_delta_linear(delta.get(), &p), DC_OK) << dc_last_error_message();
    std::vector<double> got(m * c.rows), want(m * c.rows);
    for (uint64_t i = 0; i < m; ++i)
      for (uint64_t o = 0; o < c.rows; ++o) {
        double s = 0;
        for (uint64_t k = 0; k < c.cols; ++k) s += (double)x[i * c.cols + k] * ref_w[o * c.cols + k];
        want[i * c.rows + o] = 0.5 + 0.75 * s;
        got[i * c.rows + o] = y[i * c.rows + o];
      }
    EXPECT_LT(rel_diff(got, want), 2e-6) << "m=" << m;
  }

  // Merge into an fp32 weight and into an fp16 weight.
  const auto w0 = random_floats(c.rows * c.cols, 99, 0.05f);
  std::vector<float> w32 = w0;
  ASSERT_EQ(dc_merge_delta(delta.get(), w32.data(), DC_DTYPE_F32, 0, 1.0f, nullptr), DC_OK);
  std::vector<uint16_t> w16(w0.size());
  for (size_t i = 0; i < w0.size(); ++i) w16[i] = dc::float_to_half(w0[i]);
  ASSERT_EQ(dc_merge_delta(delta.get(), w16.data(), DC_DTYPE_F16, 0, 1.0f, nullptr), DC_OK);
  double max32 = 0, max16 = 0;
  for (size_t i = 0; i < w0.size(); ++i) {
    const double want = (double)w0[i] + ref_w[i];
    max32 = std::max(max32, std::fabs(w32[i] - want));
    const double want16 = (double)dc::half_to_float(dc::float_to_half(w0[i])) + ref_w[i];
    // one fp16 rounding of the result: half an ulp of |want16| (≤ 2^-11 relative), plus slack
    max16 = std::max(max16, std::fabs(dc::half_to_float(w16[i]) - want16) / std::max(std::fabs(want16), 6e-5));
  }
  EXPECT_LT(max32, 1e-6);
  EXPECT_LT(max16, 1.0 / 1024);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ApplyApi,
                         ::testing::Values(Case{64, 96, DC_KIND_LOWRANK}, Case{1000, 300, DC_KIND_LOWRANK},
                                           Case{1, 4096, DC_KIND_LOWRANK}, Case{300, 1000, DC_KIND_LOWRANK},
                                           Case{129, 257, DC_KIND_BITDELTA}, Case{33, 65, DC_KIND_DENSE}));

TEST(ApplyApi, IncludeBaseComputesBasePlusDelta) {
  const Case c{96, 160, DC_KIND_LOWRANK};
  const dc::PackedTensor t = make_tensor(c, 7);
  const auto ref_w = dc::reconstruct_reference(t);
  auto image = image_of({t});
  auto container = open_image(image);
  auto ctx = cpu_context(1);
  dc_delta* d = nullptr;
  ASSERT_EQ(dc_delta_load(&d, ctx.get(), container.get(), "w", nullptr), DC_OK);
  DeltaPtr delta(d);
  const uint64_t m = 5;
  const auto x = random_floats(m * c.cols, 1);
  const auto w = random_floats(c.rows * c.cols, 2, 0.05f);
  // bf16 activations in, fp16 out, strided
  const uint64_t ldx = c.cols + 3, ldy = c.rows + 5;
  std::vector<uint16_t> xb(m * ldx), y(m * ldy, 0x7e00 /* NaN: must be overwritten */);
  for (uint64_t i = 0; i < m; ++i)
    for (uint64_t k = 0; k < c.cols; ++k) xb[i * ldx + k] = dc::float_to_bf16(x[i * c.cols + k]);
  dc_apply_params p;
  dc_apply_params_init(&p);
  p.flags = DC_APPLY_INCLUDE_BASE;
  p.m = m;
  p.x = xb.data();
  p.x_dtype = DC_DTYPE_BF16;
  p.ldx = ldx;
  p.y = y.data();
  p.y_dtype = DC_DTYPE_F16;
  p.ldy = ldy;
  p.base_weight = w.data();
  ASSERT_EQ(dc_apply_delta_linear(delta.get(), &p), DC_OK) << dc_last_error_message();
  for (uint64_t i = 0; i < m; ++i)
    for (uint64_t o = 0; o < c.rows; ++o) {
      double s = 0;
      for (uint64_t k = 0; k < c.cols; ++k)
        s += (double)dc::bf16_to_float(xb[i * ldx + k]) * ((double)w[o * c.cols + k] + ref_w[o * c.cols + k]);
      EXPECT_NEAR(dc::half_to_float(y[i * ldy + o]), s, 2e-3 * std::max(1.0, std::fabs(s))) << i << "," << o;
    }
}

TEST(ApplyApi, BadArgumentsGiveSpecificErrors) {
  const dc::PackedTensor t = make_tensor({40, 70, DC_KIND_LOWRANK}, 3);
  auto image = image_of({t});
  auto container = open_image(image);
  auto ctx = cpu_context(1);
  dc_delta* d = nullptr;
  EXPECT_EQ(dc_delta_load(&d, ctx.get(), container.get(), "nope", nullptr), DC_ERR_NOT_FOUND);
  EXPECT_NE(std::string(dc_last_error_message()).find("nope"), std::string::npos);
  EXPECT_EQ(d, nullptr);
  ASSERT_EQ(dc_delta_load(&d, ctx.get(), container.get(), "w", nullptr), DC_OK);
  DeltaPtr delta(d);
  std::vector<float> x(70), y(40);
  dc_apply_params p;
  dc_apply_params_init(&p);
  p.m = 1;
  p.x = x.data();
  p.y = y.data();
  EXPECT_EQ(dc_apply_delta_linear(nullptr, &p), DC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(dc_apply_delta_linear(delta.get(), nullptr), DC_ERR_INVALID_ARGUMENT);
  dc_apply_params q = p;
  q.ldx = 69;
  EXPECT_EQ(dc_apply_delta_linear(delta.get(), &q), DC_ERR_SHAPE_MISMATCH);
  EXPECT_NE(std::string(dc_last_error_message()).find("ldx"), std::string::npos);
  q = p;
  q.struct_size = 0;
  EXPECT_EQ(dc_apply_delta_linear(delta.get(), &q), DC_ERR_INVALID_ARGUMENT);
  q = p;
  q.flags = DC_APPLY_INCLUDE_BASE;  // no base_weight
  EXPECT_EQ(dc_apply_delta_linear(delta.get(), &q), DC_ERR_INVALID_ARGUMENT);
  q = p;
  q.x_dtype = (dc_dtype)7;
  EXPECT_EQ(dc_apply_delta_linear(delta.get(), &q), DC_ERR_INVALID_ARGUMENT);
  q = p;
  q.scale = NAN;
  EXPECT_EQ(dc_apply_delta_linear(delta.get(), &q), DC_ERR_INVALID_ARGUMENT);
  q = p;
  q.m = 0;  // nothing to do
  EXPECT_EQ(dc_apply_delta_linear(delta.get(), &q), DC_OK);
  EXPECT_EQ(dc_merge_delta(delta.get(), nullptr, DC_DTYPE_F32, 0, 1.f, nullptr), DC_ERR_INVALID_ARGUMENT);
  std::vector<float> w(40 * 70);
  EXPECT_EQ(dc_merge_delta(delta.get(), w.data(), DC_DTYPE_F32, 69, 1.f, nullptr), DC_ERR_SHAPE_MISMATCH);
}

TEST(ApplyApi, DeltaOutlivesContextAndContainer) {
  const dc::PackedTensor t = make_tensor({32, 64, DC_KIND_LOWRANK}, 11);
  auto image = image_of({t});
  auto container = open_image(image);
  auto ctx = cpu_context(1);
  dc_delta* d = nullptr;
  ASSERT_EQ(dc_delta_load(&d, ctx.get(), container.get(), "w", nullptr), DC_OK);
  ctx.reset();
  container.reset();
  std::vector<float> x(64, 1.f), y(32, 0.f);
  dc_apply_params p;
  dc_apply_params_init(&p);
  p.m = 1;
  p.x = x.data();
  p.y = y.data();
  EXPECT_EQ(dc_apply_delta_linear(d, &p), DC_OK);
  double n = 0;
  for (float v : y) n += std::fabs(v);
  EXPECT_GT(n, 0);
  dc_delta_free(d);
}

TEST(ApplyApi, BatchedMatchesPerRowApplies) {
  std::vector<dc::PackedTensor> ts;
  for (int k = 0; k < 3; ++k) {
    ts.push_back(make_tensor({48, 80, DC_KIND_LOWRANK}, 20 + k));
    ts.back().name = "w" + std::to_string(k);
  }
  auto image = image_of(ts);
  auto container = open_image(image);
  auto ctx = cpu_context(2);
  std::vector<DeltaPtr> deltas;
  std::vector<const dc_delta*> raw;
  for (int k = 0; k < 3; ++k) {
    dc_delta* d = nullptr;
    ASSERT_EQ(dc_delta_load(&d, ctx.get(), container.get(), ("w" + std::to_string(k)).c_str(), nullptr), DC_OK);
    deltas.emplace_back(d);
    raw.push_back(d);
  }
  dc_delta_batch* batch = nullptr;
  ASSERT_EQ(dc_delta_batch_create(&batch, raw.data(), raw.size()), DC_OK) << dc_last_error_message();
  const std::vector<int32_t> slots = {2, -1, 0, 1, 1, 2, 0, -1, 2};
  const uint64_t m = slots.size();
  const auto x = random_floats(m * 80, 5);
  std::vector<float> y(m * 48, 0.f), want(m * 48, 0.f);
  dc_apply_params p;
  dc_apply_params_init(&p);
  p.m = m;
  p.x = x.data();
  p.y = y.data();
  ASSERT_EQ(dc_apply_delta_linear_batched(batch, slots.data(), &p), DC_OK) << dc_last_error_message();
  for (uint64_t i = 0; i < m; ++i) {
    if (slots[i] < 0) continue;
    dc_apply_params q = p;
    q.m = 1;
    q.x = &x[i * 80];
    q.y = &want[i * 48];
    ASSERT_EQ(dc_apply_delta_linear(raw[slots[i]], &q), DC_OK);
  }
  for (uint64_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], want[i], 1e-5f * (1 + std::fabs(want[i])));
  const std::vector<int32_t> bad = {0, 3};
  p.m = 2;
  EXPECT_EQ(dc_apply_delta_linear_batched(batch, bad.data(), &p), DC_ERR_INVALID_ARGUMENT);
  dc_delta_batch_free(batch);
}

TEST(ContainerApi, InfoListsTensorsAndChecksBase) {
  const dc::PackedTensor t = make_tensor({40, 70, DC_KIND_LOWRANK}, 3);
  dc::ContainerMeta meta;
  meta.model_name = "ft";
  const std::vector<uint8_t> base_bytes = {1, 2, 3, 4, 5};
  meta.base_fingerprint.push_back({"w", {40, 70}, "F16", dc::xxh3_64(base_bytes.data(), base_bytes.size())});
  dc::ContainerWriter w(meta);
  w.add_tensor(t);
  auto image = w.finish_to_memory();
  auto c = open_image(image);
  ASSERT_TRUE(c);
  dc_container_info ci{};
  ci.struct_size = sizeof ci;
  ASSERT_EQ(dc_container_get_info(c.get(), &ci), DC_OK);
  EXPECT_EQ(ci.tensor_count, 1u);
  EXPECT_STREQ(ci.model_name, "ft");
  EXPECT_EQ(ci.file_bytes, image.size());
  dc_tensor_info ti{};
  ti.struct_size = sizeof ti;
  ASSERT_EQ(dc_container_tensor_info(c.get(), 0, &ti), DC_OK);
  EXPECT_STREQ(ti.name, "w");
  EXPECT_EQ(ti.rows, 40u);
  EXPECT_EQ(ti.cols, 70u);
  EXPECT_EQ(ti.kind, DC_KIND_LOWRANK);
  EXPECT_EQ(ti.rank, t.rank);
  EXPECT_EQ(ti.band_count, t.bands.size());
  EXPECT_EQ(dc_container_tensor_info(c.get(), 1, &ti), DC_ERR_NOT_FOUND);
  uint64_t n = 0;
  ASSERT_EQ(dc_container_singular_values(c.get(), 0, nullptr, 0, &n), DC_OK);
  EXPECT_EQ(n, t.rank);
  EXPECT_EQ(dc_container_verify(c.get()), DC_OK);
  EXPECT_EQ(dc_container_check_base_tensor(c.get(), "w", base_bytes.data(), base_bytes.size()), DC_OK);
  std::vector<uint8_t> other = base_bytes;
  other[2] ^= 1;
  EXPECT_EQ(dc_container_check_base_tensor(c.get(), "w", other.data(), other.size()), DC_ERR_BASE_MISMATCH);
  EXPECT_EQ(dc_container_check_base_tensor(c.get(), "x", other.data(), other.size()), DC_ERR_NOT_FOUND);
}

TEST(ContextApi, BackendsAndOptions) {
  EXPECT_EQ(dc_backend_available(DC_BACKEND_CPU), 1);
  EXPECT_STREQ(dc_backend_name(DC_BACKEND_CUDA), "cuda");
  EXPECT_EQ(dc_version(), (uint32_t)DC_VERSION_NUMBER);
  dc_context_options o;
  dc_context_options_init(&o);
  o.backend = DC_BACKEND_CPU;
  o.num_threads = -1;
  dc_context* ctx = nullptr;
  EXPECT_EQ(dc_context_create(&ctx, &o), DC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(ctx, nullptr);
  o.num_threads = 0;
  o.backend = (dc_backend)42;
  EXPECT_EQ(dc_context_create(&ctx, &o), DC_ERR_INVALID_ARGUMENT);
  o.backend = DC_BACKEND_AUTO;  // resolves to something usable; CPU on a machine without GPU modules
  ASSERT_EQ(dc_context_create(&ctx, &o), DC_OK);
  EXPECT_NE(dc_context_backend(ctx), DC_BACKEND_AUTO);
  dc_context_destroy(ctx);
  dc_context_destroy(nullptr);
  dc_delta_free(nullptr);
  dc_container_close(nullptr);
  dc_delta_batch_free(nullptr);
  EXPECT_STRNE(dc_status_string(DC_ERR_CHECKSUM), "unknown status");
  EXPECT_STREQ(dc_status_string((dc_status)12345), "unknown status");
}

}  // namespace

// Tensor-parallel shards through the public C API on the CPU backend: for every band width, with
// and without act-order, BitDelta and dense, and every partition of partitions():
//   column-parallel (DC_SHARD_ROWS): the shards' outputs side by side equal the unsharded apply;
//   row-parallel (DC_SHARD_COLS): the shards' partial outputs summed equal the unsharded apply;
// and merging every shard in place equals the unsharded merge. Each shard is also checked against
// its own float64 reference (x[:, b:e]·ΔŴ[:, b:e]ᵀ), so an error cannot hide in both paths.
#include <cstdio>
#include <functional>

#include "unit/shard/shard_fixture.h"

namespace dc_test {
namespace {

constexpr uint64_t kM = 3;  // tokens

struct CaseParam {
  std::string label;
  std::function<ShardCase()> make;
};

std::vector<CaseParam> all_cases() {
  const std::vector<BandSpec> specs = {
      {"2bit", {{2, 24}}, {}},
      {"3bit", {{3, 24}}, {}},
      {"4bit", {{4, 24}}, {}},
      {"8bit", {{8, 24}}, {}},
      {"16bit", {{16, 24}}, {}},
      {"8+3+2", {{8, 2}, {3, 8}, {2, 14}}, {}},
      {"8g32+3g64+2g128", {{8, 2}, {3, 8}, {2, 14}}, {32, 64, 128}},
  };
  std::vector<CaseParam> out;
  for (const auto& s : specs)
    for (ActOrder a : {ActOrder::None, ActOrder::Gptq, ActOrder::BlockLocal})
      out.push_back({s.label + "/" + act_order_name(a), [s, a] { return lowrank_case(136, 328, s, a, 11); }});
  // Fewer columns than two groups, more rows than columns.
  const BandSpec mixed = specs[5];
  out.push_back({"8+3+2/plain/200x136", [mixed] { return lowrank_case(200, 136, mixed, ActOrder::None, 5); }});
  out.push_back({"8+3+2/act-order/200x136", [mixed] { return lowrank_case(200, 136, mixed, ActOrder::Gptq, 5); }});
  out.push_back({"bitdelta", [] { return bitdelta_case(136, 328, 3); }});
  out.push_back({"bitdelta/200x136", [] { return bitdelta_case(200, 136, 4); }});
  out.push_back({"dense-f32", [] { return dense_case(136, 328, DC_DTYPE_F32, 6); }});
  out.push_back({"dense-f16", [] { return dense_case(136, 328, DC_DTYPE_F16, 7); }});
  out.push_back({"dense-bf16", [] { return dense_case(136, 328, DC_DTYPE_BF16, 8); }});
  return out;
}

void PrintTo(const CaseParam& p, std::ostream* os) { *os << p.label; }

class ShardApply : public ::testing::TestWithParam<CaseParam> {};

// One-column shards of a dense matrix are applied as matrices (dc_tensor_view.is_vector tells a
// bias apart), so no partition is refused any more; kept as a hook for the partition loop.
bool refuses_one_column_dense(dc_context*, const ShardCase&, const Partition&) { return false; }

// Largest |a − b| over a matrix, with the position, for messages.
struct MaxErr {
  double err = 0;
  uint64_t at = 0;
  void add(double a, double b, uint64_t i) {
    const double e = std::fabs(a - b);
    if (e > err || std::isnan(e)) err = e, at = i;
  }
};

TEST_P(ShardApply, ConcatenatedOrSummedShardsEqualWholeApply) {
  const ShardCase c = GetParam().make();
  const uint64_t rows = c.t.rows, cols = c.t.cols;
  ContextPtr ctx = cpu_context(2);
  ASSERT_TRUE(ctx);
  const std::vector<float> x = random_floats(kM * cols, 99);
  const double S = dot_scale(c, x, kM);
  ASSERT_GT(S, 0);
  // fp32 against float64, and fp32 against fp32 in another summation order: see dot_scale().
  const double tol = 1e-5 * S;

  DeltaPtr whole = load_shard(ctx.get(), c, shard_of(DC_SHARD_NONE, 0, 1));
  ASSERT_TRUE(whole);
  const std::vector<float> y_full = apply_f32(whole.get(), kM, x.data(), 0, rows);
  const std::vector<double> ref_full = reference_apply(c, x, kM, 0, rows, 0, cols);
  MaxErr e_full;
  for (uint64_t i = 0; i < y_full.size(); ++i) e_full.add(y_full[i], ref_full[i], i);
  ASSERT_LE(e_full.err, tol) << c.label << ": unsharded apply vs float64 at " << e_full.at;

  double worst_rows = 0, worst_cols = 0;  // relative to S, printed for the record
  for (dc_shard_split split : {DC_SHARD_ROWS, DC_SHARD_COLS}) {
    const uint64_t dim = split == DC_SHARD_ROWS ? rows : cols;
    for (const Partition& part : partitions(split, dim)) {
      SCOPED_TRACE(c.label + " " + part.label);
      if (refuses_one_column_dense(ctx.get(), c, part)) continue;
      std::vector<float> y_sum(kM * rows, 0.f);
      uint64_t next = 0;  // the shards must tile [0, dim) in order
      for (size_t si = 0; si < part.shards.size(); ++si) {
        const dc_shard& sh = part.shards[si];
        SCOPED_TRACE(describe(sh));
        DeltaPtr d = load_shard(ctx.get(), c, sh);
        ASSERT_TRUE(d);
        const dc_delta_info info = info_of(d.get());
        EXPECT_EQ(info.split, split);
        EXPECT_EQ(info.rows, rows);
        EXPECT_EQ(info.cols, cols);
        ASSERT_EQ(info.shard_begin, next);
        ASSERT_GT(info.shard_end, info.shard_begin);
        ASSERT_LE(info.shard_end, dim);
        const uint64_t b = info.shard_begin, e = info.shard_end, n = e - b;
        next = e;
        if (split == DC_SHARD_ROWS) {
          const std::vector<float> y = apply_f32(d.get(), kM, x.data(), 0, n);
          const std::vector<double> ref = reference_apply(c, x, kM, b, e, 0, cols);
          MaxErr vs_whole, vs_ref;
          for (uint64_t i = 0; i < kM; ++i)
            for (uint64_t o = 0; o < n; ++o) {
              vs_whole.add(y[i * n + o], y_full[i * rows + b + o], i * n + o);
              vs_ref.add(y[i * n + o], ref[i * n + o], i * n + o);
            }
          EXPECT_LE(vs_whole.err, tol) << "row shard vs the unsharded apply at " << vs_whole.at;
          EXPECT_LE(vs_ref.err, tol) << "row shard vs float64 at " << vs_ref.at;
          worst_rows = std::max(worst_rows, vs_whole.err / S);
        } else {
          // Even shards read their columns of the full activations in place (ldx = cols), odd
          // ones a packed copy, as an engine holding only its slice would pass them.
          std::vector<float> xs;
          const float* x0 = x.data() + b;
          uint64_t ldx = cols;
          if (si % 2) {
            xs.resize(kM * n);
            for (uint64_t i = 0; i < kM; ++i) std::copy(&x[i * cols + b], &x[i * cols + e], &xs[i * n]);
            x0 = xs.data();
            ldx = 0;
          }
          const std::vector<float> y = apply_f32(d.get(), kM, x0, ldx, rows);
          const std::vector<double> ref = reference_apply(c, x, kM, 0, rows, b, e);
          MaxErr vs_ref;
          for (uint64_t i = 0; i < y.size(); ++i) {
            vs_ref.add(y[i], ref[i], i);
            y_sum[i] += y[i];
          }
          EXPECT_LE(vs_ref.err, tol) << "partial sum vs float64 at " << vs_ref.at;
        }
      }
      EXPECT_EQ(next, dim) << "the partition does not cover the dimension";
      if (split == DC_SHARD_COLS) {
        MaxErr vs_whole, vs_ref;
        for (uint64_t i = 0; i < y_sum.size(); ++i) {
          vs_whole.add(y_sum[i], y_full[i], i);
          vs_ref.add(y_sum[i], ref_full[i], i);
        }
        EXPECT_LE(vs_whole.err, tol) << "summed partials vs the unsharded apply at " << vs_whole.at;
        EXPECT_LE(vs_ref.err, tol) << "summed partials vs float64 at " << vs_ref.at;
        worst_cols = std::max(worst_cols, vs_whole.err / S);
      }
    }
  }
  std::printf("  %-28s max |shard - whole| / scale: rows %.2e, cols %.2e (tolerance 1e-5)\n", c.label.c_str(),
              worst_rows, worst_cols);
}

TEST_P(ShardApply, MergedShardsEqualSliceOfWholeMerge) {
  const ShardCase c = GetParam().make();
  const uint64_t rows = c.t.rows, cols = c.t.cols;
  ContextPtr ctx = cpu_context(2);
  ASSERT_TRUE(ctx);
  const std::vector<float> w0 = random_floats(rows * cols, 123);
  double dmax = 0, wmax = 0;
  for (uint64_t i = 0; i < rows * cols; ++i) dmax = std::max(dmax, std::fabs(c.dw[i])), wmax = std::max(wmax, (double)std::fabs(w0[i]));
  // fp32 rounding of W0 + ΔŴ (half an ulp of W) plus the rounding of ΔŴ's own sum.
  const double tol = 1e-4 * dmax + 1.2e-7 * wmax;

  DeltaPtr whole = load_shard(ctx.get(), c, shard_of(DC_SHARD_NONE, 0, 1));
  ASSERT_TRUE(whole);
  std::vector<float> w_full = w0;
  ASSERT_EQ(dc_merge_delta(whole.get(), w_full.data(), DC_DTYPE_F32, 0, 1.f, nullptr), DC_OK) << dc_last_error_message();
  MaxErr e_full;
  for (uint64_t i = 0; i < w_full.size(); ++i) e_full.add(w_full[i], (double)w0[i] + c.dw[i], i);
  ASSERT_LE(e_full.err, tol) << c.label << ": unsharded merge vs float64";

  for (dc_shard_split split : {DC_SHARD_ROWS, DC_SHARD_COLS}) {
    const uint64_t dim = split == DC_SHARD_ROWS ? rows : cols;
    for (const Partition& part : partitions(split, dim)) {
      SCOPED_TRACE(c.label + " " + part.label);
      if (refuses_one_column_dense(ctx.get(), c, part)) continue;
      std::vector<float> w = w0;  // every shard merged in place into its slice of one full W
      for (size_t si = 0; si < part.shards.size(); ++si) {
        const dc_shard& sh = part.shards[si];
        SCOPED_TRACE(describe(sh));
        DeltaPtr d = load_shard(ctx.get(), c, sh);
        ASSERT_TRUE(d);
        const dc_delta_info info = info_of(d.get());
        const uint64_t b = info.shard_begin, e = info.shard_end, n = e - b;
        float* at = split == DC_SHARD_ROWS ? w.data() + b * cols : w.data() + b;
        ASSERT_EQ(dc_merge_delta(d.get(), at, DC_DTYPE_F32, cols, 1.f, nullptr), DC_OK) << dc_last_error_message();
        if (si == 0) {
          // The same shard merged into a packed buffer of its own shape (ld = 0).
          const uint64_t sr = split == DC_SHARD_ROWS ? n : rows, sc = split == DC_SHARD_ROWS ? cols : n;
          std::vector<float> ws(sr * sc);
          for (uint64_t o = 0; o < sr; ++o)
            for (uint64_t k = 0; k < sc; ++k)
              ws[o * sc + k] = split == DC_SHARD_ROWS ? w0[(b + o) * cols + k] : w0[o * cols + b + k];
          ASSERT_EQ(dc_merge_delta(d.get(), ws.data(), DC_DTYPE_F32, 0, 1.f, nullptr), DC_OK) << dc_last_error_message();
          MaxErr m;
          for (uint64_t o = 0; o < sr; ++o)
            for (uint64_t k = 0; k < sc; ++k) {
              const uint64_t full = split == DC_SHARD_ROWS ? (b + o) * cols + k : o * cols + b + k;
              m.add(ws[o * sc + k], w_full[full], o * sc + k);
            }
          EXPECT_LE(m.err, tol) << "packed shard merge vs the slice of the whole merge at " << m.at;
        }
      }
      MaxErr vs_whole, vs_ref;
      for (uint64_t i = 0; i < w.size(); ++i) {
        vs_whole.add(w[i], w_full[i], i);
        vs_ref.add(w[i], (double)w0[i] + c.dw[i], i);
      }
      EXPECT_LE(vs_whole.err, tol) << "shards merged in place vs the whole merge at " << vs_whole.at;
      EXPECT_LE(vs_ref.err, tol) << "shards merged in place vs float64 at " << vs_ref.at;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tensors, ShardApply, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<CaseParam>& i) {
                           std::string n = i.param.label;
                           for (char& ch : n)
                             if (!std::isalnum((unsigned char)ch)) ch = '_';
                           return n;
                         });

// Row-parallel layers with the base included: each shard computes x[:, b:e]·(W_base + ΔW)[:, b:e]ᵀ,
// so the all-reduce sums the base layer and the delta at once.
TEST(ShardApplyBase, ColumnShardsWithIncludeBaseSumToWholeLayer) {
  const ShardCase c = lowrank_case(136, 328, {"8+3+2", {{8, 2}, {3, 8}, {2, 14}}, {}}, ActOrder::None, 21);
  const uint64_t rows = c.t.rows, cols = c.t.cols;
  ContextPtr ctx = cpu_context(2);
  ASSERT_TRUE(ctx);
  const std::vector<float> x = random_floats(kM * cols, 5), wb = random_floats(rows * cols, 6, 0.05f);
  std::vector<double> ref(kM * rows, 0.0);
  double S = 0;
  for (uint64_t i = 0; i < kM; ++i)
    for (uint64_t o = 0; o < rows; ++o) {
      double a = 0, s = 0;
      for (uint64_t k = 0; k < cols; ++k) {
        const double w = (double)wb[o * cols + k] + c.dw[o * cols + k];
        a += (double)x[i * cols + k] * w;
        s += std::fabs(x[i * cols + k] * w);
      }
      ref[i * rows + o] = a;
      S = std::max(S, s);
    }
  for (uint32_t count : {2u, 3u, 8u}) {
    std::vector<float> sum(kM * rows, 0.f);
    for (uint32_t s = 0; s < count; ++s) {
      DeltaPtr d = load_shard(ctx.get(), c, shard_of(DC_SHARD_COLS, s, count));
      ASSERT_TRUE(d);
      const dc_delta_info info = info_of(d.get());
      std::vector<float> y(kM * rows, 1e30f);  // overwritten, not accumulated
      dc_apply_params p;
      dc_apply_params_init(&p);
      p.flags = DC_APPLY_INCLUDE_BASE;
      p.m = kM;
      p.x = x.data() + info.shard_begin;
      p.ldx = cols;
      p.y = y.data();
      p.base_weight = wb.data() + info.shard_begin;  // W_base[:, b:e] in place
      p.ld_base = cols;
      ASSERT_EQ(dc_apply_delta_linear(d.get(), &p), DC_OK) << dc_last_error_message();
      for (uint64_t i = 0; i < y.size(); ++i) sum[i] += y[i];
    }
    for (uint64_t i = 0; i < sum.size(); ++i)
      EXPECT_NEAR(sum[i], ref[i], 1e-4 * S) << "count " << count << " at " << i;
  }
}

// A column-parallel layer's bias splits with its rows; a row-parallel layer's bias is not split.
TEST(ShardApplyBias, BiasRowShardsAddTheirSliceAndColumnShardsAreRefused) {
  const ShardCase c = dense_case(136, 1, DC_DTYPE_F16, 9);
  ContextPtr ctx = cpu_context(2);
  ASSERT_TRUE(ctx);
  for (uint32_t count : {1u, 3u, 8u})
    for (uint32_t s = 0; s < count; ++s) {
      DeltaPtr d = load_shard(ctx.get(), c, shard_of(DC_SHARD_ROWS, s, count));
      ASSERT_TRUE(d);
      const dc_delta_info info = info_of(d.get());
      const uint64_t n = info.shard_end - info.shard_begin;
      std::vector<float> y0 = random_floats(kM * n, 40 + s);
      const std::vector<float> y = apply_f32(d.get(), kM, nullptr, 0, n, y0);
      for (uint64_t i = 0; i < kM; ++i)
        for (uint64_t o = 0; o < n; ++o)
          EXPECT_NEAR(y[i * n + o], (double)y0[i * n + o] + c.dw[info.shard_begin + o], 1e-6)
              << "count " << count << " shard " << s << " row " << o;
    }
  ContainerPtr cont = open_image(c.image);
  ASSERT_TRUE(cont);
  dc_load_options lo;
  dc_load_options_init(&lo);
  lo.shard = shard_of(DC_SHARD_COLS, 0, 2);
  dc_delta* d = nullptr;
  EXPECT_EQ(dc_delta_load(&d, ctx.get(), cont.get(), "layer.bias", &lo), DC_ERR_UNSUPPORTED);
  EXPECT_EQ(d, nullptr);
  EXPECT_NE(std::string(dc_last_error_message()).find("layer.bias"), std::string::npos) << dc_last_error_message();
}

}  // namespace
}  // namespace dc_test

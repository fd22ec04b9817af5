// CPU backend apply (low-rank, BitDelta, dense) against the float64 reference.
#include <numeric>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/cpu_ops.h"
#include "cpu_apply_harness.h"

namespace dc_test {
namespace {

const dc_dtype kDtypes[] = {DC_DTYPE_F32, DC_DTYPE_F16, DC_DTYPE_BF16};

// ---- decoders: the per-width specialisations agree with the reference dc_unpack_code -----------

template <unsigned BITS>
void expect_block_decoder_matches() {
  std::mt19937_64 rng(BITS);
  for (int rep = 0; rep < 200; ++rep) {
    uint32_t w[16];
    for (auto& v : w) v = static_cast<uint32_t>(rng());
    float got[32];
    dc::cpu::decode_block<BITS>(w, got);
    for (uint32_t k = 0; k < 32; ++k) {
      const uint32_t code = dc_unpack_code(w, k, BITS);
      const float want = BITS == 16 ? dc::half_to_float(static_cast<uint16_t>(code)) : static_cast<float>(code);
      if (std::isnan(want)) {
        ASSERT_TRUE(std::isnan(got[k])) << "bits " << BITS << " code " << k;
      } else {
        ASSERT_EQ(got[k], want) << "bits " << BITS << " code " << k;
      }
    }
  }
}

TEST(CpuDecode, BlockDecodersMatchUnpackCode) {
  expect_block_decoder_matches<1>();
  expect_block_decoder_matches<2>();
  expect_block_decoder_matches<3>();
  expect_block_decoder_matches<4>();
  expect_block_decoder_matches<8>();
  expect_block_decoder_matches<16>();
}

TEST(CpuDecode, DecodeRowMatchesPlainValues) {
  for (uint32_t bits : {2u, 3u, 4u, 8u, 16u}) {
    std::mt19937_64 rng(bits * 11);
    std::vector<double> vals;
    std::vector<uint32_t> codes;
    std::vector<dc_qparam> qp;
    const uint64_t len = 300, group = 64;
    make_quantized_rows(rng, bits, group, 1, len, 0.1, vals, codes, qp);
    std::vector<float> out(dc::cpu::round_up_block(len));
    dc::cpu::decode_row_bits(bits, codes.data(), qp.data(), group / 32, len, out.data());
    for (uint64_t p = 0; p < len; ++p) ASSERT_NEAR(out[p], vals[p], 1e-6 * (1 + std::fabs(vals[p]))) << bits;
  }
}

TEST(CpuDecode, BranchFreeHalfMatchesHalfToFloatForEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = dc::cpu::half_to_float_fast(h), b = dc::half_to_float(static_cast<uint16_t>(h));
    ASSERT_EQ(dc::float_to_bits(a), dc::float_to_bits(b)) << "half bits " << h;
  }
}

// ---- low-rank ---------------------------------------------------------------------------------

TEST(CpuApplyLowRank, EveryBandWidth) {
  for (uint32_t bits : {2u, 3u, 4u, 8u, 16u}) {
    SCOPED_TRACE("bits " + std::to_string(bits));
    auto tiny = make_lowrank({7, 5, {{bits, 3, 32}}}, bits);
    check_apply(*tiny, {});
    auto mid = make_lowrank({200, 333, {{bits, 24, 64}}}, bits + 100);
    for (uint64_t m : {1, 3, 16, 64, 257}) {
      ApplyOpts o;
      o.m = m;
      check_apply(*mid, o);
    }
    // group of 128 with a partial last group, rank above one block
    auto wide = make_lowrank({65, 1000, {{bits, 40, 128}}}, bits + 200);
    check_apply(*wide, {});
  }
}

TEST(CpuApplyLowRank, MixedBands1000x3000) {
  auto t = make_lowrank({1000, 3000, {{8, 2, 128}, {3, 32, 128}, {2, 30, 128}}}, 42);
  for (uint64_t m : {1, 17}) {
    ApplyOpts o;
    o.m = m;
    check_apply(*t, o);
  }
}

TEST(CpuApplyLowRank, MixedBandsEveryTileCount) {
  auto t = make_lowrank({150, 400, {{8, 2, 128}, {3, 32, 128}, {2, 30, 128}}}, 43);
  for (uint64_t m : {1, 3, 16, 64, 257}) {
    ApplyOpts o;
    o.m = m;
    o.xt = DC_DTYPE_BF16;
    o.yt = DC_DTYPE_F16;
    check_apply(*t, o);
  }
}

TEST(CpuApplyLowRank, ExtremeShapes) {
  auto one_row = make_lowrank({1, 4096, {{8, 2, 128}, {3, 6, 128}}}, 1);
  check_apply(*one_row, {});
  auto one_col = make_lowrank({4096, 1, {{8, 2, 32}, {3, 3, 32}}}, 2);
  ApplyOpts o;
  o.m = 5;
  check_apply(*one_col, o);
  auto big = make_lowrank({1024, 4096, {{8, 2, 128}, {3, 16, 128}, {2, 30, 128}}}, 3);
  o.m = 16;
  check_apply(*big, o);
}

TEST(CpuApplyLowRank, DtypesBaseScaleAndStrides) {
  auto t = make_lowrank({96, 200, {{8, 2, 64}, {3, 5, 64}, {2, 33, 64}}}, 5);
  for (dc_dtype xt : kDtypes)
    for (dc_dtype yt : kDtypes) {
      ApplyOpts o;
      o.m = 5;
      o.xt = xt;
      o.yt = yt;
      o.scale = -0.75f;
      o.ldx_pad = 7;
      o.ldy_pad = 3;
      check_apply(*t, o);
      for (dc_dtype bt : kDtypes) {
        o.base = true;
        o.bt = bt;
        o.ldb_pad = 5;
        check_apply(*t, o);
      }
    }
}

TEST(CpuApplyLowRank, InputPermutation) {
  const uint64_t rows = 70, cols = 150;
  std::vector<uint32_t> perm(cols);
  std::iota(perm.begin(), perm.end(), 0u);
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(9));
  LowRankSpec spec{rows, cols, {{8, 2, 32}, {3, 20, 64}}};
  spec.in_perm = perm;
  ApplyOpts o;
  o.m = 19;
  check_apply(*make_lowrank(spec, 10), o);

  // Shard form: V rows longer than cols; positions outside the shard are DC_PERM_NONE.
  LowRankSpec shard{rows, cols, {{4, 9, 64}, {2, 40, 128}}};
  shard.v_len = cols + 90;
  shard.in_perm.assign(shard.v_len, DC_PERM_NONE);
  std::vector<uint32_t> where(shard.v_len);
  std::iota(where.begin(), where.end(), 0u);
  std::shuffle(where.begin(), where.end(), std::mt19937_64(11));
  for (uint32_t c = 0; c < cols; ++c) shard.in_perm[where[c]] = c;
  o.base = true;
  check_apply(*make_lowrank(shard, 12), o);
}

TEST(CpuApplyLowRank, ShardColumnOffset) {
  LowRankSpec spec{50, 100, {{8, 2, 32}, {3, 10, 64}, {2, 12, 128}}};
  spec.v_len = 100 + 70;
  spec.v_col_offset = 37;
  for (uint64_t m : {1, 16, 33}) {
    ApplyOpts o;
    o.m = m;
    check_apply(*make_lowrank(spec, 13), o);
  }
}

// Both low-rank paths at every row count: the decode loops (prefill path off) and the prefill path
// (dequantized pieces + sgemm, on from one row), each against the float64 reference — every width,
// groups, permutations and shard offsets (x gathered), base, dtypes, strides, scale, row counts that
// cross the decode loops' tiles (16) and the prefill tiles (256).
TEST(CpuApplyLowRank, DecodeLoopsAndPrefillPathEachMatchReference) {
  const uint32_t keep = dc::cpu::gemm_min_rows();
  for (const uint32_t from : {UINT32_MAX, 1u}) {
    dc::cpu::set_gemm_min_rows(from);
    SCOPED_TRACE(from == 1 ? "prefill path" : "decode loops");
    for (uint32_t bits : {2u, 3u, 4u, 8u, 16u}) {
      auto t = make_lowrank({90, 333, {{bits, 24, 64}, {2, 40, 128}}}, bits + 300);
      for (uint64_t m : {1, 13, 40, 300}) {
        ApplyOpts o;
        o.m = m;
        check_apply(*t, o);
      }
    }
    auto mixed = make_lowrank({150, 400, {{8, 2, 128}, {3, 32, 128}, {2, 30, 128}}}, 61);
    ApplyOpts o;
    o.m = 21;
    o.base = true;
    o.scale = -0.75f;
    o.xt = DC_DTYPE_BF16;
    o.yt = DC_DTYPE_F16;
    o.bt = DC_DTYPE_F16;
    o.ldx_pad = 3;
    o.ldy_pad = 5;
    o.ldb_pad = 2;
    check_apply(*mixed, o);
    LowRankSpec shard{50, 100, {{8, 2, 32}, {3, 10, 64}, {2, 12, 128}}};
    shard.v_len = 170;
    shard.v_col_offset = 37;
    ApplyOpts so;
    so.m = 33;
    check_apply(*make_lowrank(shard, 62), so);
    LowRankSpec perm{70, 150, {{8, 2, 32}, {3, 20, 64}}};
    perm.in_perm.resize(150);
    std::iota(perm.in_perm.begin(), perm.in_perm.end(), 0u);
    std::shuffle(perm.in_perm.begin(), perm.in_perm.end(), std::mt19937_64(63));
    check_apply(*make_lowrank(perm, 64), so);
  }
  dc::cpu::set_gemm_min_rows(keep);
}

// A delta so wide that its prefill scratch would pass kPrefillScratchMax: the device does not reserve
// it, and tiles of any row count take the decode loops — still correct.
TEST(CpuApplyLowRank, TooWideForPrefillScratchStaysCorrect) {
  const uint64_t cols = 40000;  // 256 rows of x alone: 41 MB, with the dequantized V̂ rows over 64 MiB
  ASSERT_GT(4 * (dc::cpu::kGemmTile + dc::cpu::kGemmRanks) * cols, dc::cpu::kPrefillScratchMax);
  auto t = make_lowrank({3, cols, {{2, 3, 128}}}, 71);
  for (uint64_t m : {1, 20}) {
    ApplyOpts o;
    o.m = m;
    check_apply(*t, o);
  }
}

// ---- BitDelta and dense -------------------------------------------------------------------------

TEST(CpuApplyBitDelta, ShapesDtypesBase) {
  check_apply(*make_bitdelta(7, 5, 1), {});
  auto t = make_bitdelta(300, 1000, 2);
  for (uint64_t m : {1, 16, 257}) {
    ApplyOpts o;
    o.m = m;
    o.scale = 1.25f;
    check_apply(*t, o);
  }
  for (dc_dtype dt : kDtypes) {
    ApplyOpts o;
    o.m = 4;
    o.xt = o.yt = o.bt = dt;
    o.base = true;
    o.ldx_pad = 2;
    o.ldy_pad = 9;
    o.ldb_pad = 1;
    check_apply(*t, o);
  }
}

TEST(CpuApplyDense, Matrix) {
  for (dc_dtype st : kDtypes) {
    auto t = make_dense(130, 77, st, 3);
    for (dc_dtype dt : kDtypes) {
      ApplyOpts o;
      o.m = 18;
      o.xt = o.yt = dt;
      o.scale = 0.5f;
      check_apply(*t, o);
    }
  }
}

TEST(CpuApplyDense, BiasAddsToEveryRowAndIgnoresX) {
  for (dc_dtype st : kDtypes) {
    auto t = make_dense(300, 1, st, 4);
    ApplyOpts o;
    o.m = 21;
    o.scale = 2.f;
    o.yt = st;
    check_apply(*t, o);
  }
  // x is never read: a null x gives the same result.
  auto t = make_dense(40, 1, DC_DTYPE_F32, 5);
  CpuDevice dev(2);
  void* d = dev.load(*t);
  std::vector<float> y(3 * 40, 1.f);
  dc_apply_params p{};
  p.struct_size = sizeof p;
  p.m = 3;
  p.y = y.data();
  p.scale = 1.f;
  ASSERT_EQ(dev.ops->apply(dev.dev, d, &p), DC_OK);
  for (uint64_t i = 0; i < 3; ++i)
    for (uint64_t o = 0; o < 40; ++o) EXPECT_FLOAT_EQ(y[i * 40 + o], 1.f + static_cast<float>(t->dw[o]));
}

// ---- threads, table, load ---------------------------------------------------------------------

TEST(CpuBackend, ThreadCountDoesNotChangeResults) {
  auto lr = make_lowrank({301, 700, {{8, 2, 128}, {3, 32, 128}, {2, 30, 128}}}, 21);
  auto bd = make_bitdelta(301, 700, 22);
  for (const TestDelta* t : {lr.get(), bd.get()}) {
    ApplyOpts o;
    o.m = 37;
    o.base = true;
    o.threads = 1;
    const auto y1 = check_apply(*t, o);
    o.threads = 2;
    const auto y2 = check_apply(*t, o);
    o.threads = 5;
    const auto y5 = check_apply(*t, o);
    EXPECT_EQ(y1, y2);
    EXPECT_EQ(y1, y5);
  }
}

TEST(CpuBackend, TableAndLoad) {
  CpuDevice dev(0);  // hardware concurrency
  const dc_backend_ops* ops = dev.ops;
  EXPECT_STREQ(ops->name, "cpu");
  EXPECT_EQ(ops->abi_version, DC_BACKEND_ABI_VERSION);
  EXPECT_EQ(ops->device_count(), 1);
  auto t = make_lowrank({1024, 4096, {{8, 2, 128}, {3, 32, 128}, {2, 60, 128}}}, 31);
  uint64_t bytes = 0;
  void* d = dev.load(*t, &bytes);
  EXPECT_GE(bytes, t->packed_bytes);
  EXPECT_LT(bytes, t->packed_bytes + 64 * 1024);  // packed: no dense ΔW
  uint64_t ws = 123;
  EXPECT_EQ(ops->workspace_size(dev.dev, d, 4096, &ws), DC_OK);
  EXPECT_EQ(ws, 0u);
  // The view's memory may be released right after load: the delta holds its own copy.
  ApplyOpts o;
  o.m = 2;
  Mat x = random_mat(o.m, 4096, 0, DC_DTYPE_F32, 1.0, 1);
  Mat y = random_mat(o.m, 1024, 0, DC_DTYPE_F32, 1.0, 2);
  const auto want = reference_y(t.get(), 1024, 4096, o, x, y, nullptr);
  for (auto& c : t->v_codes) std::fill(c.begin(), c.end(), 0u);
  for (auto& c : t->u_codes) std::fill(c.begin(), c.end(), 0u);
  const dc_apply_params p = make_params(o, x, y, nullptr);
  ASSERT_EQ(ops->apply(dev.dev, d, &p), DC_OK);
  EXPECT_LE(compare(read_y(y, o.m, 1024), want).rel_norm, norm_tol(DC_DTYPE_F32));
}

TEST(CpuBackend, AllocationFailureIsReportedNotThrown) {
  CpuDevice dev(1);
  std::vector<uint32_t> signs(4, 0u);
  dc_tensor_view v{};
  v.rows = uint64_t{1} << 61;  // more sign words than a vector can hold
  v.cols = 32;
  v.kind = DC_KIND_BITDELTA;
  v.signs = signs.data();
  void* d = reinterpret_cast<void*>(1);
  last_backend_error().clear();
  EXPECT_EQ(dev.ops->delta_load(dev.dev, &v, nullptr, &d, nullptr), DC_ERR_OUT_OF_MEMORY);
  EXPECT_EQ(d, nullptr);
  EXPECT_NE(last_backend_error().find("delta_load"), std::string::npos) << last_backend_error();
}

}  // namespace
}  // namespace dc_test

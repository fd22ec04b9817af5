// The model compressor end to end: safetensors pair → .dcz, for every scheme and allocation.
#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "common/half.h"
#include "compress/compressor.h"
#include "deltacome/deltacome.h"
#include "format/container.h"
#include "format/safetensors.h"
#include "math/budget.h"
#include "test_util.h"

namespace {

struct Pair {
  std::string dir, base, ft;
};

// base/ft with one linear layer (long-tail delta), one 1-D norm (changed) and one unchanged tensor.
Pair make_pair(const std::string& name, uint64_t rows = 96, uint64_t cols = 160) {
  Pair p;
  p.dir = dc_test::temp_dir(name);
  p.base = p.dir + "/base.safetensors";
  p.ft = p.dir + "/ft.safetensors";
  auto w = dc_test::random_floats(rows * cols, 1, 0.05f);
  const uint64_t r = 40;
  auto u = dc_test::random_floats(rows * r, 2, 1.f / std::sqrt((float)rows));
  auto v = dc_test::random_floats(cols * r, 3, 1.f / std::sqrt((float)cols));
  std::vector<uint16_t> wb(rows * cols), wf(rows * cols);
  for (uint64_t o = 0; o < rows; ++o)
    for (uint64_t c = 0; c < cols; ++c) {
      double d = 0;
      for (uint64_t k = 0; k < r; ++k) d += 0.02 / (1 + k / 3.0) * u[o * r + k] * v[c * r + k];
      wb[o * cols + c] = dc::float_to_half(w[o * cols + c]);
      wf[o * cols + c] = dc::float_to_half((float)(w[o * cols + c] + d));
    }
  std::vector<float> nb(cols, 1.f), nf(cols, 1.f), same(7, 3.f);
  nf[5] = 1.25f;
  for (int which = 0; which < 2; ++which) {
    std::vector<dc::StWriteTensor> t = {
        {"layer.proj.weight", "F16", {rows, cols}, which ? wf.data() : wb.data(), rows * cols * 2},
        {"layer.norm.weight", "F32", {cols}, which ? nf.data() : nb.data(), cols * 4},
        {"layer.fixed.bias", "F32", {7}, same.data(), 28}};
    dc::write_safetensors(which ? p.ft : p.base, t);
  }
  return p;
}

std::unique_ptr<dc::ContainerReader> compress(const Pair& p, dc::CompressConfig c, const std::string& out,
                                              dc::CompressSummary* summary = nullptr) {
  c.base_path = p.base;
  c.finetuned_path = p.ft;
  c.output_path = p.dir + "/" + out;
  c.quiet = true;
  c.threads = 2;
  auto s = dc::compress_model(c);
  if (summary) *summary = s;
  return dc::ContainerReader::open_file(c.output_path, dc::ReaderLimits{});
}

TEST(Compressor, DeltaCoMeDefaultRecipe) {
  const Pair p = make_pair("compress-default");
  dc::CompressConfig c;
  c.recipe.alpha = 0.25;
  dc::CompressSummary s;
  auto r = compress(p, c, "d.dcz", &s);
  EXPECT_EQ(s.unchanged, 1u);  // layer.fixed.bias is identical: left out
  ASSERT_EQ(r->tensors().size(), 2u);
  const auto& lin = r->tensors()[r->find("layer.proj.weight")];
  EXPECT_EQ(lin.kind, DC_KIND_LOWRANK);
  const auto want = dc::bands_for_shape(96, 160, c.recipe);
  ASSERT_EQ(lin.bands.size(), want.size());
  for (size_t b = 0; b < want.size(); ++b) {
    EXPECT_EQ(lin.bands[b].bits, want[b].bits);
    EXPECT_EQ(lin.bands[b].rank_end, want[b].rank_end);
  }
  EXPECT_EQ(lin.bands[0].bits, 8u);
  const auto& norm = r->tensors()[r->find("layer.norm.weight")];
  EXPECT_EQ(norm.kind, DC_KIND_DENSE);
  // The dense delta is exact.
  const dc::PackedTensor nt = r->load_tensor(r->find("layer.norm.weight"), true);
  ASSERT_EQ(nt.dtype, DC_DTYPE_F32);
  EXPECT_FLOAT_EQ(reinterpret_cast<const float*>(nt.dense.data())[5], 0.25f);
  EXPECT_FLOAT_EQ(reinterpret_cast<const float*>(nt.dense.data())[4], 0.f);
  // Every base tensor is fingerprinted (the unchanged one too).
  EXPECT_EQ(r->meta().base_fingerprint.size(), 3u);
  // The linear delta is reproduced well: relative error reported below 0.3.
  for (const auto& t : s.tensors)
    if (t.name == "layer.proj.weight") EXPECT_LT(t.rel_error, 0.3);
}

TEST(Compressor, OptimalAllocationBeatsFixedAtTheSameBudget) {
  const Pair p = make_pair("compress-opt");
  dc::CompressConfig c;
  c.recipe.alpha = 1.0 / 8;
  c.quantizer = dc::Quantizer::Rtn;
  dc::CompressSummary fixed, opt;
  compress(p, c, "fixed.dcz", &fixed);
  c.allocation = dc::Allocation::Layer;
  auto r = compress(p, c, "opt.dcz", &opt);
  double ef = 0, eo = 0;
  for (const auto& t : fixed.tensors)
    if (t.name == "layer.proj.weight") ef = t.rel_error;
  for (const auto& t : opt.tensors)
    if (t.name == "layer.proj.weight") eo = t.rel_error;
  EXPECT_GT(ef, 0);
  EXPECT_LE(eo, ef * 1.02);
  const auto& lin = r->tensors()[r->find("layer.proj.weight")];
  EXPECT_LE((double)dc::band_bit_ranks(lin.bands), dc::budget_bit_ranks(96, 160, c.recipe.alpha) + 1e-9);
}

TEST(Compressor, BaselineSchemes) {
  const Pair p = make_pair("compress-schemes");
  dc::CompressConfig c;
  c.recipe.alpha = 0.25;
  c.scheme = dc::Scheme::BitDelta;
  auto r = compress(p, c, "bd.dcz");
  EXPECT_EQ(r->tensors()[r->find("layer.proj.weight")].kind, DC_KIND_BITDELTA);
  c.scheme = dc::Scheme::LowRank;
  r = compress(p, c, "lr.dcz");
  const auto& lr = r->tensors()[r->find("layer.proj.weight")];
  ASSERT_EQ(lr.bands.size(), 1u);
  EXPECT_EQ(lr.bands[0].bits, 16u);
  EXPECT_EQ(lr.bands[0].rank_end, (uint32_t)std::floor(dc::budget_bit_ranks(96, 160, 0.25) / 16));
  c.scheme = dc::Scheme::Single;
  c.single_bits = 3;
  r = compress(p, c, "s3.dcz");
  const auto& s3 = r->tensors()[r->find("layer.proj.weight")];
  ASSERT_EQ(s3.bands.size(), 1u);
  EXPECT_EQ(s3.bands[0].bits, 3u);
}

TEST(Compressor, MismatchedModelsAreRefused) {
  const Pair a = make_pair("compress-mismatch-a", 96, 160);
  const Pair b = make_pair("compress-mismatch-b", 64, 160);
  dc::CompressConfig c;
  c.base_path = a.base;
  c.finetuned_path = b.ft;
  c.output_path = a.dir + "/bad.dcz";
  c.quiet = true;
  try {
    dc::compress_model(c);
    FAIL() << "expected an error";
  } catch (const dc::Error& e) {
    EXPECT_EQ(e.status(), DC_ERR_SHAPE_MISMATCH);
    EXPECT_NE(std::string(e.what()).find("layer.proj.weight"), std::string::npos);
  }
  EXPECT_NE(access((a.dir + "/bad.dcz").c_str(), F_OK), 0);  // nothing written
}

}  // namespace

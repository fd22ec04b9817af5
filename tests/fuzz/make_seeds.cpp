// Writes the fuzz seed corpora: small but complete .dcz images (every tensor kind, band widths
// 2/3/4/8/16, an act-order permutation, odd shapes that need row padding, a base fingerprint, an
// empty container) and safetensors files (every dtype, metadata, scalars, zero-size tensors).
// Containers use the smallest segment alignment (64) so each seed stays a few KiB.
//
//   dc_fuzz_make_seeds OUT_DIR   ->  OUT_DIR/container/*, OUT_DIR/safetensors/*
//
// The committed corpus (tests/fuzz/corpus/) was made with it; rerun after a format change. File
// names have no .dcz/.safetensors extension on purpose (.gitignore excludes those).
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <map>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/half.h"
#include "common/packed_tensor.h"
#include "fixtures/random_packed.h"
#include "format/container.h"
#include "format/safetensors.h"

namespace {

using Band = dc_fixture::BandSpec;

dc::PackedTensor lowrank(const std::string& name, uint64_t rows, uint64_t cols, const std::vector<Band>& bands,
                         bool perm, uint64_t seed) {
  return dc_fixture::random_lowrank(name, rows, cols, bands, perm, seed, {DC_DTYPE_BF16, -14, 10.f, true});
}

dc::PackedTensor bitdelta(const std::string& name, uint64_t rows, uint64_t cols, uint64_t seed) {
  return dc_fixture::random_bitdelta(name, rows, cols, seed);
}

dc::PackedTensor dense(const std::string& name, uint64_t rows, uint64_t cols, dc_dtype dtype, uint64_t seed) {
  return dc_fixture::random_dense(name, rows, cols, dtype, seed);
}

dc::ContainerMeta meta_with_fingerprint() {
  dc::ContainerMeta m;
  m.tool_version = "deltacome seeds";
  m.model_name = "seed-finetuned";
  m.base_model_name = "seed-base";
  m.recipe_json = "{\"alpha\":0.0625}";
  dc::BaseTensorFingerprint f;
  f.name = "layers.0.q.weight";
  f.shape = {48, 40};
  f.dtype = "BF16";
  f.xxh3 = 0x0123456789abcdefull;
  m.base_fingerprint.push_back(f);
  return m;
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), (std::streamsize)bytes.size());
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::exit(1);
  }
  std::printf("%s (%zu bytes)\n", path.c_str(), bytes.size());
}

void container(const std::string& dir, const std::string& name, const std::vector<dc::PackedTensor>& ts,
               dc::ContainerMeta meta = dc::ContainerMeta{}) {
  dc::ContainerWriter w(std::move(meta), 64, 19);
  for (const auto& t : ts) w.add_tensor(t);
  write_file(dir + "/" + name, w.finish_to_memory());
}

void safetensors(const std::string& dir, const std::string& name, const std::vector<dc::StWriteTensor>& ts,
                 const std::map<std::string, std::string>& meta = {}) {
  const std::string tmp = dir + "/" + name + ".tmp-st";
  dc::write_safetensors(tmp, ts, meta);
  std::ifstream in(tmp, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::remove(tmp.c_str());
  write_file(dir + "/" + name, bytes);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string root = argv[1], cdir = root + "/container", sdir = root + "/safetensors";
  ::mkdir(root.c_str(), 0755);
  ::mkdir(cdir.c_str(), 0755);
  ::mkdir(sdir.c_str(), 0755);
  try {
    // Delta-CoMe mixed precision (8-bit x2, 3-bit x4, 2-bit rest) with act order, and a 16-bit band.
    container(cdir, "lowrank_mixed_actorder", {lowrank("layers.0.q.weight", 48, 40, {{8, 2, 32}, {3, 4, 32}, {2, 6, 64}}, true, 1)},
              meta_with_fingerprint());
    container(cdir, "lowrank_fp16_band", {lowrank("layers.0.o.weight", 33, 70, {{16, 2, 0}, {4, 3, 32}}, false, 2)});
    container(cdir, "bitdelta_odd", {bitdelta("layers.0.up.weight", 17, 45, 3)});
    container(cdir, "dense_f32_bias", {dense("layers.0.q.bias", 40, 1, DC_DTYPE_F32, 4)});
    container(cdir, "dense_bf16_2d", {dense("norm.weight", 8, 24, DC_DTYPE_BF16, 5)});
    container(cdir, "model_all_kinds",
              {lowrank("m.q.weight", 24, 32, {{8, 1, 32}, {2, 3, 32}}, false, 6), bitdelta("m.k.weight", 24, 32, 7),
               dense("m.norm.weight", 32, 1, DC_DTYPE_F16, 8), dense("m.v.weight", 4, 32, DC_DTYPE_F16, 9)},
              meta_with_fingerprint());
    container(cdir, "empty", {});

    const float f32[6] = {1.f, -2.f, 0.5f, 0.f, 3.25f, -0.125f};
    const uint16_t f16[4] = {0x3c00, 0xbc00, 0x3800, 0x0000}, bf16[2] = {0x3f80, 0xc000};
    const double f64[1] = {42.0};
    const int64_t i64[2] = {-1, 7};
    const uint8_t u8[3] = {1, 2, 255}, b[2] = {0, 1};
    safetensors(sdir, "all_dtypes",
                {{"a.f32", "F32", {2, 3}, f32, sizeof f32}, {"b.f16", "F16", {4}, f16, sizeof f16},
                 {"c.bf16", "BF16", {1, 2}, bf16, sizeof bf16}, {"d.f64", "F64", {}, f64, sizeof f64},
                 {"e.i64", "I64", {2}, i64, sizeof i64}, {"f.u8", "U8", {3}, u8, sizeof u8},
                 {"g.bool", "BOOL", {2}, b, sizeof b}},
              {{"format", "pt"}, {"note", "seed"}});
    safetensors(sdir, "layer_pair", {{"layers.0.q.weight", "F16", {2, 2}, f16, sizeof f16},
                                     {"layers.0.q.bias", "F32", {2}, f32, 8}});
    safetensors(sdir, "zero_size", {{"empty", "F32", {0, 4}, nullptr, 0}, {"x", "U8", {1}, u8, 1}});
    safetensors(sdir, "no_tensors", {}, {{"only", "metadata"}});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}

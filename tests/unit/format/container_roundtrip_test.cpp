// Write -> read round trips of every tensor kind, compared array by array with the input.
#include <gtest/gtest.h>

#include <dirent.h>
#include <fstream>
#include <thread>

#include "format_test_util.h"
#include "test_util.h"

using namespace fmt_test;

namespace {

std::vector<dc::PackedTensor> sample_tensors() {
  std::vector<dc::PackedTensor> v;
  // Every band width, group sizes 32..4096, shapes not multiples of 32/128.
  v.push_back(make_lowrank("model.layers.0.self_attn.q_proj.weight", 1000, 3000,
                           {{8, 2, 128}, {16, 1, 0}, {3, 8, 128}, {4, 3, 32}, {2, 10, 4096}}, false, 1));
  v.push_back(make_lowrank("model.layers.0.mlp.up_proj.weight", 1024, 4096, {{8, 2, 128}, {3, 30, 128}, {2, 32, 128}},
                           true, 2));
  v.push_back(make_lowrank("row", 1, 4096, {{3, 1, 128}}, true, 3));
  v.push_back(make_lowrank("tiny", 7, 5, {{8, 1, 32}, {3, 1, 32}, {2, 1, 32}, {4, 1, 32}, {16, 1, 0}}, true, 4));
  v.push_back(make_lowrank("tiny_noperm", 7, 5, {{2, 5, 64}}, false, 5));
  v.push_back(make_bitdelta("bitdelta_big", 1000, 3000, 6));
  v.push_back(make_bitdelta("bitdelta_tiny", 7, 5, 7));
  v.push_back(make_dense("dense_f32", 33, 77, DC_DTYPE_F32, 8));
  v.push_back(make_dense("dense_f16", 7, 5, DC_DTYPE_F16, 9));
  v.push_back(make_dense("dense_bf16", 128, 3, DC_DTYPE_BF16, 10));
  v.push_back(make_dense("norm.weight", 4096, 1, DC_DTYPE_F32, 11));  // 1-D
  v.push_back(make_dense("bias", 1, 1, DC_DTYPE_BF16, 12));
  return v;
}

dc::ContainerMeta sample_meta() {
  dc::ContainerMeta m;
  m.tool_version = "deltacome 0.1.0";
  m.model_name = "org/fine-tuned";
  m.base_model_name = "org/base";
  m.recipe_json = R"({"scheme":"delta-come","alpha":0.0625})";
  m.base_fingerprint.push_back({"model.embed_tokens.weight", {32000, 4096}, "BF16", 0x0123456789abcdefull});
  m.base_fingerprint.push_back({"lm_head.weight", {4096}, "F16", 42});
  return m;
}

void check_reader(const dc::ContainerReader& r, const std::vector<dc::PackedTensor>& want) {
  const dc::ContainerMeta& m = r.meta();
  const dc::ContainerMeta ref = sample_meta();
  EXPECT_EQ(m.format_major, 1);
  EXPECT_EQ(m.format_minor, 0);
  EXPECT_EQ(m.tool_version, ref.tool_version);
  EXPECT_EQ(m.model_name, ref.model_name);
  EXPECT_EQ(m.base_model_name, ref.base_model_name);
  EXPECT_EQ(m.recipe_json, ref.recipe_json);
  ASSERT_EQ(m.base_fingerprint.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(m.base_fingerprint[i].name, ref.base_fingerprint[i].name);
    EXPECT_EQ(m.base_fingerprint[i].shape, ref.base_fingerprint[i].shape);
    EXPECT_EQ(m.base_fingerprint[i].dtype, ref.base_fingerprint[i].dtype);
    EXPECT_EQ(m.base_fingerprint[i].xxh3, ref.base_fingerprint[i].xxh3);
  }
  ASSERT_EQ(r.tensors().size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const dc::TensorDesc& d = r.tensors()[i];
    EXPECT_EQ(d.name, want[i].name);  // insertion order
    EXPECT_EQ(r.find(want[i].name), (int64_t)i);
    EXPECT_EQ(d.has_in_perm, !want[i].in_perm.empty());
    uint64_t seg_bytes = 0;
    for (const dc::SegmentRef& s : d.segments) {
      seg_bytes += s.size;
      const std::vector<uint8_t> raw = r.read_segment(s, true);
      EXPECT_EQ(raw.size(), s.size);
      EXPECT_EQ(XXH3_64bits(raw.data(), raw.size()), s.xxh3);
    }
    EXPECT_EQ(d.packed_bytes(), seg_bytes);
    // The arrays minus sigma (kept in the manifest) are exactly the segments.
    EXPECT_EQ(want[i].packed_bytes(), seg_bytes + want[i].sigma.size() * 4);
    expect_same_tensor(r.load_tensor(i, true), want[i]);
    expect_same_tensor(r.load_tensor(i, false), want[i]);
  }
  EXPECT_EQ(r.find("no such tensor"), -1);
  r.verify_all();
}

}  // namespace

TEST(FormatRoundTrip, EveryKindThroughFileMmapPreadAndMemory) {
  const auto tensors = sample_tensors();
  dc::ContainerWriter w(sample_meta());
  for (const auto& t : tensors) w.add_tensor(t);
  const std::string dir = dc_test::temp_dir("format-roundtrip");
  const std::string path = dir + "/delta.dcz";
  const uint64_t written = w.finish(path);
  const std::vector<uint8_t> img = w.finish_to_memory();
  EXPECT_EQ(written, img.size());

  std::ifstream in(path, std::ios::binary);
  const std::vector<uint8_t> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(file, img);  // finish() and finish_to_memory() produce the same bytes

  // No temporary file is left next to the result.
  DIR* d = opendir(dir.c_str());
  ASSERT_NE(d, nullptr);
  int entries = 0;
  while (dirent* e = readdir(d))
    if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") ++entries;
  closedir(d);
  EXPECT_EQ(entries, 1);

  auto mm = dc::ContainerReader::open_file(path, dc::ReaderLimits{}, true);
  EXPECT_EQ(mm->file_size(), img.size());
  check_reader(*mm, tensors);
  check_reader(*dc::ContainerReader::open_file(path, dc::ReaderLimits{}, false), tensors);
  check_reader(*dc::ContainerReader::open_memory(img.data(), img.size(), dc::ReaderLimits{}, false), tensors);
  check_reader(*dc::ContainerReader::open_memory(img.data(), img.size(), dc::ReaderLimits{}, true), tensors);
}

TEST(FormatRoundTrip, PreambleBytesMatchFormatDoc) {
  dc::ContainerWriter w(sample_meta(), 4096);
  w.add_tensor(make_dense("a", 3, 3, DC_DTYPE_F32, 1));
  w.add_tensor(make_bitdelta("b", 40, 70, 2));
  const std::vector<uint8_t> img = w.finish_to_memory();
  const uint8_t magic[8] = {0x89, 0x44, 0x43, 0x5A, 0x0D, 0x0A, 0x1A, 0x0A};
  EXPECT_EQ(0, std::memcmp(img.data(), magic, 8));
  EXPECT_EQ(get_le<uint16_t>(img, 8), 1);     // major
  EXPECT_EQ(get_le<uint16_t>(img, 10), 0);    // minor
  EXPECT_EQ(get_le<uint32_t>(img, 12), 80u);  // header_len
  EXPECT_EQ(get_le<uint64_t>(img, 16), 80u);  // manifest_offset
  const uint64_t msize = get_le<uint64_t>(img, 24), po = get_le<uint64_t>(img, 32), ps = get_le<uint64_t>(img, 40);
  EXPECT_EQ(po, (80 + msize + 4095) / 4096 * 4096);
  EXPECT_EQ(po + ps, img.size());
  EXPECT_EQ(get_le<uint32_t>(img, 48), 0u);     // flags_required
  EXPECT_EQ(get_le<uint32_t>(img, 56), 4096u);  // segment_alignment
  EXPECT_EQ(get_le<uint32_t>(img, 60), 0u);     // reserved
  EXPECT_EQ(get_le<uint64_t>(img, 64), XXH3_64bits(img.data() + 80, msize));
  EXPECT_EQ(get_le<uint64_t>(img, 72), XXH3_64bits(img.data(), 72));
  EXPECT_EQ(0, std::memcmp(img.data() + 80 + 4, "DCZM", 4));  // FlatBuffers file identifier
  for (uint64_t i = 80 + msize; i < po; ++i) ASSERT_EQ(img[i], 0) << "padding byte " << i;
  // The first segment is a zstd frame (magic 0xFD2FB528) at payload_offset.
  EXPECT_EQ(get_le<uint32_t>(img, po), 0xFD2FB528u);
  // The second tensor's segment starts on the next 4096 boundary.
  auto r = open_mem(img);
  const dc::SegmentRef& s0 = r->tensors()[0].segments[0];
  const dc::SegmentRef& s1 = r->tensors()[1].segments[0];
  EXPECT_EQ(s0.offset, 0u);
  EXPECT_EQ(s1.offset, (s0.compressed_size + 4095) / 4096 * 4096);
  EXPECT_EQ(s1.offset + s1.compressed_size, ps);
  EXPECT_EQ(s0.size, 3u * 3 * 4);
  EXPECT_EQ(s1.size, 40u * 3 * 4);  // rows * ceil(70/32) words * 4
}

TEST(FormatRoundTrip, SmallAlignmentAndEmptyContainer) {
  dc::ContainerWriter w(dc::ContainerMeta{}, 64, 1);
  const auto t = make_lowrank("x", 100, 200, {{4, 4, 64}}, true, 3);
  w.add_tensor(t);
  const auto img = w.finish_to_memory();
  EXPECT_EQ(get_le<uint32_t>(img, 56), 64u);
  auto r = open_mem(img);
  expect_same_tensor(r->load_tensor(0, true), t);
  r->verify_all();

  dc::ContainerWriter empty(dc::ContainerMeta{});
  const auto e = empty.finish_to_memory();
  auto re = open_mem(e);
  EXPECT_EQ(re->tensors().size(), 0u);
  EXPECT_EQ(re->payload_size(), 0u);
  EXPECT_EQ(re->meta().recipe_json, "{}");
  re->verify_all();
}

TEST(FormatRoundTrip, DeterministicAndInsertionOrderedAcrossThreads) {
  const auto tensors = sample_tensors();
  dc::ContainerWriter a(sample_meta()), b(sample_meta());
  for (const auto& t : tensors) a.add_tensor(t);
  for (const auto& t : tensors) b.add_tensor(t);
  EXPECT_EQ(a.finish_to_memory(), b.finish_to_memory());

  // Concurrent adds: every tensor arrives, the file is valid, and each loads back exactly.
  dc::ContainerWriter c(sample_meta());
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (size_t i = k; i < tensors.size(); i += 4) c.add_tensor(tensors[i]);
    });
  for (auto& th : threads) th.join();
  const auto img = c.finish_to_memory();
  auto r = open_mem(img);
  ASSERT_EQ(r->tensors().size(), tensors.size());
  for (const auto& t : tensors) {
    const int64_t i = r->find(t.name);
    ASSERT_GE(i, 0);
    expect_same_tensor(r->load_tensor((uint64_t)i, true), t);
  }
  // Concurrent reads from one reader.
  std::vector<std::thread> readers;
  std::atomic<int> ok{0};
  for (int k = 0; k < 4; ++k)
    readers.emplace_back([&] {
      for (uint64_t i = 0; i < r->tensors().size(); ++i)
        if (r->load_tensor(i, true).packed_bytes() > 0) ++ok;
    });
  for (auto& th : readers) th.join();
  EXPECT_EQ(ok.load(), 4 * (int)tensors.size());
}

TEST(FormatRoundTrip, RandomAccessIgnoresOtherTensorsDamage) {
  dc::ContainerWriter w(sample_meta());
  const auto a = make_dense("a", 64, 64, DC_DTYPE_F32, 1);
  const auto b = make_dense("b", 64, 64, DC_DTYPE_F32, 2);
  w.add_tensor(a);
  w.add_tensor(b);
  std::vector<uint8_t> img = w.finish_to_memory();
  const uint64_t po = get_le<uint64_t>(img, 32);
  auto r0 = open_mem(img);
  const dc::SegmentRef sb = r0->tensors()[1].segments[0];
  // Wreck b's frame completely (header included): a must still load and verify.
  for (uint64_t i = 0; i < sb.compressed_size; ++i) img[po + sb.offset + i] ^= 0x5A;
  auto r = open_mem(img);
  expect_same_tensor(r->load_tensor(0, true), a);
  EXPECT_DC_STATUS(r->load_tensor(1, true), DC_ERR_DECOMPRESS);
  EXPECT_DC_STATUS(r->verify_all(), DC_ERR_DECOMPRESS);
}

TEST(FormatWriter, RejectsBadInputs) {
  EXPECT_DC_STATUS(dc::ContainerWriter(dc::ContainerMeta{}, 100), DC_ERR_INVALID_ARGUMENT);
  EXPECT_DC_STATUS(dc::ContainerWriter(dc::ContainerMeta{}, 32), DC_ERR_INVALID_ARGUMENT);
  EXPECT_DC_STATUS(dc::ContainerWriter(dc::ContainerMeta{}, 2u << 20), DC_ERR_INVALID_ARGUMENT);
  dc::ContainerWriter w(dc::ContainerMeta{});
  w.add_tensor(make_dense("x", 2, 2, DC_DTYPE_F16, 1));
  EXPECT_DC_STATUS(w.add_tensor(make_dense("x", 2, 2, DC_DTYPE_F16, 2)), DC_ERR_DUPLICATE);
  auto bad = make_dense("y", 2, 2, DC_DTYPE_F16, 1);
  bad.dense.pop_back();
  EXPECT_DC_STATUS(w.add_tensor(bad), DC_ERR_CORRUPT);
  // A rejected tensor leaves no trace; its name can be used again.
  w.add_tensor(make_dense("y", 2, 2, DC_DTYPE_F16, 1));
  auto r = open_mem(w.finish_to_memory());
  EXPECT_EQ(r->tensors().size(), 2u);
  EXPECT_DC_STATUS(w.finish("/nonexistent-dir-for-dc-tests/x.dcz"), DC_ERR_IO);
}

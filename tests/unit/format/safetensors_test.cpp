// safetensors: round trips through write_safetensors, and hostile headers built byte by byte.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "format/safetensors.h"
#include "format_test_util.h"
#include "test_util.h"

using namespace fmt_test;

namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Writes an 8-byte length (default: header.size()), the header text, and `data` bytes.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes, int64_t declared = -1) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const uint64_t n = declared < 0 ? header.size() : (uint64_t)declared;
  for (int i = 0; i < 8; ++i) out.put((char)(n >> (8 * i)));
  out << header;
  for (size_t i = 0; i < data_bytes; ++i) out.put((char)i);
}

std::string dir() {
  static const std::string d = dc_test::temp_dir("format-safetensors");
  return d;
}

dc_status open_status(const std::string& path) {
  try {
    dc::SafetensorsModel::open(path);
    return DC_OK;
  } catch (const dc::Error& e) {
    return e.status();
  }
}

}  // namespace

TEST(FormatSafetensors, RoundTripWithConversions) {
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x3555, 0x7BFF, 0x0001, 0x8000};  // 1, -2, 0.33325, 65504, 2^-24, -0
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC040, 0x4049, 0x0000};                  // 1, -3, 3.140625, 0
  const std::vector<float> f32 = {1.5f, -0.25f, 3e38f};
  const std::vector<double> f64 = {M_PI, -1e300};
  const std::vector<int32_t> i32 = {-7, 2147483647};
  const std::vector<int8_t> i8 = {-128, 127, 0};
  const std::vector<uint8_t> u8 = {255, 0};
  const std::vector<uint8_t> b = {1, 0, 1};
  const std::vector<int64_t> i64 = {-(1ll << 40)};
  const std::vector<int16_t> i16 = {-300};
  std::vector<dc::StWriteTensor> ts = {
      {"w.f16", "F16", {2, 3}, f16.data(), 12},  {"w.bf16", "BF16", {4}, bf16.data(), 8},
      {"w.f32", "F32", {3, 1, 1}, f32.data(), 12}, {"a.f64", "F64", {2}, f64.data(), 16},
      {"i32", "I32", {2}, i32.data(), 8},        {"i8", "I8", {3}, i8.data(), 3},
      {"u8", "U8", {2}, u8.data(), 2},           {"mask", "BOOL", {3}, b.data(), 3},
      {"i64", "I64", {}, i64.data(), 8},         {"i16", "I16", {1}, i16.data(), 2},
      {"empty", "F32", {0, 5}, nullptr, 0}};
  const std::string path = dir() + "/rt.safetensors";
  dc::write_safetensors(path, ts, {{"format", "pt"}, {"note", "ünïcode"}});

  const std::vector<uint8_t> raw = read_file(path);
  const uint64_t n = get_le<uint64_t>(raw, 0);
  EXPECT_EQ((8 + n) % 8, 0u);  // data 8-byte aligned
  EXPECT_EQ(raw[8], '{');
  EXPECT_EQ(raw.size(), 8 + n + 12 + 8 + 12 + 16 + 8 + 3 + 2 + 3 + 8 + 2);

  auto m = dc::SafetensorsModel::open(path);
  ASSERT_EQ(m->tensors().size(), ts.size());
  for (size_t i = 1; i < m->tensors().size(); ++i) EXPECT_LT(m->tensors()[i - 1].name, m->tensors()[i].name);
  // Sorted by name in the data area too: "a.f64" comes first, right after the header.
  EXPECT_EQ(m->find("a.f64")->data[0], raw[8 + n]);
  EXPECT_EQ(0, std::memcmp(raw.data() + 8 + n, f64.data(), 16));
  EXPECT_EQ(m->metadata().at("format"), "pt");
  EXPECT_EQ(m->metadata().at("note"), "ünïcode");

  const dc::StTensor* t = m->find("w.f16");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, dc::StDtype::F16);
  EXPECT_EQ(t->shape, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(t->numel(), 6u);
  const double want16[] = {1.0, -2.0, 0.333251953125, 65504.0, std::ldexp(1.0, -24), -0.0};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(t->get(i), want16[i]) << i;
  EXPECT_TRUE(std::signbit(t->get(5)));
  const double want_bf[] = {1.0, -3.0, 3.140625, 0.0};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(m->find("w.bf16")->get(i), want_bf[i]);
  EXPECT_EQ(m->find("w.f32")->get(2), (double)3e38f);
  EXPECT_EQ(m->find("a.f64")->get(0), M_PI);
  EXPECT_EQ(m->find("i32")->get(1), 2147483647.0);
  EXPECT_EQ(m->find("i8")->get(0), -128.0);
  EXPECT_EQ(m->find("u8")->get(0), 255.0);
  EXPECT_EQ(m->find("mask")->get(1), 0.0);
  EXPECT_EQ(m->find("i64")->get(0), -1099511627776.0);
  EXPECT_EQ(m->find("i64")->numel(), 1u);  // scalar
  EXPECT_EQ(m->find("i16")->get(0), -300.0);
  EXPECT_EQ(m->find("empty")->numel(), 0u);
  EXPECT_EQ(m->find("missing"), nullptr);
  EXPECT_DC_STATUS(t->get(6), DC_ERR_INVALID_ARGUMENT);

  // Directory with a single model.safetensors.
  const std::string d = dir() + "/single";
  std::system(("mkdir -p '" + d + "'").c_str());
  dc::write_safetensors(d + "/model.safetensors", ts);
  EXPECT_EQ(dc::SafetensorsModel::open(d)->tensors().size(), ts.size());
}

TEST(FormatSafetensors, WriterRejectsBadTensors) {
  const float x[2] = {1, 2};
  const std::string p = dir() + "/bad.safetensors";
  EXPECT_DC_STATUS(dc::write_safetensors(p, {{"a", "F32", {3}, x, 8}}), DC_ERR_INVALID_ARGUMENT);
  EXPECT_DC_STATUS(dc::write_safetensors(p, {{"a", "Q4", {2}, x, 8}}), DC_ERR_INVALID_ARGUMENT);
  EXPECT_DC_STATUS(dc::write_safetensors(p, {{"a", "F32", {2}, x, 8}, {"a", "F32", {2}, x, 8}}), DC_ERR_DUPLICATE);
  EXPECT_DC_STATUS(dc::write_safetensors(p, {{"__metadata__", "F32", {2}, x, 8}}), DC_ERR_INVALID_ARGUMENT);
  EXPECT_DC_STATUS(dc::write_safetensors(p, {{"a", "F32", {1ull << 62, 8}, x, 8}}), DC_ERR_OVERFLOW);
  EXPECT_EQ(open_status(p), DC_ERR_IO);  // nothing was written
}

TEST(FormatSafetensors, HostileHeaders) {
  const std::string p = dir() + "/h.safetensors";
  auto check = [&](const std::string& header, size_t data, dc_status want, int64_t declared = -1) {
    SCOPED_TRACE(header.substr(0, 120));
    write_raw(p, header, data, declared);
    EXPECT_EQ(open_status(p), want);
  };
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  check(ok, 8, DC_OK);
  check(ok + "    ", 8, DC_OK);  // space padding is allowed
  check(ok, 8, DC_ERR_LIMIT, 100000001);
  check(ok, 8, DC_ERR_TRUNCATED, 5000);  // header length beyond the file
  check(R"([1,2])", 0, DC_ERR_BAD_MAGIC);
  check(R"("a")", 0, DC_ERR_BAD_MAGIC);
  check(R"({"a":)", 0, DC_ERR_CORRUPT);
  check(ok + "x", 8, DC_ERR_CORRUPT);  // trailing garbage inside the header
  check(R"({})", 0, DC_OK);
  check(R"({})", 4, DC_ERR_CORRUPT);  // bytes nobody indexes
  check(ok, 12, DC_ERR_CORRUPT);      // trailing data
  check(ok, 7, DC_ERR_TRUNCATED);     // missing data
  // holes and overlaps
  check(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
        12, DC_ERR_CORRUPT);
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
        12, DC_ERR_CORRUPT);
  check(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8, DC_ERR_CORRUPT);  // does not start at 0
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, DC_ERR_CORRUPT);  // end < begin
  // byte length vs shape
  check(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, DC_ERR_CORRUPT);
  check(R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}})", 8, DC_ERR_CORRUPT);
  // shape product overflow
  check(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,8]}})", 8, DC_ERR_OVERFLOW);
  check(R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8, DC_ERR_OVERFLOW);
  // malformed fields
  check(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, DC_ERR_CORRUPT);
  check(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8, DC_ERR_CORRUPT);
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,99999999999999999999999]}})", 8, DC_ERR_CORRUPT);
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8, DC_ERR_CORRUPT);
  check(R"({"a":{"dtype":5,"shape":[2],"data_offsets":[0,8]}})", 8, DC_ERR_CORRUPT);
  check(R"({"a":[1,2]})", 0, DC_ERR_CORRUPT);
  check(R"({"__metadata__":{"k":1}})", 0, DC_ERR_CORRUPT);
  check(R"({"__metadata__":"x"})", 0, DC_ERR_CORRUPT);
  // duplicate keys, at the top and nested
  check(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
        8, DC_ERR_DUPLICATE);
  check(R"({"a":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}})", 8, DC_ERR_DUPLICATE);
  check(R"({"__metadata__":{"k":"1","k":"2"}})", 0, DC_ERR_DUPLICATE);
  // deep nesting is refused before it can hurt
  check("{\"__metadata__\":" + std::string(5000, '[') + std::string(5000, ']') + "}", 0, DC_ERR_CORRUPT);
  // too short for the length field
  {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << "abc";
  }
  EXPECT_EQ(open_status(p), DC_ERR_TRUNCATED);
  EXPECT_EQ(open_status(dir() + "/does-not-exist.safetensors"), DC_ERR_IO);
}

TEST(FormatSafetensors, UnknownDtypesAreKeptButNotConverted) {
  const std::string p = dir() + "/other.safetensors";
  write_raw(p, R"({"q":{"dtype":"U16","shape":[2],"data_offsets":[0,4]},"z":{"dtype":"X9","shape":[3],"data_offsets":[4,5]}})", 5);
  auto m = dc::SafetensorsModel::open(p);
  const dc::StTensor* q = m->find("q");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, dc::StDtype::OTHER);
  EXPECT_EQ(q->dtype_name, "U16");
  EXPECT_EQ(q->bytes, 4u);
  EXPECT_DC_STATUS(q->get(0), DC_ERR_UNSUPPORTED);
  EXPECT_EQ(m->find("z")->bytes, 1u);
  // A known-size "other" dtype still has its byte length checked.
  write_raw(p, R"({"q":{"dtype":"U16","shape":[2],"data_offsets":[0,6]}})", 6);
  EXPECT_EQ(open_status(p), DC_ERR_CORRUPT);
  EXPECT_EQ(dc::st_dtype_size(dc::StDtype::BF16), 2u);
  EXPECT_EQ(dc::st_dtype_size(dc::StDtype::F64), 8u);
  EXPECT_EQ(dc::st_dtype_size(dc::StDtype::OTHER), 0u);
  EXPECT_EQ(dc::st_dtype_from_name("BOOL"), dc::StDtype::BOOL);
  EXPECT_EQ(dc::st_dtype_from_name("bf16"), dc::StDtype::OTHER);
}

TEST(FormatSafetensors, ShardedCheckpoints) {
  const std::string d = dir() + "/sharded";
  std::system(("mkdir -p '" + d + "'").c_str());
  const float a[2] = {1, 2}, b[3] = {3, 4, 5}, c[1] = {6};
  dc::write_safetensors(d + "/model-00001-of-00002.safetensors", {{"a", "F32", {2}, a, 8}, {"b", "F32", {3}, b, 12}});
  dc::write_safetensors(d + "/model-00002-of-00002.safetensors", {{"c", "F32", {1}, c, 4}}, {{"format", "pt"}});
  auto write_index = [&](const std::string& text) {
    std::ofstream out(d + "/model.safetensors.index.json", std::ios::trunc);
    out << text;
  };
  write_index(R"({"metadata":{"total_size":24},"weight_map":{"a":"model-00001-of-00002.safetensors",
      "b":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})");
  for (const std::string& path : {d, d + "/model.safetensors.index.json"}) {
    auto m = dc::SafetensorsModel::open(path);
    ASSERT_EQ(m->tensors().size(), 3u);
    EXPECT_EQ(m->find("b")->get(2), 5.0);
    EXPECT_EQ(m->find("c")->get(0), 6.0);
    EXPECT_EQ(m->metadata().at("format"), "pt");
  }
  const std::string idx = d + "/model.safetensors.index.json";
  write_index(R"({"weight_map":{"a":"../model-00001-of-00002.safetensors"}})");
  EXPECT_EQ(open_status(idx), DC_ERR_CORRUPT);
  write_index(R"({"weight_map":{"a":"sub/model.safetensors"}})");
  EXPECT_EQ(open_status(idx), DC_ERR_CORRUPT);
  write_index(R"({"weight_map":{"a":"/etc/passwd"}})");
  EXPECT_EQ(open_status(idx), DC_ERR_CORRUPT);
  write_index(R"({"weight_map":{"a":""}})");
  EXPECT_EQ(open_status(idx), DC_ERR_CORRUPT);
  write_index(R"({"weight_map":{"a":"model-00001-of-00002.safetensors","a":"model-00002-of-00002.safetensors"}})");
  EXPECT_EQ(open_status(idx), DC_ERR_DUPLICATE);
  write_index(R"({"weight_map":{"c":"model-00001-of-00002.safetensors"}})");  // wrong shard
  EXPECT_EQ(open_status(idx), DC_ERR_CORRUPT);
  write_index(R"({"weight_map":{"a":"missing.safetensors"}})");
  EXPECT_EQ(open_status(idx), DC_ERR_IO);
  write_index(R"({"weights":{}})");
  EXPECT_EQ(open_status(idx), DC_ERR_CORRUPT);
  write_index(R"([1])");
  EXPECT_EQ(open_status(idx), DC_ERR_CORRUPT);
  // The same tensor in two shards.
  dc::write_safetensors(d + "/model-00002-of-00002.safetensors", {{"a", "F32", {2}, a, 8}, {"c", "F32", {1}, c, 4}});
  write_index(R"({"weight_map":{"a":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})");
  EXPECT_EQ(open_status(idx), DC_ERR_DUPLICATE);
}

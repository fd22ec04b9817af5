// Hostile input through the public C API, exhaustively on a small container: every single-byte
// corruption (one of 3 masks at every offset), every truncation, appended bytes, each on memory and on
// files (mmap and pread); the one promise checked is that a damaged file is refused or, where the
// damage cannot change the data (e.g. a zstd header field zstd ignores), yields exactly the
// original results — it is never applied silently. Also: hostile safetensors headers, wrong base
// models, limits, bad arguments, and the fuzz seed corpus. The unit tests in tests/unit/format
// check each structural rule with its own status; this file checks the whole surface at once.
#include <dirent.h>

#include <algorithm>
#include <map>
#include <set>

#include "common/error.h"
#include "format/safetensors.h"
#include "stress_fixtures.h"

namespace {

using namespace stress;

constexpr uint64_t kTokens = 2;

// Statuses a damaged file may produce; anything else (INTERNAL, OUT_OF_MEMORY, INVALID_ARGUMENT...)
// means the damage reached code that did not expect it.
const std::set<dc_status> kFileErrors = {DC_ERR_BAD_MAGIC, DC_ERR_UNSUPPORTED_VERSION, DC_ERR_TRUNCATED,
                                         DC_ERR_CORRUPT,   DC_ERR_CHECKSUM,            DC_ERR_OVERFLOW,
                                         DC_ERR_LIMIT,     DC_ERR_DUPLICATE,           DC_ERR_OVERLAP,
                                         DC_ERR_DECOMPRESS};

std::vector<Answer> answers_of(const dc_container* c, dc_context* ctx, bool* refused, uint32_t load_flags) {
  std::vector<Answer> out;
  const uint64_t n = dc_container_tensor_count(c);
  for (uint64_t i = 0; i < n; ++i) {
    dc_load_options lo;
    dc_load_options_init(&lo);
    lo.flags = load_flags;
    dc_delta* d = nullptr;
    const dc_status s = dc_delta_load_index(&d, ctx, c, i, &lo);
    if (s != DC_OK) {
      EXPECT_TRUE(kFileErrors.count(s)) << "load: " << dc_status_string(s) << ": " << dc_last_error_message();
      EXPECT_EQ(d, nullptr);
      *refused = true;
      return out;
    }
    DeltaPtr delta(d);
    out.push_back(compute(d, kTokens, 50 + i));
  }
  return out;
}

bool same(const std::vector<Answer>& a, const std::vector<Answer>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].y != b[i].y || a[i].merged != b[i].merged) return false;
  return true;
}

struct Tally {
  uint64_t cases = 0, at_open = 0, at_verify = 0, at_load = 0, harmless = 0;
  std::map<dc_status, uint64_t> statuses;
};

// The promise for one damaged image: refused at open, by verify and by a checksummed load — or,
// if accepted anywhere, identical results.
void check_damaged(const std::vector<uint8_t>& img, const std::vector<Answer>& ref, dc_context* ctx, Tally& t,
                   const std::string& what) {
  ++t.cases;
  dc_container* rc = nullptr;
  const dc_status so = dc_container_open_memory(&rc, img.data(), img.size(), nullptr);
  if (so != DC_OK) {
    EXPECT_TRUE(kFileErrors.count(so)) << what << ": open: " << dc_status_string(so) << ": " << dc_last_error_message();
    EXPECT_EQ(rc, nullptr) << what;
    EXPECT_STRNE(dc_last_error_message(), "") << what;
    ++t.at_open;
    ++t.statuses[so];
    return;
  }
  ContainerPtr c(rc);
  const dc_status sv = dc_container_verify(c.get());
  bool refused = false;
  const std::vector<Answer> got = answers_of(c.get(), ctx, &refused, DC_LOAD_VERIFY_CHECKSUM);
  if (sv != DC_OK) {
    EXPECT_TRUE(kFileErrors.count(sv)) << what << ": verify: " << dc_last_error_message();
    ++t.at_verify;
    ++t.statuses[sv];
    // A checksummed load may still succeed when the damage is in padding: then the data is intact.
    if (!refused) EXPECT_TRUE(same(got, ref)) << what << ": verify failed but a checked load gave other results";
    return;
  }
  if (refused) {
    ADD_FAILURE() << what << ": verify passed but a checksummed load failed";
    return;
  }
  EXPECT_TRUE(same(got, ref)) << what << ": damage went unnoticed and changed the results";
  ++t.harmless;
}

class HostileContainer : public ::testing::Test {
 protected:
  void SetUp() override {
    img_ = make_container_image();
    ctx_ = cpu_context(1);
    dc_container* rc = nullptr;
    ASSERT_EQ(dc_container_open_memory(&rc, img_.data(), img_.size(), nullptr), DC_OK);
    ContainerPtr c(rc);
    bool refused = false;
    ref_ = answers_of(c.get(), ctx_.get(), &refused, 0);
    ASSERT_FALSE(refused);
    ASSERT_EQ(ref_.size(), 5u);
  }
  std::vector<uint8_t> img_;
  ContextPtr ctx_;
  std::vector<Answer> ref_;
};

TEST_F(HostileContainer, EverySingleByteCorruptionIsRefusedOrChangesNothing) {
  Tally t;
  // Every offset, the XOR mask rotating through a low bit, a high bit and the whole byte (all
  // three at every offset triples the time for little more coverage).
  const uint8_t masks[3] = {0x01, 0x80, 0xFF};
  for (size_t pos = 0; pos < img_.size(); ++pos) {
    const uint8_t mask = masks[pos % 3];
    std::vector<uint8_t> bad = img_;
    bad[pos] ^= mask;
    check_damaged(bad, ref_, ctx_.get(), t, "byte " + std::to_string(pos) + " ^ " + std::to_string(mask));
  }
  std::printf("single-byte corruptions of a %zu-byte container: %llu cases, refused at open %llu, by verify %llu, "
              "harmless (identical results) %llu\n",
              img_.size(), (unsigned long long)t.cases, (unsigned long long)t.at_open,
              (unsigned long long)t.at_verify, (unsigned long long)t.harmless);
  for (const auto& [s, n] : t.statuses) std::printf("  %-40s %llu\n", dc_status_string(s), (unsigned long long)n);
  EXPECT_EQ(t.cases, img_.size());
  // Harmless cases are rare (zstd header bits that do not change the output): the checks bite.
  EXPECT_LT(t.harmless, t.cases / 100 + 1);
}

TEST_F(HostileContainer, EveryTruncationIsRefusedAsTruncated) {
  for (size_t len = 0; len < img_.size(); ++len) {
    dc_container* rc = reinterpret_cast<dc_container*>(uintptr_t{1});
    const dc_status s = dc_container_open_memory(&rc, img_.data(), len, nullptr);
    ASSERT_EQ(s, DC_ERR_TRUNCATED) << "length " << len << ": " << dc_last_error_message();
    ASSERT_EQ(rc, nullptr);
  }
}

TEST_F(HostileContainer, TruncatedAndExtendedFilesAreRefusedThroughMmapAndPread) {
  const std::string dir = dc_test::temp_dir("hostile-files");
  const uint64_t cuts[] = {0, 7, 79, 80, 200, img_.size() / 2, img_.size() - 64, img_.size() - 1};
  for (uint32_t flags : {0u, (uint32_t)DC_OPEN_NO_MMAP}) {
    dc_open_options o;
    dc_open_options_init(&o);
    o.flags = flags;
    for (uint64_t len : cuts) {
      const std::string p = write_image(dir, "cut.dcz", std::vector<uint8_t>(img_.begin(), img_.begin() + len));
      dc_container* rc = nullptr;
      EXPECT_EQ(dc_container_open(&rc, p.c_str(), &o), DC_ERR_TRUNCATED) << len << ": " << dc_last_error_message();
      dc_container_close(rc);
    }
    for (size_t extra : {1u, 63u, 4096u}) {
      std::vector<uint8_t> longer = img_;
      longer.resize(img_.size() + extra, extra == 63 ? 0xEE : 0);
      const std::string p = write_image(dir, "long.dcz", longer);
      dc_container* rc = nullptr;
      EXPECT_EQ(dc_container_open(&rc, p.c_str(), &o), DC_ERR_CORRUPT) << extra << ": " << dc_last_error_message();
      dc_container_close(rc);
    }
    dc_container* rc = nullptr;
    EXPECT_EQ(dc_container_open(&rc, (dir + "/does-not-exist.dcz").c_str(), &o), DC_ERR_IO);
    EXPECT_NE(std::string(dc_last_error_message()).find("does-not-exist.dcz"), std::string::npos);
    EXPECT_EQ(dc_container_open(&rc, dir.c_str(), &o), DC_ERR_IO) << "a directory";
  }
}

TEST_F(HostileContainer, LimitsRefuseLargeManifestsAndSegmentsAtOpen) {
  dc_open_options o;
  dc_open_options_init(&o);
  o.max_manifest_bytes = 64;
  dc_container* rc = nullptr;
  EXPECT_EQ(dc_container_open_memory(&rc, img_.data(), img_.size(), &o), DC_ERR_LIMIT);
  EXPECT_NE(std::string(dc_last_error_message()).find("limit"), std::string::npos) << dc_last_error_message();
  dc_open_options_init(&o);
  o.max_segment_bytes = 1024;  // the dense 24x70 fp32 tensor holds 6720 bytes
  EXPECT_EQ(dc_container_open_memory(&rc, img_.data(), img_.size(), &o), DC_ERR_LIMIT);
  EXPECT_NE(std::string(dc_last_error_message()).find("l0."), std::string::npos) << dc_last_error_message();
  EXPECT_EQ(rc, nullptr);
}

TEST_F(HostileContainer, TrustedOpenSkipsSegmentChecksumsButVerifyStillChecks) {
  // Payload damage is not looked at by a trusted open; dc_container_verify must still find it.
  dc_container* rc = nullptr;
  ASSERT_EQ(dc_container_open_memory(&rc, img_.data(), img_.size(), nullptr), DC_OK);
  ContainerPtr good(rc);
  dc_container_info info{};
  info.struct_size = sizeof info;
  ASSERT_EQ(dc_container_get_info(good.get(), &info), DC_OK);
  const uint64_t payload_start = img_.size() - info.payload_bytes;
  uint64_t caught = 0, tried = 0;
  for (uint64_t pos = payload_start; pos < img_.size(); pos += 7) {
    std::vector<uint8_t> bad = img_;
    bad[pos] ^= 0x10;
    dc_open_options o;
    dc_open_options_init(&o);
    o.flags = DC_OPEN_TRUSTED;
    dc_container* tc = nullptr;
    ASSERT_EQ(dc_container_open_memory(&tc, bad.data(), bad.size(), &o), DC_OK) << "payload damage is found lazily";
    ContainerPtr c(tc);
    ++tried;
    const dc_status s = dc_container_verify(c.get());
    caught += s != DC_OK;
    // Trusted loads may succeed with damaged data (documented), but must never crash.
    bool refused = false;
    (void)answers_of(c.get(), ctx_.get(), &refused, 0);
  }
  EXPECT_GT(tried, 10u);
  EXPECT_GE(caught + 1, tried * 95 / 100) << "verify ignores DC_OPEN_TRUSTED";
}

TEST(HostileApi, BadArgumentsAreRefusedAndOutputsCleared) {
  const std::vector<uint8_t> img = make_container_image();
  dc_container* rc = reinterpret_cast<dc_container*>(uintptr_t{1});
  EXPECT_EQ(dc_container_open(&rc, nullptr, nullptr), DC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rc, nullptr);
  EXPECT_EQ(dc_container_open(nullptr, "x.dcz", nullptr), DC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(dc_container_open_memory(&rc, nullptr, 10, nullptr), DC_ERR_INVALID_ARGUMENT);
  dc_open_options bogus{};  // struct_size 0: not initialised
  EXPECT_EQ(dc_container_open_memory(&rc, img.data(), img.size(), &bogus), DC_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(dc_last_error_message()).find("struct_size"), std::string::npos);
  ASSERT_EQ(dc_container_open_memory(&rc, img.data(), img.size(), nullptr), DC_OK);
  ContainerPtr c(rc);
  ContextPtr ctx = cpu_context(1);
  dc_load_options lo;
  dc_load_options_init(&lo);
  lo.flags = 0x80;
  dc_delta* d = reinterpret_cast<dc_delta*>(uintptr_t{1});
  EXPECT_EQ(dc_delta_load_index(&d, ctx.get(), c.get(), 0, &lo), DC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(d, nullptr);
  EXPECT_EQ(dc_delta_load_index(&d, ctx.get(), c.get(), 1u << 30, nullptr), DC_ERR_NOT_FOUND);
  EXPECT_EQ(dc_delta_load_index(&d, nullptr, c.get(), 0, nullptr), DC_ERR_INVALID_ARGUMENT);
  dc_load_options_init(&lo);
  lo.shard = dc_shard{DC_SHARD_ROWS, 0, 0, 0, 0};  // zero shards
  EXPECT_NE(dc_delta_load_index(&d, ctx.get(), c.get(), 0, &lo), DC_OK);
  lo.shard = dc_shard{DC_SHARD_COLS, 0, 1, 10, 1u << 30};  // range past the columns
  EXPECT_NE(dc_delta_load_index(&d, ctx.get(), c.get(), 0, &lo), DC_OK);
  EXPECT_EQ(d, nullptr);
  // Apply with operands that do not fit the delta.
  ASSERT_EQ(dc_delta_load_index(&d, ctx.get(), c.get(), 0, nullptr), DC_OK);
  DeltaPtr delta(d);
  std::vector<float> x(2 * 80), y(2 * 96);
  dc_apply_params p;
  dc_apply_params_init(&p);
  p.m = 2;
  p.x = x.data();
  p.y = y.data();
  p.ldx = 79;
  EXPECT_EQ(dc_apply_delta_linear(d, &p), DC_ERR_SHAPE_MISMATCH);
  p.ldx = 0;
  p.m = ~0ull;
  EXPECT_EQ(dc_apply_delta_linear(d, &p), DC_ERR_INVALID_ARGUMENT);
  p.m = 2;
  p.scale = NAN;
  EXPECT_EQ(dc_apply_delta_linear(d, &p), DC_ERR_INVALID_ARGUMENT);
  std::vector<float> w(96 * 80);
  EXPECT_EQ(dc_merge_delta(d, w.data(), DC_DTYPE_F32, 10, 1.f, nullptr), DC_ERR_SHAPE_MISMATCH);
  EXPECT_EQ(dc_merge_delta(d, w.data(), (dc_dtype)7, 0, 1.f, nullptr), DC_ERR_INVALID_ARGUMENT);
  const int32_t slots[2] = {0, 5};
  const dc_delta* one[1] = {d};
  dc_delta_batch* b = nullptr;
  ASSERT_EQ(dc_delta_batch_create(&b, one, 1), DC_OK);
  dc_apply_params_init(&p);
  p.m = 2;
  p.x = x.data();
  p.y = y.data();
  EXPECT_EQ(dc_apply_delta_linear_batched(b, slots, &p), DC_ERR_INVALID_ARGUMENT) << "slot 5 of a 1-slot batch";
  dc_delta_batch_free(b);
}

// ---- wrong base model ------------------------------------------------------------------------------

TEST(HostileBase, WrongBaseIsRefusedByTheFingerprint) {
  const std::vector<uint8_t> img = make_container_image();
  dc_container* rc = nullptr;
  ASSERT_EQ(dc_container_open_memory(&rc, img.data(), img.size(), nullptr), DC_OK);
  ContainerPtr c(rc);
  const std::string dir = dc_test::temp_dir("hostile-base");
  const std::vector<uint8_t> right(96 * 80 * 2, 7), wrong_value(96 * 80 * 2, 9);
  auto write = [&](const std::string& name, const std::string& dtype, std::vector<uint64_t> shape,
                   const std::vector<uint8_t>& bytes, const std::string& tensor = "l0.q.weight") {
    const std::string p = dir + "/" + name;
    dc::write_safetensors(p, {{tensor, dtype, shape, bytes.data(), bytes.size()}});
    return p;
  };
  EXPECT_EQ(dc_container_check_base_file(c.get(), write("right.safetensors", "F16", {96, 80}, right).c_str()), DC_OK)
      << dc_last_error_message();
  struct Case {
    std::string file;
    const char* expect_in_message;
  } cases[] = {
      {write("value.safetensors", "F16", {96, 80}, wrong_value), "differs"},
      {write("shape.safetensors", "F16", {80, 96}, right), "shape"},
      {write("dtype.safetensors", "BF16", {96, 80}, right), "BF16"},
      {write("name.safetensors", "F16", {96, 80}, right, "l0.k.weight"), "missing"},
  };
  for (const Case& k : cases) {
    EXPECT_EQ(dc_container_check_base_file(c.get(), k.file.c_str()), DC_ERR_BASE_MISMATCH) << k.file;
    EXPECT_NE(std::string(dc_last_error_message()).find(k.expect_in_message), std::string::npos)
        << dc_last_error_message();
  }
  EXPECT_EQ(dc_container_check_base_tensor(c.get(), "l0.q.weight", wrong_value.data(), wrong_value.size()),
            DC_ERR_BASE_MISMATCH);
  EXPECT_EQ(dc_container_check_base_tensor(c.get(), "l0.q.weight", right.data(), right.size() - 1),
            DC_ERR_BASE_MISMATCH);
  EXPECT_EQ(dc_container_check_base_tensor(c.get(), "not.there", right.data(), right.size()), DC_ERR_NOT_FOUND);
}

// ---- hostile safetensors ---------------------------------------------------------------------------

std::vector<uint8_t> st_bytes(const std::string& header, size_t data_bytes, uint64_t declared = ~0ull) {
  const uint64_t n = declared == ~0ull ? header.size() : declared;
  std::vector<uint8_t> out(8);
  for (int i = 0; i < 8; ++i) out[i] = (uint8_t)(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.resize(out.size() + data_bytes, 0x11);
  return out;
}

dc_status st_open_status(const std::string& dir, const std::vector<uint8_t>& bytes, std::string* message) {
  const std::string p = write_image(dir, "h.safetensors", bytes);
  try {
    dc::SafetensorsModel::open(p);
    return DC_OK;
  } catch (const dc::Error& e) {
    *message = e.what();
    return e.status();
  }
}

TEST(HostileSafetensors, MalformedHeadersAreRefusedWithTheirStatus) {
  const std::string dir = dc_test::temp_dir("hostile-st");
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  struct Case {
    const char* what;
    std::vector<uint8_t> bytes;
    dc_status status;
  } cases[] = {
      {"valid", st_bytes(ok, 8), DC_OK},
      {"empty file", {}, DC_ERR_TRUNCATED},
      {"header length beyond the file", st_bytes(ok, 8, 1000), DC_ERR_TRUNCATED},
      {"header length above 100 MB", st_bytes(ok, 8, 100000001), DC_ERR_LIMIT},
      {"header length 2^64-1", st_bytes(ok, 8, ~0ull - 1), DC_ERR_LIMIT},
      {"not JSON", st_bytes("not json at all", 0), DC_ERR_BAD_MAGIC},
      {"truncated JSON", st_bytes(R"({"a":{"dtype":"F32")", 0), DC_ERR_CORRUPT},
      {"a hole before the data", st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       DC_ERR_CORRUPT},
      {"bytes after the last tensor", st_bytes(ok, 9), DC_ERR_CORRUPT},
      {"data past the end", st_bytes(ok, 4), DC_ERR_TRUNCATED},
      {"overlap",
       st_bytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                6),
       DC_ERR_CORRUPT},
      {"size disagrees with shape", st_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       DC_ERR_CORRUPT},
      {"shape product overflows",
       st_bytes(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
       DC_ERR_OVERFLOW},
      {"byte size overflows", st_bytes(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8),
       DC_ERR_OVERFLOW},
      {"negative offset", st_bytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", 1), DC_ERR_CORRUPT},
      {"offsets reversed", st_bytes(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", 4), DC_ERR_CORRUPT},
      {"float shape", st_bytes(R"({"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", 1), DC_ERR_CORRUPT},
      {"duplicate tensor", st_bytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", 2),
       DC_ERR_DUPLICATE},
      {"too many dimensions", st_bytes(std::string(R"({"a":{"dtype":"U8","shape":[)") + [] {
         std::string s;
         for (int i = 0; i < 65; ++i) s += i ? ",1" : "1";
         return s;
       }() + R"(],"data_offsets":[0,1]}})", 1), DC_ERR_LIMIT},
      {"deep nesting", st_bytes("{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}", 0),
       DC_ERR_CORRUPT},
      {"metadata not strings", st_bytes(R"({"__metadata__":{"k":1}})", 0), DC_ERR_CORRUPT},
      {"empty header, no tensors", st_bytes("{}", 0), DC_OK},
  };
  for (const Case& k : cases) {
    std::string message;
    EXPECT_EQ(st_open_status(dir, k.bytes, &message), k.status) << k.what << ": " << message;
    if (k.status != DC_OK) EXPECT_NE(message.find("h.safetensors"), std::string::npos) << k.what << ": " << message;
  }
}

// ---- the fuzz seed corpus stays valid --------------------------------------------------------------

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.' && std::string(e->d_name) != "README.md") out.push_back(dir + "/" + e->d_name);
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(FuzzCorpus, EverySeedIsAValidFileSoTheFuzzersStartDeep) {
  const auto containers = files_in(std::string(DC_FUZZ_CORPUS_DIR) + "/container");
  ASSERT_GE(containers.size(), 5u);
  for (const std::string& f : containers) {
    dc_container* c = nullptr;
    ASSERT_EQ(dc_container_open(&c, f.c_str(), nullptr), DC_OK) << f << ": " << dc_last_error_message();
    EXPECT_EQ(dc_container_verify(c), DC_OK) << f << ": " << dc_last_error_message();
    dc_container_close(c);
  }
  const auto st = files_in(std::string(DC_FUZZ_CORPUS_DIR) + "/safetensors");
  ASSERT_GE(st.size(), 3u);
  for (const std::string& f : st) EXPECT_NO_THROW(dc::SafetensorsModel::open(f)) << f;
}

}  // namespace

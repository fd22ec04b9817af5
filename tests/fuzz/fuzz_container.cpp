// libFuzzer target: an untrusted .dcz image through the whole public C API, as a server would use
// it: open (copying the buffer) → info/listing → verify → load every tensor (checksums on, then
// off) → apply to a small x → batched apply → merge into a small weight → tensor-parallel shards.
//
// Built twice (tests/fuzz/CMakeLists.txt):
//   fuzz_container          the bytes as they come. Mutations of the preamble or manifest mostly stop
//                           at their XXH3 checks; payload mutations reach zstd and, through
//                           DC_LOAD_SKIP_CHECKSUM, the PackedTensor validation and the CPU kernels.
//   fuzz_container_trusted  (DC_FUZZ_FIXUP_HASHES) first rewrites the preamble's manifest and header
//                           digests so that mutated manifests get past the checksums into the
//                           FlatBuffers verifier and the semantic checks, and opens with
//                           DC_OPEN_TRUSTED so corrupted payloads reach the decoder unchecked.
//
// Invariants checked (abort = a finding): no crash or sanitizer report, no DC_ERR_INTERNAL (an
// exception the library did not expect), every failure leaves `out` NULL with a non-empty message,
// a delta that loads can be applied and merged with operands of its shape.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "deltacome/deltacome.h"
#include "format/container.h"  // dc::xxh3_64, for the digest fix-up

namespace {

// Shapes above this many elements are listed and loaded but not applied/merged (time, not memory:
// the segment limit below already bounds what a load may allocate).
constexpr uint64_t kMaxApplyElements = 1ull << 22;
constexpr uint64_t kTokens = 2;

[[noreturn]] void finding(const char* what, dc_status s) {
  std::fprintf(stderr, "fuzz_container: %s: status %d (%s): %s\n", what, (int)s, dc_status_string(s),
               dc_last_error_message());
  std::abort();
}

// A failed call must name what is wrong and must not be an internal error.
dc_status check(dc_status s, const char* what) {
  if (s == DC_ERR_INTERNAL) finding(what, s);
  if (s != DC_OK && dc_last_error_message()[0] == '\0') finding("empty error message", s);
  return s;
}

dc_context* cpu_context() {
  static dc_context* ctx = [] {
    dc_context_options o;
    dc_context_options_init(&o);
    o.backend = DC_BACKEND_CPU;
    o.num_threads = 1;  // deterministic and cheap per input
    dc_context* c = nullptr;
    if (dc_context_create(&c, &o) != DC_OK) finding("dc_context_create", DC_ERR_BACKEND);
    return c;
  }();
  return ctx;
}

void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = (uint8_t)(v >> (8 * i));
}
uint64_t get_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

// Rewrites manifest_xxh3 (@64) and header_xxh3 (@72) so that they match the (mutated) bytes.
void fixup_hashes(std::vector<uint8_t>& img) {
  if (img.size() < 80) return;
  const uint64_t off = get_u64(&img[16]), size = get_u64(&img[24]);
  if (off <= img.size() && size <= img.size() - off) put_u64(&img[64], dc::xxh3_64(img.data() + off, size));
  put_u64(&img[72], dc::xxh3_64(img.data(), 72));
}

// Applies and merges one loaded delta with operands of the delta's (shard) shape.
void exercise_delta(dc_delta* d) {
  dc_delta_info di{};
  di.struct_size = sizeof di;
  if (check(dc_delta_get_info(d, &di), "dc_delta_get_info") != DC_OK) finding("dc_delta_get_info", DC_ERR_INTERNAL);
  const uint64_t rows = di.split == DC_SHARD_ROWS ? di.shard_end - di.shard_begin : di.rows;
  const uint64_t cols = di.split == DC_SHARD_COLS ? di.shard_end - di.shard_begin : di.cols;
  if (rows == 0 || cols == 0 || rows > kMaxApplyElements || cols > kMaxApplyElements ||
      rows * cols > kMaxApplyElements)
    return;

  std::vector<float> x(kTokens * cols), y(kTokens * rows, 0.f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = (float)((int)(i % 7) - 3) * 0.25f;
  dc_apply_params p;
  dc_apply_params_init(&p);
  p.m = kTokens;
  p.x = x.data();
  p.y = y.data();
  const dc_status s = check(dc_apply_delta_linear(d, &p), "dc_apply_delta_linear");
  if (s != DC_OK) finding("apply refused operands of the delta's own shape", s);

  // bf16 operands and DC_APPLY_INCLUDE_BASE (2-D only) reach the conversion paths.
  if (!(di.kind == DC_KIND_DENSE && di.cols == 1)) {
    std::vector<uint16_t> xb(kTokens * cols, 0x3f80), yb(kTokens * rows, 0), wb(rows * cols, 0x3c00);
    dc_apply_params q;
    dc_apply_params_init(&q);
    q.flags = DC_APPLY_INCLUDE_BASE;
    q.m = kTokens;
    q.x = xb.data();
    q.x_dtype = DC_DTYPE_BF16;
    q.y = yb.data();
    q.y_dtype = DC_DTYPE_BF16;
    q.base_weight = wb.data();
    q.base_dtype = DC_DTYPE_F16;
    check(dc_apply_delta_linear(d, &q), "dc_apply_delta_linear(bf16, include base)");
  }

  if (di.split == DC_SHARD_NONE) {
    std::vector<float> w(rows * cols, 1.f);
    const dc_status m = check(dc_merge_delta(d, w.data(), DC_DTYPE_F32, 0, 1.f, nullptr), "dc_merge_delta");
    if (m != DC_OK) finding("merge refused a weight of the delta's own shape", m);
    std::vector<uint16_t> wh(rows * cols, 0x3c00);
    check(dc_merge_delta(d, wh.data(), DC_DTYPE_F16, 0, -0.5f, nullptr), "dc_merge_delta(f16)");
  }

  if (di.kind != DC_KIND_DENSE && di.split == DC_SHARD_NONE) {
    const dc_delta* one[1] = {d};
    dc_delta_batch* b = nullptr;
    if (check(dc_delta_batch_create(&b, one, 1), "dc_delta_batch_create") == DC_OK) {
      const int32_t slots[kTokens] = {0, -1};
      check(dc_apply_delta_linear_batched(b, slots, &p), "dc_apply_delta_linear_batched");
      dc_delta_batch_free(b);
    } else if (b != nullptr) {
      finding("failed dc_delta_batch_create left *out set", DC_ERR_INTERNAL);
    }
  }
}

void load_and_exercise(const dc_container* c, uint64_t index, uint32_t flags, const dc_shard* shard) {
  dc_load_options lo;
  dc_load_options_init(&lo);
  lo.flags = flags;
  if (shard) lo.shard = *shard;
  dc_delta* d = reinterpret_cast<dc_delta*>(uintptr_t{1});
  const dc_status s = check(dc_delta_load_index(&d, cpu_context(), c, index, &lo), "dc_delta_load_index");
  if (s != DC_OK) {
    if (d != nullptr) finding("failed dc_delta_load_index left *out set", s);
    return;
  }
  exercise_delta(d);
  dc_delta_free(d);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> img(data, data + size);
#ifdef DC_FUZZ_FIXUP_HASHES
  fixup_hashes(img);
  const uint32_t open_flags = DC_OPEN_TRUSTED;
#else
  const uint32_t open_flags = 0;
#endif

  dc_open_options oo;
  dc_open_options_init(&oo);
  oo.flags = open_flags;
  oo.max_manifest_bytes = 1u << 20;  // small limits: what the fuzzer may make the reader allocate
  oo.max_segment_bytes = 16u << 20;
  dc_container* c = reinterpret_cast<dc_container*>(uintptr_t{1});
  const dc_status so = check(dc_container_open_memory(&c, img.data(), img.size(), &oo), "dc_container_open_memory");
  if (so != DC_OK) {
    if (c != nullptr) finding("failed dc_container_open_memory left *out set", so);
    return 0;
  }
  // The image was copied: scribbling over ours must not matter.
  std::memset(img.data(), 0xA5, img.size());

  dc_container_info ci{};
  ci.struct_size = sizeof ci;
  if (check(dc_container_get_info(c, &ci), "dc_container_get_info") != DC_OK) finding("get_info", DC_ERR_INTERNAL);
  if (ci.tensor_count != dc_container_tensor_count(c)) finding("tensor_count disagrees", DC_ERR_INTERNAL);
  if (!ci.model_name || !ci.base_model_name || !ci.tool_version || !ci.recipe_json) finding("NULL info string", DC_OK);

  const uint64_t n = ci.tensor_count;
  for (uint64_t i = 0; i < n; ++i) {
    dc_tensor_info ti{};
    ti.struct_size = sizeof ti;
    if (check(dc_container_tensor_info(c, i, &ti), "dc_container_tensor_info") != DC_OK) finding("tensor_info", DC_OK);
    uint64_t found = ~0ull;
    if (dc_container_find_tensor(c, ti.name, &found) != DC_OK || found != i) finding("find_tensor(own name)", DC_OK);
    uint64_t rank = 0;
    float sv[4];
    if (check(dc_container_singular_values(c, i, sv, 4, &rank), "dc_container_singular_values") == DC_OK &&
        rank != ti.rank)
      finding("singular value count differs from rank", DC_OK);
    const uint8_t probe[4] = {1, 2, 3, 4};
    check(dc_container_check_base_tensor(c, ti.name, probe, sizeof probe), "dc_container_check_base_tensor");
  }

  const dc_status sv = check(dc_container_verify(c), "dc_container_verify");
  for (uint64_t i = 0; i < n; ++i) {
    if (sv == DC_OK) load_and_exercise(c, i, DC_LOAD_VERIFY_CHECKSUM, nullptr);
    // Skipping the checksum lets corrupt payloads reach validation and the kernels.
    load_and_exercise(c, i, DC_LOAD_SKIP_CHECKSUM, nullptr);
    const dc_shard rows{DC_SHARD_ROWS, 1, 2, 0, 0}, cols{DC_SHARD_COLS, 0, 3, 0, 0};
    load_and_exercise(c, i, DC_LOAD_SKIP_CHECKSUM, &rows);
    load_and_exercise(c, i, DC_LOAD_SKIP_CHECKSUM, &cols);
  }

  if (n > 0 && n <= 64) {
    std::vector<dc_delta*> all(n, reinterpret_cast<dc_delta*>(uintptr_t{1}));
    dc_load_options lo;
    dc_load_options_init(&lo);
    lo.flags = DC_LOAD_SKIP_CHECKSUM;
    const dc_status sa = check(dc_delta_load_all(all.data(), cpu_context(), c, &lo), "dc_delta_load_all");
    for (dc_delta* d : all) {
      if (sa != DC_OK && d != nullptr) finding("failed dc_delta_load_all left a handle", sa);
      dc_delta_free(d);
    }
  }
  dc_container_close(c);
  return 0;
}

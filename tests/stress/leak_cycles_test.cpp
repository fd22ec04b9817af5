// Leak test: 1000 open → load → apply → merge → close cycles through the C API, including the
// failure paths a server meets with hostile files (corrupt image, bad shard, wrong base, missing
// tensor). In the ASan build (`make test-asan`, ASAN_OPTIONS=detect_leaks=1) LeakSanitizer checks
// the whole process at the end of the test and fails it on any lost byte; in other builds the
// heap in use (mallinfo2) must not grow across the cycles.
#include <malloc.h>

#include "stress_fixtures.h"

#if defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define DC_HAVE_LSAN 1
#  endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#  define DC_HAVE_LSAN 1
#endif
#ifdef DC_HAVE_LSAN
#  include <sanitizer/lsan_interface.h>
#endif

namespace {

using namespace stress;

constexpr int kCycles = 1000;
constexpr uint64_t kTokens = 2;

// One full cycle; returns the number of unexpected results.
int cycle(int i, const std::vector<uint8_t>& img, const std::vector<uint8_t>& corrupt, const std::string& path) {
  int bad = 0;
  dc_open_options oo;
  dc_open_options_init(&oo);
  dc_container* rc = nullptr;
  switch (i % 3) {
    case 0: bad += dc_container_open_memory(&rc, img.data(), img.size(), &oo) != DC_OK; break;
    case 1: bad += dc_container_open(&rc, path.c_str(), &oo) != DC_OK; break;
    default:
      oo.flags = DC_OPEN_NO_MMAP;
      bad += dc_container_open(&rc, path.c_str(), &oo) != DC_OK;
  }
  if (!rc) return bad + 1;
  ContainerPtr c(rc);

  // Failure paths allocate and throw too.
  dc_container* broken = nullptr;
  bad += dc_container_open_memory(&broken, corrupt.data(), corrupt.size(), nullptr) == DC_OK;
  dc_container_close(broken);

  dc_context_options co;
  dc_context_options_init(&co);
  co.backend = DC_BACKEND_CPU;
  co.num_threads = 2;
  dc_context* rctx = nullptr;
  bad += dc_context_create(&rctx, &co) != DC_OK;
  ContextPtr ctx(rctx);

  const uint64_t n = dc_container_tensor_count(c.get());
  if (i % 10 == 0) {
    std::vector<dc_delta*> all(n, nullptr);
    bad += dc_delta_load_all(all.data(), ctx.get(), c.get(), nullptr) != DC_OK;
    for (dc_delta* d : all) dc_delta_free(d);
  }
  std::vector<DeltaPtr> kept;
  for (uint64_t t = 0; t < n; ++t) {
    dc_load_options lo;
    dc_load_options_init(&lo);
    lo.flags = i % 2 ? DC_LOAD_SKIP_CHECKSUM : 0;
    dc_delta* d = nullptr;
    if (dc_delta_load_index(&d, ctx.get(), c.get(), t, &lo) != DC_OK) {
      ++bad;
      continue;
    }
    const Answer a = compute(d, kTokens, 7 + t);
    bad += a.y.empty();
    kept.emplace_back(d);
  }
  // A one-slot batch of the first layer (96x80), applied to two rows (one with no delta).
  {
    const dc_delta* one[1] = {kept[0].get()};
    dc_delta_batch* b = nullptr;
    bad += dc_delta_batch_create(&b, one, 1) != DC_OK;
    std::vector<float> x(kTokens * 80, 0.5f), y(kTokens * 96, 0.f);
    const int32_t slots[kTokens] = {0, -1};
    dc_apply_params p;
    dc_apply_params_init(&p);
    p.m = kTokens;
    p.x = x.data();
    p.y = y.data();
    bad += dc_apply_delta_linear_batched(b, slots, &p) != DC_OK;
    dc_delta_batch_free(b);
  }
  // Shards, then refusals: an out-of-range shard, a missing tensor, a wrong base tensor.
  dc_load_options lo;
  dc_load_options_init(&lo);
  lo.shard = dc_shard{DC_SHARD_ROWS, 1, 2, 0, 0};
  dc_delta* d = nullptr;
  bad += dc_delta_load(&d, ctx.get(), c.get(), "l0.o.weight", &lo) != DC_OK;
  dc_delta_free(d);
  lo.shard = dc_shard{DC_SHARD_COLS, 5, 2, 0, 0};
  d = nullptr;
  bad += dc_delta_load(&d, ctx.get(), c.get(), "l0.o.weight", &lo) == DC_OK;
  dc_delta_free(d);
  d = nullptr;
  bad += dc_delta_load(&d, ctx.get(), c.get(), "no.such.tensor", nullptr) != DC_ERR_NOT_FOUND;
  const std::vector<uint8_t> wrong(96 * 80 * 2, 1);
  bad += dc_container_check_base_tensor(c.get(), "l0.q.weight", wrong.data(), wrong.size()) != DC_ERR_BASE_MISMATCH;
  bad += dc_container_verify(c.get()) != DC_OK;

  // Deltas outlive their context and container: free them last, in reverse order.
  ctx.reset();
  c.reset();
  while (!kept.empty()) kept.pop_back();
  return bad;
}

TEST(LeakCycles, ThousandOpenLoadApplyCloseCyclesLoseNothing) {
  const std::vector<uint8_t> img = make_container_image();
  std::vector<uint8_t> corrupt = img;
  corrupt[100] ^= 0x01;  // a manifest byte: refused at open (manifest checksum)
  const std::string dir = dc_test::temp_dir("stress-leak");
  const std::string path = write_image(dir, "leak.dcz", img);

  int bad = 0;
  for (int i = 0; i < 50; ++i) bad += cycle(i, img, corrupt, path);  // warm-up: thread-local caches
  malloc_trim(0);
  const size_t before = mallinfo2().uordblks;
  for (int i = 50; i < kCycles; ++i) bad += cycle(i, img, corrupt, path);
  malloc_trim(0);
  const size_t after = mallinfo2().uordblks;
  EXPECT_EQ(bad, 0) << "unexpected results in the cycles";
#ifdef DC_HAVE_LSAN
  // LeakSanitizer: every block still allocated must be reachable. A leak fails here (and again
  // at exit with the allocation stacks).
  EXPECT_EQ(__lsan_do_recoverable_leak_check(), 0) << "LeakSanitizer found leaks (stacks above)";
  (void)before;
  (void)after;
#else
  // Without LSan: 950 cycles may not grow the heap by more than 64 KiB (a per-cycle leak of even
  // one small tensor name would exceed it).
  EXPECT_LT((long long)after - (long long)before, 64 * 1024) << "heap grew from " << before << " to " << after;
#endif
}

}  // namespace

// Concurrent acquire/release from 8 threads (plus a prefetching thread): every acquisition succeeds,
// every returned delta is the right tensor while held, and the final stats add up exactly.
#include <atomic>
#include <random>
#include <thread>

#include "pool_fixture.h"

namespace pool_test {
namespace {

const char* kTensors[] = {"l0.q", "l0.k", "l0.v", "l0.o"};  // same shape and size in every variant

void hammer(dc_pool* pool, int models, int thread, int iterations, std::atomic<int>& failures,
            std::atomic<uint64_t>& acquisitions) {
  std::mt19937 rng(1000 + thread);
  for (int i = 0; i < iterations; ++i) {
    // Hold one or two deltas at a time, released in either order.
    const int hold = 1 + (int)(rng() % 2);
    const dc_delta* held[2] = {};
    std::string names[2];
    for (int h = 0; h < hold; ++h) {
      const std::string id = "m" + std::to_string(rng() % models);
      names[h] = kTensors[rng() % 4];
      if (dc_pool_acquire(pool, id.c_str(), names[h].c_str(), nullptr, &held[h]) != DC_OK || !held[h]) {
        ++failures;
        continue;
      }
      ++acquisitions;
      dc_delta_info info{};
      info.struct_size = sizeof info;
      if (dc_delta_get_info(held[h], &info) != DC_OK || names[h] != info.name || info.rows != 40 || info.cols != 64)
        ++failures;
    }
    for (int h = hold - 1; h >= 0; --h)
      if (held[h] && dc_pool_release(pool, held[h]) != DC_OK) ++failures;
  }
}

TEST(PoolConcurrency, EightThreadsAcquireAndReleaseConsistently) {
  const int kModels = 12, kThreads = 8, kIterations = 300;
  const uint64_t s = device_bytes_of(*make_variant(1), "l0.q");
  // Room for 20 deltas: 8 threads hold at most 16 at once, so no acquisition can fail.
  PoolHarness h(kModels, 20 * s, 2);
  std::atomic<int> failures{0};
  std::atomic<uint64_t> acquisitions{0};
  std::atomic<bool> done{false};
  std::thread prefetcher([&] {  // keeps workers decoding and queries running meanwhile
    std::mt19937 rng(7);
    while (!done) {
      const std::string id = "m" + std::to_string(rng() % kModels);
      if (dc_pool_prefetch(h.pool, id.c_str(), kTensors[rng() % 4], nullptr) != DC_OK) ++failures;
      dc_pool_entry_state st;
      uint32_t refs;
      if (dc_pool_query(h.pool, id.c_str(), "l0.q", &st, &refs) != DC_OK) ++failures;
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] { hammer(h.pool, kModels, t, kIterations, failures, acquisitions); });
  for (auto& t : threads) t.join();
  done = true;
  prefetcher.join();
  ASSERT_DC_OK(dc_pool_wait(h.pool));

  EXPECT_EQ(failures.load(), 0);
  const dc_pool_stats st = stats_of(h.pool);
  EXPECT_EQ(st.hits + st.misses, acquisitions.load());
  EXPECT_EQ(st.referenced_deltas, 0u);
  EXPECT_EQ(st.prefetch_pending, 0u);
  EXPECT_EQ(st.resident_bytes, st.resident_deltas * s);
  EXPECT_LE(st.resident_bytes, st.budget_bytes);
  EXPECT_EQ(st.loads, st.resident_deltas + st.evictions);  // every placed delta is resident or evicted
  EXPECT_GE(st.misses + st.prefetch_loaded, st.loads);
  EXPECT_GT(st.evictions, 0u);  // 48 entries through a 20-delta budget
  uint64_t resident = 0;
  for (int m = 0; m < kModels; ++m)
    for (const char* t : kTensors) {
      uint32_t refs = 7;
      dc_pool_entry_state state = DC_POOL_DECODING;
      ASSERT_DC_OK(dc_pool_query(h.pool, ("m" + std::to_string(m)).c_str(), t, &state, &refs));
      EXPECT_EQ(refs, 0u);
      EXPECT_TRUE(state == DC_POOL_RESIDENT || state == DC_POOL_ABSENT);
      resident += state == DC_POOL_RESIDENT;
    }
  EXPECT_EQ(resident, st.resident_deltas);
}

}  // namespace
}  // namespace pool_test

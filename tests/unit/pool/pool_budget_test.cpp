// Pool bookkeeping on the CPU backend: budget, LRU eviction order, reference counts, DC_ERR_BUDGET,
// exact stats, registration errors, prefetch.
#include <cstring>

#include "pool_fixture.h"

namespace pool_test {
namespace {

const char* kQ = "l0.q";

TEST(PoolBudget, EvictsLeastRecentlyUsedAndCountsExactly) {
  const uint64_t s = device_bytes_of(*make_variant(1), kQ);  // every variant's l0.q has this size
  PoolHarness h(5, 3 * s + s / 2);
  h.touch(0, kQ);
  h.touch(1, kQ);
  h.touch(2, kQ);
  h.touch(0, kQ);  // hit: m0 becomes the most recent, m1 the least
  dc_pool_stats st = stats_of(h.pool);
  EXPECT_EQ(st.hits, 1u);
  EXPECT_EQ(st.misses, 3u);
  EXPECT_EQ(st.evictions, 0u);
  EXPECT_EQ(st.resident_bytes, 3 * s);
  EXPECT_EQ(st.resident_deltas, 3u);

  h.touch(3, kQ);  // needs room: m1 goes
  EXPECT_EQ(state_of(h.pool, "m1", kQ), DC_POOL_ABSENT);
  EXPECT_EQ(state_of(h.pool, "m0", kQ), DC_POOL_RESIDENT);
  EXPECT_EQ(state_of(h.pool, "m2", kQ), DC_POOL_RESIDENT);
  EXPECT_EQ(state_of(h.pool, "m3", kQ), DC_POOL_RESIDENT);
  h.touch(4, kQ);  // then m2
  EXPECT_EQ(state_of(h.pool, "m2", kQ), DC_POOL_ABSENT);
  h.touch(1, kQ);  // then m0 (m3, m4 are more recent)
  EXPECT_EQ(state_of(h.pool, "m0", kQ), DC_POOL_ABSENT);
  EXPECT_EQ(state_of(h.pool, "m3", kQ), DC_POOL_RESIDENT);
  EXPECT_EQ(state_of(h.pool, "m4", kQ), DC_POOL_RESIDENT);

  st = stats_of(h.pool);
  EXPECT_EQ(st.hits, 1u);
  EXPECT_EQ(st.misses, 6u);
  EXPECT_EQ(st.evictions, 3u);
  EXPECT_EQ(st.resident_deltas, 3u);
  EXPECT_EQ(st.referenced_deltas, 0u);
  EXPECT_EQ(st.resident_bytes, 3 * s);
  EXPECT_LE(st.resident_bytes, st.budget_bytes);
  EXPECT_EQ(st.budget_bytes, 3 * s + s / 2);
}

TEST(PoolBudget, ReferencedDeltasAreNeverEvicted) {
  const uint64_t s = device_bytes_of(*make_variant(1), kQ);
  PoolHarness h(4, 3 * s + s / 2);
  const dc_delta* d[3] = {};
  for (int i = 0; i < 3; ++i)
    ASSERT_DC_OK(dc_pool_acquire(h.pool, PoolHarness::id(i).c_str(), kQ, nullptr, &d[i]));
  const dc_delta* extra = reinterpret_cast<const dc_delta*>(0x1);
  EXPECT_EQ(dc_pool_acquire(h.pool, "m3", kQ, nullptr, &extra), DC_ERR_BUDGET);
  EXPECT_EQ(extra, nullptr);
  EXPECT_NE(std::string(dc_last_error_message()).find("budget"), std::string::npos) << dc_last_error_message();
  dc_pool_stats st = stats_of(h.pool);
  EXPECT_EQ(st.evictions, 0u);
  EXPECT_EQ(st.resident_deltas, 3u);
  EXPECT_EQ(st.referenced_deltas, 3u);
  EXPECT_EQ(state_of(h.pool, "m3", kQ), DC_POOL_ABSENT);

  // Releasing m1 makes it the only candidate, even though m0 was used longer ago.
  ASSERT_DC_OK(dc_pool_release(h.pool, d[1]));
  h.touch(3, kQ);
  EXPECT_EQ(state_of(h.pool, "m1", kQ), DC_POOL_ABSENT);
  EXPECT_EQ(state_of(h.pool, "m0", kQ), DC_POOL_RESIDENT);
  EXPECT_EQ(state_of(h.pool, "m2", kQ), DC_POOL_RESIDENT);
  // The held deltas still work.
  dc_delta_info info{};
  info.struct_size = sizeof info;
  ASSERT_DC_OK(dc_delta_get_info(d[0], &info));
  EXPECT_EQ(info.rows, 40u);
  ASSERT_DC_OK(dc_pool_release(h.pool, d[0]));
  ASSERT_DC_OK(dc_pool_release(h.pool, d[2]));
  st = stats_of(h.pool);
  EXPECT_EQ(st.evictions, 1u);
  EXPECT_EQ(st.misses, 5u);  // m0, m1, m2, the refused m3, m3
  EXPECT_EQ(st.referenced_deltas, 0u);
}

TEST(PoolBudget, DeltaLargerThanTheBudgetEvictsNothing) {
  auto v = make_variant(1);
  const uint64_t s = device_bytes_of(*v, kQ), big = device_bytes_of(*v, "l0.up");
  ASSERT_GT(2 * big, 3 * s);
  PoolHarness h(1, (s + big) / 2);  // l0.q fits, l0.up never can
  h.touch(0, kQ);
  const dc_delta* d = nullptr;
  EXPECT_EQ(dc_pool_acquire(h.pool, "m0", "l0.up", nullptr, &d), DC_ERR_BUDGET);
  EXPECT_EQ(state_of(h.pool, "m0", kQ), DC_POOL_RESIDENT);
  EXPECT_EQ(stats_of(h.pool).evictions, 0u);
  EXPECT_EQ(stats_of(h.pool).resident_bytes, s);
}

TEST(PoolBudget, ReferenceCounts) {
  PoolHarness h(2, 1 << 20);
  const dc_delta *a = nullptr, *b = nullptr;
  ASSERT_DC_OK(dc_pool_acquire(h.pool, "m0", kQ, nullptr, &a));
  ASSERT_DC_OK(dc_pool_acquire(h.pool, "m0", kQ, nullptr, &b));
  EXPECT_EQ(a, b);
  uint32_t refs = 0;
  dc_pool_entry_state st = DC_POOL_ABSENT;
  ASSERT_DC_OK(dc_pool_query(h.pool, "m0", kQ, &st, &refs));
  EXPECT_EQ(st, DC_POOL_RESIDENT);
  EXPECT_EQ(refs, 2u);
  EXPECT_EQ(dc_pool_unregister(h.pool, "m0"), DC_ERR_BUSY);
  ASSERT_DC_OK(dc_pool_release(h.pool, a));
  ASSERT_DC_OK(dc_pool_query(h.pool, "m0", kQ, nullptr, &refs));
  EXPECT_EQ(refs, 1u);
  EXPECT_EQ(stats_of(h.pool).referenced_deltas, 1u);
  ASSERT_DC_OK(dc_pool_release(h.pool, b));
  EXPECT_EQ(dc_pool_release(h.pool, b), DC_ERR_INVALID_ARGUMENT);  // one release too many
  EXPECT_EQ(stats_of(h.pool).referenced_deltas, 0u);
  EXPECT_EQ(stats_of(h.pool).hits, 1u);
  EXPECT_EQ(stats_of(h.pool).misses, 1u);

  // A delta that is not the pool's.
  dc_delta* own = nullptr;
  ASSERT_DC_OK(dc_delta_load(&own, h.ctx, h.variants[0]->container, kQ, nullptr));
  EXPECT_EQ(dc_pool_release(h.pool, own), DC_ERR_INVALID_ARGUMENT);
  dc_delta_free(own);
}

TEST(PoolBudget, RegistrationAndLookupErrors) {
  PoolHarness h(1, 1 << 20);
  const dc_delta* d = nullptr;
  EXPECT_EQ(dc_pool_acquire(h.pool, "nope", kQ, nullptr, &d), DC_ERR_NOT_FOUND);
  EXPECT_EQ(dc_pool_acquire(h.pool, "m0", "nope", nullptr, &d), DC_ERR_NOT_FOUND);
  EXPECT_EQ(dc_pool_acquire(h.pool, "", kQ, nullptr, &d), DC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(dc_pool_acquire(nullptr, "m0", kQ, nullptr, &d), DC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(dc_pool_register(h.pool, "m0", h.variants[0]->container), DC_ERR_DUPLICATE);
  EXPECT_EQ(dc_pool_register(h.pool, "x", nullptr), DC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(dc_pool_unregister(h.pool, "x"), DC_ERR_NOT_FOUND);
  EXPECT_EQ(dc_pool_prefetch(h.pool, "m0", "nope", nullptr), DC_ERR_NOT_FOUND);

  dc_pool_options o;
  dc_pool_options_init(&o);
  o.device_budget_bytes = 0;
  dc_pool* p = reinterpret_cast<dc_pool*>(0x1);
  EXPECT_EQ(dc_pool_create(&p, h.ctx, &o), DC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(p, nullptr);
  dc_pool_options_init(&o);
  o.struct_size = 3;
  EXPECT_EQ(dc_pool_create(&p, h.ctx, &o), DC_ERR_INVALID_ARGUMENT);

  // Unregister frees what is resident, and the id can be registered again.
  h.touch(0, kQ);
  h.touch(0, "l0.k");
  EXPECT_GT(stats_of(h.pool).resident_bytes, 0u);
  ASSERT_DC_OK(dc_pool_unregister(h.pool, "m0"));
  EXPECT_EQ(stats_of(h.pool).resident_bytes, 0u);
  EXPECT_EQ(stats_of(h.pool).resident_deltas, 0u);
  EXPECT_EQ(dc_pool_acquire(h.pool, "m0", kQ, nullptr, &d), DC_ERR_NOT_FOUND);
  ASSERT_DC_OK(dc_pool_register(h.pool, "m0", h.variants[0]->container));
  h.touch(0, kQ);
  EXPECT_EQ(stats_of(h.pool).resident_deltas, 1u);
}

TEST(PoolBudget, CorruptTensorReportsTheStatusAndRetries) {
  // A container whose l0.q payload is damaged: the acquire reports DC_ERR_CHECKSUM (or a decode
  // error), leaves the entry absent, and other tensors still load.
  auto v = make_variant(7);
  std::vector<uint8_t> bad = v->image;
  uint64_t idx = 0;
  ASSERT_DC_OK(dc_container_find_tensor(v->container, "l0.q", &idx));
  dc::ReaderLimits lim;
  auto reader = dc::ContainerReader::open_memory(bad.data(), bad.size(), lim, true);
  const dc::SegmentRef seg = reader->tensors()[idx].segments[0];
  uint64_t payload_start = 0;  // preamble field at byte 32 (docs/FORMAT.md §1)
  std::memcpy(&payload_start, bad.data() + 32, 8);
  bad[payload_start + seg.offset + seg.compressed_size / 2] ^= 0x5a;
  dc_container* c = nullptr;
  ASSERT_DC_OK(dc_container_open_memory(&c, bad.data(), bad.size(), nullptr));
  PoolHarness h(0, 1 << 20);
  ASSERT_DC_OK(dc_pool_register(h.pool, "bad", c));
  const dc_delta* d = nullptr;
  const dc_status s = dc_pool_acquire(h.pool, "bad", "l0.q", nullptr, &d);
  EXPECT_TRUE(s == DC_ERR_CHECKSUM || s == DC_ERR_DECOMPRESS) << dc_status_string(s);
  EXPECT_EQ(state_of(h.pool, "bad", "l0.q"), DC_POOL_ABSENT);
  ASSERT_DC_OK(dc_pool_prefetch(h.pool, "bad", "l0.q", nullptr));
  const dc_status w = dc_pool_wait(h.pool);
  EXPECT_TRUE(w == DC_ERR_CHECKSUM || w == DC_ERR_DECOMPRESS) << dc_status_string(w);
  ASSERT_DC_OK(dc_pool_acquire(h.pool, "bad", "l0.k", nullptr, &d));
  ASSERT_DC_OK(dc_pool_release(h.pool, d));
  ASSERT_DC_OK(dc_pool_unregister(h.pool, "bad"));
  dc_container_close(c);
}

TEST(PoolPrefetch, DecodesOnHostThreadsAndPlacesOnWait) {
  PoolHarness h(2, 1 << 20, 3);
  ASSERT_DC_OK(dc_pool_prefetch(h.pool, "m0", nullptr, nullptr));
  ASSERT_DC_OK(dc_pool_wait(h.pool));
  const uint64_t n = dc_container_tensor_count(h.variants[0]->container);
  dc_pool_stats st = stats_of(h.pool);
  EXPECT_EQ(st.prefetch_loaded, n);
  EXPECT_EQ(st.resident_deltas, n);
  EXPECT_EQ(st.prefetch_pending, 0u);
  EXPECT_EQ(st.misses, 0u);
  uint64_t sum = 0;
  for (const auto& spec : default_specs()) sum += device_bytes_of(*h.variants[0], spec.name.c_str());
  EXPECT_EQ(st.resident_bytes, sum);
  h.touch(0, kQ);
  EXPECT_EQ(stats_of(h.pool).hits, 1u);
  // Prefetching what is resident queues nothing.
  ASSERT_DC_OK(dc_pool_prefetch(h.pool, "m0", kQ, nullptr));
  EXPECT_EQ(stats_of(h.pool).prefetch_pending, 0u);
}

TEST(PoolPrefetch, WhatDoesNotFitIsDroppedNotAnError) {
  const uint64_t s = device_bytes_of(*make_variant(1), kQ);
  PoolHarness h(3, 2 * s + s / 2, 2);
  const dc_delta *a = nullptr, *b = nullptr;
  ASSERT_DC_OK(dc_pool_acquire(h.pool, "m0", kQ, nullptr, &a));
  ASSERT_DC_OK(dc_pool_acquire(h.pool, "m1", kQ, nullptr, &b));
  ASSERT_DC_OK(dc_pool_prefetch(h.pool, "m2", kQ, nullptr));
  ASSERT_DC_OK(dc_pool_wait(h.pool));
  dc_pool_stats st = stats_of(h.pool);
  EXPECT_EQ(st.prefetch_dropped, 1u);
  EXPECT_EQ(st.prefetch_loaded, 0u);
  EXPECT_EQ(state_of(h.pool, "m2", kQ), DC_POOL_ABSENT);
  // Once m1 is released, the prefetch evicts it.
  ASSERT_DC_OK(dc_pool_release(h.pool, b));
  ASSERT_DC_OK(dc_pool_prefetch(h.pool, "m2", kQ, nullptr));
  ASSERT_DC_OK(dc_pool_wait(h.pool));
  EXPECT_EQ(state_of(h.pool, "m2", kQ), DC_POOL_RESIDENT);
  EXPECT_EQ(state_of(h.pool, "m1", kQ), DC_POOL_ABSENT);
  EXPECT_EQ(stats_of(h.pool).evictions, 1u);
  ASSERT_DC_OK(dc_pool_release(h.pool, a));
}

TEST(PoolPrefetch, AcquireOfAQueuedEntryDoesNotWaitInLine) {
  // No host threads would ever pick the job if host_threads were 0; with one thread and many queued
  // entries, an acquire of the last one decodes it itself.
  PoolHarness h(4, 1 << 22, 1);
  for (int i = 0; i < 4; ++i) ASSERT_DC_OK(dc_pool_prefetch(h.pool, PoolHarness::id(i).c_str(), nullptr, nullptr));
  h.touch(3, "l0.norm");
  ASSERT_DC_OK(dc_pool_wait(h.pool));
  const dc_pool_stats st = stats_of(h.pool);
  EXPECT_EQ(st.prefetch_pending, 0u);
  EXPECT_EQ(st.resident_deltas, 4u * default_specs().size());
  EXPECT_EQ(st.prefetch_loaded + st.misses, st.resident_deltas);
}

}  // namespace
}  // namespace pool_test

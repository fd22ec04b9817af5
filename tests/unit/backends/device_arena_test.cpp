// dcg::DeviceArena (cuda/device_arena.h), the GPU backends' sub-allocator for loaded deltas, on host
// memory: a fake chunk allocator stands in for cudaMalloc/cudaFree, so this runs without a GPU.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "device_arena.h"

namespace {

using dcg::DeviceArena;
constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kChunk = DeviceArena::kChunkBytes;

// malloc-backed chunks; counts what is live, can be told to fail, or to hand out misaligned memory.
class FakeChunks {
 public:
  ~FakeChunks() {
    for (auto& c : live_) std::free(c.second.raw);
  }
  DeviceArena::ChunkAlloc alloc_fn() {
    return [this](size_t n) { return alloc(n); };
  }
  DeviceArena::ChunkFree free_fn() {
    return [this](void* p) { release(p); };
  }

  std::atomic<bool> fail{false};
  std::atomic<bool> misalign{false};

  size_t live_count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return live_.size();
  }
  size_t live_bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    size_t s = 0;
    for (auto& c : live_) s += c.second.size;
    return s;
  }
  size_t alloc_calls() const { return calls_; }
  size_t last_request() const { return last_request_; }
  int bad_frees() const { return bad_frees_; }
  // True when [p, p + n) lies inside one live chunk.
  bool inside_chunk(const void* p, size_t n) const {
    std::lock_guard<std::mutex> lock(mu_);
    const auto a = reinterpret_cast<uintptr_t>(p);
    for (auto& c : live_) {
      const auto b = reinterpret_cast<uintptr_t>(c.first);
      if (a >= b && a + n <= b + c.second.size) return true;
    }
    return false;
  }

 private:
  struct Chunk {
    void* raw;
    size_t size;
  };
  void* alloc(size_t n) {
    ++calls_;
    last_request_ = n;
    // Refuse absurd sizes here: a real malloc of them would trip the sanitizers' size checks.
    if (fail || n > (size_t{1} << 30)) return nullptr;
    const size_t extra = misalign ? 256 : 0;
    void* raw = std::aligned_alloc(256, n + extra);
    if (!raw) return nullptr;
    void* p = static_cast<char*>(raw) + (misalign ? 16 : 0);
    std::lock_guard<std::mutex> lock(mu_);
    live_[p] = Chunk{raw, n};
    return p;
  }
  void release(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = live_.find(p);
    if (it == live_.end()) {
      ++bad_frees_;
      return;
    }
    std::free(it->second.raw);
    live_.erase(it);
  }

  mutable std::mutex mu_;
  std::map<void*, Chunk> live_;
  std::atomic<size_t> calls_{0}, last_request_{0};
  std::atomic<int> bad_frees_{0};
};

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

TEST(DeviceArena, AlignedAllocationsAndExactSizes) {
  FakeChunks fake;
  {
    DeviceArena arena(fake.alloc_fn(), fake.free_fn());
    size_t total = 0;
    std::vector<void*> ptrs;
    for (size_t n : {size_t{0}, size_t{1}, size_t{255}, size_t{256}, size_t{257}, size_t{1000}, size_t{4097},
                     size_t{2540712}, size_t{6785528}}) {
      size_t got = 0;
      void* p = arena.alloc(n, &got);
      ASSERT_NE(p, nullptr) << n;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % DeviceArena::kAlign, 0u) << n;
      EXPECT_EQ(got, round_up(n ? n : 1, 256)) << n;
      EXPECT_TRUE(fake.inside_chunk(p, got)) << n;
      total += got;
      EXPECT_EQ(arena.bytes_in_use(), total);
      ptrs.push_back(p);
    }
    EXPECT_EQ(arena.chunk_count(), 1u);
    EXPECT_EQ(arena.bytes_reserved(), kChunk);
    EXPECT_EQ(fake.live_bytes(), kChunk);
    for (void* p : ptrs) EXPECT_TRUE(arena.free(p));
    EXPECT_EQ(arena.bytes_in_use(), 0u);
    EXPECT_EQ(arena.free_range_count(), 1u);
  }
  EXPECT_EQ(fake.live_count(), 0u);  // the destructor gives the cached chunk back
  EXPECT_EQ(fake.bad_frees(), 0);
}

TEST(DeviceArena, CoalescesNeighboursAndReleasesEmptyChunks) {
  FakeChunks fake;
  DeviceArena arena(fake.alloc_fn(), fake.free_fn());
  char* a = static_cast<char*>(arena.alloc(kMiB));
  char* b = static_cast<char*>(arena.alloc(kMiB));
  char* c = static_cast<char*>(arena.alloc(kMiB));
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(b, a + kMiB);  // carved in order out of one chunk
  EXPECT_EQ(c, b + kMiB);
  EXPECT_EQ(arena.free_range_count(), 1u);  // the chunk's tail
  EXPECT_TRUE(arena.free(a));
  EXPECT_EQ(arena.free_range_count(), 2u);  // A, tail
  EXPECT_TRUE(arena.free(c));
  EXPECT_EQ(arena.free_range_count(), 2u);  // A, C + tail
  EXPECT_TRUE(arena.free(b));
  EXPECT_EQ(arena.free_range_count(), 1u);  // A + B + C + tail: the whole chunk
  EXPECT_EQ(arena.bytes_in_use(), 0u);
  EXPECT_EQ(arena.chunk_count(), 1u);  // empty, kept as the cache
  EXPECT_EQ(fake.live_count(), 1u);

  // The whole chunk is one range again: a full-chunk request fits in it without a new chunk.
  void* x = arena.alloc(kChunk);
  ASSERT_EQ(x, static_cast<void*>(a));
  EXPECT_EQ(fake.alloc_calls(), 1u);
  void* y = arena.alloc(kMiB);  // the first chunk is full: a second one
  ASSERT_NE(y, nullptr);
  EXPECT_EQ(arena.chunk_count(), 2u);
  EXPECT_EQ(arena.bytes_reserved(), 2 * kChunk);
  EXPECT_TRUE(arena.free(y));  // second chunk empty: cached
  EXPECT_EQ(arena.chunk_count(), 2u);
  EXPECT_TRUE(arena.free(x));  // first chunk empty too: one cache is enough, it goes back
  EXPECT_EQ(arena.chunk_count(), 1u);
  EXPECT_EQ(fake.live_count(), 1u);
  EXPECT_EQ(arena.bytes_reserved(), kChunk);
  arena.trim();
  EXPECT_EQ(arena.chunk_count(), 0u);
  EXPECT_EQ(arena.bytes_reserved(), 0u);
  EXPECT_EQ(fake.live_count(), 0u);
  EXPECT_EQ(fake.bad_frees(), 0);
}

TEST(DeviceArena, NeverMergesAcrossChunks) {
  FakeChunks fake;
  DeviceArena arena(fake.alloc_fn(), fake.free_fn());
  void* full = arena.alloc(kChunk);
  void* a = arena.alloc(kMiB);
  ASSERT_TRUE(full && a);
  EXPECT_EQ(arena.chunk_count(), 2u);
  EXPECT_TRUE(arena.free(a));
  EXPECT_TRUE(arena.free(full));
  // Whatever the fake's addresses, each chunk's range stays separate until the first goes back.
  EXPECT_EQ(arena.chunk_count(), 1u);
  EXPECT_EQ(arena.free_range_count(), 1u);
  EXPECT_EQ(arena.bytes_reserved(), kChunk);
}

TEST(DeviceArena, BestFitPrefersTheSmallestHole) {
  FakeChunks fake;
  DeviceArena arena(fake.alloc_fn(), fake.free_fn());
  char* p[6];
  const size_t sizes[6] = {3 * kMiB, kMiB, kMiB, kMiB, 2 * kMiB, kMiB};
  for (int i = 0; i < 6; ++i) ASSERT_NE(p[i] = static_cast<char*>(arena.alloc(sizes[i])), nullptr);
  ASSERT_TRUE(arena.free(p[0]));  // a 3 MiB hole at the start
  ASSERT_TRUE(arena.free(p[2]));  // a 1 MiB hole
  ASSERT_TRUE(arena.free(p[4]));  // a 2 MiB hole
  EXPECT_EQ(arena.alloc(kMiB), static_cast<void*>(p[2]));
  EXPECT_EQ(arena.alloc(2 * kMiB), static_cast<void*>(p[4]));
  EXPECT_EQ(arena.alloc(2 * kMiB), static_cast<void*>(p[0]));  // leaves 1 MiB of the 3 MiB hole
  EXPECT_EQ(arena.alloc(kMiB), static_cast<void*>(p[0] + 2 * kMiB));
  EXPECT_EQ(arena.chunk_count(), 1u);
}

TEST(DeviceArena, LargeRequestGetsItsOwnChunk) {
  FakeChunks fake;
  DeviceArena arena(fake.alloc_fn(), fake.free_fn());
  void* small = arena.alloc(kMiB);
  ASSERT_NE(small, nullptr);
  size_t got = 0;
  void* big = arena.alloc(kChunk + 1, &got);  // just over a chunk: its own, rounded to 2 MiB
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(got, kChunk + 2 * kMiB);
  EXPECT_EQ(fake.last_request(), kChunk + 2 * kMiB);
  EXPECT_EQ(arena.chunk_count(), 2u);
  EXPECT_EQ(arena.bytes_in_use(), kMiB + got);
  EXPECT_EQ(arena.bytes_reserved(), kChunk + got);
  void* dense = arena.alloc(262144000, &got);  // a dense fp16 32000×4096 embedding delta
  ASSERT_NE(dense, nullptr);
  EXPECT_EQ(got, round_up(262144000, 2 * kMiB));
  EXPECT_EQ(arena.chunk_count(), 3u);
  // The own chunks' tails are not shared: small requests keep going to the shared chunk.
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(fake.inside_chunk(arena.alloc(kMiB), kMiB));
  EXPECT_EQ(arena.chunk_count(), 3u);
  EXPECT_TRUE(arena.free(big));  // goes back at once, never cached
  EXPECT_TRUE(arena.free(dense));
  EXPECT_EQ(arena.chunk_count(), 1u);
  EXPECT_EQ(fake.live_count(), 1u);
  EXPECT_EQ(arena.bytes_in_use(), 9 * kMiB);
  // Exactly one chunk's worth still comes from a shared chunk.
  void* exact = arena.alloc(kChunk, &got);
  ASSERT_NE(exact, nullptr);
  EXPECT_EQ(got, kChunk);
  EXPECT_EQ(fake.last_request(), kChunk);
  EXPECT_EQ(fake.bad_frees(), 0);
}

TEST(DeviceArena, ChunkAllocFailureGivesNullAndArenaStaysUsable) {
  FakeChunks fake;
  DeviceArena arena(fake.alloc_fn(), fake.free_fn());
  fake.fail = true;
  size_t got = 123;
  EXPECT_EQ(arena.alloc(kMiB, &got), nullptr);
  EXPECT_EQ(got, 0u);
  EXPECT_EQ(arena.alloc(4 * kChunk), nullptr);
  EXPECT_EQ(arena.bytes_in_use(), 0u);
  EXPECT_EQ(arena.bytes_reserved(), 0u);
  EXPECT_EQ(arena.chunk_count(), 0u);
  fake.fail = false;
  void* full = arena.alloc(kChunk);
  ASSERT_NE(full, nullptr);
  fake.fail = true;  // the only chunk is full and no new one comes
  EXPECT_EQ(arena.alloc(256), nullptr);
  EXPECT_EQ(arena.bytes_in_use(), kChunk);
  EXPECT_EQ(arena.free_range_count(), 0u);
  EXPECT_TRUE(arena.free(full));
  void* again = arena.alloc(kMiB);  // from the (cached) first chunk, no chunk_alloc needed
  EXPECT_EQ(again, full);
  fake.fail = false;
  EXPECT_NE(arena.alloc(kChunk), nullptr);
  EXPECT_EQ(arena.chunk_count(), 2u);
}

TEST(DeviceArena, SizeOverflowIsRejected) {
  FakeChunks fake;
  DeviceArena arena(fake.alloc_fn(), fake.free_fn());
  EXPECT_EQ(arena.alloc(SIZE_MAX), nullptr);
  EXPECT_EQ(arena.alloc(SIZE_MAX - 100), nullptr);     // rounding to 256 overflows
  EXPECT_EQ(arena.alloc(SIZE_MAX - 4096), nullptr);    // rounding to 2 MiB overflows
  EXPECT_EQ(fake.alloc_calls(), 0u);                   // none of them reached the device
  EXPECT_EQ(arena.alloc(size_t{1} << 62), nullptr);    // representable, but the device says no
  EXPECT_EQ(fake.alloc_calls(), 1u);
  EXPECT_EQ(arena.bytes_reserved(), 0u);
  EXPECT_NE(arena.alloc(kMiB), nullptr);
}

TEST(DeviceArena, UnknownPointersAreIgnored) {
  FakeChunks fake;
  DeviceArena arena(fake.alloc_fn(), fake.free_fn());
  char* a = static_cast<char*>(arena.alloc(kMiB));
  char* b = static_cast<char*>(arena.alloc(kMiB));
  ASSERT_TRUE(a && b);
  int local = 0;
  EXPECT_TRUE(arena.free(nullptr));
  EXPECT_FALSE(arena.free(a + 256));  // inside a live allocation
  EXPECT_FALSE(arena.free(b + kMiB));  // the free tail
  EXPECT_FALSE(arena.free(&local));
  EXPECT_EQ(arena.bytes_in_use(), 2 * kMiB);
  EXPECT_EQ(arena.free_range_count(), 1u);
  EXPECT_TRUE(arena.free(a));
  EXPECT_FALSE(arena.free(a));  // twice
  EXPECT_EQ(arena.bytes_in_use(), kMiB);
  EXPECT_EQ(arena.free_range_count(), 2u);
  EXPECT_EQ(arena.alloc(kMiB), static_cast<void*>(a));  // A's range is handed out once, not twice
  EXPECT_EQ(arena.alloc(kMiB), static_cast<void*>(b + kMiB));
}

TEST(DeviceArena, MisalignedChunkIsGivenBack) {
  FakeChunks fake;
  DeviceArena arena(fake.alloc_fn(), fake.free_fn());
  fake.misalign = true;
  EXPECT_EQ(arena.alloc(kMiB), nullptr);
  EXPECT_EQ(fake.live_count(), 0u);
  EXPECT_EQ(arena.chunk_count(), 0u);
  fake.misalign = false;
  EXPECT_NE(arena.alloc(kMiB), nullptr);
  EXPECT_EQ(fake.bad_frees(), 0);
}

// Random alloc/free sequences: live allocations never overlap, each lies in a live chunk, its bytes
// are never touched by another one (a fill pattern checked at free), and the stats add up exactly.
TEST(DeviceArena, RandomSequencesKeepAllocationsDisjoint) {
  FakeChunks fake;
  {
    DeviceArena arena(fake.alloc_fn(), fake.free_fn());
    std::mt19937_64 rng(42);
    std::map<uintptr_t, std::pair<size_t, uint8_t>> live;  // address → (size, fill byte)
    size_t in_use = 0;
    auto check_and_free = [&](std::map<uintptr_t, std::pair<size_t, uint8_t>>::iterator it) {
      const auto* p = reinterpret_cast<const uint8_t*>(it->first);
      const size_t n = it->second.first;
      const uint8_t tag = it->second.second;
      ASSERT_TRUE(p[0] == tag && p[n / 2] == tag && p[n - 1] == tag) << "allocation overwritten";
      ASSERT_TRUE(arena.free(reinterpret_cast<void*>(it->first)));
      in_use -= n;
      live.erase(it);
    };
    for (int op = 0; op < 4000; ++op) {
      const bool do_alloc = live.empty() || rng() % 100 < (live.size() < 60 ? 60u : 40u);
      if (do_alloc) {
        const uint64_t r = rng() % 100;
        size_t n = r < 70 ? 1 + rng() % (256 * 1024) : r < 97 ? 1 + rng() % (8 * kMiB)
                                                                : kChunk - 4096 + rng() % (16 * kMiB);
        size_t got = 0;
        void* v = arena.alloc(n, &got);
        ASSERT_NE(v, nullptr);
        const auto p = reinterpret_cast<uintptr_t>(v);
        ASSERT_EQ(p % 256, 0u);
        ASSERT_GE(got, n);
        ASSERT_TRUE(fake.inside_chunk(v, got));
        const auto next = live.lower_bound(p);
        if (next != live.end()) {
          ASSERT_LE(p + got, next->first) << "overlaps the next allocation";
        }
        if (next != live.begin()) {
          const auto prev = std::prev(next);
          ASSERT_LE(prev->first + prev->second.first, p) << "overlaps the previous allocation";
        }
        const auto tag = static_cast<uint8_t>(op);
        auto* bytes = static_cast<uint8_t*>(v);
        bytes[0] = bytes[got / 2] = bytes[got - 1] = tag;
        live.emplace(p, std::make_pair(got, tag));
        in_use += got;
      } else {
        auto it = live.begin();
        std::advance(it, rng() % live.size());
        check_and_free(it);
      }
      ASSERT_EQ(arena.bytes_in_use(), in_use);
      ASSERT_EQ(arena.bytes_reserved(), fake.live_bytes());
      ASSERT_EQ(arena.chunk_count(), fake.live_count());
      ASSERT_GE(arena.bytes_reserved(), in_use);
    }
    while (!live.empty()) check_and_free(live.begin());
    EXPECT_EQ(arena.bytes_in_use(), 0u);
    EXPECT_LE(arena.chunk_count(), 1u);  // at most the cached empty chunk
    EXPECT_LE(arena.free_range_count(), 1u);
  }
  EXPECT_EQ(fake.live_count(), 0u);
  EXPECT_EQ(fake.bad_frees(), 0);
}

// 8 threads allocating and freeing at once (run under TSan too): every allocation keeps its fill
// pattern until its owner frees it, and the arena ends empty.
TEST(DeviceArena, ConcurrentAllocAndFree) {
  FakeChunks fake;
  DeviceArena arena(fake.alloc_fn(), fake.free_fn());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(1000 + t);
      std::vector<std::pair<uint8_t*, size_t>> mine;
      auto release = [&](size_t i) {
        const auto [p, n] = mine[i];
        for (size_t k = 0; k < n; k += 64)
          if (p[k] != static_cast<uint8_t>(t + 1)) {
            ++failures;
            break;
          }
        if (!arena.free(p)) ++failures;
        mine[i] = mine.back();
        mine.pop_back();
      };
      for (int op = 0; op < 2000; ++op) {
        if (mine.size() < 32 && (mine.empty() || rng() % 2)) {
          size_t got = 0;
          auto* p = static_cast<uint8_t*>(arena.alloc(1 + rng() % (64 * 1024), &got));
          if (!p || reinterpret_cast<uintptr_t>(p) % 256 != 0) {
            ++failures;
            continue;
          }
          std::memset(p, t + 1, got);
          mine.emplace_back(p, got);
        } else {
          release(rng() % mine.size());
        }
        if (op % 500 == 0) (void)arena.bytes_in_use();  // stats race with alloc/free too
      }
      while (!mine.empty()) release(mine.size() - 1);
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(arena.bytes_in_use(), 0u);
  EXPECT_LE(arena.chunk_count(), 1u);
  EXPECT_EQ(arena.bytes_reserved(), fake.live_bytes());
  EXPECT_EQ(fake.bad_frees(), 0);
}

}  // namespace

// Concurrency stress: one dc_container shared by 8 threads, each with its own CPU context, running
// load → apply → merge → free cycles (checksums on and off, whole tensors and shards, load_all)
// while other calls that take only the container (verify, listing, fingerprint checks) run at the
// same time. Every result is compared with the single-threaded answer computed first. Run under
// ThreadSanitizer by `make test-tsan` (label "stress"); the ordinary and ASan builds run it too.
#include <atomic>
#include <thread>

#include "stress_fixtures.h"

namespace {

using namespace stress;

constexpr int kThreads = 8;
constexpr uint64_t kTokens = 3;
#if defined(__SANITIZE_THREAD__)
constexpr int kRounds = 12;  // TSan runs ~10x slower; races show up in the first rounds anyway
#else
constexpr int kRounds = 100;
#endif

enum class OpenMode { Memory, Mmap, Pread };

struct Reference {
  std::vector<std::string> names;
  std::vector<Answer> answers;
};

ContainerPtr open_container(OpenMode mode, const std::vector<uint8_t>& img, const std::string& path) {
  dc_open_options o;
  dc_open_options_init(&o);
  dc_container* c = nullptr;
  dc_status s;
  if (mode == OpenMode::Memory) {
    s = dc_container_open_memory(&c, img.data(), img.size(), &o);
  } else {
    if (mode == OpenMode::Pread) o.flags |= DC_OPEN_NO_MMAP;
    s = dc_container_open(&c, path.c_str(), &o);
  }
  EXPECT_EQ(s, DC_OK) << dc_last_error_message();
  return ContainerPtr(c);
}

Reference single_threaded(const dc_container* c) {
  Reference r;
  ContextPtr ctx = cpu_context(2);
  const uint64_t n = dc_container_tensor_count(c);
  for (uint64_t i = 0; i < n; ++i) {
    dc_delta* d = nullptr;
    EXPECT_EQ(dc_delta_load_index(&d, ctx.get(), c, i, nullptr), DC_OK) << dc_last_error_message();
    DeltaPtr delta(d);
    dc_delta_info di{};
    di.struct_size = sizeof di;
    EXPECT_EQ(dc_delta_get_info(d, &di), DC_OK);
    r.names.push_back(di.name);
    r.answers.push_back(compute(d, kTokens, 100 + i));
  }
  return r;
}

class ConcurrencyStress : public ::testing::TestWithParam<OpenMode> {};

TEST_P(ConcurrencyStress, SharedContainerContextPerThread) {
  const std::vector<uint8_t> img = make_container_image();
  const std::string dir = dc_test::temp_dir("stress-concurrency");
  const std::string path = write_image(dir, "shared.dcz", img);
  ContainerPtr c = open_container(GetParam(), img, path);
  ASSERT_TRUE(c);
  const Reference ref = single_threaded(c.get());
  const uint64_t n = ref.names.size();
  ASSERT_EQ(n, 5u);
  // Sanity: the answers are not trivially zero (a broken load would also be "stable").
  for (const Answer& a : ref.answers) {
    double s = 0;
    for (float v : a.y) s += std::fabs(v);
    EXPECT_GT(s, 0.0);
  }

  std::atomic<int> mismatches{0}, failures{0}, cycles{0};
  auto worker = [&](int tid) {
    ContextPtr ctx = cpu_context(2);
    for (int round = 0; round < kRounds; ++round) {
      for (uint64_t k = 0; k < n; ++k) {
        const uint64_t i = (k + (uint64_t)tid + (uint64_t)round) % n;
        dc_load_options lo;
        dc_load_options_init(&lo);
        lo.flags = (round + tid) % 2 ? DC_LOAD_SKIP_CHECKSUM : DC_LOAD_VERIFY_CHECKSUM;
        dc_delta* d = nullptr;
        // Alternate loading by index and by name.
        const dc_status s = (round % 2) ? dc_delta_load(&d, ctx.get(), c.get(), ref.names[i].c_str(), &lo)
                                        : dc_delta_load_index(&d, ctx.get(), c.get(), i, &lo);
        if (s != DC_OK) {
          ++failures;
          ADD_FAILURE() << "thread " << tid << " load " << ref.names[i] << ": " << dc_last_error_message();
          continue;
        }
        DeltaPtr delta(d);
        const Answer a = compute(d, kTokens, 100 + i);
        if (rel_diff(a.y, ref.answers[i].y) > 1e-6 || rel_diff(a.merged, ref.answers[i].merged) > 1e-6) ++mismatches;
        ++cycles;
      }
      // Thread-local error messages: a failure names this thread's request, not another's.
      const std::string missing = "missing-tensor-of-thread-" + std::to_string(tid);
      dc_delta* none = nullptr;
      if (dc_delta_load(&none, ctx.get(), c.get(), missing.c_str(), nullptr) != DC_ERR_NOT_FOUND || none != nullptr ||
          std::string(dc_last_error_message()).find(missing) == std::string::npos)
        ++failures;
      // Calls that take only the container, concurrently with the loads of other threads.
      if (tid == 0 && dc_container_verify(c.get()) != DC_OK) ++failures;
      if (tid == 1) {
        std::vector<dc_delta*> all(n, nullptr);
        if (dc_delta_load_all(all.data(), ctx.get(), c.get(), nullptr) != DC_OK) ++failures;
        for (uint64_t j = 0; j < n; ++j) {
          if (!all[j]) continue;
          const Answer a = compute(all[j], kTokens, 100 + j);
          if (rel_diff(a.y, ref.answers[j].y) > 1e-6) ++mismatches;
          dc_delta_free(all[j]);
        }
      }
      if (tid == 2) {
        const std::vector<uint8_t> base_bytes(96 * 80 * 2, 7), wrong(96 * 80 * 2, 8);
        if (dc_container_check_base_tensor(c.get(), "l0.q.weight", base_bytes.data(), base_bytes.size()) != DC_OK ||
            dc_container_check_base_tensor(c.get(), "l0.q.weight", wrong.data(), wrong.size()) != DC_ERR_BASE_MISMATCH)
          ++failures;
      }
      if (tid == 3) {
        for (uint64_t j = 0; j < n; ++j) {
          dc_tensor_info ti{};
          ti.struct_size = sizeof ti;
          uint64_t idx = 99;
          if (dc_container_tensor_info(c.get(), j, &ti) != DC_OK || ref.names[j] != ti.name ||
              dc_container_find_tensor(c.get(), ti.name, &idx) != DC_OK || idx != j)
            ++failures;
        }
      }
      if (tid == 4) {
        // Tensor-parallel halves of the first layer add up to the whole answer.
        std::vector<float> y(kTokens * 96, 0.f);
        const std::vector<float> x = input(kTokens, 80, 100);
        for (uint32_t part = 0; part < 2; ++part) {
          dc_load_options lo;
          dc_load_options_init(&lo);
          lo.shard = dc_shard{DC_SHARD_COLS, part, 2, 0, 0};
          dc_delta* d = nullptr;
          if (dc_delta_load(&d, ctx.get(), c.get(), "l0.q.weight", &lo) != DC_OK) {
            ++failures;
            continue;
          }
          DeltaPtr delta(d);
          dc_apply_params p;
          dc_apply_params_init(&p);
          p.m = kTokens;
          p.x = x.data() + part * 40;
          p.ldx = 80;
          p.y = y.data();
          if (dc_apply_delta_linear(d, &p) != DC_OK) ++failures;
        }
        if (rel_diff(y, ref.answers[0].y) > 1e-5) ++mismatches;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(cycles.load(), kThreads * kRounds * (int)n);
}

INSTANTIATE_TEST_SUITE_P(OpenModes, ConcurrencyStress,
                         ::testing::Values(OpenMode::Memory, OpenMode::Mmap, OpenMode::Pread),
                         [](const ::testing::TestParamInfo<OpenMode>& i) {
                           return i.param == OpenMode::Memory ? "memory" : i.param == OpenMode::Mmap ? "mmap" : "pread";
                         });

// Deltas outlive their context and container, and are used and freed on another thread: the
// device is reference-counted, so the last free (wherever it happens) releases it.
TEST(ConcurrencyStress, DeltasHandedToAnotherThreadAfterTheirContextIsDestroyed) {
  const std::vector<uint8_t> img = make_container_image();
  dc_container* rc = nullptr;
  ASSERT_EQ(dc_container_open_memory(&rc, img.data(), img.size(), nullptr), DC_OK);
  ContainerPtr c(rc);
  const Reference ref = single_threaded(c.get());
  const uint64_t n = ref.names.size();
  for (int round = 0; round < 4; ++round) {
    std::vector<std::vector<dc_delta*>> per_thread(kThreads);
    std::vector<std::thread> producers;
    for (int t = 0; t < kThreads; ++t)
      producers.emplace_back([&, t] {
        ContextPtr ctx = cpu_context(1);
        per_thread[t].assign(n, nullptr);
        EXPECT_EQ(dc_delta_load_all(per_thread[t].data(), ctx.get(), c.get(), nullptr), DC_OK);
      });  // the context is destroyed here, before its deltas are used
    for (auto& t : producers) t.join();
    if (round == 3) c.reset();  // and the container too, in the last round
    std::vector<std::thread> consumers;
    std::atomic<int> mismatches{0};
    for (int t = 0; t < kThreads; ++t)
      consumers.emplace_back([&, t] {
        const std::vector<dc_delta*>& ds = per_thread[(t + 1) % kThreads];  // another thread's deltas
        for (uint64_t i = 0; i < n; ++i) {
          if (!ds[i]) continue;
          const Answer a = compute(ds[i], kTokens, 100 + i);
          // 1-thread contexts vs the 2-thread reference: the sums may be ordered differently.
          if (rel_diff(a.y, ref.answers[i].y) > 1e-5) ++mismatches;
        }
      });
    for (auto& t : consumers) t.join();
    EXPECT_EQ(mismatches.load(), 0);
    std::vector<std::thread> freers;
    for (int t = 0; t < kThreads; ++t)
      freers.emplace_back([&, t] {
        for (dc_delta* d : per_thread[t]) dc_delta_free(d);
      });
    for (auto& t : freers) t.join();
  }
}

}  // namespace

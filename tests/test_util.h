// Helpers shared by the unit tests.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

namespace dc_test {

// A fresh directory for one test's files, under $DC_TEST_TMP (or /tmp).
inline std::string temp_dir(const std::string& name) {
  const char* root = std::getenv("DC_TEST_TMP");
  std::string dir = std::string(root ? root : "/tmp") + "/" + name + "-" + std::to_string(getpid());
  std::string cmd = "mkdir -p '" + dir + "'";
  if (std::system(cmd.c_str()) != 0) std::abort();
  return dir;
}

inline std::vector<float> random_floats(uint64_t n, uint64_t seed, float scale = 1.f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

}  // namespace dc_test

// Synthetic deltas with exact packed sizes and no SVD: bands from dc::bands_for_shape, random codes
// and quantization parameters (valid: zero points in range, padding codes 0). Shared by the pool
// benchmarks (footprint.cpp, decode_step_bench.cu).
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/half.h"
#include "common/packed_tensor.h"
#include "fixtures/random_packed.h"

namespace bench_pool {

// A low-rank PackedTensor with the given bands and random (valid) content.
inline dc::PackedTensor random_lowrank(const std::string& name, uint64_t rows, uint64_t cols,
                                const std::vector<dc::BandDesc>& bands, uint64_t seed) {
  std::mt19937_64 rng(seed);
  dc::PackedTensor t = dc_fixture::empty_tensor(name, rows, cols, DC_KIND_LOWRANK, DC_DTYPE_F16);
  t.rank = bands.empty() ? 0 : bands.back().rank_end;
  for (uint32_t k = 0; k < t.rank; ++k) t.sigma.push_back(1.0f / (1.0f + k));
  for (const dc::BandDesc& d : bands) {
    dc::PackedBand b;
    b.desc = d;
    const uint32_t r = d.rank();
    const uint32_t mask = d.bits == 16 ? 0xffffu : (1u << d.bits) - 1;
    auto fill_codes = [&](std::vector<uint32_t>& words, uint64_t n_rows, uint64_t len) {
      const uint64_t w = dc_row_words(len, d.bits);
      words.assign(n_rows * w, 0);
      for (uint64_t i = 0; i < n_rows; ++i) {
        uint32_t* row = words.data() + i * w;
        if (d.bits == 16) {
          for (uint64_t j = 0; j < len; ++j)
            reinterpret_cast<uint16_t*>(row)[j] = dc::float_to_half(0.01f * (float)((rng() % 200) - 100));
        } else {
          for (uint64_t j = 0; j < len; ++j) dc_pack_code(row, j, d.bits, (uint32_t)rng() & mask);
        }
      }
    };
    auto fill_qparams = [&](std::vector<dc_qparam>& q, uint64_t n_rows, uint64_t len) {
      if (d.bits == 16) return;
      q.resize(n_rows * dc_row_groups(len, d.group_size));
      for (auto& p : q) {
        p.scale = dc::float_to_half(0.001f + 0.001f * (float)(rng() % 100));
        p.zero = dc::float_to_half((float)(rng() & mask));
      }
    };
    fill_codes(b.v_codes, r, cols);
    fill_qparams(b.v_qparams, r, cols);
    fill_codes(b.u_codes, rows, r);
    fill_qparams(b.u_qparams, rows, r);
    t.bands.push_back(std::move(b));
  }
  t.validate();
  return t;
}

// A dense fp16 tensor of N(0, 0.01) values (the tests' generator).
inline dc::PackedTensor random_dense(const std::string& name, uint64_t rows, uint64_t cols, uint64_t seed) {
  dc::PackedTensor t = dc_fixture::random_dense(name, rows, cols, DC_DTYPE_F16, seed);
  t.validate();
  return t;
}

}  // namespace bench_pool

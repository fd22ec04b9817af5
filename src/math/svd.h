// Thin SVD through LAPACK (dgesdd, or the Gram matrix's top eigenpairs when that is safe and
// cheaper; DELTACOME_SVD_FULL=1 forces dgesdd). Row-major in and out.
#pragma once

#include <cstdint>
#include <vector>

namespace dc {

struct Svd {
  uint64_t m = 0, n = 0, k = 0;  // A is m×n, k singular triplets kept
  std::vector<float> u;          // m×k row-major (column j = left singular vector j)
  std::vector<float> s;          // k, descending
  std::vector<float> vt;         // k×n row-major (row j = right singular vector j)
};

// SVD of the row-major m×n matrix `a`, keeping the top `k_max` triplets (0 = all).
// Computed in float64 (the delta is small relative to the weights; fp32 SVD loses the tail).
Svd svd_topk(const float* a, uint64_t m, uint64_t n, uint64_t k_max);

}  // namespace dc

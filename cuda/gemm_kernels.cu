// Dequantize-to-scratch kernels, the portable tiled GEMM and elementwise helpers (see the header).
#include <algorithm>

#include "gemm_kernels.cuh"

namespace dcg {
namespace {

unsigned grid_for(uint64_t n) { return (unsigned)std::max<uint64_t>(1, std::min<uint64_t>((n + 255) / 256, 8192)); }

__device__ __forceinline__ float code_value(const uint32_t* row, const dc_qparam* qp, uint32_t bits, uint32_t gs,
                                            uint64_t i) {
  if (bits == 16) return f16_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
  const dc_qparam q = qp[i / gs];
  return f16_to_f32(q.scale) * ((float)dc_unpack_code(row, i, bits) - f16_to_f32(q.zero));
}

__global__ void dequant_v_kernel(DeltaDesc d, uint32_t band, void* out, int odt, uint64_t sk, uint64_t sc, float scale) {
  const BandDesc& b = d.bands[band];
  const uint64_t rb = b.r1 - b.r0, n = rb * d.v_len;
  for (uint64_t e = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; e < n; e += (uint64_t)gridDim.x * blockDim.x) {
    const uint64_t j = e / d.v_len, p = e % d.v_len;
    const uint64_t c = d.perm ? (uint64_t)d.perm[p] : p - d.v_col_offset;
    if (c >= d.cols) continue;  // outside the shard (DC_PERM_NONE, or p < offset wrapping)
    const uint64_t k = b.r0 + j;
    const float v = code_value(b.v_codes + j * b.v_row_words, b.v_qp + j * b.v_row_groups, b.bits, b.group_size, p);
    store_any(out, k * sk + c * sc, odt, scale * d.sigma[k] * v);
  }
}

__global__ void dequant_u_kernel(DeltaDesc d, uint32_t band, void* out, int odt, uint64_t ld) {
  const BandDesc& b = d.bands[band];
  const uint64_t rb = b.r1 - b.r0, n = rb * d.rows;
  for (uint64_t e = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; e < n; e += (uint64_t)gridDim.x * blockDim.x) {
    const uint64_t o = e / rb, j = e % rb;
    store_any(out, o * ld + b.r0 + j, odt,
              code_value(b.u_codes + o * b.u_row_words, b.u_qp + o * b.u_row_groups, b.bits, b.group_size, j));
  }
}

// 64×64 output tile per block of 256 threads (4×4 each), K in steps of 16, operands staged as fp32.
constexpr int kTM = 64, kTN = 64, kTK = 16;

__global__ void __launch_bounds__(256) gemm_nt_kernel(uint64_t M, uint64_t N, uint64_t K, const void* A, uint64_t lda,
                                                     const void* B, uint64_t ldb, int abdt, void* C, int cdt,
                                                     uint64_t ldc, float alpha, float beta) {
  __shared__ float As[kTK][kTM + 1];
  __shared__ float Bs[kTK][kTN + 1];
  const uint64_t m0 = (uint64_t)blockIdx.y * kTM, n0 = (uint64_t)blockIdx.x * kTN;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[4][4] = {};
  for (uint64_t k0 = 0; k0 < K; k0 += kTK) {
    for (int e = threadIdx.x; e < kTM * kTK; e += 256) {
      const int r = e / kTK, kk = e % kTK;  // consecutive threads walk K: coalesced row reads
      const uint64_t gm = m0 + r, gk = k0 + kk, gn = n0 + r;
      As[kk][r] = (gm < M && gk < K) ? load_any(A, gm * lda + gk, abdt) : 0.f;
      Bs[kk][r] = (gn < N && gk < K) ? load_any(B, gn * ldb + gk, abdt) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = As[kk][ty * 4 + i];
        b[i] = Bs[kk][tx * 4 + i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint64_t gm = m0 + ty * 4 + i, gn = n0 + tx * 4 + j;
      if (gm < M && gn < N) {
        const uint64_t at = gm * ldc + gn;
        const float prev = beta != 0.f ? beta * load_any(C, at, cdt) : 0.f;
        store_any(C, at, cdt, prev + alpha * acc[i][j]);
      }
    }
}

__global__ void store_f32_kernel(const float* src, uint64_t lds, void* dst, int ddt, uint64_t ldd, uint64_t n_rows,
                                 uint64_t n_cols, bool accumulate) {
  const uint64_t n = n_rows * n_cols;
  for (uint64_t e = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; e < n; e += (uint64_t)gridDim.x * blockDim.x) {
    const uint64_t i = e / n_cols, j = e % n_cols;
    const float v = src[i * lds + j];
    store_any(dst, i * ldd + j, ddt, accumulate ? load_any(dst, i * ldd + j, ddt) + v : v);
  }
}

__global__ void merge_elementwise_kernel(DeltaDesc d, void* W, int wdt, uint64_t ld, float scale) {
  const uint64_t n = d.rows * d.cols;
  for (uint64_t e = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; e < n; e += (uint64_t)gridDim.x * blockDim.x) {
    const uint64_t o = e / d.cols, c = e % d.cols;
    float delta;
    if (d.kind == DC_KIND_BITDELTA) {
      const uint32_t bit = dc_unpack_code(d.signs + o * d.sign_row_words, c, 1);
      delta = bit ? d.bitdelta_scale : -d.bitdelta_scale;
    } else {
      delta = load_any(d.dense, e, d.dtype);
    }
    store_any(W, o * ld + c, wdt, load_any(W, o * ld + c, wdt) + scale * delta);
  }
}

}  // namespace

cudaError_t launch_dequant_v(cudaStream_t s, const DeltaDesc& d, void* out, int odt, uint64_t sk, uint64_t sc,
                             float scale) {
  for (uint32_t b = 0; b < d.n_bands; ++b) {
    const uint64_t n = (uint64_t)(d.bands[b].r1 - d.bands[b].r0) * d.v_len;
    dequant_v_kernel<<<grid_for(n), 256, 0, s>>>(d, b, out, odt, sk, sc, scale);
  }
  return cudaGetLastError();
}

cudaError_t launch_dequant_u(cudaStream_t s, const DeltaDesc& d, void* out, int odt, uint64_t ld) {
  for (uint32_t b = 0; b < d.n_bands; ++b) {
    const uint64_t n = (uint64_t)(d.bands[b].r1 - d.bands[b].r0) * d.rows;
    dequant_u_kernel<<<grid_for(n), 256, 0, s>>>(d, b, out, odt, ld);
  }
  return cudaGetLastError();
}

cudaError_t launch_gemm_nt(cudaStream_t s, uint64_t M, uint64_t N, uint64_t K, const void* A, uint64_t lda,
                           const void* B, uint64_t ldb, int abdt, void* C, int cdt, uint64_t ldc, float alpha,
                           float beta) {
  const dim3 grid((unsigned)((N + kTN - 1) / kTN), (unsigned)((M + kTM - 1) / kTM));
  gemm_nt_kernel<<<grid, 256, 0, s>>>(M, N, K, A, lda, B, ldb, abdt, C, cdt, ldc, alpha, beta);
  return cudaGetLastError();
}

cudaError_t launch_store_f32(cudaStream_t s, const float* src, uint64_t lds, void* dst, int ddt, uint64_t ldd,
                             uint64_t n_rows, uint64_t n_cols, bool accumulate) {
  store_f32_kernel<<<grid_for(n_rows * n_cols), 256, 0, s>>>(src, lds, dst, ddt, ldd, n_rows, n_cols, accumulate);
  return cudaGetLastError();
}

cudaError_t launch_merge_elementwise(cudaStream_t s, const DeltaDesc& d, void* W, int wdt, uint64_t ld, float scale) {
  merge_elementwise_kernel<<<grid_for(d.rows * d.cols), 256, 0, s>>>(d, W, wdt, ld, scale);
  return cudaGetLastError();
}

}  // namespace dcg

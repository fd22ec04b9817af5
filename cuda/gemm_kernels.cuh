// Prefill / merge building blocks: dequantizing packed bands into a dense scratch matrix, the
// portable tiled GEMM (the HIP build's only GEMM, and the CUDA build's fallback), and small
// elementwise kernels. All enqueue on `stream` without synchronising.
#pragma once

#include "common.cuh"

namespace dcg {

// out[k·sk + c·sc] = scale·σ_k·V̂[k][p] for every V position p of every band, column c = the x
// index that p reads (perm / offset); positions outside the shard are skipped (out pre-zeroed).
cudaError_t launch_dequant_v(cudaStream_t s, const DeltaDesc& d, void* out, int odt, uint64_t sk, uint64_t sc,
                             float scale);
// out[o·ld + k] = Û[o][k] for every band (o < rows, k < rank).
cudaError_t launch_dequant_u(cudaStream_t s, const DeltaDesc& d, void* out, int odt, uint64_t ld);
// C[M×N] = alpha·A[M×K]·B[N×K]ᵀ + beta·C, row-major, A/B of dtype abdt, C of dtype cdt, fp32 math.
cudaError_t launch_gemm_nt(cudaStream_t s, uint64_t M, uint64_t N, uint64_t K, const void* A, uint64_t lda,
                           const void* B, uint64_t ldb, int abdt, void* C, int cdt, uint64_t ldc, float alpha,
                           float beta);
// dst[i][j] (dtype ddt, ld ldd) = src (fp32, ld lds) [+ dst if accumulate], i < n_rows, j < n_cols.
cudaError_t launch_store_f32(cudaStream_t s, const float* src, uint64_t lds, void* dst, int ddt, uint64_t ldd,
                             uint64_t n_rows, uint64_t n_cols, bool accumulate);
// W[o][c] += scale·bitdelta_scale·(2·bit − 1) (BitDelta) or scale·D[o][c] (dense).
cudaError_t launch_merge_elementwise(cudaStream_t s, const DeltaDesc& d, void* W, int wdt, uint64_t ld, float scale);

}  // namespace dcg

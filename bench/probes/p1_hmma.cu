// Probe (stand-alone, not part of the build): phase 1 of a lone M = 1 delta — t = x·V̂ for 8 rows of
// 2-bit codes (group 128) per block, 4096 inputs — on the f16 tensor cores against the fp32 decode
// loop the staged kernel runs (packed_row_loop_s). Written offline in the twenty-first session to
// answer, in one device call, whether the tensor-core form of phase 1 is worth building into
// persist_kernel (bench/RESULTS-h100.md, "Next: phase 1 on the f16 tensor cores"):
//   nvcc -O3 -std=c++17 -arch=sm_90 -Icuda -Isrc -Iinclude bench/probes/p1_hmma.cu -o /tmp/p1_hmma && /tmp/p1_hmma
// Each block holds 8 V̂ rows' codes and parameters in shared memory (as the staged kernel does after
// its prologue), then — timed with clock64 by thread 0, from its codes being in to t being written —
// stages x and computes its 8 columns of t. 132 blocks of 256 threads (one per SM, as at M = 1).
// Variants:
//   fp32: x staged as fp32 blocks of 32 with their sums; warp w decodes row w, 32 lanes over the
//         row's 128 blocks of 32 codes, three instructions a code (packed_row_loop_s's loop);
//   hmma: x staged as f16 pairs in the tensor-core order, each chunk of 128 inputs scaled by a power
//         of two per code position (tools/hmma_p1_check.py checks this layout on the host); warp w
//         takes chunks 4w … 4w + 3 of all 8 rows: per chunk one 8-byte load of a lane's two code
//         words, then per position p = 0..7 two LOP3 and two HSUB2 (the codes of 16 inputs of its
//         row as exact f16 pairs), one 8-byte load of x's pairs and one mma.m16n8k16 (even and odd
//         positions on two accumulators: two chains of four MMAs, not one of eight); then the
//         group's scale and zero point; the 8 warps' partial sums meet in shared memory.
//   hmma2: hmma with the scaling as one multiply by an exact power of two (not ldexpf) and a warp's
//         four chunks issued position-major (eight independent chains of four MMAs in flight).
//   imma: the batch kernel's int8 form (mma_int8.cuh) — the codes as A, 16 V̂ rows a tile, x's three
//         base-256 digits as B columns — on the same codes a block read as 16 rows over half of x
//         (see p1_imma), x staged for the block (fp32 stage, block-wide maximum, digits by four warps);
//   immaw (twenty-third session): imma with each warp loading and digitizing only its own chunks
//         straight from global memory (its own power of two, one redux; no block barrier before
//         the MMAs).
// Phase 2's 2-bit band (32 output rows × 1024 ranks a block) is timed the same five ways.
// It prints each variant's median and maximum cycles per block, the median cycles to the end of
// staging, and its largest error against a float64 reference on the host.
// Measured (H100 80GB HBM3, twenty-second session, two runs alike): phase 1 fp32 3000 cycles (staging
// 1198), hmma 4720 (2420), hmma2 4591 (2042); phase 2 fp32 2600 (808), hmma 3419 (1312), hmma2
// 3177 (1209). The tensor-core forms lose in both parts: their staging (scaling, f16 pairs in the
// fragment order) costs more than the fp32 blocks, and their MMA part (2.3–2.5k cycles against
// the fp32 loop's 1.8k in phase 1) is slower too, although by the code its loop has about half the
// instructions a code; whole kernels (ncu, with the untimed code loads) executed 1.23M (hmma) and
// 1.02M (hmma2) instructions against 0.77M (fp32). Position-major issue did not help the MMA part,
// so it is not the chains' latency; a likely bound is the tensor pipe itself, which at M = 1 does
// 16× the useful work (fifteen of A's sixteen rows are padding). So the staged kernel keeps its
// fp32 loops (bench/RESULTS-h100.md, twenty-second session).
// Measured (twenty-third session, same GPU, two runs alike): phase 1 imma 4058 (staging 2561), immaw
// 2034 (1014) against fp32 2978 (1189); phase 2 imma 3865 (2512), immaw 2304 (1343) against fp32 2606
// (814). immaw's lead did not survive inside the staged kernel (four forms, M=1 9.70–10.07 µs against
// 8.21–8.41; bench/results/wip-p1-imma.patch): there its staging and MMA code ran cold from the
// instruction cache (ncu: 31 % "no instruction" stalls).
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "mma_int8.cuh"
#include "vec_dot.cuh"
#include "../graph_timer.h"

namespace {

using namespace dcg;

constexpr int kK = 4096;                  // inputs (columns of V̂)
constexpr int kRows = 8;                  // V̂ rows (columns of t) per block
constexpr int kBlocks = 132;              // one block per SM
constexpr int kProbeThreads = 256;             // eight warps
constexpr int kRowWords = kK / 16;        // 2-bit codes: 16 a word
constexpr int kGroups = kK / 128;         // group size 128
constexpr int kChunks = kK / 128;         // tensor-core chunks of 128 inputs (one group each)
constexpr int kNb = kK / 32;              // blocks of 32 inputs

struct Args {
  const uint32_t* codes;  // [block][row][kRowWords]
  const uint32_t* qp;     // [block][row][kGroups] (dc_qparam words)
  const __half* x;        // [kK]
  float* t;               // [block][row]
  long long* cycles;      // [block]: to t written; [kBlocks + block]: to x staged
};

// The block's codes and parameters into shared memory (untimed: the staged kernel's prologue).
__device__ void load_codes(const Args& a, uint32_t* codes, uint32_t* qp) {
  const uint32_t* c = a.codes + (size_t)blockIdx.x * kRows * kRowWords;
  const uint32_t* q = a.qp + (size_t)blockIdx.x * kRows * kGroups;
  for (int i = threadIdx.x; i < kRows * kRowWords; i += kProbeThreads) codes[i] = c[i];
  for (int i = threadIdx.x; i < kRows * kGroups; i += kProbeThreads) qp[i] = q[i];
}

// One 2-bit row's blocks k = k0, k0 + step, … < nblk against staged fp32 blocks: the loop of the
// staged kernel's packed_row_loop_s<2> (row, q, x: shared-memory addresses; group 128).
__device__ __forceinline__ float row_loop_2bit(uint32_t row, uint32_t q, uint32_t x, int k0, int step, int nblk) {
  float acc = 0.f;
#pragma unroll 1
  for (int k = k0; k < nblk; k += step) {
    uint32_t cw[2];
    lds_block<2>(row + k * 8, cw);
    float s, z;
    load_qp_word(lds32(q + 4 * (k >> 2)), s, z);
    acc = fmaf(s, lds_block_dot_z<2>(cw, z, x + k * (kPitch * 4)), acc);
  }
  return acc;
}

// Elements 8e … 8e + 7 of an fp16 vector (16-byte aligned) as floats.
__device__ __forceinline__ void load_half8(const __half* p, int e, float v[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p + (size_t)e * 8);
  const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}
// The same of an fp32 vector (32-byte aligned).
__device__ __forceinline__ void load_float8(const float* p, int e, float v[8]) {
  const float4 p0 = reinterpret_cast<const float4*>(p)[2 * e], p1 = reinterpret_cast<const float4*>(p)[2 * e + 1];
  v[0] = p0.x, v[1] = p0.y, v[2] = p0.z, v[3] = p0.w, v[4] = p1.x, v[5] = p1.y, v[6] = p1.z, v[7] = p1.w;
}
// Elements 8e … 8e + 7 into fp32 blocks of 32 at xs with each block's sum at [32] (the staged
// kernel's stage_row0 and stage_t); whole warps call it (the sum is a shuffle over 4 lanes).
__device__ __forceinline__ void stage8(float* xs, int e, const float v[8]) {
  const float sum = seg_sum<4>(((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])));
  float* dst = xs + (e >> 2) * kPitch;
  float4* d4 = reinterpret_cast<float4*>(dst + (e & 3) * 8);
  d4[0] = make_float4(v[0], v[1], v[2], v[3]);
  d4[1] = make_float4(v[4], v[5], v[6], v[7]);
  if ((e & 3) == 0) dst[32] = sum;
}
// m and the eight |v| as float bits, the largest (non-negative floats order as integers).
__device__ __forceinline__ uint32_t max_bits8(uint32_t m, const float v[8]) {
#pragma unroll
  for (int i = 0; i < 8; ++i) m = max(m, __float_as_uint(fabsf(v[i])));
  return m;
}

// The block's N sums sh (shared memory, complete once every thread is here) written to out (the
// block's N entries), then the block's cycles since t0 recorded.
template <int N>
__device__ __forceinline__ void write_sums(const float* sh, float* out, long long* cycles, long long t0) {
  __syncthreads();
  if (threadIdx.x < N) out[blockIdx.x * N + threadIdx.x] = sh[threadIdx.x];
  __syncthreads();
  if (threadIdx.x == 0) cycles[blockIdx.x] = clock64() - t0;
}

__global__ void __launch_bounds__(kProbeThreads, 1) p1_fp32(Args a) {
  __shared__ uint32_t codes[kRows * kRowWords], qp[kRows * kGroups];
  __shared__ __align__(16) float xs[kNb * kPitch];
  load_codes(a, codes, qp);
  __syncthreads();
  const long long t0 = clock64();
  // x as fp32 blocks of 32 with their sums at [32] (the staged kernel's stage_row0)
  for (int e = threadIdx.x; e < kNb * 4; e += kProbeThreads) {
    float v[8];
    load_half8(a.x, e, v);
    stage8(xs, e, v);
  }
  __syncthreads();
  if (threadIdx.x == 0) a.cycles[kBlocks + blockIdx.x] = clock64() - t0;  // staged
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  const uint32_t row = smem_addr(codes + w * kRowWords), q = smem_addr(qp + w * kGroups), x = smem_addr(xs);
  const float acc = seg_sum<32>(row_loop_2bit(row, q, x, lane, 32, kNb));
  if (lane == 0) a.t[blockIdx.x * kRows + w] = acc;
  __syncthreads();
  if (threadIdx.x == 0) a.cycles[blockIdx.x] = clock64() - t0;
}

__device__ __forceinline__ void mma_f16(float d[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// (1024 + c_lo·2^sh, 1024 + c_hi·2^sh) − (1024, 1024): exact.
__device__ __forceinline__ uint32_t minus_1024(uint32_t v) {
  uint32_t r;
  asm("sub.f16x2 %0, %1, %2;" : "=r"(r) : "r"(v), "r"(0x64006400u));
  return r;
}
// The code position p's shift once its word is chosen (p ≥ 5: the word shifted right by 8).
__host__ __device__ constexpr int pos_shift(int p) { return p <= 4 ? 2 * p : 2 * p - 8; }

// A chunk's 128 inputs are staged by 16 consecutive threads, 8 each (v): their sum (s) and the
// chunk's scale exponent E, max|v|·2^(E + 8) < 2^14 (no f16 overflow; small chunks keep their bits).
__device__ __forceinline__ int chunk_scale(const float v[8], float& s) {
  float m = 0.f;
  s = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    m = fmaxf(m, fabsf(v[i]));
    s += v[i];
  }
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) {  // the chunk's 16 threads (aligned in the warp)
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    s += __shfl_xor_sync(0xffffffffu, s, o);
  }
  int ex;
  frexpf(m, &ex);  // m < 2^ex (ex = 0 for an all-zero chunk)
  return 6 - ex;
}

// One chunk of a lane's row: cw its words 2j, 2j + 1; A's pairs for position p at a + p·pstride.
// d[0], d[1]: D[g][2j], D[g][2j + 1] (even and odd positions on two accumulators: two chains of
// four MMAs, not one of eight).
__device__ __forceinline__ void chunk_mma(uint2 cw, uint32_t a, uint32_t pstride, float d[2]) {
  const uint32_t s0 = cw.x >> 8, s1 = cw.y >> 8;
  float de[4] = {0.f, 0.f, 0.f, 0.f}, dd[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int p = 0; p < 8; ++p) {
    const uint32_t m = (3u << pos_shift(p)) * 0x10001u;
    const uint32_t b0 = minus_1024(((p <= 4 ? cw.x : s0) & m) | 0x64006400u);
    const uint32_t b1 = minus_1024(((p <= 4 ? cw.y : s1) & m) | 0x64006400u);
    const uint2 av = lds64(a + p * pstride);
    mma_f16(p % 2 ? dd : de, av.x, av.x, av.y, av.y, b0, b1);
  }
  d[0] = de[0] + dd[0];
  d[1] = de[1] + dd[1];
}

// v·2^k for a power of two in the normal range (k in [-126, 127]): one multiply, exact wherever
// ldexpf's result is normal (the probe's data; a kernel would clamp k for chunks far below 2^-100)
__device__ __forceinline__ float times_pow2(float v, int k) { return v * __int_as_float((k + 127) << 23); }

// kV2 (second form): NC chunks of a lane's row at once, position-major — NC·2 independent chains of
// four MMAs in flight instead of one chunk's two, whose sums the in-order warp waited on before
// starting the next chunk. cw[c]: chunk c's words 2j, 2j + 1; A's pairs of chunk c, position p at
// a + c·cstride + p·pstride.
template <int NC>
__device__ __forceinline__ void chunks_mma(const uint2 (&cw)[NC], uint32_t a, uint32_t cstride, uint32_t pstride,
                                           float (&d)[NC][2]) {
  float de[NC][4], dd[NC][4];
#pragma unroll
  for (int c = 0; c < NC; ++c)
#pragma unroll
    for (int i = 0; i < 4; ++i) de[c][i] = dd[c][i] = 0.f;
#pragma unroll
  for (int p = 0; p < 8; ++p) {
    const uint32_t m = (3u << pos_shift(p)) * 0x10001u;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const uint32_t b0 = minus_1024(((p <= 4 ? cw[c].x : cw[c].x >> 8) & m) | 0x64006400u);
      const uint32_t b1 = minus_1024(((p <= 4 ? cw[c].y : cw[c].y >> 8) & m) | 0x64006400u);
      const uint2 av = lds64(a + c * cstride + p * pstride);
      mma_f16(p % 2 ? dd[c] : de[c], av.x, av.x, av.y, av.y, b0, b1);
    }
  }
#pragma unroll
  for (int c = 0; c < NC; ++c) {
    d[c][0] = de[c][0] + dd[c][0];
    d[c][1] = de[c][1] + dd[c][1];
  }
}

template <bool kV2>
__global__ void __launch_bounds__(kProbeThreads, 1) p1_hmma(Args a) {
  __shared__ uint32_t codes[kRows * kRowWords], qp[kRows * kGroups];
  __shared__ __align__(16) uint2 xh[kChunks * 8 * 4];  // [chunk][p][j]: (a0, a2) pairs
  __shared__ float xsum[kChunks], xinv[kChunks], tsum[kRows];
  load_codes(a, codes, qp);
  if (threadIdx.x < kRows) tsum[threadIdx.x] = 0.f;
  __syncthreads();
  const long long t0 = clock64();
  // x: thread e takes inputs 8e … 8e + 7 of chunk c = e / 16; within the chunk, word w = (8e % 128) / 16
  // of a row holds them, in its low (h = 0) or high (h = 1) half; lane pair (h = 0, h = 1) meets by a
  // shuffle and the h = 0 lane stores positions 0..3, the h = 1 lane 4..7 (tools/hmma_p1_check.py)
  for (int e = threadIdx.x; e < kK / 8; e += kProbeThreads) {
    float v[8];
    load_half8(a.x, e, v);
    float s;
    const int E = chunk_scale(v, s);
    const int c = e / 16, q0 = (e * 8) % 128, w = q0 / 16, hh = (q0 % 16) / 8, j = w / 2, which = w % 2;
    uint32_t mine[8];
#pragma unroll
    for (int p = 0; p < 8; ++p)
      mine[p] = __half_as_ushort(
          __float2half_rn(kV2 ? times_pow2(v[p], E + 8 - pos_shift(p)) : ldexpf(v[p], E + 8 - pos_shift(p))));
    char* base = reinterpret_cast<char*>(xh);
#pragma unroll
    for (int p = 0; p < 8; ++p) {
      const uint32_t other = __shfl_xor_sync(0xffffffffu, mine[p], 1);
      if ((p < 4) == (hh == 0)) {
        const uint32_t pair = hh == 0 ? (mine[p] | other << 16) : (other | mine[p] << 16);
        *reinterpret_cast<uint32_t*>(base + ((c * 8 + p) * 4 + j) * 8 + which * 4) = pair;
      }
    }
    if (e % 16 == 0) {
      xsum[c] = s;
      xinv[c] = ldexpf(1.f, -(E + 8));
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) a.cycles[kBlocks + blockIdx.x] = clock64() - t0;  // staged
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, j = lane % 4;
  const uint32_t crow = smem_addr(codes + g * kRowWords), xa = smem_addr(xh);
  float t0r = 0.f, t1r = 0.f;  // rows 2j, 2j + 1 (lanes 0..3)
  if constexpr (kV2) {
    constexpr int NC = kChunks / 8;
    const int c0 = w * NC;
    uint2 cw[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) cw[c] = lds64(crow + ((c0 + c) * 8 + 2 * j) * 4);
    float d[NC][2];
    chunks_mma<NC>(cw, xa + (c0 * 32 + j) * 8, 32 * 8, 32, d);
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      float sa, za, sb, zb;
      load_qp_word(qp[(2 * j) * kGroups + c0 + c], sa, za);
      load_qp_word(qp[(2 * j + 1) * kGroups + c0 + c], sb, zb);
      const float inv = xinv[c0 + c], xs = xsum[c0 + c];
      t0r = fmaf(sa, fmaf(d[c][0], inv, -za * xs), t0r);
      t1r = fmaf(sb, fmaf(d[c][1], inv, -zb * xs), t1r);
    }
  }
#pragma unroll 1
  for (int c = w * (kChunks / 8); !kV2 && c < (w + 1) * (kChunks / 8); ++c) {
    float d[2];
    chunk_mma(lds64(crow + (c * 8 + 2 * j) * 4), xa + (c * 32 + j) * 8, 32, d);
    float sa, za, sb, zb;
    load_qp_word(qp[(2 * j) * kGroups + c], sa, za);
    load_qp_word(qp[(2 * j + 1) * kGroups + c], sb, zb);
    const float inv = xinv[c], xs = xsum[c];
    t0r = fmaf(sa, fmaf(d[0], inv, -za * xs), t0r);
    t1r = fmaf(sb, fmaf(d[1], inv, -zb * xs), t1r);
  }
  if (lane < 4) {
    atomicAdd(&tsum[2 * j], t0r);
    atomicAdd(&tsum[2 * j + 1], t1r);
  }
  write_sums<kRows>(tsum, a.t, a.cycles, t0);
}

// ---- the int8 form: codes as A (16 rows a tile), the vector's digits as B (mma_int8.cuh) ----------
// What the batch kernel does per chunk (16 rows × 128 codes, ~100 warp instructions with its group
// epilogue), here at M = 1 with the codes in shared memory: block b holds 16 V̂ rows over half of x
// (inputs 2048·(b mod 2) …) — as many codes as the other forms' 8 rows × 4096, so that 63 tiles of
// the default 1002 ranks would cover 126 blocks, two halves a tile. The same 2048 words of codes a
// block, read as 16 rows of 128 words (16 groups a row). x's half is staged as fp32 blocks (one pass),
// its largest magnitude reduced over the block, then 16 chunks of digits (stage_digits); warp w
// takes chunks 2w, 2w + 1 of all 16 rows (chunk_mmas, fold_group).
constexpr int kIRows = 16, kIK = kK / 2, kIWords = kIK / 16, kIGroups = kIK / 128, kIChunks = kIK / 128;
static_assert(kIRows * kIWords == kRows * kRowWords && kIRows * kIGroups == kRows * kGroups, "same codes a block");

// The int8 forms' block-wide staging of an n-element vector (imma): element blocks of 8 by
// load(e, v) (whole warps) staged as fp32 in xs, their largest magnitude reduced over the block
// (red: kProbeThreads / 32 words), then every chunk's digits and sums (stage_digits) into dig and
// csum, the block synced. Returns 2^-e.
template <typename Load>
__device__ __forceinline__ float stage_block_digits(int n, Load load, float* xs, uint32_t* red, uint32_t* dig,
                                                    float* csum) {
  uint32_t mx = 0;
  for (int e = threadIdx.x; e < n / 8; e += kProbeThreads) {
    float v[8];
    load(e, v);
    mx = max_bits8(mx, v);
    stage8(xs, e, v);
  }
  mx = block_max_bits(mx, red);  // (its barriers publish xs too)
  float down;
  const float up = digit_scale(mx, &down);
  stage_digits(xs, n, up, dig, csum);
  __syncthreads();
  return down;
}

__global__ void __launch_bounds__(kProbeThreads, 1) p1_imma(Args a) {
  __shared__ uint32_t codes[kIRows * kIWords], qp[kIRows * kIGroups];
  __shared__ __align__(16) float xs[(kIK / 32) * kPitch];
  __shared__ __align__(16) uint32_t dig[kDigits * kIChunks * 32];
  __shared__ float csum[kIChunks], tsum[kIRows];
  __shared__ uint32_t red[kProbeThreads / 32];
  load_codes(a, codes, qp);
  if (threadIdx.x < kIRows) tsum[threadIdx.x] = 0.f;
  __syncthreads();
  const long long t0 = clock64();
  const __half* xh = a.x + (blockIdx.x % 2) * kIK;
  const float down = stage_block_digits(kIK, [&](int e, float v[8]) { load_half8(xh, e, v); }, xs, red, dig, csum);
  if (threadIdx.x == 0) a.cycles[kBlocks + blockIdx.x] = clock64() - t0;  // staged
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, q = lane % 4;
  const DigitLane dl = digit_lane(kIChunks, dig, csum, down, nullptr, nullptr, 0.f);
  float2 sum = make_float2(0.f, 0.f);
#pragma unroll
  for (int i = 0; i < kIChunks / 8; ++i) {
    const int c = w * (kIChunks / 8) + i;
    int t[4];
    chunk_mmas<2>(dl, c, codes + g * kIWords + c * 8 + q * 2, codes + (g + 8) * kIWords + c * 8 + q * 2, t);
    fold_group(t, qp[g * kIGroups + c], qp[(g + 8) * kIGroups + c], dl.cs[c], false, q, sum);
  }
  if (q == 0) {
    atomicAdd(&tsum[g], sum.x * dl.dn);
    atomicAdd(&tsum[g + 8], sum.y * dl.dn);
  }
  write_sums<kIRows>(tsum, a.t, a.cycles, t0);
}


// ---- the int8 form with warp-local staging ("immaw", twenty-third session) ----------------------
// imma lost in staging (2.5k cycles against fp32's 1.2k): x through shared memory as fp32, a
// block-wide maximum (two barriers), digits by four warps, a barrier. But in the int8 form a warp
// needs only ITS chunks of the vector, so here each warp loads its own chunks straight from global
// memory, takes its own power of two (one redux over the warp; the fold multiplies by its inverse
// once), writes its digits to a warp-private slice of shared memory and syncs the warp only: no
// block barrier until the partial sums meet.
template <typename T>
__device__ __forceinline__ float elem_f(const T* p, uint32_t k) {
  if constexpr (sizeof(T) == 2) return __half2float(p[k]);
  else return p[k];
}
// Chunks c0 … c0 + NC − 1 of vector src (global) into the warp's digits dig (NC chunks, the B
// order of stage_digit_chunk) and scaled sums csum; returns 2^-e in *down. The caller __syncwarp()s.
template <int NC, typename T>
__device__ __forceinline__ void stage_warp_digits(const T* src, uint32_t c0, uint32_t* dig, float* csum, float* down) {
  const uint32_t lane = threadIdx.x % 32, qs = lane / 4, j = lane % 4;
  float v[NC][4];
  uint32_t m = 0;
#pragma unroll
  for (int i = 0; i < NC; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      v[i][e] = elem_f(src, (c0 + i) * 128 + 16 * qs + 4 * e + j);
      m = max(m, __float_as_uint(fabsf(v[i][e])));
    }
  m = __reduce_max_sync(0xffffffffu, m);
  const float up = digit_scale(m, down);
#pragma unroll
  for (int i = 0; i < NC; ++i) {
    float s = 0.f;
    uint32_t w0 = 0, w1 = 0, w2 = 0;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s += v[i][e];
      put_digits(v[i][e], up, e, w0, w1, w2);
    }
    s = seg_sum<32>(s);
    dig[(0 * NC + i) * 32 + lane] = w0;
    dig[(1 * NC + i) * 32 + lane] = w1;
    dig[(2 * NC + i) * 32 + lane] = w2;
    if (lane == 0) csum[i] = s * up;
  }
}

// The eight warps' partial sums part[w][r] of the block's N outputs added and written to out (the
// block's N entries), then the block's cycles since t0 recorded (immaw forms).
template <int N>
__device__ __forceinline__ void finish_parts(const float (*part)[N], float* out, long long* cycles, long long t0) {
  __syncthreads();
  if (threadIdx.x < N) {
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) s += part[i][threadIdx.x];
    out[blockIdx.x * N + threadIdx.x] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) cycles[blockIdx.x] = clock64() - t0;
}

// Phase 1, warp-local: block b holds 16 V̂ rows over x's half b mod 2; warp w stages and takes
// chunks 2w, 2w + 1; the eight warps' sums meet in shared memory (one barrier).
__global__ void __launch_bounds__(kProbeThreads, 1) p1_immaw(Args a) {
  constexpr int kNC = kIChunks / 8;
  __shared__ uint32_t codes[kIRows * kIWords], qp[kIRows * kIGroups];
  __shared__ __align__(16) uint32_t dig[8][kDigits * kNC * 32];
  __shared__ float csum[8][kNC], part[8][kIRows];
  load_codes(a, codes, qp);
  __syncthreads();
  const long long t0 = clock64();
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, q = lane % 4;
  const __half* xh = a.x + (blockIdx.x % 2) * kIK;
  float down;
  stage_warp_digits<kNC>(xh, w * kNC, dig[w], csum[w], &down);
  __syncwarp();
  if (threadIdx.x == 0) a.cycles[kBlocks + blockIdx.x] = clock64() - t0;  // warp 0 staged
  const DigitLane dl = digit_lane(kNC, dig[w], csum[w], down, nullptr, nullptr, 0.f);
  float2 sum = make_float2(0.f, 0.f);
#pragma unroll
  for (int i = 0; i < kNC; ++i) {
    const int c = w * kNC + i;
    int t[4];
    chunk_mmas<2>(dl, i, codes + g * kIWords + c * 8 + q * 2, codes + (g + 8) * kIWords + c * 8 + q * 2, t);
    fold_group(t, qp[g * kIGroups + c], qp[(g + 8) * kIGroups + c], dl.cs[i], false, q, sum);
  }
  if (q == 0) {
    part[w][g] = sum.x * dl.dn;
    part[w][g + 8] = sum.y * dl.dn;
  }
  finish_parts<kIRows>(part, a.t, a.cycles, t0);
}

// ---- phase 2: y[o] = Σ_k t_k·Û[o][k] for 32 output rows a block, 1024 ranks of 2-bit codes ----------
constexpr int kR = 1024;            // ranks (t's length)
constexpr int kOut = 32;            // output rows per block
constexpr int kUWords = kR / 16;    // words per Û row
constexpr int kUGroups = kR / 128;  // groups per Û row (= chunks)

struct Args2 {
  const uint32_t* codes;  // [block][row][kUWords]
  const uint32_t* qp;     // [block][row][kUGroups]
  const float* t;         // [kR]
  float* y;               // [block][row]
  long long* cycles;  // as in Args
};

__device__ void load_codes2(const Args2& a, uint32_t* codes, uint32_t* qp) {
  const uint32_t* c = a.codes + (size_t)blockIdx.x * kOut * kUWords;
  const uint32_t* q = a.qp + (size_t)blockIdx.x * kOut * kUGroups;
  for (int i = threadIdx.x; i < kOut * kUWords; i += kProbeThreads) codes[i] = c[i];
  for (int i = threadIdx.x; i < kOut * kUGroups; i += kProbeThreads) qp[i] = q[i];
}

// The staged kernel's phase 2 for a 2-bit band: t staged as fp32 blocks with their sums; warp w
// takes output rows 4w … 4w + 3, eight lanes a row over the row's 32 blocks.
__global__ void __launch_bounds__(kProbeThreads, 1) p2_fp32(Args2 a) {
  __shared__ uint32_t codes[kOut * kUWords], qp[kOut * kUGroups];
  __shared__ __align__(16) float ts[(kR / 32) * kPitch];
  load_codes2(a, codes, qp);
  __syncthreads();
  const long long t0 = clock64();
  for (int e = threadIdx.x; e < kR / 8; e += kProbeThreads) {  // whole warps (the shuffles)
    float v[8];
    load_float8(a.t, e, v);
    stage8(ts, e, v);
  }
  __syncthreads();
  if (threadIdx.x == 0) a.cycles[kBlocks + blockIdx.x] = clock64() - t0;  // staged
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, o = 4 * w + lane / 8, sub = lane % 8;
  const uint32_t row = smem_addr(codes + o * kUWords), q = smem_addr(qp + o * kUGroups), x = smem_addr(ts);
  const float acc = seg_sum<8>(row_loop_2bit(row, q, x, sub, 8, kR / 32));
  if (sub == 0) a.y[blockIdx.x * kOut + o] = acc;
  __syncthreads();
  if (threadIdx.x == 0) a.cycles[blockIdx.x] = clock64() - t0;
}

// The same on the tensor cores: B = 8 output rows' codes (as in p1_hmma), A = t split into f16 hi
// (row 0) and lo (row 1) parts after the chunk's scaling, so that hi + lo carries ~22 bits of t; a
// lane of rows g = 0 / 1 reads the hi / lo pairs. Warp w takes rows 8(w / 2) … + 7 and chunks
// 4(w % 2) … + 3; the hi and lo sums meet by one shuffle at the end.
template <bool kV2>
__global__ void __launch_bounds__(kProbeThreads, 1) p2_hmma(Args2 a) {
  __shared__ uint32_t codes[kOut * kUWords], qp[kOut * kUGroups];
  __shared__ __align__(16) uint4 th[kUGroups * 8 * 4];  // [chunk][p][j]: hi (a0, a2), lo (a0, a2)
  __shared__ float tsum[kUGroups], tinv[kUGroups], ysh[kOut];
  load_codes2(a, codes, qp);
  if (threadIdx.x < kOut) ysh[threadIdx.x] = 0.f;
  __syncthreads();
  const long long t0 = clock64();
  for (int e = threadIdx.x; e < kR / 8; e += kProbeThreads) {  // warps 0..3, whole
    float v[8];
    load_float8(a.t, e, v);
    float s;
    const int E = chunk_scale(v, s);
    const int c = e / 16, q0 = (e * 8) % 128, w = q0 / 16, hh = (q0 % 16) / 8, j = w / 2, which = w % 2;
    uint32_t hi[8], lo[8];
#pragma unroll
    for (int p = 0; p < 8; ++p) {
      const float sv = kV2 ? times_pow2(v[p], E + 8 - pos_shift(p)) : ldexpf(v[p], E + 8 - pos_shift(p));
      const __half h = __float2half_rn(sv);
      hi[p] = __half_as_ushort(h);
      lo[p] = __half_as_ushort(__float2half_rn(sv - __half2float(h)));
    }
    char* base = reinterpret_cast<char*>(th);
#pragma unroll
    for (int p = 0; p < 8; ++p) {
      const uint32_t ohi = __shfl_xor_sync(0xffffffffu, hi[p], 1), olo = __shfl_xor_sync(0xffffffffu, lo[p], 1);
      if ((p < 4) == (hh == 0)) {
        const uint32_t ph = hh == 0 ? (hi[p] | ohi << 16) : (ohi | hi[p] << 16);
        const uint32_t pl = hh == 0 ? (lo[p] | olo << 16) : (olo | lo[p] << 16);
        char* at = base + ((c * 8 + p) * 4 + j) * 16 + which * 4;
        *reinterpret_cast<uint32_t*>(at) = ph;
        *reinterpret_cast<uint32_t*>(at + 8) = pl;
      }
    }
    if (e % 16 == 0) {
      tsum[c] = s;
      tinv[c] = ldexpf(1.f, -(E + 8));
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) a.cycles[kBlocks + blockIdx.x] = clock64() - t0;  // staged
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, j = lane % 4, nt = w / 2;
  const uint32_t crow = smem_addr(codes + (8 * nt + g) * kUWords), ta = smem_addr(th) + (g == 1 ? 8 : 0);
  const bool lo_row = g == 1;  // rows 0 (hi) and 1 (lo) of A are real; lanes of other rows read hi
  float acc0 = 0.f, acc1 = 0.f;  // output rows 8nt + 2j, + 1 (lanes 0..7)
  if constexpr (kV2) {
    const int c0 = (w % 2) * 4;
    uint2 cw[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) cw[c] = lds64(crow + ((c0 + c) * 8 + 2 * j) * 4);
    float d[4][2];
    chunks_mma<4>(cw, ta + (c0 * 32 + j) * 16, 32 * 16, 64, d);
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      float sa, za, sb, zb;
      load_qp_word(qp[(8 * nt + 2 * j) * kUGroups + c0 + c], sa, za);
      load_qp_word(qp[(8 * nt + 2 * j + 1) * kUGroups + c0 + c], sb, zb);
      const float inv = tinv[c0 + c], zs = lo_row ? 0.f : tsum[c0 + c];
      acc0 = fmaf(sa, fmaf(d[c][0], inv, -za * zs), acc0);
      acc1 = fmaf(sb, fmaf(d[c][1], inv, -zb * zs), acc1);
    }
  }
#pragma unroll 1
  for (int c = (w % 2) * 4; !kV2 && c < (w % 2) * 4 + 4; ++c) {
    float d[2];
    chunk_mma(lds64(crow + (c * 8 + 2 * j) * 4), ta + (c * 32 + j) * 16, 64, d);
    float sa, za, sb, zb;
    load_qp_word(qp[(8 * nt + 2 * j) * kUGroups + c], sa, za);
    load_qp_word(qp[(8 * nt + 2 * j + 1) * kUGroups + c], sb, zb);
    const float inv = tinv[c], zs = lo_row ? 0.f : tsum[c];  // the zero point's term once (hi lanes)
    acc0 = fmaf(sa, fmaf(d[0], inv, -za * zs), acc0);
    acc1 = fmaf(sb, fmaf(d[1], inv, -zb * zs), acc1);
  }
  acc0 += __shfl_xor_sync(0xffffffffu, acc0, 4);  // hi (lanes 0..3) + lo (lanes 4..7)
  acc1 += __shfl_xor_sync(0xffffffffu, acc1, 4);
  if (lane < 4) {
    atomicAdd(&ysh[8 * nt + 2 * j], acc0);
    atomicAdd(&ysh[8 * nt + 2 * j + 1], acc1);
  }
  write_sums<kOut>(ysh, a.y, a.cycles, t0);
}

// Phase 2 in the int8 form: the block's 32 output rows as two tiles of 16, t's 1024 ranks as 8
// chunks of digits; warp w takes tile w / 4, chunks 2(w mod 4), 2(w mod 4) + 1.
__global__ void __launch_bounds__(kProbeThreads, 1) p2_imma(Args2 a) {
  constexpr int kTChunks = kR / 128;
  __shared__ uint32_t codes[kOut * kUWords], qp[kOut * kUGroups];
  __shared__ __align__(16) float ts[(kR / 32) * kPitch];
  __shared__ __align__(16) uint32_t dig[kDigits * kTChunks * 32];
  __shared__ float csum[kTChunks], ysh[kOut];
  __shared__ uint32_t red[kProbeThreads / 32];
  load_codes2(a, codes, qp);
  if (threadIdx.x < kOut) ysh[threadIdx.x] = 0.f;
  __syncthreads();
  const long long t0 = clock64();
  const float down = stage_block_digits(kR, [&](int e, float v[8]) { load_float8(a.t, e, v); }, ts, red, dig, csum);
  if (threadIdx.x == 0) a.cycles[kBlocks + blockIdx.x] = clock64() - t0;  // staged
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, q = lane % 4;
  const int ra = 16 * (w / 4) + g, rb = ra + 8;
  const DigitLane dl = digit_lane(kTChunks, dig, csum, down, nullptr, nullptr, 0.f);
  float2 sum = make_float2(0.f, 0.f);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int c = 2 * (w % 4) + i;
    int t[4];
    chunk_mmas<2>(dl, c, codes + ra * kUWords + c * 8 + q * 2, codes + rb * kUWords + c * 8 + q * 2, t);
    fold_group(t, qp[ra * kUGroups + c], qp[rb * kUGroups + c], dl.cs[c], false, q, sum);
  }
  if (q == 0) {
    atomicAdd(&ysh[ra], sum.x * dl.dn);
    atomicAdd(&ysh[rb], sum.y * dl.dn);
  }
  write_sums<kOut>(ysh, a.y, a.cycles, t0);
}

// Phase 2, warp-local: warp w stages t's chunk w and takes it for both 16-row tiles.
__global__ void __launch_bounds__(kProbeThreads, 1) p2_immaw(Args2 a) {
  __shared__ uint32_t codes[kOut * kUWords], qp[kOut * kUGroups];
  __shared__ __align__(16) uint32_t dig[8][kDigits * 32];
  __shared__ float csum[8][1], part[8][kOut];
  load_codes2(a, codes, qp);
  __syncthreads();
  const long long t0 = clock64();
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, q = lane % 4;
  float down;
  stage_warp_digits<1>(a.t, w, dig[w], csum[w], &down);
  __syncwarp();
  if (threadIdx.x == 0) a.cycles[kBlocks + blockIdx.x] = clock64() - t0;  // warp 0 staged
  const DigitLane dl = digit_lane(1, dig[w], csum[w], down, nullptr, nullptr, 0.f);
#pragma unroll
  for (int tile = 0; tile < 2; ++tile) {
    const int ra = 16 * tile + g, rb = ra + 8, c = w;
    float2 sum = make_float2(0.f, 0.f);
    int t[4];
    chunk_mmas<2>(dl, 0, codes + ra * kUWords + c * 8 + q * 2, codes + rb * kUWords + c * 8 + q * 2, t);
    fold_group(t, qp[ra * kUGroups + c], qp[rb * kUGroups + c], dl.cs[0], false, q, sum);
    if (q == 0) {
      part[w][ra] = sum.x * dl.dn;
      part[w][rb] = sum.y * dl.dn;
    }
  }
  finish_parts<kOut>(part, a.y, a.cycles, t0);
}

float half_to_float(uint16_t h) {
  const uint32_t s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  const float v = e == 0 ? std::ldexp((float)m, -24) : std::ldexp((float)(m | 1024), (int)e - 25);
  return s ? -v : v;
}

// A group's parameter word: scale in (0, 0.01], zero an integer in 0..3 (both f16).
uint32_t random_qparam(std::mt19937& rng) {
  const __half s = __float2half(0.01f * ((rng() % 1000) + 1) / 1000.f);
  return (uint32_t)__half_as_ushort(s) | (uint32_t)__half_as_ushort(__float2half((float)(rng() % 4))) << 16;
}

// Σ_k s·(code_k − z)·v_k in float64 over n 2-bit codes of one row, group 128.
double ref_row(const uint32_t* row, const uint32_t* q, const float* v, int n) {
  double acc = 0;
  for (int k = 0; k < n; ++k) {
    const uint32_t c = (row[k / 16] >> (2 * (k % 16))) & 3u;
    const double s = half_to_float((uint16_t)q[k / 128]), z = half_to_float((uint16_t)(q[k / 128] >> 16));
    acc += s * ((double)c - z) * v[k];
  }
  return acc;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double e : v) m = std::max(m, std::fabs(e));
  return m;
}

// One variant: 20 launches (the first ones fetch the code: the last 10 are kept), then its median
// and largest cycles per block, its median cycles to the end of staging (cycles[kBlocks + b]) and
// the largest error of its output (ref.size() floats at `out`) against ref, relative to max|ref|.
template <class Launch>
void time_variant(const char* name, const char* span, Launch launch, const long long* dcy, const float* out,
                  const std::vector<double>& ref) {
  std::vector<long long> cyc(2 * kBlocks), all, st;
  for (int rep = 0; rep < 20; ++rep) {
    launch();
    CU(cudaGetLastError());
    CU(cudaDeviceSynchronize());
    CU(cudaMemcpy(cyc.data(), dcy, 2 * kBlocks * 8, cudaMemcpyDeviceToHost));
    if (rep < 10) continue;
    all.insert(all.end(), cyc.begin(), cyc.begin() + kBlocks);
    st.insert(st.end(), cyc.begin() + kBlocks, cyc.end());
  }
  std::vector<float> got(ref.size());
  CU(cudaMemcpy(got.data(), out, got.size() * 4, cudaMemcpyDeviceToHost));
  const double scale = max_abs(ref);
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::fabs(got[i] - ref[i]) / scale);
  std::sort(all.begin(), all.end());
  std::sort(st.begin(), st.end());
  printf("%-5s cycles per block (%s): median %lld (staging %lld), max %lld; max |out - ref| / max|ref| = %.2e\n", name,
         span, all[all.size() / 2], st[st.size() / 2], all.back(), err);
}

}  // namespace

int main() {
  std::mt19937 rng(1);
  std::vector<uint32_t> codes((size_t)kBlocks * kRows * kRowWords), qp((size_t)kBlocks * kRows * kGroups);
  std::vector<__half> x(kK);
  std::vector<float> xf(kK);
  for (auto& w : codes) w = rng();
  for (auto& q : qp) q = random_qparam(rng);
  for (int i = 0; i < kK; ++i) {  // activations of mixed magnitude, a few outliers
    const float v = std::normal_distribution<float>(0.f, 1.f)(rng) * (i % 97 == 0 ? 300.f : 1.f);
    x[i] = __float2half(v);
    xf[i] = __half2float(x[i]);
  }
  // float64 references: 8 rows over all of x a block, and (the int8 form) the same codes read as 16
  // rows of 2048 codes over x's half b mod 2
  std::vector<double> ref((size_t)kBlocks * kRows), ref16((size_t)kBlocks * kIRows);
  for (int b = 0; b < kBlocks; ++b) {
    const uint32_t* bc = codes.data() + (size_t)b * kRows * kRowWords;
    const uint32_t* bq = qp.data() + (size_t)b * kRows * kGroups;
    for (int r = 0; r < kRows; ++r) ref[(size_t)b * kRows + r] = ref_row(bc + r * kRowWords, bq + r * kGroups, xf.data(), kK);
    for (int r = 0; r < kIRows; ++r)
      ref16[(size_t)b * kIRows + r] = ref_row(bc + r * kIWords, bq + r * kIGroups, xf.data() + (b % 2) * kIK, kIK);
  }

  uint32_t *dc, *dq;
  __half* dx;
  float* dt;
  long long* dcy;
  CU(cudaMalloc(&dc, codes.size() * 4));
  CU(cudaMalloc(&dq, qp.size() * 4));
  CU(cudaMalloc(&dx, kK * 2));
  CU(cudaMalloc(&dt, ref16.size() * 4));
  CU(cudaMalloc(&dcy, 2 * kBlocks * 8));
  CU(cudaMemcpy(dc, codes.data(), codes.size() * 4, cudaMemcpyHostToDevice));
  CU(cudaMemcpy(dq, qp.data(), qp.size() * 4, cudaMemcpyHostToDevice));
  CU(cudaMemcpy(dx, x.data(), kK * 2, cudaMemcpyHostToDevice));
  const Args a{dc, dq, dx, dt, dcy};
  cudaDeviceProp prop;
  CU(cudaGetDeviceProperties(&prop, 0));
  printf("device: %s; %d blocks of %d threads, 8 rows x %d 2-bit codes each (group 128)\n", prop.name, kBlocks,
         kProbeThreads, kK);
  const char* const p1span = "x staged to t written";
  time_variant("fp32", p1span, [&] { p1_fp32<<<kBlocks, kProbeThreads>>>(a); }, dcy, dt, ref);
  time_variant("hmma", p1span, [&] { p1_hmma<false><<<kBlocks, kProbeThreads>>>(a); }, dcy, dt, ref);
  time_variant("hmma2", p1span, [&] { p1_hmma<true><<<kBlocks, kProbeThreads>>>(a); }, dcy, dt, ref);
  time_variant("imma", p1span, [&] { p1_imma<<<kBlocks, kProbeThreads>>>(a); }, dcy, dt, ref16);
  time_variant("immaw", p1span, [&] { p1_immaw<<<kBlocks, kProbeThreads>>>(a); }, dcy, dt, ref16);

  // phase 2
  std::vector<uint32_t> ucodes((size_t)kBlocks * kOut * kUWords), uqp((size_t)kBlocks * kOut * kUGroups);
  std::vector<float> t(kR);
  for (auto& w : ucodes) w = rng();
  for (auto& q : uqp) q = random_qparam(rng);
  for (int k = 0; k < kR; ++k)  // t = σ·(x·V̂): decaying with the rank, mixed signs
    t[k] = std::normal_distribution<float>(0.f, 1.f)(rng) * 50.f / (1.f + 0.05f * k);
  std::vector<double> yref((size_t)kBlocks * kOut);
  for (size_t o = 0; o < yref.size(); ++o) yref[o] = ref_row(ucodes.data() + o * kUWords, uqp.data() + o * kUGroups, t.data(), kR);
  uint32_t *duc, *duq;
  float *dtt, *dy;
  CU(cudaMalloc(&duc, ucodes.size() * 4));
  CU(cudaMalloc(&duq, uqp.size() * 4));
  CU(cudaMalloc(&dtt, kR * 4));
  CU(cudaMalloc(&dy, yref.size() * 4));
  CU(cudaMemcpy(duc, ucodes.data(), ucodes.size() * 4, cudaMemcpyHostToDevice));
  CU(cudaMemcpy(duq, uqp.data(), uqp.size() * 4, cudaMemcpyHostToDevice));
  CU(cudaMemcpy(dtt, t.data(), kR * 4, cudaMemcpyHostToDevice));
  const Args2 a2{duc, duq, dtt, dy, dcy};
  printf("phase 2: 32 output rows x %d ranks of 2-bit codes per block\n", kR);
  const char* const p2span = "t staged to y written";
  time_variant("fp32", p2span, [&] { p2_fp32<<<kBlocks, kProbeThreads>>>(a2); }, dcy, dy, yref);
  time_variant("hmma", p2span, [&] { p2_hmma<false><<<kBlocks, kProbeThreads>>>(a2); }, dcy, dy, yref);
  time_variant("hmma2", p2span, [&] { p2_hmma<true><<<kBlocks, kProbeThreads>>>(a2); }, dcy, dy, yref);
  time_variant("imma", p2span, [&] { p2_imma<<<kBlocks, kProbeThreads>>>(a2); }, dcy, dy, yref);
  time_variant("immaw", p2span, [&] { p2_immaw<<<kBlocks, kProbeThreads>>>(a2); }, dcy, dy, yref);
  return 0;
}
